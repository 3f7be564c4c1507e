//! The agent's `agent.toml` as written: what the agent reads and validates, and what
//! the lab and the demo write (serialised, so their files have exactly this shape).
//! Meaning and checks live in the agent's `config` module.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub id: Option<String>,
    pub listen: Option<String>,
    /// `address:port` for Prometheus' scrapes of `/metrics` (plain HTTP); none by default.
    pub metrics_listen: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub state_dir: Option<PathBuf>,
    /// `troop serve` to dial out to: one URL, or several tried in turn.
    pub coordinator: Option<Coordinators>,
    pub tls: AgentTlsFile,
    pub trust: TrustFile,
    #[serde(default)]
    pub policy: PolicyFile,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Coordinators {
    One(String),
    Many(Vec<String>),
}

impl Coordinators {
    pub fn urls(&self) -> &[String] {
        match self {
            Coordinators::One(url) => std::slice::from_ref(url),
            Coordinators::Many(urls) => urls,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFile {
    pub coordinator_keys: Vec<PathBuf>,
    pub max_clock_skew: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub allow: Option<Vec<String>>,
    pub max_duration: Option<String>,
    pub protected_processes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_paths: Vec<PathBuf>,
    pub max_disk_fill_percent: Option<toml::Value>,
    pub max_memory_percent: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_interfaces: Vec<String>,
    pub max_loss_percent: Option<toml::Value>,
    pub max_latency: Option<String>,
    pub network_spare_ssh: Option<bool>,
}
