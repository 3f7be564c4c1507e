//! Binding and freshness: a command names one agent and is valid for a short window.

use std::time::Duration;

use crate::pb;
use crate::refusal::Refusal;

/// The longest validity window an agent accepts.
pub const MAX_VALIDITY: Duration = Duration::from_secs(5 * 60);
/// The validity a coordinator gives a command unless told otherwise.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(60);
/// How far apart coordinator and agent clocks may be by default.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Checks that `command` is meant for `agent_id` and valid at `now_unix_ms`.
pub fn check(
    command: &pb::Command,
    agent_id: &str,
    now_unix_ms: i64,
    skew: Duration,
) -> Result<(), Refusal> {
    if command.agent_id != agent_id {
        return Err(Refusal::WrongAgent {
            addressed_to: command.agent_id.chars().take(128).collect(),
            this_agent: agent_id.to_string(),
        });
    }
    let issued = command.issued_at_unix_ms;
    let expires = command.expires_at_unix_ms;
    if expires <= issued {
        return Err(Refusal::InvalidWindow {
            issued_at_unix_ms: issued,
            expires_at_unix_ms: expires,
        });
    }
    let window_ms = (expires as i128 - issued as i128) as u128;
    if window_ms > MAX_VALIDITY.as_millis() {
        return Err(Refusal::WindowTooLong { window_ms });
    }
    let skew_ms = skew.as_millis() as i64;
    if issued > now_unix_ms.saturating_add(skew_ms) {
        return Err(Refusal::IssuedInFuture {
            ahead_ms: issued.saturating_sub(now_unix_ms),
        });
    }
    if expires < now_unix_ms.saturating_sub(skew_ms) {
        return Err(Refusal::Expired {
            ago_ms: now_unix_ms.saturating_sub(expires),
        });
    }
    Ok(())
}

/// Until when an agent must remember a command id: past this, `check` refuses it anyway.
pub fn remember_until_unix_ms(command: &pb::Command, skew: Duration) -> i64 {
    command
        .expires_at_unix_ms
        .saturating_add(skew.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const SKEW: Duration = DEFAULT_CLOCK_SKEW;

    fn command(issued: i64, expires: i64) -> pb::Command {
        pb::Command {
            trace_context: None,
            command_id: "c".into(),
            agent_id: "a".into(),
            issued_at_unix_ms: issued,
            expires_at_unix_ms: expires,
            action: None,
        }
    }

    #[test]
    fn accepts_a_fresh_command_and_tolerates_skew() {
        assert_eq!(check(&command(NOW, NOW + 60_000), "a", NOW, SKEW), Ok(()));
        assert_eq!(
            check(&command(NOW + 29_000, NOW + 60_000), "a", NOW, SKEW),
            Ok(())
        );
        assert_eq!(
            check(&command(NOW - 80_000, NOW - 20_000), "a", NOW, SKEW),
            Ok(())
        );
    }

    #[test]
    fn refuses_each_way_of_being_stale_or_misdirected() {
        let wrong = check(&command(NOW, NOW + 1), "b", NOW, SKEW);
        assert!(matches!(wrong, Err(Refusal::WrongAgent { .. })));
        let expired = check(&command(NOW - 100_000, NOW - 31_000), "a", NOW, SKEW);
        assert!(matches!(expired, Err(Refusal::Expired { .. })));
        let future = check(&command(NOW + 31_000, NOW + 60_000), "a", NOW, SKEW);
        assert!(matches!(future, Err(Refusal::IssuedInFuture { .. })));
        let long = check(&command(NOW, NOW + 300_001), "a", NOW, SKEW);
        assert!(matches!(long, Err(Refusal::WindowTooLong { .. })));
        let inverted = check(&command(NOW, NOW), "a", NOW, SKEW);
        assert!(matches!(inverted, Err(Refusal::InvalidWindow { .. })));
        let extreme = check(&command(i64::MIN, i64::MAX), "a", NOW, SKEW);
        assert!(matches!(extreme, Err(Refusal::WindowTooLong { .. })));
        let ancient = check(&command(i64::MIN, i64::MIN + 1), "a", NOW, SKEW);
        assert!(matches!(ancient, Err(Refusal::Expired { .. })));
    }
}
