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

use sluice_sdk::dom::{Node, Object};
use sluice_sdk::time::parse_rfc3339;
use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};
use std::borrow::Cow;
use std::net::IpAddr;

/// The ECS version Elastic's pipeline writes.
pub const ECS_VERSION: &str = "8.11.0";

/// The raw fields the mapping reads, found in one pass over the event's
/// keys (a `match` on each key) instead of one dotted-path lookup per rule:
/// the lookups were a third of the transform's time.
#[derive(Default)]
struct Fields<'n, 'a> {
    timestamp: Option<&'n Node<'a>>,
    client_ip: Option<&'n Node<'a>>,
    src_ip: Option<&'n Node<'a>>,
    event_type: Option<&'n Node<'a>>,
    id: Option<&'n Node<'a>>,
    message: Option<&'n Node<'a>>,
    at_version: Option<&'n Node<'a>>,
    version: Option<&'n Node<'a>>,
    system: Option<&'n Node<'a>>,
    initiated_by: Option<&'n Node<'a>>,
    username: Option<&'n Node<'a>>,
    useragent: Option<&'n Node<'a>>,
    service: Option<&'n Node<'a>>,
    process_name: Option<&'n Node<'a>>,
    sso_token_success: Option<&'n Node<'a>>,
    success: Option<&'n Node<'a>>,
    geoip: Option<&'n Node<'a>>,
}

impl<'n, 'a> Fields<'n, 'a> {
    fn of(event: &'n Object<'a>) -> Self {
        let mut f = Fields::default();
        for (key, value) in event.iter() {
            let slot = match key {
                "timestamp" => &mut f.timestamp,
                "client_ip" => &mut f.client_ip,
                "src_ip" => &mut f.src_ip,
                "event_type" => &mut f.event_type,
                "id" => &mut f.id,
                "message" => &mut f.message,
                "@version" => &mut f.at_version,
                "version" => &mut f.version,
                "system" => &mut f.system,
                "initiated_by" => &mut f.initiated_by,
                "username" => &mut f.username,
                "useragent" => &mut f.useragent,
                "service" => &mut f.service,
                "process_name" => &mut f.process_name,
                "sso_token_success" => &mut f.sso_token_success,
                "success" => &mut f.success,
                "geoip" => &mut f.geoip,
                _ => continue,
            };
            *slot = Some(value);
        }
        f
    }
}

/// Rule 18: removes the raw fields that were copied, in one pass over the
/// event's keys. Elastic's `remove` does not prune parents it empties, so a
/// `system` holding only `id` and `hostname` stays as `{}`.
fn remove_duplicated(event: &mut Object<'_>) {
    event.retain(|key, value| {
        let nested: &[&str] = match key {
            "version" | "timestamp" | "client_ip" | "src_ip" | "id" | "message" | "username"
            | "useragent" | "event_type" | "service" | "process_name" => return false,
            "system" => &["id", "hostname"],
            "initiated_by" => &["id", "email", "username"],
            _ => return true,
        };
        if let Some(o) = value.as_object_mut()
            && nested.iter().any(|k| o.get(k).is_some())
        {
            // One pass (a removal shifts the members after it).
            o.retain(|k, _| !nested.contains(&k));
        }
        true
    });
}

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
        // The whole mapping borrows from the input: keys and strings point
        // into `record.data` (see `sluice_sdk::dom`), and so does
        // `event.original`, which is the input text itself.
        let data = &record.data;
        // One UTF-8 check serves the parse and `event.original`.
        let text = sluice_sdk::dom::str_from_utf8(data);
        let parsed = match text {
            Ok(text) => Node::parse_str(text),
            Err(_) => Node::parse(data),
        };
        let service = parsed
            .as_ref()
            .ok()
            .and_then(|v| v.get_str("service"))
            .unwrap_or("unknown");
        let mut route = String::with_capacity("jumpcloud.".len() + service.len());
        route.push_str("jumpcloud.");
        route.push_str(service);
        // Valid UTF-8 whenever it parsed as JSON; `from_utf8` is the fast
        // check, the lossy copy only serves broken input.
        let original = match text {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(data),
        };
        let doc = match parsed.map_err(|e| format!("cannot parse event as JSON: {e}")) {
            Ok(event) => match self.map(event) {
                Ok(mut doc) => {
                    // 2: into the `event` object `map` created, so key
                    // order is as if it had been set there.
                    doc.set("event.original", original.into())?;
                    doc
                }
                Err(e) => self.failure(original, &e),
            },
            Err(e) => self.failure(original, &e),
        };
        // Written straight into the call's answer, which the SDK sizes from
        // the calls before (a 723-byte event gives about 2,000 bytes).
        out.emit_routed_with(route, |buf| doc.write_json(buf));
        Ok(())
    }
}

