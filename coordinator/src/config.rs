//! The coordinator's `troop.toml`: parsed strictly, validated into [`CoordinatorConfig`].
//! Errors name the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use troop_common::names::{check_dns_name, serve_address, validate_agent_id, validate_label};

pub const CONFIG_ENV: &str = "TROOP_CONFIG";
pub const LOCAL_CONFIG: &str = "troop.toml";
pub const SYSTEM_CONFIG: &str = "/etc/troop/troop.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no config: pass --config, set {CONFIG_ENV}, or create ./{LOCAL_CONFIG} or {SYSTEM_CONFIG}"
    )]
    NotFound,
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

/// `troop.toml` as written: what [`CoordinatorConfig::parse`] reads, and what the lab
/// writes (serialised, so its files have exactly this shape).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub campaigns: Option<PathBuf>,
    /// Required unless `[coordinator]` sends everything through `troop serve`.
    pub signing: Option<SigningFile>,
    pub tls: Option<TlsFile>,
    #[serde(default)]
    pub store: Option<StoreFile>,
    #[serde(default)]
    pub agents: Vec<AgentFile>,
    #[serde(default)]
    pub serve: Option<ServeFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorFile>,
    /// An operator's machine: every command goes through this `troop serve`.
    pub coordinator: Option<RemoteFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorFile {
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteFile {
    pub url: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningFile {
    pub key: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    #[serde(default)]
    pub url: Option<String>,
    /// How long probe results and access records are kept (`30d`); command records stay.
    pub retain: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    /// Agents' streams and the operator API (mutual TLS).
    pub listen: Option<String>,
    /// Plain HTTP: `GET /healthz`.
    pub health_listen: Option<String>,
    /// The web dashboard at `/ui/`: plain HTTP on a loopback address, else HTTPS with
    /// `[tls]`'s certificate. Off unless set.
    pub ui_listen: Option<String>,
    /// How long the schedule leader's lease lasts unless renewed (`15s`).
    pub leader_lease: Option<String>,
    /// This replica's name in the lease and the logs; default `HOSTNAME:PID`.
    pub replica: Option<String>,
    /// `HOST:PORT` where the other replicas reach this one to relay to its agents;
    /// default this host's name and the `listen` port.
    pub advertise: Option<String>,
    /// The fleet CA's private key: with it, serve enrols agents that bring a join token
    /// and renews their certificates. The key stays on the serve host.
    pub ca_key: Option<PathBuf>,
    /// How long the agent certificates serve issues last (`30d`).
    pub agent_certificate_lifetime: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub id: String,
    pub address: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One agent of the static fleet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentEntry {
    pub id: String,
    /// `host:port` the coordinator dials.
    pub address: String,
    pub labels: BTreeMap<String, String>,
}

/// The coordinator's TLS client identity.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl ClientTls {
    /// The mutual-TLS client config these files make.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, troop_common::tls::TlsError> {
        troop_common::tls::client_config(&self.cert, &self.key, &self.ca)
    }
}

/// What an operator may do through the operator API; each role may do what the ones
/// before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read: agents, status, history.
    Viewer,
    /// Act: attacks, campaign runs, halt.
    Operator,
    /// PKI and tokens.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorEntry {
    pub name: String,
    pub role: Role,
}

/// Where `troop serve` listens.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: std::net::SocketAddr,
    pub health_listen: std::net::SocketAddr,
    /// The dashboard's address, if it is served.
    pub ui_listen: Option<std::net::SocketAddr>,
    /// The schedule leader's lease; renewed every third of it.
    pub leader_lease: Duration,
    /// This replica's name, if the config gives one.
    pub replica: Option<String>,
    /// Where other replicas reach this one, if the config says.
    pub advertise: Option<String>,
    /// The fleet CA's key, if serve enrols agents.
    pub ca_key: Option<PathBuf>,
    pub agent_certificate_lifetime: Duration,
}

/// Agent certificates serve issues are short-lived and renewed over the stream.
pub const DEFAULT_AGENT_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

