//! From an admitted command to faults: validate against policy, start through the engine,
//! and answer with a receipt once the fault is applied.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use troop_proto::{Refusal, pb};

use super::engine::{Applied, EndReason, Engine, Reverted};
use super::journal::Undo;
use super::kill::{self, KillSpec};
use super::network::{self, ControlPath};
use super::power::{self, StopSpec};
use super::{cpu, disk, memory};
use crate::host::process::ProcessTable;
use crate::latch::{Latch, MAX_REASON_CHARS, checked_text};
use crate::policy::{FaultKind, Policy};
use troop_common::clock::now_unix_ms;

pub struct Runner {
    agent_id: String,
    /// Read once per command: a reload changes what later commands get.
    policy: RwLock<Arc<Policy>>,
    pub(crate) engine: Arc<Engine>,
    processes: Arc<dyn ProcessTable>,
    /// The binary that answers `__hold-memory` (this agent's own, normally).
    helper_exe: PathBuf,
    /// Memory and disk faults are planned and applied one at a time each, so that
    /// concurrent faults together stay under the policy's caps.
    memory_gate: Mutex<()>,
    disk_gate: Mutex<()>,
    /// Network faults likewise, against the loss cap and one latency per interface.
    network_gate: Mutex<()>,
    /// What every network fault spares.
    control: ControlPath,
}

pub(crate) fn kind_of(fault: &pb::start_fault::Fault) -> FaultKind {
    use pb::start_fault::Fault;
    match fault {
        Fault::Kill(_) => FaultKind::Kill,
        Fault::Cpu(_) => FaultKind::Cpu,
        Fault::Memory(_) => FaultKind::Memory,
        Fault::Disk(_) => FaultKind::Disk,
        Fault::StopHost(_) => FaultKind::StopHost,
        Fault::Network(_) => FaultKind::Network,
        Fault::Dns(_) => FaultKind::Dns,
    }
}

impl Runner {
    pub fn new(
        agent_id: String,
        policy: Policy,
        engine: Arc<Engine>,
        processes: Arc<dyn ProcessTable>,
        helper_exe: PathBuf,
    ) -> Self {
        Self {
            agent_id,
            policy: RwLock::new(Arc::new(policy)),
            engine,
            processes,
            helper_exe,
            memory_gate: Mutex::new(()),
            disk_gate: Mutex::new(()),
            network_gate: Mutex::new(()),
            control: ControlPath::default(),
        }
    }

