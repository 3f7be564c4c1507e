//! Campaign step planning: which hosts a step may fault right now, inside the
//! campaign's guardrails, plus a run ledger that proves every applied fault is
//! reverted.
//!
//! Everything here is pure: no clock, no I/O, and all randomness comes from the
//! caller's rng, so a seed plus the same input order reproduces a plan exactly
//! (a dry run and the real run agree).
//!
//! Order of decisions for a step, per group (`group_by` label value):
//! 1. the pick says how many hosts the group wants (`Percent` rounds up, of the
//!    whole group);
//! 2. they are drawn at random among hosts that are healthy and not under
//!    fault; if the group has too few such hosts, the shortfall is reported
//!    against randomly drawn unhealthy/faulted hosts (`All` reports them all);
//! 3. the group is capped so that its healthy-and-not-faulted hosts stay at or
//!    above `ceil(size × min_healthy_percent / 100)`;
//! 4. finally the whole step is capped so that `active + targets ≤
//!    max_concurrent`, sharing the remaining budget round-robin across groups.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::seq::SliceRandom;

/// A candidate host of a step, already filtered by the step's label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Host id, unique within one call.
    pub id: String,
    /// Value of the step's `group_by` label, or `""` when there is no `group_by`.
    pub group: String,
    /// Reachable and passing its health checks (being under fault is tracked apart).
    pub healthy: bool,
    /// Already under a fault of this campaign.
    pub under_fault: bool,
}

/// How many hosts of each group a step wants: the same choice `troop attack` offers.
pub use crate::picker::Pick;

/// Limits a campaign must respect while it faults hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guardrails {
    /// Most hosts under fault by this campaign at once, across all steps.
    pub max_concurrent: usize,
    /// Per group, the share of hosts that must stay healthy and not under fault; above 100 acts as 100.
    pub min_healthy_percent: u8,
}

/// Why a host the pick wanted was held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Faulting it would exceed `max_concurrent`.
    MaxConcurrent,
    /// Faulting it would take its group below `min_healthy_percent`.
    MinHealthy {
        /// The group's `group_by` value.
        group: String,
        /// Hosts of the group healthy and not under fault before this step.
        healthy: usize,
        /// All hosts of the group given to the planner.
        size: usize,
    },
    /// Already under a fault of this campaign.
    AlreadyFaulted,
    /// Not healthy (unreachable or failing checks).
    Unhealthy,
}

/// What a step should do now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepPlan {
    /// Host ids to fault, in input order.
    pub targets: Vec<String>,
    /// Host ids the pick wanted but that are held back, with why, in input order.
    pub skipped: Vec<(String, Skip)>,
}

/// Per-host decision while planning; `None` in the table means "not wanted".
#[derive(Debug, Clone)]
enum Decision {
    Target,
    Held(Skip),
}

/// Plans one step: picks per group, then applies the min-healthy and max-concurrent caps.
///
/// `active` = how many hosts are under this campaign's faults right now (before this step).
pub fn plan_step(
    hosts: &[Host],
    pick: Pick,
    guardrails: Guardrails,
    active: usize,
    rng: &mut impl Rng,
) -> StepPlan {
    // BTreeMap, not HashMap: the order groups consume the rng must not depend
    // on a hasher seed, or a seed would not reproduce the plan.
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, host) in hosts.iter().enumerate() {
        groups.entry(host.group.as_str()).or_default().push(i);
    }

    let min_healthy = usize::from(guardrails.min_healthy_percent.min(100));
    let mut outcome: Vec<Option<Decision>> = vec![None; hosts.len()];
    // Per group, the picked hosts that passed the min-healthy cap, in random
    // order, so cutting a prefix later is itself a random choice.
    let mut allowed: Vec<Vec<usize>> = Vec::with_capacity(groups.len());

    for (&name, members) in &groups {
        let size = members.len();
        let (mut free, mut busy): (Vec<usize>, Vec<usize>) =
            members.iter().partition(|&&i| is_free(&hosts[i]));

        let healthy = free.len();
        let want = pick.count(size);
        let take = want.min(healthy);
        let (chosen, _) = free.partial_shuffle(rng, take);

        // Report the hosts the pick would have needed beyond the free ones.
        let shortfall = want - take;
        if shortfall > 0 {
            let (wanted_busy, _) = busy.partial_shuffle(rng, shortfall);
            for &i in wanted_busy.iter() {
                outcome[i] = Some(Decision::Held(unavailable(&hosts[i])));
            }
        }

        // Slice lengths are far below usize::MAX / 100, so no overflow.
        let floor = (size * min_healthy).div_ceil(100);
        // A group already below its floor gets no room at all.
        let room = healthy.saturating_sub(floor);
        let (ok, held) = chosen.split_at(take.min(room));
        for &i in held {
            outcome[i] = Some(Decision::Held(Skip::MinHealthy {
                group: name.to_owned(),
                healthy,
                size,
            }));
        }
        allowed.push(ok.to_vec());
    }

    let budget = guardrails.max_concurrent.saturating_sub(active);
    let quotas = fair_quotas(&allowed, budget, rng);
    for (picked, quota) in allowed.iter().zip(quotas) {
        let (kept, surplus) = picked.split_at(quota);
        for &i in kept {
            outcome[i] = Some(Decision::Target);
        }
        for &i in surplus {
            outcome[i] = Some(Decision::Held(Skip::MaxConcurrent));
        }
    }

    let mut plan = StepPlan::default();
    for (host, decided) in hosts.iter().zip(outcome) {
        match decided {
            Some(Decision::Target) => plan.targets.push(host.id.clone()),
            Some(Decision::Held(why)) => plan.skipped.push((host.id.clone(), why)),
            None => {}
        }
    }
    plan
}

