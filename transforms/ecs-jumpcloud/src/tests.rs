//! One test per mapping rule (numbers as in the module docs).

use super::*;
use sluice_sdk::serde_json::{Value, json};
use sluice_sdk::testing::Harness;

fn directory_login() -> Value {
    json!({
        "id": "65f1c0de9a8b7c6d5e4f0001",
        "event_type": "user_login_attempt",
        "service": "directory",
        "timestamp": "2025-06-18T01:40:48.953462371Z",
        "success": true,
        "client_ip": "81.2.69.144",
        "organization": "5f0c1d2e3a4b5c6d7e8f9a0b",
        "username": "jane.doe",
        "mfa": true,
        "provider": null,
        "error_message": "",
        "initiated_by": {"id": "5f0c1d2e3a4b5c6d7e8f9a01", "type": "user", "username": "jane.doe", "email": "jane@example.com"},
        "geoip": {"continent_code": "EU", "country_code": "GB", "region_code": "ENG", "region_name": "England",
                  "timezone": "Europe/London", "latitude": 51.5142, "longitude": -0.0931},
        "useragent": {"name": "Chrome", "major": "125", "os": "Mac OS X", "os_name": "Mac OS X",
                      "os_full": "Mac OS X 10.15.7", "os_version": "10.15.7", "device": "Mac", "version": "125.0.0.0"},
        "changes": [{"field": "x", "from": null, "to": 1}],
        "@version": "1"
    })
}

fn run(config: &[(&str, &str)], input: &str) -> (Value, Option<String>) {
    let mut h = Harness::<EcsJumpcloud>::new(config).unwrap();
    let mut outs = h.run_outputs(input).unwrap();
    assert_eq!(outs.len(), 1, "always exactly one document");
    let o = outs.remove(0);
    (
        sluice_sdk::serde_json::from_slice(&o.data).unwrap(),
        o.route,
    )
}

fn map(event: &Value) -> Value {
    run(&[], &event.to_string()).0
}

#[test]
fn full_directory_login_document() {
    let input = directory_login().to_string();
    let (doc, route) = run(&[], &input);
    assert_eq!(route.as_deref(), Some("jumpcloud.directory"));
    let expected = json!({
        "ecs": {"version": "8.11.0"},
        "@timestamp": "2025-06-18T01:40:48.953Z",
        "client": {"ip": "81.2.69.144", "geo": {
            "continent_code": "EU", "country_iso_code": "GB", "region_iso_code": "GB-ENG",
            "region_name": "England", "timezone": "Europe/London",
            "location": {"lat": 51.5142, "lon": -0.0931}}},
        "event": {"category": ["authentication"], "type": ["info"], "id": "65f1c0de9a8b7c6d5e4f0001",
                  "action": "user_login_attempt", "module": "directory", "outcome": "success",
                  "original": input},
        "source": {"user": {"id": "5f0c1d2e3a4b5c6d7e8f9a01", "email": "jane@example.com", "name": "jane.doe"}},
        "user": {"name": "jane.doe"},
        "user_agent": {"device": {"name": "Mac"}, "name": "Chrome", "version": "125.0.0.0",
                       "os": {"name": "Mac OS X", "full": "Mac OS X 10.15.7", "version": "10.15.7"}},
        "related": {"user": ["jane.doe"]},
        "jumpcloud": {"event": {
            "success": true, "organization": "5f0c1d2e3a4b5c6d7e8f9a0b", "mfa": true,
            "initiated_by": {"type": "user"},
            "geoip": {"continent_code": "EU", "country_code": "GB", "region_code": "ENG", "region_name": "England",
                      "timezone": "Europe/London", "latitude": 51.5142, "longitude": -0.0931},
            "changes": [{"field": "x", "to": 1}]
        }}
    });
    assert_eq!(doc, expected);
}

#[test]
fn rule_2_original_is_the_input_bytes_verbatim() {
    let input = "{ \"timestamp\" : \"2023-03-07T13:03:42Z\",\"service\":\"sso\",\"b\":1,\"a\":2 }";
    let (doc, _) = run(&[], input);
    assert_eq!(doc["event"]["original"], input);
}

