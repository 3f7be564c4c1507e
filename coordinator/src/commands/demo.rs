//! `troop demo`: a local fleet, an attack, and a report of what was measured.
//!
//! Each host is a PID namespace on this machine with its own /proc, holding an agent on a
//! loopback port and some stand-in service processes. The demo makes a throwaway PKI,
//! writes real agent and coordinator configs, and then drives the fleet through the same
//! code paths as `troop attack`: nothing is simulated. Everything is removed at the end.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rand::Rng;
use serde_json::{Value, json};
use troop_agent::Agent;
use troop_agent::config::AgentConfig;
use troop_coordinator::cli::{DemoArgs, Output};
use troop_coordinator::config::AgentEntry;
use troop_coordinator::local_fleet::{LocalHost, free_port};
use troop_coordinator::picker::{Pick, pick, rng_from_seed};
use troop_coordinator::selector::Selector;
use troop_coordinator::signer::Signer;
use troop_coordinator::{pki, table};
use troop_proto::pb;

use super::{Context, Outcome, attack};
use crate::report::{self, Delivery};

const REPLICAS: usize = 3;

struct DemoHost {
    id: &'static str,
    labels: &'static [(&'static str, &'static str)],
    service: &'static str,
    /// Extra `[policy]` lines for this host's agent.
    policy: &'static str,
}

const FLEET: &[DemoHost] = &[
    DemoHost {
        id: "web-1",
        labels: &[("role", "web"), ("cloud", "aws"), ("region", "eu-1")],
        service: "demo-web",
        policy: "",
    },
    DemoHost {
        id: "web-2",
        labels: &[("role", "web"), ("cloud", "gcp"), ("region", "eu-2")],
        service: "demo-web",
        policy: "",
    },
    DemoHost {
        id: "web-3",
        labels: &[("role", "web"), ("cloud", "metal"), ("region", "eu-1")],
        service: "demo-web",
        policy: "",
    },
    DemoHost {
        id: "db-1",
        labels: &[("role", "db"), ("cloud", "metal"), ("region", "eu-1")],
        service: "demo-db",
        policy: "allow = [\"kill\"]\nprotected_processes = [\"demo-db\"]\n",
    },
];

/// Runs an agent inside a demo host.
pub async fn run_agent(config: &Path) -> anyhow::Result<Outcome> {
    let agent = Agent::new(AgentConfig::load(config)?)?;
    let address = agent.config().listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listen on {address}"))?;
    agent
        .serve(listener, troop_agent::shutdown_signal())
        .await?;
    Ok(Outcome::Success)
}

/// A stand-in service: named as asked (what `ps` and the kill fault see), then idle.
pub fn run_service(name: &str) -> anyhow::Result<Outcome> {
    let name = std::ffi::CString::new(name)?;
    nix::sys::prctl::set_name(&name)?;
    loop {
        std::thread::park();
    }
}

