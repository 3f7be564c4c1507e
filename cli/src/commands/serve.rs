//! `troop serve`: the Chaos Monkey. Loads every campaign in the campaigns directory, fires
//! each on its schedule (runs one at a time), remembers the last run and the last strike
//! per group in the store so a restart neither forgets the `min_time_between` floor nor
//! strikes twice, reloads on SIGHUP, reverts what its run started and exits on SIGTERM,
//! and answers `GET /healthz`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use troop_coordinator::campaign::Campaign;
use troop_coordinator::signer::now_unix_ms;
use troop_coordinator::store::Store;

use super::{Context, Outcome, campaign};

const DEFAULT_LISTEN: &str = "127.0.0.1:7080";

fn campaigns_dir(context: &Context) -> PathBuf {
    context.config.campaigns.clone().unwrap_or_else(|| {
        context
            .config
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join("campaigns")
    })
}

/// Every valid scheduled campaign in `dir`; invalid files are logged and left out.
fn load_campaigns(dir: &Path) -> Vec<Campaign> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(dir = %dir.display(), "no campaigns directory");
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| match Campaign::load(&path) {
            Ok(campaign) if campaign.schedule.is_some() => {
                tracing::info!(campaign = %campaign.name, file = %path.display(), steps = campaign.steps.len(), "loaded a scheduled campaign");
                Some(campaign)
            }
            Ok(campaign) => {
                tracing::info!(campaign = %campaign.name, "no [schedule]; not fired by serve");
                None
            }
            Err(error) => {
                tracing::error!(%error, "skipping an invalid campaign");
                None
            }
        })
        .collect()
}

async fn health(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let read = stream.read(&mut request).await.unwrap_or(0);
            let ok = request[..read].starts_with(b"GET /healthz ");
            let response: &[u8] = if ok {
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            let _ = stream.write_all(response).await;
        });
    }
}

/// When `campaign` fires next: after its last run (so a restart never strikes twice), and
/// at once if that moment has passed while nothing was running.
fn next_due(campaign: &Campaign, store: &Store, rng: &mut StdRng) -> Option<jiff::Timestamp> {
    let schedule = campaign.schedule.as_ref()?;
    let now = jiff::Timestamp::now();
    let last = store
        .last_run(&campaign.name)
        .ok()
        .flatten()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok());
    match last {
        None => schedule.next_run(now, rng),
        Some(last) => {
            let next = schedule.next_run(last, rng)?;
            if next >= now {
                Some(next)
            } else if schedule.allows(now) {
                Some(now)
            } else {
                schedule.next_run(now, rng)
            }
        }
    }
}

pub async fn run(context: Context) -> anyhow::Result<Outcome> {
    let store = Store::open(&context.config.store_url).context("audit store")?;
    for stale in store.unfinished_runs()? {
        // Its faults carried leases nobody renewed: the agents have reverted them.
        store.finish_run(
            stale.id,
            "failed",
            "the coordinator stopped during the run; leases ended its faults",
            now_unix_ms(),
        )?;
    }
    let listen = context
        .config
        .serve_listen
        .clone()
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, "serving /healthz");
    tokio::spawn(health(listener));
    if let Err(error) = troop_common::notify::ready() {
        tracing::warn!(%error, "cannot notify systemd of readiness");
    }
    let dir = campaigns_dir(&context);
    let mut campaigns = load_campaigns(&dir);
    tracing::info!(count = campaigns.len(), dir = %dir.display(), "campaigns loaded");
    let (cancel, cancelled) = watch::channel(None::<String>);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut rng = StdRng::from_os_rng();
    loop {
        let firings: Vec<(jiff::Timestamp, usize)> = campaigns
            .iter()
            .enumerate()
            .filter_map(|(index, c)| next_due(c, &store, &mut rng).map(|at| (at, index)))
            .collect();
        for (at, index) in &firings {
            tracing::info!(campaign = %campaigns[*index].name, %at, "fires next");
        }
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
                campaigns = load_campaigns(&dir);
                tracing::info!(count = campaigns.len(), "SIGHUP: campaigns reloaded");
                continue;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let Some((_, index)) = due else { continue };
        let campaign = campaigns[index].clone();
        let schedule = campaign
            .schedule
            .clone()
            .expect("only scheduled campaigns are loaded");
        let now = jiff::Timestamp::now();
        let last_strikes = store.last_strikes(&campaign.name)?;
        let groups: BTreeSet<String> = campaign::groups_of(&context, &campaign)
            .into_iter()
            .filter(|group| {
                let last = last_strikes
                    .get(group)
                    .and_then(|ms| jiff::Timestamp::from_millisecond(*ms).ok());
                schedule.strikes_group(last, now, &mut rng)
            })
            .collect();
        // Recorded before the run: a restart mid-run must not fire it again at once.
        store.set_last_run(&campaign.name, now.as_millisecond())?;
        if groups.is_empty() {
            tracing::info!(campaign = %campaign.name, "no group drew a strike this run");
            continue;
        }
        for group in &groups {
            store.set_last_strike(&campaign.name, group, now.as_millisecond())?;
        }
        let groups_text = groups.iter().cloned().collect::<Vec<_>>().join(", ");
        tracing::info!(campaign = %campaign.name, groups = %groups_text, "firing");
        let run =
            campaign::run_campaign(&context, &campaign, false, Some(&groups), cancelled.clone());
        tokio::pin!(run);
        let report = tokio::select! {
            report = &mut run => report,
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
                tracing::info!(campaign = %campaign.name, status = report.status, reason = %report.reason, "run ended")
            }
            Err(error) => {
                tracing::error!(campaign = %campaign.name, error = %format!("{error:#}"), "run failed")
            }
        }
    }
}
