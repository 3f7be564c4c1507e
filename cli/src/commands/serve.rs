//! `troop serve`: the fleet's control plane and the Chaos Monkey. Takes agents' streams
//! and the operator API on `[serve] listen` (mutual TLS), so agents behind NAT join the
//! fleet with the labels they report and operators act through it. Loads every campaign
//! in the campaigns directory, fires each on its schedule (runs one at a time), remembers
//! the last run and the last strike per group in the store so a restart neither forgets
//! the `min_time_between` floor nor strikes twice, reloads on SIGHUP, reverts what its
//! run started and exits on SIGTERM, and answers `GET /healthz` and Prometheus' `GET
//! /metrics` on `health_listen`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use troop_common::identity::FleetVerifier;
use troop_coordinator::campaign::events::{Progress, RunEvent};
use troop_coordinator::campaign::runner::run_campaign;
use troop_coordinator::campaign::{leader, scheduler};
use troop_coordinator::dashboard;
use troop_coordinator::enrolment::revocations::Revocations;
use troop_coordinator::enrolment::{Enrolment, signing_key_pem};
use troop_coordinator::fleet::Fleet;
use troop_coordinator::latch::FleetLatch;
use troop_coordinator::live::Registry;
use troop_coordinator::live::streams::Streams;
use troop_coordinator::pki::FleetCa;
use troop_coordinator::rotation::Rotation;
use troop_coordinator::serve::{self as grpc_serve, access::Operators};
use troop_coordinator::store::{Lease, Store, StoreError};

use super::context::Context;
use crate::outcome::Outcome;

/// Who the history says started a scheduled run.
const SCHEDULE_OPERATOR: &str = "troop serve (schedule)";

/// `GET /healthz`: `ok` while serve runs, and the emergency stop while latched;
/// anything else 404 (axum's router).
/// `/healthz` (and the latch, if any) and Prometheus' `/metrics`.
async fn health(
    listener: tokio::net::TcpListener,
    latch: Arc<FleetLatch>,
    registry: Arc<Registry>,
) {
    let healthz = move || {
        let latch = latch.refusal();
        async move {
            match latch {
                None => "ok\n".to_string(),
                Some(latch) => format!("ok\nlatched: {latch}\n"),
            }
        }
    };
    let metrics = move || {
        let text = troop_coordinator::metrics::get().render(registry.counts());
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    troop_telemetry::metrics::CONTENT_TYPE,
                )],
                text,
            )
        }
    };
    let routes = axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/metrics", axum::routing::get(metrics));
    if let Err(error) = axum::serve(listener, routes).await {
        tracing::error!(%error, "/healthz stopped");
    }
}

