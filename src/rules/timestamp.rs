//! Timestamp parsing and formatting, with exact arithmetic.
//!
//! * ISO-8601 / RFC 3339 strings are scanned by hand for their fields, then handed to
//!   chrono (`NaiveDate`, `NaiveDateTime`, `FixedOffset`) for validation and calendar
//!   math. Accepted: `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction][zone]` where the fraction has
//!   any number (>= 1) of digits (digits after the 9th are truncated), and the zone is
//!   `Z`, `z`, `±hh:mm`, `±hhmm` or `±hh`. Without a zone the string is read in the
//!   rule's `naive_timezone`. Second 60 (`:60`) is invalid, as for Python's
//!   `datetime.fromisoformat`, unless the rule's `leap_second = "next_minute"` reads it as the
//!   first instant of the next minute.
//! * Numbers (JSON numbers and numeric strings) are converted by exact decimal
//!   arithmetic on their digit text (no `f64` anywhere): `1757350201.447585` seconds is
//!   exactly 1757350201 s + 447585000 ns. Digits below one nanosecond are truncated toward
//!   negative infinity. Numeric strings may carry a leading `+`, may omit the digits on
//!   one side of the dot (`.5`, `5.`) and may have an exponent; no whitespace, no
//!   `inf`/`nan`.
//! * With [`EpochUnit::Auto`] a number's unit is chosen by magnitude: |v| < 1e11 seconds,
//!   < 1e14 milliseconds, < 1e17 microseconds, otherwise nanoseconds.
//! * Valid instants are those chrono can represent (about ±262,000 years); `rfc3339`
//!   output additionally needs a year in 0000..=9999.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, SecondsFormat, TimeDelta};

use super::config::{EpochUnit, LeapSecond, NaiveTimezone, OutputFormat};
use super::{TimestampFormat, UnixTime};

/// A timestamp value to convert: the unescaped content of a JSON string, or the text
/// of a JSON number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampInput<'a> {
    Str(&'a str),
    Number(&'a str),
}

/// The result of reading a timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedTimestamp {
    /// The instant (normalized: `0 <= nanos < 1e9`).
    pub time: UnixTime,
    /// How it was written.
    pub format: TimestampFormat,
}

/// Why a value is not a usable timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("not an ISO-8601 / RFC 3339 date-time or a Unix epoch number")]
    Unparseable,
    #[error("the date or time fields are out of range (e.g. month 13, day 31 of a 30-day month, hour 24)")]
    InvalidDate,
    #[error("second 60 (a leap second) is not accepted (leap_second = \"reject\")")]
    LeapSecond,
    #[error("the instant is outside the supported range")]
    OutOfRange,
    #[error("the instant cannot be written as RFC 3339 (year outside 0000-9999)")]
    NotRfc3339,
}

/// Read a timestamp: an ISO string, a numeric string or a JSON number.
///
/// `naive_tz` applies to zone-less ISO strings, `leap` to their second 60, `unit` to numbers and
/// numeric strings.
/// The detected format is [`TimestampFormat::IsoNaive`], [`TimestampFormat::IsoZoned`],
/// [`TimestampFormat::NumericString`] for strings, and the (resolved) unit
/// ([`TimestampFormat::Seconds`] ... [`TimestampFormat::Nanos`]) for JSON numbers.
pub fn convert_timestamp(
    input: TimestampInput<'_>,
    naive_tz: NaiveTimezone,
    leap: LeapSecond,
    unit: EpochUnit,
) -> Result<ParsedTimestamp, TimestampError> {
    match input {
        TimestampInput::Number(text) => {
            let (time, unit) = parse_epoch(text, unit)?;
            Ok(ParsedTimestamp {
                time,
                format: unit_format(unit),
            })
        }
        TimestampInput::Str(s) => {
            if let Some(dec) = parse_decimal(s.as_bytes()) {
                let (time, _) = decimal_to_time(&dec, unit)?;
                return Ok(ParsedTimestamp {
                    time,
                    format: TimestampFormat::NumericString,
                });
            }
            let (time, zoned) = parse_iso(s, naive_tz, leap)?;
            Ok(ParsedTimestamp {
                time,
                format: if zoned {
                    TimestampFormat::IsoZoned
                } else {
                    TimestampFormat::IsoNaive
                },
            })
        }
    }
}

