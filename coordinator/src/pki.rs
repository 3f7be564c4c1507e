//! troop's built-in PKI: a fleet CA, the coordinator's client certificate,
//! per-agent certificates, and the Ed25519 key that signs experiments.
//!
//! The file names written here are a contract other tools rely on:
//! `ca.pem ca.key coordinator.pem coordinator.key signing.key signing.pub`
//! from [`init`], and `<name>.pem <name>.key` from [`issue_agent`].

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use rand::TryRngCore;
use rand::rngs::OsRng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use troop_common::names::check_dns_name;

/// File name of the fleet CA certificate.
pub const CA_CERT: &str = "ca.pem";
/// File name of the fleet CA private key.
pub const CA_KEY: &str = "ca.key";
/// File name of the coordinator's client certificate.
pub const COORDINATOR_CERT: &str = "coordinator.pem";
/// File name of the coordinator's client private key.
pub const COORDINATOR_KEY: &str = "coordinator.key";
/// File name of the Ed25519 experiment-signing private key (PKCS#8 PEM).
pub const SIGNING_KEY: &str = "signing.key";
/// File name of the Ed25519 experiment-signing public key (SPKI PEM).
pub const SIGNING_PUB: &str = "signing.pub";
/// Common name and DNS SAN of the coordinator's client certificate.
pub const COORDINATOR_NAME: &str = "troop-coordinator";

/// Common name of the fleet CA; issued certificates name it as their issuer.
const CA_COMMON_NAME: &str = "troop fleet CA";
/// Names that would overwrite the PKI's own files, or stand in for the coordinator.
const RESERVED_NAMES: [&str; 4] = ["ca", "coordinator", "signing", COORDINATOR_NAME];
const CA_VALIDITY_DAYS: u64 = 3652;
/// 825 days is the longest leaf lifetime Apple's TLS stack (and many others) accept.
pub const LEAF_VALIDITY_DAYS: u64 = 825;
/// Backdating absorbs small clock differences between the coordinator and agents.
const CLOCK_SKEW: Duration = Duration::from_secs(300);
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// Everything that can go wrong creating, issuing or loading troop's keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A private key file others than its owner may read.
    #[error(transparent)]
    KeyMode(#[from] troop_common::tls::ExposedKey),
    /// A file the PKI would write is already there.
    #[error("{} already exists; refusing to overwrite it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading, writing or creating a file or directory failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, e.g. "cannot read".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The agent name cannot be used as a certificate name.
    #[error("invalid agent name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A `--san` value is neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name {san:?}: {reason}")]
    InvalidSan {
        /// The rejected SAN.
        san: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Generating a key or certificate failed.
    #[error("cannot generate {what}")]
    Generate {
        /// What was being generated.
        what: String,
        /// The underlying rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// Getting random bytes from the operating system failed.
    #[error("cannot get random bytes from the operating system")]
    Random(#[source] rand::rand_core::OsError),
    /// A PEM file did not hold what was expected.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The offending file.
        path: PathBuf,
        /// What was wrong with it (never the key material itself).
        reason: String,
    },
    /// An Ed25519 private key file could not be decoded.
    #[error("{}: not an Ed25519 PKCS#8 PEM private key", path.display())]
    SigningKey {
        /// The offending file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: ed25519_dalek::pkcs8::Error,
    },
    /// Serialising an Ed25519 key to PEM failed.
    #[error("cannot encode the {what} as PEM")]
    Encode {
        /// Which key was being encoded.
        what: &'static str,
    },
    /// A certificate signing request that cannot be signed.
    #[error("certificate signing request refused: {reason}")]
    Csr {
        /// What is wrong with it.
        reason: String,
    },
    /// `ca.key` is not the private key of `ca.pem`.
    #[error("{} does not hold the private key of {}", key.display(), cert.display())]
    CaKeyMismatch {
        /// The CA certificate.
        cert: PathBuf,
        /// The CA private key.
        key: PathBuf,
    },
    /// A freshly issued certificate failed verification against the CA.
    #[error(
        "certificate for {name:?} does not verify against {} (was it created by `troop pki init`?)",
        ca.display()
    )]
    Verify {
        /// The name the certificate was issued for.
        name: String,
        /// The CA certificate it was checked against.
        ca: PathBuf,
        /// The verifier's error.
        #[source]
        source: rustls::Error,
    },
}

