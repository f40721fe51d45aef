//! `redact`: removes PII before data leaves the site. Works on any JSON and
//! changes nothing that no rule matches: a record without a match is
//! emitted byte for byte as it came.
//!
//! Rules come from config, each with an action:
//! - `fields`: comma-separated `path:action`, e.g.
//!   `user.name:hash, initiated_by.username:hash, password:drop`. Paths are
//!   dotted; `*` matches any key or array index (`users.*.email`). User
//!   names are redacted this way (no detector can tell a name).
//! - `detectors`: comma-separated `detector:action` over every string value
//!   (and integer values, for the digit-based detectors except `msisdn`):
//!   `email, ipv4, ipv6, imsi, msisdn, iccid, imei` (see [`detect`]).
//! - `hash_key`: the HMAC key, required when an action is `hash`. Use
//!   `${env:NAME}` or `${file:/path}` in the gateway config so it is not
//!   written in the file.
//!
//! Actions:
//! - `mask`: a fixed replacement that keeps a hint ([`mask`]): an email's
//!   domain, an IPv4's first two octets, an IPv6's first two groups, an
//!   IMSI's MCC+MNC, an ICCID's issuer prefix, an IMEI's TAC (device
//!   model), an MSISDN's country code; a field's first character.
//! - `hash`: HMAC-SHA256 of the value with `hash_key`, as 64 lowercase hex
//!   digits, so equal values give equal tokens and joins still work, but
//!   without the key a token cannot be reversed by guessing inputs.
//! - `drop`: a field rule removes the field; a detector match removes the
//!   whole value that contained it (the key from its object, the element
//!   from its array).
//! - `keep` (field rules only): the value stays exactly as it is and the
//!   detectors do not look at it, for ids that have an identifier's shape
//!   (emnify's 15-digit record `id` reads as an IMSI).
//!
//! Field rules run first, in order; a value a field rule changed or kept is
//! not changed by a later rule or scanned by the detectors.

pub mod detect;

use detect::{Detector, scan};
use hmac::Mac;
use sluice_sdk::serde_json::{Map, Value};
use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};

/// What happens to a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replace with a hint-keeping mask.
    Mask,
    /// Replace with an HMAC-SHA256 token.
    Hash,
    /// Remove.
    Drop,
    /// Leave as it is, unscanned (field rules only).
    Keep,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mask" => Action::Mask,
            "hash" => Action::Hash,
            "drop" => Action::Drop,
            "keep" => Action::Keep,
            _ => return None,
        })
    }
}

/// The transform.
#[derive(Debug)]
pub struct Redact {
    fields: Vec<(Vec<String>, Action)>,
    detectors: Vec<(Detector, Action)>,
    key: Option<Vec<u8>>,
}

fn parse_rules<T>(
    config: &Config,
    key: &str,
    parse: impl Fn(&str) -> Option<T>,
    what: &str,
) -> Result<Vec<(T, Action)>, ConfigError> {
    let Some(list) = config.get(key) else {
        return Ok(Vec::new());
    };
    let mut rules = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (target, action) = item
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::key(key, format!("{item:?}: expected `{what}:action`")))?;
        let target = parse(target.trim())
            .ok_or_else(|| ConfigError::key(key, format!("{item:?}: unknown {what}")))?;
        let action = Action::parse(action.trim())
            .filter(|a| *a != Action::Keep || key == "fields")
            .ok_or_else(|| {
                let actions = if key == "fields" {
                    "mask, hash, drop or keep"
                } else {
                    "mask, hash or drop"
                };
                ConfigError::key(key, format!("{item:?}: action must be {actions}"))
            })?;
        rules.push((target, action));
    }
    Ok(rules)
}

