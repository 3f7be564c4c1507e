//! Hosts join the fleet themselves, on the lab: a host with nothing but the agent binary
//! and a join token enrols through serve's port (its inbound traffic dropped), pins the
//! CA by its fingerprint, connects and is attacked; the token is spent, an expired token
//! is refused, a pin of another CA stops the enrolment before the token is sent, a CSR for
//! another name than the token binds is refused; and `troop pki revoke` cuts the agent
//! off within a second and keeps it off. Every refusal leaves the host's directory empty.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tonic::transport::Endpoint;
use troop_common::identity::COORDINATOR_NAME;
use troop_proto::serve_pb::{self, enrolment_client::EnrolmentClient};
use troop_tests::lab::{Lab, Reaped, agent_entry, output_text, wait_for};

/// A service of its own name: the bare host's placeholder for its agent is a `sleep`.
fn victim() -> Vec<Vec<OsString>> {
    vec![vec!["tail".into(), "-f".into(), "/dev/null".into()]]
}

/// `troop pki join-token ARGS` on the serve host: (token, CA fingerprint).
fn join_token(lab: &Lab, args: &[&str]) -> (String, String) {
    let mut all = vec!["pki", "join-token"];
    all.extend(args);
    let (code, value) = lab.troop_json(&all);
    assert_eq!(code, Some(0), "{value}");
    (
        value["token"].as_str().unwrap().to_string(),
        value["ca_sha256"].as_str().unwrap().to_string(),
    )
}

/// The state dir [`enroll`] gives the agent whose config is `config`.
fn state_dir(config: &Path) -> PathBuf {
    PathBuf::from(format!("{}.state", config.display()))
}

/// `troop-agent enroll` run on host `id`, writing its config to `config`.
fn enroll(lab: &Lab, id: &str, config: &Path, token: &str, pin: &str) -> std::process::Output {
    enroll_with(lab, id, config, token, pin, &[])
}