pub async fn run(args: DemoArgs, output: Output) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let seed = args
        .seed
        .unwrap_or_else(|| rand::rng().random_range(0..10_000));
    let workdir = tempfile::Builder::new().prefix("troop-demo-").tempdir()?;
    let say = |text: String| {
        if output == Output::Table {
            println!("{text}");
        }
    };
    say(format!(
        "troop demo: {} hosts on this machine, each a PID namespace with its own agent.\n",
        FLEET.len()
    ));
    let (hosts, troop_toml) = build_fleet(workdir.path())?;
    let context = Context::load(Some(&troop_toml), output)?;
    wait_until_reachable(&context, &hosts).await?;

    // 1. The fleet.
    let fleet_rows: Vec<Vec<String>> = FLEET
        .iter()
        .zip(&hosts)
        .map(|(spec, host)| {
            vec![
                spec.id.to_string(),
                context
                    .config
                    .agents
                    .iter()
                    .find(|a| a.id == spec.id)
                    .map_or_else(String::new, |a| a.address.clone()),
                labels_text(spec.labels),
                format!("{} x {}", host.pids_named(spec.service).len(), spec.service),
            ]
        })
        .collect();
    say("1. The fleet: throwaway CA and signing key, one certificate per agent".into());
    say(table::render(
        &["AGENT", "ADDRESS", "LABELS", "SERVICES"],
        &fleet_rows,
    ));

    // 2. The attack: one random web host loses one random replica.
    let selector: Selector = "role=web".parse()?;
    let candidates = context.select(&selector)?;
    let targets = pick(&candidates, Pick::Count(1), &mut rng_from_seed(Some(seed)));
    let before = replica_counts(&hosts);
    let kill = pb::Kill {
        target: Some(pb::ProcessMatch {
            by: Some(pb::process_match::By::Name("demo-web".into())),
        }),
        signal: 9,
        all_matches: false,
        repeat_every_ms: 0,
    };
    let action = pb::command::Action::Start(pb::StartFault {
        lease_ms: 0,
        duration_ms: 0,
        fault: Some(pb::start_fault::Fault::Kill(kill)),
    });
    say(format!(
        "2. Attack: `troop attack kill --select role=web --count 1 --name demo-web --seed {seed}`"
    ));
    let attack = attack::send(&context, &targets, action).await?;
    say(deliveries_table(&attack));

    // 3. What happened, read from outside each host's namespace.
    let hit: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
    let after = measured_after(&hosts, &before, &hit);
    let effects_ok = FLEET.iter().all(|spec| {
        let expected = before[spec.id] - usize::from(hit.contains(&spec.id));
        after[spec.id] == expected
    }) && attack.iter().all(|d| d.result.is_ok());
    let effect_rows: Vec<Vec<String>> = FLEET
        .iter()
        .map(|spec| {
            vec![
                spec.id.to_string(),
                format!("{} {}", before[spec.id], spec.service),
                format!("{} {}", after[spec.id], spec.service),
                if hit.contains(&spec.id) {
                    "hit".into()
                } else {
                    "untouched".into()
                },
            ]
        })
        .collect();
    say("3. Effect, counted from outside each host's PID namespace".into());
    say(table::render(
        &["AGENT", "BEFORE", "AFTER", ""],
        &effect_rows,
    ));

    // 4. What agents refuse: a fault their policy forbids, and a forged signature.
    let db = context.select(&"role=db".parse()?)?;
    let stop_host = pb::command::Action::Start(pb::StartFault {
        lease_ms: 0,
        duration_ms: 0,
        fault: Some(pb::start_fault::Fault::StopHost(pb::StopHost {
            mode: pb::stop_host::Mode::Poweroff as i32,
            delay_ms: 0,
        })),
    });
    let mut refusals = attack::send(&context, &db, stop_host).await?;
    let forger = Signer::from_key(ed25519_dalek::SigningKey::from_bytes(&rand::rng().random()));
    let abort_all = pb::command::Action::AbortAll(pb::AbortAll {});
    refusals.extend(attack::send_signed(&context, &forger, &targets, abort_all).await);
    let refusals_ok = refusals
        .iter()
        .all(|d| d.result.as_ref().err().is_some_and(|e| e.is_refusal()));
    let db_intact = FLEET
        .iter()
        .zip(&hosts)
        .filter(|(spec, _)| spec.service == "demo-db")
        .all(|(_, host)| host.pids_named("demo-db").len() == 1);
    say(
        "4. Refused: stop-host where policy forbids it, and a command signed by an unknown key"
            .into(),
    );
    say(deliveries_table(&refusals));

    let ok = effects_ok && refusals_ok && db_intact;
    let summary = format!(
        "{} {} host(s) hit, {} process(es) killed, {} command(s) refused, db-1 still serving: {}. Took {:.1}s; fleet removed.",
        if ok { "PASS:" } else { "FAIL:" },
        hit.len(),
        attack
            .iter()
            .filter_map(|d| d.result.as_ref().ok())
            .map(|r| r.signalled.len())
            .sum::<usize>(),
        refusals.iter().filter(|d| d.result.is_err()).count(),
        if db_intact { "yes" } else { "NO" },
        started.elapsed().as_secs_f32(),
    );
    say(format!("Report: {summary}"));
    if output == Output::Json {
        let effects: Vec<Value> = FLEET
            .iter()
            .map(|spec| json!({"agent": spec.id, "service": spec.service, "before": before[spec.id], "after": after[spec.id], "hit": hit.contains(&spec.id)}))
            .collect();
        println!(
            "{}",
            json!({
                "seed": seed,
                "hosts": FLEET.iter().map(|h| h.id).collect::<Vec<_>>(),
                "attack": attack.iter().map(delivery_value).collect::<Vec<_>>(),
                "effects": effects,
                "refusals": refusals.iter().map(delivery_value).collect::<Vec<_>>(),
                "ok": ok,
                "summary": summary,
            })
        );
    }
    drop(hosts);
    Ok(Outcome::from_all_ok(ok))
}

fn labels_text(labels: &[(&str, &str)]) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn delivery_value(delivery: &Delivery) -> Value {
    json!({
        "agent": delivery.agent.id,
        "outcome": report::outcome_word(&delivery.result),
        "detail": match &delivery.result {
            Ok(receipt) => receipt.summary.clone(),
            Err(error) => error.to_string(),
        },
    })
}