impl EcsJumpcloud {
    /// Maps one event; `Err` carries the failure message (rule 20).
    fn map<'a>(&self, mut ev: Node<'a>) -> Result<Node<'a>, String> {
        // 4: over the whole document; the only other fields at that point
        // are ecs.version and event.original, which are never empty.
        ev.drop_empty();
        // 5.
        if !ev.is_object() {
            return Err("missing json object in input document".into());
        }
        // Room for every top-level field the rules can set.
        let mut doc = Node::Object(Object::with_capacity(16));
        let set = |doc: &mut Node<'a>, path: &'static str, v: Node<'a>| {
            doc.set(path, v).map(|_| ()).map_err(|e| e.to_string())
        };
        set(&mut doc, "ecs.version", ECS_VERSION.into())?;
        // `event.*` members are gathered here and set as one object at the
        // end; `event` itself takes its place in the document when its first
        // member would have created it (see `event_member`).
        // Room for category, type, id, action, module, outcome, original.
        let mut event = Object::with_capacity(7);
        // Every read of the raw event goes through `f`; the event changes
        // (rules 12 and 18) only after the last read.
        let f = Fields::of(ev.as_object().expect("checked above"));

        // 8.
        let ts = f
            .timestamp
            .ok_or("field [timestamp] not present as part of path [jumpcloud.event.timestamp]")?;
        let ts = ts
            .as_str()
            .ok_or("jumpcloud.event.timestamp is not a string")?;
        let ts = parse_rfc3339(ts).map_err(|e| format!("unable to parse date: {e}"))?;
        set(&mut doc, "@timestamp", ts.to_rfc3339_millis().into())?;

        // 9.
        for (from, to, v) in [
            ("client_ip", "client.ip", f.client_ip),
            ("src_ip", "source.ip", f.src_ip),
        ] {
            if let Some(v) = v {
                let ip = v
                    .as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .ok_or_else(|| {
                        format!(
                            "'{}' is not an IP string literal (jumpcloud.event.{from})",
                            value_text(v)
                        )
                    })?;
                // An IPv4 address parses only in its canonical form (Rust
                // refuses leading zeros), so the input string can be reused;
                // IPv6 is normalised (`2001:DB8:0::1` → `2001:db8::1`).
                let ip = match ip {
                    IpAddr::V4(_) => v.clone(),
                    IpAddr::V6(_) => ip.to_string().into(),
                };
                set(&mut doc, to, ip)?;
            }
        }

        // 10.
        if let Some(category) = f.event_type.and_then(Node::as_str).and_then(category) {
            event_member(
                &mut doc,
                &mut event,
                "category",
                vec![category.into()].into(),
            )?;
            event_member(&mut doc, &mut event, "type", vec!["info".into()].into())?;
        }

        // 11.
        if let Some(v) = f.id {
            event_member(&mut doc, &mut event, "id", v.clone())?;
        }
        if let Some(v) = f.message {
            set(&mut doc, "message", v.clone())?;
        }

        // 12 (the rename itself waits until the reads are done; no rule
        // below reads `version` or `@version`).
        let rename_version = f.at_version.is_some();
        if rename_version && f.version.is_some() {
            return Err(
                "field [version] already exists (renaming jumpcloud.event.@version)".into(),
            );
        }

        // 13: the pipeline's straight copies, in its order (`host.id` from
        // `system.id`, …). `host`, `source.user` and `user_agent` are new to
        // the document here, so each is built as one object and set once
        // instead of a path walk per member; the members' order is the
        // pipeline's.
        let gather = |parent: Option<&Node<'a>>, pairs: &[(&'static str, &str)]| {
            let Some(parent) = parent.and_then(Node::as_object) else {
                return Object::new();
            };
            let mut o = Object::with_capacity(pairs.len());
            for &(to, from) in pairs {
                if let Some(v) = parent.get(from) {
                    o.insert(to, v.clone());
                }
            }
            o
        };
        let host = gather(f.system, &[("id", "id"), ("hostname", "hostname")]);
        let user = gather(
            f.initiated_by,
            &[("id", "id"), ("email", "email"), ("name", "username")],
        );
        let device = gather(f.useragent, &[("name", "device")]);
        let mut agent = Object::with_capacity(4);
        if !device.is_empty() {
            agent.insert("device", device.into());
        }
        if let Some(ua) = f.useragent.and_then(Node::as_object) {
            for key in ["name", "version"] {
                if let Some(v) = ua.get(key) {
                    agent.insert(key, v.clone());
                }
            }
        }
        let os = gather(
            f.useragent,
            &[
                ("name", "os_name"),
                ("full", "os_full"),
                ("version", "os_version"),
            ],
        );
        if !os.is_empty() {
            agent.insert("os", os.into());
        }
        for (to, o) in [("host", host), ("source.user", user)] {
            if !o.is_empty() {
                set(&mut doc, to, o.into())?;
            }
        }
        if let Some(v) = f.username {
            set(&mut doc, "user.name", v.clone())?;
        }
        if !agent.is_empty() {
            set(&mut doc, "user_agent", agent.into())?;
        }
        for (key, v) in [("action", f.event_type), ("module", f.service)] {
            if let Some(v) = v {
                event_member(&mut doc, &mut event, key, v.clone())?;
            }
        }
        if let Some(v) = f.process_name {
            set(&mut doc, "process.name", v.clone())?;
        }

        // 14.
        let mut outcome = "unknown";
        for field in [f.sso_token_success, f.success] {
            match field {
                Some(Node::Bool(true)) => outcome = "success",
                Some(Node::Bool(false)) => outcome = "failure",
                _ => {}
            }
        }
        event_member(&mut doc, &mut event, "outcome", outcome.into())?;
        // Replaces the placeholder, in its place.
        set(&mut doc, "event", event.into())?;

        // 15 (section 3): JumpCloud's own geoip, not a GeoIP database.
        if self.geo_from_event
            && doc.get("client.ip").is_some()
            && let Some(geo) = f.geoip.and_then(Node::as_object)
        {
            // Built as one object and set once (it is new to `client`).
            let geo = client_geo(geo);
            if !geo.is_empty() {
                set(&mut doc, "client.geo", geo.into())?;
            }
        }

        // 16.
        if let Some(ip) = doc.get("source.ip").cloned() {
            set(&mut doc, "related.ip", vec![ip].into())?;
        }
        if let Some(user) = doc.get("source.user.name").cloned() {
            set(&mut doc, "related.user", vec![user].into())?;
        }

        // The raw event changes from here on.
        if rename_version {
            ev.rename("@version", "version")
                .map_err(|e| e.to_string())?;
        }
        // 18.
        if !self.preserve_duplicate_custom_fields
            && let Some(event) = ev.as_object_mut()
        {
            remove_duplicated(event);
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
    fn failure<'a>(&self, original: Cow<'a, str>, message: &str) -> Node<'a> {
        let mut doc = Node::Object(Object::new());
        let fields: [(&str, Node<'a>); 5] = [
            ("ecs.version", ECS_VERSION.into()),
            ("event.original", original.into()),
            ("event.kind", "pipeline_error".into()),
            ("error.message", vec![message.to_string().into()].into()),
            ("tags", self.tags(&["preserve_original_event"]).into()),
        ];
        for (path, value) in fields {
            doc.set(path, value)
                .expect("a fresh object holds these paths");
        }
        doc
    }

    fn tags<'a>(&self, extra: &[&'static str]) -> Vec<Node<'a>> {
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
        tags.into_iter().map(Node::from).collect()
    }
}

