//! The stop-host fault: answer first, journal the stop, then sync and reboot(2) after the
//! delay. After the host is back, the agent reports the stop from its journal.

use std::time::Duration;

use troop_proto::{Refusal, pb};

use crate::host::power::{self, StopMode};

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
                "stop-host delay {} ms is over the maximum of {} ms",
                stop.delay_ms,
                MAX_DELAY.as_millis()
            )));
        }
        Ok(Self { mode, delay })
    }
}

/// Stops the host from a thread of its own once `delay` has passed; `on_failure` runs if
/// the kernel refuses (so the journal can forget the stop that did not happen).
pub fn stop_later(spec: StopSpec, on_failure: impl FnOnce(String) + Send + 'static) {
    std::thread::spawn(move || {
        std::thread::sleep(spec.delay.max(MIN_DELAY));
        tracing::warn!(mode = spec.mode.name(), "stopping the host now");
        let error = power::stop(spec.mode);
        tracing::error!(%error, "the kernel refused to stop the host");
        on_failure(error.to_string());
    });
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
