//! The emergency-stop latch's words, shared by the agent (whose latch refuses a
//! StartFault) and serve (whose latch refuses attacks and campaign runs), so both say the
//! same thing.

use crate::clock::utc;

/// Reasons are for people; a page of text is not a reason.
pub const MAX_REASON_CHARS: usize = 500;
/// Who pressed it: an operator's or a user's name.
pub const MAX_BY_CHARS: usize = 128;

/// What every refused start says while latched: who, when, where it was set, why.
pub fn latched_message(by: &str, at_unix_ms: i64, origin: &str, reason: &str) -> String {
    format!(
        "emergency stop by {by} at {} ({origin}): {reason}; no fault starts until `troop resume`",
        utc(at_unix_ms)
    )
}

/// `text` if it is non-blank, at most `max` characters and free of control characters;
/// else why not, naming `key`.
pub fn checked_text(key: &str, text: &str, max: usize) -> Result<String, String> {
    let count = text.chars().count();
    if text.trim().is_empty() {
        return Err(format!("{key} must not be empty"));
    }
    if count > max {
        return Err(format!("{key} is {count} characters; at most {max}"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{key} must not contain control characters"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short_printable_lines() {
        assert!(checked_text("reason", "  ", 500).is_err());
        assert!(checked_text("reason", "a\nb", 500).is_err());
        let long = checked_text("reason", &"x".repeat(501), 500).unwrap_err();
        assert_eq!(long, "reason is 501 characters; at most 500");
        assert_eq!(checked_text("reason", "db down", 500).unwrap(), "db down");
    }

    #[test]
    fn the_message_names_who_when_where_and_why() {
        assert_eq!(
            latched_message("alice", 1_796_000_000_000, "command c-1", "db down"),
            "emergency stop by alice at 2026-11-30T00:53:20Z (command c-1): db down; no fault starts until `troop resume`"
        );
    }
}