/// Adds `event.<key>` to the `event` object being gathered. The first
/// member also puts an empty `event` into `doc`, where setting
/// `event.<key>` would have created it, so that the keys' order stays the
/// pipeline's when the gathered object replaces it.
fn event_member<'a>(
    doc: &mut Node<'a>,
    event: &mut Object<'a>,
    key: &'static str,
    value: Node<'a>,
) -> Result<(), String> {
    if event.is_empty() {
        doc.set("event", Object::new().into())
            .map_err(|e| e.to_string())?;
    }
    event.insert(key, value);
    Ok(())
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

/// `client.geo` from JumpCloud's `geoip` object (section 3).
fn client_geo<'a>(geo: &Object<'a>) -> Object<'a> {
    let s = |k: &str| geo.get(k).filter(|v| v.as_str().is_some()).cloned();
    let mut out = Object::with_capacity(6);
    if let Some(v) = s("continent_code") {
        out.insert("continent_code", v);
    }
    if let Some(country) = s("country_code") {
        let region = match (
            country.as_str(),
            geo.get("region_code").and_then(Node::as_str),
        ) {
            (Some(c), Some(r)) => Some(format!("{c}-{r}")),
            _ => None,
        };
        out.insert("country_iso_code", country);
        if let Some(r) = region {
            out.insert("region_iso_code", r.into());
        }
    }
    if let Some(v) = s("region_name") {
        out.insert("region_name", v);
    }
    if let Some(v) = s("timezone") {
        out.insert("timezone", v);
    }
    if let (Some(lat), Some(lon)) = (
        geo.get("latitude").and_then(Node::as_f64),
        geo.get("longitude").and_then(Node::as_f64),
    ) {
        let mut location = Object::new();
        location.insert("lat", lat.into());
        location.insert("lon", lon.into());
        out.insert("location", location.into());
    }
    out
}

fn value_text(v: &Node<'_>) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

sluice_sdk::export!(EcsJumpcloud);

#[cfg(test)]
mod tests;