/// Creates `dir` (mode 0700 if new) and writes a new CA, the coordinator's
/// client certificate and the experiment-signing key pair into it.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, PkiError> {
    ensure_dir(dir)?;
    // Check before generating anything so a second `init` fails fast and clearly.
    for name in [
        CA_CERT,
        CA_KEY,
        COORDINATOR_CERT,
        COORDINATOR_KEY,
        SIGNING_KEY,
        SIGNING_PUB,
    ] {
        refuse_existing(&dir.join(name))?;
    }

    let ca_key = generate_key("the CA key")?;
    let ca_params = ca_params()?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(generate_err("the CA certificate"))?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let coord_key = generate_key("the coordinator key")?;
    // Client: it dials agents. Server: `troop serve` presents it to agents that dial in,
    // which check it names COORDINATOR_NAME whatever address they dialled.
    let coord_params = leaf_params(
        COORDINATOR_NAME,
        &[],
        vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ],
    )?;
    let coord_cert = coord_params
        .signed_by(&coord_key, &issuer)
        .map_err(generate_err("the coordinator certificate"))?;

    let (signing_pem, signing_pub) = signing_key_pems(&generate_signing_key()?)?;
    write_files(
        dir,
        &[
            (CA_CERT, ca_cert.pem().as_bytes(), CERT_MODE),
            (CA_KEY, ca_key.serialize_pem().as_bytes(), KEY_MODE),
            (COORDINATOR_CERT, coord_cert.pem().as_bytes(), CERT_MODE),
            (
                COORDINATOR_KEY,
                coord_key.serialize_pem().as_bytes(),
                KEY_MODE,
            ),
            (SIGNING_KEY, signing_pem.as_bytes(), KEY_MODE),
            (SIGNING_PUB, signing_pub.as_bytes(), CERT_MODE),
        ],
    )
}

/// Issues `<name>.pem` and `<name>.key` in `dir`, signed by the CA there, a TLS server
/// certificate for `name` and `sans`, valid for [`LEAF_VALIDITY_DAYS`].
pub fn issue_agent(dir: &Path, name: &str, sans: &[String]) -> Result<Vec<PathBuf>, PkiError> {
    issue_agent_for(dir, name, sans, LEAF_VALIDITY_DAYS)
}

/// As [`issue_agent`], valid for `days` (1 to [`LEAF_VALIDITY_DAYS`]).
pub fn issue_agent_for(
    dir: &Path,
    name: &str,
    sans: &[String],
    days: u64,
) -> Result<Vec<PathBuf>, PkiError> {
    validate_agent_name(name)?;
    // Server only: an agent's certificate must not open a session to another agent
    // (agents accept only client certificates); serve accepts it for an agent's stream.
    issue_leaf(dir, name, sans, days, Role::Agent)
}

/// Issues `<name>.pem` and `<name>.key` in `dir`: an operator's client certificate for
/// the operator API of `troop serve`, which looks `name` up in its `[[operators]]`.
/// Agents refuse it: they accept only the coordinator's certificate.
pub fn issue_operator(dir: &Path, name: &str, days: u64) -> Result<Vec<PathBuf>, PkiError> {
    validate_agent_name(name)?;
    issue_leaf(dir, name, &[], days, Role::Operator)
}

/// Issues a new `coordinator.pem` and `coordinator.key` in `dir` (for client and server
/// use): for a PKI whose coordinator certificate an older `init` made for client use
/// only, which `troop serve` cannot present to agents. Move the old pair aside first.
pub fn issue_coordinator(dir: &Path, days: u64) -> Result<Vec<PathBuf>, PkiError> {
    issue_leaf(dir, COORDINATOR_NAME, &[], days, Role::Coordinator)
}