fn unit_format(unit: EpochUnit) -> TimestampFormat {
    match unit {
        EpochUnit::Seconds | EpochUnit::Auto => TimestampFormat::Seconds,
        EpochUnit::Millis => TimestampFormat::Millis,
        EpochUnit::Micros => TimestampFormat::Micros,
        EpochUnit::Nanos => TimestampFormat::Nanos,
    }
}

/// Read a number (JSON number syntax, or the more lenient numeric-string syntax) as an
/// epoch value. Returns the instant and the unit used (never `Auto`).
pub fn parse_epoch(text: &str, unit: EpochUnit) -> Result<(UnixTime, EpochUnit), TimestampError> {
    let dec = parse_decimal(text.as_bytes()).ok_or(TimestampError::Unparseable)?;
    decimal_to_time(&dec, unit)
}

/// Read an ISO-8601 / RFC 3339 date-time. Returns the instant and whether the string
/// carried a zone.
pub fn parse_iso(
    s: &str,
    naive_tz: NaiveTimezone,
    leap: LeapSecond,
) -> Result<(UnixTime, bool), TimestampError> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return Err(TimestampError::Unparseable);
    }
    let bad = TimestampError::Unparseable;
    let year = digits(b, 0, 4).ok_or(bad)?;
    let month = digits(b, 5, 2).ok_or(bad)?;
    let day = digits(b, 8, 2).ok_or(bad)?;
    let hour = digits(b, 11, 2).ok_or(bad)?;
    let minute = digits(b, 14, 2).ok_or(bad)?;
    let second = digits(b, 17, 2).ok_or(bad)?;
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad);
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(d - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return Err(bad);
        }
        if n < 9 {
            nanos *= 10u32.pow((9 - n) as u32);
        }
    }
    let (offset_secs, zoned) = match b.get(i) {
        None => (naive_tz.offset_secs(), false),
        Some(b'Z' | b'z') if i + 1 == b.len() => (0, true),
        Some(&sign @ (b'+' | b'-')) => {
            let rest = &b[i + 1..];
            let (hh, mm) = match rest.len() {
                2 => (digits(rest, 0, 2), Some(0)),
                4 => (digits(rest, 0, 2), digits(rest, 2, 2)),
                5 if rest[2] == b':' => (digits(rest, 0, 2), digits(rest, 3, 2)),
                _ => (None, None),
            };
            let (hh, mm) = (hh.ok_or(bad)?, mm.ok_or(bad)?);
            if hh > 23 || mm > 59 {
                return Err(TimestampError::InvalidDate);
            }
            let secs = (hh * 3600 + mm * 60) as i32;
            (if sign == b'-' { -secs } else { secs }, true)
        }
        Some(_) => return Err(bad),
    };
    let date =
        NaiveDate::from_ymd_opt(year as i32, month, day).ok_or(TimestampError::InvalidDate)?;
    let leap_second = second == 60;
    let time =
        NaiveTime::from_hms_nano_opt(hour, minute, if leap_second { 59 } else { second }, nanos)
            .ok_or(TimestampError::InvalidDate)?;
    let mut local = date.and_time(time);
    if leap_second {
        if leap == LeapSecond::Reject {
            return Err(TimestampError::LeapSecond);
        }
        local = local
            .checked_add_signed(TimeDelta::seconds(1))
            .ok_or(TimestampError::OutOfRange)?;
    }
    let offset = FixedOffset::east_opt(offset_secs).ok_or(TimestampError::InvalidDate)?;
    let instant = local
        .and_local_timezone(offset)
        .single()
        .ok_or(TimestampError::OutOfRange)?;
    Ok((
        UnixTime {
            secs: instant.timestamp(),
            nanos: instant.timestamp_subsec_nanos(),
        },
        zoned,
    ))
}

/// `len` ASCII digits at `b[at..at+len]` as a number.
#[inline]
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let mut v = 0u32;
    for &c in b.get(at..at + len)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// A decimal number as written: sign, integer digits, fraction digits, exponent.
struct Decimal<'a> {
    neg: bool,
    int: &'a [u8],
    frac: &'a [u8],
    exp: i64,
}

