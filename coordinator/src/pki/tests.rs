use super::*;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signer, Verifier, VerifyingKey};
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use std::os::unix::fs::PermissionsExt;

const ALL: [&str; 6] = [
    CA_CERT,
    CA_KEY,
    COORDINATOR_CERT,
    COORDINATOR_KEY,
    SIGNING_KEY,
    SIGNING_PUB,
];

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

fn roots(dir: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(dir.join(CA_CERT)).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    Arc::new(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verify_server(dir: &Path, cert_file: &str, name: &str) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(dir), provider())
        .build()
        .unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    verifier
        .verify_server_cert(
            &cert(&dir.join(cert_file)),
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

fn verify_client(dir: &Path, cert_file: &str) -> Result<(), rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(dir), provider())
        .build()
        .unwrap();
    verifier
        .verify_client_cert(&cert(&dir.join(cert_file)), &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn init_writes_all_files_with_safe_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let written = init(&dir).unwrap();
    let expected: Vec<PathBuf> = ALL.iter().map(|f| dir.join(f)).collect();
    assert_eq!(written, expected);
    assert_eq!(mode(&dir), 0o700);
    for path in &written {
        let m = mode(path);
        if path.extension().is_some_and(|e| e == "key") {
            assert_eq!(m, 0o600, "{}", path.display());
        } else {
            // 0644 under the usual umask; never writable by others.
            assert_eq!(m & 0o622, 0o600, "{}: {m:o}", path.display());
        }
    }
    let pem = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
    assert!(pem(CA_KEY).starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(pem(SIGNING_KEY).starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(pem(SIGNING_PUB).starts_with("-----BEGIN PUBLIC KEY-----"));
    assert!(pem(CA_CERT).starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn an_agent_certificate_is_valid_for_the_days_asked() {
    use rustls::client::danger::ServerCertVerifier;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    init(&dir).unwrap();
    issue_agent_for(&dir, "web-1", &[], 30).unwrap();
    let cert = CertificateDer::from_pem_file(dir.join("web-1.pem")).unwrap();
    let roots = ca_roots(
        &dir.join(CA_CERT),
        &read_ca_cert(&dir.join(CA_CERT)).unwrap(),
    )
    .unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let name = ServerName::try_from("web-1").unwrap();
    let at = |days: u64| {
        let now = UnixTime::now().as_secs();
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now + days * 86_400))
    };
    assert!(
        verifier
            .verify_server_cert(&cert, &[], &name, &[], at(29))
            .is_ok()
    );
    assert!(
        verifier
            .verify_server_cert(&cert, &[], &name, &[], at(31))
            .is_err()
    );
    assert!(issue_agent_for(&dir, "web-2", &[], 826).is_err());
    assert!(issue_agent_for(&dir, "web-2", &[], 0).is_err());
}

#[test]
fn a_signing_key_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    init(&dir).unwrap();
    let key = dir.join("signing.key");
    assert!(load_signing_key(&key).is_ok());
    fs::set_permissions(&key, fs::Permissions::from_mode(0o604)).unwrap();
    let error = load_signing_key(&key).unwrap_err().to_string();
    assert!(
        error.contains("signing.key") && error.contains("0604"),
        "{error}"
    );
}

#[test]
fn init_keeps_existing_dir_mode() {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o750)).unwrap();
    init(tmp.path()).unwrap();
    assert_eq!(mode(tmp.path()), 0o750);
}

#[test]
fn init_refuses_to_overwrite_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join(SIGNING_PUB), "mine").unwrap();
    let err = init(tmp.path()).unwrap_err();
    assert!(matches!(&err, PkiError::Exists { path } if path.ends_with(SIGNING_PUB)));
    assert!(err.to_string().contains("signing.pub"), "{err}");
    for f in &ALL[..5] {
        assert!(!tmp.path().join(f).exists(), "{f} was written");
    }
    assert_eq!(
        fs::read_to_string(tmp.path().join(SIGNING_PUB)).unwrap(),
        "mine"
    );

    // A second init over a complete PKI leaves the first one untouched.
    let dir = tmp.path().join("again");
    init(&dir).unwrap();
    let before = fs::read(dir.join(CA_KEY)).unwrap();
    assert!(matches!(init(&dir), Err(PkiError::Exists { .. })));
    assert_eq!(fs::read(dir.join(CA_KEY)).unwrap(), before);
}

