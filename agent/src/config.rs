//! The agent's TOML config: parsed strictly, then validated into [`AgentConfig`], a type
//! in which bad states cannot exist. Every error names the file and the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use troop_proto::freshness::{DEFAULT_CLOCK_SKEW, MAX_VALIDITY};

use troop_common::agent_file::{AgentFile, PolicyFile};
use troop_common::names::{serve_address, validate_agent_id, validate_label};

use crate::policy::{FaultKind, Policy};
use troop_common::units::{parse_duration, parse_percent};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/troop/agent.toml";
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7443";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/troop-agent";

pub use crate::policy::DEFAULT_PROTECTED;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Paths of the agent's TLS identity: its server certificate, key and the fleet CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A validated agent config.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The file it was read from (named in problems found later, as by `validate`).
    pub path: PathBuf,
    pub id: String,
    /// Where direct calls are taken; `None` when the agent only dials out.
    pub listen: Option<SocketAddr>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub labels: BTreeMap<String, String>,
    pub state_dir: PathBuf,
    /// `host:port` of each `troop serve` to keep a stream to, tried in turn.
    pub coordinators: Vec<String>,
    pub tls: TlsPaths,
    pub coordinator_keys: Vec<PathBuf>,
    pub max_clock_skew: Duration,
    pub policy: Policy,
}

impl AgentConfig {
    /// Reads and validates `path`. Relative paths inside are taken relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: AgentFile = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string().trim_end().to_string(),
        })?;
        Validator {
            path,
            // `agent.toml` alone has the parent "": relative paths are then from ".".
            base: path
                .parent()
                .filter(|dir| !dir.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        }
        .validate(raw)
    }
}

