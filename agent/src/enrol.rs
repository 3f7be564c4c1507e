//! `troop-agent enroll`: a new host joins the fleet with nothing but this binary, a join
//! token and the CA's fingerprint. It generates its key here (0600; it never leaves),
//! pins serve's CA by the fingerprint before the token is sent ([`pinned`]), sends a
//! certificate signing request, and writes its certificate and key (in the state dir,
//! where renewals replace them), `ca.pem`, the keys it trusts to sign commands, and a
//! config that dials serve. Every file is written or none is: a
//! refused enrolment leaves nothing behind that would half-configure the host.

mod files;
pub mod pinned;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use troop_common::agent_file::{AgentFile, AgentTlsFile, Coordinators, TrustFile};
use troop_common::names::{serve_address, validate_agent_id};
use troop_proto::serve_pb::{self, enrolment_client::EnrolmentClient};

use crate::config::AgentConfig;
use pinned::{PinnedCa, Seen, sha256_hex};

/// What `troop-agent enroll` was given.
#[derive(Debug, Clone)]
pub struct Request {
    /// `troop serve`'s URL, `https://HOST[:PORT]`.
    pub coordinator: String,
    pub token: String,
    pub ca_sha256: String,
    /// The id to ask for; else the token's, else this host's name.
    pub id: Option<String>,
    /// Where the config goes; `ca.pem` and the signing keys go next to it, the key and
    /// certificate into the state dir.
    pub config: PathBuf,
    pub state_dir: Option<PathBuf>,
    /// A TOML file with the host's `[policy]` table, for the written config.
    pub policy: Option<PathBuf>,
}

/// What `--policy FILE` holds: a `[policy]` table, as in agent.toml.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyOnly {
    policy: troop_common::agent_file::PolicyFile,
}

/// The host's policy from `--policy`, or the agent's defaults.
fn read_policy(path: Option<&Path>) -> Result<troop_common::agent_file::PolicyFile, EnrolError> {
    let Some(path) = path else {
        return Ok(Default::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| EnrolError::Invalid(format!("--policy {}: {e}", path.display())))?;
    parse_policy(&text)
        .map_err(|e| EnrolError::Invalid(format!("--policy {}: {e}", path.display())))
}

/// A `--policy` file's text: one `[policy]` table, as agent.toml has it.
pub fn parse_policy(text: &str) -> Result<troop_common::agent_file::PolicyFile, String> {
    toml::from_str::<PolicyOnly>(text)
        .map(|file| file.policy)
        .map_err(|e| format!("not a [policy] table as agent.toml has it: {e}"))
}

/// Why enrolment stopped; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the coordinator at {address} is not the fleet's: it showed no CA certificate with SHA-256 {pinned} (it showed {}); the token was not sent",
        shown.join(", ")
    )]
    OtherCa {
        address: String,
        pinned: String,
        shown: Vec<String>,
    },
    #[error("cannot reach the coordinator at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("the coordinator refused the enrolment: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the coordinator's answer does not hold together: {0}")]
    BadReply(String),
    #[error(transparent)]
    Files(#[from] files::FilesError),
}