/// As [`enroll`], with more arguments.
fn enroll_with(
    lab: &Lab,
    id: &str,
    config: &Path,
    token: &str,
    pin: &str,
    more: &[&str],
) -> std::process::Output {
    let coordinator = format!(
        "https://{}:{}",
        troop_lab::net::GATEWAY,
        troop_lab::lab::SERVE_PORT
    );
    let agent = lab.binaries.agent.display().to_string();
    let state = state_dir(config).display().to_string();
    let config = config.display().to_string();
    let mut argv = vec![
        agent.as_str(),
        "--config",
        &config,
        "enroll",
        "--coordinator",
        &coordinator,
        "--token",
        token,
        "--ca-sha256",
        pin,
        "--state-dir",
        &state,
    ];
    argv.extend(more);
    lab.run_inside(id, &argv)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn assert_refused(output: &std::process::Output, dir: &Path, says: &str) {
    let text = output_text(output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains(says), "expected {says:?} in: {text}");
    assert!(
        files_in(dir).is_empty(),
        "a refused enrolment wrote {:?}",
        files_in(dir)
    );
}

/// A networked lab whose serve enrols agents, issuing certificates that last `lifetime`,
/// and its operator alice's config; `None` where no lab can run (it said why).
fn enrolling_lab(scenario: &str, lifetime: &str) -> Option<(Lab, PathBuf, Reaped)> {
    let mut lab = Lab::networked(scenario)?;
    lab.serve_enrolment(lifetime);
    let alice = lab.add_operator("alice", Some("operator"));
    let serve = lab.start_serve();
    Some((lab, alice, serve))
}

#[test]
fn a_bare_host_enrols_is_attacked_and_can_be_revoked() {
    let Some((mut lab, alice, _serve)) = enrolling_lab("enrolment", "30d") else {
        return;
    };
    lab.start_bare_host("fresh-1", victim());
    let dir = lab.enrolment_dir("fresh-1");
    let config = dir.join("agent.toml");
    let (token, pin) = join_token(
        &lab,
        &[
            "--name",
            "fresh-1",
            "--labels",
            "role=web,zone=b",
            "--ttl",
            "10m",
        ],
    );
    assert!(token.starts_with("troop-join-1."), "{token}");
    assert_eq!(
        pin,
        troop_coordinator::pki::ca_sha256(&lab.pki.path("ca.pem")).unwrap()
    );
    let db = std::fs::read(lab.dir().join("troop.db")).unwrap();
    let secret = &token["troop-join-1.".len()..];
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the store holds the token itself, not only its hash"
    );

    // Another CA's fingerprint: refused at the handshake, before the token is sent.
    let impostor_pin = "ab".repeat(32);
    let refused = enroll(&lab, "fresh-1", &config, &token, &impostor_pin);
    assert_refused(&refused, &dir, "is not the fleet's");
    assert!(output_text(&refused).contains("the token was not sent"));

    // A policy file that is not one: refused before the token is used.
    let policy = lab.dir().join("fresh-1-policy.toml");
    std::fs::write(
        &policy,
        "[policy]\nallow = [\"kill\"]\nmax_durration = \"1h\"\n",
    )
    .unwrap();
    let policy_arg = policy.display().to_string();
    let refused = enroll_with(
        &lab,
        "fresh-1",
        &config,
        &token,
        &pin,
        &["--policy", &policy_arg],
    );
    assert_refused(&refused, &dir, "max_durration");

    // The right one: the token's single use is still there.
    std::fs::write(
        &policy,
        "[policy]\nallow = [\"kill\"]\nmax_duration = \"1h\"\n",
    )
    .unwrap();
    let enrolled = enroll_with(
        &lab,
        "fresh-1",
        &config,
        &token,
        &pin,
        &["--policy", &policy_arg],
    );
    assert!(enrolled.status.success(), "{}", output_text(&enrolled));
    // Key and certificate in the state dir, where renewals can replace them.
    let key = std::fs::metadata(state_dir(&config).join("fresh-1.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("role = \"web\""), "{written}");
    assert!(written.contains("allow = [\"kill\"]"), "{written}");

    // Spent: a second host (another directory) cannot use it again.
    let again_dir = dir.with_file_name("fresh-1-again");
    std::fs::create_dir_all(&again_dir).unwrap();
    let again = enroll(&lab, "fresh-1", &again_dir.join("agent.toml"), &token, &pin);
    assert_refused(&again, &again_dir, "the join token has been used up");

    // Past its ttl.
    let (short, _) = join_token(&lab, &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let late = enroll(&lab, "fresh-1", &again_dir.join("agent.toml"), &short, &pin);
    assert_refused(&late, &again_dir, "the join token expired at");

    // Connected with the labels the token gave, and a certificate that lasts 30 days.
    let mut agent = lab.spawn_agent("fresh-1");
    assert!(
        wait_for(Duration::from_secs(20), || lab
            .reachable_as(&alice, "fresh-1")),
        "not attached: {}\n{}\nserve:\n{}",
        lab.agents_as(&alice),
        lab.log("fresh-1"),
        lab.serve_log()
    );
    let listed = lab.agents_as(&alice);
    let shown = agent_entry(&listed, "fresh-1").unwrap();
    assert_eq!(
        (&shown["via"], &shown["labels"]["zone"]),
        (&"stream".into(), &"b".into())
    );
    let expires = shown["certificate_expires_unix_ms"].as_i64().unwrap();
    let in_30_days = troop_coordinator::signer::now_unix_ms() + 30 * 86_400_000;
    assert!((expires - in_30_days).abs() < 600_000, "{shown}");

    // Attacked through serve like any host: the process is gone.
    assert!(
        lab.hosts["fresh-1"]
            .host
            .wait_for("tail", 1, Duration::from_secs(5))
    );
    let killed = lab.troop_as(
        &alice,
        &["attack", "kill", "--select", "role=web", "--name", "tail"],
    );
    assert_eq!(killed.status.code(), Some(0), "{}", output_text(&killed));
    assert!(wait_for(Duration::from_secs(5), || {
        lab.hosts["fresh-1"].host.pids_named("tail").is_empty()
    }));

    // Revoked: cut off within a second, and refused when it dials again.
    let revoked = lab.troop(&["pki", "revoke", "fresh-1"]);
    assert!(revoked.status.success(), "{}", output_text(&revoked));
    let revoked_at = Instant::now();
    let cut = wait_for(Duration::from_secs(5), || {
        !lab.reachable_as(&alice, "fresh-1")
    });
    let took = revoked_at.elapsed();
    assert!(cut, "still attached after a revocation");
    eprintln!("revocation cut the stream off after {took:?} (including troop agents calls)");
    assert!(
        wait_for(Duration::from_secs(10), || lab
            .log("fresh-1")
            .contains("was revoked at")),
        "the agent was not told why: {}",
        lab.log("fresh-1")
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!lab.reachable_as(&alice, "fresh-1"), "it reconnected");
    let store_url = format!("sqlite://{}", lab.dir().join("troop.db").display());
    let access = troop_coordinator::store::Store::open(&store_url)
        .unwrap()
        .access_log(1000)
        .unwrap();
    assert!(
        access
            .iter()
            .any(|a| !a.allowed && a.detail.contains("for \"fresh-1\" was revoked")),
        "no refusal of the revoked agent audited: {access:?}"
    );
    // An operator is revoked the same way: refused at once, naming why.
    let revoked = lab.troop(&["pki", "revoke", "alice"]);
    assert!(revoked.status.success(), "{}", output_text(&revoked));
    let refused = wait_for(Duration::from_secs(5), || {
        let listed = lab.troop_as(&alice, &["agents"]);
        !listed.status.success() && output_text(&listed).contains("\"alice\" was revoked")
    });
    assert!(
        refused,
        "{}",
        output_text(&lab.troop_as(&alice, &["agents"]))
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Calls `Enrolment.Enroll` on the lab's serve directly, as a host without a certificate.
fn enroll_raw(
    lab: &Lab,
    request: serve_pb::EnrollRequest,
) -> Result<serve_pb::EnrollReply, tonic::Status> {
    let netns = lab.network_namespace().expect("networked lab");
    let ca = lab.pki.path("ca.pem");
    troop_lab::net::inside(&netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let roots = troop_common::tls::root_store(&ca).unwrap();
            let mut tls =
                rustls::ClientConfig::builder_with_provider(troop_common::tls::provider())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            tls.alpn_protocols = vec![b"h2".to_vec()];
            let connector = TlsConnector::from(Arc::new(tls));
            let address = format!("127.0.0.1:{}", troop_lab::lab::SERVE_PORT);
            let channel = Endpoint::from_shared(format!("http://{address}"))
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_| {
                    let (connector, address) = (connector.clone(), address.clone());
                    async move {
                        let tcp = tokio::net::TcpStream::connect(&address).await?;
                        let name = ServerName::try_from(COORDINATOR_NAME).unwrap();
                        Ok::<_, std::io::Error>(TokioIo::new(connector.connect(name, tcp).await?))
                    }
                }))
                .await
                .unwrap();
            EnrolmentClient::new(channel)
                .enroll(request)
                .await
                .map(tonic::Response::into_inner)
        })
    })
}

