//! `troop pki join-token`, `revoke` and `rotate-signing-key`: on the serve host they write
//! to troop.toml's store, which every replica of serve reads; with `[coordinator]` the
//! first two go through serve's operator API and need the admin role there. A rotation
//! makes a private key, so it is done on the serve host only.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use troop_coordinator::config::CoordinatorConfig;
use troop_coordinator::describe::unix_ms_text;
use troop_coordinator::enrolment;
use troop_coordinator::fleet::Fleet;
use troop_coordinator::rotation;
use troop_coordinator::store::Store;
use troop_proto::serve_pb;

use crate::cli::Output;
use crate::outcome::Outcome;

/// Who the store says made a token or revoked a name from the serve host's shell.
fn local_user() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "root".into());
    format!("{user} (serve host)")
}

pub async fn join_token(
    config: Option<&Path>,
    ttl: &str,
    uses: u32,
    name: Option<String>,
    labels: &str,
    output: Output,
) -> anyhow::Result<Outcome> {
    let ttl = troop_common::units::parse_duration(ttl)
        .map_err(|error| anyhow::anyhow!("--ttl {ttl:?}: {error}"))?;
    let labels = parse_labels(labels)?;
    let fleet = Fleet::load(config)?;
    let reply = match &fleet.remote {
        Some(remote) => {
            remote
                .join_token(serve_pb::JoinTokenRequest {
                    ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                    uses,
                    agent_id: name.unwrap_or_default(),
                    labels: labels.into_iter().collect(),
                })
                .await?
        }
        None => {
            let config = &fleet.config;
            let ca_sha256 = troop_coordinator::pki::ca_sha256(&tls_ca(config)?)?;
            let store = Store::open(&config.store_url).context("audit store")?;
            let (token, expires_at_unix_ms) =
                enrolment::create_join_token(&store, ttl, uses, name, labels, &local_user())?;
            serve_pb::JoinTokenReply {
                token,
                ca_sha256,
                expires_at_unix_ms,
            }
        }
    };
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "token": reply.token,
                "ca_sha256": reply.ca_sha256,
                "expires_at_unix_ms": reply.expires_at_unix_ms,
            })
        ),
        Output::Table => {
            println!("token:      {}", reply.token);
            println!("ca_sha256:  {}", reply.ca_sha256);
            println!("expires:    {}", unix_ms_text(reply.expires_at_unix_ms));
            println!(
                "\nOn the new host: troop-agent enroll --coordinator https://SERVE:7444 --token TOKEN --ca-sha256 {}",
                reply.ca_sha256
            );
        }
    }
    Ok(Outcome::Success)
}

pub async fn revoke(config: Option<&Path>, name: &str, output: Output) -> anyhow::Result<Outcome> {
    let fleet = Fleet::load(config)?;
    let revoked_at = match &fleet.remote {
        Some(remote) => remote.revoke(name).await?,
        None => {
            let store = Store::open(&fleet.config.store_url).context("audit store")?;
            enrolment::revoke(&store, name, &local_user())?
        }
    };
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "revoked": name, "revoked_at_unix_ms": revoked_at })
        ),
        Output::Table => println!(
            "revoked {name:?} at {}: serve refuses its certificates issued until now, and cuts off its streams",
            unix_ms_text(revoked_at)
        ),
    }
    Ok(Outcome::Success)
}

pub fn rotate_signing_key(
    config: Option<&Path>,
    retire: bool,
    output: Output,
) -> anyhow::Result<Outcome> {
    let fleet = Fleet::load(config)?;
    if fleet.remote.is_some() {
        anyhow::bail!(
            "config {}: a signing-key rotation makes a private key, so it runs on the serve host (its troop.toml has [signing] and [store]), not through [coordinator]",
            fleet.config.path.display()
        );
    }
    let configured = fleet.config.signing_key.clone().with_context(|| {
        format!(
            "config {}: [signing] key is missing",
            fleet.config.path.display()
        )
    })?;
    let store = Store::open(&fleet.config.store_url).context("audit store")?;
    let generation = if retire {
        rotation::retire(&store, &local_user())
    } else {
        rotation::begin(&store, &configured, &local_user())
    }
    .map_err(|error| anyhow::anyhow!(troop_telemetry::error_chain(&error)))?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "generation": generation.generation,
                "trusted_keys": rotation::key_ids(&generation),
                "signing_key": generation.signer,
            })
        ),
        Output::Table if retire => println!(
            "generation {}: agents trust only {} from now on; serve announces it within seconds",
            generation.generation,
            rotation::key_ids(&generation)
        ),
        Output::Table => println!(
            "generation {}: agents trust {} (the old and the new key); serve announces it within seconds and then signs with {}.\n\
             When `troop campaign history` shows every agent took it, end the overlap: troop pki rotate-signing-key --retire",
            generation.generation,
            rotation::key_ids(&generation),
            generation.signer.display()
        ),
    }
    Ok(Outcome::Success)
}

fn tls_ca(config: &CoordinatorConfig) -> anyhow::Result<std::path::PathBuf> {
    config
        .tls
        .as_ref()
        .map(|tls| tls.ca.clone())
        .with_context(|| format!("config {}: [tls] is missing", config.path.display()))
}

/// `role=web,zone=eu-1`; empty is none.
fn parse_labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--labels: {pair:?} is not KEY=VALUE"))?;
        labels.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(labels)
}
