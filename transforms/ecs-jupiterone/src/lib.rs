//! `ecs-jupiterone`: one element of a JupiterOne `queryV1` result
//! (`{id, entity, properties}`) for the classes Alert, Finding and
//! Vulnerability, to the document Elastic's `jupiter_one` pipelines
//! produce. The rules are those of `shared/reference/jupiterone-ecs-rules.md`,
//! numbered as there: main pipeline D1–D16, sub-pipeline R1–R13, failure
//! kinds F1 (field removed, error recorded, go on), F2 (stop) and F3 (stop
//! the sub-pipeline, finish the main one).
//!
//! Sluice's deliberate differences from Elastic (none changes a record
//! Elastic maps without error):
//! 1. epoch-millisecond dates (JSON integers) are read instead of failing;
//! 2. `preserve_duplicate_custom_fields` and `preserve_original_event` are
//!    config switches; when on, the tag is written into `tags`;
//! 3. the route is `jupiterone.<class>` (the first of vulnerability,
//!    finding, alert in `_class`; `jupiterone.unknown` otherwise) instead
//!    of `data_stream.*`;
//! 4. where Elastic renders a list into one string (`"[A, B]"`), each
//!    element is appended as its own value, as Elastic does for approvers.
//!
//! Not reproducible offline and so not attempted: `@timestamp` (the
//! agent's publish time), agent fields, Java zone ids other than
//! `UTC`/`GMT`/`UT` in dates, and Elasticsearch's exact exception texts
//! (the `Processor <type> with tag <tag> in pipeline <p> failed with
//! message:` prefix is kept).

pub mod convert;
pub mod date;
pub mod keys;
pub mod strict;
pub mod uri;

use convert::{Target, convert, java_string};
use sluice_sdk::json;
use sluice_sdk::serde_json::{Map, Value, json};
use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};

/// The ECS version Elastic's pipelines write.
pub const ECS_VERSION: &str = "9.2.0";
const PIPELINE: &str = "logs-jupiter_one.asset";
const SUB_PIPELINE: &str = "logs-jupiter_one.asset-pipeline_risks_and_alerts";

/// The transform.
#[derive(Debug)]
pub struct EcsJupiterone {
    preserve_duplicate_custom_fields: bool,
    preserve_original_event: bool,
}

impl Transform for EcsJupiterone {
    fn new(config: Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&[
            "preserve_duplicate_custom_fields",
            "preserve_original_event",
        ])?;
        Ok(EcsJupiterone {
            preserve_duplicate_custom_fields: config
                .bool("preserve_duplicate_custom_fields", false)?,
            preserve_original_event: config.bool("preserve_original_event", false)?,
        })
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        let (doc, route) = self.map(&record.data);
        out.emit_json_routed(&doc, route);
        Ok(())
    }
}

/// Why a pipeline step stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// F2: the main pipeline stops.
    Pipeline,
    /// F3: the sub-pipeline stops.
    Sub,
}

/// The document being built and its errors.
struct Doc {
    doc: Value,
    errors: Vec<String>,
    tags: Vec<String>,
}

impl Doc {
    fn error(&mut self, ptype: &str, tag: &str, sub: bool, text: &str) {
        let pipeline = if sub { SUB_PIPELINE } else { PIPELINE };
        self.errors.push(format!(
            "Processor {ptype} with tag {tag} in pipeline {pipeline} failed with message: {text}"
        ));
    }

    fn set(&mut self, path: &str, v: Value) {
        // ECS paths have no dotted keys, so `set` can only fail if a prefix
        // holds a non-object, which these rules never create.
        let _ = json::set(&mut self.doc, path, v);
    }

    /// copy(target ← source): skip missing, null and "".
    fn copy(&mut self, target: &str, source: Option<&Value>) {
        match source {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(v) => self.set(target, v.clone()),
        }
    }