pub async fn run(context: Context) -> anyhow::Result<Outcome> {
    if let Some(remote) = &context.fleet.remote {
        anyhow::bail!(
            "config {}: [coordinator] {} makes this an operator's config; troop serve runs with [signing] and [tls] instead",
            context.fleet.config.path.display(),
            remote.address
        );
    }
    let config = &context.fleet.config;
    let shown = config.path.display();
    let replica = config
        .serve
        .replica
        .clone()
        .unwrap_or_else(leader::default_replica_name);
    troop_coordinator::store::set_replica(&replica);
    let store = Arc::new(Store::open(&config.store_url).context("audit store")?);
    scheduler::close_stale_runs(&store, None)?;
    let (held, leading) = watch::channel(None);
    tokio::spawn(leader::keep_claiming(
        store.clone(),
        replica.clone(),
        config.serve.leader_lease,
        held,
    ));
    tokio::spawn(prune(store.clone(), leading.clone(), config.store_retain));
    let signer = context.fleet.signer()?;
    let tls = config
        .tls
        .as_ref()
        .with_context(|| format!("config {shown}: [tls] is missing"))?;
    troop_coordinator::pki::check_serving_cert(&tls.ca, &tls.cert).with_context(|| {
        format!(
            "config {shown}: [tls] cert {} cannot serve agents' streams; if an older `troop pki init` made it, \
             move it and its key aside and run `troop pki issue-coordinator --dir DIR`",
            tls.cert.display()
        )
    })?;
    let fleet_ca = match &config.serve.ca_key {
        None => None,
        Some(key) => Some(Arc::new(FleetCa::load(&tls.ca, key).with_context(
            || format!("config {shown}: [serve] ca_key, with [tls] ca"),
        )?)),
    };
    let verifier =
        FleetVerifier::new(&tls.ca).with_context(|| format!("config {shown}: [tls] ca"))?;
    let verifier = Arc::new(if fleet_ca.is_some() {
        verifier.allowing_anonymous()
    } else {
        verifier
    });
    let revocations = Arc::new(Revocations::default());
    // Enforced from the first connection on, not from the first refresh.
    revocations.replace(store.revocations().context("audit store: revocations")?);
    let server_tls = grpc_serve::server_config(tls, verifier.clone())
        .with_context(|| format!("config {shown}: [tls] cert and key"))?;
    // Agents that dial in join the fleet every run, attack and status reaches.
    let registry = Arc::new(Registry::default());
    let mut fleet = context.fleet.clone();
    fleet.live_signer = Some(signer.clone());
    fleet.dispatcher.streams = Some(registry.clone());
    fleet.dispatcher.kept = Some(Default::default());

    let listen = config.serve.listen;
    let advertise = config
        .serve
        .advertise
        .clone()
        .unwrap_or_else(|| leader::default_advertise(listen.port()));
    tokio::spawn(troop_coordinator::live::peers::keep_published(
        registry.clone(),
        store.clone(),
        replica.clone(),
        advertise.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} ([serve] listen)"))?;
    let health_listen = config.serve.health_listen;
    let health_listener = tokio::net::TcpListener::bind(health_listen)
        .await
        .with_context(|| format!("cannot listen on {health_listen} ([serve] health_listen)"))?;
    let latch = Arc::new(FleetLatch::load(
        store.clone(),
        fleet.clone(),
        signer.clone(),
    )?);
    tokio::spawn(
        revocations
            .clone()
            .keep_current(store.clone(), registry.clone()),
    );
    let generation = store
        .signing_generation()
        .context("audit store: signing-key generation")?;
    let rotation = Arc::new(Rotation::new(
        store.clone(),
        fleet.clone(),
        signer.clone(),
        generation,
    ));
    tokio::spawn(rotation.clone().follow());
    let enrolment = Enrolment {
        ca: fleet_ca,
        store: store.clone(),
        signing_keys_pem: vec![signing_key_pem(&signer.verifying_key())],
        lifetime: config.serve.agent_certificate_lifetime,
    };
    let (stop_grpc, grpc_stopped) = watch::channel(false);
    let operator_runs = TaskTracker::new();
    let grpc = tokio::spawn(grpc_serve::serve(
        listener,
        server_tls,
        Streams {
            registry: registry.clone(),
            verifier: verifier.clone(),
            revocations: revocations.clone(),
            enrolment: enrolment.clone(),
            store: store.clone(),
            limiter: Default::default(),
            attached: {
                let (latch, rotation) = (latch.clone(), rotation.clone());
                Arc::new(move |agent, trust_generation| {
                    rotation.attached(agent.clone(), trust_generation);
                    latch.attached(agent);
                })
            },
        },
        enrolment,
        Operators {
            fleet: fleet.clone(),
            store: store.clone(),
            signer: signer.clone(),
            verifier,
            revocations: revocations.clone(),
            stopping: grpc_stopped.clone(),
            runs: operator_runs.clone(),
            latch: latch.clone(),
        },
        async move {
            let mut stopped = grpc_stopped;
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    ));
    tracing::info!(%listen, %health_listen, %replica, %advertise, "serving agents' streams and the operator API, /healthz and /metrics");
    tokio::spawn(health(health_listener, latch.clone(), registry.clone()));
    let relatching = tokio::spawn(latch.clone().keep_latching());
    let following = tokio::spawn(latch.clone().follow_store());
    if let Err(error) = troop_common::notify::ready() {
        tracing::warn!(%error, "cannot notify systemd of readiness");
    }
    let next_firings = Arc::new(Mutex::new(BTreeMap::new()));
    if let Some(ui_listen) = config.serve.ui_listen {
        let tls = dashboard::listen::needs_tls(ui_listen)
            .then(|| dashboard::listen::tls_config(tls))
            .transpose()
            .with_context(|| format!("config {shown}: [tls] cert and key, for the dashboard"))?;
        let listener = tokio::net::TcpListener::bind(ui_listen)
            .await
            .with_context(|| format!("cannot listen on {ui_listen} ([serve] ui_listen)"))?;
        let routes = dashboard::router(Arc::new(dashboard::Dashboard {
            fleet: fleet.clone(),
            store: store.clone(),
            latch: latch.clone(),
            tokens: signer.clone(),
            https: tls.is_some(),
            next_firings: next_firings.clone(),
        }));
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(url = %format!("{scheme}://{ui_listen}/ui/"), "serving the dashboard");
        tokio::spawn(async move {
            if let Err(error) = dashboard::listen::serve(listener, routes, tls).await {
                tracing::error!(%error, "the dashboard stopped");
            }
        });
    }
    let outcome = schedule(&fleet, &store, &latch, leading.clone(), &next_firings).await;
    leader::release(&store, &leading);
    relatching.abort();
    following.abort();
    // Operators' runs are cancelled and revert over the agents' streams, then those end.
    let _ = stop_grpc.send(true);
    operator_runs.close();
    operator_runs.wait().await;
    registry.close_all();
    if let Ok(Err(error)) = grpc.await {
        tracing::error!(error = %troop_telemetry::error_chain(&error), "gRPC listener failed");
    }
    outcome
}

/// Prunes probe results and access records older than `retain`, hourly, while this
/// replica leads (one pruner is enough).
async fn prune(
    store: Arc<Store>,
    leading: watch::Receiver<Option<Lease>>,
    retain: std::time::Duration,
) {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        if leading.borrow().is_none() {
            continue;
        }
        let retain_ms = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
        let before = troop_coordinator::signer::now_unix_ms().saturating_sub(retain_ms);
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.prune(before)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(rows)) => tracing::info!(rows, "pruned probe results and access records"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot prune the store"),
            Err(error) => tracing::error!(%error, "pruning panicked"),
        }
    }
}