pub const DEFAULT_SERVE_LISTEN: &str = "0.0.0.0:7444";
pub const DEFAULT_HEALTH_LISTEN: &str = "127.0.0.1:7080";
/// Long enough to ride out a database failover's pause, short enough that schedules
/// resume soon after a leader dies.
pub const DEFAULT_LEADER_LEASE: Duration = Duration::from_secs(15);
/// Probe results and access records older than this are pruned.
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// The `troop serve` an operator's CLI goes through, and the operator's identity.
#[derive(Debug, Clone)]
pub struct RemoteCoordinator {
    /// `host:port` to dial.
    pub address: String,
    pub tls: ClientTls,
}

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub path: PathBuf,
    /// Absent only on an operator's machine (`[coordinator]`).
    pub signing_key: Option<PathBuf>,
    pub tls: Option<ClientTls>,
    pub store_url: String,
    /// How long probe results and access records are kept.
    pub store_retain: Duration,
    pub serve: ServeSettings,
    pub campaigns: Option<PathBuf>,
    pub agents: Vec<AgentEntry>,
    pub operators: Vec<OperatorEntry>,
    pub remote: Option<RemoteCoordinator>,
}

impl CoordinatorConfig {
    /// `--config`, else `$TROOP_CONFIG`, else `./troop.toml`, else `/etc/troop/troop.toml`.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
        if let Some(path) = explicit {
            return Ok(path.to_path_buf());
        }
        if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(path));
        }
        [LOCAL_CONFIG, SYSTEM_CONFIG]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .ok_or(ConfigError::NotFound)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Relative paths inside are taken relative to the config file's folder.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: ConfigFile = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string().trim_end().to_string(),
        })?;
        // `troop.toml` alone has the parent "": relative paths are then from ".".
        let base = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let mut agents: Vec<AgentEntry> = Vec::with_capacity(raw.agents.len());
        for (index, agent) in raw.agents.into_iter().enumerate() {
            validate_agent_id(&agent.id).map_err(|m| invalid(format!("agents[{index}].id"), m))?;
            if agents.iter().any(|known| known.id == agent.id) {
                return Err(invalid(
                    format!("agents[{index}].id"),
                    format!("agent {:?} is listed twice", agent.id),
                ));
            }
            if !has_port(&agent.address) {
                return Err(invalid(
                    format!("agents[{index}].address"),
                    format!("{:?} must be host:port", agent.address),
                ));
            }
            for (key, value) in &agent.labels {
                validate_label(key, value)
                    .map_err(|m| invalid(format!("agents[{index}].labels"), m))?;
            }
            agents.push(AgentEntry {
                id: agent.id,
                address: agent.address,
                labels: agent.labels,
            });
        }
        let store = raw.store.unwrap_or_default();
        let duration = |key: &str, text: Option<String>, default: Duration, least: Duration| {
            let Some(text) = text else {
                return Ok(default);
            };
            match troop_common::units::parse_duration(&text) {
                Ok(value) if value >= least => Ok(value),
                Ok(_) => Err(invalid(
                    key.to_string(),
                    format!("{text:?} is shorter than {least:?}"),
                )),
                Err(error) => Err(invalid(key.to_string(), error.to_string())),
            }
        };
        let store_retain = duration(
            "store.retain",
            store.retain,
            DEFAULT_RETAIN,
            Duration::from_secs(3600),
        )?;
        let store_url = store.url.unwrap_or_else(|| "sqlite://troop.db".to_string());
        // Like every other path here, a relative database path is next to this file.
        let store_url = match store_url.strip_prefix("sqlite://") {
            Some(db) if db != ":memory:" && !Path::new(db).is_absolute() => {
                format!("sqlite://{}", base.join(db).display())
            }
            _ => store_url,
        };
        if !["sqlite://", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| store_url.starts_with(scheme))
        {
            return Err(invalid(
                "store.url".into(),
                format!("{store_url:?} must start with sqlite:// or postgres://"),
            ));
        }
        let serve = raw.serve.unwrap_or_default();
        let address = |key: &str, text: Option<String>, default: &str| {
            let text = text.unwrap_or_else(|| default.to_string());
            text.parse::<std::net::SocketAddr>().map_err(|_| {
                invalid(
                    key.to_string(),
                    format!("{text:?} is not an address:port such as {default}"),
                )
            })
        };
        let serve = ServeSettings {
            listen: address("serve.listen", serve.listen, DEFAULT_SERVE_LISTEN)?,
            health_listen: address(
                "serve.health_listen",
                serve.health_listen,
                DEFAULT_HEALTH_LISTEN,
            )?,
            ui_listen: match serve.ui_listen {
                Some(text) => Some(address("serve.ui_listen", Some(text), "127.0.0.1:7081")?),
                None => None,
            },
            leader_lease: duration(
                "serve.leader_lease",
                serve.leader_lease,
                DEFAULT_LEADER_LEASE,
                Duration::from_secs(1),
            )?,
            replica: match serve.replica {
                Some(name) if name.trim().is_empty() || name.contains(char::is_control) => {
                    return Err(invalid(
                        "serve.replica".into(),
                        format!("{name:?} must be a non-empty name on one line"),
                    ));
                }
                name => name,
            },
            advertise: match serve.advertise {
                Some(address)
                    if address.rsplit_once(':').is_none_or(|(host, port)| {
                        host.is_empty() || port.parse::<u16>().is_err()
                    }) =>
                {
                    return Err(invalid(
                        "serve.advertise".into(),
                        format!("{address:?} is not HOST:PORT"),
                    ));
                }
                address => address,
            },
            ca_key: serve.ca_key.map(&resolve),
            agent_certificate_lifetime: duration(
                "serve.agent_certificate_lifetime",
                serve.agent_certificate_lifetime,
                DEFAULT_AGENT_CERTIFICATE_LIFETIME,
                crate::pki::MIN_LIFETIME,
            )?,
        };
        let mut operators: Vec<OperatorEntry> = Vec::new();
        for (index, operator) in raw.operators.into_iter().enumerate() {
            let key = format!("operators[{index}]");
            check_dns_name(&operator.name, false).map_err(|m| invalid(format!("{key}.name"), m))?;
            if operators.iter().any(|known| known.name == operator.name) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("operator {:?} is listed twice", operator.name),
                ));
            }
            let role = match operator.role.as_str() {
                "viewer" => Role::Viewer,
                "operator" => Role::Operator,
                "admin" => Role::Admin,
                other => {
                    return Err(invalid(
                        format!("{key}.role"),
                        format!("{other:?} is not viewer, operator or admin"),
                    ));
                }
            };
            operators.push(OperatorEntry {
                name: operator.name,
                role,
            });
        }
        let client_tls = |tls: TlsFile| ClientTls {
            cert: resolve(tls.cert),
            key: resolve(tls.key),
            ca: resolve(tls.ca),
        };
        let remote = match raw.coordinator {
            None => None,
            Some(remote) => Some(RemoteCoordinator {
                address: serve_address(&remote.url)
                    .map_err(|m| invalid("coordinator.url".into(), m))?,
                tls: ClientTls {
                    cert: resolve(remote.cert),
                    key: resolve(remote.key),
                    ca: resolve(remote.ca),
                },
            }),
        };
        if remote.is_none() {
            if raw.signing.is_none() {
                return Err(invalid(
                    "signing".into(),
                    "missing: [signing] key (or a [coordinator] to go through)".into(),
                ));
            }
            if raw.tls.is_none() {
                return Err(invalid(
                    "tls".into(),
                    "missing: [tls] cert, key, ca (or a [coordinator] to go through)".into(),
                ));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            signing_key: raw.signing.map(|signing| resolve(signing.key)),
            tls: raw.tls.map(client_tls),
            store_url,
            store_retain,
            serve,
            campaigns: raw.campaigns.map(resolve),
            agents,
            operators,
            remote,
        })
    }

    /// The role `[[operators]]` gives `name`, if any.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.operators
            .iter()
            .find(|operator| operator.name == name)
            .map(|operator| operator.role)
    }
}

