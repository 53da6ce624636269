//! Kubernetes resource quantities as the scheduler reads them: `MilliValue()` for CPU and
//! `Value()` for everything else, both rounding up like apimachinery's `resource.Quantity`
//! (k8s.io/apimachinery/pkg/api/resource/quantity.go). k8s-openapi keeps quantities as strings,
//! and no crate has apimachinery's exact rounding, so the parser lives here.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A parsed quantity: `digits × 10^exp10 × 2^exp2`, exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    digits: u128,
    exp10: i32,
    exp2: u32,
}

fn parse(s: &str) -> Option<Parsed> {
    let s = s.trim();
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    if number.is_empty() || number == "." {
        return None;
    }
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if frac_part.contains('.') {
        return None;
    }
    let mut digits: u128 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        digits = digits
            .checked_mul(10)?
            .checked_add(u128::from(c.to_digit(10)?))?;
    }
    let mut exp10 = -(frac_part.len() as i32);
    let mut exp2 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        s if s.starts_with(['e', 'E']) => exp10 += s[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    Some(Parsed {
        negative,
        digits,
        exp10,
        exp2,
    })
}

/// `value × 10^scale`, rounded up (away from zero for positives, toward zero for negatives, as
/// `Quantity.ScaledValue` does), saturating at i64's range.
fn scaled(q: &str, scale: i32) -> i64 {
    let Some(p) = parse(q) else { return 0 };
    let mut num: u128 = p.digits;
    let mut den: u128 = 1;
    let e = p.exp10 + scale;
    let pow = |n: i32| 10u128.checked_pow(n.unsigned_abs());
    if e >= 0 {
        match pow(e).and_then(|m| num.checked_mul(m)) {
            Some(v) => num = v,
            None => return if p.negative { i64::MIN } else { i64::MAX },
        }
    } else {
        match pow(e) {
            Some(d) => den = d,
            None => return 0,
        }
    }
    match 1u128.checked_shl(p.exp2).and_then(|m| num.checked_mul(m)) {
        Some(v) => num = v,
        None => return if p.negative { i64::MIN } else { i64::MAX },
    }
    let whole = num / den;
    let rem = num % den;
    if p.negative {
        -(i64::try_from(whole).unwrap_or(i64::MAX))
    } else {
        let up = whole + u128::from(rem != 0);
        i64::try_from(up).unwrap_or(i64::MAX)
    }
}

/// `Quantity.MilliValue()`.
pub fn milli_value(q: &Quantity) -> i64 {
    scaled(&q.0, 3)
}

/// `Quantity.Value()`.
pub fn value(q: &Quantity) -> i64 {
    scaled(&q.0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    #[test]
    fn cpu_quantities_read_as_millicores() {
        assert_eq!(milli_value(&q("1")), 1000);
        assert_eq!(milli_value(&q("100m")), 100);
        assert_eq!(milli_value(&q("0.5")), 500);
        assert_eq!(milli_value(&q("2.5")), 2500);
        assert_eq!(
            milli_value(&q("1500u")),
            2,
            "fractions of a millicore round up"
        );
        assert_eq!(milli_value(&q("1e3")), 1_000_000);
    }

    #[test]
    fn memory_quantities_read_as_bytes_with_binary_and_decimal_suffixes() {
        assert_eq!(value(&q("32Gi")), 32 * 1024 * 1024 * 1024);
        assert_eq!(value(&q("200Mi")), 200 * 1024 * 1024);
        assert_eq!(value(&q("1G")), 1_000_000_000);
        assert_eq!(value(&q("1.5Ki")), 1536);
        assert_eq!(value(&q("100m")), 1, "sub-unit values round up");
        assert_eq!(value(&q("110")), 110);
    }

    #[test]
    fn malformed_quantities_read_as_zero() {
        assert_eq!(value(&q("abc")), 0);
        assert_eq!(value(&q("1Zi")), 0);
        assert_eq!(value(&q("")), 0);
    }
}
