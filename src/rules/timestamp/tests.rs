use super::*;

const UTC: NaiveTimezone = NaiveTimezone::UTC;

fn t(secs: i64, nanos: u32) -> UnixTime {
    UnixTime { secs, nanos }
}

fn secs_text(
    input: TimestampInput<'_>,
    tz: NaiveTimezone,
    unit: EpochUnit,
) -> Result<(String, TimestampFormat), TimestampError> {
    let p = convert_timestamp(input, tz, LeapSecond::NextMinute, unit)?;
    let mut out = Vec::new();
    write_unix_seconds(p.time, &mut out);
    Ok((String::from_utf8(out).unwrap(), p.format))
}

#[test]
fn string_inputs_to_seconds() {
    use TimestampFormat::*;
    let plus2 = NaiveTimezone::parse("+02:00").unwrap();
    let cases: &[(&str, NaiveTimezone, &str, TimestampFormat)] = &[
        // The incident string: naive ISO is UTC.
        (
            "2025-09-08T16:50:01.447585",
            UTC,
            "1757350201.447585",
            IsoNaive,
        ),
        (
            "2025-09-08T16:50:01.447585Z",
            UTC,
            "1757350201.447585",
            IsoZoned,
        ),
        (
            "2025-09-08t16:50:01.447585z",
            UTC,
            "1757350201.447585",
            IsoZoned,
        ),
        (
            "2025-09-08T16:50:01.447585+00:00",
            UTC,
            "1757350201.447585",
            IsoZoned,
        ),
        (
            "2025-09-08T09:50:01.447585-07:00",
            UTC,
            "1757350201.447585",
            IsoZoned,
        ),
        (
            "2025-09-08T09:50:01.447585-0700",
            UTC,
            "1757350201.447585",
            IsoZoned,
        ),
        (
            "2025-09-08T09:50:01.447585-07",
            UTC,
            "1757350201.447585",
            IsoZoned,
        ),
        ("2025-09-08T18:20:01+01:30", UTC, "1757350201.0", IsoZoned),
        (
            "2025-09-08 16:50:01.447585",
            UTC,
            "1757350201.447585",
            IsoNaive,
        ),
        ("2025-09-08T16:50:01", UTC, "1757350201.0", IsoNaive),
        ("2025-09-08T16:50:01.4", UTC, "1757350201.4", IsoNaive),
        ("2025-09-08T16:50:01.447", UTC, "1757350201.447", IsoNaive),
        (
            "2025-09-08T16:50:01.447585123",
            UTC,
            "1757350201.447585123",
            IsoNaive,
        ),
        (
            "2025-09-08T16:50:01.447585123999",
            UTC,
            "1757350201.447585123",
            IsoNaive,
        ),
        ("2025-09-08T16:50:01.000000", UTC, "1757350201.0", IsoNaive),
        (
            "2025-09-08T18:50:01.447585",
            plus2,
            "1757350201.447585",
            IsoNaive,
        ),
        (
            "2025-09-08T16:50:01.447585Z",
            plus2,
            "1757350201.447585",
            IsoZoned,
        ),
        ("1970-01-01T00:00:00Z", UTC, "0.0", IsoZoned),
        ("1969-12-31T23:59:59.5Z", UTC, "-0.5", IsoZoned),
        ("1960-01-01T00:00:00Z", UTC, "-315619200.0", IsoZoned),
        ("0001-01-01T00:00:00Z", UTC, "-62135596800.0", IsoZoned),
        ("2016-12-31T23:59:60Z", UTC, "1483228800.0", IsoZoned),
        ("2025-09-08T16:50:60", UTC, "1757350260.0", IsoNaive),
        (
            "2025-09-08T16:50:60.25+02:00",
            UTC,
            "1757343060.25",
            IsoZoned,
        ),
        // numeric strings
        ("1757350201.447585", UTC, "1757350201.447585", NumericString),
        ("1757350201447", UTC, "1757350201.447", NumericString),
        ("1757350201", UTC, "1757350201.0", NumericString),
        ("+1757350201.5", UTC, "1757350201.5", NumericString),
        (".5", UTC, "0.5", NumericString),
        ("5.", UTC, "5.0", NumericString),
        ("1.7573502014e9", UTC, "1757350201.4", NumericString),
        ("-1.5", UTC, "-1.5", NumericString),
    ];
    for (input, tz, want, fmt) in cases {
        let got = secs_text(TimestampInput::Str(input), *tz, EpochUnit::Auto)
            .unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(got, (want.to_string(), *fmt), "{input}");
    }
}

