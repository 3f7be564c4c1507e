//! `troop serve`'s Chaos Monkey schedule over a set of campaigns: which fires next (after
//! its last run, so a restart never strikes twice), and which groups a firing strikes
//! (each group's floor and dice), both remembered in the store before the run starts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;

use crate::campaign::Campaign;
use crate::campaign::runner::{Firing, group_of};
use crate::config::{AgentEntry, CoordinatorConfig};
use crate::signer::now_unix_ms;
use crate::store::{Lease, Store, StoreError};

/// `campaigns = DIR` of troop.toml, else `campaigns/` next to it.
pub fn campaigns_dir(config: &CoordinatorConfig) -> PathBuf {
    config.campaigns.clone().unwrap_or_else(|| {
        config
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join("campaigns")
    })
}

/// Every valid scheduled campaign in `dir`; invalid files are logged and left out.
pub fn load_campaigns(dir: &Path) -> Vec<Campaign> {
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

/// When `campaign` fires next: after its last run (so a restart never strikes twice), and
/// at once if that moment has passed while nothing was running.
pub fn next_due(campaign: &Campaign, store: &Store, rng: &mut StdRng) -> Option<jiff::Timestamp> {
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

/// A firing that came while an emergency stop latches serve: recorded as a refused run
/// and counted as the campaign's run, so it fires next on its schedule after the
/// resume rather than at once.
pub fn refuse_latched(
    campaign: &Campaign,
    store: &Store,
    leader: &Lease,
    refusal: &str,
    operator: &str,
) -> Result<i64, StoreError> {
    let now = now_unix_ms();
    let seed = campaign.seed.unwrap_or_default();
    let run = store.begin_run(
        &campaign.name,
        &campaign.sha256,
        seed,
        false,
        now,
        operator,
        Some(leader),
    )?;
    store.finish_run(run, "refused", refusal, now)?;
    store.record_firing(leader, &campaign.name, now, &[])?;
    Ok(run)
}

/// Runs a stopped coordinator left unfinished are marked failed: their faults carried
/// leases nobody renewed, so the agents have reverted them. With `leader` (at each claim),
/// the scheduled runs of earlier leaders and the runs of dead replicas; without (a serve
/// starting), also its own earlier runs and a CLI's (see `Store::unfinished_runs`).
pub fn close_stale_runs(store: &Store, leader: Option<&Lease>) -> Result<(), StoreError> {
    for stale in store.unfinished_runs(leader)? {
        store.close_stale_run(
            stale.id,
            "the coordinator stopped during the run; leases ended its faults",
            now_unix_ms(),
        )?;
    }
    Ok(())
}

/// Every group the campaign's steps select from `agents` ("" where a step has no
/// `group_by`).
pub fn groups_of(agents: &[AgentEntry], campaign: &Campaign) -> BTreeSet<String> {
    let mut groups = BTreeSet::new();
    for step in &campaign.steps {
        for agent in agents.iter().filter(|a| step.select.matches(&a.labels)) {
            groups.insert(group_of(agent, step));
        }
    }
    groups
}

/// Fires `campaign` at `now` as the holder of `lease`: draws which groups it strikes and
/// records the run and each strike in the store first, so a restart mid-run neither fires
/// it again at once nor forgets the floor, and a deposed leader fires nothing. The groups
/// may be none.
pub fn fire(
    campaign: &Campaign,
    agents: &[AgentEntry],
    store: &Store,
    lease: &Lease,
    now: jiff::Timestamp,
    rng: &mut StdRng,
) -> Result<Firing, StoreError> {
    let firing = |groups| Firing {
        groups,
        lease: lease.clone(),
    };
    let Some(schedule) = &campaign.schedule else {
        return Ok(firing(BTreeSet::new()));
    };
    let last_strikes = store.last_strikes(&campaign.name)?;
    let groups: BTreeSet<String> = groups_of(agents, campaign)
        .into_iter()
        .filter(|group| {
            let last = last_strikes
                .get(group)
                .and_then(|ms| jiff::Timestamp::from_millisecond(*ms).ok());
            schedule.strikes_group(last, now, rng)
        })
        .collect();
    let struck: Vec<String> = groups.iter().cloned().collect();
    store.record_firing(lease, &campaign.name, now.as_millisecond(), &struck)?;
    crate::metrics::get().struck(&campaign.name, &struck);
    Ok(firing(groups))
}

#[cfg(test)]
mod tests;