    /// append-str(target ← source), lists element by element (difference 4).
    fn append(&mut self, target: &str, source: Option<&Value>) {
        let items: Vec<String> = match source {
            None | Some(Value::Null) => return,
            Some(Value::Array(a)) => a.iter().map(render).collect(),
            Some(v) => vec![render(v)],
        };
        for item in items {
            let list = match json::get_mut(&mut self.doc, target) {
                Some(Value::Array(list)) => list,
                _ => {
                    self.set(target, Value::Array(Vec::new()));
                    match json::get_mut(&mut self.doc, target) {
                        Some(Value::Array(list)) => list,
                        _ => return,
                    }
                }
            };
            if !list.iter().any(|v| v.as_str() == Some(item.as_str())) {
                list.push(Value::String(item));
            }
        }
    }

    fn tag(&mut self, t: &str) {
        if !self.tags.iter().any(|x| x == t) {
            self.tags.push(t.to_string());
        }
    }
}

/// The `{{{…}}}` rendering: strings as they are, null as "", the rest Java `toString`.
fn render(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        other => java_string(other),
    }
}

/// "class has X": list elements compare exactly, a string is a substring
/// test. `None` when `_class` is missing, null or another type (the
/// callers decide whether that is false or an error).
fn class_has(class: Option<&Value>, x: &str) -> Option<bool> {
    match class? {
        Value::Array(a) => Some(a.iter().any(|v| v.as_str() == Some(x))),
        Value::String(s) => Some(s.contains(x)),
        _ => None,
    }
}

impl EcsJupiterone {
    /// Maps one record; returns the document and its route.
    pub fn map(&self, bytes: &[u8]) -> (Value, String) {
        let mut d = Doc {
            doc: json!({"ecs": {"version": ECS_VERSION}}),
            errors: Vec::new(),
            tags: Vec::new(),
        };
        if self.preserve_original_event {
            d.tag("preserve_original_event");
        }
        if self.preserve_duplicate_custom_fields {
            d.tag("preserve_duplicate_custom_fields");
        }
        // D4: the input, verbatim, never removed.
        d.set(
            "event.original",
            String::from_utf8_lossy(bytes).into_owned().into(),
        );
        let mut route = "jupiterone.unknown".to_string();
        // D5–D6.
        let asset = match strict::parse(bytes) {
            Ok(v) => keys::snake_all(v),
            Err(e) => {
                d.error("json", "json_event_original_into_json", false, &e);
                return (self.finish(d, None, true), route);
            }
        };
        let mut asset = if asset.is_null() { None } else { Some(asset) };
        if let Some(class) = asset
            .as_ref()
            .and_then(|a| entity(a))
            .and_then(|e| e.get("_class"))
        {
            for (name, label) in [
                ("Vulnerability", "vulnerability"),
                ("Finding", "finding"),
                ("Alert", "alert"),
            ] {
                if class_has(Some(class), name) == Some(true) {
                    route = format!("jupiterone.{label}");
                    break;
                }
            }
        }
        let halted = match asset.as_mut() {
            Some(a) => self.main(&mut d, a) == Err(Stop::Pipeline),
            None => false,
        };
        (self.finish(d, asset, halted), route)
    }