/// Checks that `cert` can serve agents' streams: signed by `ca`, for server use, naming
/// the coordinator. `troop serve` runs this before it listens.
pub fn check_serving_cert(ca: &Path, cert: &Path) -> Result<(), PkiError> {
    let ca_der = read_ca_cert(ca)?;
    let roots = ca_roots(ca, &ca_der)?;
    let leaf = read_ca_cert(cert)?;
    verify_agent_cert(roots, &leaf, COORDINATOR_NAME).map_err(|source| PkiError::Verify {
        name: COORDINATOR_NAME.to_owned(),
        ca: ca.to_owned(),
        source,
    })
}

#[derive(Clone, Copy)]
enum Role {
    Agent,
    Operator,
    Coordinator,
}

fn issue_leaf(
    dir: &Path,
    name: &str,
    sans: &[String],
    days: u64,
    role: Role,
) -> Result<Vec<PathBuf>, PkiError> {
    if !(1..=LEAF_VALIDITY_DAYS).contains(&days) {
        return Err(PkiError::InvalidName {
            name: name.to_owned(),
            reason: format!(
                "a certificate is valid for 1 to {LEAF_VALIDITY_DAYS} days, not {days}"
            ),
        });
    }
    let (cert_file, key_file) = match role {
        Role::Coordinator => (COORDINATOR_CERT.to_string(), COORDINATOR_KEY.to_string()),
        _ => (format!("{name}.pem"), format!("{name}.key")),
    };
    refuse_existing(&dir.join(&cert_file))?;
    refuse_existing(&dir.join(&key_file))?;

    let ca = FleetCa::load(&dir.join(CA_CERT), &dir.join(CA_KEY))?;
    let issuer = ca.issuer()?;
    let (what, usage) = match role {
        Role::Agent => ("the agent", vec![ExtendedKeyUsagePurpose::ServerAuth]),
        Role::Operator => ("the operator", vec![ExtendedKeyUsagePurpose::ClientAuth]),
        Role::Coordinator => (
            "the coordinator",
            vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        ),
    };
    let key = generate_key(&format!("{what} key"))?;
    let mut params = leaf_params(name, sans, usage)?;
    set_validity(&mut params, Duration::from_secs(days * 86_400));
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(generate_err(&format!("{what} certificate")))?;
    let roots = ca.roots.clone();
    let verified = match role {
        Role::Agent => verify_agent_cert(roots, cert.der(), name),
        Role::Operator => verify_operator_cert(roots, cert.der()),
        Role::Coordinator => verify_operator_cert(roots.clone(), cert.der())
            .and_then(|()| verify_agent_cert(roots, cert.der(), name)),
    };
    verified.map_err(|source| PkiError::Verify {
        name: name.to_owned(),
        ca: ca.cert_path.clone(),
        source,
    })?;

    write_files(
        dir,
        &[
            (&cert_file, cert.pem().as_bytes(), CERT_MODE),
            (&key_file, key.serialize_pem().as_bytes(), KEY_MODE),
        ],
    )
}

/// Loads an Ed25519 private key from a PKCS#8 PEM file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, PkiError> {
    troop_common::tls::check_key_mode(path)?;
    let pem = read_to_string(path)?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|source| PkiError::SigningKey {
        path: path.to_owned(),
        source,
    })
}

/// Checks that `name` can be the name of an agent certificate serve issues.
pub fn check_agent_name(name: &str) -> Result<(), PkiError> {
    validate_agent_name(name)
}

/// SHA-256 of the certificate in `ca` (PEM), lower-case hex: what an enrolling agent pins.
pub fn ca_sha256(ca: &Path) -> Result<String, PkiError> {
    use sha2::{Digest, Sha256};
    Ok(hex::encode(Sha256::digest(read_ca_cert(ca)?.as_ref())))
}