/// A host that may be faulted: healthy and not already under fault.
fn is_free(host: &Host) -> bool {
    host.healthy && !host.under_fault
}

/// Why a non-free host can't be a target; a campaign's own fault is the more
/// specific reason (it usually explains the unhealthiness too).
fn unavailable(host: &Host) -> Skip {
    if host.under_fault {
        Skip::AlreadyFaulted
    } else {
        Skip::Unhealthy
    }
}

/// Splits `budget` across groups round-robin (max-min fair), so one big group
/// can't starve the others; the group order is shuffled so the leftover slots
/// of the last round don't always favour the same groups.
fn fair_quotas(allowed: &[Vec<usize>], budget: usize, rng: &mut impl Rng) -> Vec<usize> {
    let lens: Vec<usize> = allowed.iter().map(Vec::len).collect();
    let total: usize = lens.iter().sum();
    if total <= budget {
        return lens;
    }
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.shuffle(rng);
    let mut quotas = vec![0; lens.len()];
    // Terminates: budget < total, so some group always has room.
    let mut left = budget;
    while left > 0 {
        for &g in &order {
            if left == 0 {
                break;
            }
            if quotas[g] < lens[g] {
                quotas[g] += 1;
                left -= 1;
            }
        }
    }
    quotas
}

/// One applied, not yet reverted fault, or a strike (a single kill) that holds its host.
#[derive(Debug, Clone)]
struct Applied {
    /// Empty for a strike: nothing to renew or revert.
    fault_id: String,
    host: String,
    ends_at_ms: i64,
}

/// Faults a campaign run has applied and not yet seen end, in application order.
#[derive(Debug, Default, Clone)]
pub struct RunFaults {
    active: Vec<Applied>,
}

impl RunFaults {
    /// Records a fault applied to `host` that ends by itself at `ends_at_ms`.
    pub fn applied(&mut self, fault_id: String, host: String, ends_at_ms: i64) {
        self.active.push(Applied {
            fault_id,
            host,
            ends_at_ms,
        });
    }

    /// Records a strike on `host` with nothing to revert (a single kill): the host still
    /// counts as under fault until `until_ms`.
    pub fn struck(&mut self, host: String, until_ms: i64) {
        self.active.push(Applied {
            fault_id: String::new(),
            host,
            ends_at_ms: until_ms,
        });
    }

    /// Records that a fault was reverted (by deadline or abort); unknown ids are ignored.
    pub fn ended(&mut self, fault_id: &str) {
        // Idempotent: a deadline revert and an abort may both report the same fault.
        self.active.retain(|f| f.fault_id != fault_id);
    }

    /// Hosts under at least one fault of this run.
    pub fn active_hosts(&self) -> BTreeSet<String> {
        self.active.iter().map(|f| f.host.clone()).collect()
    }

    /// Number of active faults (never fewer than active hosts, so safe as `plan_step`'s `active`).
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// Every active fault as (fault id, host), e.g. to renew their leases; strikes have
    /// nothing to renew and are left out.
    pub fn faults(&self) -> Vec<(String, String)> {
        self.active
            .iter()
            .filter(|f| !f.fault_id.is_empty())
            .map(|f| (f.fault_id.clone(), f.host.clone()))
            .collect()
    }

    /// Faults whose lease needs renewing at `now_ms`: a fault whose deadline comes
    /// within half a lease is still covered by its last renewal (sent at most a third of
    /// a lease ago), so renewing it would only race its end.
    pub fn to_renew(&self, now_ms: i64, lease_ms: i64) -> Vec<(String, String)> {
        self.active
            .iter()
            .filter(|f| !f.fault_id.is_empty() && f.ends_at_ms - now_ms >= lease_ms / 2)
            .map(|f| (f.fault_id.clone(), f.host.clone()))
            .collect()
    }

    /// On abort: every fault still active, to revert now (the ledger then holds none).
    pub fn take_all(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.active)
            .into_iter()
            .filter(|f| !f.fault_id.is_empty())
            .map(|f| (f.fault_id, f.host))
            .collect()
    }

    /// Faults whose deadline passed by `now_ms` (they end by themselves; removed from the ledger).
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        // partition, not extract_if: the workspace's MSRV (1.85) predates it.
        let (due, pending): (Vec<Applied>, Vec<Applied>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|f| f.ends_at_ms <= now_ms);
        self.active = pending;
        due.into_iter()
            .map(|f| f.fault_id)
            .filter(|id| !id.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests;