    /// D7–D14 (D13 runs R). `Err(Stop::Pipeline)` is F2.
    fn main(&self, d: &mut Doc, a: &mut Value) -> Result<(), Stop> {
        // D7
        for (part, field) in [
            ("entity", "_created_on"),
            ("entity", "_end_on"),
            ("entity", "_begin_on"),
            ("properties", "created_on"),
            ("properties", "updated_on"),
        ] {
            normalise_date(d, a, part, field, false);
        }
        // D8
        for (part, field) in [
            ("entity", "_deleted"),
            ("properties", "active"),
            ("properties", "public"),
            ("properties", "validated"),
        ] {
            convert_field(d, a, part, &[field], Target::Boolean, false);
        }
        // D9
        if let Some(v) = object_mut(a, "entity").and_then(|e| e.get_mut("_version"))
            && !v.is_null()
        {
            *v = Value::String(java_string(v));
        }
        // D10
        let class = entity(a).and_then(|e| e.get("_class")).cloned();
        d.copy("event.id", a.get("id"));
        d.copy(
            "event.created",
            entity(a).and_then(|e| e.get("_created_on")),
        );
        d.copy("event.end", entity(a).and_then(|e| e.get("_end_on")));
        d.copy("event.start", entity(a).and_then(|e| e.get("_begin_on")));
        d.copy("message", props(a).and_then(|p| p.get("description")));
        d.copy("url.original", props(a).and_then(|p| p.get("web_link")));
        if class_has(class.as_ref(), "Vulnerability") == Some(true) {
            d.copy(
                "vulnerability.description",
                props(a).and_then(|p| p.get("description")),
            );
        }
        // D11
        if let (Some(Value::String(start)), Some(Value::String(end))) = (
            json::get(&d.doc, "event.start").cloned(),
            json::get(&d.doc, "event.end").cloned(),
        ) && let (Ok(s), Ok(e)) = (date::parse(&start), date::parse(&end))
        {
            let ns = |t: sluice_sdk::time::Timestamp| {
                i128::from(t.unix_seconds) * 1_000_000_000 + i128::from(t.nanos)
            };
            let duration = ns(e) - ns(s);
            d.set(
                "event.duration",
                i64::try_from(duration).map_or(Value::Null, Value::from),
            );
        }
        // D12
        if let Some(original) = json::get(&d.doc, "url.original").cloned() {
            let parsed = match &original {
                Value::String(s) => uri::parts(s),
                other => Err(format!(
                    "field [url.original] of type [{}] cannot be cast to string",
                    json::type_name(other)
                )),
            };
            match parsed {
                Ok(parts) => d.set("url", Value::Object(parts)),
                Err(e) => {
                    json::remove(&mut d.doc, "url.original");
                    d.error("uri_parts", "uri_parts_url_original", false, &e);
                }
            }
        }
        // D13: the class test is not null-safe.
        let has = |x| class_has(class.as_ref(), x);
        let (v, al, f) = match (
            entity(a).is_some(),
            has("Vulnerability"),
            has("Alert"),
            has("Finding"),
        ) {
            (true, Some(v), Some(al), Some(f)) => (v, al, f),
            _ => {
                d.error(
                    "conditional",
                    "pipeline_pipeline_risks_and_alerts",
                    false,
                    "cannot access method/field [contains] from a null def reference",
                );
                return Err(Stop::Pipeline);
            }
        };
        if v || al || f {
            // F3 only ends R; D goes on.
            let _ = risks_and_alerts(d, a, v, f);
        }
        // D14
        if !self.preserve_duplicate_custom_fields {
            a.as_object_mut().map(|m| m.shift_remove("id"));
            if let Some(e) = object_mut(a, "entity") {
                for k in ["_created_on", "_end_on", "_begin_on"] {
                    e.shift_remove(k);
                }
            }
            if let Some(p) = object_mut(a, "properties") {
                for k in [
                    "web_link",
                    "level",
                    "device_id",
                    "user_id",
                    "device_mac_address",
                    "device_os_version",
                    "device_hostname",
                    "device_platform_name",
                    "user_name",
                ] {
                    p.shift_remove(k);
                }
            }
        }
        Ok(())
    }

    /// Puts the asset and the tags in; unless F2 `halted` the pipeline,
    /// runs D15 and D16.
    fn finish(&self, mut d: Doc, asset: Option<Value>, halted: bool) -> Value {
        if let Some(asset) = asset {
            d.set("jupiter_one.asset", asset);
        }
        if halted {
            // F2: no cleanup.
            d.set("event.kind", "pipeline_error".into());
            d.tag("preserve_original_event");
        }
        if !d.tags.is_empty() {
            let tags = d.tags.iter().map(|t| Value::String(t.clone())).collect();
            d.set("tags", Value::Array(tags));
        }
        if !d.errors.is_empty() {
            let errors = d.errors.iter().map(|e| Value::String(e.clone())).collect();
            d.set("error.message", Value::Array(errors));
        }
        if !halted {
            // D15
            json::drop_empty(&mut d.doc);
            // D16
            if !d.errors.is_empty() {
                d.set("event.kind", "pipeline_error".into());
                d.tag("preserve_original_event");
                let tags = d.tags.iter().map(|t| Value::String(t.clone())).collect();
                d.set("tags", Value::Array(tags));
            }
        }
        d.doc
    }
}

