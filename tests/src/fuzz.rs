//! The bodies of troop's fuzz targets (`fuzz/`, cargo-fuzz with libFuzzer), kept here
//! so that the ordinary test suite replays every stored corpus and crash through the
//! very same code (`tests/tests/fuzz_corpora.rs`). Each takes arbitrary bytes, must never
//! panic, and asserts what must hold whatever the input.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use prost::Message;
use troop_agent::config::AgentConfig;
use troop_agent::faults::engine::Engine;
use troop_agent::faults::journal::FaultJournal;
use troop_agent::faults::runner::Runner;
use troop_agent::host::process::FakeProcessTable;
use troop_agent::ledger::ReplayLedger;
use troop_agent::policy::{FaultKind, Policy};
use troop_agent::service::AgentService;
use troop_common::clock::now_unix_ms;
use troop_common::names::is_valid_command_id;
use troop_coordinator::campaign::Campaign;
use troop_coordinator::config::CoordinatorConfig;
use troop_coordinator::selector::Selector;
use troop_proto::envelope::sign_payload;
use troop_proto::{TrustedKeys, pb};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/NAME.rs` and `fuzz/corpus/NAME/` call it.
pub const TARGETS: &[(&str, Target)] = &[
    ("admission", admission),
    ("selector", selector),
    ("campaign_file", campaign_file),
    ("agent_config", agent_config),
    ("coordinator_config", coordinator_config),
];

struct Harness {
    service: AgentService,
    key: SigningKey,
    _dir: tempfile::TempDir,
}

/// An agent's command pipeline whose policy allows only kills, on a fake process table,
/// for at most a second: nothing real is touched.
static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let (journal, _) = FaultJournal::open(dir.path()).unwrap();
    let engine = Arc::new(Engine::new(journal));
    engine.supervise();
    let policy = Policy {
        allow: [FaultKind::Kill].into(),
        max_duration: Duration::from_secs(1),
        ..Policy::default()
    };
    let runner = Runner::new(
        "web-1".into(),
        policy,
        engine,
        Arc::new(FakeProcessTable::new(Vec::new())),
        "/nonexistent".into(),
    );
    let service = AgentService::new(
        "web-1".into(),
        BTreeMap::new(),
        TrustedKeys::new([key.verifying_key()]),
        Duration::from_secs(30),
        ReplayLedger::open(dir.path(), now_unix_ms()).unwrap(),
        runner,
        None,
    );
    Harness {
        service,
        key,
        _dir: dir,
    }
});

/// The signed-envelope decoder and every admission check: the bytes once as an envelope
/// off the wire (never accepted: nobody here holds a trusted key), and once as the
/// payload of a validly signed envelope, which then meets binding, freshness, id,
/// replay and policy checks.
pub fn admission(data: &[u8]) {
    let harness = &*HARNESS;
    if let Ok(signed) = pb::SignedCommand::decode(data) {
        let accepted = harness.service.execute(&signed);
        assert!(
            accepted.is_err(),
            "an envelope no trusted key signed was accepted"
        );
    }
    let signed = sign_payload(data.to_vec(), &harness.key);
    if harness.service.execute(&signed).is_ok() {
        let command = pb::Command::decode(data).expect("accepted, so it decodes");
        assert!(is_valid_command_id(&command.command_id));
        assert_eq!(command.agent_id, "web-1");
        assert!(command.expires_at_unix_ms > command.issued_at_unix_ms);
    }
}

/// The label selector parser: what it accepts prints back to a selector that parses to
/// the same meaning.
pub fn selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(selector) = text.parse::<Selector>() else {
        return;
    };
    let printed = selector.to_string();
    let again: Selector = printed
        .parse()
        .unwrap_or_else(|error| panic!("{text:?} printed as {printed:?}, which fails: {error}"));
    let labels: BTreeMap<String, String> = [("role", "web"), ("cloud", "aws"), ("canary", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        selector.matches(&labels),
        again.matches(&labels),
        "{text:?} vs {printed:?}"
    );
}

/// The campaign file validator: every refusal names at least one problem.
pub fn campaign_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Campaign::parse(text, std::path::Path::new("fuzz.toml")) {
        let text = error.to_string();
        assert!(
            !text.contains(": 0 problem(s)"),
            "refused without a problem: {text}"
        );
    }
}

/// The agent config parser and validator: every error names the file.
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = AgentConfig::parse(text, std::path::Path::new("/fuzz/agent.toml")) {
        assert!(error.to_string().contains("/fuzz/agent.toml"), "{error}");
    }
}

/// The coordinator config parser and validator: every error names the file.
pub fn coordinator_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = CoordinatorConfig::parse(text, std::path::Path::new("/fuzz/troop.toml")) {
        assert!(error.to_string().contains("/fuzz/troop.toml"), "{error}");
    }
}
