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

#[test]
fn rates_are_read_in_bits_and_print_back() {
    for (text, bits) in [
        ("64bit", 64),
        ("800kbit", 800_000),
        ("10mbit", 10_000_000),
        ("1gbit", 1_000_000_000),
    ] {
        assert_eq!(parse_rate(text), Ok(bits), "{text}");
        assert_eq!(parse_rate(&format_rate(bits)), Ok(bits));
    }
    assert_eq!(format_rate(1_500_000), "1500kbit");
    for bad in ["", "10", "10Mbit", "10mbps", "0kbit", "1.5mbit", "-1kbit"] {
        assert!(parse_rate(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn fractional_percentages_are_over_0_and_at_most_100() {
    assert_eq!(parse_fractional_percent("30"), Ok(30.0));
    assert_eq!(parse_fractional_percent("0.5%"), Ok(0.5));
    assert_eq!(parse_fractional_percent("100%"), Ok(100.0));
    for bad in ["", "0", "0%", "100.1", "-3", "1e2", "NaN", "inf", "3 %%"] {
        assert!(parse_fractional_percent(bad).is_err(), "{bad:?}");
    }
}