/// Sub-pipeline R. `Err` is F3 (already recorded).
fn risks_and_alerts(d: &mut Doc, a: &mut Value, v: bool, f: bool) -> Result<(), Stop> {
    // R1–R2
    d.set("event.kind", "alert".into());
    if v {
        d.append("event.category", Some(&"vulnerability".into()));
        d.append("event.type", Some(&"info".into()));
    }
    // R3
    let Some(p) = object_mut(a, "properties") else {
        d.error(
            "dot_expander",
            "dot_expander_from_properties",
            true,
            "field [properties] not present as part of path [jupiter_one.asset.properties]",
        );
        return sub_failure(d);
    };
    if let Err(key) = expand_dots(p) {
        d.error(
            "dot_expander",
            &format!("dot_expander_from_{}", key.replace('.', "_")),
            true,
            &format!("cannot expand [{key}], because a prefix of it is not an object"),
        );
        return sub_failure(d);
    }
    // R4
    for field in ["approved_on", "reported_on", "detected_on", "published_on"] {
        normalise_date(d, a, "properties", field, true);
    }
    // R5–R8
    for field in [
        "total_number_of_affected_entities",
        "numeric_severity",
        "remediation_sla",
        "exploit_status",
    ] {
        convert_field(d, a, "properties", &[field], Target::Long, true);
    }
    for field in ["exploitability", "impact", "score"] {
        convert_field(d, a, "properties", &[field], Target::Double, true);
    }
    for field in [
        &["open"][..],
        &["approved"],
        &["exception"],
        &["production"],
        &["blocks_production"],
        &["tag", "production"],
        &["blocking"],
    ] {
        convert_field(d, a, "properties", field, Target::Boolean, true);
    }
    for field in ["device_local_ip", "device_external_ip"] {
        if props(a).and_then(|p| p.get(field)).and_then(Value::as_str) != Some("") {
            convert_field(d, a, "properties", &[field], Target::Ip, true);
        }
    }
    let p = props(a).cloned().unwrap_or_default();
    // R9
    d.append("related.user", p.get("reporter"));
    d.append("related.ip", p.get("device_local_ip"));
    d.append("related.user", p.get("user_id"));
    d.append("related.ip", p.get("device_external_ip"));
    d.append("related.hosts", p.get("device_hostname"));
    d.append("related.user", p.get("user_name"));
    if let Some(Value::Array(approvers)) = p.get("approvers") {
        for approver in approvers {
            d.append("related.user", Some(&Value::String(render(approver))));
        }
    }
    // R10
    d.copy("log.level", p.get("level"));
    if let Some(level) = json::get(&d.doc, "log.level").cloned() {
        let lowered = match &level {
            Value::String(s) => Some(Value::String(s.to_lowercase())),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(|s| Value::String(s.to_lowercase())))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array),
            _ => None,
        };
        match lowered {
            Some(l) => d.set("log.level", l),
            None => {
                d.error(
                    "lowercase",
                    "lowercase_log_level",
                    true,
                    &format!(
                        "field [log.level] of type [{}] cannot be cast to [java.lang.String]",
                        json::type_name(&level)
                    ),
                );
                return sub_failure(d);
            }
        }
    }
    // R11
    if v {
        d.copy("vulnerability.id", p.get("cve_id"));
        d.copy("vulnerability.score.base", p.get("score"));
        d.copy("vulnerability.severity", p.get("severity"));
    }
    d.copy("host.id", p.get("device_id"));
    if f {
        d.copy("threat.indicator.file.name", p.get("filename"));
    }
    d.copy("user.id", p.get("user_id"));
    if f {
        d.copy("threat.indicator.file.path", p.get("filepath"));
        d.copy("threat.indicator.ip", p.get("device_external_ip"));
    }
    d.copy("host.os.version", p.get("device_os_version"));
    d.copy("host.hostname", p.get("device_hostname"));
    d.copy("host.os.platform", p.get("device_platform_name"));
    d.copy("user.name", p.get("user_name"));
    // R12
    if v {
        d.append("vulnerability.category", p.get("category"));
    }
    if f {
        d.append("threat.technique.name", p.get("technique"));
    }
    d.append("host.mac", p.get("device_mac_address"));
    if f {
        d.append("threat.technique.id", p.get("technique_id"));
        d.append("threat.tactic.id", p.get("tactic_id"));
        d.append("threat.tactic.name", p.get("tactic"));
    }
    // R13
    if p.get("cve_id").is_some_and(|c| !c.is_null()) {
        d.set("vulnerability.enumeration", "CVE".into());
    }
    Ok(())
}

