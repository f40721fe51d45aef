use super::*;
use sluice_sdk::serde_json::json;
use sluice_sdk::testing::Harness;

const KEY: &str = "0123456789abcdef-test-key";

fn run(config: &[(&str, &str)], input: &str) -> String {
    let mut h = Harness::<Redact>::new(config).unwrap();
    let out = h.run_line(input).unwrap();
    assert_eq!(out.len(), 1);
    out[0].clone()
}

fn run_json(config: &[(&str, &str)], input: Value) -> Value {
    sluice_sdk::serde_json::from_str(&run(config, &input.to_string())).unwrap()
}

#[test]
fn untouched_records_are_byte_identical() {
    let input = r#"{"a": 1.50, "b":"no pii here", "n": 1E3}"#;
    assert_eq!(run(&[("detectors", "email:mask,ipv4:mask")], input), input);
}

#[test]
fn field_paths_with_each_action() {
    let cfg = [
        (
            "fields",
            "user.name:hash, user.password:drop, initiated_by.username:mask",
        ),
        ("hash_key", KEY),
    ];
    let out = run_json(
        &cfg,
        json!({"user": {"name": "jane.doe", "password": "hunter2", "id": 7}, "initiated_by": {"username": "admin"}}),
    );
    assert_eq!(out["user"]["name"].as_str().unwrap().len(), 64);
    assert!(out["user"].get("password").is_none());
    assert_eq!(out["user"]["id"], 7, "untouched");
    assert_eq!(out["initiated_by"]["username"], "a***");
}

#[test]
fn hash_is_keyed_and_deterministic() {
    let cfg = [("fields", "u:hash"), ("hash_key", KEY)];
    let a = run_json(&cfg, json!({"u": "jane"}));
    let b = run_json(&cfg, json!({"u": "jane", "x": 1}));
    assert_eq!(
        a["u"], b["u"],
        "equal values, equal tokens: joins still work"
    );
    let other = run_json(
        &[("fields", "u:hash"), ("hash_key", "another-key-of-16+")],
        json!({"u": "jane"}),
    );
    assert_ne!(a["u"], other["u"], "the token depends on the key");
    // HMAC-SHA256("0123456789abcdef-test-key", "jane"), computed independently.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(b"jane");
    assert_eq!(a["u"], hex::encode(mac.finalize().into_bytes()));
}

#[test]
fn wildcards_reach_arrays_and_any_key() {
    let cfg = [("fields", "users.*.email:mask, meta.*:drop")];
    let out = run_json(
        &cfg,
        json!({"users": [{"email": "a@x.io"}, {"email": "b@y.io", "n": 1}], "meta": {"k1": 1, "k2": 2}, "keep": true}),
    );
    assert_eq!(out["users"][0]["email"], "a***");
    assert_eq!(out["users"][1]["n"], 1);
    assert_eq!(out["meta"], json!({}));
    assert_eq!(out["keep"], true);
}

#[test]
fn detectors_mask_inside_text_and_keep_a_hint() {
    let cfg = [(
        "detectors",
        "email:mask, ipv4:mask, ipv6:mask, imsi:mask, iccid:mask, imei:mask, msisdn:mask",
    )];
    let out = run_json(
        &cfg,
        json!({
            "message": "login by jane.doe@example.com from 203.0.113.10 and 2001:db8:1:2::7",
            "imsi": "295050901064821",
            "iccid": "89883030000080139311",
            "imei": "490154203237518",
            "msisdn": "+4915123456789",
            "nested": [{"contact": "ops@corp.example"}],
            "count": 42
        }),
    );
    assert_eq!(
        out["message"],
        "login by ***@example.com from 203.0.x.x and 2001:db8::x"
    );
    assert_eq!(out["imsi"], "29505**********");
    assert_eq!(out["iccid"], "8988303*************");
    assert_eq!(out["imei"], "49015420*******");
    assert_eq!(out["msisdn"], "+49***********");
    assert_eq!(out["nested"][0]["contact"], "***@corp.example");
    assert_eq!(out["count"], 42);
}