struct Validator<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn resolve(&self, path: PathBuf) -> PathBuf {
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }

    fn validate(&self, raw: AgentFile) -> Result<AgentConfig, ConfigError> {
        let id = match raw.id {
            Some(id) => id,
            None => nix::unistd::gethostname()
                .map_err(|error| self.invalid("id", format!("not set and no hostname: {error}")))?
                .to_string_lossy()
                .into_owned(),
        };
        validate_agent_id(&id).map_err(|message| self.invalid("id", message))?;
        let coordinators = match &raw.coordinator {
            None => Vec::new(),
            Some(urls) if urls.urls().is_empty() => {
                return Err(self.invalid("coordinator", "names no URL"));
            }
            Some(urls) => urls
                .urls()
                .iter()
                .map(|url| serve_address(url).map_err(|m| self.invalid("coordinator", m)))
                .collect::<Result<_, _>>()?,
        };
        // An agent that dials out listens only when told to; one that does not, always.
        let listen = match (&raw.listen, coordinators.is_empty()) {
            (None, false) => None,
            (listen, _) => {
                let text = listen.as_deref().unwrap_or(DEFAULT_LISTEN);
                Some(text.parse().map_err(|_| {
                    self.invalid(
                        "listen",
                        format!("{text:?} is not an address:port such as 0.0.0.0:7443"),
                    )
                })?)
            }
        };
        let metrics_listen = match &raw.metrics_listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                self.invalid(
                    "metrics_listen",
                    format!("{text:?} is not an address:port such as 127.0.0.1:9464"),
                )
            })?),
        };
        for (key, value) in &raw.labels {
            validate_label(key, value).map_err(|message| self.invalid("labels", message))?;
        }
        if raw.trust.coordinator_keys.is_empty() {
            return Err(self.invalid(
                "trust.coordinator_keys",
                "must name at least one coordinator public key",
            ));
        }
        let max_clock_skew = match raw.trust.max_clock_skew {
            Some(text) => {
                let skew = parse_duration(&text)
                    .map_err(|error| self.invalid("trust.max_clock_skew", error.to_string()))?;
                if skew > MAX_VALIDITY {
                    return Err(self.invalid("trust.max_clock_skew", "must be at most 5m"));
                }
                skew
            }
            None => DEFAULT_CLOCK_SKEW,
        };
        Ok(AgentConfig {
            path: self.path.to_path_buf(),
            id,
            listen,
            metrics_listen,
            labels: raw.labels,
            state_dir: self.resolve(
                raw.state_dir
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            ),
            coordinators,
            tls: TlsPaths {
                cert: self.resolve(raw.tls.cert),
                key: self.resolve(raw.tls.key),
                ca: self.resolve(raw.tls.ca),
            },
            coordinator_keys: raw
                .trust
                .coordinator_keys
                .into_iter()
                .map(|path| self.resolve(path))
                .collect(),
            max_clock_skew,
            policy: self.validate_policy(raw.policy)?,
        })
    }

    fn validate_policy(&self, raw: PolicyFile) -> Result<Policy, ConfigError> {
        let mut policy = Policy::default();
        if let Some(allow) = raw.allow {
            policy.allow.clear();
            for (index, name) in allow.iter().enumerate() {
                let kind = name
                    .parse::<FaultKind>()
                    .map_err(|message| self.invalid(&format!("policy.allow[{index}]"), message))?;
                policy.allow.insert(kind);
            }
        }
        if let Some(text) = raw.max_duration {
            policy.max_duration = parse_duration(&text)
                .map_err(|error| self.invalid("policy.max_duration", error.to_string()))?;
            if policy.max_duration.is_zero() {
                return Err(self.invalid("policy.max_duration", "must be more than 0s"));
            }
        }
        // Added to the defaults, never instead of them: naming `postgres` must not make
        // `sshd` fair game.
        if let Some(names) = raw.protected_processes {
            policy.protected_processes.extend(names);
        }
        for (index, path) in raw.disk_paths.iter().enumerate() {
            if !path.is_absolute() {
                return Err(self.invalid(
                    &format!("policy.disk_paths[{index}]"),
                    format!("{} must be an absolute path", path.display()),
                ));
            }
        }
        policy.disk_paths = raw.disk_paths;
        if let Some(value) = raw.max_disk_fill_percent {
            policy.max_disk_fill_percent = self.percent("policy.max_disk_fill_percent", &value)?;
        }
        if let Some(value) = raw.max_memory_percent {
            policy.max_memory_percent = self.percent("policy.max_memory_percent", &value)?;
        }
        for (index, name) in raw.network_interfaces.iter().enumerate() {
            crate::faults::network::check_interface(name).map_err(|message| {
                self.invalid(&format!("policy.network_interfaces[{index}]"), message)
            })?;
        }
        policy.network_interfaces = raw.network_interfaces;
        if let Some(value) = raw.max_loss_percent {
            policy.max_loss_percent = self.percent("policy.max_loss_percent", &value)?;
        }
        if let Some(text) = raw.max_latency {
            policy.max_latency = parse_duration(&text)
                .map_err(|error| self.invalid("policy.max_latency", error.to_string()))?;
        }
        if let Some(spare) = raw.network_spare_ssh {
            policy.network_spare_ssh = spare;
        }
        Ok(policy)
    }

    /// Accepts `80` or `"80%"`.
    fn percent(&self, key: &str, value: &toml::Value) -> Result<u8, ConfigError> {
        let text = match value {
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        parse_percent(&text).map_err(|error| self.invalid(key, error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
id = "web-1"
[tls]
cert = "web-1.pem"
key = "web-1.key"
ca = "/etc/troop/ca.pem"
[trust]
coordinator_keys = ["signing.pub"]
"#;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("/etc/troop/agent.toml"))
    }

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.listen.unwrap().to_string(), DEFAULT_LISTEN);
        assert!(config.coordinators.is_empty());
        assert_eq!(config.tls.cert, Path::new("/etc/troop/web-1.pem"));
        assert_eq!(
            config.coordinator_keys,
            [Path::new("/etc/troop/signing.pub")]
        );
        assert_eq!(config.max_clock_skew, DEFAULT_CLOCK_SKEW);
        assert!(!config.policy.allow.contains(&FaultKind::StopHost));
        assert!(config.policy.protected_processes.contains("sshd"));
    }

    #[test]
    fn network_policy_is_off_unless_allowed_and_its_caps_are_read() {
        let default = parse(MINIMAL).unwrap().policy;
        assert!(!default.allow.contains(&FaultKind::Network));
        assert!(default.network_interfaces.is_empty() && default.network_spare_ssh);
        let text = format!(
            "{MINIMAL}\n[policy]\nallow = [\"network\", \"dns\"]\nnetwork_interfaces = [\"eth0\"]\nmax_loss_percent = \"20%\"\nmax_latency = \"500ms\"\nnetwork_spare_ssh = false\n"
        );
        let policy = parse(&text).unwrap().policy;
        assert!(
            policy.allow.contains(&FaultKind::Network) && policy.allow.contains(&FaultKind::Dns)
        );
        assert_eq!(policy.network_interfaces, ["eth0"]);
        assert_eq!(policy.max_loss_percent, 20);
        assert_eq!(policy.max_latency, Duration::from_millis(500));
        assert!(!policy.network_spare_ssh);
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let error = parse(&format!("{MINIMAL}\n[policy]\nalow = [\"kill\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/etc/troop/agent.toml"), "{error}");
        assert!(error.contains("alow"), "{error}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("listen = \"nowhere\"", "listen"),
            ("metrics_listen = \"9464\"", "metrics_listen"),
            ("[policy]\nallow = [\"kill\", \"nuke\"]", "policy.allow[1]"),
            ("[policy]\nmax_duration = \"10\"", "policy.max_duration"),
            (
                "[policy]\nmax_disk_fill_percent = 150",
                "policy.max_disk_fill_percent",
            ),
            (
                "[policy]\nmax_memory_percent = \"0%\"",
                "policy.max_memory_percent",
            ),
            ("[policy]\ndisk_paths = [\"tmp\"]", "policy.disk_paths[0]"),
            (
                "[policy]\nnetwork_interfaces = [\"eth0\", \"a b\"]",
                "policy.network_interfaces[1]",
            ),
            (
                "[policy]\nmax_loss_percent = 101",
                "policy.max_loss_percent",
            ),
            ("[policy]\nmax_latency = \"100\"", "policy.max_latency"),
        ];
        for (extra, key) in cases {
            let text = if extra.starts_with('[') {
                format!("{MINIMAL}\n{extra}\n")
            } else {
                format!("{extra}\n{MINIMAL}")
            };
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
        }
        let bad_id = parse(&MINIMAL.replace("web-1\"", "web_1!\"")).unwrap_err();
        assert!(bad_id.to_string().contains("`id`"), "{bad_id}");
    }

    #[test]
    fn policy_values_are_read() {
        let config = parse(&format!(
            "{MINIMAL}\n[policy]\nallow = [\"kill\", \"stop-host\"]\nmax_duration = \"10m\"\nprotected_processes = [\"postgres\"]\nmax_disk_fill_percent = \"90%\"\n"
        ))
        .unwrap();
        assert!(config.policy.allow.contains(&FaultKind::StopHost));
        assert!(!config.policy.allow.contains(&FaultKind::Cpu));
        assert_eq!(config.policy.max_duration, Duration::from_secs(600));
        assert!(config.policy.protected_processes.contains("postgres"));
        assert!(config.policy.protected_processes.contains("sshd"));
        assert_eq!(config.policy.max_disk_fill_percent, 90);
    }

    #[test]
    fn an_agent_that_dials_out_listens_only_when_told() {
        let config = parse(&format!(
            "coordinator = \"https://coord.example.net\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(config.coordinators, ["coord.example.net:7444"]);
        assert_eq!(config.listen, None);
        let both = parse(&format!(
            "coordinator = [\"https://a:9000/\", \"https://[fd00::1]\"]\nlisten = \"0.0.0.0:7443\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(both.coordinators, ["a:9000", "[fd00::1]:7444"]);
        assert!(both.listen.is_some());
        for bad in [
            "\"http://a:7444\"",
            "\"https://a:7444/path\"",
            "\"https://a:0\"",
            "\"https://a:port\"",
            "[]",
        ] {
            let error = parse(&format!("coordinator = {bad}\n{MINIMAL}")).unwrap_err();
            assert!(
                error.to_string().contains("`coordinator`"),
                "{bad}: {error}"
            );
        }
    }
}