/// Checks that `name` can be an agent id, a file stem and a DNS name the
/// coordinator verifies the agent's certificate against.
fn validate_agent_name(name: &str) -> Result<(), PkiError> {
    let invalid = |reason: &str| PkiError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    check_dns_name(name, false).map_err(|r| invalid(&r))?;
    // `<name>.key` must fit in one path component (NAME_MAX is 255 on Linux and macOS).
    if name.len() + ".key".len() > 255 {
        return Err(invalid(&format!(
            "{} characters is too long for the file name {name}.key; at most 251",
            name.len()
        )));
    }
    if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(invalid(
            "reserved: its files would collide with the PKI's own (ca, coordinator, signing), or it is the coordinator's own name",
        ));
    }
    Ok(())
}

/// The CA's parameters; `issue_agent` rebuilds them, so they must be deterministic
/// apart from serial and validity, which do not affect issuing.
fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, Duration::from_secs(CA_VALIDITY_DAYS * 86_400));
    Ok(params)
}

fn leaf_params(
    name: &str,
    sans: &[String],
    ekus: Vec<ExtendedKeyUsagePurpose>,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(name);
    params.subject_alt_names = std::iter::once(dns_san(name))
        .chain(sans.iter().map(|s| parse_san(s)))
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus;
    // Lets OpenSSL-based tools pick the right issuer key when building chains.
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    set_validity(
        &mut params,
        Duration::from_secs(LEAF_VALIDITY_DAYS * 86_400),
    );
    Ok(params)
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn dns_san(name: &str) -> Result<SanType, PkiError> {
    let ia5 = name
        .try_into()
        .map_err(|e: rcgen::Error| PkiError::InvalidSan {
            san: name.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(SanType::DnsName(ia5))
}

/// An `--san` is an IP address if it parses as one, else a DNS name (wildcards allowed).
fn parse_san(san: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    check_dns_name(san, true).map_err(|reason| PkiError::InvalidSan {
        san: san.to_owned(),
        reason,
    })?;
    dns_san(san)
}

/// Valid from a little before now (peers' clocks differ) for `lifetime`. The head start
/// is at most a tenth of the lifetime, so an agent renewing past half its certificate's
/// validity renews near half its lifetime, short or long.
fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    // Before 1970 the clock is broken anyway; fall back to the epoch rather than fail.
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch.saturating_sub(CLOCK_SKEW.min(lifetime / 10));
    params.not_after = epoch + since_epoch + lifetime;
}

/// A random positive 128-bit serial, so re-issued certificates never share one.
fn random_serial() -> Result<SerialNumber, PkiError> {
    Ok(SerialNumber::from_slice(&random_serial_bytes()?))
}

/// The DER content of [`random_serial`]: what a parser of the certificate reads back.
fn random_serial_bytes() -> Result<[u8; 16], PkiError> {
    let mut bytes = [0u8; 16];
    OsRng.try_fill_bytes(&mut bytes).map_err(PkiError::Random)?;
    // Clear the sign bit and keep the top byte non-zero: DER wants a positive, minimal integer.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(bytes)
}

fn generate_key(what: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_err(what))
}

/// A signing key as files hold it: the private key (PKCS#8 PEM) and the public (SPKI PEM).
fn signing_key_pems(signing: &SigningKey) -> Result<(String, String), PkiError> {
    // PKCS#8 v1 (no embedded public key): OpenSSL 3.0 cannot read the v2 form
    // ed25519-dalek writes by default.
    let signing_pem = KeypairBytes {
        secret_key: signing.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|_| PkiError::Encode {
        what: "signing key",
    })?;
    let signing_pub = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| PkiError::Encode {
            what: "signing public key",
        })?;
    Ok((signing_pem.to_string(), signing_pub))
}

/// A new signing key pair in `dir`, as `STEM.key` (0600) and `STEM.pub`; neither may
/// exist. Returns the key and the private key's path.
pub fn new_signing_key(dir: &Path, stem: &str) -> Result<(SigningKey, PathBuf), PkiError> {
    let key = generate_signing_key()?;
    let (private, public) = signing_key_pems(&key)?;
    let (key_file, pub_file) = (format!("{stem}.key"), format!("{stem}.pub"));
    let written = write_files(
        dir,
        &[
            (key_file.as_str(), private.as_bytes(), KEY_MODE),
            (pub_file.as_str(), public.as_bytes(), CERT_MODE),
        ],
    )?;
    Ok((key, written[0].clone()))
}

