//! The gateway over real sockets and real TLS: body shapes, auth, limits,
//! backpressure, dead letters, HTTP/2 and metrics.

use crate::gw::{Gateway, config, metric_value, wait_delivered};
use hyper::StatusCode;
use std::io::Write;

/// A push source `s` with `auth`, one pipeline through `transforms` to a
/// local sink `out` (uncompressed, rotating every 100 ms).
fn push_config(auth: &str, transforms: &str, extra: &str) -> String {
    config(&format!(
        r#"
[sources.s]
type = "push"
listener = "https"
auth = {auth}
max_body_bytes = 4096
max_records = 50

[pipelines.p]
source = "s"
sink = "out"
{transforms}

[sinks.out]
type = "local"
path = "out"
key = "{{route}}"
rotate = {{ max_age_secs = 0.1 }}
{extra}"#
    ))
}

const BEARER: &str = r#"{ type = "bearer", token = "${env:SLUICE_E2E_TOKEN}" }"#;

fn start(config: &str) -> (tempfile::TempDir, Gateway) {
    // SAFETY-free alternative to set_var in a threaded test harness: the
    // token goes into a file the config reads through ${file:...}.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let config = config.replace(
        "${env:SLUICE_E2E_TOKEN}",
        &format!("${{file:{}}}", token.display()),
    );
    let gw = Gateway::start(dir.path(), &config);
    (dir, gw)
}

