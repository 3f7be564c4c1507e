//! Parsing and formatting the quantities operators write in CLI flags and
//! TOML config: durations (`1h30m`), byte sizes (`200MiB`) and percentages.
//!
//! Every unit must be written out: a bare `30` could mean seconds or
//! minutes, and guessing wrong in a chaos tool means a fault that lasts 60
//! times longer than intended.
//!
//! Hand-written on purpose: humantime accepts units the contract does not list (weeks,
//! months, years) and bytesize reads units case-insensitively (`1gb`); the contract
//! refuses both.

use std::time::Duration;

/// Units accepted by [`parse_duration`], as listed in error messages.
const DURATION_UNITS: &str = "ms, s, m, h or d";
/// Units accepted by [`parse_size`], as listed in error messages.
const SIZE_UNITS: &str = "B, KiB, MiB, GiB, TiB, KB, MB, GB or TB";

/// Why an operator-written quantity could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UnitError {
    /// The duration is empty or not of the form `<number><unit>...`.
    #[error("{input:?}: expected a duration such as 500ms, 30s, 5m, 1h30m or 2d")]
    InvalidDuration {
        /// The text as written.
        input: String,
    },
    /// A number in the duration has no unit after it.
    #[error("{input:?}: add a unit: {DURATION_UNITS}")]
    MissingDurationUnit {
        /// The text as written.
        input: String,
    },
    /// A duration unit is not one of the known ones.
    #[error("{input:?}: unknown unit {unit:?}, expected {DURATION_UNITS}")]
    UnknownDurationUnit {
        /// The text as written.
        input: String,
        /// The unrecognised unit.
        unit: String,
    },
    /// The duration has a decimal point, which is not supported.
    #[error(
        "{input:?}: fractions are not supported, combine units instead (e.g. 1h30m or 1s500ms)"
    )]
    FractionalDuration {
        /// The text as written.
        input: String,
    },
    /// The duration does not fit in a `std::time::Duration`.
    #[error("{input:?}: duration is too long")]
    DurationOverflow {
        /// The text as written.
        input: String,
    },
    /// The size is empty or not of the form `<number>[unit]`.
    #[error("{input:?}: expected a size such as 4096, 512B, 200MiB, 1.5GiB or 4GB")]
    InvalidSize {
        /// The text as written.
        input: String,
    },
    /// A size unit is not one of the known ones.
    #[error("{input:?}: unknown unit {unit:?}, expected {SIZE_UNITS} (case matters)")]
    UnknownSizeUnit {
        /// The text as written.
        input: String,
        /// The unrecognised unit.
        unit: String,
    },
    /// The size does not fit in 64 bits of bytes.
    #[error("{input:?}: size is too large, the maximum is {} bytes", u64::MAX)]
    SizeOverflow {
        /// The text as written.
        input: String,
    },
    /// The percentage is not a whole number (with an optional `%`).
    #[error("{input:?}: expected a whole percentage from 1 to 100, such as 80 or 80%")]
    InvalidPercent {
        /// The text as written.
        input: String,
    },
    /// The percentage is a whole number outside 1..=100.
    #[error("{input:?}: percentage must be from 1 to 100")]
    PercentOutOfRange {
        /// The text as written.
        input: String,
    },
}

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h`, `2d` or `1h30m`.
///
/// Components may appear in any order and are added up; whitespace between
/// them is allowed. `us` and `ns` are also accepted so that everything
/// [`format_duration`] prints parses back.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let input = s;
    let invalid = || UnitError::InvalidDuration {
        input: input.into(),
    };
    let overflow = || UnitError::DurationOverflow {
        input: input.into(),
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(invalid());
        }
        let (number, after) = rest.split_at(digits);
        if after.starts_with(['.', ',']) {
            return Err(UnitError::FractionalDuration {
                input: input.into(),
            });
        }
        let after = after.trim_start();
        let unit_len = after.len() - after.trim_start_matches(|c: char| c.is_alphabetic()).len();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(UnitError::MissingDurationUnit {
                input: input.into(),
            });
        }
        // A too-long number is an overflow, not a syntax error: it's all digits.
        let n: u64 = number.parse().map_err(|_| overflow())?;
        let part = match unit {
            "ns" => Some(Duration::from_nanos(n)),
            "us" => Some(Duration::from_micros(n)),
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(60 * 60).map(Duration::from_secs),
            "d" => n.checked_mul(24 * 60 * 60).map(Duration::from_secs),
            _ => {
                return Err(UnitError::UnknownDurationUnit {
                    input: input.into(),
                    unit: unit.into(),
                });
            }
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(overflow)?;
        rest = after.trim_start();
    }
    Ok(total)
}

/// Formats a duration compactly, largest unit first (`1h30m`, `1s500ms`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1_000 % 1_000), "us"),
        (u64::from(nanos % 1_000), "ns"),
    ];
    let out: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if out.is_empty() { "0s".into() } else { out }
}

/// Parses a byte size: `4096`, `4096B`, binary `KiB`..`TiB` or SI `KB`..`TB`.
///
/// Suffixes are case-sensitive. A fractional number such as `1.5GiB` is
/// allowed and rounded down to whole bytes. Whitespace between the number and
/// the unit is allowed, so [`format_size`] output parses back.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let input = s;
    let invalid = || UnitError::InvalidSize {
        input: input.into(),
    };
    let overflow = || UnitError::SizeOverflow {
        input: input.into(),
    };
    let trimmed = s.trim();
    let number_len = trimmed.len()
        - trimmed
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
            .len();
    let (number, unit) = trimmed.split_at(number_len);
    let unit = unit.trim_start();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    // Require digits on both sides of a '.', so `.5`, `5.` and `1.2.3` fail.
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || (number.contains('.') && !all_digits(fraction)) {
        return Err(invalid());
    }
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(UnitError::UnknownSizeUnit {
                input: input.into(),
                unit: unit.into(),
            });
        }
    };
    let whole: u64 = whole.parse().map_err(|_| overflow())?;
    let whole_bytes = whole.checked_mul(multiplier).ok_or_else(overflow)?;
    // floor(0.d1d2…dk × multiplier), computed exactly by Horner's rule from
    // the last digit: floor((d + floor(x)) / 10) == floor((d + x) / 10).
    let fraction_bytes = fraction.bytes().rev().fold(0u64, |acc, digit| {
        (u64::from(digit - b'0') * multiplier + acc) / 10
    });
    whole_bytes.checked_add(fraction_bytes).ok_or_else(overflow)
}

/// Formats a byte count for display: `512 B`, `200.0 MiB`, `4.0 GiB`.
///
/// Binary units with one decimal, rounded to nearest; the result parses back
/// with [`parse_size`] to within that rounding.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let bytes = u128::from(bytes);
    let mut i = 0;
    let tenths = loop {
        let size = 1u128 << (10 * (i + 1));
        let tenths = (bytes * 10 + size / 2) / size;
        // Move up while the value would round to 1024.0 or more, so
        // 1023.96 KiB shows as `1.0 MiB` rather than `1024.0 KiB`.
        if tenths < 10_240 || i == UNITS.len() - 1 {
            break tenths;
        }
        i += 1;
    };
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[i])
}

/// Parses a whole percentage from 1 to 100, written `80` or `80%`.
pub fn parse_percent(s: &str) -> Result<u8, UnitError> {
    let trimmed = s.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim_end();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UnitError::InvalidPercent { input: s.into() });
    }
    // All digits, so a parse failure means the number is huge: out of range.
    match number.parse::<u8>() {
        Ok(p @ 1..=100) => Ok(p),
        _ => Err(UnitError::PercentOutOfRange { input: s.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);
    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn parses_single_unit_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(30 * SEC));
        assert_eq!(parse_duration("5m"), Ok(5 * MIN));
        assert_eq!(parse_duration("1h"), Ok(HOUR));
        assert_eq!(parse_duration("2d"), Ok(2 * DAY));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("007s"), Ok(7 * SEC));
    }

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse_duration("1h30m"), Ok(HOUR + 30 * MIN));
        assert_eq!(parse_duration("1m30s"), Ok(90 * SEC));
        assert_eq!(
            parse_duration("1d2h3m4s5ms"),
            Ok(DAY + 2 * HOUR + 3 * MIN + 4 * SEC + Duration::from_millis(5))
        );
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        // Whitespace around and between components is tolerated.
        assert_eq!(parse_duration(" 1h 30m "), Ok(HOUR + 30 * MIN));
        assert_eq!(parse_duration("30 s"), Ok(30 * SEC));
        // Order doesn't matter; repeats add up.
        assert_eq!(parse_duration("30s1m"), Ok(90 * SEC));
        assert_eq!(parse_duration("1m1m"), Ok(2 * MIN));
    }

    #[test]
    fn bare_numbers_need_a_unit() {
        let e = parse_duration("30").unwrap_err();
        assert_eq!(e, UnitError::MissingDurationUnit { input: "30".into() });
        assert_eq!(e.to_string(), "\"30\": add a unit: ms, s, m, h or d");
        assert_eq!(
            parse_duration("1h30"),
            Err(UnitError::MissingDurationUnit {
                input: "1h30".into()
            })
        );
        assert_eq!(
            parse_duration("0"),
            Err(UnitError::MissingDurationUnit { input: "0".into() })
        );
    }

    #[test]
    fn duration_errors() {
        let invalid = |s: &str| UnitError::InvalidDuration { input: s.into() };
        for s in [
            "", "   ", "s", "ms5", "-5s", "+5s", "1h-30m", "5s!", "1h,30m",
        ] {
            assert_eq!(parse_duration(s), Err(invalid(s)), "{s:?}");
        }
        assert_eq!(
            invalid("x").to_string(),
            "\"x\": expected a duration such as 500ms, 30s, 5m, 1h30m or 2d"
        );

        let e = parse_duration("5M").unwrap_err();
        assert_eq!(
            e,
            UnitError::UnknownDurationUnit {
                input: "5M".into(),
                unit: "M".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "\"5M\": unknown unit \"M\", expected ms, s, m, h or d"
        );
        for (s, unit) in [("5min", "min"), ("1w", "w"), ("3sec", "sec"), ("2µs", "µs")] {
            assert_eq!(
                parse_duration(s),
                Err(UnitError::UnknownDurationUnit {
                    input: s.into(),
                    unit: unit.into()
                })
            );
        }

        let e = parse_duration("1.5h").unwrap_err();
        assert_eq!(
            e,
            UnitError::FractionalDuration {
                input: "1.5h".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "\"1.5h\": fractions are not supported, combine units instead (e.g. 1h30m or 1s500ms)"
        );
    }

    #[test]
    fn duration_overflow() {
        let overflow = |s: &str| Err(UnitError::DurationOverflow { input: s.into() });
        let max = u64::MAX;
        assert_eq!(
            parse_duration(&format!("{max}s")),
            Ok(Duration::from_secs(max))
        );
        assert_eq!(
            parse_duration(&format!("{max}s1s")),
            overflow(&format!("{max}s1s"))
        );
        assert_eq!(
            parse_duration(&format!("{max}m")),
            overflow(&format!("{max}m"))
        );
        assert_eq!(
            parse_duration(&format!("{max}d")),
            overflow(&format!("{max}d"))
        );
        assert_eq!(
            parse_duration("99999999999999999999s"),
            overflow("99999999999999999999s")
        );
        assert_eq!(
            parse_duration("99999999999999999999s")
                .unwrap_err()
                .to_string(),
            "\"99999999999999999999s\": duration is too long"
        );
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(90 * SEC), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(HOUR + 30 * MIN), "1h30m");
        assert_eq!(format_duration(2 * DAY), "2d");
        assert_eq!(format_duration(DAY + SEC), "1d1s");
        assert_eq!(
            format_duration(Duration::from_nanos(1_001_001)),
            "1ms1us1ns"
        );
    }

    #[test]
    fn format_then_parse_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(1),
            Duration::from_millis(1500),
            Duration::from_nanos(123_456_789),
            90 * SEC,
            DAY + HOUR + MIN + SEC,
            Duration::MAX,
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        for s in ["500ms", "30s", "5m", "1h", "2d", "1h30m", "1m30s", "0s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn parses_sizes() {
        let cases: [(&str, u64); 18] = [
            ("0", 0),
            ("4096", 4096),
            ("4096B", 4096),
            ("200KiB", 200 * 1024),
            ("200MiB", 200 << 20),
            ("4GiB", 4 << 30),
            ("1TiB", 1 << 40),
            ("1KB", 1_000),
            ("5MB", 5_000_000),
            ("2GB", 2_000_000_000),
            ("3TB", 3_000_000_000_000),
            ("1.5GiB", 3 << 29),
            ("0.5KiB", 512),
            ("1.5B", 1),
            ("0.001KB", 1),
            ("0.0009KB", 0),
            (" 4 GiB ", 4 << 30),
            ("4.0 GiB", 4 << 30),
        ];
        for (s, bytes) in cases {
            assert_eq!(parse_size(s), Ok(bytes), "{s:?}");
        }
    }

    #[test]
    fn fractional_sizes_round_down_exactly() {
        // 1/3 KiB = 341.33 bytes
        assert_eq!(parse_size("0.333333333333KiB"), Ok(341));
        // 0.1 GiB = 107374182.4 bytes
        assert_eq!(parse_size("0.1GiB"), Ok(107_374_182));
        // 0.9999…9 TiB with many digits stays just under 1 TiB.
        let nines = format!("0.{}TiB", "9".repeat(40));
        assert_eq!(parse_size(&nines), Ok((1 << 40) - 1));
        assert_eq!(parse_size("1.999999999999B"), Ok(1));
        assert_eq!(parse_size("2.25MB"), Ok(2_250_000));
    }

    #[test]
    fn size_errors() {
        let invalid = |s: &str| Err(UnitError::InvalidSize { input: s.into() });
        for s in [
            "", " ", "GiB", "-1", "+1", ".5GiB", "5.GiB", "1.2.3", "1.5.GiB",
        ] {
            assert_eq!(parse_size(s), invalid(s), "{s:?}");
        }
        assert_eq!(
            parse_size("x").unwrap_err().to_string(),
            "\"x\": expected a size such as 4096, 512B, 200MiB, 1.5GiB or 4GB"
        );

        let unknown = |s: &str, unit: &str| {
            Err(UnitError::UnknownSizeUnit {
                input: s.into(),
                unit: unit.into(),
            })
        };
        assert_eq!(parse_size("4gib"), unknown("4gib", "gib"));
        assert_eq!(parse_size("4Gib"), unknown("4Gib", "Gib"));
        assert_eq!(parse_size("4kB"), unknown("4kB", "kB"));
        assert_eq!(parse_size("4G"), unknown("4G", "G"));
        assert_eq!(parse_size("1e3"), unknown("1e3", "e3"));
        assert_eq!(parse_size("1,5GiB"), unknown("1,5GiB", ",5GiB"));
        assert_eq!(parse_size("4 GiB x"), unknown("4 GiB x", "GiB x"));
        assert_eq!(
            parse_size("4G").unwrap_err().to_string(),
            "\"4G\": unknown unit \"G\", expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB \
             (case matters)"
        );
    }

    #[test]
    fn size_overflow() {
        let overflow = |s: &str| Err(UnitError::SizeOverflow { input: s.into() });
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_size("18446744073709551616"),
            overflow("18446744073709551616")
        );
        assert_eq!(parse_size("16777216TiB"), overflow("16777216TiB"));
        assert_eq!(parse_size("16777215.9999TiB").map(|b| b > 0), Ok(true));
        assert_eq!(parse_size("18446744073709551615.5B"), Ok(u64::MAX));
        assert_eq!(
            parse_size("18446744073709551.616KB"),
            overflow("18446744073709551.616KB")
        );
        assert_eq!(
            parse_size("99999999999999999999999TB")
                .unwrap_err()
                .to_string(),
            format!(
                "\"99999999999999999999999TB\": size is too large, the maximum is {} bytes",
                u64::MAX
            )
        );
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.0 KiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(200 << 20), "200.0 MiB");
        assert_eq!(format_size(4 << 30), "4.0 GiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(1 << 40), "1.0 TiB");
        // Just under a unit boundary rounds up into the next unit.
        assert_eq!(format_size((1 << 20) - 1), "1.0 MiB");
        assert_eq!(format_size(1_048_000), "1023.4 KiB");
        assert_eq!(format_size(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn formatted_sizes_parse_back_approximately() {
        for bytes in [0, 512, 1024, 4096, 200 << 20, 4 << 30, 3 << 29, 1 << 40] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
        }
    }

    #[test]
    fn parses_percentages() {
        assert_eq!(parse_percent("80"), Ok(80));
        assert_eq!(parse_percent("80%"), Ok(80));
        assert_eq!(parse_percent(" 80 % "), Ok(80));
        assert_eq!(parse_percent("1"), Ok(1));
        assert_eq!(parse_percent("100%"), Ok(100));
        assert_eq!(parse_percent("007"), Ok(7));
    }

    #[test]
    fn percent_errors() {
        let range = |s: &str| Err(UnitError::PercentOutOfRange { input: s.into() });
        for s in [
            "0",
            "0%",
            "101",
            "101%",
            "255",
            "256",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_percent(s), range(s), "{s:?}");
        }
        assert_eq!(
            parse_percent("0").unwrap_err().to_string(),
            "\"0\": percentage must be from 1 to 100"
        );
        let invalid = |s: &str| Err(UnitError::InvalidPercent { input: s.into() });
        for s in ["", "%", "-5", "+5", "12.5", "50%%", "%50", "half", "0x10"] {
            assert_eq!(parse_percent(s), invalid(s), "{s:?}");
        }
        assert_eq!(
            parse_percent("12.5%").unwrap_err().to_string(),
            "\"12.5%\": expected a whole percentage from 1 to 100, such as 80 or 80%"
        );
    }
}
