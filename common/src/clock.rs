//! Wall-clock time as commands carry it: milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// A moment for people and logs, in UTC to the second: `2026-12-02T22:10:07Z`.
pub fn utc(unix_ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(unix_ms) {
        Ok(at) => at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => format!("{unix_ms} ms after the epoch"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn moments_read_as_utc_seconds() {
        assert_eq!(super::utc(1_796_000_000_999), "2026-11-30T00:53:20Z");
        assert_eq!(
            super::utc(i64::MAX),
            format!("{} ms after the epoch", i64::MAX)
        );
    }
}