const AUTH: (&str, &str) = ("authorization", "Bearer s3cret-token");

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_array_object_and_gzip_bodies_are_delivered_verbatim() {
    let (dir, gw) = start(&push_config(BEARER, "", ""));
    let mut conn = gw.client().connect().await;
    let nd = [AUTH, ("content-type", "application/x-ndjson")];
    let r = conn.push("s", &nd, "{\"n\":1}\n{\"n\": 2}\n").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["accepted"], 2);
    // Same connection (keep-alive): a JSON array, as emnify's Bulk mode sends.
    let r = conn
        .push(
            "s",
            &[AUTH, ("content-type", "application/json")],
            "[{\"n\":3},{\"n\":4}]",
        )
        .await;
    assert_eq!(r.json()["accepted"], 2, "{}", r.body);
    // A single object, as emnify's REST mode sends, pretty-printed.
    let r = conn
        .push(
            "s",
            &[AUTH, ("content-type", "application/json")],
            "{\n  \"n\": 5\n}",
        )
        .await;
    assert_eq!(r.json()["accepted"], 1, "{}", r.body);
    let r = conn
        .push(
            "s",
            &[AUTH, ("content-encoding", "gzip")],
            gzip(b"{\"n\":6}\n{\"n\":7}\n"),
        )
        .await;
    assert_eq!(r.json()["accepted"], 2, "{}", r.body);
    let lines = wait_delivered(&dir.path().join("out"), 7).await;
    let records: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let mut expected = vec![
        "{\"n\":1}",
        "{\"n\": 2}",
        "{\"n\":3}",
        "{\"n\":4}",
        "{\n  \"n\": 5\n}",
        "{\"n\":6}",
        "{\"n\":7}",
    ];
    // The pretty object is compacted for JSON lines; everything else is verbatim.
    expected[4] = "{\"n\":5}";
    let mut sorted = records.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected);
    assert!(
        lines.iter().all(|(path, _)| path.starts_with("s/")),
        "route defaults to the source: {lines:?}"
    );
    assert_eq!(
        gw.metric("sluice_source_records_total{source=\"s\"}").await,
        7.0
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_auth_kind_right_and_wrong() {
    // Bearer.
    let (_d, gw) = start(&push_config(BEARER, "", ""));
    let c = gw.client();
    assert_eq!(c.push("s", &[AUTH], "{}").await.status, StatusCode::OK);
    let r = c
        .push("s", &[("authorization", "Bearer wrong-token!")], "{}")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.contains_key("www-authenticate"));
    assert!(
        !r.body.contains("s3cret"),
        "the reply never echoes a secret"
    );
    assert_eq!(
        c.push("s", &[], "{}").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.push("s", &[("authorization", "Basic czpz")], "{}")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "sluice_source_rejected_requests_total{reason=\"unauthorized\",source=\"s\"}"
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "sluice_source_records_total{source=\"s\"}"),
        1.0
    );
    let log = gw.stop();
    assert!(!log.contains("s3cret"), "logs never show a secret:\n{log}");

    // Basic, as emnify sends it.
    let (_d, gw) = start(&push_config(
        r#"{ type = "basic", username = "emnify", password = "pw:with:colons" }"#,
        "",
        "",
    ));
    let c = gw.client();
    use base64::Engine;
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("emnify:pw:with:colons")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("emnify:pw")
    );
    assert_eq!(
        c.push("s", &[("authorization", &good)], "{}").await.status,
        StatusCode::OK
    );
    let r = c.push("s", &[("authorization", &bad)], "{}").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers["www-authenticate"], "Basic realm=\"sluice\"",
        "the challenge a Basic client expects"
    );
    gw.stop();

    // HMAC on the default header, as bare hex, over a gzip body as sent.
    let (d, gw) = start(&push_config(r#"{ type = "hmac", key = "k3y" }"#, "", ""));
    let c = gw.client();
    let zipped = gzip(b"{\"zipped\":true}");
    let sign = |bytes: &[u8]| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k3y").unwrap();
        mac.update(bytes);
        hex::encode(mac.finalize().into_bytes())
    };
    let r = c
        .push(
            "s",
            &[
                ("x-sluice-signature", &sign(&zipped)),
                ("content-encoding", "gzip"),
            ],
            zipped.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Signed over the decompressed body instead: refused.
    let r = c
        .push(
            "s",
            &[
                ("x-sluice-signature", &sign(b"{\"zipped\":true}")),
                ("content-encoding", "gzip"),
            ],
            zipped,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let lines = wait_delivered(&d.path().join("out"), 1).await;
    assert_eq!(lines[0].1, "{\"zipped\":true}");
    gw.stop();

    // HMAC of the body as sent.
    let (_d, gw) = start(&push_config(
        r#"{ type = "hmac", key = "k3y", header = "X-Signature" }"#,
        "",
        "",
    ));
    let c = gw.client();
    use hmac::Mac;
    let body = b"{\"signed\":true}".to_vec();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k3y").unwrap();
    mac.update(&body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        c.push("s", &[("x-signature", &sig)], body.clone())
            .await
            .status,
        StatusCode::OK
    );
    let r = c
        .push("s", &[("x-signature", &sig)], "{\"signed\":false}")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(
        c.push("s", &[], body).await.status,
        StatusCode::UNAUTHORIZED
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_keep_nothing() {
    let (dir, gw) = start(&push_config(BEARER, "", "").replace(
        "max_records = 50",
        "max_records = 50\nmax_decoded_bytes = 65536",
    ));
    let c = gw.client();
    let r = c
        .push(
            "s",
            &[AUTH],
            "{\"ok\":1}\n{\"ok\":2}\n{\"broken\": \n{\"ok\":3}\n",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["line"], 3, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("line 3"),
        "{}",
        r.body
    );
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(5000));
    let r = c.push("s", &[AUTH], big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    // A small gzip body that inflates past the decoded limit is refused too.
    let bomb = gzip(format!("[{}1]", "1,".repeat(100_000)).as_bytes());
    assert!(bomb.len() < 4096, "{} bytes as sent", bomb.len());
    let r = c
        .push("s", &[AUTH, ("content-encoding", "gzip")], bomb)
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(
        r.body.contains("decompressed body exceeds 65536"),
        "{}",
        r.body
    );
    let too_many: String = (0..51).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let r = c.push("s", &[AUTH], too_many).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    let r = c.push("s", &[AUTH, ("content-encoding", "br")], "{}").await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.body);
    let r = c
        .push(
            "s",
            &[AUTH, ("content-encoding", "gzip")],
            b"not gzip".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = c.push("nope", &[AUTH], "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A good request afterwards is the only thing delivered.
    assert_eq!(
        c.push("s", &[AUTH], "{\"good\":1}").await.status,
        StatusCode::OK
    );
    let lines = wait_delivered(&dir.path().join("out"), 1).await;
    assert_eq!(lines[0].1, "{\"good\":1}");
    let m = gw.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "sluice_source_rejected_requests_total{reason=\"malformed\",source=\"s\"}"
        ),
        3.0,
        "{m}"
    );
    for (reason, n) in [("too_large", 2.0), ("too_many_records", 1.0)] {
        assert_eq!(
            metric_value(
                &m,
                &format!(
                    "sluice_source_rejected_requests_total{{reason=\"{reason}\",source=\"s\"}}"
                )
            ),
            n,
            "{reason}: {m}"
        );
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_answers_503_with_retry_after() {
    // The sink's root is a file, so nothing can be delivered and the spool
    // fills up.
    let cfg = push_config(BEARER, "", "").replace("path = \"out\"", "path = \"blocked/out\"")
        + "\n[spool]\nmax_records = 4\nhigh_water = 1.0\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocked"), "a file, not a folder").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token").unwrap();
    let cfg = cfg.replace(
        "${env:SLUICE_E2E_TOKEN}",
        &format!("${{file:{}}}", token.display()),
    );
    std::fs::write(dir.path().join("sluice.toml"), &cfg).unwrap();
    // The sink cannot even create its folder: sluice says so and exits 2.
    let run = crate::support::run_with(
        {
            let mut c = crate::support::sluice();
            c.args(["run", "--config"])
                .arg(dir.path().join("sluice.toml"));
            c
        },
        "",
        std::time::Duration::from_secs(60),
    );
    run.expect_failure(2, "sink `out`");
    // With a folder it cannot deliver into (a file is in the way of the
    // route's folder), it starts and keeps the data spooled.
    std::fs::remove_file(dir.path().join("blocked")).unwrap();
    std::fs::create_dir_all(dir.path().join("blocked/out")).unwrap();
    let in_the_way = dir.path().join("blocked/out/s");
    std::fs::write(&in_the_way, "in the way").unwrap();
    let gw = Gateway::start_existing(dir.path());
    let c = gw.client();
    let r = c.push("s", &[AUTH], "[1,2,3]").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = c.push("s", &[AUTH], "[4,5]").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "5");
    let r = c.push("s", &[AUTH], "[4]").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = c.push("s", &[AUTH], "[5]").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(gw.metric("sluice_spool_records{sink=\"out\"}").await, 4.0);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        gw.metric("sluice_sink_errors_total{kind=\"io\",sink=\"out\"}")
            .await
            >= 1.0
    );
    // Once the sink can write again, everything drains and pushes succeed.
    std::fs::remove_file(&in_the_way).unwrap();
    let lines = wait_delivered(&dir.path().join("blocked/out"), 4).await;
    assert_eq!(
        lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3", "4"]
    );
    let mut ok = false;
    for _ in 0..100 {
        if c.push("s", &[AUTH], "[5]").await.status == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "pushes succeed again once the spool drains");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_and_timeout_go_to_dead_letter_with_original_bytes() {
    let hostile = sluice_test_artifacts::HOSTILE_COMPONENT;
    let transforms = format!(
        r#"[[pipelines.p.transforms]]
use = "{hostile}"
config = {{ mode = "trap" }}

[[pipelines.p.transforms]]
use = "{hostile}"
config = {{ mode = "loop" }}
"#
    );
    let cfg = push_config(BEARER, &transforms, "").replace(
        "[sinks.out]",
        "[limits]\ntransform_deadline_ms = 200\n\n[sinks.out]",
    );
    let (dir, gw) = start(&cfg);
    let c = gw.client();
    let r = c
        .push(
            "s",
            &[AUTH, ("content-type", "application/x-ndjson")],
            "{\"a\":1}\n\"boom\"\n\"spin\"\n{\"a\":2}\n",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let lines = wait_delivered(&dir.path().join("out"), 4).await;
    let (dead, good): (Vec<_>, Vec<_>) = lines
        .iter()
        .partition(|(p, _)| p.starts_with("dead_letter/"));
    assert_eq!(
        good.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
        ["{\"a\":1}", "{\"a\":2}"]
    );
    assert_eq!(dead.len(), 2, "{lines:?}");
    let dead: Vec<serde_json::Value> = dead
        .iter()
        .map(|(_, l)| serde_json::from_str(l).unwrap())
        .collect();
    let boom = dead
        .iter()
        .find(|d| d["original"] == "\"boom\"")
        .expect("the trapping record, verbatim");
    assert!(
        boom["error"].as_str().unwrap().contains("trapped"),
        "{boom}"
    );
    assert!(
        boom["error"]
            .as_str()
            .unwrap()
            .contains("hostile guest: boom"),
        "panic message kept: {boom}"
    );
    assert_eq!(boom["pipeline"], "p");
    let spin = dead
        .iter()
        .find(|d| d["original"] == "\"spin\"")
        .expect("the looping record, verbatim");
    assert!(
        spin["error"].as_str().unwrap().contains("deadline"),
        "{spin}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric_value(&m, "sluice_dead_letter_records_total{pipeline=\"p\"}"),
        2.0,
        "{m}"
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_push_and_promtool_accepts_the_metrics() {
    let transforms = "[[pipelines.p.transforms]]\nuse = \"ecs-jumpcloud\"\n";
    let (dir, gw) = start(&push_config(BEARER, transforms, "compression = \"gzip\""));
    let event = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/jumpcloud-events.jsonl"
    ))
    .unwrap();
    let first = event.lines().next().unwrap().to_string();
    let (version, r) = gw.client().push_h2("s", &[AUTH], first.clone()).await;
    assert_eq!(version, hyper::Version::HTTP_2);
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let lines = wait_delivered(&dir.path().join("out"), 1).await;
    let (path, doc) = &lines[0];
    assert!(
        path.starts_with("jumpcloud.") && path.ends_with(".jsonl.gz"),
        "{path}"
    );
    let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
    assert_eq!(doc["event"]["original"], first.as_str());
    assert_eq!(doc["ecs"]["version"], "8.11.0");

    assert_eq!(gw.admin_get("/healthz").await.0, StatusCode::OK);
    assert_eq!(
        gw.admin_get("/readyz").await,
        (StatusCode::OK, "{\"status\":\"ready\"}".to_string())
    );
    assert_eq!(gw.admin_get("/nope").await.0, StatusCode::NOT_FOUND);
    let scrape = gw.metrics().await;
    for family in [
        "sluice_source_records_total",
        "sluice_transform_records_total",
        "sluice_transform_batch_duration_seconds_bucket",
        "sluice_spool_records",
        "sluice_sink_objects_total",
        "sluice_sink_delivery_latency_seconds_bucket",
    ] {
        assert!(scrape.contains(family), "{family} missing:\n{scrape}");
    }
    crate::support::promtool_check(&scrape);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_transforms_redact_with_a_key_from_a_file() {
    let dir_key = tempfile::tempdir().unwrap();
    let key = dir_key.path().join("redact.key");
    std::fs::write(&key, "a-redaction-key-read-from-a-file\n").unwrap();
    let transforms = format!(
        r#"[[pipelines.p.transforms]]
use = "ecs-jumpcloud"

[[pipelines.p.transforms]]
use = "redact"
config = {{ fields = "user.name:hash,source.user.name:hash,event.original:drop", detectors = "ipv4:mask", hash_key = "${{file:{}}}" }}
"#,
        key.display()
    );
    let (dir, gw) = start(&push_config(BEARER, &transforms, ""));
    let event = r#"{"id":"1","event_type":"user_login_attempt","service":"sso","timestamp":"2025-06-18T01:40:40Z","success":true,"client_ip":"203.0.113.10","username":"jane.doe"}"#;
    let r = gw.client().push("s", &[AUTH], event).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let lines = wait_delivered(&dir.path().join("out"), 1).await;
    let (path, doc) = &lines[0];
    assert!(
        path.starts_with("jumpcloud.sso/"),
        "the first transform's route survives the second: {path}"
    );
    assert!(
        !doc.contains("203.0.113.10") && !doc.contains("jane.doe"),
        "{doc}"
    );
    let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
    assert_eq!(doc["client"]["ip"], "203.0.x.x");
    assert_eq!(doc["user"]["name"].as_str().unwrap().len(), 64);
    // ecs-jumpcloud keeps the raw event in event.original (as Elastic does);
    // a PII-clean lake drops it after mapping.
    assert!(doc["event"].get("original").is_none());
    let log = gw.stop();
    assert!(!log.contains("a-redaction-key"), "the key is never logged");
}

/// Connections that hold a slot and do nothing give it back: one that
/// finished TLS and sent nothing, one that sent the HTTP/2 preface and
/// stopped. A body that trickles is cut off at the body deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_connections_give_their_slots_back() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg = push_config(r#"{ type = "none" }"#, "", "").replace(
        "tls = { self_signed = true }\n",
        "tls = { self_signed = true }\nmax_connections = 2\nheader_timeout_secs = 30\nidle_timeout_secs = 2\nbody_timeout_secs = 2\n",
    );
    let (_dir, gw) = start(&cfg);
    let c = gw.client();
    // Both slots taken by clients that stay silent.
    let _silent = c.tls_stream(false).await;
    let mut preface = c.tls_stream(true).await;
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), c.push("s", &[], "{\"a\":1}"))
        .await
        .expect("a real client gets a slot once the silent ones are closed");
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "it did wait for a slot: {:?}",
        started.elapsed()
    );
    // A body announced as 100 bytes that comes a byte every half second.
    let mut slow = c.tls_stream(false).await;
    slow.write_all(b"POST /v1/push/s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(slow);
    let trickle = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if wr.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        // The server answers, then closes; the trickle stops mattering.
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    let started = std::time::Instant::now();
    tokio::select! {
        () = read => {}
        () = trickle => {}
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        gw.metric("sluice_source_rejected_requests_total{reason=\"timeout\",source=\"s\"}")
            .await,
        1.0
    );
    gw.stop();
}

