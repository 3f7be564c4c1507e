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
    /// The rate is not a number followed by bit, kbit, mbit or gbit.
    #[error("{input:?}: expected a rate such as 800kbit, 10mbit or 1gbit")]
    InvalidRate {
        /// The text as written.
        input: String,
    },
    /// The percentage is not a number over 0 and at most 100 (with an optional `%`).
    #[error("{input:?}: expected a percentage over 0 and at most 100, such as 30%, or 0.5%")]
    InvalidFractionalPercent {
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

/// Parses a rate in bits per second as tc writes it: `800kbit`, `10mbit`, `1gbit`, `64bit`
/// (SI multiples, case-sensitive).
pub fn parse_rate(s: &str) -> Result<u64, UnitError> {
    let invalid = || UnitError::InvalidRate { input: s.into() };
    let trimmed = s.trim();
    let digits = trimmed.len()
        - trimmed
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .len();
    let (number, unit) = trimmed.split_at(digits);
    let multiplier: u64 = match unit.trim_start() {
        "bit" => 1,
        "kbit" => 1_000,
        "mbit" => 1_000_000,
        "gbit" => 1_000_000_000,
        _ => return Err(invalid()),
    };
    let number: u64 = number.parse().map_err(|_| invalid())?;
    number
        .checked_mul(multiplier)
        .filter(|bits| *bits > 0)
        .ok_or_else(invalid)
}

/// Formats bits per second the way [`parse_rate`] reads them: `10mbit`, `1500kbit`.
pub fn format_rate(bits: u64) -> String {
    for (multiplier, unit) in [
        (1_000_000_000, "gbit"),
        (1_000_000, "mbit"),
        (1_000, "kbit"),
    ] {
        if bits >= multiplier && bits % multiplier == 0 {
            return format!("{}{unit}", bits / multiplier);
        }
    }
    format!("{bits}bit")
}

/// Parses a percentage over 0 and at most 100 that may have a fraction: `30`, `30%`, `0.5%`.
pub fn parse_fractional_percent(s: &str) -> Result<f64, UnitError> {
    let trimmed = s.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim_end();
    let plain = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    match number.parse::<f64>() {
        Ok(value) if plain && value > 0.0 && value <= 100.0 => Ok(value),
        _ => Err(UnitError::InvalidFractionalPercent { input: s.into() }),
    }
}

#[cfg(test)]
mod tests;
