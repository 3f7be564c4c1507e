//! The coordinator's `troop.toml`: parsed strictly, validated into [`CoordinatorConfig`].
//! Errors name the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use troop_common::names::{validate_agent_id, validate_label};

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
    pub signing: SigningFile,
    pub tls: TlsFile,
    #[serde(default)]
    pub store: Option<StoreFile>,
    #[serde(default)]
    pub agents: Vec<AgentFile>,
    #[serde(default)]
    pub serve: Option<ServeFile>,
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
    pub url: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    pub listen: String,
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

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub path: PathBuf,
    pub signing_key: PathBuf,
    pub tls: ClientTls,
    pub store_url: String,
    pub serve_listen: Option<String>,
    pub campaigns: Option<PathBuf>,
    pub agents: Vec<AgentEntry>,
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
        let store_url = raw
            .store
            .map_or_else(|| "sqlite://troop.db".to_string(), |store| store.url);
        // Like every other path here, a relative database path is next to this file.
        let store_url = match store_url.strip_prefix("sqlite://") {
            Some(db) if db != ":memory:" && !Path::new(db).is_absolute() => {
                format!("sqlite://{}", base.join(db).display())
            }
            _ => store_url,
        };
        if !(store_url.starts_with("sqlite://") || store_url.starts_with("postgres://")) {
            return Err(invalid(
                "store.url".into(),
                format!("{store_url:?} must start with sqlite:// or postgres://"),
            ));
        }
        if let Some(serve) = &raw.serve
            && serve.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "serve.listen".into(),
                format!(
                    "{:?} is not an address:port such as 0.0.0.0:7080",
                    serve.listen
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            signing_key: resolve(raw.signing.key),
            tls: ClientTls {
                cert: resolve(raw.tls.cert),
                key: resolve(raw.tls.key),
                ca: resolve(raw.tls.ca),
            },
            store_url,
            serve_listen: raw.serve.map(|serve| serve.listen),
            campaigns: raw.campaigns.map(resolve),
            agents,
        })
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
    fn reads_a_static_fleet() {
        let config = parse(
            "[[agents]]\nid = \"web-1\"\naddress = \"10.0.0.1:7443\"\nlabels = { role = \"web\" }\n",
        )
        .unwrap();
        assert_eq!(config.signing_key, Path::new("/srv/troop/pki/signing.key"));
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
        ] {
            let error = parse(extra).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
        }
        let unknown = parse("[[agents]]\nid = \"w\"\nadress = \"a:1\"\n").unwrap_err();
        assert!(unknown.to_string().contains("adress"), "{unknown}");
    }
}
