//! Elasticsearch's `uri_parts` (D12): `java.net.URI` (RFC 2396) first,
//! then `java.net.URL` for the schemes Java knows, else an error. Unlike
//! the `url` crate: scheme and host keep their case, `.`/`..` segments
//! stay, there is no IDNA, and path, query, fragment and user info are
//! percent-decoded (URI) or left raw (URL fallback).

use sluice_sdk::serde_json::{Map, Value};

/// The `url.*` fields for `s`, `original` included.
///
/// # Errors
///
/// A message when neither parser accepts the string.
pub fn parts(s: &str) -> Result<Map<String, Value>, String> {
    let mut out = if uri_syntax_ok(s) {
        parse(s, true)
    } else if let Some(scheme) = scheme_of(s)
        && matches!(
            scheme.to_ascii_lowercase().as_str(),
            "http" | "https" | "ftp" | "file" | "jar" | "mailto" | "netdoc"
        )
    {
        parse(s, false)
    } else {
        return Err(format!("unable to parse URI [{s}]"));
    };
    out.insert("original".into(), s.into());
    Ok(out)
}

/// What `java.net.URI` rejects outright.
fn uri_syntax_ok(s: &str) -> bool {
    let b = s.as_bytes();
    if s.matches('#').count() > 1 {
        return false;
    }
    let query_or_fragment = s.find(['?', '#']).unwrap_or(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c <= b' '
            || c == 0x7f
            || matches!(
                c,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
        {
            return false;
        }
        if c == b'%' {
            if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
            continue;
        }
        if matches!(c, b'[' | b']') && i < query_or_fragment && !in_ipv6_host(s, i) {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether byte `i` is a bracket of an `[IPv6]` host in the authority.
fn in_ipv6_host(s: &str, i: usize) -> bool {
    let Some(scheme) = scheme_of(s) else {
        return false;
    };
    let rest = &s[scheme.len() + 1..];
    let Some(auth) = rest.strip_prefix("//") else {
        return false;
    };
    let start = scheme.len() + 3;
    let end = start + auth.find(['/', '?', '#']).unwrap_or(auth.len());
    let host_start = s[start..end].rfind('@').map_or(start, |a| start + a + 1);
    (i == host_start && s.as_bytes()[i] == b'[')
        || (i > host_start
            && i < end
            && s.as_bytes()[i] == b']'
            && s.as_bytes()[host_start] == b'[')
}

/// `scheme` when `s` starts with `alpha *(alnum | + | - | .) ":"`.
fn scheme_of(s: &str) -> Option<&str> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

fn decode(s: &str, on: bool) -> String {
    if !on || !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse(s: &str, decoding: bool) -> Map<String, Value> {
    let mut out = Map::new();
    let scheme = scheme_of(s);
    let mut rest = s;
    if let Some(scheme) = scheme {
        out.insert("scheme".into(), scheme.into());
        rest = &s[scheme.len() + 1..];
        if decoding && !rest.starts_with('/') {
            // Opaque (`mailto:x@example.com`): only the scheme.
            return out;
        }
    }
    // The fragment: after the first `#` (URL keeps a second `#` in it).
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (rest, None),
    };
    let (hier, query) = match before_fragment.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (before_fragment, None),
    };
    let path = if let Some(after) = hier.strip_prefix("//") {
        let end = after.find('/').unwrap_or(after.len());
        authority(&after[..end], decoding, &mut out);
        &after[end..]
    } else {
        hier
    };
    out.insert("path".into(), decode(path, decoding).into());
    let last_segment = path.rsplit('/').next().unwrap_or("");
    if let Some((_, ext)) = last_segment.rsplit_once('.') {
        out.insert("extension".into(), decode(ext, decoding).into());
    }
    if let Some(q) = query {
        out.insert("query".into(), decode(q, decoding).into());
    }
    if let Some(f) = fragment {
        out.insert("fragment".into(), decode(f, decoding).into());
    }
    out
}

/// `[userinfo@]host[:port]`. For a URI, a host that is not a valid
/// DNS-style name makes the authority registry-based: no domain, port or
/// user info.
fn authority(auth: &str, decoding: bool, out: &mut Map<String, Value>) {
    let (user_info, host_port) = match auth.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, auth),
    };
    let (host, port) = if let Some(end) = host_port.strip_prefix('[').and_then(|h| h.find(']')) {
        let host = &host_port[..end + 2];
        (host, host_port[end + 2..].strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let port_ok = port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if decoding && (!valid_host(host) || !port_ok) {
        return;
    }
    if !host.is_empty() {
        out.insert("domain".into(), host.into());
    }
    if let Some(p) = port.filter(|p| !p.is_empty())
        && let Ok(n) = p.parse::<u32>()
    {
        out.insert("port".into(), n.into());
    }
    if let Some(u) = user_info {
        let u = decode(u, decoding);
        if let Some((name, pass)) = u.split_once(':') {
            out.insert("username".into(), name.into());
            out.insert("password".into(), pass.into());
        }
        out.insert("user_info".into(), u.into());
    }
}

/// RFC 2396 host: `[IPv6]`, IPv4, or DNS labels of letters, digits and
/// inner `-`, the last starting with a letter.
fn valid_host(h: &str) -> bool {
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if h.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.is_empty() {
        return false;
    }
    let labels: Vec<&str> = h.split('.').collect();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.iter().all(|l| label_ok(l))
        && labels
            .last()
            .is_some_and(|l| l.as_bytes()[0].is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::parts;
    use sluice_sdk::serde_json::{Value, json};

    fn p(s: &str) -> Value {
        Value::Object(parts(s).unwrap())
    }

    #[test]
    fn the_reference_example() {
        let s = "https://console.example.com:8443/f/1/report.pdf?tab=a%20b#top";
        assert_eq!(
            p(s),
            json!({"scheme":"https","domain":"console.example.com","port":8443,"path":"/f/1/report.pdf",
                   "extension":"pdf","query":"tab=a b","fragment":"top","original":s})
        );
    }

    #[test]
    fn java_uri_behaviour() {
        assert_eq!(p("HTTPS://Console.Example.com/a/../b")["scheme"], "HTTPS");
        assert_eq!(
            p("HTTPS://Console.Example.com/a/../b")["domain"],
            "Console.Example.com"
        );
        assert_eq!(p("HTTPS://Console.Example.com/a/../b")["path"], "/a/../b");
        assert_eq!(p("https://[2001:db8::1]:8080/x")["domain"], "[2001:db8::1]");
        assert_eq!(p("https://[2001:db8::1]:8080/x")["port"], 8080);
        let v = p("https://my_host.example.com:8443/x");
        assert!(
            v.get("domain").is_none() && v.get("port").is_none(),
            "an `_` makes the host registry-based: {v}"
        );
        assert_eq!(v["path"], "/x");
        assert_eq!(
            p("https://h.example.com")["path"],
            "",
            "no path: empty (dropped later)"
        );
        assert!(p("https://h.example.com:/x").get("port").is_none());
        assert_eq!(p("/x/a.tar.gz")["extension"], "gz");
        assert!(p("/dir.v2/file").get("extension").is_none());
        assert_eq!(p("/file.")["extension"], "");
        assert_eq!(
            p("mailto:x@example.com"),
            json!({"scheme":"mailto","original":"mailto:x@example.com"})
        );
        let v = p("/alerts?id=1");
        assert_eq!(
            (v["path"].as_str(), v["query"].as_str()),
            (Some("/alerts"), Some("id=1"))
        );
        assert!(p("console.example.com/x").get("domain").is_none());
        let v = p("https://u%20x:p%3Aw@h.example.com/p?q=%2F+#f%20g");
        assert_eq!(v["user_info"], "u x:p:w");
        assert_eq!(v["username"], "u x");
        assert_eq!(v["password"], "p:w");
        assert_eq!(v["query"], "q=/+");
        assert_eq!(v["fragment"], "f g");
    }

    #[test]
    fn url_fallback_and_errors() {
        let v = p("https://my_host.example.com/a b/c%20d?q#x#y");
        assert_eq!(
            v["domain"], "my_host.example.com",
            "URL: raw host, `_` allowed"
        );
        assert_eq!(v["path"], "/a b/c%20d", "URL: no decoding, spaces kept");
        assert_eq!(v["fragment"], "x#y");
        assert!(parts("foo://a b").is_err());
        assert!(parts("not a url").is_err());
        assert!(
            parts("https://h.example.com/%zz").is_ok(),
            "bad escape: URL fallback for https"
        );
    }
}