#[test]
fn chain_verifies_with_rustls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir).unwrap();
    let sans = ["10.0.0.7".to_owned(), "web-1.example.com".to_owned()];
    let written = issue_agent(dir, "web-1", &sans).unwrap();
    assert_eq!(written, vec![dir.join("web-1.pem"), dir.join("web-1.key")]);
    assert_eq!(mode(&dir.join("web-1.key")), 0o600);

    // The coordinator certificate dials agents, and `troop serve` presents it to agents
    // and operators that dial in: client and server, for its own name only.
    verify_client(dir, COORDINATOR_CERT).unwrap();
    verify_server(dir, COORDINATOR_CERT, COORDINATOR_NAME).unwrap();
    assert!(verify_server(dir, COORDINATOR_CERT, "web-1").is_err());

    // The agent certificate serves for its name and SANs, and is no client certificate.
    verify_server(dir, "web-1.pem", "web-1").unwrap();
    verify_server(dir, "web-1.pem", "10.0.0.7").unwrap();
    verify_server(dir, "web-1.pem", "web-1.example.com").unwrap();
    assert!(verify_client(dir, "web-1.pem").is_err());
    let err = verify_server(dir, "web-1.pem", "web-2").unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                )
        ),
        "{err:?}"
    );
    assert!(verify_server(dir, "web-1.pem", "10.0.0.8").is_err());

    // Certificates from another fleet's CA are rejected.
    let other = tmp.path().join("other");
    init(&other).unwrap();
    fs::copy(dir.join("web-1.pem"), other.join("web-1.pem")).unwrap();
    assert!(verify_server(&other, "web-1.pem", "web-1").is_err());
}

/// Pumps TLS records between the two ends until both finish the handshake.
fn handshake(
    client: &mut rustls::Connection,
    server: &mut rustls::Connection,
) -> Result<(), rustls::Error> {
    fn pump(
        from: &mut rustls::Connection,
        to: &mut rustls::Connection,
    ) -> Result<(), rustls::Error> {
        let mut buf = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }
    for _ in 0..10 {
        pump(client, server)?;
        pump(server, client)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

/// Sets up the coordinator dialling `name` at the agent whose files are `agent`.
fn connect(dir: &Path, agent: &str, name: &str) -> (rustls::Connection, rustls::Connection) {
    use rustls_pki_types::PrivateKeyDer;
    let chain = |f: &str| vec![cert(&dir.join(format!("{f}.pem")))];
    let key = |f: &str| PrivateKeyDer::from_pem_file(dir.join(format!("{f}.key"))).unwrap();
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots(dir), provider())
        .build()
        .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain(agent), key(agent))
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(dir))
        .with_client_auth_cert(chain("coordinator"), key("coordinator"))
        .unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
    let server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
    (client.into(), server.into())
}

#[test]
fn mutual_tls_handshake_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir).unwrap();
    issue_agent(dir, "web-1", &["127.0.0.1".to_owned()]).unwrap();

    let (mut client, mut server) = connect(dir, "web-1", "web-1");
    handshake(&mut client, &mut server).unwrap();
    let peer = server.peer_certificates().unwrap();
    assert_eq!(peer, [cert(&dir.join(COORDINATOR_CERT))]);

    let (mut client, mut server) = connect(dir, "web-1", "127.0.0.1");
    handshake(&mut client, &mut server).unwrap();

    let (mut client, mut server) = connect(dir, "web-1", "web-2");
    assert!(handshake(&mut client, &mut server).is_err());
}

#[test]
fn issue_agent_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path()).unwrap();
    issue_agent(tmp.path(), "db-1", &[]).unwrap();
    let before = fs::read(tmp.path().join("db-1.key")).unwrap();
    let err = issue_agent(tmp.path(), "db-1", &[]).unwrap_err();
    assert!(err.to_string().contains("db-1.pem"), "{err}");
    assert_eq!(fs::read(tmp.path().join("db-1.key")).unwrap(), before);

    // Only the key left over from something else still blocks, and nothing is written.
    fs::write(tmp.path().join("db-2.key"), "x").unwrap();
    let err = issue_agent(tmp.path(), "db-2", &[]).unwrap_err();
    assert!(err.to_string().contains("db-2.key"), "{err}");
    assert!(!tmp.path().join("db-2.pem").exists());
}

#[test]
fn issue_agent_rejects_bad_names_and_sans() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path()).unwrap();
    let long_label = "a".repeat(64);
    let too_long = ["a"; 128].join(".");
    let too_long_for_a_file = ["a"; 127].join(".");
    for bad in [
        "",
        "ca",
        "coordinator",
        "Signing",
        "-web",
        "web-",
        "a.-b",
        "web_1",
        "web 1",
        "../etc",
        "a/b",
        ".web",
        "web.",
        "a..b",
        "10.0.0.1",
        "::1",
        "host.123",
        "wéb",
        long_label.as_str(),
        too_long.as_str(),
        too_long_for_a_file.as_str(),
    ] {
        match issue_agent(tmp.path(), bad, &[]) {
            Err(PkiError::InvalidName { name, reason }) => {
                assert_eq!(name, bad);
                assert!(!reason.is_empty());
            }
            other => panic!("{bad:?} accepted or wrong error: {other:?}"),
        }
    }
    for bad in ["bad san", "-x.example", "a..b"] {
        let err = issue_agent(tmp.path(), "ok-1", &[bad.to_owned()]).unwrap_err();
        assert!(
            matches!(&err, PkiError::InvalidSan { san, .. } if san == bad),
            "{err:?}"
        );
    }
    assert!(!tmp.path().join("ok-1.pem").exists());

    for good in ["a", "web-1", "Web-1.Prod", "1a", "x1.example.com"] {
        issue_agent(
            tmp.path(),
            good,
            &["*.example.com".to_owned(), "fd00::1".to_owned()],
        )
        .unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }
    issue_agent(tmp.path(), &"a".repeat(63), &[]).unwrap();
    issue_agent(tmp.path(), &["a"; 126].join("."), &[]).unwrap();
}

