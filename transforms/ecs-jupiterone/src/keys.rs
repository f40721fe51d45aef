//! D6: camelCase → snake_case on every key, Java `Character` semantics:
//! an `_` goes only before an upper-case letter that follows a lower-case
//! one. Collisions: the later key in the document wins.

use sluice_sdk::serde_json::{Map, Value};

/// Converts one key.
pub fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut prev: Option<char> = None;
    for c in key.chars() {
        // Outside the BMP a Java char is a surrogate, never a letter.
        let bmp = (c as u32) <= 0xFFFF;
        if bmp && c.is_uppercase() {
            if prev.is_some_and(|p| (p as u32) <= 0xFFFF && p.is_lowercase()) {
                out.push('_');
            }
            push_simple_lower(c, &mut out);
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    out
}

/// Java's one-to-one `Character.toLowerCase`.
fn push_simple_lower(c: char, out: &mut String) {
    if c == '\u{130}' {
        out.push('i');
        return;
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => out.push(l),
        // No simple mapping: Java keeps the character.
        _ => out.push(c),
    }
}

/// Converts every key of `v`, at every depth (objects inside arrays too).
pub fn snake_all(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                out.insert(snake(&k), snake_all(v));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(snake_all).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::snake;

    #[test]
    fn the_reference_table() {
        for (k, want) in [
            ("displayName", "display_name"),
            ("_integrationDefinitionId", "_integration_definition_id"),
            ("AccountName", "account_name"),
            ("tag.AccountName", "tag.account_name"),
            ("tag.SOCScope", "tag.socscope"),
            ("HTTPServerName", "httpserver_name"),
            ("myURL", "my_url"),
            ("remediationSLA", "remediation_sla"),
            ("ipV4Address", "ip_v4address"),
            ("device2IP", "device2ip"),
            ("deviceIPv6", "device_ipv6"),
            ("x_Y", "x_y"),
            ("raw_severity", "raw_severity"),
            ("éA", "é_a"),
            ("aİ", "a_i"),
            ("ǅx", "ǅx"),
        ] {
            assert_eq!(snake(k), want, "{k}");
        }
    }
}