#[test]
fn rule_4_empty_values_are_dropped_false_and_zero_kept() {
    let doc = map(
        &json!({"timestamp": "2023-03-07T13:03:42Z", "provider": null, "error_message": "",
                          "success": false, "error_code": 0, "outer": {"username": ""}, "list": [null, "", "x"]}),
    );
    let ev = &doc["jumpcloud"]["event"];
    assert_eq!(
        ev,
        &json!({"success": false, "error_code": 0, "list": ["x"]})
    );
}

#[test]
fn rule_8_timestamp_to_milliseconds_from_any_fraction() {
    for (ts, want) in [
        ("2023-01-14T08:16:06.495Z", "2023-01-14T08:16:06.495Z"),
        ("2023-03-07T13:01:19.21859368Z", "2023-03-07T13:01:19.218Z"),
        ("2025-06-18T01:40:48.953462371Z", "2025-06-18T01:40:48.953Z"),
        ("2023-03-07T13:03:42Z", "2023-03-07T13:03:42.000Z"),
        ("2023-03-07T15:03:42.5+02:00", "2023-03-07T13:03:42.500Z"),
    ] {
        assert_eq!(map(&json!({"timestamp": ts}))["@timestamp"], want, "{ts}");
    }
}

#[test]
fn rule_9_ips_are_parsed_and_normalised() {
    let doc = map(
        &json!({"timestamp": "2023-03-07T13:03:42Z", "client_ip": "2001:DB8::1", "src_ip": "10.0.0.1"}),
    );
    assert_eq!(doc["client"]["ip"], "2001:db8::1");
    assert_eq!(doc["source"]["ip"], "10.0.0.1");
    assert_eq!(
        doc["related"]["ip"],
        json!(["10.0.0.1"]),
        "rule 16: source.ip is related, client.ip is not"
    );
    // IPv4 strings are reused as given: only the canonical form parses.
    for odd in ["10.0.0.01", "010.0.0.1", " 10.0.0.1", "10.0.1"] {
        let doc = map(&json!({"timestamp": "2023-03-07T13:03:42Z", "src_ip": odd}));
        assert_eq!(doc["event"]["kind"], "pipeline_error", "{odd}");
    }
}

#[test]
fn rule_10_categories_only_for_the_listed_event_types() {
    for (t, cat) in [
        ("ldap_bind", Some("authentication")),
        ("sso_auth", Some("authentication")),
        ("admin_login_attempt", Some("authentication")),
        ("user_unlocked", Some("iam")),
        ("user_password_reset_request", Some("iam")),
        ("radius_auth", None),
        ("login_attempt", None),
        ("ldap_search", None),
        ("user_create", None),
    ] {
        let doc = map(&json!({"timestamp": "2023-03-07T13:03:42Z", "event_type": t}));
        match cat {
            Some(c) => {
                assert_eq!(doc["event"]["category"], json!([c]), "{t}");
                assert_eq!(doc["event"]["type"], json!(["info"]), "{t}");
            }
            None => assert!(
                doc["event"].get("category").is_none() && doc["event"].get("type").is_none(),
                "{t}"
            ),
        }
        assert_eq!(doc["event"]["action"], t);
    }
}

#[test]
fn rule_11_12_id_message_and_version() {
    let doc = map(
        &json!({"timestamp": "2023-03-07T13:03:42Z", "id": "abc", "message": "hello", "@version": "1"}),
    );
    assert_eq!(doc["event"]["id"], "abc");
    assert_eq!(doc["message"], "hello");
    assert!(
        doc["jumpcloud"]["event"].get("version").is_none(),
        "version is a duplicated field (rule 18)"
    );
    let (doc, _) = run(
        &[("preserve_duplicate_custom_fields", "true")],
        &json!({"timestamp": "2023-03-07T13:03:42Z", "@version": "1"}).to_string(),
    );
    assert_eq!(doc["jumpcloud"]["event"]["version"], "1");
    assert!(doc["jumpcloud"]["event"].get("@version").is_none());
}

#[test]
fn rule_12_version_and_at_version_together_fail_like_elastic_1_22() {
    let doc = map(&json!({"timestamp": "2023-03-07T13:03:42Z", "@version": "1", "version": "2"}));
    assert_eq!(doc["event"]["kind"], "pipeline_error");
    assert!(
        doc["error"]["message"][0]
            .as_str()
            .unwrap()
            .contains("[version] already exists")
    );
}