fn csr_naming_nobody() -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn csr_naming(name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.serialize_request(&key).unwrap().der().to_vec()
}

#[test]
fn hostile_enrolments_are_refused_and_cost_the_token_nothing() {
    let Some(mut lab) = Lab::networked("enrolment: hostile requests") else {
        return;
    };
    lab.serve_enrolment("30d");
    let _serve = lab.start_serve();
    lab.start_bare_host("fresh-2", Vec::new());
    let ready = wait_for(Duration::from_secs(20), || {
        lab.serve_log().contains("serving agents' streams")
    });
    assert!(ready, "serve did not start: {}", lab.serve_log());
    let (token, pin) = join_token(&lab, &["--name", "fresh-2"]);
    let request = |token: &str, id: &str, csr: Vec<u8>| serve_pb::EnrollRequest {
        token: token.to_string(),
        agent_id: id.to_string(),
        csr_der: csr,
        hostname: String::new(),
    };
    let cases = [
        (
            request(&token, "", csr_naming("db-1")),
            tonic::Code::InvalidArgument,
            "it names \"db-1\", but this enrolment is for \"fresh-2\"",
        ),
        (
            request(&token, "db-1", csr_naming("db-1")),
            tonic::Code::PermissionDenied,
            "the join token is for agent \"fresh-2\", not \"db-1\"",
        ),
        (
            request(&token, "", b"not a request".to_vec()),
            tonic::Code::InvalidArgument,
            "not a signed PKCS#10 request",
        ),
        (
            request(
                "troop-join-1.0000000000000000000000000000000000000000000000000000000000000000",
                "",
                csr_naming("fresh-2"),
            ),
            tonic::Code::Unauthenticated,
            "unknown join token",
        ),
        (
            request(&token, "", vec![0; 16 * 1024 + 1]),
            tonic::Code::InvalidArgument,
            "it is 16385 bytes; at most 16384",
        ),
        (
            request("hunter2", "", csr_naming("fresh-2")),
            tonic::Code::Unauthenticated,
            "not a join token",
        ),
    ];
    for (asked, code, says) in cases {
        let status = enroll_raw(&lab, asked).expect_err("a hostile enrolment was granted");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    // A token that binds no id: the host's name is the id, and without one nothing is.
    let (open, _) = join_token(&lab, &["--uses", "2"]);
    let nameless = serve_pb::EnrollRequest {
        token: open.clone(),
        agent_id: String::new(),
        csr_der: csr_naming_nobody(),
        hostname: String::new(),
    };
    let status = enroll_raw(&lab, nameless.clone()).expect_err("an enrolment without an id");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("no agent id"), "{status:?}");
    let named = enroll_raw(
        &lab,
        serve_pb::EnrollRequest {
            hostname: "web-from-its-hostname".into(),
            ..nameless
        },
    )
    .expect("a host enrols under its host name");
    assert_eq!(named.agent_id, "web-from-its-hostname");
    use rustls_pki_types::pem::PemObject;
    let der =
        rustls_pki_types::CertificateDer::from_pem_slice(named.certificate_pem.as_bytes()).unwrap();
    assert!(troop_common::identity::names(&der, "web-from-its-hostname"));

    // A host without a certificate reaches enrolment and nothing else.
    // (Attach and the operator API refuse it: "no client certificate", tested in
    // serve_streams.) The token's one use survived every refusal above:
    let dir = lab.enrolment_dir("fresh-2");
    let enrolled = enroll(&lab, "fresh-2", &dir.join("agent.toml"), &token, &pin);
    assert!(enrolled.status.success(), "{}", output_text(&enrolled));
}

