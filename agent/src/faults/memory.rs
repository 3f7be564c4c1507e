//! The memory fault: a size or a percent of total memory, held resident by a helper
//! process the OOM killer takes before the agent; capped by `policy.max_memory_percent`.

use std::path::Path;
use std::time::Duration;

use troop_proto::{Refusal, pb};

use super::engine::{Applied, Effect};
use crate::host::memory::Holder;
use crate::policy::Policy;
use troop_common::units::format_size;

/// Touching pages runs at a few GiB a second; allow for slow hosts.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How many bytes to hold, refusing what the policy does not allow together with the
/// `held` bytes other memory faults hold already.
pub fn bytes_to_hold(
    amount: Option<&pb::memory::Amount>,
    total: u64,
    held: u64,
    policy: &Policy,
) -> Result<u64, Refusal> {
    use pb::memory::Amount;
    let bytes = match amount {
        None => {
            return Err(Refusal::InvalidArgument(
                "memory fault names neither a size nor a percent".into(),
            ));
        }
        Some(Amount::Percent(percent)) if !(1..=100).contains(percent) => {
            return Err(Refusal::InvalidArgument(format!(
                "memory percent {percent} is not 1 to 100"
            )));
        }
        Some(Amount::Percent(percent)) => (total as u128 * u128::from(*percent) / 100) as u64,
        Some(Amount::Bytes(0)) => {
            return Err(Refusal::InvalidArgument(
                "memory size must be more than 0".into(),
            ));
        }
        Some(Amount::Bytes(bytes)) => *bytes,
    };
    let cap = policy.max_memory_percent;
    if (bytes as u128 + held as u128) * 100 > total as u128 * u128::from(cap) {
        let already = if held > 0 {
            format!(" with the {} other memory faults hold", format_size(held))
        } else {
            String::new()
        };
        return Err(Refusal::Policy(format!(
            "holding {}{already} is past this agent's policy.max_memory_percent of {cap}% of {}",
            format_size(bytes),
            format_size(total)
        )));
    }
    Ok(bytes)
}

pub fn apply(helper: &Path, fault_id: &str, bytes: u64) -> Result<Applied, Refusal> {
    let holder = Holder::start(helper, fault_id, bytes, READY_TIMEOUT)
        .map_err(|error| Refusal::Internal(format!("cannot hold memory: {error}")))?;
    Ok(Applied {
        summary: format!(
            "holding {} resident in helper process {}",
            format_size(bytes),
            holder.pid()
        ),
        effect: Box::new(MemoryHold { holder, bytes }),
    })
}

struct MemoryHold {
    holder: Holder,
    bytes: u64,
}

impl Effect for MemoryHold {
    fn effect(&self) -> String {
        match self.holder.resident_bytes() {
            Some(resident) => format!(
                "{} resident of {} asked (pid {})",
                format_size(resident),
                format_size(self.bytes),
                self.holder.pid()
            ),
            None => format!("holder pid {} is gone", self.holder.pid()),
        }
    }

    fn revert(&mut self) -> Result<(), String> {
        self.holder.stop();
        Ok(())
    }

    fn memory_bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::memory::Amount;

    #[test]
    fn sizes_percents_and_the_cap() {
        let policy = Policy::default(); // 80 %
        let total = 1000;
        assert_eq!(
            bytes_to_hold(Some(&Amount::Percent(50)), total, 0, &policy),
            Ok(500)
        );
        assert_eq!(
            bytes_to_hold(Some(&Amount::Bytes(800)), total, 0, &policy),
            Ok(800)
        );
        assert!(matches!(
            bytes_to_hold(Some(&Amount::Bytes(801)), total, 0, &policy),
            Err(Refusal::Policy(_))
        ));
        assert!(matches!(
            bytes_to_hold(Some(&Amount::Percent(81)), total, 0, &policy),
            Err(Refusal::Policy(_))
        ));
        assert!(matches!(
            bytes_to_hold(Some(&Amount::Percent(0)), total, 0, &policy),
            Err(Refusal::InvalidArgument(_))
        ));
        assert!(matches!(
            bytes_to_hold(None, total, 0, &policy),
            Err(Refusal::InvalidArgument(_))
        ));
    }

    #[test]
    fn the_cap_counts_what_other_memory_faults_hold() {
        let policy = Policy::default(); // 80 %
        assert_eq!(
            bytes_to_hold(Some(&Amount::Bytes(300)), 1000, 500, &policy),
            Ok(300)
        );
        let refusal = bytes_to_hold(Some(&Amount::Bytes(301)), 1000, 500, &policy).unwrap_err();
        assert!(matches!(refusal, Refusal::Policy(_)));
        assert!(
            refusal.to_string().contains("other memory faults hold"),
            "{refusal}"
        );
    }
}
