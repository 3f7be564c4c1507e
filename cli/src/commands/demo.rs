//! `troop demo`: a local fleet, a Chaos Monkey campaign against a replicated service
//! while a probe watches it, and a report of what was measured.
//!
//! Each host is a PID and mount namespace on this machine with its own /proc and a small
//! tmpfs, holding an agent on a loopback port and replicas of a stand-in service. A health
//! endpoint says the service is up while every web host keeps a replica. The demo makes a
//! throwaway PKI, writes real agent and coordinator configs and a campaign file, and runs
//! the campaign through the same code as `troop campaign run`: nothing is simulated.
//! Everything is removed at the end.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{DemoArgs, Output};
use anyhow::{Context as _, bail};
use rand::Rng;
use serde_json::{Value, json};
use troop_common::observe;
use troop_coordinator::audit::local_operator;
use troop_coordinator::campaign::Campaign;
use troop_coordinator::campaign::events::{RunReport, Silent};
use troop_coordinator::campaign::runner::run_campaign;
use troop_coordinator::findings;
use troop_coordinator::signer::Signer;
use troop_coordinator::table;
use troop_lab::{Binaries, Lab};
use troop_proto::pb;

use super::attack;
use super::context::Context;
use crate::outcome::Outcome;
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
        policy: "allow = [\"kill\"]\n",
    },
];

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
    let say = |text: String| {
        if output == Output::Table {
            println!("{text}");
        }
    };
    say(format!(
        "troop demo: {} hosts on this machine, each a PID and mount namespace with its own agent.\n",
        FLEET.len()
    ));
    let lab = Arc::new(build_fleet()?);
    // Every host mounts its tmpfs at the same path, as a fleet would.
    let disk = lab.hosts[FLEET[0].id].disk.clone();
    let context = Context::load(Some(&lab.dir().join("troop.toml")), output)?;
    wait_until_reachable(&context).await?;
    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let health_url = format!("http://{}/health", health.local_addr()?);
    let health_task = tokio::spawn(serve_health(health, lab.clone()));

    // 1. The fleet.
    let fleet_rows: Vec<Vec<String>> = FLEET
        .iter()
        .map(|spec| {
            vec![
                spec.id.to_string(),
                context
                    .fleet
                    .config
                    .agents
                    .iter()
                    .find(|a| a.id == spec.id)
                    .map_or_else(String::new, |a| a.address.clone()),
                labels_text(spec.labels),
                format!(
                    "{} x {}",
                    lab.hosts[spec.id].host.pids_named(spec.service).len(),
                    spec.service
                ),
            ]
        })
        .collect();
    say("1. The fleet: throwaway CA and signing key, one certificate per agent".into());
    say(table::render(
        &["AGENT", "ADDRESS", "LABELS", "SERVICES"],
        &fleet_rows,
    ));

    // 2. The campaign, while a probe watches the service and a sampler measures each host.
    let campaign_file = lab.dir().join("demo.toml");
    std::fs::write(&campaign_file, campaign_text(seed, &health_url, &disk))?;
    let campaign = Campaign::load(&campaign_file)?;
    say(format!(
        "2. Campaign {:?} (seed {seed}): kill a replica, burn CPU, fill a disk; probe {health_url}",
        campaign.name
    ));
    let before = replica_counts(&lab);
    let sampler = Sampler::start(lab.clone(), disk.clone());
    let (report, detail) = run_recorded(&context, &campaign).await?;
    let peaks = sampler.stop();
    // The faults each step started; lease renewals are in the store too.
    let command_rows: Vec<Vec<String>> = detail
        .commands
        .iter()
        .filter(|c| c.step.is_some())
        .map(|c| vec![c.target.clone(), c.outcome.clone(), c.message.clone()])
        .collect();
    say(table::render(
        &["AGENT", "OUTCOME", "DETAIL"],
        &command_rows,
    ));
    let survived = findings::findings(&detail);
    for finding in &survived {
        say(format!("   {}", finding.text));
    }
    say(String::new());

    // 3. What happened, measured from outside each host.
    let after = replica_counts(&lab);
    let probes_failed = detail.probes.iter().filter(|p| !p.ok).count();
    let effect_rows: Vec<Vec<String>> = FLEET
        .iter()
        .zip(&peaks)
        .map(|(spec, peak)| {
            vec![
                spec.id.to_string(),
                format!("{} -> {}", before[spec.id], after[spec.id]),
                format!("{:.0}%", peak.cpu_percent),
                format!("{:.0}%", peak.disk_percent),
            ]
        })
        .collect();
    say(format!(
        "3. Measured from outside each host (peaks during the run); probe: {} check(s), {probes_failed} failed",
        detail.probes.len()
    ));
    say(table::render(
        &["AGENT", "REPLICAS", "PEAK CPU", "PEAK DISK"],
        &effect_rows,
    ));

    // 4. Everything reverted: no active fault anywhere, every disk empty, CPUs idle.
    let reverted = everything_reverted(&context, &lab, &disk).await;
    say(format!(
        "4. Reverted: {}",
        if reverted.is_empty() {
            "everything".to_string()
        } else {
            reverted.join("; ")
        }
    ));

    // 5. The same discipline finds what is not replicated: the checkout needs the one db.
    let checkout_url = health_url.replace("/health", "/checkout");
    let spof_file = lab.dir().join("demo-db.toml");
    std::fs::write(&spof_file, spof_campaign_text(seed, &checkout_url))?;
    let spof_campaign = Campaign::load(&spof_file)?;
    say(format!(
        "5. Campaign {:?}: kill the only demo-db replica; probe {checkout_url}",
        spof_campaign.name
    ));
    let (spof_report, spof_detail) = run_recorded(&context, &spof_campaign).await?;
    let spof_findings = findings::findings(&spof_detail);
    say(format!(
        "   run {}: {}",
        spof_report.status, spof_report.reason
    ));
    for finding in &spof_findings {
        say(format!("   {}", finding.text));
    }
    say(String::new());

    // 6. What agents refuse: a fault their policy forbids, and a forged signature.
    let db = context.fleet.select(&"role=db".parse()?)?;
    let stop_host = pb::command::Action::Start(pb::StartFault {
        duration_ms: 0,
        lease_ms: 0,
        fault: Some(pb::start_fault::Fault::StopHost(pb::StopHost {
            mode: pb::stop_host::Mode::Poweroff as i32,
            delay_ms: 0,
        })),
    });
    let mut refusals = attack::send(&context, "attack stop-host", &db, stop_host).await?;
    let web = context.fleet.select(&"role=web".parse()?)?;
    let forger = Signer::from_key(ed25519_dalek::SigningKey::from_bytes(&rand::rng().random()));
    let abort_all = pb::command::Action::AbortAll(pb::AbortAll {});
    refusals.extend(attack::send_signed(&context, &forger, None, &web[..1], abort_all).await?);
    let refusals_ok = refusals
        .iter()
        .all(|d| d.result.as_ref().err().is_some_and(|e| e.is_refusal()));
    say(
        "6. Refused: stop-host where policy forbids it, and a command signed by an unknown key"
            .into(),
    );
    say(deliveries_table(&refusals));

    let applied = detail
        .commands
        .iter()
        // Starts only: renewals and aborts are recorded too, outside any step.
        .filter(|c| c.step.is_some() && c.outcome == "applied")
        .count();
    let killed = before
        .iter()
        .map(|(id, n)| n.saturating_sub(after[id]))
        .sum::<usize>();
    let burned = peaks.iter().any(|p| p.cpu_percent >= 25.0);
    let filled = peaks.iter().any(|p| p.disk_percent >= 40.0);
    let replicated_survived =
        survived.len() == 3 && survived.iter().all(|finding| finding.broke.is_none());
    // The finding this demo exists for: killing db-1's only replica broke the checkout.
    let single_point = spof_findings.iter().find(|finding| {
        finding.host == "db-1"
            && finding
                .broke
                .as_ref()
                .is_some_and(|broke| broke.probe == "checkout")
    });
    let ok = report.status == "completed"
        && replicated_survived
        && single_point.is_some()
        && spof_report.status == "aborted"
        && applied == 3
        && killed == 1
        && burned
        && filled
        && probes_failed == 0
        && reverted.is_empty()
        && refusals_ok;
    health_task.abort();
    let summary = format!(
        "{} campaign {}: {applied} fault(s) applied ({killed} replica killed, CPU burned: {}, disk filled: {}), probe saw the service up in {} of {} checks, everything reverted: {}; single point of failure: {}; {} command(s) refused. Took {:.1}s; fleet removed.",
        if ok { "PASS:" } else { "FAIL:" },
        report.status,
        if burned { "yes" } else { "NO" },
        if filled { "yes" } else { "NO" },
        detail.probes.len() - probes_failed,
        detail.probes.len(),
        if reverted.is_empty() { "yes" } else { "NO" },
        single_point.map_or("NONE FOUND", |finding| finding.text.as_str()),
        refusals.iter().filter(|d| d.result.is_err()).count(),
        started.elapsed().as_secs_f32(),
    );
    say(format!("Report: {summary}"));
    if output == Output::Json {
        let effects: Vec<Value> = FLEET
            .iter()
            .zip(&peaks)
            .map(|(spec, peak)| {
                json!({
                    "agent": spec.id, "service": spec.service,
                    "before": before[spec.id], "after": after[spec.id],
                    "peak_cpu_percent": peak.cpu_percent, "peak_disk_percent": peak.disk_percent,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "seed": seed,
                "hosts": FLEET.iter().map(|h| h.id).collect::<Vec<_>>(),
                "campaign": { "status": report.status, "reason": report.reason, "commands": detail.commands, "findings": survived },
                "single_point_of_failure": {
                    "campaign": { "status": spof_report.status, "reason": spof_report.reason, "findings": spof_findings },
                    "found": single_point,
                },
                "probe": { "checks": detail.probes.len(), "failed": probes_failed },
                "effects": effects,
                "reverted": reverted.is_empty(),
                "not_reverted": reverted,
                "refusals": refusals.iter().map(delivery_value).collect::<Vec<_>>(),
                "ok": ok,
                "summary": summary,
            })
        );
    }
    drop(lab);
    Ok(Outcome::from_all_ok(ok))
}

