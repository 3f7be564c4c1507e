//! The stop-host fault: an ordinary fault of the engine while it waits out its delay
//! (listed in Status; cancelled by abort, halt, an expired lease, SIGTERM or a restart),
//! then journaled as stopping, synced, and reboot(2). After the host is back, the agent
//! reports the stop from its journal.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use troop_proto::{Refusal, pb};

use super::engine::{Applied, Effect, Engine};
use super::journal::{Record, Undo};
use crate::host::power::{self, StopMode};
use crate::policy::FaultKind;
use troop_common::clock::now_unix_ms;
use troop_common::units::format_duration;

/// Longest delay an agent accepts before it stops the host.
pub const MAX_DELAY: Duration = Duration::from_secs(600);
/// The answer must leave before the host stops.
const MIN_DELAY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSpec {
    pub mode: StopMode,
    pub delay: Duration,
}

impl StopSpec {
    pub fn from_pb(stop: &pb::StopHost) -> Result<Self, Refusal> {
        use pb::stop_host::Mode;
        let mode = match Mode::try_from(stop.mode) {
            Ok(Mode::Poweroff) => StopMode::Poweroff,
            Ok(Mode::Reboot) => StopMode::Reboot,
            Ok(Mode::Halt) => StopMode::Halt,
            _ => {
                return Err(Refusal::InvalidArgument(format!(
                    "stop-host mode {} is not poweroff, reboot or halt",
                    stop.mode
                )));
            }
        };
        let delay = Duration::from_millis(stop.delay_ms);
        if delay > MAX_DELAY {
            return Err(Refusal::InvalidArgument(format!(
                "stop-host delay {} is over the maximum of {}",
                format_duration(delay),
                format_duration(MAX_DELAY)
            )));
        }
        Ok(Self { mode, delay })
    }
}

/// How long after its delay a stop the kernel did not carry out stays listed, before the
/// engine forgets it (a host that really stops is gone well before).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where a waiting stop stands; the waiting thread and a revert race for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Cancelled,
    Stopping,
}

/// Waits out the delay on a thread of its own, then journals that the host is stopping
/// and calls reboot(2). A revert in the delay (abort, halt, lease, SIGTERM) cancels it;
/// a restart in the delay cancels it too, as the journal then still says "pending".
pub fn apply(spec: StopSpec, fault_id: &str, engine: Arc<Engine>) -> Result<Applied, Refusal> {
    let stage = Arc::new(Mutex::new(Stage::Waiting));
    let (cancel, cancelled) = mpsc::channel::<()>();
    let delay = spec.delay.max(MIN_DELAY);
    let thread = {
        let stage = stage.clone();
        let fault_id = fault_id.to_string();
        std::thread::Builder::new()
            .name("troop-stop-host".into())
            .spawn(move || {
                // A message or a dropped sender both mean "cancelled".
                if cancelled.recv_timeout(delay) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                {
                    let mut stage = stage.lock().unwrap_or_else(|e| e.into_inner());
                    if *stage != Stage::Waiting {
                        return;
                    }
                    *stage = Stage::Stopping;
                }
                stop_now(spec, &fault_id, &engine);
                // Still here: the host did not stop, so nothing is left to cancel.
                *stage.lock().unwrap_or_else(|e| e.into_inner()) = Stage::Cancelled;
            })
            .map_err(|error| Refusal::Internal(format!("cannot start the stop thread: {error}")))?
    };
    Ok(Applied {
        summary: format!(
            "host will {} in {}",
            spec.mode.name(),
            format_duration(delay)
        ),
        effect: Box::new(PendingStop {
            spec,
            fires_at: Instant::now() + delay,
            stage,
            cancel: Some(cancel),
            thread: Some(thread),
        }),
    })
}

fn stop_now(spec: StopSpec, fault_id: &str, engine: &Engine) {
    let record = |undo| Record {
        fault_id: fault_id.to_string(),
        kind: FaultKind::StopHost.name().to_string(),
        started_at_unix_ms: now_unix_ms(),
        ends_at_unix_ms: now_unix_ms(),
        undo,
    };
    let mode = spec.mode.name().to_string();
    // Journaled first, so the agent reports the stop once the host is back.
    if let Err(error) = engine
        .journal()
        .add(record(Undo::ReportStop { mode: mode.clone() }))
    {
        tracing::error!(fault_id, error = %troop_telemetry::error_chain(&error), "cannot journal the stop, so the host is not stopped");
        return;
    }
    tracing::warn!(fault_id, mode = spec.mode.name(), "stopping the host now");
    let error = power::stop(spec.mode);
    tracing::error!(fault_id, %error, "the kernel refused to stop the host");
    let _ = engine.journal().add(record(Undo::PendingStop { mode }));
}

struct PendingStop {
    spec: StopSpec,
    fires_at: Instant,
    stage: Arc<Mutex<Stage>>,
    cancel: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Effect for PendingStop {
    fn effect(&self) -> String {
        let stage = *self.stage.lock().unwrap_or_else(|e| e.into_inner());
        match stage {
            Stage::Waiting => format!(
                "host will {} in {}",
                self.spec.mode.name(),
                format_duration(self.fires_at.saturating_duration_since(Instant::now()))
            ),
            Stage::Cancelled => "cancelled".into(),
            Stage::Stopping => format!("host is stopping ({})", self.spec.mode.name()),
        }
    }

    fn revert(&mut self) -> Result<(), String> {
        {
            let mut stage = self.stage.lock().unwrap_or_else(|e| e.into_inner());
            match *stage {
                Stage::Waiting => *stage = Stage::Cancelled,
                Stage::Cancelled => {}
                // Too late to cancel; the journal entry must stay, to be reported.
                Stage::Stopping => return Err("the host is already stopping".into()),
            }
        }
        // Wakes the thread, which sees the cancel and ends.
        drop(self.cancel.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        Ok(())
    }
}

impl Drop for PendingStop {
    fn drop(&mut self) {
        let _ = self.revert();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_delays_are_checked() {
        let spec = |mode, delay_ms| StopSpec::from_pb(&pb::StopHost { mode, delay_ms });
        assert_eq!(spec(1, 0).unwrap().mode, StopMode::Poweroff);
        assert_eq!(spec(2, 0).unwrap().mode, StopMode::Reboot);
        assert_eq!(spec(3, 1000).unwrap().delay, Duration::from_secs(1));
        assert!(spec(0, 0).is_err());
        assert!(spec(9, 0).is_err());
        assert!(spec(1, 600_001).is_err());
    }
}