#[test]
fn rule_13_copies_module_is_the_service_and_systems_fields() {
    let doc = map(
        &json!({"timestamp": "2023-03-07T13:03:42Z", "service": "systems", "event_type": "login_attempt",
                          "system": {"id": "sys1", "hostname": "mac-1", "displayName": "Mac 1"},
                          "process_name": "loginwindow"}),
    );
    assert_eq!(doc["event"]["module"], "systems");
    assert_eq!(doc["host"], json!({"id": "sys1", "hostname": "mac-1"}));
    assert_eq!(doc["process"]["name"], "loginwindow");
    assert_eq!(
        doc["jumpcloud"]["event"]["system"],
        json!({"displayName": "Mac 1"})
    );
}

#[test]
fn rule_14_outcome_success_overrides_sso_token_success() {
    let ts = "2023-03-07T13:03:42Z";
    let outcome = |ev: Value| map(&ev)["event"]["outcome"].clone();
    assert_eq!(outcome(json!({"timestamp": ts})), "unknown");
    assert_eq!(
        outcome(json!({"timestamp": ts, "sso_token_success": false})),
        "failure"
    );
    assert_eq!(
        outcome(json!({"timestamp": ts, "sso_token_success": false, "success": true})),
        "success"
    );
    assert_eq!(
        outcome(json!({"timestamp": ts, "sso_token_success": true, "success": false})),
        "failure"
    );
    assert_eq!(
        outcome(json!({"timestamp": ts, "success": "true"})),
        "unknown",
        "only booleans count"
    );
}

#[test]
fn rule_15_geo_from_event_is_a_switch_and_geoip_is_kept() {
    let ev = directory_login().to_string();
    let (on, _) = run(&[], &ev);
    assert_eq!(on["client"]["geo"]["country_iso_code"], "GB");
    let (off, _) = run(&[("geo_from_event", "false")], &ev);
    assert!(off["client"].get("geo").is_none());
    assert_eq!(off["jumpcloud"]["event"]["geoip"]["country_code"], "GB");
}

#[test]
fn rule_18_preserve_duplicate_custom_fields_keeps_raw_fields_and_tags() {
    let ev = directory_login().to_string();
    let (doc, _) = run(
        &[
            ("preserve_duplicate_custom_fields", "true"),
            ("preserve_original_event", "yes"),
        ],
        &ev,
    );
    let raw = &doc["jumpcloud"]["event"];
    for f in [
        "timestamp",
        "client_ip",
        "id",
        "username",
        "useragent",
        "event_type",
        "service",
        "version",
    ] {
        assert!(raw.get(f).is_some(), "{f} kept");
    }
    assert_eq!(raw["initiated_by"]["username"], "jane.doe");
    assert_eq!(
        doc["tags"],
        json!([
            "preserve_original_event",
            "preserve_duplicate_custom_fields"
        ])
    );
}

#[test]
fn rule_20_bad_input_becomes_a_pipeline_error_document() {
    for (input, needle) in [
        ("not json", "cannot parse event as JSON"),
        ("[1,2]", "missing json object in input document"),
        (
            r#"{"timestamp":"2023-03-07T13:03:42Z","client_ip":"not-an-ip","service":"sso"}"#,
            "'not-an-ip' is not an IP",
        ),
        (r#"{"service":"ldap"}"#, "field [timestamp] not present"),
        (r#"{"timestamp":"yesterday"}"#, "unable to parse date"),
    ] {
        let (doc, route) = run(&[], input);
        assert_eq!(doc["event"]["kind"], "pipeline_error", "{input}");
        assert_eq!(doc["event"]["original"], input);
        assert_eq!(doc["tags"], json!(["preserve_original_event"]));
        let msg = doc["error"]["message"][0].as_str().unwrap();
        assert!(msg.contains(needle), "{input}: {msg}");
        assert!(route.unwrap().starts_with("jumpcloud."));
    }
    let (_, route) = run(&[], r#"{"timestamp":"x","service":"sso"}"#);
    assert_eq!(
        route.as_deref(),
        Some("jumpcloud.sso"),
        "failures keep the service route"
    );
}

#[test]
fn config_is_checked() {
    assert_eq!(
        Harness::<EcsJumpcloud>::new(&[("geo", "1")])
            .unwrap_err()
            .key
            .as_deref(),
        Some("geo")
    );
    assert!(Harness::<EcsJumpcloud>::new(&[("geo_from_event", "maybe")]).is_err());
}
