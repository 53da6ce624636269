//! Cron schedules exactly as kube-controller-manager reads them: robfig/cron v3 `ParseStandard`
//! (five fields, names, ranges, steps, lists, `?`, the `@yearly`…`@hourly` descriptors, `@every
//! <duration>`, an optional `TZ=`/`CRON_TZ=` prefix) and robfig's `SpecSchedule.Next`
//! (github.com/robfig/cron/v3 spec.go), including how it walks across daylight-saving changes.
//!
//! Why not `croner`: Kubernetes' behaviour *is* robfig's — a star bit that switches day-of-month /
//! day-of-week between AND and OR, `N/step` meaning `N-max/step`, `?` accepted as `*`, and a `Next`
//! that mixes wall-clock steps (Go's `time.Date` / `AddDate`) with absolute ones (`Add(1h)`), so a
//! time in a spring-forward gap is skipped and a time in a fall-back overlap runs twice. No crate
//! reproduces those rules, so this module mirrors them over jiff's time zone database, and Go's
//! `time.Date` normalization is reproduced in [`go_date`].
//!
//! Everything here is pure: the current time and the process' local zone are passed in.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Where a schedule's wall clock lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// The controller process' local zone (robfig: `time.Local`, then "local to the time given").
    Local,
    Zone(TimeZone),
}

/// A robfig `SpecSchedule`: bit sets per field, bit 63 marking a field that began with `*`/`?`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecSchedule {
    pub second: u64,
    pub minute: u64,
    pub hour: u64,
    pub dom: u64,
    pub month: u64,
    pub dow: u64,
    pub location: Location,
}

/// A parsed schedule (robfig's `Schedule` implementations reachable from `ParseStandard`).
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Spec(SpecSchedule),
    /// `@every <duration>`: robfig's `ConstantDelaySchedule`, in whole seconds (at least one).
    Every {
        delay_seconds: i64,
    },
}

/// The parse error, worded as robfig's (it ends up in `UnparseableSchedule` events).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

const STAR_BIT: u64 = 1 << 63;

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const SECONDS: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

/// Go's `time.LoadLocation`, over jiff's (bundled) IANA database: `""` and `"UTC"` are UTC,
/// `"Local"` is the process' zone, anything else must be a known IANA name.
pub fn load_location(name: &str) -> Result<Location, String> {
    match name {
        "" | "UTC" => Ok(Location::Zone(TimeZone::UTC)),
        "Local" => Ok(Location::Local),
        _ => {
            // Go refuses names that could escape the zoneinfo directory before looking them up.
            let unsafe_name = name.starts_with('/')
                || name.contains('\\')
                || name.split('/').any(|p| p == ".." || p.is_empty());
            if unsafe_name {
                return Err(format!("unknown time zone {name}"));
            }
            // jiff matches names case-insensitively; Go opens a file, so case matters there.
            match jiff::tz::db().get(name) {
                Ok(tz) if tz.iana_name() == Some(name) => Ok(Location::Zone(tz)),
                _ => Err(format!("unknown time zone {name}")),
            }
        }
    }
}

/// robfig/cron v3 `ParseStandard` (parser.go `Parse` with Minute|Hour|Dom|Month|Dow|Descriptor).
pub fn parse_standard(spec: &str) -> Result<Schedule, ParseError> {
    if spec.is_empty() {
        return Err(ParseError("empty spec string".into()));
    }
    let mut spec = spec;
    let mut location = Location::Local;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let eq = spec.find('=').unwrap_or(0);
        // robfig slices up to the first space; without one it would panic, we refuse instead.
        let Some(space) = spec.find(' ') else {
            return Err(ParseError(format!(
                "provided bad location {}: missing schedule after the location",
                &spec[eq + 1..]
            )));
        };
        let name = spec.get(eq + 1..space).unwrap_or_default();
        location = load_location(name)
            .map_err(|e| ParseError(format!("provided bad location {name}: {e}")))?;
        spec = spec[space..].trim();
    }
    if spec.starts_with('@') {
        return parse_descriptor(spec, location);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(ParseError(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        )));
    }
    Ok(Schedule::Spec(SpecSchedule {
        // The seconds field is not configurable in the standard parser: it defaults to "0".
        second: 1,
        minute: get_field(fields[0], &MINUTES)?,
        hour: get_field(fields[1], &HOURS)?,
        dom: get_field(fields[2], &DOM)?,
        month: get_field(fields[3], &MONTHS)?,
        dow: get_field(fields[4], &DOW)?,
        location,
    }))
}

