//! `ecs-jumpcloud`: one JumpCloud Directory Insights event, exactly as the
//! API returns it, to the ECS document Elastic's `jumpcloud` integration
//! produces (`shared/reference/jumpcloud.md` section 2, pipeline 1.22.0).
//!
//! Rules, in the pipeline's order (numbers as in the reference):
//! 1. `ecs.version` = `8.11.0`; 2–3. `event.original` = the input bytes
//!    verbatim; 4. drop empty values (Elastic's `dropEmptyFields`);
//!    5–6. the event must be an object and goes under `jumpcloud.event`;
//!    8. `@timestamp` from `timestamp`, milliseconds, truncated;
//!    9. `client.ip` / `source.ip` from `client_ip` / `src_ip` (must be IPs);
//!    10. `event.category` / `event.type` by `event_type`;
//!    11. `event.id`, `message`; 12. `@version` → `version` (fails if
//!    `version` exists, as 1.22.0 does); 13. straight copies;
//!    14. `event.outcome`; 15. `client.geo.*` from JumpCloud's own `geoip`
//!    (config `geo_from_event`, section 3; Elastic uses its GeoIP database);
//!    16. `related.ip`, `related.user`; 18. removal of duplicated raw fields
//!    unless `preserve_duplicate_custom_fields`; 20. failures become a
//!    `pipeline_error` document, never a crash or a silent drop.
//!
//! Route: `jumpcloud.<service>` (`jumpcloud.unknown` without a service),
//! the per-service split Devo's collector makes.

use sluice_sdk::json;
use sluice_sdk::serde_json::{Map, Value, json};
use sluice_sdk::time::parse_rfc3339;
use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};
use std::net::IpAddr;

/// The ECS version Elastic's pipeline writes.
pub const ECS_VERSION: &str = "8.11.0";

/// Raw fields removed once copied (rule 18), under `jumpcloud.event`.
const DUPLICATED: &[&str] = &[
    "version",
    "timestamp",
    "client_ip",
    "src_ip",
    "id",
    "message",
    "system.id",
    "system.hostname",
    "initiated_by.id",
    "initiated_by.email",
    "initiated_by.username",
    "username",
    "useragent",
    "event_type",
    "service",
    "process_name",
];

/// Straight copies (rule 13): ECS field ← raw field under `jumpcloud.event`.
const COPIES: &[(&str, &str)] = &[
    ("host.id", "system.id"),
    ("host.hostname", "system.hostname"),
    ("source.user.id", "initiated_by.id"),
    ("source.user.email", "initiated_by.email"),
    ("source.user.name", "initiated_by.username"),
    ("user.name", "username"),
    ("user_agent.device.name", "useragent.device"),
    ("user_agent.name", "useragent.name"),
    ("user_agent.version", "useragent.version"),
    ("user_agent.os.name", "useragent.os_name"),
    ("user_agent.os.full", "useragent.os_full"),
    ("user_agent.os.version", "useragent.os_version"),
    ("event.action", "event_type"),
    ("event.module", "service"),
    ("process.name", "process_name"),
];

/// The transform's settings.
#[derive(Debug)]
pub struct EcsJumpcloud {
    preserve_duplicate_custom_fields: bool,
    preserve_original_event: bool,
    geo_from_event: bool,
}

impl Transform for EcsJumpcloud {
    fn new(config: Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&[
            "preserve_duplicate_custom_fields",
            "preserve_original_event",
            "geo_from_event",
        ])?;
        Ok(EcsJumpcloud {
            preserve_duplicate_custom_fields: config
                .bool("preserve_duplicate_custom_fields", false)?,
            preserve_original_event: config.bool("preserve_original_event", false)?,
            geo_from_event: config.bool("geo_from_event", true)?,
        })
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        let parsed: Result<Value, _> = sluice_sdk::serde_json::from_slice(&record.data);
        let service = parsed
            .as_ref()
            .ok()
            .and_then(|v| json::get_str(v, "service"))
            .map(str::to_string);
        let route = format!("jumpcloud.{}", service.as_deref().unwrap_or("unknown"));
        // The bytes move into `event.original` without a copy when they are
        // UTF-8 (they are whenever they parsed as JSON).
        let original = String::from_utf8(record.data)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let doc = match parsed.map_err(|e| format!("cannot parse event as JSON: {e}")) {
            Ok(event) => match self.map(event) {
                Ok(mut doc) => {
                    // 2: into the `event` object `map` created, so key
                    // order is as if it had been set there.
                    json::set(&mut doc, "event.original", Value::String(original))?;
                    doc
                }
                Err(e) => self.failure(original, &e),
            },
            Err(e) => self.failure(original, &e),
        };
        out.emit_json_routed(&doc, route);
        Ok(())
    }
}