#[test]
fn invalid_strings() {
    use TimestampError::*;
    let cases: &[(&str, TimestampError)] = &[
        ("", Unparseable),
        ("not a date", Unparseable),
        ("2025-09-08", Unparseable),
        ("2025-09-08T16:50", Unparseable),
        ("2025-09-08T16:50:01.", Unparseable),
        ("2025-09-08T16:50:01.447585 ", Unparseable),
        (" 2025-09-08T16:50:01", Unparseable),
        ("2025-09-08X16:50:01", Unparseable),
        ("2025-09-08T16:50:01+2", Unparseable),
        ("2025-09-08T16:50:01+02:0", Unparseable),
        ("2025-09-08T16:50:01Zjunk", Unparseable),
        ("2025/09/08T16:50:01", Unparseable),
        ("2025-13-08T16:50:01", InvalidDate),
        ("2025-02-30T16:50:01", InvalidDate),
        ("2025-09-08T24:00:00", InvalidDate),
        ("2025-09-08T16:60:00", InvalidDate),
        ("2025-09-08T16:50:61", InvalidDate),
        // Python's datetime.fromisoformat refuses second 60 in any minute.
        ("2025-09-08T16:50:60", LeapSecond),
        ("2016-12-31T23:59:60Z", LeapSecond),
        ("2025-09-08T16:50:60.447585+02:00", LeapSecond),
        ("2025-09-08T24:50:60", InvalidDate),
        ("2025-09-08T16:50:01+24:00", InvalidDate),
        ("2025-09-08T16:50:01+02:60", InvalidDate),
        ("1e400", OutOfRange),
        ("99999999999999999999999999999999999", OutOfRange),
        ("-", Unparseable),
        ("1e", Unparseable),
        (".", Unparseable),
        ("0x10", Unparseable),
        ("inf", Unparseable),
        ("NaN", Unparseable),
        ("１２", Unparseable),
    ];
    for (input, want) in cases {
        let got = convert_timestamp(
            TimestampInput::Str(input),
            UTC,
            super::LeapSecond::Reject,
            EpochUnit::Auto,
        );
        assert_eq!(got, Err(*want), "{input:?}");
    }
}

#[test]
fn numbers_by_magnitude_and_unit() {
    use EpochUnit::*;
    use TimestampFormat as F;
    let cases: &[(&str, EpochUnit, &str, TimestampFormat)] = &[
        ("1757350201", Auto, "1757350201.0", F::Seconds),
        ("1757350201.447585", Auto, "1757350201.447585", F::Seconds),
        ("1757350201447", Auto, "1757350201.447", F::Millis),
        ("1757350201447.5", Auto, "1757350201.4475", F::Millis),
        ("1757350201447585", Auto, "1757350201.447585", F::Micros),
        (
            "1757350201447585123",
            Auto,
            "1757350201.447585123",
            F::Nanos,
        ),
        ("1.757350201447585e9", Auto, "1757350201.447585", F::Seconds),
        ("1.757350201447E12", Auto, "1757350201.447", F::Millis),
        (
            "17573502014475850e-7",
            Auto,
            "1757350201.447585",
            F::Seconds,
        ),
        ("99999999999", Auto, "99999999999.0", F::Seconds),
        ("100000000000", Auto, "100000000.0", F::Millis),
        ("99999999999999", Auto, "99999999999.999", F::Millis),
        ("100000000000000", Auto, "100000000.0", F::Micros),
        ("100000000000000000", Auto, "100000000.0", F::Nanos),
        ("0", Auto, "0.0", F::Seconds),
        ("-0", Auto, "0.0", F::Seconds),
        ("0.0000000001", Auto, "0.0", F::Seconds),
        ("-0.0000000001", Auto, "-0.000000001", F::Seconds),
        ("-1", Auto, "-1.0", F::Seconds),
        ("-1.5", Auto, "-1.5", F::Seconds),
        ("-1.9999999999", Auto, "-2.0", F::Seconds),
        ("-1.0000000001", Auto, "-1.000000001", F::Seconds),
        ("-1.999999999", Auto, "-1.999999999", F::Seconds),
        (
            "12345678901234567890",
            Auto,
            "12345678901.23456789",
            F::Nanos,
        ),
        ("1e18", Auto, "1000000000.0", F::Nanos),
        ("1e11", Seconds, "100000000000.0", F::Seconds),
        ("-8e12", Seconds, "-8000000000000.0", F::Seconds),
        ("-315619200", Auto, "-315619200.0", F::Seconds),
        ("-315619200000", Auto, "-315619200.0", F::Millis),
        ("1757350201447", Seconds, "1757350201447.0", F::Seconds),
        ("1757350201", Millis, "1757350.201", F::Millis),
        ("1757350201", Micros, "1757.350201", F::Micros),
        ("1757350201", Nanos, "1.757350201", F::Nanos),
        ("1.5e-9", Seconds, "0.000000001", F::Seconds),
        (
            "0.0000000000000000000000000000000000000000000000001e49",
            Auto,
            "1.0",
            F::Seconds,
        ),
        ("1e-99999999999999999999999", Auto, "0.0", F::Seconds),
    ];
    for (input, unit, want, fmt) in cases {
        let got = secs_text(TimestampInput::Number(input), UTC, *unit)
            .unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(got, (want.to_string(), *fmt), "{input} {unit:?}");
    }
    for bad in [
        "1e99999999999999999999999",
        "123456789012345678901234567890",
        "9e30",
    ] {
        assert_eq!(
            convert_timestamp(TimestampInput::Number(bad), UTC, LeapSecond::Reject, Auto),
            Err(TimestampError::OutOfRange),
            "{bad}"
        );
    }
    for bad in ["9e12", "-9e12", "1e19", "-99999999999999999999"] {
        assert_eq!(
            convert_timestamp(
                TimestampInput::Number(bad),
                UTC,
                LeapSecond::Reject,
                Seconds
            ),
            Err(TimestampError::OutOfRange),
            "{bad}"
        );
    }
}