/// Cap for exponents: far beyond anything representable, far from i64 overflow.
const EXP_CAP: i64 = 1_000_000_000_000;

/// `[+-]? digits* ('.' digits*)? ([eE] [+-]? digits+)?` with at least one mantissa digit.
/// (A superset of JSON's number grammar.)
fn parse_decimal(b: &[u8]) -> Option<Decimal<'_>> {
    let mut i = 0;
    let neg = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let int = &b[start..i];
    let mut frac: &[u8] = &[];
    if b.get(i) == Some(&b'.') {
        i += 1;
        let s = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        frac = &b[s..i];
    }
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut exp: i64 = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let eneg = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let s = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            exp = (exp * 10 + i64::from(d - b'0')).min(EXP_CAP);
            i += 1;
        }
        if i == s {
            return None;
        }
        if eneg {
            exp = -exp;
        }
    }
    if i != b.len() {
        return None;
    }
    Some(Decimal {
        neg,
        int,
        frac,
        exp,
    })
}

/// Exact conversion of a decimal epoch value to an instant.
fn decimal_to_time(
    d: &Decimal<'_>,
    unit: EpochUnit,
) -> Result<(UnixTime, EpochUnit), TimestampError> {
    let all = || d.int.iter().chain(d.frac.iter()).copied();
    let total_len = d.int.len() + d.frac.len();
    let lead = all().take_while(|&c| c == b'0').count();
    let nd = (total_len - lead) as i64; // significant digits
                                        // value = D * 10^e10 where D is the significant digit string.
    let e10 = d.exp.saturating_sub(d.frac.len() as i64).max(-EXP_CAP);
    let unit = match unit {
        EpochUnit::Auto => {
            // Number of integer digits of |value| (<= 0 for |value| < 1).
            let int_digits = if nd == 0 { 0 } else { nd.saturating_add(e10) };
            match int_digits {
                i64::MIN..=11 => EpochUnit::Seconds,
                12..=14 => EpochUnit::Millis,
                15..=17 => EpochUnit::Micros,
                _ => EpochUnit::Nanos,
            }
        }
        u => u,
    };
    if nd == 0 {
        return Ok((UnixTime { secs: 0, nanos: 0 }, unit));
    }
    let unit_pow: i64 = match unit {
        EpochUnit::Seconds | EpochUnit::Auto => 0,
        EpochUnit::Millis => 3,
        EpochUnit::Micros => 6,
        EpochUnit::Nanos => 9,
    };
    // |seconds| = D * 10^p. Significant digit k (0-based) has weight 10^(nd-1-k+p):
    // digits with weight >= 1 form whole seconds, the next 9 form nanoseconds, the rest
    // are dropped (rounding toward negative infinity below).
    let p = e10 - unit_pow;
    let int_digits = nd + p;
    if int_digits > 18 {
        return Err(TimestampError::OutOfRange);
    }
    let mut secs: u64 = 0;
    let mut nanos: u32 = 0;
    let mut dropped_nonzero = false;
    for (k, c) in all().skip(lead).enumerate() {
        let v = c - b'0';
        let k = k as i64;
        if k < int_digits {
            secs = secs * 10 + u64::from(v);
        } else {
            let frac_pos = k - int_digits; // 0 = tenths
            if frac_pos < 9 {
                nanos += u32::from(v) * POW10[(8 - frac_pos) as usize];
            } else if v != 0 {
                dropped_nonzero = true;
                break;
            }
        }
    }
    if int_digits > nd {
        // whole seconds with trailing zeros implied by the exponent (< 10^18)
        secs *= 10u64.pow((int_digits - nd) as u32);
    }
    let secs = i64::try_from(secs).map_err(|_| TimestampError::OutOfRange)?;
    let time = if !d.neg {
        UnixTime { secs, nanos }
    } else if nanos == 0 && !dropped_nonzero {
        UnixTime {
            secs: -secs,
            nanos: 0,
        }
    } else {
        // floor: -(S + F) with 0 < F < 1 is (-S - 1) + (1 - F); F rounded up to whole ns
        let up = nanos + u32::from(dropped_nonzero); // <= 1e9
        UnixTime {
            secs: -secs - 1,
            nanos: (1_000_000_000 - up) % 1_000_000_000,
        }
    };
    check_range(time)?;
    Ok((time, unit))
}