/// Runs `campaign` on the demo fleet as `troop campaign run` would, and reads back its
/// record.
async fn run_recorded(
    context: &Context,
    campaign: &Campaign,
) -> anyhow::Result<(RunReport, troop_coordinator::store::RunDetail)> {
    let (_cancel, cancelled) = tokio::sync::watch::channel(None::<String>);
    let report = run_campaign(
        &context.fleet,
        campaign,
        false,
        None,
        cancelled,
        Arc::new(Silent),
        &local_operator(),
    )
    .await?;
    let store = troop_coordinator::store::Store::open(&context.fleet.config.store_url)?;
    let detail = store.run(report.run_id.unwrap_or_default())?;
    Ok((report, detail))
}

/// The built-in campaign: one replica killed, then CPU and a disk fill held for 3 s,
/// at most three hosts under fault (the host of the killed replica counts for a lease),
/// a probe on the service every 200 ms.
fn campaign_text(seed: u64, health_url: &str, disk: &Path) -> String {
    format!(
        r#"name = "demo"
seed = {seed}

# Each of the three web hosts gets one fault, the killed replica's host included;
# the probe on the service is what must stay green.
[guardrails]
max_concurrent = 3
min_healthy_percent = 0
error_threshold_percent = 50
lease = "5s"

[[guardrails.stop_if]]
name = "web service"
http = "{health_url}"
every = "200ms"
failures = 3

[[step]]
select = "role=web"
pick = {{ count = 1 }}
fault = {{ kind = "kill", name = "demo-web" }}

[[step]]
select = "role=web"
pick = {{ count = 1 }}
fault = {{ kind = "cpu", load = 50, cores = 1 }}
duration = "3s"

[[step]]
select = "role=web"
pick = {{ count = 1 }}
fault = {{ kind = "disk", path = "{}", fill = 50 }}
duration = "3s"
"#,
        disk.display()
    )
}