fn has_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[signing]
key = "pki/signing.key"
[tls]
cert = "pki/coordinator.pem"
key = "pki/coordinator.key"
ca = "pki/ca.pem"
"#;

    fn parse(extra: &str) -> Result<CoordinatorConfig, ConfigError> {
        CoordinatorConfig::parse(
            &format!("{BASE}{extra}"),
            Path::new("/srv/troop/troop.toml"),
        )
    }

    #[test]
    fn replica_settings_are_read_with_their_defaults() {
        let defaults = parse("").unwrap();
        assert_eq!(defaults.serve.leader_lease, DEFAULT_LEADER_LEASE);
        assert_eq!(defaults.store_retain, DEFAULT_RETAIN);
        assert_eq!(
            (defaults.serve.replica, defaults.serve.advertise),
            (None, None)
        );
        let set = parse(
            "[store]\nurl = \"postgresql://troop@db/troop\"\nretain = \"7d\"\n\
             [serve]\nreplica = \"coord-1\"\nleader_lease = \"30s\"\nadvertise = \"coord-1:7444\"\n",
        )
        .unwrap();
        assert_eq!(set.store_url, "postgresql://troop@db/troop");
        assert_eq!(set.store_retain, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(set.serve.leader_lease, Duration::from_secs(30));
        assert_eq!(set.serve.replica.as_deref(), Some("coord-1"));
        assert_eq!(set.serve.advertise.as_deref(), Some("coord-1:7444"));
    }

    #[test]
    fn reads_a_static_fleet() {
        let config = parse(
            "[[agents]]\nid = \"web-1\"\naddress = \"10.0.0.1:7443\"\nlabels = { role = \"web\" }\n",
        )
        .unwrap();
        assert_eq!(
            config.signing_key.as_deref(),
            Some(Path::new("/srv/troop/pki/signing.key"))
        );
        assert_eq!(config.agents[0].labels["role"], "web");
        assert_eq!(config.store_url, "sqlite:///srv/troop/troop.db");
    }

    #[test]
    fn errors_name_the_key() {
        for (extra, key) in [
            (
                "[[agents]]\nid = \"web 1\"\naddress = \"a:1\"\n",
                "agents[0].id",
            ),
            (
                "[[agents]]\nid = \"w\"\naddress = \"nohost\"\n",
                "agents[0].address",
            ),
            (
                "[[agents]]\nid = \"w\"\naddress = \"a:1\"\n[[agents]]\nid = \"w\"\naddress = \"b:1\"\n",
                "agents[1].id",
            ),
            ("[store]\nurl = \"mysql://x\"\n", "store.url"),
            (
                "[[agents]]\nid = \"10.0.0.1\"\naddress = \"a:1\"\n",
                "agents[0].id",
            ),
            (
                "[[agents]]\nid = \"w\"\naddress = \"a:1\"\nlabels = { role = \"w b\" }\n",
                "agents[0].labels",
            ),
            ("[serve]\nlisten = \"everywhere\"\n", "serve.listen"),
            ("[serve]\nhealth_listen = \"7080\"\n", "serve.health_listen"),
            ("[serve]\nleader_lease = \"500ms\"\n", "serve.leader_lease"),
            ("[serve]\nleader_lease = \"soon\"\n", "serve.leader_lease"),
            ("[serve]\nreplica = \" \"\n", "serve.replica"),
            ("[serve]\nreplica = \"a\\nb\"\n", "serve.replica"),
            ("[serve]\nadvertise = \"coord-1\"\n", "serve.advertise"),
            ("[serve]\nadvertise = \":7444\"\n", "serve.advertise"),
            ("[serve]\nadvertise = \"coord-1:http\"\n", "serve.advertise"),
            ("[store]\nretain = \"5m\"\n", "store.retain"),
            (
                "[[operators]]\nname = \"alice\"\nrole = \"root\"\n",
                "operators[0].role",
            ),
            (
                "[[operators]]\nname = \"al ice\"\nrole = \"viewer\"\n",
                "operators[0].name",
            ),
        ] {
            let error = parse(extra).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
        }
        let unknown = parse("[[agents]]\nid = \"w\"\nadress = \"a:1\"\n").unwrap_err();
        assert!(unknown.to_string().contains("adress"), "{unknown}");
    }

    #[test]
    fn an_operator_machine_needs_no_signing_key() {
        let config = CoordinatorConfig::parse(
            "[coordinator]\nurl = \"https://coord.example.net\"\nca = \"ca.pem\"\ncert = \"alice.pem\"\nkey = \"alice.key\"\n",
            Path::new("/home/alice/troop.toml"),
        )
        .unwrap();
        let remote = config.remote.unwrap();
        assert_eq!(remote.address, "coord.example.net:7444");
        assert_eq!(remote.tls.cert, Path::new("/home/alice/alice.pem"));
        assert!(config.signing_key.is_none());
        let alone = CoordinatorConfig::parse("", Path::new("troop.toml")).unwrap_err();
        assert!(alone.to_string().contains("`signing`"), "{alone}");
    }

    #[test]
    fn operators_have_roles() {
        let config = parse(
            "[[operators]]\nname = \"alice\"\nrole = \"operator\"\n[[operators]]\nname = \"bob\"\nrole = \"viewer\"\n",
        )
        .unwrap();
        assert_eq!(config.role_of("alice"), Some(Role::Operator));
        assert_eq!(config.role_of("bob"), Some(Role::Viewer));
        assert_eq!(config.role_of("mallory"), None);
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }
}
