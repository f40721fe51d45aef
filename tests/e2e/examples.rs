//! The configs under `examples/`, one per real scenario: each passes
//! `sluice check` as written, with its secrets from the environment, and
//! runs end to end against the API stubs and the S3 test server. For the
//! run only the addresses change: the state folder, listeners on port 0
//! with a generated certificate, the stubs' URLs and CA, and the S3 test
//! server's endpoint, CA, keys and a fresh bucket.

use crate::builtins::emnify_lines;
use crate::gw::Gateway;
use crate::s3::{Lake, lake, objects, settled_lines};
use crate::stubs;
use hyper::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

const EMNIFY_PASSWORD: &str = "emnify-stream-password-1234";
const REDACT_KEY: &str = "redact-key-0123456789abcdef";

/// Every secret the examples read, as the environment gives them.
const SECRETS: &[(&str, &str)] = &[
    ("EMNIFY_STREAM_PASSWORD", EMNIFY_PASSWORD),
    ("REDACT_KEY", REDACT_KEY),
    ("JC_API_KEY", "jc-test-key"),
    ("J1_API_TOKEN", "j1-token"),
    ("SLUICE_PUSH_TOKEN", "quickstart-token"),
];

fn example_path(name: &str) -> String {
    format!("{}/../examples/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_example_passes_check_as_written_with_its_secrets_from_the_environment() {
    for name in [
        "quickstart",
        "emnify",
        "emnify-redacted",
        "jumpcloud",
        "jupiterone",
        "j1ds",
        "cluster",
    ] {
        let mut cmd = crate::support::sluice();
        cmd.args(["check", "--config", &example_path(name)])
            .envs(SECRETS.iter().copied());
        let run = crate::support::run_with(cmd, "", Duration::from_secs(60));
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert!(run.stdout.contains(": ok ("), "{name}: {}", run.stdout);
        // The secrets are read from the environment, never written in.
        let text = std::fs::read_to_string(example_path(name)).unwrap();
        for (_, value) in SECRETS {
            assert!(!text.contains(value), "{name} holds a secret");
        }
    }
    let mut cmd = crate::support::sluice();
    cmd.args(["check", "--config", &example_path("emnify")]);
    let run = crate::support::run_with(cmd, "", Duration::from_secs(60));
    run.expect_failure(2, "environment variable EMNIFY_STREAM_PASSWORD is not set");
}

/// The example as a TOML table, pointed at the test servers.
fn localize(name: &str, dir: &Path, lake: &Lake) -> toml::Table {
    let text = std::fs::read_to_string(example_path(name)).unwrap();
    let mut doc: toml::Table = text.parse().unwrap();
    doc.insert(
        "state_dir".into(),
        dir.join("state").display().to_string().into(),
    );
    let admin = doc
        .entry("admin")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    admin
        .as_table_mut()
        .unwrap()
        .insert("address".into(), "127.0.0.1:0".into());
    // The harness reads the listener's address: poller-only examples get
    // one that nothing uses.
    let listeners = doc
        .entry("listeners")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap();
    if listeners.is_empty() {
        listeners.insert("unused".into(), toml::Value::Table(toml::Table::new()));
    }
    for (_, l) in listeners.iter_mut() {
        let l = l.as_table_mut().unwrap();
        l.insert("address".into(), "127.0.0.1:0".into());
        let mut tls = toml::Table::new();
        tls.insert("self_signed".into(), true.into());
        l.insert("tls".into(), tls.into());
    }
    let env = lake.env;
    for (_, sink) in doc["sinks"].as_table_mut().unwrap().iter_mut() {
        let s = sink.as_table_mut().unwrap();
        assert_eq!(
            s["type"].as_str(),
            Some("s3"),
            "{name}: the examples write to S3"
        );
        for (k, v) in [
            ("bucket", lake.bucket.as_str()),
            ("endpoint", env.get("SLUICE_TEST_S3_ENDPOINT")),
            ("ca_file", env.get("SLUICE_TEST_S3_CA")),
            ("checksum", "when_required"),
            ("access_key_id", env.get("SLUICE_TEST_S3_ACCESS_KEY")),
            ("secret_access_key", "${env:SLUICE_TEST_S3_SECRET}"),
        ] {
            s.insert(k.into(), v.into());
        }
        let mut rotate = toml::Table::new();
        rotate.insert("max_age_secs".into(), 0.3.into());
        s.insert("rotate".into(), rotate.into());
    }
    doc
}

/// Points a poller source at a stub.
fn to_stub(doc: &mut toml::Table, source: &str, stub: &stubs::Stub, trailing_slash: bool) {
    let s = doc["sources"][source].as_table_mut().unwrap();
    let url = if trailing_slash {
        format!("{}/", stub.url())
    } else {
        stub.url()
    };
    s.insert("base_url".into(), url.into());
    s.insert("ca_file".into(), stub.cert.display().to_string().into());
    s.insert("interval_secs".into(), 1.into());
}

fn start(dir: &Path, doc: &toml::Table) -> Gateway {
    let text = toml::to_string(doc).unwrap();
    std::fs::write(dir.join("sluice.toml"), text).unwrap();
    let secret = crate::s3env::s3_env()
        .get("SLUICE_TEST_S3_SECRET_KEY")
        .to_string();
    let mut env: Vec<(&str, &str)> = SECRETS.to_vec();
    env.push(("SLUICE_TEST_S3_SECRET", &secret));
    Gateway::start_with_env(dir, &env)
}

fn basic_auth() -> String {
    use base64::Engine;
    let creds =
        base64::engine::general_purpose::STANDARD.encode(format!("emnify:{EMNIFY_PASSWORD}"));
    format!("Basic {creds}")
}

/// Pushes every emnify usage and event example (Bulk: a JSON array) to the
/// example's two sources; returns how many of each.
async fn push_emnify_fixtures(gw: &Gateway) -> (usize, usize) {
    let auth = basic_auth();
    let mut counts = (0, 0);
    for (source, dir, count) in [
        ("emnify-usage", "usage", &mut counts.0),
        ("emnify-events", "events", &mut counts.1),
    ] {
        let lines = emnify_lines(dir);
        *count = lines.lines().count();
        let body = format!("[{}]", lines.lines().collect::<Vec<_>>().join(","));
        let r = gw
            .client()
            .push(
                source,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{source}: {}", r.body);
        assert_eq!(r.json()["accepted"], *count);
    }
    counts
}

/// CSV rows (header excluded) of the objects whose name starts with `kind`.
fn rows<'a>(data: &'a BTreeMap<String, Vec<String>>, prefix: &str, kind: &str) -> Vec<&'a str> {
    data.iter()
        .filter(|(k, _)| {
            k.strip_prefix(prefix)
                .is_some_and(|name| name.starts_with(kind))
        })
        .flat_map(|(_, lines)| lines[1..].iter().map(String::as_str))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emnify_example_lands_usage_and_events_in_emnifys_layout() {
    let lake = lake().await;
    let dir = lake.dir.path();
    let doc = localize("emnify", dir, &lake);
    let gw = start(dir, &doc);
    // Wrong credentials are refused before anything is read.
    let r = gw
        .client()
        .push(
            "emnify-usage",
            &[("authorization", "Basic ZW1uaWZ5Ondyb25n")],
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let (usage, events) = push_emnify_fixtures(&gw).await;
    // Each object has a header row.
    let mut data = BTreeMap::new();
    for _ in 0..50 {
        data = settled_lines(&lake.admin, &lake.bucket, usage + events).await;
        if rows(&data, "emnify/", "cdr_").len() + rows(&data, "emnify/", "events_").len()
            >= usage + events
        {
            break;
        }
    }
    assert_eq!(
        rows(&data, "emnify/", "cdr_").len(),
        usage,
        "{:?}",
        data.keys()
    );
    assert_eq!(
        rows(&data, "emnify/", "events_").len(),
        events,
        "{:?}",
        data.keys()
    );
    for key in data.keys() {
        let name = key
            .strip_prefix("emnify/")
            .expect("under the example's prefix");
        assert!(
            name.len() == "cdr_YYYYMMDD_HHMMSS.csv".len()
                || name.len() == "events_YYYYMMDD_HHMMSS.csv".len(),
            "emnify's names: {key}"
        );
    }
    let usage_rows = rows(&data, "emnify/", "cdr_");
    assert!(
        usage_rows
            .iter()
            .any(|r| r.contains("\"8677300511111142\"")),
        "without redaction the IMEI is kept: {usage_rows:?}"
    );
    gw.stop();
}

/// Every identifier in emnify's examples: the values of the fields that
/// name a subscriber, a device or a person, and the emails, IPv4 addresses
/// and IMSIs inside their texts.
fn emnify_identifiers() -> BTreeSet<String> {
    fn walk(key: &str, v: &Value, out: &mut BTreeSet<String>) {
        const FIELDS: &[&str] = &[
            "imei",
            "imeisv",
            "imsi",
            "iccid",
            "msisdn",
            "ip_address",
            "ue_ip_address",
            "username",
        ];
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    // A person's name is under `user`.
                    if key == "user"
                        && k == "name"
                        && let Some(s) = child.as_str()
                    {
                        out.insert(s.to_string());
                    }
                    walk(k, child, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(key, c, out)),
            Value::String(s) if FIELDS.contains(&key) => {
                out.insert(s.clone());
            }
            Value::String(s) if key == "description" => {
                for word in s.split(|c: char| !(c.is_ascii_alphanumeric() || "@._-".contains(c))) {
                    let word = word.trim_end_matches('.');
                    let digits = word.bytes().all(|b| b.is_ascii_digit());
                    let ipv4 = word.split('.').count() == 4
                        && word.split('.').all(|p| p.parse::<u8>().is_ok());
                    if word.contains('@') || ipv4 || (digits && word.len() == 15) {
                        out.insert(word.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for dir in ["usage", "events"] {
        for line in emnify_lines(dir).lines() {
            walk("", &serde_json::from_str(line).unwrap(), &mut out);
        }
    }
    out.retain(|s| s.len() >= 6);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emnify_redacted_example_leaves_no_identifier_of_any_emnify_example() {
    let identifiers = emnify_identifiers();
    for known in [
        "8677300511111142",
        "295050901064821",
        "89883030000080139311",
        "423663920123456",
        "192.0.2.7",
        "example@yourorg.com",
        "901430111111111",
        "John Doe",
    ] {
        assert!(
            identifiers.contains(known),
            "{known} is collected: {identifiers:?}"
        );
    }
    let lake = lake().await;
    let dir = lake.dir.path();
    let doc = localize("emnify-redacted", dir, &lake);
    let gw = start(dir, &doc);
    let (usage, events) = push_emnify_fixtures(&gw).await;
    let prefix = "emnify-redacted/";
    let mut data = BTreeMap::new();
    for _ in 0..50 {
        data = settled_lines(&lake.admin, &lake.bucket, usage + events).await;
        if rows(&data, prefix, "cdr_").len() + rows(&data, prefix, "events_").len()
            >= usage + events
        {
            break;
        }
    }
    assert_eq!(
        rows(&data, prefix, "cdr_").len(),
        usage,
        "every record delivered: {:?}",
        data.keys()
    );
    assert_eq!(
        rows(&data, prefix, "events_").len(),
        events,
        "{:?}",
        data.keys()
    );
    assert!(
        !data.keys().any(|k| k.contains("dead_letter")),
        "no record failed: {:?}",
        data.keys()
    );
    let all: String = data.values().flatten().map(|l| format!("{l}\n")).collect();
    let left: Vec<&String> = identifiers
        .iter()
        .filter(|id| all.contains(id.as_str()))
        .collect();
    assert!(left.is_empty(), "identifiers left in the lake: {left:?}");
    // What stays is useful: the record ids, the network and the masks' hints.
    let usage_row = rows(&data, prefix, "cdr_")[0];
    assert!(
        usage_row.starts_with("\"333333333333333\","),
        "the id is kept: {usage_row}"
    );
    assert!(usage_row.contains("\"Telefonica O2\""), "{usage_row}");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumpcloud_example_polls_maps_redacts_and_routes_each_service_to_its_folder() {
    let lake = lake().await;
    let dir = lake.dir.path();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    let at = |mins: i64| {
        (chrono::Utc::now() - chrono::Duration::minutes(mins))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    state.add(
        [
            ("directory", 30),
            ("sso", 29),
            ("directory", 28),
            ("radius", 27),
        ]
        .iter()
        .enumerate()
        .map(|(i, (service, mins))| (format!("e{i}"), at(*mins), service.to_string())),
    );
    let stub = stubs::jumpcloud(dir, state.clone()).await;
    let mut doc = localize("jumpcloud", dir, &lake);
    to_stub(&mut doc, "jumpcloud", &stub, false);
    let gw = start(dir, &doc);
    let data = settled_lines(&lake.admin, &lake.bucket, 4).await;
    let today = chrono::Utc::now()
        .format("year=%Y/month=%m/day=%d")
        .to_string();
    let mut per_service = BTreeMap::new();
    for (key, lines) in &data {
        let service = key
            .strip_prefix("jumpcloud/jumpcloud.")
            .and_then(|k| k.split_once('/'))
            .map(|(s, rest)| {
                assert!(rest.starts_with(&today), "Hive folders: {key}");
                assert!(key.ends_with(".jsonl.gz"), "{key}");
                s.to_string()
            })
            .unwrap_or_else(|| panic!("not in a service folder: {key}"));
        *per_service.entry(service).or_insert(0) += lines.len();
        for line in lines {
            let doc: Value = serde_json::from_str(line).unwrap();
            assert!(
                doc["event"].get("original").is_none(),
                "event.original dropped: {line}"
            );
            let user = doc["user"]["name"].as_str().unwrap();
            assert_eq!(user.len(), 64, "user names hashed: {line}");
            assert!(!line.contains("jane.doe"), "no user name left: {line}");
            assert!(!line.contains("203.0.113.10"), "IPs masked: {line}");
            assert_eq!(doc["ecs"]["version"], "8.11.0");
            assert_eq!(doc["user_agent"]["version"], "125.0.0.0", "kept: {line}");
        }
    }
    let expected: BTreeMap<String, usize> = [("directory", 2), ("radius", 1), ("sso", 1)]
        .into_iter()
        .map(|(s, n)| (s.to_string(), n))
        .collect();
    assert_eq!(per_service, expected);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupiterone_example_maps_alerts_vulnerabilities_and_findings_to_their_folders() {
    let lake = lake().await;
    let dir = lake.dir.path();
    let state = stubs::JupiterOne::new("j1-token", "j1-account-id", 2);
    let now_ms = chrono::Utc::now().timestamp_millis();
    {
        let mut e = state.entities.lock().unwrap();
        for (i, class) in ["Alert", "Vulnerability", "Finding", "Finding", "Device"]
            .iter()
            .enumerate()
        {
            e.push(crate::pollers::j1_entity(
                &format!("j{i}"),
                class,
                now_ms - 600_000 + i as i64,
                1,
                false,
            ));
        }
    }
    let stub = stubs::jupiterone(dir, state.clone()).await;
    let mut doc = localize("jupiterone", dir, &lake);
    to_stub(&mut doc, "jupiterone", &stub, true);
    let gw = start(dir, &doc);
    let data = settled_lines(&lake.admin, &lake.bucket, 4).await;
    let mut per_kind = BTreeMap::new();
    for (key, lines) in &data {
        let kind = key
            .strip_prefix("jupiterone/jupiterone.")
            .and_then(|k| k.split_once('/'))
            .map(|(k, _)| k.to_string())
            .unwrap_or_else(|| panic!("not in a kind's folder: {key}"));
        *per_kind.entry(kind).or_insert(0) += lines.len();
    }
    let expected: BTreeMap<String, usize> = [("alert", 1), ("finding", 2), ("vulnerability", 1)]
        .into_iter()
        .map(|(s, n)| (s.to_string(), n))
        .collect();
    assert_eq!(per_kind, expected, "the Device is not queried");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j1ds_example_writes_change_records_in_j1ds_layout_with_its_connection_test() {
    let lake = lake().await;
    let dir = lake.dir.path();
    let state = stubs::JupiterOne::new("j1-token", "j1-account-id", 2);
    let now_ms = chrono::Utc::now().timestamp_millis();
    {
        let mut e = state.entities.lock().unwrap();
        e.push(crate::pollers::j1_entity(
            "a",
            "Device",
            now_ms - 600_000,
            1,
            false,
        ));
        e.push(crate::pollers::j1_entity(
            "b",
            "User",
            now_ms - 500_000,
            3,
            false,
        ));
        e.push(crate::pollers::j1_entity(
            "c",
            "Finding",
            now_ms - 400_000,
            2,
            true,
        ));
    }
    let stub = stubs::jupiterone(dir, state.clone()).await;
    let mut doc = localize("j1ds", dir, &lake);
    to_stub(&mut doc, "jupiterone", &stub, true);
    let gw = start(dir, &doc);
    let data = settled_lines(&lake.admin, &lake.bucket, 3).await;
    let mut ops = BTreeMap::new();
    for (key, lines) in &data {
        assert!(
            key.starts_with("jupiterone/graph/cdc/accountId=j1acct/year=")
                && key.contains("/time=")
                && key.ends_with(".jsonl.gz"),
            "J1DS layout: {key}"
        );
        for line in lines {
            let doc: Value = serde_json::from_str(line).unwrap();
            ops.insert(
                doc["properties"]["_id"].as_str().unwrap().to_string(),
                doc["operation"].as_str().unwrap().to_string(),
            );
        }
    }
    let expected: BTreeMap<String, String> = [("a", "c"), ("b", "u"), ("c", "d")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(ops, expected, "every class, deleted ones included");
    let all = objects(&lake.admin, &lake.bucket).await;
    assert!(
        all.contains_key("jupiterone/.connection-test"),
        "J1DS's connection test: {:?}",
        all.keys()
    );
    gw.stop();
}