/// Enrols `id` (a bare host, made here) with a token of its own and starts its agent;
/// waits until serve lists it.
fn enrolled_agent(lab: &mut Lab, operator: &Path, id: &str) -> std::process::Child {
    lab.start_bare_host(id, Vec::new());
    let (token, pin) = join_token(lab, &["--name", id, "--labels", "role=renewing"]);
    let config = lab.enrolment_dir(id).join("agent.toml");
    let enrolled = enroll(lab, id, &config, &token, &pin);
    assert!(enrolled.status.success(), "{}", output_text(&enrolled));
    let agent = lab.spawn_agent(id);
    assert!(
        wait_for(Duration::from_secs(20), || lab.reachable_as(operator, id)),
        "not attached: {}",
        lab.log(id)
    );
    agent
}

fn certificate_on_disk(lab: &Lab, id: &str) -> troop_agent::identity::Validity {
    use rustls_pki_types::pem::PemObject;
    let config = lab.enrolment_dir(id).join("agent.toml");
    let path = state_dir(&config).join(format!("{id}.pem"));
    let der = rustls_pki_types::CertificateDer::from_pem_file(&path).unwrap();
    troop_agent::identity::Validity::read(&der).unwrap()
}

/// CPU seconds of the agent `spawn_agent` started (nsenter's child), from /proc.
fn agent_cpu_seconds(agent: &std::process::Child) -> f64 {
    let nsenter = agent.id();
    let children = std::fs::read_to_string(format!("/proc/{nsenter}/task/{nsenter}/children"))
        .unwrap_or_default();
    let pid = children
        .split_whitespace()
        .next()
        .map_or(nsenter as i32, |pid| pid.parse().unwrap());
    troop_lab::lab::cpu_seconds(pid)
}