/// Fires campaigns on their schedules until SIGTERM, while this replica holds the lease.
async fn schedule(
    fleet: &Fleet,
    store: &Store,
    latch: &FleetLatch,
    mut leading: watch::Receiver<Option<Lease>>,
    next_firings: &Mutex<BTreeMap<String, i64>>,
) -> anyhow::Result<Outcome> {
    let context = Context {
        fleet: fleet.clone(),
        output: crate::cli::Output::Table,
    };
    let dir = scheduler::campaigns_dir(&context.fleet.config);
    let mut campaigns = scheduler::load_campaigns(&dir);
    tracing::info!(count = campaigns.len(), dir = %dir.display(), "campaigns loaded");
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut rng = StdRng::from_os_rng();
    // Each campaign's next firing, drawn once and kept until it fires: drawn afresh on
    // every pass, a campaign that never ran would always be due a period from now, and
    // another campaign as frequent would always come first.
    let mut due_at: HashMap<String, jiff::Timestamp> = HashMap::new();
    loop {
        let leads = leading.borrow_and_update().is_some();
        if !leads {
            due_at.clear();
        }
        let firings: Vec<(jiff::Timestamp, usize)> = campaigns
            .iter()
            .enumerate()
            .filter(|_| leads)
            .filter_map(|(index, c)| {
                let at = match due_at.get(&c.name) {
                    Some(at) => *at,
                    None => {
                        let at = scheduler::next_due(c, store, &mut rng)?;
                        tracing::info!(campaign = %c.name, %at, "fires next");
                        due_at.insert(c.name.clone(), at);
                        at
                    }
                };
                Some((at, index))
            })
            .collect();
        // What the dashboard shows as each campaign's next firing.
        *next_firings.lock().unwrap_or_else(|e| e.into_inner()) = firings
            .iter()
            .map(|(at, index)| (campaigns[*index].name.clone(), at.as_millisecond()))
            .collect();
        let due = firings.into_iter().min();
        let wait = due.map_or(std::time::Duration::from_secs(3600), |(at, _)| {
            at.duration_since(jiff::Timestamp::now()).unsigned_abs()
        });
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!("SIGTERM: stopping");
                return Ok(Outcome::Success);
            }
            _ = hangup.recv() => {
                campaigns = scheduler::load_campaigns(&dir);
                due_at.clear();
                tracing::info!(count = campaigns.len(), "SIGHUP: campaigns reloaded");
                continue;
            }
            // Leadership came or went: work out the next firing again.
            _ = leading.changed() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some((_, index)) = due else { continue };
        let Some(lease) = leading.borrow().clone() else {
            continue;
        };
        let campaign = campaigns[index].clone();
        due_at.remove(&campaign.name);
        let fired = match latch.refusal() {
            Some(refusal) => {
                tracing::warn!(campaign = %campaign.name, %refusal, "not firing");
                scheduler::refuse_latched(&campaign, store, &lease, &refusal, SCHEDULE_OPERATOR)
                    .map(|_| None)
            }
            None => scheduler::fire(
                &campaign,
                &context.fleet.agents(),
                store,
                &lease,
                jiff::Timestamp::now(),
                &mut rng,
            )
            .map(Some),
        };
        let firing = match fired {
            Ok(Some(firing)) => firing,
            Ok(None) => continue,
            Err(error @ StoreError::Deposed { .. }) => {
                tracing::warn!(campaign = %campaign.name, %error, "not firing");
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        if firing.groups.is_empty() {
            tracing::info!(campaign = %campaign.name, "no group drew a strike this run");
            continue;
        }
        let groups_text = firing.groups.iter().cloned().collect::<Vec<_>>().join(", ");
        tracing::info!(campaign = %campaign.name, groups = %groups_text, epoch = lease.epoch, "firing");
        // Each run its own: a cancelled run must not cancel the next.
        let (cancel, cancelled) = watch::channel(None::<String>);
        let run = run_campaign(
            &context.fleet,
            &campaign,
            false,
            Some(&firing),
            cancelled,
            Arc::new(Logged),
            SCHEDULE_OPERATOR,
        );
        tokio::pin!(run);
        let mut latched = latch.subscribe();
        let stopped = async {
            let _ = latched.wait_for(Option::is_some).await;
            latch.refusal()
        };
        tokio::pin!(stopped);
        // The run's records are fenced by its epoch anyway; stopping it says why at once.
        let mut still_leading = leading.clone();
        let deposed = async {
            let _ = still_leading
                .wait_for(|held| held.as_ref().map(|l| l.epoch) != Some(lease.epoch))
                .await;
        };
        tokio::pin!(deposed);
        let report = tokio::select! {
            report = &mut run => report,
            Some(refusal) = &mut stopped => {
                let _ = cancel.send(Some(refusal));
                run.await
            }
            () = &mut deposed => {
                let _ = cancel.send(Some("this troop serve lost the schedule lease".into()));
                run.await
            }
            _ = terminate.recv() => {
                let _ = cancel.send(Some("troop serve is stopping (SIGTERM)".into()));
                let report = run.await;
                if let Err(error) = &report {
                    tracing::error!(error = %format!("{error:#}"), "run failed");
                }
                return Ok(Outcome::Success);
            }
        };
        match report {
            Ok(report) => {
                tracing::info!(campaign = %campaign.name, status = %report.status, reason = %report.reason, "run ended")
            }
            Err(error) => {
                tracing::error!(campaign = %campaign.name, error = %format!("{error:#}"), "run failed")
            }
        }
    }
}

/// A scheduled run's events, as log lines.
struct Logged;

impl Progress for Logged {
    fn event(&self, event: RunEvent) {
        match event {
            RunEvent::NotApplied { .. }
            | RunEvent::ProbeFailed { .. }
            | RunEvent::Aborting { .. }
            | RunEvent::AbortNotApplied { .. }
            | RunEvent::AbortsNotSent { .. } => tracing::warn!(?event, "run"),
            _ => tracing::info!(?event, "run"),
        }
    }
}
