//! `troop config validate`: troop.toml and everything it points at, checked the way the
//! real commands will use them, changing nothing (so systemd may run it as ExecStartPre).

use std::path::Path;

use crate::cli::Output;
use anyhow::{Context as _, bail};
use troop_coordinator::campaign::Campaign;
use troop_coordinator::client::Dialer;
use troop_coordinator::config::CoordinatorConfig;
use troop_coordinator::dispatch::CONNECT_TIMEOUT;
use troop_coordinator::signer::Signer;

use crate::outcome::Outcome;

pub fn validate(explicit: Option<&Path>, output: Output) -> anyhow::Result<Outcome> {
    let path = CoordinatorConfig::locate(explicit)?;
    let config = CoordinatorConfig::load(&path)?;
    let shown = path.display();
    // Parsing made sure one of the two sets is there.
    let key_id = match &config.signing_key {
        Some(key) => Some(
            Signer::load(key)
                .with_context(|| format!("config {shown}: key `signing.key`"))?
                .key_id(),
        ),
        None => None,
    };
    if let Some(tls) = &config.tls {
        Dialer::new(tls, CONNECT_TIMEOUT).with_context(|| format!("config {shown}: [tls]"))?;
    }
    if let Some(remote) = &config.remote {
        Dialer::new(&remote.tls, CONNECT_TIMEOUT)
            .with_context(|| format!("config {shown}: [coordinator]"))?;
    }
    let signed_by = match (&key_id, &config.remote) {
        (Some(key_id), _) => format!("signing key {key_id}"),
        (None, Some(remote)) => format!("through troop serve at {}", remote.address),
        (None, None) => unreachable!("parsing requires [signing] or [coordinator]"),
    };
    if let Some(file) = config.store_url.strip_prefix("sqlite://")
        && file != ":memory:"
    {
        let folder = Path::new(file)
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty());
        if folder.is_some_and(|dir| !dir.is_dir()) {
            bail!("config {shown}: key `store.url`: the folder of {file} does not exist");
        }
    }
    let mut campaigns = 0;
    if let Some(dir) = &config.campaigns {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("config {shown}: key `campaigns`: {}", dir.display()))?;
        for entry in entries.flatten() {
            let file = entry.path();
            if file.extension().is_some_and(|ext| ext == "toml") {
                Campaign::load(&file)?;
                campaigns += 1;
            }
        }
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "valid": true,
                "config": path,
                "agents": config.agents.len(),
                "key_id": key_id,
                "coordinator": config.remote.as_ref().map(|remote| remote.address.clone()),
                "store": config.store_url,
                "campaigns": campaigns,
            })
        ),
        Output::Table => println!(
            "{shown}: valid. {} agent(s), {signed_by}, store {}, {campaigns} campaign file(s)",
            config.agents.len(),
            config.store_url
        ),
    }
    Ok(Outcome::Success)
}