fn get_field(field: &str, r: &Bounds) -> Result<u64, ParseError> {
    let mut bits = 0;
    // strings.FieldsFunc drops empty pieces, so "1,,2" is fine.
    for expr in field.split(',').filter(|e| !e.is_empty()) {
        bits |= get_range(expr, r)?;
    }
    Ok(bits)
}

fn get_range(expr: &str, r: &Bounds) -> Result<u64, ParseError> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end, mut extra);
    if low_and_high[0] == "*" || low_and_high[0] == "?" {
        // robfig ignores anything after "*-".
        start = i64::from(r.min);
        end = i64::from(r.max);
        extra = STAR_BIT;
    } else {
        start = parse_int_or_name(low_and_high[0], r)?;
        end = match low_and_high.len() {
            1 => start,
            2 => parse_int_or_name(low_and_high[1], r)?,
            _ => return Err(ParseError(format!("too many hyphens: {expr}"))),
        };
        extra = 0;
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = i64::from(r.max);
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(ParseError(format!("too many slashes: {expr}"))),
    };
    if start < i64::from(r.min) {
        return Err(ParseError(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            r.min
        )));
    }
    if end > i64::from(r.max) {
        return Err(ParseError(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            r.max
        )));
    }
    if start > end {
        return Err(ParseError(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        )));
    }
    if step == 0 {
        return Err(ParseError(format!(
            "step of range should be a positive number: {expr}"
        )));
    }
    let mut bits = 0u64;
    let mut i = start;
    while i <= end {
        bits |= 1 << i;
        i += step;
    }
    Ok(bits | extra)
}

fn parse_int_or_name(expr: &str, r: &Bounds) -> Result<i64, ParseError> {
    let lower = expr.to_ascii_lowercase();
    if let Some((_, v)) = r.names.iter().find(|(n, _)| *n == lower) {
        return Ok(i64::from(*v));
    }
    must_parse_int(expr)
}

/// `strconv.Atoi` plus robfig's refusal of negative numbers.
fn must_parse_int(expr: &str) -> Result<i64, ParseError> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    let syntax_ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let num: i64 = match expr.parse() {
        Ok(n) if syntax_ok => n,
        _ => {
            let why = if syntax_ok {
                "value out of range"
            } else {
                "invalid syntax"
            };
            return Err(ParseError(format!(
                "failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: {why}"
            )));
        }
    };
    if num < 0 {
        return Err(ParseError(format!(
            "negative number ({num}) not allowed: {expr}"
        )));
    }
    Ok(num)
}

fn all(r: &Bounds) -> u64 {
    let mut bits = 0;
    for i in r.min..=r.max {
        bits |= 1 << i;
    }
    bits | STAR_BIT
}

fn parse_descriptor(spec: &str, location: Location) -> Result<Schedule, ParseError> {
    let first = |r: &Bounds| 1u64 << r.min;
    let (dom, month, dow, hour) = match spec {
        "@yearly" | "@annually" => (first(&DOM), first(&MONTHS), all(&DOW), first(&HOURS)),
        "@monthly" => (first(&DOM), all(&MONTHS), all(&DOW), first(&HOURS)),
        "@weekly" => (all(&DOM), all(&MONTHS), first(&DOW), first(&HOURS)),
        "@daily" | "@midnight" => (all(&DOM), all(&MONTHS), all(&DOW), first(&HOURS)),
        "@hourly" => (all(&DOM), all(&MONTHS), all(&DOW), all(&HOURS)),
        _ => {
            if let Some(d) = spec.strip_prefix("@every ") {
                let nanos = parse_go_duration(d)
                    .map_err(|e| ParseError(format!("failed to parse duration {spec}: {e}")))?;
                // robfig `Every`: at least one second, rounded down to whole seconds.
                let seconds = if nanos < 1_000_000_000 {
                    1
                } else {
                    nanos / 1_000_000_000
                };
                return Ok(Schedule::Every {
                    delay_seconds: seconds,
                });
            }
            return Err(ParseError(format!("unrecognized descriptor: {spec}")));
        }
    };
    Ok(Schedule::Spec(SpecSchedule {
        second: first(&SECONDS),
        minute: first(&MINUTES),
        hour,
        dom,
        month,
        dow,
        location,
    }))
}