fn generate_signing_key() -> Result<SigningKey, PkiError> {
    // ed25519-dalek 2 wants rand_core 0.6, so draw the seed from rand 0.9's OsRng ourselves.
    let mut secret = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut secret)
        .map_err(PkiError::Random)?;
    let key = SigningKey::from_bytes(&secret);
    secret.fill(0);
    Ok(key)
}

fn generate_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_owned(),
        source,
    }
}

fn read_ca_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let pem = fs::read(path).map_err(io_err("cannot read", path))?;
    CertificateDer::from_pem_slice(&pem).map_err(|e| PkiError::Malformed {
        path: path.to_owned(),
        reason: format!("no PEM certificate found ({e})"),
    })
}

fn ca_roots(path: &Path, ca_der: &CertificateDer<'_>) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der.clone()).map_err(|e| PkiError::Malformed {
        path: path.to_owned(),
        reason: format!("not a usable CA certificate ({e})"),
    })?;
    Ok(roots)
}

/// Whether the CA certificate carries `key`'s public key.
fn spki_matches(roots: &RootCertStore, key: &KeyPair) -> bool {
    // webpki keeps the SPKI without its outer SEQUENCE header; rcgen emits the whole thing.
    let full = key.subject_public_key_info();
    roots.roots.iter().any(|anchor| {
        let inner = anchor.subject_public_key_info.as_ref();
        full.len() > inner.len() && full.ends_with(inner)
    })
}

/// Checks the new certificate as rustls will, as a server certificate for `name`.
fn verify_agent_cert(
    roots: RootCertStore,
    cert: &CertificateDer<'_>,
    name: &str,
) -> Result<(), rustls::Error> {
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let now = UnixTime::now();
    let server_name =
        ServerName::try_from(name.to_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
    let verifier_err =
        |e: rustls::server::VerifierBuilderError| rustls::Error::General(e.to_string());
    rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(verifier_err)?
        .verify_server_cert(cert, &[], &server_name, &[], now)?;
    Ok(())
}

/// Checks the new certificate as `troop serve` will, as a client certificate.
fn verify_operator_cert(
    roots: RootCertStore,
    cert: &CertificateDer<'_>,
) -> Result<(), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_client_cert(cert, &[], UnixTime::now())?;
    Ok(())
}

fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("cannot create directory", dir))
}

fn refuse_existing(path: &Path) -> Result<(), PkiError> {
    // symlink_metadata so a dangling symlink also counts as "there".
    match fs::symlink_metadata(path) {
        Ok(_) => Err(PkiError::Exists {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot check", path)(e)),
    }
}

/// Writes every file or none: on failure the ones already written are removed again.
fn write_files(dir: &Path, files: &[(&str, &[u8], u32)]) -> Result<Vec<PathBuf>, PkiError> {
    let mut written = Vec::with_capacity(files.len());
    for (name, contents, mode) in files {
        let path = dir.join(name);
        if let Err(e) = write_new(&path, contents, *mode) {
            for done in &written {
                let _ = fs::remove_file(done);
            }
            return Err(e);
        }
        written.push(path);
    }
    Ok(written)
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    // create_new + mode: the file never exists with looser permissions, and a
    // file that appeared since our check is not clobbered.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => PkiError::Exists {
                path: path.to_owned(),
            },
            _ => io_err("cannot create", path)(e),
        })?;
    let result = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = result {
        let _ = fs::remove_file(path);
        return Err(io_err("cannot write", path)(e));
    }
    Ok(())
}

fn read_to_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io_err("cannot read", path))
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

mod fleet_ca;
pub use fleet_ca::{FleetCa, Issued, MAX_LIFETIME, MIN_LIFETIME};

#[cfg(test)]
mod tests;
