//! Flag value syntax shared by every component: upstream flags are Go `pflag`s, so booleans and
//! durations use Go's spellings.

use std::time::Duration;

/// strconv.ParseBool, which pflag uses for bool flags.
pub fn parse_go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {value:?}")),
    }
}

/// A duration flag: Go syntax; negative values are refused here because `std::time::Duration`
/// cannot hold them (upstream refuses them later, in validation, with the same meaning).
pub fn parse_duration_flag(value: &str) -> Result<Duration, String> {
    let nanos = parse_go_duration(value).map_err(|e| e.to_string())?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| format!("must be greater than zero, got {value:?}"))
}

/// Why a Go duration string was refused; the messages are Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoDurationError {
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("time: unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
}

/// Go's `time.ParseDuration` (src/time/format.go), returning signed nanoseconds: a possibly
/// signed sequence of decimal numbers, each with an optional fraction and a unit suffix
/// (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`), such as "300ms", "-1.5h" or "2h45m"; "0" alone
/// needs no unit.
///
/// Hand-written because no crate checked has Go's exact behaviour: `go-parse-duration` panics on
/// "µs" (mixes char and byte indices) and misplaces its overflow bound (`1 << 63 - 1` is `1 << 62`
/// in Rust); `go-duration` rejects "0"; kube-core's `Duration` accepts "" and lets `f64`
/// arithmetic round the total. This follows Go's algorithm step by step, including the `f64`
/// fraction and the overflow checks.
pub fn parse_go_duration(input: &str) -> Result<i64, GoDurationError> {
    const NANOS_LIMIT: u64 = 1 << 63;
    let invalid = || GoDurationError::Invalid(input.to_owned());

    let mut s = input.as_bytes();
    let mut total: u64 = 0;
    let mut negative = false;
    if let Some(&sign @ (b'-' | b'+')) = s.first() {
        negative = sign == b'-';
        s = &s[1..];
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part: [0-9]*
        let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut value: u64 = 0;
        for &c in &s[..digits] {
            if value > NANOS_LIMIT / 10 {
                return Err(invalid());
            }
            value = value * 10 + u64::from(c - b'0');
            if value > NANOS_LIMIT {
                return Err(invalid());
            }
        }
        s = &s[digits..];
        let pre = digits > 0;

        // The fraction: (\.[0-9]*)? — it only loses precision on overflow, never fails.
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
            let mut overflow = false;
            for &c in &s[..digits] {
                if overflow {
                    continue;
                }
                if fraction > (NANOS_LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let next = fraction * 10 + u64::from(c - b'0');
                if next > NANOS_LIMIT {
                    overflow = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            s = &s[digits..];
            post = digits > 0;
        }
        if !pre && !post {
            return Err(invalid());
        }

        // The unit: everything up to the next digit or '.'.
        let unit_len = s
            .iter()
            .take_while(|&&c| c != b'.' && !c.is_ascii_digit())
            .count();
        if unit_len == 0 {
            return Err(GoDurationError::MissingUnit(input.to_owned()));
        }
        let unit_bytes = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u64 = match unit_bytes {
            b"ns" => 1,
            b"us" => 1_000,
            // U+00B5 micro sign and U+03BC Greek small letter mu, both accepted by Go.
            b"\xC2\xB5s" | b"\xCE\xBCs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => {
                return Err(GoDurationError::UnknownUnit {
                    unit: String::from_utf8_lossy(unit_bytes).into_owned(),
                    input: input.to_owned(),
                });
            }
        };
        if value > NANOS_LIMIT / unit {
            return Err(invalid());
        }
        value *= unit;
        if fraction > 0 {
            // As Go: f64 keeps nanosecond accuracy for fractions of hours; `as` truncates.
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > NANOS_LIMIT {
                return Err(invalid());
            }
        }
        total += value;
        if total > NANOS_LIMIT {
            return Err(invalid());
        }
    }
    if negative {
        // 1<<63 negated is exactly i64::MIN, which wrapping_neg yields.
        return Ok((total as i64).wrapping_neg());
    }
    i64::try_from(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bool_spellings_parse_and_others_are_refused() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false));
        }
        assert!(parse_go_bool("yes").is_err());
    }

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        // Cases from Go's src/time/time_test.go parseDurationTests.
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5_000_000_000),
            ("30s", 30_000_000_000),
            ("1478s", 1_478_000_000_000),
            ("-5s", -5_000_000_000),
            ("+5s", 5_000_000_000),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5_000_000_000),
            ("5.6s", 5_600_000_000),
            ("5.s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.0s", 1_000_000_000),
            ("1.00s", 1_000_000_000),
            ("1.004s", 1_004_000_000),
            ("1.0040s", 1_004_000_000),
            ("100.00100s", 100_001_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14_000_000_000),
            ("15m", 900_000_000_000),
            ("16h", 57_600_000_000_000),
            ("3h30m", 12_600_000_000_000),
            ("10.5s4m", 250_500_000_000),
            ("-2m3.4s", -123_400_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 1_200_000_000_000),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 360_000_000_000),
            ("0.830103483285477580700h", 2_988_372_539_827),
            ("1m30s", 90_000_000_000),
            ("500ms", 500_000_000),
        ];
        for &(input, nanos) in cases {
            assert_eq!(parse_go_duration(input), Ok(nanos), "{input}");
        }
    }

    #[test]
    fn go_durations_refuse_what_go_refuses() {
        for input in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "1 s",
            " 1s",
            "1s ",
            "1.5.5s",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036s854ms775us808ns",
            "-9223372036854775809ns",
        ] {
            assert!(parse_go_duration(input).is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn go_duration_errors_read_like_go() {
        assert_eq!(
            parse_go_duration("").unwrap_err().to_string(),
            "time: invalid duration \"\""
        );
        assert_eq!(
            parse_go_duration("3").unwrap_err().to_string(),
            "time: missing unit in duration \"3\""
        );
        assert_eq!(
            parse_go_duration("1d").unwrap_err().to_string(),
            "time: unknown unit \"d\" in duration \"1d\""
        );
    }
}
