//! Durability: acknowledged data survives restarts and kill -9, and is
//! delivered once; `sluice check` and pins refuse bad configs.

use crate::gw::{Gateway, config, delivered, wait_delivered};
use hyper::StatusCode;
use std::time::Duration;

fn cfg(rotate_secs: f64, extra: &str) -> String {
    config(&format!(
        r#"
[sources.s]
type = "push"
listener = "https"
auth = {{ type = "none" }}

[pipelines.p]
source = "s"
sink = "out"
{extra}
[sinks.out]
type = "local"
path = "out"
key = "{{source}}/%Y"
compression = "zstd"
rotate = {{ max_age_secs = {rotate_secs} }}
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_right_after_200_still_delivers_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Objects would only rotate after an hour: when sluice dies, the
    // acknowledged records exist only in the spool.
    let gw = Gateway::start(dir.path(), &cfg(3600.0, ""));
    let c = gw.client();
    let body: String = (0..100).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let r = c.push("s", &[], body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    gw.kill9();
    assert!(
        delivered(&dir.path().join("out")).is_empty(),
        "nothing was delivered before the kill"
    );

    // Restart with a short rotation: the spooled records are delivered once.
    std::fs::write(dir.path().join("sluice.toml"), cfg(0.1, "")).unwrap();
    let gw = Gateway::start_existing(dir.path());
    let lines = wait_delivered(&dir.path().join("out"), 100).await;
    assert_eq!(crate::spool::numbers(&lines), (0..100).collect::<Vec<_>>());
    assert!(
        lines
            .iter()
            .all(|(p, _)| p.starts_with("s/2") && p.ends_with(".jsonl.zst")),
        "{:?}",
        lines[0]
    );
    // Nothing more arrives later: delivered once, and the spool is empty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(delivered(&dir.path().join("out")).len(), 100);
    assert_eq!(gw.metric("sluice_spool_records{sink=\"out\"}").await, 0.0);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_flushes_and_restart_delivers_the_rest_once() {
    let dir = tempfile::tempdir().unwrap();
    // The route's folder is blocked by a file: delivery fails and the data
    // stays spooled across a clean stop.
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/s"), "in the way").unwrap();
    let gw = Gateway::start(dir.path(), &cfg(0.1, ""));
    let c = gw.client();
    for i in 0..5 {
        assert_eq!(
            c.push("s", &[], format!("{{\"i\":{i}}}")).await.status,
            StatusCode::OK
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = gw.stop();
    assert!(log.contains("delivery failed"), "{log}");
    assert!(log.contains("undelivered=5"), "{log}");
    std::fs::remove_file(dir.path().join("out/s")).unwrap();

    let gw = Gateway::start_existing(dir.path());
    assert!(
        gw.stderr().contains("spool holds undelivered records"),
        "{}",
        gw.stderr()
    );
    let lines = wait_delivered(&dir.path().join("out"), 5).await;
    assert_eq!(lines.len(), 5);
    // A clean stop with an open object finishes it instead of leaving it.
    std::fs::write(dir.path().join("sluice.toml"), cfg(3600.0, "")).unwrap();
    let log = gw.stop();
    assert!(log.contains("undelivered=0"), "{log}");
    let gw = Gateway::start_existing(dir.path());
    assert_eq!(
        gw.client().push("s", &[], "{\"i\":5}").await.status,
        StatusCode::OK
    );
    gw.stop();
    assert_eq!(
        delivered(&dir.path().join("out")).len(),
        6,
        "the open object was finished at shutdown"
    );
}

#[test]
fn check_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        cfg(1.0, "").replace("compression = \"zstd\"", "compression = \"lz4\""),
    )
    .unwrap();
    let mut cmd = crate::support::sluice();
    cmd.args(["check", "--config"]).arg(&path);
    let run = crate::support::run_with(cmd, "", Duration::from_secs(60));
    run.expect_failure(
        2,
        &format!("{}:23:1: `sinks.out.compression`", path.display()),
    );
    run.expect_failure(2, "`sinks.out.compression`");
    run.expect_failure(2, "unknown variant `lz4`");

    std::fs::write(&path, cfg(1.0, "")).unwrap();
    let mut cmd = crate::support::sluice();
    cmd.args(["check", "--config"]).arg(&path);
    let run = crate::support::run_with(cmd, "", Duration::from_secs(60));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("ok (1 listeners, 1 sources, 1 pipelines, 1 sinks)"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_pin_mismatch_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let pin = "0".repeat(64);
    let extra = format!("[[pipelines.p.transforms]]\nuse = \"add-fields\"\nsha256 = \"{pin}\"\n");
    std::fs::write(dir.path().join("sluice.toml"), cfg(1.0, &extra)).unwrap();
    let mut cmd = crate::support::sluice();
    cmd.args(["run", "--config"])
        .arg(dir.path().join("sluice.toml"));
    let run = crate::support::run_with(cmd, "", Duration::from_secs(60));
    run.expect_failure(2, "the config pins sha256 0000");
    run.expect_failure(2, "the built-in's sha256 is ");
    run.expect_failure(2, "refusing to start");
    assert!(
        !run.stdout.contains("listening"),
        "no listener was opened: {}",
        run.stdout
    );
}

/// The README's quick start: examples/quickstart.toml as shipped (only its
/// ports and folders moved), the sample events pushed as the README's curl
/// does, ECS documents delivered gzipped under `jumpcloud.<service>/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_config_maps_pushed_events() {
    let dir = tempfile::tempdir().unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let shipped = std::fs::read_to_string(format!("{root}/examples/quickstart.toml")).unwrap();
    let cfg = shipped
        .replace("127.0.0.1:9464", "127.0.0.1:0")
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("../target/quickstart/", "")
        .replace("max_age_secs = 5", "max_age_secs = 0.2")
        .replace("${env:SLUICE_PUSH_TOKEN}", "quickstart-token");
    // The example still has what the test moves (a drifted example must
    // fail here, not test something else).
    for moved in [
        "127.0.0.1:9464",
        "127.0.0.1:8443",
        "../target/quickstart/",
        "max_age_secs = 5",
        "${env:SLUICE_PUSH_TOKEN}",
    ] {
        assert!(
            shipped.contains(moved),
            "examples/quickstart.toml lost {moved:?}"
        );
    }
    let gw = Gateway::start(dir.path(), &cfg);
    let events =
        std::fs::read_to_string(format!("{root}/examples/jumpcloud-events.jsonl")).unwrap();
    let n = events.lines().count();
    let r = gw
        .client()
        .push(
            "jumpcloud",
            &[
                ("authorization", "Bearer quickstart-token"),
                ("content-type", "application/x-ndjson"),
            ],
            events.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let lines = wait_delivered(&dir.path().join("out"), n).await;
    for (path, doc) in &lines {
        let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
        let original: serde_json::Value =
            serde_json::from_str(doc["event"]["original"].as_str().unwrap()).unwrap();
        let service = original["service"].as_str().unwrap().to_string();
        assert!(
            path.starts_with(&format!("jumpcloud.{service}/")),
            "{path} for {service}"
        );
        assert!(path.ends_with(".jsonl.gz"), "{path}");
        assert!(
            doc["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "preserve_original_event"),
            "{doc}"
        );
        assert!(
            events.lines().any(|l| doc["event"]["original"] == l),
            "event.original is a pushed line verbatim"
        );
    }
    gw.stop();
}

#[test]
fn an_admin_api_with_a_token_is_never_served_in_clear_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let check = |cfg: &str| {
        std::fs::write(&path, cfg).unwrap();
        let mut cmd = crate::support::sluice();
        cmd.args(["check", "--config"]).arg(&path);
        crate::support::run_with(cmd, "", Duration::from_secs(60))
    };
    let exposed = cfg(1.0, "").replace(
        "[admin]\naddress = \"127.0.0.1:0\"",
        "[admin]\naddress = \"0.0.0.0:0\"\ntoken = \"t0ken-0123456789abcdef\"",
    );
    let run = check(&exposed);
    run.expect_failure(2, &format!("{}:4:1: `admin.address`", path.display()));
    run.expect_failure(2, "in clear text: set [admin] tls");
    assert!(
        !run.stderr.contains("t0ken-0123456789abcdef"),
        "{}",
        run.stderr
    );
    // With TLS, or without a token (metrics only), it may listen anywhere.
    let with_tls = exposed.replace(
        "token = \"t0ken-0123456789abcdef\"",
        "token = \"t0ken-0123456789abcdef\"\ntls = { self_signed = true }",
    );
    assert_eq!(check(&with_tls).code, 0);
    let metrics_only = exposed.replace("\ntoken = \"t0ken-0123456789abcdef\"", "");
    assert_eq!(check(&metrics_only).code, 0);
}

/// SIGTERM while a request is still arriving: `/readyz` answers 503 at
/// once, the request in flight is finished and answered 200, and its
/// records are delivered before sluice exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_readyz_says_not_ready() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &cfg(3600.0, ""));
    let body = "{\"i\":1}\n{\"i\":2}\n";
    let mut s = gw.client().tls_stream(false).await;
    s.write_all(
        format!(
            "POST /v1/push/s HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{{",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let pid = gw.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let mut not_ready = false;
    for _ in 0..50 {
        let (status, body) = gw.admin_get("/readyz").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(body.contains("not ready"), "{body}");
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(not_ready, "/readyz said 503 during shutdown");
    // The rest of the body arrives after SIGTERM; the request is finished.
    s.write_all(&body.as_bytes()[1..]).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let log = gw.stop();
    assert!(log.contains("undelivered=0"), "{log}");
    assert_eq!(
        delivered(&dir.path().join("out")).len(),
        2,
        "delivered before exit"
    );
}
