//! Object key templates, shared by every sink that writes named objects
//! (the local directory now, S3 next).
//!
//! A template renders the folder an object goes in; the sink appends a
//! unique object name. Syntax:
//! - `{route}`, `{source}`: the record's route and source;
//! - `{.path.to.field}`: a field of the (transformed) record;
//! - `{hive_date}`: `year=YYYY/month=MM/day=DD`;
//! - strftime `%Y %m %d %H %M %S %j %%`, from the time the record was received (UTC);
//! - anything else is literal: letters, digits, `.`, `_`, `-`, `=` and `/`.
//!
//! Confinement: a rendered value can never leave the sink's root. Values
//! are reduced to `[A-Za-z0-9._=-]` (anything else becomes `_`, so a `/`
//! cannot add a folder), and a value that is empty, `.` or `..` becomes `_`.
//! The template itself may not be absolute or contain `..` or `//`.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Route,
    Source,
    Field(Vec<String>),
    HiveDate,
    Time(char),
}

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad key template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

/// What a template is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    /// The record's route.
    pub route: &'a str,
    /// The record's source.
    pub source: &'a str,
    /// When the record was received.
    pub time: DateTime<Utc>,
    /// The record, if the template reads fields (see [`KeyTemplate::reads_fields`]).
    pub record: Option<&'a serde_json::Value>,
}

impl KeyTemplate {
    /// Parses and checks a template.
    ///
    /// # Errors
    ///
    /// [`TemplateError`] saying what is wrong.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let err = |reason: &str| TemplateError {
            template: template.to_string(),
            reason: reason.to_string(),
        };
        if template.starts_with('/') {
            return Err(err("must be relative (no leading `/`)"));
        }
        if template.contains("//") {
            return Err(err("contains an empty folder (`//`)"));
        }
        if template.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(err("may not contain `.` or `..` folders"));
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(err("unclosed `{`")),
                        }
                    }
                    let part = match name.as_str() {
                        "route" => Part::Route,
                        "source" => Part::Source,
                        "hive_date" => Part::HiveDate,
                        f if f.starts_with('.') && f.len() > 1 => {
                            let path: Vec<String> = f[1..].split('.').map(str::to_string).collect();
                            if path.iter().any(String::is_empty) {
                                return Err(err("a field path has an empty segment"));
                            }
                            Part::Field(path)
                        }
                        other => {
                            return Err(err(&format!(
                                "unknown field {{{other}}} (known: {{route}}, {{source}}, {{hive_date}}, {{.field.path}})"
                            )));
                        }
                    };
                    flush(&mut literal, &mut parts);
                    parts.push(part);
                }
                '}' => return Err(err("`}` without `{`")),
                '%' => {
                    let spec = chars.next().ok_or_else(|| err("`%` at the end"))?;
                    match spec {
                        '%' => literal.push('%'),
                        'Y' | 'm' | 'd' | 'H' | 'M' | 'S' | 'j' => {
                            flush(&mut literal, &mut parts);
                            parts.push(Part::Time(spec));
                        }
                        other => {
                            return Err(err(&format!(
                                "unsupported strftime `%{other}` (supported: %Y %m %d %H %M %S %j %%)"
                            )));
                        }
                    }
                }
                c if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=' | '/') => {
                    literal.push(c)
                }
                other => return Err(err(&format!("character {other:?} is not allowed"))),
            }
        }
        flush(&mut literal, &mut parts);
        Ok(Self {
            text: template.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether rendering reads the time.
    pub fn reads_time(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Time(_) | Part::HiveDate))
    }

    /// Whether rendering needs the parsed record.
    pub fn reads_fields(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field(_)))
    }

    /// Renders the folder for one record, without a trailing `/`.
    pub fn render(&self, ctx: &KeyContext<'_>) -> String {
        let mut out = String::with_capacity(64);
        let t = ctx.time;
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Route => confine(ctx.route, &mut out),
                Part::Source => confine(ctx.source, &mut out),
                Part::Field(path) => {
                    let mut v = ctx.record;
                    for seg in path {
                        v = v.and_then(|v| v.get(seg.as_str()));
                    }
                    match v {
                        Some(serde_json::Value::String(s)) => confine(s, &mut out),
                        Some(serde_json::Value::Null) | None => out.push('_'),
                        Some(other) => confine(&other.to_string(), &mut out),
                    }
                }
                Part::HiveDate => out.push_str(&format!(
                    "year={:04}/month={:02}/day={:02}",
                    t.year(),
                    t.month(),
                    t.day()
                )),
                Part::Time(c) => out.push_str(&match c {
                    'Y' => format!("{:04}", t.year()),
                    'm' => format!("{:02}", t.month()),
                    'd' => format!("{:02}", t.day()),
                    'H' => format!("{:02}", t.hour()),
                    'M' => format!("{:02}", t.minute()),
                    'S' => format!("{:02}", t.second()),
                    _ => format!("{:03}", t.ordinal()),
                }),
            }
        }
        while out.ends_with('/') {
            out.pop();
        }
        out
    }
}

fn flush(literal: &mut String, parts: &mut Vec<Part>) {
    if !literal.is_empty() {
        parts.push(Part::Literal(std::mem::take(literal)));
    }
}

/// Appends `value` reduced to characters that are safe in one path segment.
fn confine(value: &str, out: &mut String) {
    if value.is_empty() || value == "." || value == ".." {
        out.push('_');
        return;
    }
    out.extend(value.chars().take(128).map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=') {
            c
        } else {
            '_'
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ctx<'a>(route: &'a str, record: Option<&'a serde_json::Value>) -> KeyContext<'a> {
        KeyContext {
            route,
            source: "push",
            time: Utc.with_ymd_and_hms(2026, 3, 7, 9, 5, 1).unwrap(),
            record,
        }
    }

    #[test]
    fn renders_route_strftime_and_hive() {
        let t = KeyTemplate::parse("{route}/%Y/%m/%d/%H").unwrap();
        assert_eq!(
            t.render(&ctx("jumpcloud.sso", None)),
            "jumpcloud.sso/2026/03/07/09"
        );
        let t = KeyTemplate::parse("{source}/{hive_date}/").unwrap();
        assert_eq!(t.render(&ctx("r", None)), "push/year=2026/month=03/day=07");
        assert!(!t.reads_fields());
    }

    #[test]
    fn record_fields_are_confined() {
        let t = KeyTemplate::parse("org={.org.id}/{route}").unwrap();
        assert!(t.reads_fields());
        let rec = serde_json::json!({"org": {"id": "../../etc/passwd"}});
        assert_eq!(
            t.render(&ctx("a/b", Some(&rec))),
            "org=.._.._etc_passwd/a_b"
        );
        let rec = serde_json::json!({"org": {"id": ".."}});
        assert_eq!(t.render(&ctx("..", Some(&rec))), "org=_/_");
        let rec = serde_json::json!({"org": {"id": 42}});
        assert_eq!(t.render(&ctx("", Some(&rec))), "org=42/_");
        assert_eq!(t.render(&ctx("x", None)), "org=_/x");
    }

    #[test]
    fn rejects_escaping_and_unknown_templates() {
        for bad in [
            "/abs", "a/../b", "..", "a//b", "{nope}", "{route", "a}", "%q", "a b", "{.a..b}",
        ] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad} should be rejected");
        }
        let e = KeyTemplate::parse("{nope}").unwrap_err().to_string();
        assert!(e.contains("unknown field {nope}"), "{e}");
    }
}
