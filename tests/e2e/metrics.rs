//! Every metric docs/operations.md documents is exported by a gateway with every
//! kind of source and sink after real traffic, and promtool accepts the
//! whole scrape; the alert rules and the dashboard under `deploy/` query
//! only metrics that scrape has, and the rules pass promtool's checks and
//! unit tests.

use crate::gw::{Gateway, config, wait_delivered};
use crate::stubs;
use hyper::StatusCode;
use std::time::Duration;

/// The metric names in the metrics table of docs/operations.md.
pub(crate) fn documented() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .unwrap();
    let table = readme
        .split_once("| metric | labels |")
        .expect("the metrics table of docs/operations.md")
        .1;
    let mut names: Vec<String> = table
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| {
            l.split('`')
                .filter(|w| w.starts_with("sluice_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_exported_and_promtool_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let jc = stubs::JumpCloud::with_key("jc-key");
    let ago = |s: i64| {
        (chrono::Utc::now() - chrono::Duration::seconds(s))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    jc.add((0..5).map(|i| (format!("e{i}"), ago(120 - i), "sso".to_string())));
    jc.faults
        .lock()
        .unwrap()
        .push_back(stubs::Fault::Status(429, Some("1".into()), vec![]));
    let jc_stub = stubs::jumpcloud(dir.path(), jc.clone()).await;
    let j1 = stubs::JupiterOne::new("j1-token", "acct", 5);
    let now_ms = chrono::Utc::now().timestamp_millis();
    j1.entities.lock().unwrap().push(serde_json::json!({
        "id": "f1",
        "entity": {"_id": "f1", "_key": "k", "_type": "finding", "_class": ["Finding"],
                   "_accountId": "acct", "_version": 1, "_deleted": false, "_beginOn": now_ms - 5000},
        "properties": {"severity": "high"}
    }));
    let j1_stub = stubs::jupiterone(dir.path(), j1.clone()).await;
    let hostile = sluice_test_artifacts::HOSTILE_COMPONENT;
    std::fs::create_dir_all(dir.path().join("blocked")).unwrap();
    std::fs::write(dir.path().join("blocked/t"), "in the way").unwrap();
    let cfg = config(&format!(
        r#"
[sources.s]
type = "push"
listener = "https"
auth = {{ type = "bearer", token = "push-token" }}

[sources.t]
type = "push"
listener = "https"
auth = {{ type = "none" }}

[sources.jc]
type = "jumpcloud"
api_key = "jc-key"
base_url = "{jc_url}"
ca_file = "{jc_ca}"
start = "{start}"
interval_secs = 1
source_lag_secs = 0

[sources.j1]
type = "jupiterone"
api_token = "j1-token"
account_id = "acct"
base_url = "{j1_url}/"
ca_file = "{j1_ca}"
start = "{start}"
interval_secs = 1

[pipelines.p]
source = "s"
sink = "out"
[[pipelines.p.transforms]]
use = "{hostile}"
config = {{ mode = "trap" }}
[[pipelines.p.transforms]]
use = "tagger"

[pipelines.q]
source = "t"
sink = "blocked"

[sources.w]
type = "push"
listener = "https"
auth = {{ type = "none" }}

[pipelines.w]
source = "w"
sink = "out"
[[pipelines.w.transforms]]
use = "not-uploaded-yet"

[pipelines.jc]
source = "jc"
sink = "out"
[[pipelines.jc.transforms]]
use = "ecs-jumpcloud"

[pipelines.j1]
source = "j1"
sink = "out"
[[pipelines.j1.transforms]]
use = "j1-cdc"

[sinks.out]
type = "local"
path = "out"
rotate = {{ max_age_secs = 0.2 }}

[sinks.blocked]
type = "local"
path = "blocked"
key = "{{source}}"
rotate = {{ max_age_secs = 0.1 }}
"#,
        jc_url = jc_stub.url(),
        jc_ca = jc_stub.cert.display(),
        j1_url = j1_stub.url(),
        j1_ca = j1_stub.cert.display(),
        start = ago(3600),
    ));
    let cfg = crate::gw::with_admin_token(&cfg, "admin-token-0123456789", "");
    // The pipeline follows an uploaded "tagger": seed it first.
    let seed = Gateway::start(
        dir.path(),
        &cfg.replace("use = \"tagger\"", "use = \"add-fields\""),
    );
    let url = format!("http://{}", seed.admin);
    let a = sluice_test_artifacts::TAGGER_A_COMPONENT;
    let pushed = tokio::task::spawn_blocking(move || {
        crate::support::sluice()
            .args(["transform", "push", "tagger", a, "--activate"])
            .env("SLUICE_ADMIN_URL", &url)
            .env("SLUICE_ADMIN_TOKEN", "admin-token-0123456789")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    seed.stop();
    let gw = Gateway::start(dir.path(), &cfg);
    let c = gw.client();
    // Push: accepted, refused (no token), dead-lettered (a trap).
    let r = c
        .push(
            "s",
            &[("authorization", "Bearer push-token")],
            "[{\"a\":1},\"boom\"]",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        c.push("s", &[], "{}").await.status,
        StatusCode::UNAUTHORIZED
    );
    // A sink that cannot write: errors and retries.
    assert_eq!(c.push("t", &[], "{\"b\":1}").await.status, StatusCode::OK);
    // A pipeline waiting for its transform.
    assert_eq!(
        c.push("w", &[], "{}").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A wrong admin token.
    let (status, _) = gw
        .admin_request("GET", "/v1/transforms", Some("not-the-token"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The admin API: a swap (activation) and a refused upload.
    let admin = |method: &'static str, path: String, body: Vec<u8>| {
        let addr = gw.admin;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer admin-token-0123456789\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            tcp.write_all(&body).await.unwrap();
            let mut out = String::new();
            tcp.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let refused = admin("PUT", "/v1/transforms/junk".into(), b"not wasm".to_vec()).await;
    assert!(refused.starts_with("HTTP/1.1 4"), "{refused}");
    let swapped = admin(
        "POST",
        "/v1/transforms/tagger/activate".into(),
        b"{\"version\": 1}".to_vec(),
    )
    .await;
    assert!(swapped.starts_with("HTTP/1.1 200"), "{swapped}");
    // Deliveries from every source.
    wait_delivered(&dir.path().join("out"), 1 + 1 + 5 + 1).await;
    for _ in 0..100 {
        if gw
            .metric_opt("sluice_sink_retries_total{sink=\"blocked\"}")
            .await
            .is_some_and(|n| n >= 1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scrape = gw.metrics().await;
    // Cluster mode's metrics are checked on a replica (cluster.rs).
    let missing: Vec<String> = documented()
        .into_iter()
        .filter(|name| !name.starts_with("sluice_cluster_"))
        .filter(|name| !scrape.contains(&format!("# TYPE {name} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}\n{scrape}"
    );
    assert!(documented().len() >= 29, "{:?}", documented());
    crate::support::promtool_check(&scrape);
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/sluice.json"] {
        let queried = queried(file);
        assert!(queried.len() >= 8, "{file}: {queried:?}");
        let unknown: Vec<&String> = queried
            .iter()
            .filter(|name| !name.starts_with("sluice_cluster_"))
            .filter(|name| !scrape.contains(&format!("# TYPE {name} ")))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} queries metrics sluice does not export: {unknown:?}"
        );
    }
    gw.stop();
}

/// The metric names a rules or dashboard file queries (histogram series
/// by their family name).
pub(crate) fn queried(file: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sluice_") && w.len() > "sluice_".len())
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| w.strip_suffix(suffix))
                .unwrap_or(w)
                .to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `promtool check rules` and `promtool test rules` on the shipped alert
/// rules: the unit tests fire each tested alert at its time, with its
/// labels and text, and not before.
#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = std::process::Command::new(crate::support::promtool())
            .args(args)
            .current_dir(dir)
            .output()
            .expect("promtool (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tests = std::fs::read_to_string(format!("{dir}/alerts.test.yml")).unwrap();
    assert!(
        tests.matches("alertname:").count() >= 6,
        "at least three alerts tested, each before and after"
    );
}