/// Go's `time.ParseDuration`, in nanoseconds.
fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {orig:?}"));
        }
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        let value: f64 = format!(
            "{}.{}",
            if int_part.is_empty() { "0" } else { int_part },
            if frac_part.is_empty() { "0" } else { frac_part }
        )
        .parse()
        .map_err(|_| invalid())?;
        total += value * scale;
        if total > i64::MAX as f64 {
            return Err(invalid());
        }
    }
    let total = total as i64;
    Ok(if neg { -total } else { total })
}

// ---------------------------------------------------------------------------------------------
// Next
// ---------------------------------------------------------------------------------------------

/// Civil fields of an instant in a zone (Go's `t.Date()`, `t.Clock()`, `t.Weekday()`).
#[derive(Debug, Clone, Copy)]
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    weekday: i64,
}

fn offset_at(tz: &TimeZone, unix: i64) -> i64 {
    match Timestamp::from_second(unix) {
        Ok(ts) => i64::from(tz.to_offset(ts).seconds()),
        Err(_) => 0,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn civil(tz: &TimeZone, unix: i64) -> Civil {
    let local = unix + offset_at(tz, unix);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs % 3600 / 60,
        second: secs % 60,
        weekday: (days + 4).rem_euclid(7),
    }
}

/// Go's `time.Date(y, m, d, h, mi, s, 0, loc)`: out-of-range fields normalize, and a wall time
/// that a zone transition skips or repeats resolves the way Go's implementation does — the offset
/// in force at the wall time read as UTC, unless that offset does not hold at the resulting
/// instant, in which case the offset in force at that instant.
fn go_date(tz: &TimeZone, y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> i64 {
    let y = y + (mo - 1).div_euclid(12);
    let mo = (mo - 1).rem_euclid(12) + 1;
    let days = days_from_civil(y, mo, 1) + d - 1;
    let unix = days * 86_400 + h * 3600 + mi * 60 + s;
    let first = offset_at(tz, unix);
    let utc = unix - first;
    let second = offset_at(tz, utc);
    if second == first { utc } else { unix - second }
}

/// Go's `t.AddDate(years, months, days)`: wall-clock arithmetic, renormalized by `time.Date`.
fn add_date(tz: &TimeZone, t: i64, months: i64, days: i64) -> i64 {
    let c = civil(tz, t);
    go_date(
        tz,
        c.year,
        c.month + months,
        c.day + days,
        c.hour,
        c.minute,
        c.second,
    )
}

fn has(bits: u64, v: i64) -> bool {
    (0..64).contains(&v) && bits & (1 << v) != 0
}

/// robfig spec.go `dayMatches`: both day fields must match when either began with `*`,
/// otherwise either may.
fn day_matches(s: &SpecSchedule, c: &Civil) -> bool {
    let dom = has(s.dom, c.day);
    let dow = has(s.dow, c.weekday);
    if s.dom & STAR_BIT != 0 || s.dow & STAR_BIT != 0 {
        dom && dow
    } else {
        dom || dow
    }
}

/// robfig spec.go `SpecSchedule.Next`, step for step, in whole Unix seconds.
fn next_spec(s: &SpecSchedule, tz: &TimeZone, from: i64) -> Option<i64> {
    // Start at the earliest possible time (the upcoming second).
    let mut t = from + 1;
    let mut added = false;
    let year_limit = civil(tz, t).year + 5;
    'wrap: loop {
        if civil(tz, t).year > year_limit {
            return None;
        }
        loop {
            let c = civil(tz, t);
            if has(s.month, c.month) {
                break;
            }
            if !added {
                added = true;
                t = go_date(tz, c.year, c.month, 1, 0, 0, 0);
            }
            t = add_date(tz, t, 1, 0);
            if civil(tz, t).month == 1 {
                continue 'wrap;
            }
        }
        loop {
            let c = civil(tz, t);
            if day_matches(s, &c) {
                break;
            }
            if !added {
                added = true;
                t = go_date(tz, c.year, c.month, c.day, 0, 0, 0);
            }
            t = add_date(tz, t, 0, 1);
            // Midnight may not exist (or repeat) on a DST day: snap back to hour 0.
            let hour = civil(tz, t).hour;
            if hour != 0 {
                if hour > 12 {
                    t += (24 - hour) * 3600;
                } else {
                    t -= hour * 3600;
                }
            }
            if civil(tz, t).day == 1 {
                continue 'wrap;
            }
        }
        loop {
            let c = civil(tz, t);
            if has(s.hour, c.hour) {
                break;
            }
            if !added {
                added = true;
                t = go_date(tz, c.year, c.month, c.day, c.hour, 0, 0);
            }
            t += 3600;
            if civil(tz, t).hour == 0 {
                continue 'wrap;
            }
        }
        loop {
            if has(s.minute, civil(tz, t).minute) {
                break;
            }
            if !added {
                added = true;
                t = t.div_euclid(60) * 60;
            }
            t += 60;
            if civil(tz, t).minute == 0 {
                continue 'wrap;
            }
        }
        loop {
            if has(s.second, civil(tz, t).second) {
                break;
            }
            added = true;
            t += 1;
            if civil(tz, t).second == 0 {
                continue 'wrap;
            }
        }
        return Some(t);
    }
}

fn floor_second(t: Timestamp) -> i64 {
    let s = t.as_second();
    if t.subsec_nanosecond() < 0 { s - 1 } else { s }
}

impl Schedule {
    /// The first activation strictly after `t` (robfig `Next`); `None` where robfig returns the
    /// zero time (nothing within five years). `local` is the process' zone, used by schedules
    /// without a location.
    pub fn next(&self, t: Timestamp, local: &TimeZone) -> Option<Timestamp> {
        let from = floor_second(t);
        let next = match self {
            Schedule::Every { delay_seconds } => from.checked_add(*delay_seconds)?,
            Schedule::Spec(s) => {
                let tz = match &s.location {
                    Location::Local => local,
                    Location::Zone(z) => z,
                };
                next_spec(s, tz, from)?
            }
        };
        Timestamp::from_second(next).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn zone(name: &str) -> TimeZone {
        match load_location(name) {
            Ok(Location::Zone(z)) => z,
            _ => TimeZone::UTC,
        }
    }

    fn next_in(spec: &str, tz: &str, from: &str) -> Option<String> {
        let s = parse_standard(spec).ok()?;
        s.next(ts(from), &zone(tz)).map(|t| t.to_string())
    }

    fn err(spec: &str) -> String {
        match parse_standard(spec) {
            Ok(s) => format!("parsed: {s:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn next_run_table_over_schedules_and_zones() {
        // (schedule, zone, from, expected next) — expected values follow robfig spec.go Next.
        let table: &[(&str, &str, &str, &str)] = &[
            (
                "*/1 * * * *",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:01:00Z",
            ),
            (
                "* * * * *",
                "UTC",
                "2026-01-01T00:00:30.5Z",
                "2026-01-01T00:01:00Z",
            ),
            (
                "*/15 * * * *",
                "UTC",
                "2026-01-01T00:14:59Z",
                "2026-01-01T00:15:00Z",
            ),
            (
                "5/20 * * * *",
                "UTC",
                "2026-01-01T00:06:00Z",
                "2026-01-01T00:25:00Z",
            ),
            (
                "0 0 * * *",
                "UTC",
                "2026-01-01T10:00:00Z",
                "2026-01-02T00:00:00Z",
            ),
            (
                "0 9 * * mon-fri",
                "UTC",
                "2026-01-02T10:00:00Z",
                "2026-01-05T09:00:00Z",
            ),
            (
                "0 9 * * SUN",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2026-01-04T09:00:00Z",
            ),
            (
                "0 0 1 jan,jul *",
                "UTC",
                "2026-02-01T00:00:00Z",
                "2026-07-01T00:00:00Z",
            ),
            (
                "0 0 29 2 *",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2028-02-29T00:00:00Z",
            ),
            (
                "30 6-16/4 * * 1-5",
                "UTC",
                "2026-01-05T06:30:00Z",
                "2026-01-05T10:30:00Z",
            ),
            (
                "@hourly",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2026-01-01T01:00:00Z",
            ),
            (
                "@daily",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
            ),
            (
                "@midnight",
                "UTC",
                "2026-01-01T12:00:00Z",
                "2026-01-02T00:00:00Z",
            ),
            (
                "@weekly",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2026-01-04T00:00:00Z",
            ),
            (
                "@monthly",
                "UTC",
                "2026-01-15T00:00:00Z",
                "2026-02-01T00:00:00Z",
            ),
            (
                "@yearly",
                "UTC",
                "2026-01-15T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                "@annually",
                "UTC",
                "2026-01-15T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                "@every 90s",
                "UTC",
                "2026-01-01T00:00:00.7Z",
                "2026-01-01T00:01:30Z",
            ),
            (
                "0 9 * * *",
                "Asia/Tokyo",
                "2026-01-01T00:00:00Z",
                "2026-01-02T00:00:00Z",
            ),
            (
                "0 9 * * *",
                "America/New_York",
                "2026-01-01T00:00:00Z",
                "2026-01-01T14:00:00Z",
            ),
            (
                "0 9 * * *",
                "Asia/Kolkata",
                "2026-01-01T00:00:00Z",
                "2026-01-01T03:30:00Z",
            ),
            (
                "TZ=Europe/Berlin 0 9 * * *",
                "UTC",
                "2026-07-01T00:00:00Z",
                "2026-07-01T07:00:00Z",
            ),
            (
                "CRON_TZ=America/New_York 0 9 * * *",
                "UTC",
                "2026-07-01T00:00:00Z",
                "2026-07-01T13:00:00Z",
            ),
        ];
        for (spec, tz, from, want) in table {
            assert_eq!(
                next_in(spec, tz, from).as_deref(),
                Some(*want),
                "{spec} in {tz} after {from}"
            );
        }
    }

    #[test]
    fn a_time_in_the_spring_forward_gap_is_skipped_that_day() {
        // 2026-03-08 02:00 EST jumps to 03:00 EDT; robfig walks hours with Add(1h), so hour 2
        // never appears and the next 02:30 is the following day.
        assert_eq!(
            next_in("30 2 * * *", "America/New_York", "2026-03-07T07:30:00Z").as_deref(),
            Some("2026-03-09T06:30:00Z")
        );
        // The day before, it runs at 02:30 EST as usual.
        assert_eq!(
            next_in("30 2 * * *", "America/New_York", "2026-03-06T12:00:00Z").as_deref(),
            Some("2026-03-07T07:30:00Z")
        );
    }

    #[test]
    fn a_time_in_the_fall_back_overlap_runs_in_both_offsets() {
        // 2026-11-01 02:00 EDT falls back to 01:00 EST: 01:30 happens twice and robfig finds both.
        let first = next_in("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z");
        assert_eq!(first.as_deref(), Some("2026-11-01T05:30:00Z"));
        let second = next_in("30 1 * * *", "America/New_York", "2026-11-01T05:30:00Z");
        assert_eq!(second.as_deref(), Some("2026-11-01T06:30:00Z"));
        let third = next_in("30 1 * * *", "America/New_York", "2026-11-01T06:30:00Z");
        assert_eq!(third.as_deref(), Some("2026-11-02T06:30:00Z"));
    }

    #[test]
    fn a_time_after_the_fall_back_runs_once_at_the_standard_offset() {
        assert_eq!(
            next_in("30 2 * * *", "America/New_York", "2026-10-31T12:00:00Z").as_deref(),
            Some("2026-11-01T07:30:00Z")
        );
        assert_eq!(
            next_in("30 2 * * *", "America/New_York", "2026-11-01T07:30:00Z").as_deref(),
            Some("2026-11-02T07:30:00Z")
        );
    }

    #[test]
    fn a_schedule_pinned_to_the_gap_day_moves_to_the_next_year() {
        // Only 8 March at 02:30: 2026's falls in the gap, 2027's (DST starts 14 March) does not.
        assert_eq!(
            next_in("30 2 8 3 *", "America/New_York", "2026-03-01T00:00:00Z").as_deref(),
            Some("2027-03-08T07:30:00Z")
        );
    }

    #[test]
    fn europe_gap_and_overlap_follow_the_same_walk() {
        // Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
        assert_eq!(
            next_in("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z").as_deref(),
            Some("2026-03-30T00:30:00Z")
        );
        assert_eq!(
            next_in("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z").as_deref(),
            Some("2026-10-25T00:30:00Z")
        );
        assert_eq!(
            next_in("30 2 * * *", "Europe/Berlin", "2026-10-25T00:30:00Z").as_deref(),
            Some("2026-10-25T01:30:00Z")
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_are_ored_when_both_are_restricted() {
        // 13th or Friday: 2026-02-06 is a Friday, before the 13th.
        assert_eq!(
            next_in("0 0 13 * 5", "UTC", "2026-02-01T00:00:00Z").as_deref(),
            Some("2026-02-06T00:00:00Z")
        );
        // A star in either field makes it an AND.
        assert_eq!(
            next_in("0 0 13 * *", "UTC", "2026-02-01T00:00:00Z").as_deref(),
            Some("2026-02-13T00:00:00Z")
        );
        // "*/1" keeps the star bit, so this is still an AND (only Fridays).
        assert_eq!(
            next_in("0 0 */1 * 5", "UTC", "2026-02-01T00:00:00Z").as_deref(),
            Some("2026-02-06T00:00:00Z")
        );
        // "*/2" drops the star bit: odd days OR Fridays.
        assert_eq!(
            next_in("0 0 */2 * 5", "UTC", "2026-02-01T12:00:00Z").as_deref(),
            Some("2026-02-03T00:00:00Z")
        );
        // "?" counts as a star.
        assert_eq!(
            next_in("0 0 ? * 5", "UTC", "2026-02-01T00:00:00Z").as_deref(),
            Some("2026-02-06T00:00:00Z")
        );
    }

    #[test]
    fn an_impossible_date_yields_no_next_time() {
        assert_eq!(next_in("59 23 31 2 *", "UTC", "2026-01-01T00:00:00Z"), None);
        assert_eq!(next_in("0 0 30 2 *", "UTC", "2026-01-01T00:00:00Z"), None);
    }

    #[test]
    fn robfigs_syntax_errors_are_reported_in_its_words() {
        let table: &[(&str, &str)] = &[
            ("", "empty spec string"),
            ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
            (
                "0 0 * * * *",
                "expected exactly 5 fields, found 6: [0 0 * * * *]",
            ),
            ("60 * * * *", "end of range (60) above maximum (59): 60"),
            ("* 24 * * *", "end of range (24) above maximum (23): 24"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
            ("* * * * 7", "end of range (7) above maximum (6): 7"),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1): 5-1",
            ),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
            ("*/2/3 * * * *", "too many slashes: */2/3"),
            (
                "* * L * *",
                "failed to parse int from L: strconv.Atoi: parsing \"L\": invalid syntax",
            ),
            (
                "* * 15W * *",
                "failed to parse int from 15W: strconv.Atoi: parsing \"15W\": invalid syntax",
            ),
            (
                "* * * * 5#3",
                "failed to parse int from 5#3: strconv.Atoi: parsing \"5#3\": invalid syntax",
            ),
            ("@reboot", "unrecognized descriptor: @reboot"),
            (
                "@every 5x",
                "failed to parse duration @every 5x: time: unknown unit \"x\" in duration \"5x\"",
            ),
            (
                "TZ=Mars/Olympus 0 * * * *",
                "provided bad location Mars/Olympus: unknown time zone Mars/Olympus",
            ),
        ];
        for (spec, want) in table {
            assert_eq!(err(spec), *want, "{spec:?}");
        }
    }

    #[test]
    fn every_durations_round_down_to_seconds_with_a_one_second_floor() {
        assert_eq!(
            parse_standard("@every 1h30m"),
            Ok(Schedule::Every {
                delay_seconds: 5400
            })
        );
        assert_eq!(
            parse_standard("@every 1500ms"),
            Ok(Schedule::Every { delay_seconds: 1 })
        );
        assert_eq!(
            parse_standard("@every 10ms"),
            Ok(Schedule::Every { delay_seconds: 1 })
        );
    }

    #[test]
    fn names_are_case_insensitive_and_work_in_ranges() {
        assert!(parse_standard("0 0 * JAN-mar Mon-FRI").is_ok());
        let Ok(Schedule::Spec(s)) = parse_standard("0 0 * * mon-wed") else {
            panic!("should parse");
        };
        assert_eq!(s.dow, 0b1110);
    }

    #[test]
    fn time_zones_load_like_go() {
        assert_eq!(load_location(""), Ok(Location::Zone(TimeZone::UTC)));
        assert_eq!(load_location("Local"), Ok(Location::Local));
        assert!(load_location("America/New_York").is_ok());
        assert!(
            load_location("US/Eastern").is_ok(),
            "backward links load too"
        );
        assert_eq!(
            load_location("america/new_york"),
            Err("unknown time zone america/new_york".to_owned())
        );
        assert_eq!(
            load_location("Not/AZone"),
            Err("unknown time zone Not/AZone".to_owned())
        );
        assert_eq!(
            load_location("../etc/passwd"),
            Err("unknown time zone ../etc/passwd".to_owned())
        );
    }
}