impl Transform for Redact {
    fn new(config: Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&["fields", "detectors", "hash_key"])?;
        let fields = parse_rules(
            &config,
            "fields",
            |p| {
                let path: Vec<String> = p.split('.').map(str::to_string).collect();
                (!path.iter().any(String::is_empty)).then_some(path)
            },
            "path",
        )?;
        let detectors =
            parse_rules(&config, "detectors", Detector::parse, "detector").map_err(|e| {
                ConfigError::key(
                    "detectors",
                    format!("{} (detectors: {})", e.message, Detector::NAMES),
                )
            })?;
        if fields.is_empty() && detectors.is_empty() {
            return Err(ConfigError::general(
                "nothing to redact: set `fields` and/or `detectors`",
            ));
        }
        let hashes = fields.iter().any(|f| f.1 == Action::Hash)
            || detectors.iter().any(|d| d.1 == Action::Hash);
        let key = config.get("hash_key").map(|k| k.as_bytes().to_vec());
        match &key {
            None if hashes => {
                return Err(ConfigError::key(
                    "hash_key",
                    "required by the `hash` action",
                ));
            }
            Some(k) if k.len() < 16 => {
                return Err(ConfigError::key(
                    "hash_key",
                    "use at least 16 bytes, or tokens can be brute-forced",
                ));
            }
            _ => {}
        }
        Ok(Redact {
            fields,
            detectors,
            key,
        })
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        let mut doc = record.json()?;
        let mut changed = false;
        // Kept values are set aside (a marked placeholder in their place)
        // while the other rules and the detectors run, then put back.
        let mut kept = Vec::new();
        for (path, action) in &self.fields {
            if *action == Action::Keep {
                for_each_match(&mut doc, path, &mut |v| {
                    let index = kept.len();
                    kept.push(std::mem::replace(
                        v,
                        Value::String(format!("{DONE}{KEPT}{index}")),
                    ));
                });
            } else {
                changed |= self.apply_field(&mut doc, path, *action);
            }
        }
        if !self.detectors.is_empty() {
            changed |= self.scan_value(&mut doc);
        }
        if changed {
            restore(&mut doc, &mut kept);
            unmark(&mut doc);
            out.emit_json(&doc);
        } else {
            // Untouched: the exact input bytes, not a re-serialisation.
            out.emit(record.data);
        }
        Ok(())
    }
}

/// Marks values a field rule produced, so detectors skip them.
const DONE: &str = "\u{0}redacted\u{0}";

/// After [`DONE`]: the placeholder of the kept value with this index.
const KEPT: &str = "kept:";

