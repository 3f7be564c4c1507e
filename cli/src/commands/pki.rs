//! `troop pki`: the fleet's CA, certificates and signing key.

use std::path::{Path, PathBuf};

use crate::cli::{Output, PkiCommand};
use troop_coordinator::pki;

use crate::outcome::Outcome;

mod enrolment;

pub async fn run(
    command: PkiCommand,
    config: Option<&Path>,
    output: Output,
) -> anyhow::Result<Outcome> {
    match &command {
        PkiCommand::JoinToken {
            ttl,
            uses,
            name,
            labels,
        } => return enrolment::join_token(config, ttl, *uses, name.clone(), labels, output).await,
        PkiCommand::Revoke { name } => return enrolment::revoke(config, name, output).await,
        PkiCommand::RotateSigningKey { retire } => {
            return enrolment::rotate_signing_key(config, *retire, output);
        }
        _ => {}
    }
    if let PkiCommand::OperatorToken { dir, name, ttl } = &command {
        let key = match dir {
            Some(dir) => dir.join(pki::SIGNING_KEY),
            None => signing_key_of(config)?,
        };
        return operator_token(&key, name, ttl, output);
    }
    let written: Vec<PathBuf> = match &command {
        PkiCommand::Init { dir } => pki::init(dir)?,
        PkiCommand::IssueAgent {
            dir,
            name,
            sans,
            days,
        } => pki::issue_agent_for(dir, name, sans, *days)?,
        PkiCommand::IssueOperator { dir, name, days } => pki::issue_operator(dir, name, *days)?,
        PkiCommand::IssueCoordinator { dir, days } => pki::issue_coordinator(dir, *days)?,
        PkiCommand::OperatorToken { .. }
        | PkiCommand::JoinToken { .. }
        | PkiCommand::Revoke { .. }
        | PkiCommand::RotateSigningKey { .. } => unreachable!("answered above"),
    };
    match output {
        Output::Json => println!("{}", serde_json::json!({ "written": written })),
        Output::Table => {
            for path in &written {
                println!("wrote {}", path.display());
            }
            if let PkiCommand::Init { dir } = &command {
                println!(
                    "\nNext: `troop pki issue-agent --dir {} --name AGENT_ID` for each host. \
                     Keep ca.key and signing.key on the coordinator only.",
                    dir.display()
                );
            }
        }
    }
    Ok(Outcome::Success)
}

/// The signing key troop.toml (`config`, else where troop looks for it) names.
/// The key serve signs with: troop.toml's `[signing] key`, or the newest a signing-key
/// rotation in its store made.
fn signing_key_of(config: Option<&Path>) -> anyhow::Result<PathBuf> {
    use troop_coordinator::config::CoordinatorConfig;
    let path = CoordinatorConfig::locate(config)?;
    let config = CoordinatorConfig::load(&path)?;
    let configured = config.signing_key.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "config {} has no [signing] key: run this on the serve host, or give --dir",
            path.display()
        )
    })?;
    Ok(
        match troop_coordinator::store::Store::open_existing(&config.store_url)? {
            Some(store) => store.signing_key_path(&configured)?,
            None => configured,
        },
    )
}

/// Prints a dashboard sign-in token for `name`, valid for `ttl`, signed with `key`.
fn operator_token(key: &Path, name: &str, ttl: &str, output: Output) -> anyhow::Result<Outcome> {
    use troop_coordinator::dashboard::token;
    let ttl = troop_common::units::parse_duration(ttl)
        .map_err(|error| anyhow::anyhow!("--ttl {ttl:?}: {error}"))?;
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    if ttl_ms <= 0 || ttl_ms > token::MAX_TTL_MS {
        anyhow::bail!("--ttl must be more than 0 and at most 30d");
    }
    troop_common::names::check_dns_name(name, false)
        .map_err(|message| anyhow::anyhow!("--name {name:?}: {message}"))?;
    let key = pki::load_signing_key(key)?;
    let now = troop_coordinator::signer::now_unix_ms();
    let text = token::issue(&key, name, now, ttl_ms);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "token": text, "name": name, "expires_at_unix_ms": now + ttl_ms })
        ),
        Output::Table => println!("{text}"),
    }
    Ok(Outcome::Success)
}