    /// The agent's own control path, spared by every network fault.
    pub fn with_control_path(self, control: ControlPath) -> Self {
        Self { control, ..self }
    }

    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }

    /// The directories disk faults may fill now (the metrics look for leftovers there).
    pub fn disk_paths(&self) -> Vec<PathBuf> {
        self.policy().disk_paths.clone()
    }

    fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn carry_out(&self, command: &pb::Command) -> Result<pb::Receipt, Refusal> {
        use pb::command::Action;
        let receipt = pb::Receipt {
            command_id: command.command_id.clone(),
            agent_id: self.agent_id.clone(),
            ..pb::Receipt::default()
        };
        let mut receipt = match &command.action {
            None => return Err(Refusal::InvalidArgument("command has no action".into())),
            // The trusted keys are the admission's, not the fault engine's.
            Some(Action::Trust(_)) => {
                return Err(Refusal::Internal(
                    "a TrustKeys command reached the fault runner".into(),
                ));
            }
            Some(Action::Start(start)) => self.start(&command.command_id, start, receipt)?,
            Some(Action::Abort(abort)) => {
                self.engine.abort(&abort.fault_id)?;
                pb::Receipt {
                    summary: format!("reverted fault {}", abort.fault_id),
                    aborted_fault_ids: vec![abort.fault_id.clone()],
                    ..receipt
                }
            }
            Some(Action::AbortAll(_)) => {
                let reverted = self.engine.abort_all(EndReason::Halted);
                all_reverted(&reverted, "")?;
                pb::Receipt {
                    summary: format!("reverted {} fault(s)", reverted.ids.len()),
                    aborted_fault_ids: reverted.ids,
                    ..receipt
                }
            }
            Some(Action::EmergencyStop(stop)) => {
                let latch = Latch::from_command(command, stop)?;
                let by = latch.by.clone();
                let (reverted, unsaved) = self.engine.emergency_stop(latch);
                let latched = match unsaved {
                    None => "latched".to_string(),
                    Some(error) => {
                        tracing::error!(%error, "cannot write the latch file; latched until this agent process ends");
                        format!(
                            "latched until this agent process ends (the latch file could not be written: {error})"
                        )
                    }
                };
                all_reverted(&reverted, &format!("{latched}; "))?;
                pb::Receipt {
                    summary: format!(
                        "{latched} by an emergency stop by {by}; reverted {} fault(s)",
                        reverted.ids.len()
                    ),
                    aborted_fault_ids: reverted.ids,
                    ..receipt
                }
            }
            Some(Action::Resume(resume)) => {
                checked_text("reason", &resume.reason, MAX_REASON_CHARS)?;
                checked_text("by", &resume.by, troop_common::latch::MAX_BY_CHARS)?;
                let summary = match self.engine.resume(command.issued_at_unix_ms)? {
                    Some(lifted) => format!(
                        "latch lifted (emergency stop by {} at {}: {})",
                        lifted.by,
                        troop_common::clock::utc(lifted.at_unix_ms),
                        lifted.reason
                    ),
                    None => "was not latched".to_string(),
                };
                pb::Receipt { summary, ..receipt }
            }
            Some(Action::Renew(renew)) => {
                let lease = lease(renew.lease_ms)?
                    .ok_or_else(|| Refusal::InvalidArgument("a renewal needs a lease_ms".into()))?;
                let until = self.engine.renew(&renew.fault_id, lease)?;
                pb::Receipt {
                    summary: format!("lease of fault {} renewed", renew.fault_id),
                    fault_id: renew.fault_id.clone(),
                    ends_at_unix_ms: until,
                    ..receipt
                }
            }
        };
        receipt.applied_at_unix_ms = now_unix_ms();
        Ok(receipt)
    }

    fn start(
        &self,
        id: &str,
        start: &pb::StartFault,
        receipt: pb::Receipt,
    ) -> Result<pb::Receipt, Refusal> {
        use pb::start_fault::Fault;
        let fault = start
            .fault
            .as_ref()
            .ok_or_else(|| Refusal::InvalidArgument("start names no fault".into()))?;
        // Before the policy, so a latched agent says so first; and here because a
        // one-shot kill never enters the engine, whose own check covers held faults
        // and a stop that lands while one is being applied.
        if let Some(latch) = self.engine.latch() {
            return Err(latch.refusal());
        }
        let kind = kind_of(fault);
        let policy = self.policy();
        policy.check_allowed(kind)?;
        let duration = Duration::from_millis(start.duration_ms);
        policy.check_duration(duration)?;
        let lease = lease(start.lease_ms)?;
        let held = |undo: Undo, apply: &dyn Fn() -> Result<Applied, Refusal>| {
            if duration.is_zero() {
                return Err(Refusal::InvalidArgument(format!(
                    "a {kind} fault needs a duration"
                )));
            }
            let (summary, ends_at_unix_ms) =
                self.engine.start(id, kind, duration, lease, undo, apply)?;
            Ok(pb::Receipt {
                fault_id: id.to_string(),
                summary,
                ends_at_unix_ms,
                ..receipt.clone()
            })
        };
        match fault {
            Fault::Kill(request) => self.kill(
                policy.clone(),
                id,
                KillSpec::from_pb(request)?,
                duration,
                lease,
                receipt.clone(),
            ),
            Fault::Cpu(request) => {
                let spec = cpu::CpuSpec::from_pb(request, &cpu::available_cores())?;
                held(Undo::Nothing, &|| cpu::apply(&spec))
            }
            Fault::Memory(request) => {
                let _one_at_a_time = self.memory_gate.lock().unwrap_or_else(|e| e.into_inner());
                let total = crate::inventory::memory_total_bytes();
                let held_now = self.engine.memory_held();
                let bytes =
                    memory::bytes_to_hold(request.amount.as_ref(), total, held_now, &policy)?;
                let undo = Undo::EndHelper {
                    marker: id.to_string(),
                };
                held(undo, &|| memory::apply(&self.helper_exe, id, bytes))
            }
            Fault::Disk(request) => {
                let _one_at_a_time = self.disk_gate.lock().unwrap_or_else(|e| e.into_inner());
                let plan = disk::plan(request, id, &policy)?;
                let undo = Undo::RemoveFile { path: plan.file() };
                held(undo, &|| {
                    let until = now_unix_ms().saturating_add(duration.as_millis() as i64);
                    disk::apply(&plan, &self.helper_exe, until)
                })
            }
            Fault::Network(_) | Fault::Dns(_) => {
                let _one_at_a_time = self.network_gate.lock().unwrap_or_else(|e| e.into_inner());
                let support = crate::host::net::support::host();
                let plan = match fault {
                    Fault::Network(request) => {
                        let active = self.engine.network_loads();
                        network::plan(request, &policy, &self.control, &support, &active)?
                    }
                    _ => network::plan_dns(&policy, &self.control, &support)?,
                };
                let undo = network::undo_for(id);
                held(undo.clone(), &|| network::apply(&plan, &undo, &support))
            }
            Fault::StopHost(request) => {
                let spec = StopSpec::from_pb(request)?;
                let undo = Undo::PendingStop {
                    mode: spec.mode.name().to_string(),
                };
                let engine = self.engine.clone();
                let (summary, ends_at_unix_ms) = self.engine.start(
                    id,
                    kind,
                    spec.delay + power::STOP_GRACE,
                    lease,
                    undo,
                    &|| power::apply(spec, id, engine.clone()),
                )?;
                Ok(pb::Receipt {
                    fault_id: id.to_string(),
                    summary,
                    ends_at_unix_ms,
                    ..receipt
                })
            }
        }
    }

    fn kill(
        &self,
        policy: Arc<Policy>,
        id: &str,
        spec: KillSpec,
        duration: Duration,
        lease: Option<Duration>,
        receipt: pb::Receipt,
    ) -> Result<pb::Receipt, Refusal> {
        if spec.repeat_every.is_none() && !duration.is_zero() {
            return Err(Refusal::InvalidArgument(
                "a kill without a repeat interval is over at once; it takes no duration".into(),
            ));
        }
        if spec.repeat_every.is_some() && duration.is_zero() {
            return Err(Refusal::InvalidArgument(
                "a repeating kill needs a duration".into(),
            ));
        }
        let first_kill = || kill::apply(&spec, self.processes.as_ref(), &policy, &mut rand::rng());
        let signal = nix::sys::signal::Signal::try_from(spec.signal).map_or_else(
            |_| format!("signal {}", spec.signal),
            |s| s.as_str().to_string(),
        );
        let sent = |signalled: &[pb::SignalledProcess]| {
            let names: Vec<String> = signalled
                .iter()
                .map(|process| format!("{} ({})", process.pid, process.name))
                .collect();
            format!("sent {signal} to {}", names.join(", "))
        };
        let Some(interval) = spec.repeat_every else {
            let signalled = first_kill()?;
            return Ok(pb::Receipt {
                summary: sent(&signalled),
                signalled,
                ..receipt
            });
        };
        // The first kill happens inside the engine's start, after its id checks: a
        // refused start must not have signalled anything.
        let first = Mutex::new(Vec::new());
        let processes = self.processes.clone();
        let (repeat, ends_at_unix_ms) =
            self.engine
                .start(id, FaultKind::Kill, duration, lease, Undo::Nothing, &|| {
                    let signalled = first_kill()?;
                    let count = signalled.len();
                    *first.lock().unwrap_or_else(|e| e.into_inner()) = signalled;
                    Ok(kill::start_repeating(
                        spec.clone(),
                        interval,
                        processes.clone(),
                        Policy::clone(&policy),
                        count,
                    ))
                })?;
        let signalled = first.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(pb::Receipt {
            summary: format!("{}; {repeat}", sent(&signalled)),
            signalled,
            fault_id: id.to_string(),
            ends_at_unix_ms,
            ..receipt
        })
    }
}

/// An error naming every fault whose revert failed (each is retried), after `done`.
fn all_reverted(reverted: &Reverted, done: &str) -> Result<(), Refusal> {
    if reverted.failed.is_empty() {
        return Ok(());
    }
    let failed: Vec<String> = reverted
        .failed
        .iter()
        .map(|(id, error)| format!("{id} ({error})"))
        .collect();
    Err(Refusal::Internal(format!(
        "{done}reverted {} fault(s); could not revert {}; the agent keeps retrying",
        reverted.ids.len(),
        failed.join(", ")
    )))
}

fn lease(lease_ms: u64) -> Result<Option<Duration>, Refusal> {
    match lease_ms {
        0 => Ok(None),
        ms if ms < 1000 => Err(Refusal::InvalidArgument(format!(
            "lease {} is under the minimum of 1s",
            troop_common::units::format_duration(Duration::from_millis(ms))
        ))),
        ms => Ok(Some(Duration::from_millis(ms))),
    }
}