#[test]
fn certificates_are_renewed_over_the_stream_while_faults_run() {
    // The shortest lifetime serve issues: renewed 30 to 33 s after it was issued.
    let Some((mut lab, alice, _serve)) = enrolling_lab("enrolment: renewal", "60s") else {
        return;
    };
    let mut agent = enrolled_agent(&mut lab, &alice, "renew-1");
    let idle = agent_cpu_seconds(&agent);
    std::thread::sleep(Duration::from_secs(2));
    let idle = agent_cpu_seconds(&agent) - idle;
    let first = certificate_on_disk(&lab, "renew-1");
    let listed = lab.agents_as(&alice);
    let connected = agent_entry(&listed, "renew-1").unwrap().clone();
    assert_eq!(
        connected["certificate_expires_unix_ms"].as_i64(),
        Some(first.not_after_unix_ms)
    );

    let burn = lab.troop_as(
        &alice,
        &[
            "attack",
            "cpu",
            "--select",
            "role=renewing",
            "--load",
            "40",
            "--cores",
            "1",
            "--for",
            "3m",
        ],
    );
    assert_eq!(burn.status.code(), Some(0), "{}", output_text(&burn));

    let renewed = wait_for(Duration::from_secs(50), || {
        certificate_on_disk(&lab, "renew-1").serial != first.serial
    });
    assert!(renewed, "not renewed: {}", lab.log("renew-1"));
    let second = certificate_on_disk(&lab, "renew-1");
    assert!(second.not_after_unix_ms > first.not_after_unix_ms);
    let key = state_dir(&lab.enrolment_dir("renew-1").join("agent.toml")).join("renew-1.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The same stream, which serve now shows with the new certificate's expiry; the
    // fault held through it, burning CPU as /proc shows.
    let listed = lab.agents_as(&alice);
    let shown = agent_entry(&listed, "renew-1").unwrap();
    assert_eq!(
        shown["connected_since_unix_ms"], connected["connected_since_unix_ms"],
        "the stream was replaced: {shown}"
    );
    assert_eq!(
        shown["certificate_expires_unix_ms"].as_i64(),
        Some(second.not_after_unix_ms),
        "{shown}"
    );
    let before = agent_cpu_seconds(&agent);
    std::thread::sleep(Duration::from_secs(2));
    let burnt = agent_cpu_seconds(&agent) - before;
    assert!(
        burnt > 0.5 && burnt > idle * 5.0,
        "the cpu fault stopped: {burnt:.2}s in 2s (idle: {idle:.2}s)"
    );

    // A new connection proves the new certificate: cut the link, heal it.
    lab.set_connected("renew-1", false);
    assert!(wait_for(Duration::from_secs(30), || !lab
        .reachable_as(&alice, "renew-1")));
    lab.set_connected("renew-1", true);
    assert!(
        wait_for(Duration::from_secs(40), || lab
            .reachable_as(&alice, "renew-1")),
        "did not reconnect with the renewed certificate: {}",
        lab.log("renew-1")
    );
    let store_url = format!("sqlite://{}", lab.dir().join("troop.db").display());
    let access = troop_coordinator::store::Store::open(&store_url)
        .unwrap()
        .access_log(1000)
        .unwrap();
    assert!(
        access
            .iter()
            .any(|a| a.allowed && a.caller == "renew-1" && a.call == "renew certificate"),
        "{access:?}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}
