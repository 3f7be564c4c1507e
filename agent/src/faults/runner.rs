//! From an admitted command to faults: validate against policy, start through the engine,
//! and answer with a receipt once the fault is applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use troop_proto::{Refusal, pb};

use super::engine::{Applied, EndReason, Engine};
use super::journal::{Record, Undo};
use super::kill::{self, KillSpec};
use super::power::{self, StopSpec};
use super::{cpu, disk, memory};
use crate::host::process::ProcessTable;
use crate::policy::{FaultKind, Policy};
use crate::service::now_unix_ms;

pub struct Runner {
    pub agent_id: String,
    pub policy: Policy,
    pub engine: Arc<Engine>,
    pub processes: Arc<dyn ProcessTable>,
    /// The binary that answers `__hold-memory` (this agent's own, normally).
    pub helper_exe: PathBuf,
}

fn kind_of(fault: &pb::start_fault::Fault) -> FaultKind {
    use pb::start_fault::Fault;
    match fault {
        Fault::Kill(_) => FaultKind::Kill,
        Fault::Cpu(_) => FaultKind::Cpu,
        Fault::Memory(_) => FaultKind::Memory,
        Fault::Disk(_) => FaultKind::Disk,
        Fault::StopHost(_) => FaultKind::StopHost,
    }
}

impl Runner {
    pub fn carry_out(&self, command: &pb::Command) -> Result<pb::Receipt, Refusal> {
        use pb::command::Action;
        let receipt = pb::Receipt {
            command_id: command.command_id.clone(),
            agent_id: self.agent_id.clone(),
            ..pb::Receipt::default()
        };
        let mut receipt = match &command.action {
            None => return Err(Refusal::InvalidArgument("command has no action".into())),
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
                let ids = self.engine.abort_all(EndReason::Aborted);
                pb::Receipt {
                    summary: format!("reverted {} fault(s)", ids.len()),
                    aborted_fault_ids: ids,
                    ..receipt
                }
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
        let kind = kind_of(fault);
        self.policy.check_allowed(kind)?;
        let duration = Duration::from_millis(start.duration_ms);
        self.policy.check_duration(duration)?;
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
                let total = crate::inventory::collect().memory_total_bytes;
                let bytes = memory::bytes_to_hold(request.amount.as_ref(), total, &self.policy)?;
                let undo = Undo::EndHelper {
                    marker: id.to_string(),
                };
                held(undo, &|| memory::apply(&self.helper_exe, id, bytes))
            }
            Fault::Disk(request) => {
                let plan = disk::plan(request, id, &self.policy)?;
                let undo = Undo::RemoveFile {
                    path: plan.file.clone(),
                };
                held(undo, &|| disk::apply(&plan))
            }
            Fault::StopHost(request) => self.stop_host(id, StopSpec::from_pb(request)?, receipt),
        }
    }

    fn kill(
        &self,
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
        let signalled = kill::apply(
            &spec,
            self.processes.as_ref(),
            &self.policy,
            &mut rand::rng(),
        )?;
        let names: Vec<String> = signalled
            .iter()
            .map(|process| format!("{} ({})", process.pid, process.name))
            .collect();
        let signal = nix::sys::signal::Signal::try_from(spec.signal).map_or_else(
            |_| format!("signal {}", spec.signal),
            |s| s.as_str().to_string(),
        );
        let mut summary = format!("sent {signal} to {}", names.join(", "));
        let mut receipt = pb::Receipt {
            signalled,
            ..receipt
        };
        if let Some(interval) = spec.repeat_every {
            let first = receipt.signalled.len();
            let (processes, policy) = (self.processes.clone(), self.policy.clone());
            let (repeat, ends_at) =
                self.engine
                    .start(id, FaultKind::Kill, duration, lease, Undo::Nothing, &|| {
                        Ok(kill::start_repeating(
                            spec.clone(),
                            interval,
                            processes.clone(),
                            policy.clone(),
                            first,
                        ))
                    })?;
            summary = format!("{summary}; {repeat}");
            receipt.fault_id = id.to_string();
            receipt.ends_at_unix_ms = ends_at;
        }
        receipt.summary = summary;
        Ok(receipt)
    }

    /// Journals the stop, answers, and stops the host after the delay.
    fn stop_host(
        &self,
        id: &str,
        spec: StopSpec,
        receipt: pb::Receipt,
    ) -> Result<pb::Receipt, Refusal> {
        let now = now_unix_ms();
        let record = Record {
            fault_id: id.to_string(),
            kind: FaultKind::StopHost.name().to_string(),
            started_at_unix_ms: now,
            ends_at_unix_ms: now,
            undo: Undo::ReportStop {
                mode: spec.mode.name().to_string(),
            },
        };
        self.engine.journal().add(record).map_err(|error| {
            Refusal::Unavailable(format!(
                "cannot journal the stop, so the host was not stopped: {}",
                troop_telemetry::error_chain(&error)
            ))
        })?;
        let engine = self.engine.clone();
        let fault_id = id.to_string();
        power::stop_later(spec, move |_| {
            let _ = engine.journal().remove(&fault_id);
        });
        Ok(pb::Receipt {
            fault_id: id.to_string(),
            summary: format!(
                "host will {} in {} ms",
                spec.mode.name(),
                spec.delay.as_millis()
            ),
            ..receipt
        })
    }
}

fn lease(lease_ms: u64) -> Result<Option<Duration>, Refusal> {
    match lease_ms {
        0 => Ok(None),
        ms if ms < 1000 => Err(Refusal::InvalidArgument(format!(
            "lease {ms} ms is under the minimum of 1000 ms"
        ))),
        ms => Ok(Some(Duration::from_millis(ms))),
    }
}