impl Redact {
    fn token(&self, value: &str) -> String {
        let key = self.key.as_deref().unwrap_or_default();
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Applies one field rule everywhere its path matches.
    fn apply_field(&self, doc: &mut Value, path: &[String], action: Action) -> bool {
        let Some((last, parents)) = path.split_last() else {
            return false;
        };
        let mut changed = false;
        for parent in select(doc, parents) {
            let keys: Vec<String> = match parent {
                Value::Object(m) if last == "*" => m.keys().cloned().collect(),
                Value::Object(m) if m.contains_key(last) => vec![last.clone()],
                Value::Array(a) if last == "*" => (0..a.len()).map(|i| i.to_string()).collect(),
                _ => Vec::new(),
            };
            match parent {
                Value::Object(m) => {
                    for k in keys {
                        changed |= self.apply_to_slot(m, &k, action);
                    }
                }
                Value::Array(a) => {
                    if action == Action::Drop {
                        changed |= !a.is_empty();
                        a.clear();
                    } else {
                        for v in a.iter_mut() {
                            changed |= self.replace(v, action, None);
                        }
                    }
                }
                _ => {}
            }
        }
        changed
    }

    fn apply_to_slot(&self, m: &mut Map<String, Value>, key: &str, action: Action) -> bool {
        if action == Action::Drop {
            return m.shift_remove(key).is_some();
        }
        m.get_mut(key)
            .is_some_and(|v| self.replace(v, action, None))
    }

    /// Replaces a whole value (a field rule, or a detector match that is
    /// the whole value). Null stays null; objects and arrays are replaced
    /// leaf by leaf.
    fn replace(&self, v: &mut Value, action: Action, detector: Option<Detector>) -> bool {
        match v {
            Value::Null => false,
            Value::Object(m) => {
                let mut changed = false;
                for (_, child) in m.iter_mut() {
                    changed |= self.replace(child, action, detector);
                }
                changed
            }
            Value::Array(a) => {
                let mut changed = false;
                for child in a.iter_mut() {
                    changed |= self.replace(child, action, detector);
                }
                changed
            }
            Value::String(s) if s.starts_with(DONE) => false,
            other => {
                let text = match &mut *other {
                    Value::String(s) => std::mem::take(s),
                    v => v.to_string(),
                };
                let new = match action {
                    Action::Hash => self.token(&text),
                    _ => mask(&text, detector),
                };
                *other = Value::String(format!("{DONE}{new}"));
                true
            }
        }
    }

    /// Runs the detectors over every string (and integer) value.
    fn scan_value(&self, v: &mut Value) -> bool {
        let enabled: Vec<Detector> = self.detectors.iter().map(|d| d.0).collect();
        self.scan_inner(v, &enabled)
    }

    fn scan_inner(&self, v: &mut Value, enabled: &[Detector]) -> bool {
        match v {
            Value::Object(m) => {
                let mut changed = false;
                let mut dropped = Vec::new();
                for (k, child) in m.iter_mut() {
                    match self.scan_leaf(child, enabled) {
                        Leaf::Drop => dropped.push(k.clone()),
                        Leaf::Changed => changed = true,
                        Leaf::Same => changed |= self.scan_inner(child, enabled),
                    }
                }
                for k in &dropped {
                    m.shift_remove(k);
                }
                changed || !dropped.is_empty()
            }
            Value::Array(a) => {
                let before = a.len();
                let mut changed = false;
                a.retain_mut(|child| match self.scan_leaf(child, enabled) {
                    Leaf::Drop => false,
                    Leaf::Changed => {
                        changed = true;
                        true
                    }
                    Leaf::Same => {
                        changed |= self.scan_inner(child, enabled);
                        true
                    }
                });
                changed || a.len() != before
            }
            _ => false,
        }
    }

    /// Scans one leaf (a string or an integer).
    fn scan_leaf(&self, v: &mut Value, enabled: &[Detector]) -> Leaf {
        let (text, is_number) = match v {
            Value::String(s) if !s.starts_with(DONE) => (s.clone(), false),
            Value::Number(n) if n.is_u64() => (n.to_string(), true),
            _ => return Leaf::Same,
        };
        let mut found = scan(&text, enabled);
        if is_number {
            // A number is never an MSISDN: counters, ids and epoch times
            // have the same shape.
            found.retain(|f| f.detector != Detector::Msisdn && f.range == (0..text.len()));
        }
        if found.is_empty() {
            return Leaf::Same;
        }
        let action_of = |d: Detector| {
            self.detectors
                .iter()
                .find(|r| r.0 == d)
                .map_or(Action::Mask, |r| r.1)
        };
        if found.iter().any(|f| action_of(f.detector) == Action::Drop) {
            return Leaf::Drop;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in &found {
            out.push_str(&text[at..f.range.start]);
            let hit = &text[f.range.clone()];
            match action_of(f.detector) {
                Action::Hash => out.push_str(&self.token(hit)),
                _ => out.push_str(&mask(hit, Some(f.detector))),
            }
            at = f.range.end;
        }
        out.push_str(&text[at..]);
        *v = Value::String(out);
        Leaf::Changed
    }
}

enum Leaf {
    Same,
    Changed,
    Drop,
}

/// Calls `f` on every value `path` (with `*` wildcards) reaches.
fn for_each_match(doc: &mut Value, path: &[String], f: &mut dyn FnMut(&mut Value)) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    for parent in select(doc, parents) {
        match parent {
            Value::Object(m) if last == "*" => m.iter_mut().for_each(|(_, v)| f(v)),
            Value::Object(m) => {
                if let Some(v) = m.get_mut(last) {
                    f(v);
                }
            }
            Value::Array(a) if last == "*" => a.iter_mut().for_each(&mut *f),
            Value::Array(a) => {
                if let Some(v) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    f(v);
                }
            }
            _ => {}
        }
    }
}

