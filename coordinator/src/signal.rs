//! Signal names as operators write them, in CLI flags and campaign files.

/// `KILL`, `SIGKILL`, `kill` or `9`; 1 to 64. (Signal 0 would only probe; on the wire it
/// means "the default, KILL", so it is refused here.)
pub fn parse_signal(text: &str) -> Result<i32, String> {
    if let Ok(number) = text.parse::<i32>() {
        return if (1..=64).contains(&number) {
            Ok(number)
        } else {
            Err(format!("signal {number} is not 1 to 64"))
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|signal| signal as i32)
        .map_err(|_| format!("unknown signal {text:?}; use a name like TERM or KILL, or a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("KILL"), Ok(9));
        assert_eq!(parse_signal("sigterm"), Ok(15));
        assert_eq!(parse_signal("10"), Ok(10));
        assert!(parse_signal("NUKE").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
    }
}