const POW10: [u32; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Chrono's representable range, in whole seconds.
const MIN_SECS: i64 = DateTime::<chrono::Utc>::MIN_UTC.timestamp();
const MAX_SECS: i64 = DateTime::<chrono::Utc>::MAX_UTC.timestamp();

fn check_range(t: UnixTime) -> Result<(), TimestampError> {
    if (MIN_SECS..=MAX_SECS).contains(&t.secs) {
        Ok(())
    } else {
        Err(TimestampError::OutOfRange)
    }
}

/// Where formatted timestamps are written (a `Vec<u8>`, or the engine's inline buffer).
pub trait ByteSink {
    fn put(&mut self, bytes: &[u8]);
}

impl ByteSink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Write `t` in the given output form (a JSON number, or a JSON string for rfc3339).
pub fn format_timestamp(
    t: UnixTime,
    output: OutputFormat,
    out: &mut impl ByteSink,
) -> Result<(), TimestampError> {
    match output {
        OutputFormat::UnixSeconds => {
            write_unix_seconds(t, out);
            Ok(())
        }
        OutputFormat::UnixMillis => {
            write_unix_millis(t, out);
            Ok(())
        }
        OutputFormat::Rfc3339 => write_rfc3339(t, out),
    }
}

/// Seconds as a JSON number with a fraction: `1757350201.447585`, `1757350201.0`,
/// `-1.5`. Up to 9 fraction digits, trailing zeros trimmed, at least one digit.
pub fn write_unix_seconds(t: UnixTime, out: &mut impl ByteSink) {
    let t = t.normalized();
    let (neg, int, frac) = if t.secs < 0 && t.nanos > 0 {
        // e.g. secs -2, nanos 5e8 = -1.5
        (true, (t.secs + 1).unsigned_abs(), 1_000_000_000 - t.nanos)
    } else {
        (t.secs < 0, t.secs.unsigned_abs(), t.nanos)
    };
    let mut int_digits = itoa::Buffer::new();
    let mut frac_digits = itoa::Buffer::new();
    // A leading 1 makes the fraction nine digits with its zeros kept: 447585000 -> "1447585000".
    let frac = frac_digits.format(1_000_000_000 + frac).as_bytes();
    // Trailing zeros trimmed, at least one digit kept.
    let last = frac.iter().rposition(|&c| c != b'0').unwrap_or(0).max(1);
    let parts: [&[u8]; 4] = [
        if neg { b"-" } else { b"" },
        int_digits.format(int).as_bytes(),
        b".",
        frac.get(1..=last).unwrap_or(b"0"),
    ];
    // Assembled first: one `put` is cheaper than four.
    let mut text = [0u8; 32];
    let mut len = 0;
    for part in parts {
        if let Some(dst) = text.get_mut(len..len + part.len()) {
            dst.copy_from_slice(part);
            len += part.len();
        }
    }
    out.put(&text[..len]);
}

/// Integer milliseconds as a JSON number, truncated toward negative infinity.
pub fn write_unix_millis(t: UnixTime, out: &mut impl ByteSink) {
    let t = t.normalized();
    let ms = i128::from(t.secs) * 1000 + i128::from(t.nanos / 1_000_000);
    if ms < 0 {
        out.put(b"-");
    }
    out.put(itoa::Buffer::new().format(ms.unsigned_abs()).as_bytes());
}

/// RFC 3339 in UTC as a JSON string: `"2025-09-08T16:50:01.447585Z"` (fraction in groups
/// of 3 digits, only as long as needed: chrono's `SecondsFormat::AutoSi`).
pub fn write_rfc3339(t: UnixTime, out: &mut impl ByteSink) -> Result<(), TimestampError> {
    let t = t.normalized();
    let dt = DateTime::from_timestamp(t.secs, t.nanos).ok_or(TimestampError::OutOfRange)?;
    if !(0..=9999).contains(&dt.year()) {
        return Err(TimestampError::NotRfc3339);
    }
    out.put(b"\"");
    out.put(dt.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
    out.put(b"\"");
    Ok(())
}

#[cfg(test)]
mod tests;