/// The second campaign: kill the database's only replica while a probe on the checkout,
/// which needs it, watches; the run watches for 3 s after the kill.
fn spof_campaign_text(seed: u64, checkout_url: &str) -> String {
    format!(
        r#"name = "demo-db"
seed = {seed}

[guardrails]
max_concurrent = 1
min_healthy_percent = 0
lease = "5s"

[[guardrails.stop_if]]
name = "checkout"
http = "{checkout_url}"
every = "200ms"
failures = 3

[[step]]
select = "role=db"
pick = "all"
fault = {{ kind = "kill", name = "demo-db" }}
watch = "3s"
"#
    )
}

/// `GET /health`: 200 while every web host runs a replica, 503 otherwise. `GET
/// /checkout`: 200 while the web service is up and its one database runs too.
async fn serve_health(listener: tokio::net::TcpListener, lab: Arc<Lab>) {
    use axum::http::StatusCode;
    let up = |services: &'static [&'static str]| {
        let lab = lab.clone();
        move || {
            let lab = lab.clone();
            async move {
                let up = tokio::task::spawn_blocking(move || {
                    FLEET
                        .iter()
                        .filter(|spec| services.contains(&spec.service))
                        .all(|spec| !lab.hosts[spec.id].host.pids_named(spec.service).is_empty())
                })
                .await
                .unwrap_or(false);
                if up {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }
    };
    let routes = axum::Router::new()
        .route("/health", axum::routing::get(up(&["demo-web"])))
        .route(
            "/checkout",
            axum::routing::get(up(&["demo-web", "demo-db"])),
        );
    let _ = axum::serve(listener, routes).await;
}

/// The most each host showed while the campaign ran.
#[derive(Debug, Clone, Copy, Default)]
struct Peak {
    cpu_percent: f64,
    disk_percent: f64,
}

/// Samples every host every 100 ms from outside: its agent's CPU time from /proc, and
/// its tmpfs from statvfs.
struct Sampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Peak>>,
}