/// Puts the kept values back in place of their placeholders.
fn restore(v: &mut Value, kept: &mut [Value]) {
    match v {
        Value::String(s) => {
            let index = s
                .strip_prefix(DONE)
                .and_then(|rest| rest.strip_prefix(KEPT))
                .and_then(|i| i.parse::<usize>().ok());
            if let Some(held) = index.and_then(|i| kept.get_mut(i)) {
                *v = std::mem::take(held);
            }
        }
        Value::Object(m) => m.iter_mut().for_each(|(_, c)| restore(c, kept)),
        Value::Array(a) => a.iter_mut().for_each(|c| restore(c, kept)),
        _ => {}
    }
}

/// Removes the field-rule markers.
fn unmark(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Some(rest) = s.strip_prefix(DONE) {
                *s = rest.to_string();
            }
        }
        Value::Object(m) => m.iter_mut().for_each(|(_, c)| unmark(c)),
        Value::Array(a) => a.iter_mut().for_each(unmark),
        _ => {}
    }
}

/// Every value reached by `path` (with `*` wildcards) from `root`.
fn select<'a>(root: &'a mut Value, path: &[String]) -> Vec<&'a mut Value> {
    let Some((head, rest)) = path.split_first() else {
        return vec![root];
    };
    if head == "*" {
        return match root {
            Value::Object(m) => m.iter_mut().flat_map(|(_, v)| select(v, rest)).collect(),
            Value::Array(a) => a.iter_mut().flat_map(|v| select(v, rest)).collect(),
            _ => Vec::new(),
        };
    }
    match root {
        Value::Object(m) => m.get_mut(head).map(|v| select(v, rest)).unwrap_or_default(),
        Value::Array(a) => head
            .parse::<usize>()
            .ok()
            .and_then(|i| a.get_mut(i))
            .map(|v| select(v, rest))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The hint-keeping mask of a value.
pub fn mask(value: &str, detector: Option<Detector>) -> String {
    let keep = |n: usize| {
        let kept: String = value.chars().take(n).collect();
        let hidden = value.chars().count().saturating_sub(n);
        format!("{kept}{}", "*".repeat(hidden))
    };
    match detector {
        Some(Detector::Email) => match value.rsplit_once('@') {
            Some((_, domain)) => format!("***@{domain}"),
            None => "***".into(),
        },
        Some(Detector::Ipv4) => {
            let mut parts = value.splitn(3, '.');
            match (parts.next(), parts.next()) {
                (Some(a), Some(b)) => format!("{a}.{b}.x.x"),
                _ => "x.x.x.x".into(),
            }
        }
        Some(Detector::Ipv6) => {
            let groups: Vec<&str> = value.split(':').filter(|g| !g.is_empty()).take(2).collect();
            format!("{}::x", groups.join(":"))
        }
        // MCC + MNC (5 digits; a 3-digit MNC leaves one more hidden).
        Some(Detector::Imsi) => keep(5),
        // `89` + country code + issuer.
        Some(Detector::Iccid) => keep(7),
        // Type Allocation Code: the device model, not the device.
        Some(Detector::Imei) => keep(8),
        // `+` and up to 3 digits of country code.
        Some(Detector::Msisdn) => keep(if value.starts_with('+') { 3 } else { 2 }),
        None => {
            if value.is_empty() {
                String::new()
            } else {
                keep(1).chars().take(1).chain("***".chars()).collect()
            }
        }
    }
}

sluice_sdk::export!(Redact);

#[cfg(test)]
mod tests;