#[test]
fn issue_agent_needs_a_matching_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let err = issue_agent(tmp.path(), "web-1", &[]).unwrap_err();
    assert!(
        matches!(&err, PkiError::Io { path, .. } if path.ends_with(CA_CERT)),
        "{err:?}"
    );

    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(&a).unwrap();
    init(&b).unwrap();
    fs::remove_file(a.join(CA_KEY)).unwrap();
    fs::copy(b.join(CA_KEY), a.join(CA_KEY)).unwrap();
    let err = issue_agent(&a, "web-1", &[]).unwrap_err();
    assert!(matches!(err, PkiError::CaKeyMismatch { .. }), "{err:?}");
    assert!(!a.join("web-1.pem").exists());

    fs::write(b.join(CA_CERT), "not a certificate").unwrap();
    let err = issue_agent(&b, "web-1", &[]).unwrap_err();
    assert!(matches!(&err, PkiError::Malformed { path, .. } if path.ends_with(CA_CERT)));
}

#[test]
fn signing_keys_are_a_pair() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path()).unwrap();
    let signing = load_signing_key(&tmp.path().join(SIGNING_KEY)).unwrap();
    let pem = fs::read_to_string(tmp.path().join(SIGNING_PUB)).unwrap();
    let verifying = VerifyingKey::from_public_key_pem(&pem).unwrap();
    assert_eq!(signing.verifying_key(), verifying);
    let msg = b"experiment: kill -9 web-1";
    let sig = signing.sign(msg);
    verifying.verify(msg, &sig).unwrap();
    assert!(verifying.verify(b"something else", &sig).is_err());

    // PKCS#8 v1 without the optional public key, the form OpenSSL 3.0 can read.
    let pem = fs::read_to_string(tmp.path().join(SIGNING_KEY)).unwrap();
    assert_eq!(KeypairBytes::from_pkcs8_pem(&pem).unwrap().public_key, None);

    // Fresh keys each time.
    let other = tmp.path().join("other");
    init(&other).unwrap();
    let other_key = load_signing_key(&other.join(SIGNING_KEY)).unwrap();
    assert_ne!(other_key.to_bytes(), signing.to_bytes());
}

#[test]
fn load_errors_name_the_path_but_not_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path()).unwrap();
    let missing = tmp.path().join("nope.key");
    let err = load_signing_key(&missing).unwrap_err();
    assert!(matches!(err, PkiError::Io { .. }));
    assert!(err.to_string().contains("nope.key"), "{err}");

    // An ECDSA key is PKCS#8 too, but not Ed25519.
    let ca_key = tmp.path().join(CA_KEY);
    let err = load_signing_key(&ca_key).unwrap_err();
    let shown = format!("{err} / {err:?}");
    assert!(shown.contains("ca.key"), "{shown}");
    let pem = fs::read_to_string(&ca_key).unwrap();
    let body = pem.lines().nth(1).unwrap();
    assert!(!shown.contains(body), "key material leaked: {shown}");

    // The private key is no public key (the agent reads signing.pub this way).
    let private = fs::read_to_string(tmp.path().join(SIGNING_KEY)).unwrap();
    assert!(VerifyingKey::from_public_key_pem(&private).is_err());
}

#[test]
fn an_operator_certificate_is_a_client_certificate_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir).unwrap();
    issue_operator(dir, "alice", 30).unwrap();
    verify_client(dir, "alice.pem").unwrap();
    assert!(verify_server(dir, "alice.pem", "alice").is_err());
    assert_eq!(mode(&dir.join("alice.key")), 0o600);
    // Nobody may be issued the coordinator's own name.
    for issue in [
        issue_operator(dir, COORDINATOR_NAME, 30),
        issue_agent(dir, COORDINATOR_NAME, &[]),
    ] {
        let error = issue.unwrap_err().to_string();
        assert!(error.contains("reserved"), "{error}");
    }
}

#[test]
fn a_client_only_coordinator_certificate_is_found_and_reissued() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    init(&pki).unwrap();
    let ca = pki.join(CA_CERT);
    check_serving_cert(&ca, &pki.join(COORDINATOR_CERT)).unwrap();
    // A client-only certificate, like the coordinator.pem older releases made.
    issue_operator(&pki, "old-coordinator", 30).unwrap();
    let refused = check_serving_cert(&ca, &pki.join("old-coordinator.pem")).unwrap_err();
    assert!(matches!(refused, PkiError::Verify { .. }), "{refused}");

    assert!(
        issue_coordinator(&pki, 30).is_err(),
        "the old pair is never overwritten"
    );
    std::fs::rename(pki.join(COORDINATOR_CERT), pki.join("coordinator.pem.old")).unwrap();
    std::fs::rename(pki.join(COORDINATOR_KEY), pki.join("coordinator.key.old")).unwrap();
    let written = issue_coordinator(&pki, 30).unwrap();
    assert_eq!(written.len(), 2);
    check_serving_cert(&ca, &pki.join(COORDINATOR_CERT)).unwrap();
}