/// 64 decompression bombs at once (about 100 MB of JSON each, sent as
/// ~100 KB of gzip): the memory of bodies in flight stays within
/// `max_body_memory_bytes` (256 MiB); the requests beyond it are answered
/// 503 with `Retry-After` instead of queued in memory, the others 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decompression_bombs_stay_within_the_body_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        r#"
[sources.s]
type = "push"
listener = "https"
auth = { type = "none" }

[pipelines.p]
source = "s"
sink = "out"

[sinks.out]
type = "local"
path = "out"
"#,
    );
    let gw = Gateway::start(dir.path(), &cfg);
    let mut json = Vec::with_capacity(100_000_001);
    json.push(b'[');
    while json.len() < 99_999_990 {
        json.extend_from_slice(b"1,");
    }
    json.extend_from_slice(b"1]");
    let bomb = bytes::Bytes::from(
        tokio::task::spawn_blocking(move || {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&json).unwrap();
            gz.finish().unwrap()
        })
        .await
        .unwrap(),
    );
    assert!(bomb.len() < 1 << 20, "a bomb: {} bytes", bomb.len());
    let c = gw.client();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (c, bomb) = (c.clone(), bomb.clone());
            tokio::spawn(async move { c.push("s", &[("content-encoding", "gzip")], bomb).await })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
        }
        *statuses.entry(r.status.as_u16()).or_insert(0) += 1;
    }
    assert!(
        statuses.keys().all(|s| [413, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains_key(&503),
        "the budget held some back: {statuses:?}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kib < (256 + 256) * 1024,
        "peak RSS {} MiB: the body budget (256 MiB) plus 256 MiB for everything else",
        peak_kib / 1024
    );
    // A normal request goes through afterwards.
    let r = c.push("s", &[], "{\"after\":1}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    eprintln!("bombs: {statuses:?}, peak RSS {} MiB", peak_kib / 1024);
    gw.stop();
}

/// A body past `max_body_bytes` sent without `Content-Length` (chunked) is
/// refused while it is read; headers that never end are cut off at
/// `header_timeout_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_the_limit_and_headers_that_never_end() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg = push_config(BEARER, "", "").replace(
        "tls = { self_signed = true }\n",
        "tls = { self_signed = true }\nheader_timeout_secs = 2\n",
    );
    let (_dir, gw) = start(&cfg);
    let c = gw.client();
    let mut s = c.tls_stream(false).await;
    s.write_all(
        b"POST /v1/push/s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret-token\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 1000, "x".repeat(1000));
    let mut answer = String::new();
    for _ in 0..6 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = vec![0u8; 4096];
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("4096 bytes"), "{answer}");
    // Headers begun and never finished: the connection is closed.
    let mut slow = c.tls_stream(false).await;
    slow.write_all(b"POST /v1/push/s HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection was closed");
    assert!(
        started.elapsed() >= Duration::from_millis(1500)
            && started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    gw.stop();
}

/// A listener with a PEM certificate and key from files; several HTTP/2
/// requests on one connection; backpressure on bytes with a high-water
/// mark below 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_listener_http2_streams_and_backpressure_on_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), pair.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
    // The sink cannot write, so records stay; 2 KiB of budget, 50 % high water.
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/s"), "in the way").unwrap();
    let cfg = push_config(r#"{ type = "none" }"#, "", "").replace(
        "tls = { self_signed = true }",
        "tls = { cert = \"cert.pem\", key = \"key.pem\" }",
    ) + "\n[spool]\nmax_bytes = 2048\nhigh_water = 0.5\n";
    let gw = Gateway::start(dir.path(), &cfg);
    assert_eq!(
        gw.cert,
        dir.path().join("cert.pem"),
        "the listener serves the file's certificate"
    );
    let c = crate::gw::Client::new(gw.push, &dir.path().join("cert.pem"));
    let mut h2 = c.h2_conn().await;
    let mut versions = Vec::new();
    let mut refused = None;
    for i in 0..40 {
        let (version, r) = h2
            .push(
                "s",
                &[],
                format!("{{\"i\":{i},\"pad\":\"{}\"}}", "p".repeat(100)),
            )
            .await;
        versions.push(version);
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert!(versions.len() > 3 && versions.iter().all(|v| *v == hyper::Version::HTTP_2));
    let r = refused.expect("refused once half the byte budget is used");
    assert!(r.body.contains("bytes spooled (budget 2048)"), "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        gw.metric("sluice_source_rejected_requests_total{reason=\"backpressure\",source=\"s\"}")
            .await,
        1.0
    );
    let bytes = gw.metric("sluice_spool_bytes{sink=\"out\"}").await;
    assert!((1024.0..=2048.0).contains(&bytes), "{bytes}");
    gw.stop();
}