#[test]
fn hostile_lengths_are_linear() {
    let long = format!("0.{}1", "0".repeat(1_000_000));
    assert_eq!(parse_epoch(&long, EpochUnit::Auto).unwrap().0, t(0, 0));
    let long = format!("1.{}", "9".repeat(1_000_000));
    assert_eq!(
        parse_epoch(&long, EpochUnit::Seconds).unwrap().0,
        t(1, 999_999_999)
    );
    let frac = format!("2025-09-08T16:50:01.{}Z", "1".repeat(1_000_000));
    assert_eq!(
        parse_iso(&frac, UTC, LeapSecond::Reject).unwrap().0,
        t(1757350201, 111_111_111)
    );
}

#[test]
fn output_forms() {
    let cases: &[(UnixTime, &str, &str, &str)] = &[
        (
            t(1757350201, 447_585_000),
            "1757350201.447585",
            "1757350201447",
            "\"2025-09-08T16:50:01.447585Z\"",
        ),
        (
            t(1757350201, 0),
            "1757350201.0",
            "1757350201000",
            "\"2025-09-08T16:50:01Z\"",
        ),
        (
            t(1757350201, 400_000_000),
            "1757350201.4",
            "1757350201400",
            "\"2025-09-08T16:50:01.400Z\"",
        ),
        (
            t(1757350201, 1),
            "1757350201.000000001",
            "1757350201000",
            "\"2025-09-08T16:50:01.000000001Z\"",
        ),
        (t(0, 0), "0.0", "0", "\"1970-01-01T00:00:00Z\""),
        (t(-1, 0), "-1.0", "-1000", "\"1969-12-31T23:59:59Z\""),
        (
            t(-1, 500_000_000),
            "-0.5",
            "-500",
            "\"1969-12-31T23:59:59.500Z\"",
        ),
        (
            t(-2, 999_999_999),
            "-1.000000001",
            "-1001",
            "\"1969-12-31T23:59:58.999999999Z\"",
        ),
    ];
    for (time, secs, millis, rfc) in cases {
        for (output, want) in [
            (OutputFormat::UnixSeconds, secs),
            (OutputFormat::UnixMillis, millis),
            (OutputFormat::Rfc3339, rfc),
        ] {
            let mut out = Vec::new();
            format_timestamp(*time, output, &mut out).unwrap();
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                *want,
                "{time:?} {output:?}"
            );
        }
    }
    // Not representable as RFC 3339.
    let far = parse_epoch("253402300800", EpochUnit::Seconds).unwrap().0; // year 10000
    assert_eq!(
        write_rfc3339(far, &mut Vec::new()),
        Err(TimestampError::NotRfc3339)
    );
    // Unnormalized input never panics.
    let mut out = Vec::new();
    write_unix_seconds(t(1, 2_500_000_000), &mut out);
    assert_eq!(out, b"3.5");
    let mut out = Vec::new();
    write_unix_seconds(t(i64::MIN, 0), &mut out);
    assert_eq!(out, b"-9223372036854775808.0");
    assert_eq!(
        write_rfc3339(t(i64::MAX, 999_999_999), &mut Vec::new()),
        Err(TimestampError::OutOfRange)
    );
}

#[test]
fn rfc3339_output_reparses_to_itself() {
    for s in [
        "2025-09-08T16:50:01.447585Z",
        "2025-09-08T16:50:01Z",
        "2025-09-08T16:50:01.400Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
    ] {
        let (time, zoned) = parse_iso(s, UTC, LeapSecond::Reject).unwrap();
        assert!(zoned);
        let mut out = Vec::new();
        write_rfc3339(time, &mut out).unwrap();
        assert_eq!(out, format!("\"{s}\"").into_bytes());
    }
}
