//! The lab's configs, as typed values of the very file shapes the agent and the
//! coordinator read ([`AgentFile`], [`ConfigFile`]), serialised to TOML. Paths are
//! relative to the lab directory, where the files are written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use troop_common::agent_file::{AgentFile, AgentTlsFile, PolicyFile, TrustFile};
use troop_coordinator::config::{
    AgentFile as FleetAgent, ConfigFile, RemoteFile, SigningFile, StoreFile, TlsFile,
};

/// An agent of this lab's PKI: its certificate `pki/ID.pem`, state in `state/ID`,
/// trusting the lab's signing key, with `policy`.
pub fn agent_file(
    id: &str,
    listen: &str,
    labels: &BTreeMap<String, String>,
    policy: PolicyFile,
) -> AgentFile {
    AgentFile {
        id: Some(id.to_string()),
        listen: Some(listen.to_string()),
        labels: labels.clone(),
        state_dir: Some(PathBuf::from(format!("state/{id}"))),
        tls: AgentTlsFile {
            cert: format!("pki/{id}.pem").into(),
            key: format!("pki/{id}.key").into(),
            ca: "pki/ca.pem".into(),
        },
        trust: TrustFile {
            coordinator_keys: vec!["pki/signing.pub".into()],
            max_clock_skew: None,
        },
        policy,
        ..AgentFile::default()
    }
}

/// A `[policy]` table written as TOML (`allow = ["kill"]`), parsed into its typed form;
/// panics on a typo, which is a bug in the lab's caller.
pub fn policy(toml_lines: &str) -> PolicyFile {
    toml::from_str(toml_lines).unwrap_or_else(|error| panic!("lab policy {toml_lines:?}: {error}"))
}

/// The coordinator of this lab's PKI, dialling `agents` (id, address, labels).
pub fn coordinator_file<'a>(
    agents: impl IntoIterator<Item = (&'a str, &'a str, &'a BTreeMap<String, String>)>,
) -> ConfigFile {
    ConfigFile {
        signing: Some(SigningFile {
            key: "pki/signing.key".into(),
        }),
        tls: Some(TlsFile {
            cert: "pki/coordinator.pem".into(),
            key: "pki/coordinator.key".into(),
            ca: "pki/ca.pem".into(),
        }),
        store: Some(StoreFile {
            url: Some("sqlite://troop.db".into()),
            ..StoreFile::default()
        }),
        agents: agents
            .into_iter()
            .map(|(id, address, labels)| FleetAgent {
                id: id.to_string(),
                address: address.to_string(),
                labels: labels.clone(),
            })
            .collect(),
        ..ConfigFile::default()
    }
}

/// An operator's CLI config: everything through the `troop serve` at `url`, as `name`.
pub fn operator_file(name: &str, url: &str) -> ConfigFile {
    ConfigFile {
        coordinator: Some(RemoteFile {
            url: url.to_string(),
            ca: "pki/ca.pem".into(),
            cert: format!("pki/{name}.pem").into(),
            key: format!("pki/{name}.key").into(),
        }),
        ..ConfigFile::default()
    }
}

/// Writes `value` as TOML to `path`.
pub fn write(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let text = toml::to_string(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// `[("role", "web")]` as a label map.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}
