//! Elasticsearch `convert` semantics (D8, D9, R5–R8) and Java's
//! `toString`, which the string conversion and the `{{{…}}}` templates use.
//! A list converts element by element; one bad element fails the field.

use sluice_sdk::serde_json::{Number, Value};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A conversion target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `boolean`.
    Boolean,
    /// `long`.
    Long,
    /// `double`.
    Double,
    /// `ip` (validated, value unchanged).
    Ip,
}

/// Converts `v` (a scalar or a list of scalars).
///
/// # Errors
///
/// Java-like text for the failure message.
pub fn convert(v: &Value, target: Target) -> Result<Value, String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| scalar(i, target))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        other => scalar(other, target),
    }
}

fn scalar(v: &Value, target: Target) -> Result<Value, String> {
    match target {
        Target::Boolean => {
            let text = match v {
                Value::Bool(b) => return Ok(Value::Bool(*b)),
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => java_string(other),
            };
            if text.eq_ignore_ascii_case("true") {
                Ok(Value::Bool(true))
            } else if text.eq_ignore_ascii_case("false") {
                Ok(Value::Bool(false))
            } else {
                Err(format!(
                    "[{text}] is not a boolean value, cannot convert to boolean"
                ))
            }
        }
        Target::Long => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => n
                .as_i64()
                .map(Value::from)
                .ok_or_else(|| format!("For input string: \"{n}\"")),
            Value::String(s) => parse_long(s)
                .map(Value::from)
                .ok_or_else(|| format!("For input string: \"{s}\"")),
            other => Err(format!("For input string: \"{}\"", java_string(other))),
        },
        Target::Double => {
            let f = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => parse_double(s),
                _ => None,
            };
            f.and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("For input string: \"{}\"", java_string(v)))
        }
        Target::Ip => match v {
            Value::String(s)
                if s.parse::<Ipv4Addr>().is_ok()
                    || (s.contains(':') && s.parse::<Ipv6Addr>().is_ok()) =>
            {
                Ok(v.clone())
            }
            other => Err(format!(
                "'{}' is not an IP string literal.",
                java_string(other)
            )),
        },
    }
}

/// Java `Long.decode`-like parsing as Elasticsearch's convert does it: an
/// optional sign then ASCII digits, or `0x`/`-0x` hex.
fn parse_long(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let magnitude = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        i128::from_str_radix(hex, 16).ok()?
    } else {
        if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        body.parse::<i128>().ok()?
    };
    i64::try_from(if neg { -magnitude } else { magnitude }).ok()
}

/// Java `Double.parseDouble` for decimal text: surrounding whitespace, an
/// exponent, `.5`, `5.`, a trailing `f`/`d`. NaN and infinities have no
/// JSON form and are refused.
fn parse_double(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c <= ' ');
    let t = t.strip_suffix(['f', 'F', 'd', 'D']).unwrap_or(t);
    if t.is_empty()
        || !t
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let f: f64 = t.parse().ok()?;
    f.is_finite().then_some(f)
}

/// Java `toString` of a JSON value: integers as digits, doubles as Java's
/// `Double.toString`, lists `[a, b]`, objects `{k=v}`.
pub fn java_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => java_double(n.as_f64().unwrap_or(0.0)),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(java_string).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}={}", java_string(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Java's `Double.toString`: plain notation with at least one decimal for
/// 10⁻³ ≤ |x| < 10⁷, else `d.dddE±n`, with the shortest round-trip digits.
pub fn java_double(f: f64) -> String {
    let a = f.abs();
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    if (1e-3..1e7).contains(&a) {
        let s = format!("{f}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        format!("{mantissa}E{exp}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::serde_json::json;

    #[test]
    fn booleans() {
        assert_eq!(convert(&json!("TRUE"), Target::Boolean), Ok(json!(true)));
        assert_eq!(
            convert(&json!(["False", true]), Target::Boolean),
            Ok(json!([false, true]))
        );
        for bad in [
            json!(1),
            json!("yes"),
            json!(""),
            json!({}),
            json!(["true", "no"]),
        ] {
            assert!(convert(&bad, Target::Boolean).is_err(), "{bad}");
        }
        assert_eq!(
            convert(&json!("yes"), Target::Boolean).unwrap_err(),
            "[yes] is not a boolean value, cannot convert to boolean"
        );
    }

    #[test]
    fn longs() {
        assert_eq!(convert(&json!("5"), Target::Long), Ok(json!(5)));
        assert_eq!(convert(&json!("+7"), Target::Long), Ok(json!(7)));
        assert_eq!(convert(&json!("-0x1F"), Target::Long), Ok(json!(-31)));
        assert_eq!(convert(&json!(42), Target::Long), Ok(json!(42)));
        for bad in [
            json!(7.0),
            json!(" 7"),
            json!("7.5"),
            json!(""),
            json!(true),
            json!("99999999999999999999"),
        ] {
            assert!(convert(&bad, Target::Long).is_err(), "{bad}");
        }
        assert_eq!(
            convert(&json!("7.0"), Target::Long).unwrap_err(),
            "For input string: \"7.0\""
        );
    }

    #[test]
    fn doubles() {
        assert_eq!(convert(&json!(4), Target::Double), Ok(json!(4.0)));
        assert_eq!(convert(&json!(" 7.5 "), Target::Double), Ok(json!(7.5)));
        assert_eq!(convert(&json!(".5"), Target::Double), Ok(json!(0.5)));
        assert_eq!(convert(&json!("5."), Target::Double), Ok(json!(5.0)));
        assert_eq!(convert(&json!("1e3"), Target::Double), Ok(json!(1000.0)));
        assert_eq!(convert(&json!("2.5f"), Target::Double), Ok(json!(2.5)));
        for bad in [
            json!(""),
            json!("abc"),
            json!(true),
            json!("NaN"),
            json!("Infinity"),
        ] {
            assert!(convert(&bad, Target::Double).is_err(), "{bad}");
        }
    }

    #[test]
    fn ips_are_validated_not_normalised() {
        assert_eq!(
            convert(&json!("192.0.2.7"), Target::Ip),
            Ok(json!("192.0.2.7"))
        );
        assert_eq!(
            convert(&json!("2001:DB8::1"), Target::Ip),
            Ok(json!("2001:DB8::1"))
        );
        assert_eq!(
            convert(&json!("::ffff:192.0.2.1"), Target::Ip),
            Ok(json!("::ffff:192.0.2.1"))
        );
        for bad in [
            json!("010.1.1.1"),
            json!("host.example.com"),
            json!("10.0.0.0/8"),
            json!("fe80::1%eth0"),
            json!(1),
        ] {
            assert!(convert(&bad, Target::Ip).is_err(), "{bad}");
        }
        assert_eq!(
            convert(&json!("010.1.1.1"), Target::Ip).unwrap_err(),
            "'010.1.1.1' is not an IP string literal."
        );
    }

    #[test]
    fn java_strings() {
        assert_eq!(java_string(&json!(3)), "3");
        assert_eq!(java_string(&json!(3.0)), "3.0");
        assert_eq!(java_string(&json!(1e7)), "1.0E7");
        assert_eq!(java_string(&json!(1.0e-5)), "1.0E-5");
        assert_eq!(java_string(&json!(0.001)), "0.001");
        assert_eq!(java_string(&json!(["A", 1, true])), "[A, 1, true]");
        assert_eq!(java_string(&json!({"k": "v"})), "{k=v}");
    }
}