fn deliveries_table(deliveries: &[Delivery]) -> String {
    let rows: Vec<Vec<String>> = deliveries
        .iter()
        .map(|d| {
            vec![
                d.agent.id.clone(),
                report::outcome_word(&d.result).to_string(),
                match &d.result {
                    Ok(receipt) => receipt.summary.clone(),
                    Err(error) => error.to_string(),
                },
            ]
        })
        .collect();
    table::render(&["AGENT", "OUTCOME", "DETAIL"], &rows)
}

/// Makes the PKI, configs and hosts; returns the hosts (in FLEET order) and troop.toml.
fn build_fleet(dir: &Path) -> anyhow::Result<(Vec<LocalHost>, std::path::PathBuf)> {
    let pki_dir = dir.join("pki");
    pki::init(&pki_dir)?;
    let exe = std::env::current_exe().context("cannot find the troop binary")?;
    let mut hosts = Vec::new();
    let mut coordinator = String::from(
        "[signing]\nkey = \"pki/signing.key\"\n[tls]\ncert = \"pki/coordinator.pem\"\nkey = \"pki/coordinator.key\"\nca = \"pki/ca.pem\"\n",
    );
    for spec in FLEET {
        pki::issue_agent(&pki_dir, spec.id, &["127.0.0.1".to_string()])?;
        let port = free_port()?;
        let labels: Vec<String> = spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\""))
            .collect();
        let agent_toml = dir.join(format!("{}.toml", spec.id));
        std::fs::write(
            &agent_toml,
            format!(
                "id = \"{id}\"\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"state/{id}\"\nlabels = {{ {labels} }}\n\
                 [tls]\ncert = \"pki/{id}.pem\"\nkey = \"pki/{id}.key\"\nca = \"pki/ca.pem\"\n\
                 [trust]\ncoordinator_keys = [\"pki/signing.pub\"]\n[policy]\n{policy}",
                id = spec.id,
                labels = labels.join(", "),
                policy = spec.policy,
            ),
        )?;
        coordinator.push_str(&format!(
            "[[agents]]\nid = \"{}\"\naddress = \"127.0.0.1:{port}\"\nlabels = {{ {} }}\n",
            spec.id,
            labels.join(", ")
        ));
        let agent: Vec<OsString> = vec![
            exe.clone().into(),
            "__agent".into(),
            "--config".into(),
            agent_toml.into(),
        ];
        let replicas = if spec.service == "demo-web" {
            REPLICAS
        } else {
            1
        };
        let service: Vec<OsString> = vec![
            exe.clone().into(),
            "__demo-service".into(),
            spec.service.into(),
        ];
        let host = LocalHost::start(
            spec.id,
            &agent,
            &vec![service; replicas],
            &dir.join(format!("{}.log", spec.id)),
        )
        .context("cannot make a PID namespace for a demo host (needs root or unprivileged user namespaces, and util-linux's unshare)")?;
        if !host.wait_for(spec.service, replicas, Duration::from_secs(10)) {
            bail!(
                "demo host {} did not start its services; its log: {}",
                spec.id,
                std::fs::read_to_string(dir.join(format!("{}.log", spec.id))).unwrap_or_default()
            );
        }
        hosts.push(host);
    }
    let troop_toml = dir.join("troop.toml");
    std::fs::write(&troop_toml, coordinator)?;
    Ok((hosts, troop_toml))
}

async fn wait_until_reachable(context: &Context, hosts: &[LocalHost]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let agents: Vec<(AgentEntry, ())> = context
        .config
        .agents
        .iter()
        .map(|a| (a.clone(), ()))
        .collect();
    loop {
        let results = context
            .dispatcher
            .each(agents.clone(), |mut client, ()| async move {
                client.status(pb::StatusRequest {}).await
            })
            .await;
        let down: Vec<String> = results
            .iter()
            .filter_map(|(agent, result)| {
                result.as_ref().err().map(|e| format!("{}: {e}", agent.id))
            })
            .collect();
        if down.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            bail!("demo agents {names:?} not reachable: {}", down.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn replica_counts(hosts: &[LocalHost]) -> BTreeMap<&'static str, usize> {
    FLEET
        .iter()
        .zip(hosts)
        .map(|(spec, host)| (spec.id, host.pids_named(spec.service).len()))
        .collect()
}

/// Counts after the attack, waiting briefly for the killed process to be reaped.
fn measured_after(
    hosts: &[LocalHost],
    before: &BTreeMap<&'static str, usize>,
    hit: &[&str],
) -> BTreeMap<&'static str, usize> {
    for (spec, host) in FLEET.iter().zip(hosts) {
        if hit.contains(&spec.id) {
            host.wait_for(spec.service, before[spec.id] - 1, Duration::from_secs(5));
        }
    }
    replica_counts(hosts)
}