impl Sampler {
    fn start(lab: Arc<Lab>, disk: PathBuf) -> Self {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = vec![Peak::default(); FLEET.len()];
            let mut last: Vec<Option<(Instant, f64)>> = vec![None; FLEET.len()];
            while !flag.load(Ordering::Relaxed) {
                for (index, spec) in FLEET.iter().enumerate() {
                    let host = &lab.hosts[spec.id];
                    if let Some(pid) = host.agent_pid() {
                        let cpu = cpu_seconds(pid);
                        if let Some((at, before)) = last[index] {
                            let rate = (cpu - before) / at.elapsed().as_secs_f64() * 100.0;
                            peaks[index].cpu_percent = peaks[index].cpu_percent.max(rate);
                        }
                        last[index] = Some((Instant::now(), cpu));
                    }
                    if let Some(path) = host.host.path_inside(&disk)
                        && let Ok(usage) = observe::usage(&path)
                    {
                        peaks[index].disk_percent =
                            peaks[index].disk_percent.max(usage.used_percent());
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            peaks
        });
        Self { stop, thread }
    }

    fn stop(self) -> Vec<Peak> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn cpu_seconds(pid: i32) -> f64 {
    observe::cpu_seconds(pid).unwrap_or(0.0)
}

/// What is not back to normal, if anything: active faults, a disk not empty.
async fn everything_reverted(context: &Context, lab: &Lab, disk: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for (agent, result) in context.fleet.statuses(&context.fleet.config.agents).await {
        match result {
            Ok(status) if status.active_faults.is_empty() => {}
            Ok(status) => left.push(format!(
                "{}: {} active fault(s)",
                agent.id,
                status.active_faults.len()
            )),
            Err(error) => left.push(format!("{}: {error}", agent.id)),
        }
    }
    for spec in FLEET {
        if let Some(path) = lab.hosts[spec.id].host.path_inside(disk)
            && let Ok(usage) = observe::usage(&path)
            && usage.used_percent() > 1.0
        {
            left.push(format!(
                "{}: disk {:.0}% used",
                spec.id,
                usage.used_percent()
            ));
        }
    }
    left
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

/// The real `troop-agent`: next to this binary (a build, the packages), else on PATH.
fn agent_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the troop binary")?;
    let beside = exe.with_file_name("troop-agent");
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("troop-agent"));
    std::iter::once(beside)
        .chain(on_path)
        .find(|path| path.is_file())
        .with_context(|| {
            format!(
                "troop demo runs the real troop-agent on every host and finds none next to {} or on PATH: build both binaries (`cargo build --release`) or install the troop-agent package",
                exe.display()
            )
        })
}

/// Makes the PKI, configs and hosts, each host running the real `troop-agent`.
fn build_fleet() -> anyhow::Result<Lab> {
    let binaries = Binaries {
        troop: std::env::current_exe().context("cannot find the troop binary")?,
        agent: agent_binary()?,
    };
    let dir = tempfile::Builder::new().prefix("troop-demo-").tempdir()?;
    let mut lab = Lab::start_in(dir, binaries, false).map_err(|reason| {
        anyhow::anyhow!("cannot make demo hosts here: {reason} (needs root or unprivileged user namespaces, and util-linux's unshare)")
    })?;
    for spec in FLEET {
        let replicas = if spec.service == "demo-web" {
            REPLICAS
        } else {
            1
        };
        let service: Vec<OsString> = vec![
            lab.binaries.troop.clone().into(),
            "__demo-service".into(),
            spec.service.into(),
        ];
        lab.start_host(spec.id, spec.labels, spec.policy, vec![service; replicas]);
        if !lab.hosts[spec.id]
            .host
            .wait_for(spec.service, replicas, Duration::from_secs(10))
        {
            bail!(
                "demo host {} did not start its services; its log: {}",
                spec.id,
                lab.log(spec.id)
            );
        }
    }
    Ok(lab)
}

async fn wait_until_reachable(context: &Context) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let results = context.fleet.statuses(&context.fleet.config.agents).await;
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
            bail!("demo agents not reachable: {}", down.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn replica_counts(lab: &Lab) -> BTreeMap<&'static str, usize> {
    FLEET
        .iter()
        .map(|spec| {
            (
                spec.id,
                lab.hosts[spec.id].host.pids_named(spec.service).len(),
            )
        })
        .collect()
}