impl EcsJumpcloud {
    /// Maps one event; `Err` carries the failure message (rule 20).
    fn map(&self, mut ev: Value) -> Result<Value, String> {
        // 4: over the whole document; the only other fields at that point
        // are ecs.version and event.original, which are never empty.
        json::drop_empty(&mut ev);
        // 5.
        if !ev.is_object() {
            return Err("missing json object in input document".into());
        }
        let mut doc = json!({"ecs": {"version": ECS_VERSION}});
        let set = |doc: &mut Value, path: &str, v: Value| {
            json::set(doc, path, v)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };

        // 8.
        let ts = json::get(&ev, "timestamp")
            .ok_or("field [timestamp] not present as part of path [jumpcloud.event.timestamp]")?;
        let ts = ts
            .as_str()
            .ok_or("jumpcloud.event.timestamp is not a string")?;
        let ts = parse_rfc3339(ts).map_err(|e| format!("unable to parse date: {e}"))?;
        set(&mut doc, "@timestamp", ts.to_rfc3339_millis().into())?;

        // 9.
        for (from, to) in [("client_ip", "client.ip"), ("src_ip", "source.ip")] {
            if let Some(v) = json::get(&ev, from) {
                let ip = v
                    .as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .ok_or_else(|| {
                        format!(
                            "'{}' is not an IP string literal (jumpcloud.event.{from})",
                            value_text(v)
                        )
                    })?;
                set(&mut doc, to, ip.to_string().into())?;
            }
        }

        // 10.
        if let Some(category) = json::get_str(&ev, "event_type").and_then(category) {
            set(&mut doc, "event.category", json!([category]))?;
            set(&mut doc, "event.type", json!(["info"]))?;
        }

        // 11.
        for (to, from) in [("event.id", "id"), ("message", "message")] {
            if let Some(v) = json::get(&ev, from) {
                set(&mut doc, to, v.clone())?;
            }
        }

        // 12.
        if json::get(&ev, "@version").is_some() {
            if json::get(&ev, "version").is_some() {
                return Err(
                    "field [version] already exists (renaming jumpcloud.event.@version)".into(),
                );
            }
            json::rename(&mut ev, "@version", "version").map_err(|e| e.to_string())?;
        }

        // 13.
        for (to, from) in COPIES {
            if let Some(v) = json::get(&ev, from) {
                set(&mut doc, to, v.clone())?;
            }
        }

        // 14.
        let mut outcome = "unknown";
        for field in ["sso_token_success", "success"] {
            match json::get(&ev, field) {
                Some(Value::Bool(true)) => outcome = "success",
                Some(Value::Bool(false)) => outcome = "failure",
                _ => {}
            }
        }
        set(&mut doc, "event.outcome", outcome.into())?;

        // 15 (section 3): JumpCloud's own geoip, not a GeoIP database.
        if self.geo_from_event
            && json::get(&doc, "client.ip").is_some()
            && let Some(geo) = json::get(&ev, "geoip").and_then(Value::as_object)
        {
            for (to, value) in client_geo(geo) {
                set(&mut doc, to, value)?;
            }
        }

        // 16.
        if let Some(ip) = json::get(&doc, "source.ip").cloned() {
            set(&mut doc, "related.ip", json!([ip]))?;
        }
        if let Some(user) = json::get(&doc, "source.user.name").cloned() {
            set(&mut doc, "related.user", json!([user]))?;
        }

        // 18.
        if !self.preserve_duplicate_custom_fields {
            // Elastic's `remove` does not prune parents it empties, so a
            // `system` holding only `id` and `hostname` stays as `{}`.
            for path in DUPLICATED {
                json::remove(&mut ev, path);
            }
        }

        // 6 (placed last so the raw fields can be read above).
        set(&mut doc, "jumpcloud.event", ev)?;
        let tags = self.tags(&[]);
        if !tags.is_empty() {
            set(&mut doc, "tags", tags.into())?;
        }
        Ok(doc)
    }

    /// The failure document of rule 20: the original kept, the error said.
    fn failure(&self, original: String, message: &str) -> Value {
        json!({
            "ecs": {"version": ECS_VERSION},
            "event": {"original": original, "kind": "pipeline_error"},
            "error": {"message": [message]},
            "tags": self.tags(&["preserve_original_event"]),
        })
    }

    fn tags(&self, extra: &[&str]) -> Vec<Value> {
        let mut tags: Vec<&str> = Vec::new();
        if self.preserve_original_event {
            tags.push("preserve_original_event");
        }
        if self.preserve_duplicate_custom_fields {
            tags.push("preserve_duplicate_custom_fields");
        }
        for t in extra {
            if !tags.contains(t) {
                tags.push(t);
            }
        }
        tags.into_iter().map(Value::from).collect()
    }
}

/// Rule 10's table.
fn category(event_type: &str) -> Option<&'static str> {
    match event_type {
        "ldap_bind" | "user_login_attempt" | "sso_auth" | "admin_login_attempt" => {
            Some("authentication")
        }
        "user_password_warning_email"
        | "user_password_reset_request"
        | "user_activation_email"
        | "user_unlocked" => Some("iam"),
        _ => None,
    }
}

/// `client.geo.*` from JumpCloud's `geoip` object (section 3).
fn client_geo(geo: &Map<String, Value>) -> Vec<(&'static str, Value)> {
    let s = |k: &str| geo.get(k).and_then(Value::as_str);
    let mut out = Vec::new();
    if let Some(v) = s("continent_code") {
        out.push(("client.geo.continent_code", v.into()));
    }
    if let Some(v) = s("country_code") {
        out.push(("client.geo.country_iso_code", v.into()));
        if let Some(r) = s("region_code") {
            out.push(("client.geo.region_iso_code", format!("{v}-{r}").into()));
        }
    }
    if let Some(v) = s("region_name") {
        out.push(("client.geo.region_name", v.into()));
    }
    if let Some(v) = s("timezone") {
        out.push(("client.geo.timezone", v.into()));
    }
    if let (Some(lat), Some(lon)) = (
        geo.get("latitude").and_then(Value::as_f64),
        geo.get("longitude").and_then(Value::as_f64),
    ) {
        out.push(("client.geo.location", json!({"lat": lat, "lon": lon})));
    }
    out
}

fn value_text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

sluice_sdk::export!(EcsJumpcloud);

#[cfg(test)]
mod tests;