/// Enrols this host; returns the files written.
pub async fn enrol(request: &Request) -> Result<Vec<PathBuf>, EnrolError> {
    let invalid = EnrolError::Invalid;
    let pin = request.ca_sha256.trim().to_ascii_lowercase();
    if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "--ca-sha256 {:?} is not a SHA-256 (64 hex digits, as `troop pki join-token` prints)",
            request.ca_sha256
        )));
    }
    let address = serve_address(&request.coordinator)
        .map_err(|m| invalid(format!("--coordinator {:?}: {m}", request.coordinator)))?;
    if let Some(id) = &request.id {
        validate_agent_id(id).map_err(|m| invalid(format!("--id {id:?}: {m}")))?;
    }
    let dir = config_dir(&request.config);
    // Refuse before anything costs the token a use.
    files::refuse_existing(&dir, &request.config)?;
    let policy = read_policy(request.policy.as_deref())?;
    // Written into the config as it is: a relative path would be read from the config's
    // folder, not from where enroll ran.
    let state_dir = std::path::absolute(
        request
            .state_dir
            .as_deref()
            .unwrap_or(Path::new(crate::config::DEFAULT_STATE_DIR)),
    )
    .map_err(|e| invalid(format!("--state-dir: {e}")))?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| invalid(format!("cannot generate a key: {e}")))?;
    let csr_der = crate::identity::csr(request.id.as_deref(), &key)
        .map_err(|e| EnrolError::Invalid(format!("cannot make the signing request: {e}")))?;
    let hostname = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();

    let verifier = Arc::new(PinnedCa::new(&pin));
    let mut tls = rustls::ClientConfig::builder_with_provider(troop_common::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let channel = match crate::link::dial(&address, Arc::new(tls)).await {
        Ok(channel) => channel,
        Err(reason) => {
            return Err(match verifier.seen() {
                Seen::OtherCa(shown) => EnrolError::OtherCa {
                    address,
                    pinned: pin,
                    shown,
                },
                _ => EnrolError::Unreachable { address, reason },
            });
        }
    };
    let Seen::Pinned(ca) = verifier.seen() else {
        return Err(EnrolError::BadReply("the handshake showed no CA".into()));
    };
    let reply = EnrolmentClient::new(channel)
        .enroll(serve_pb::EnrollRequest {
            token: request.token.clone(),
            agent_id: request.id.clone().unwrap_or_default(),
            csr_der,
            hostname: if validate_agent_id(&hostname).is_ok() {
                hostname
            } else {
                String::new()
            },
        })
        .await
        .map_err(|status| EnrolError::Refused {
            code: troop_proto::refusal::code_name(status.code()).to_string(),
            message: status.message().to_string(),
        })?
        .into_inner();
    let files = files::Enrolled {
        agent_id: reply.agent_id.clone(),
        key_pem: key.serialize_pem(),
        cert_pem: reply.certificate_pem.clone(),
        ca_pem: reply.ca_pem.clone(),
        signing_keys_pem: reply.signing_keys_pem.clone(),
    };
    let config_text = config_text(&reply, &address, &state_dir, policy)?;
    check_reply(&reply, &ca, &files, &config_text, &request.config)?;
    Ok(files::write(
        &dir,
        &state_dir,
        &request.config,
        &files,
        &config_text,
    )?)
}

fn config_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// The agent config the enrolment writes: it dials serve and trusts what serve sent.
fn config_text(
    reply: &serve_pb::EnrollReply,
    address: &str,
    state_dir: &Path,
    policy: troop_common::agent_file::PolicyFile,
) -> Result<String, EnrolError> {
    let id = &reply.agent_id;
    let (key, cert) = files::identity_paths(state_dir, id);
    let file = AgentFile {
        id: Some(id.clone()),
        coordinator: Some(Coordinators::One(format!("https://{address}"))),
        labels: reply.labels.clone().into_iter().collect::<BTreeMap<_, _>>(),
        state_dir: Some(state_dir.to_path_buf()),
        tls: AgentTlsFile {
            cert,
            key,
            ca: files::CA_FILE.into(),
        },
        trust: TrustFile {
            coordinator_keys: (1..=reply.signing_keys_pem.len())
                .map(|n| files::signing_key_file(n).into())
                .collect(),
            max_clock_skew: None,
        },
        policy,
        ..AgentFile::default()
    };
    let body = toml::to_string(&file)
        .map_err(|e| EnrolError::BadReply(format!("cannot write the config: {e}")))?;
    Ok(format!(
        "# Written by `troop-agent enroll`: this host joined the fleet through {address}.\n\
         # Its key never left it; serve renews the certificate. [policy] says what it allows.\n{body}"
    ))
}

/// Everything serve sent must fit: the id, the certificate under the pinned CA, the keys.
fn check_reply(
    reply: &serve_pb::EnrollReply,
    ca: &rustls_pki_types::CertificateDer<'_>,
    files: &files::Enrolled,
    config_text: &str,
    config_path: &Path,
) -> Result<(), EnrolError> {
    let bad = EnrolError::BadReply;
    validate_agent_id(&reply.agent_id).map_err(|m| bad(format!("agent id: {m}")))?;
    use rustls_pki_types::pem::PemObject;
    let sent_ca = rustls_pki_types::CertificateDer::pem_slice_iter(reply.ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("ca_pem: {e}")))?;
    if sent_ca.len() != 1 || sha256_hex(&sent_ca[0]) != sha256_hex(ca) {
        return Err(bad(
            "its ca_pem is not the one CA its handshake showed".into()
        ));
    }
    if reply.signing_keys_pem.is_empty() {
        return Err(bad("it names no key to trust for commands".into()));
    }
    for key in &reply.signing_keys_pem {
        use ed25519_dalek::pkcs8::DecodePublicKey;
        ed25519_dalek::VerifyingKey::from_public_key_pem(key)
            .map_err(|e| bad(format!("a signing key: {e}")))?;
    }
    files::check_certificate(files, ca).map_err(bad)?;
    AgentConfig::parse(config_text, config_path)
        .map_err(|e| bad(format!("the config it makes: {e}")))?;
    Ok(())
}