#[test]
fn detector_hash_and_drop() {
    let cfg = [("detectors", "email:hash, ipv4:drop"), ("hash_key", KEY)];
    let out = run_json(
        &cfg,
        json!({"to": "Mail a@b.io", "ips": ["10.1.2.3", "none"], "src": "10.0.0.1"}),
    );
    let to = out["to"].as_str().unwrap();
    assert!(to.starts_with("Mail ") && to.len() == 5 + 64, "{to}");
    assert_eq!(
        out["ips"],
        json!(["none"]),
        "the element holding an address is removed"
    );
    assert!(
        out.get("src").is_none(),
        "the field holding an address is removed"
    );
}

#[test]
fn integers_are_scanned_but_never_as_msisdn() {
    let cfg = [("detectors", "imsi:mask, msisdn:mask")];
    let out = run_json(
        &cfg,
        json!({"imsi": 295050901064821u64, "created": 1755879780646u64}),
    );
    assert_eq!(out["imsi"], "29505**********");
    assert_eq!(
        out["created"], 1755879780646u64,
        "an epoch-millis number is left alone"
    );
}

#[test]
fn field_rules_run_before_detectors_and_are_not_rescanned() {
    let cfg = [
        ("fields", "user:hash"),
        ("detectors", "imsi:mask"),
        ("hash_key", KEY),
    ];
    let out = run_json(&cfg, json!({"user": "x", "other": "295050901064821"}));
    assert_eq!(out["user"].as_str().unwrap().len(), 64);
    assert_eq!(out["other"], "29505**********");
}

#[test]
fn config_errors() {
    assert!(Harness::<Redact>::new(&[]).is_err(), "nothing to do");
    let e = Harness::<Redact>::new(&[("fields", "a:hash")]).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("hash_key"));
    assert!(Harness::<Redact>::new(&[("fields", "a:hash"), ("hash_key", "short")]).is_err());
    let e = Harness::<Redact>::new(&[("detectors", "ssn:mask")]).unwrap_err();
    assert!(
        e.message.contains("unknown detector") && e.message.contains("imei"),
        "{}",
        e.message
    );
    assert!(Harness::<Redact>::new(&[("fields", "a:erase")]).is_err());
    assert!(Harness::<Redact>::new(&[("fields", "a..b:mask")]).is_err());
    assert!(Harness::<Redact>::new(&[("fields", "a:mask"), ("colour", "x")]).is_err());
}

#[test]
fn non_json_is_an_error_not_a_leak() {
    let mut h = Harness::<Redact>::new(&[("detectors", "email:mask")]).unwrap();
    assert!(h.run_line("jane@example.com is not JSON").is_err());
}

#[test]
fn keep_leaves_an_id_of_an_identifier_s_shape_exactly_as_it_is() {
    // emnify's usage record: its 15-digit `id` starts with 3, so the IMSI
    // detector would take it; `id:keep` leaves it, as a number.
    let cfg = [
        ("fields", "id:keep, endpoint.imei:mask"),
        ("detectors", "imsi:hash, imei:hash"),
        ("hash_key", KEY),
    ];
    let out = run_json(
        &cfg,
        json!({"id": 333333333333333u64, "imsi": "295050901064821",
               "endpoint": {"imei": "8677300511111142"}, "other": 333333333333333u64}),
    );
    assert_eq!(
        out["id"],
        json!(333333333333333u64),
        "kept, and still a number"
    );
    assert_eq!(
        out["other"].as_str().map(str::len),
        Some(64),
        "not kept: hashed"
    );
    assert_eq!(out["imsi"].as_str().map(str::len), Some(64));
    assert_eq!(
        out["endpoint"]["imei"], "8***",
        "the field rule (a first-character mask), not the detector"
    );
    // Kept alone: nothing changes, so the bytes are the input's.
    let mut h =
        Harness::<Redact>::new(&[("fields", "id:keep"), ("detectors", "imsi:mask")]).unwrap();
    let line = r#"{"id":333333333333333, "n": 1}"#;
    assert_eq!(h.run_line(line).unwrap(), vec![line]);
    // A detector may not keep.
    let e = Harness::<Redact>::new(&[("detectors", "imsi:keep")]).unwrap_err();
    assert!(e.message.contains("mask, hash or drop"), "{}", e.message);
}