/// F3: recorded as a pipeline error; the main pipeline carries on.
fn sub_failure(d: &mut Doc) -> Result<(), Stop> {
    d.set("event.kind", "pipeline_error".into());
    d.tag("preserve_original_event");
    Err(Stop::Sub)
}

/// R3: expands each top-level dotted key of `p` into nested objects. A
/// key whose path meets a non-object is an error (the key is already gone).
fn expand_dots(p: &mut Map<String, Value>) -> Result<(), String> {
    let dotted: Vec<String> = p
        .keys()
        .filter(|k| k.find('.').is_some_and(|i| i > 0))
        .cloned()
        .collect();
    for key in dotted {
        let Some(value) = p.shift_remove(&key) else {
            continue;
        };
        let segments: Vec<&str> = key.split('.').collect();
        let (leaf, parents) = segments.split_last().expect("a dotted key has segments");
        let mut node = &mut *p;
        for seg in parents {
            let next = node
                .entry((*seg).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            node = match next {
                Value::Object(m) => m,
                _ => return Err(key),
            };
        }
        match node.get_mut(*leaf) {
            None => {
                node.insert((*leaf).to_string(), value);
            }
            Some(existing) => {
                let mut merged = match existing.take() {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                match value {
                    Value::Array(a) => merged.extend(a),
                    other => merged.push(other),
                }
                *existing = Value::Array(merged);
            }
        }
    }
    Ok(())
}

fn entity(a: &Value) -> Option<&Map<String, Value>> {
    a.get("entity")?.as_object()
}

fn props(a: &Value) -> Option<&Map<String, Value>> {
    a.get("properties")?.as_object()
}

fn object_mut<'a>(a: &'a mut Value, part: &str) -> Option<&'a mut Map<String, Value>> {
    a.get_mut(part)?.as_object_mut()
}

/// D7/R4: one date field; F1 on failure.
fn normalise_date(d: &mut Doc, a: &mut Value, part: &str, field: &str, sub: bool) {
    let Some(obj) = object_mut(a, part) else {
        return;
    };
    let Some(v) = obj.get(field) else { return };
    if v.is_null() || v.as_str() == Some("") {
        return;
    }
    match date::normalise(v) {
        Ok(s) => {
            obj.insert(field.to_string(), Value::String(s));
        }
        Err(e) => {
            obj.shift_remove(field);
            let tag = format!(
                "date_jupiter_one_asset_{part}_{field}_into_jupiter_one_asset_{part}_{field}"
            );
            d.error("date", &tag, sub, &e);
        }
    }
}

/// D8/R5–R8: one conversion; F1 on failure. `path` is under `part`.
fn convert_field(d: &mut Doc, a: &mut Value, part: &str, path: &[&str], target: Target, sub: bool) {
    let Some((leaf, parents)) = path.split_last() else {
        return;
    };
    let Some(mut obj) = object_mut(a, part) else {
        return;
    };
    for p in parents {
        obj = match obj.get_mut(*p).and_then(Value::as_object_mut) {
            Some(o) => o,
            None => return,
        };
    }
    let Some(v) = obj.get(*leaf) else { return };
    if v.is_null() {
        return;
    }
    match convert(v, target) {
        Ok(new) => {
            obj.insert((*leaf).to_string(), new);
        }
        Err(e) => {
            obj.shift_remove(*leaf);
            let name = match target {
                Target::Boolean => "boolean",
                Target::Long => "long",
                Target::Double => "double",
                Target::Ip => "ip",
            };
            let tag = format!(
                "convert_jupiter_one_asset_{part}_{}_to_{name}",
                path.join("_")
            );
            d.error("convert", &tag, sub, &e);
        }
    }
}

sluice_sdk::export!(EcsJupiterone);

#[cfg(test)]
mod tests;
