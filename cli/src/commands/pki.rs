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
            // The key serve signs with, as `troop serve` loads it.
            None => troop_coordinator::fleet::Fleet::load(config)?.signing_key_path()?,
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
