//! The transforms admin API on a running gateway: validation of uploads
//! (good and hostile), versions, and a hot swap and rollback under
//! continuous push load with every record counted.

use crate::gw::{Gateway, config, delivered, metric_value};
use crate::support::sluice;
use hyper::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const TOKEN: &str = "admin-test-token-0123456789";

pub(crate) fn admin_config(transforms: &str, extra_admin: &str) -> String {
    let cfg = config(&format!(
        r#"
[sources.s]
type = "push"
listener = "https"
auth = {{ type = "none" }}

[pipelines.p]
source = "s"
sink = "out"
batch_size = 16
{transforms}

[sinks.out]
type = "local"
path = "out"
key = "{{route}}"
rotate = {{ max_age_secs = 0.2 }}
"#
    ));
    crate::gw::with_admin_token(&cfg, TOKEN, extra_admin)
}

/// One raw HTTP/1.1 request to the admin listener; returns (status, JSON).
pub(crate) async fn admin(
    gw: &Gateway,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> (u16, Value) {
    let mut tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    parse_response(&out)
}

fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

pub(crate) fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_checked_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &admin_config("", "max_upload_bytes = 33554432"));
    let tagger = component(sluice_test_artifacts::TAGGER_A_COMPONENT);
    let hostile = component(sluice_test_artifacts::HOSTILE_COMPONENT);

    assert_eq!(admin(&gw, "GET", "/v1/transforms", b"", None).await.0, 401);
    assert_eq!(
        admin(&gw, "GET", "/v1/transforms", b"", Some("wrong-token-wrong"))
            .await
            .0,
        401
    );
    let put = |path: &str| format!("/v1/transforms/{path}");
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (put("t"), b"{\"not\": \"wasm\"}".to_vec(), "not_a_component"),
        (put("t"), b"\0asm\x01\0\0\0".to_vec(), "core_module"),
        (
            put("t"),
            component(sluice_test_artifacts::WRONG_WORLD_COMPONENT),
            "wrong_world",
        ),
        (
            put("t"),
            component(sluice_test_artifacts::SMUGGLER_COMPONENT),
            "imports",
        ),
        (
            put("t?config=mode%3Dinit-loop"),
            hostile.clone(),
            "trap_at_init",
        ),
        (
            put("t?config=mode%3Dinit-trap"),
            hostile.clone(),
            "trap_at_init",
        ),
        (
            put("t?config=mode%3Dreject"),
            hostile.clone(),
            "config_rejected",
        ),
        (
            put("t?config=mode%3Dtrap&sample=%22boom%22"),
            hostile.clone(),
            "trap_on_sample",
        ),
        (put("t?sample=%5B1%5D"), tagger.clone(), "sample_failed"),
        (put("bad%2Fname"), tagger.clone(), "bad_name"),
    ];
    for (path, body, kind) in &cases {
        let (status, reply) = admin(&gw, "PUT", path, body, Some(TOKEN)).await;
        assert!((400..500).contains(&status), "{path}: {status} {reply}");
        assert_eq!(reply["kind"], *kind, "{path}: {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (_, reply) = admin(
        &gw,
        "PUT",
        &put("t?config=mode%3Dinit-loop"),
        &hostile,
        Some(TOKEN),
    )
    .await;
    assert!(
        reply["error"].as_str().unwrap().contains("deadline"),
        "an endless loop in create hits the deadline: {reply}"
    );

    // 1 GiB: refused on its Content-Length, long before it could be read.
    let mut tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let head = format!(
        "PUT /v1/transforms/huge HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        1u64 << 30
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let flood = tokio::spawn(async move {
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut out))
        .await
        .expect("an answer well before 1 GiB is sent")
        .unwrap();
    assert_eq!(
        parse_response(&out[..n]).0,
        413,
        "{}",
        String::from_utf8_lossy(&out[..n])
    );
    flood.abort();
    // And a body without a Content-Length that grows past the limit.
    let mut tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let head = format!(
        "PUT /v1/transforms/huge HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "x".repeat(1 << 20));
    for _ in 0..40 {
        if tcp.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut out))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(parse_response(&out[..n]).0, 413);

    let (status, list) = admin(&gw, "GET", "/v1/transforms", b"", Some(TOKEN)).await;
    assert_eq!(
        (status, list),
        (200, Value::Array(vec![])),
        "nothing was stored"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "sluice_transform_uploads_rejected_total{reason=\"trap_at_init\"}"
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "sluice_transform_uploads_rejected_total{reason=\"too_large\"}"
        ),
        2.0
    );

    // A good upload: stored, inactive until activated.
    let (status, v1) = admin(
        &gw,
        "PUT",
        &put("tagger?sample=%7B%22a%22%3A1%7D"),
        &tagger,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 201, "{v1}");
    assert_eq!(
        (v1["version"].as_u64(), v1["active"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(v1["sha256"].as_str().unwrap().len(), 64);
    let (status, again) = admin(&gw, "PUT", &put("tagger"), &tagger, Some(TOKEN)).await;
    assert_eq!(
        (status, again["version"].as_u64()),
        (201, Some(1)),
        "the same bytes are the same version"
    );
    let (status, act) = admin(
        &gw,
        "POST",
        "/v1/transforms/tagger/activate",
        b"{\"version\": 1}",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{act}");
    let (status, _) = admin(
        &gw,
        "DELETE",
        "/v1/transforms/tagger/versions/1",
        b"",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 409, "the active version cannot be removed");
    let (status, v2) = admin(
        &gw,
        "PUT",
        &put("tagger"),
        &component(sluice_test_artifacts::TAGGER_B_COMPONENT),
        Some(TOKEN),
    )
    .await;
    assert_eq!((status, v2["version"].as_u64()), (201, Some(2)));
    let (_, versions) = admin(
        &gw,
        "GET",
        "/v1/transforms/tagger/versions",
        b"",
        Some(TOKEN),
    )
    .await;
    assert_eq!(versions["active"], 1);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    let (status, _) = admin(
        &gw,
        "DELETE",
        "/v1/transforms/tagger/versions/2",
        b"",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = admin(
        &gw,
        "POST",
        "/v1/transforms/tagger/activate",
        b"{\"version\": 2}",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404);
    let m = gw.metrics().await;
    let info = format!(
        "sluice_transform_active_info{{sha256=\"{}\",transform=\"tagger\",version=\"1\"}}",
        v1["sha256"].as_str().unwrap()
    );
    assert_eq!(metric_value(&m, &info), 1.0, "{m}");
    let log = gw.stop();
    assert!(!log.contains(TOKEN), "the token is never logged");
}

fn cli(args: &[&str], admin_url: &str) -> Value {
    let out = sluice()
        .args(args)
        .env("SLUICE_ADMIN_URL", admin_url)
        .env("SLUICE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_and_rollback_under_load_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Seed the store: upload v1 to a gateway whose pipeline does not use it
    // yet, then point the pipeline at it.
    let gw = Gateway::start(dir.path(), &admin_config("", ""));
    let url = format!("http://{}", gw.admin);
    let a = sluice_test_artifacts::TAGGER_A_COMPONENT;
    let pushed = tokio::task::spawn_blocking(move || {
        cli(&["transform", "push", "tagger", a, "--activate"], &url)
    })
    .await
    .unwrap();
    assert_eq!(
        (pushed["version"].as_u64(), pushed["active"].as_bool()),
        (Some(1), Some(true)),
        "{pushed}"
    );
    gw.stop();
    let gw = Gateway::start(
        dir.path(),
        &admin_config("[[pipelines.p.transforms]]\nuse = \"tagger\"\n", ""),
    );
    let url = format!("http://{}", gw.admin);
    let (_, listed) = admin(&gw, "GET", "/v1/transforms", b"", Some(TOKEN)).await;
    assert_eq!(listed[0]["pipelines"], serde_json::json!(["p"]), "{listed}");

    // Continuous load: 4 keep-alive connections, 8 records a request.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let (client, stop) = (gw.client(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await;
            let (mut seq, mut acked) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let body: String = (0..8)
                    .map(|i| format!("{{\"task\":{t},\"seq\":{}}}\n", seq + i))
                    .collect();
                let r = conn
                    .push("s", &[("content-type", "application/x-ndjson")], body)
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                seq += 8;
                acked += 8;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (u, b) = (url.clone(), sluice_test_artifacts::TAGGER_B_COMPONENT);
    let swap = tokio::task::spawn_blocking(move || {
        cli(&["transform", "push", "tagger", b, "--activate"], &u)
    })
    .await
    .unwrap();
    assert_eq!(swap["version"], 2, "{swap}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let u = url.clone();
    let rollback =
        tokio::task::spawn_blocking(move || cli(&["transform", "activate", "tagger", "1"], &u))
            .await
            .unwrap();
    assert_eq!(
        (rollback["version"].as_u64(), rollback["previous"].as_u64()),
        (Some(1), Some(2)),
        "{rollback}"
    );
    eprintln!(
        "rollback swap latency: {:.1} ms",
        rollback["swap_ms"].as_f64().unwrap()
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap();
    }
    let out = dir.path().join("out");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while delivered(&out).len() < acked as usize && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = delivered(&out);
    // Every acknowledged record exactly once, each tagged by one version.
    let mut seen: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for (_, line) in &lines {
        let doc: Value = serde_json::from_str(line).unwrap();
        let key = (doc["task"].as_u64().unwrap(), doc["seq"].as_u64().unwrap());
        assert!(
            seen.insert(key, doc["tag"].as_str().unwrap().to_string())
                .is_none(),
            "duplicate {key:?}"
        );
    }
    assert_eq!(
        seen.len() as u64,
        acked,
        "lost records: {} acknowledged, {} delivered",
        acked,
        seen.len()
    );
    // Per connection, in push order: a… then b… then a… (a swap is atomic
    // between batches: never back and forth).
    let mut phases_seen = Vec::new();
    for t in 0..4u64 {
        let tags: Vec<&str> = seen
            .range((t, 0)..(t + 1, 0))
            .map(|(_, tag)| tag.as_str())
            .collect();
        let mut phases: Vec<&str> = tags.clone();
        phases.dedup();
        // In order on each connection: v1 (a), then v2 (b) after the swap,
        // then v1 again after the rollback; never back and forth.
        assert!(
            !phases.is_empty() && ["a", "b", "a"].starts_with(&phases),
            "task {t}: {phases:?}"
        );
        phases_seen.push(phases.len());
    }
    assert!(
        phases_seen.contains(&3),
        "some connection saw a → b → a: {phases_seen:?}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric_value(&m, "sluice_transform_swaps_total{transform=\"tagger\"}"),
        2.0,
        "{m}"
    );
    eprintln!(
        "hot swap under load: {acked} records, {} delivered once each",
        seen.len()
    );
    gw.stop();
}

/// A `sha256` pin on `use = "name"` runs the pinned version, whatever is
/// active, and that version cannot be deleted while it is pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sha256_pin_selects_its_version_whatever_is_active() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &admin_config("", ""));
    let url = format!("http://{}", gw.admin);
    let (u, a, b) = (
        url.clone(),
        sluice_test_artifacts::TAGGER_A_COMPONENT,
        sluice_test_artifacts::TAGGER_B_COMPONENT,
    );
    let (v1, v2) = tokio::task::spawn_blocking(move || {
        (
            cli(&["transform", "push", "tagger", a, "--activate"], &u),
            cli(&["transform", "push", "tagger", b, "--activate"], &u),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        (v1["version"].as_u64(), v2["version"].as_u64()),
        (Some(1), Some(2))
    );
    let sha_a = v1["sha256"].as_str().unwrap().to_string();
    gw.stop();
    // Version 2 is active; the config pins version 1 by its digest.
    let pinned = format!("[[pipelines.p.transforms]]\nuse = \"tagger\"\nsha256 = \"{sha_a}\"\n");
    let gw = Gateway::start(dir.path(), &admin_config(&pinned, ""));
    let r = gw.client().push("s", &[], "{\"n\":1}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Activations do not move a pinned step.
    let u = url_of(&gw);
    tokio::task::spawn_blocking(move || {
        cli(&["transform", "activate", "tagger", "1"], &u);
        cli(&["transform", "activate", "tagger", "2"], &u);
    })
    .await
    .unwrap();
    let r = gw.client().push("s", &[], "{\"n\":2}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let lines = crate::gw::wait_delivered(&dir.path().join("out"), 2).await;
    for (_, l) in &lines {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["tag"], "a", "the pinned version ran: {l}");
    }
    let (status, body) = admin(
        &gw,
        "DELETE",
        "/v1/transforms/tagger/versions/1",
        b"",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = admin(
        &gw,
        "DELETE",
        "/v1/transforms/tagger/versions/2",
        b"",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 409, "the active version is not deleted either");
    gw.stop();
}

fn url_of(gw: &Gateway) -> String {
    format!("http://{}", gw.admin)
}

/// `sluice ARGS` against the admin API at `url`: (success, stdout, stderr).
fn cli_output(args: &[&str], url: &str) -> (bool, String, String) {
    let out = sluice()
        .args(args)
        .env("SLUICE_ADMIN_URL", url)
        .env("SLUICE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_over_tls_samples_refusals_and_name_at_sha256_pins() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, hostile) = (
        sluice_test_artifacts::TAGGER_A_COMPONENT,
        sluice_test_artifacts::TAGGER_B_COMPONENT,
        sluice_test_artifacts::HOSTILE_COMPONENT,
    );
    let gw = Gateway::start(
        dir.path(),
        &admin_config("", "tls = { self_signed = true }"),
    );
    let url = format!("https://{}", gw.admin);
    let ca = dir.path().join("state/tls/cert.pem");
    let samples = dir.path().join("samples.jsonl");
    std::fs::write(&samples, "{\"a\":1}\n{\"b\":2}\n").unwrap();
    let bad_samples = dir.path().join("bad-samples.jsonl");
    std::fs::write(&bad_samples, "{\"a\":1}\n[1]\n").unwrap();
    let (ca_s, samples_s, bad_s) = (
        ca.display().to_string(),
        samples.display().to_string(),
        bad_samples.display().to_string(),
    );
    let u = url.clone();
    let (unknown_ca, v1, refused, v2, plain) = tokio::task::spawn_blocking(move || {
        let with_ca = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend(["--admin-ca", ca_s.as_str()]);
            cli_output(&all, &u)
        };
        (
            cli_output(&["transform", "versions", "t"], &u),
            with_ca(&[
                "transform",
                "push",
                "t",
                a,
                "--samples",
                &samples_s,
                "--activate",
            ]),
            with_ca(&["transform", "push", "t", b, "--samples", &bad_s]),
            with_ca(&["transform", "push", "t", b, "--samples", &samples_s]),
            cli_output(&["transform", "versions", "t"], "http://192.0.2.1:9464"),
        )
    })
    .await
    .unwrap();
    assert!(!unknown_ca.0, "a certificate nobody vouches for is refused");
    assert!(unknown_ca.2.contains("certificate"), "{}", unknown_ca.2);
    assert!(v1.0, "{}", v1.2);
    let v1: Value = serde_json::from_str(&v1.1).unwrap();
    assert_eq!(
        (v1["version"].as_u64(), v1["active"].as_bool()),
        (Some(1), Some(true))
    );
    assert!(
        !refused.0,
        "a sample the component fails on refuses the upload"
    );
    assert!(refused.2.contains("sample"), "{}", refused.2);
    assert!(v2.0, "{}", v2.2);
    let v2: Value = serde_json::from_str(&v2.1).unwrap();
    assert_eq!(
        v2["version"].as_u64(),
        Some(2),
        "the refused upload took no number"
    );
    assert!(!plain.0);
    assert!(
        plain.2.contains("only https:// URLs"),
        "plain HTTP off loopback is refused before connecting: {}",
        plain.2
    );
    gw.stop();

    // One pipeline follows `t`, the other pins version 1 as name@sha256.
    let sha_a = v1["sha256"].as_str().unwrap().to_string();
    let pipelines = format!(
        "[[pipelines.p.transforms]]\nuse = \"t\"\n\n\
         [sources.pinned]\ntype = \"push\"\nlistener = \"https\"\nauth = {{ type = \"none\" }}\n\n\
         [pipelines.q]\nsource = \"pinned\"\nsink = \"out\"\n\n\
         [[pipelines.q.transforms]]\nuse = \"t@sha256:{sha_a}\"\n"
    );
    let gw = Gateway::start(dir.path(), &admin_config(&pipelines, ""));
    let u = url_of(&gw);
    let (activated, v3, swap_refused) = tokio::task::spawn_blocking(move || {
        (
            cli_output(&["transform", "activate", "t", "2"], &u),
            cli_output(&["transform", "push", "t", hostile, "-c", "mode=trap"], &u),
            cli_output(&["transform", "activate", "t", "3"], &u),
        )
    })
    .await
    .unwrap();
    assert!(activated.0, "{}", activated.2);
    assert!(v3.0, "{}", v3.2);
    // Version 3 needs a `mode`; pipeline p gives it no config.
    assert!(!swap_refused.0, "an activation a pipeline's config refuses");
    assert!(swap_refused.2.contains("mode"), "{}", swap_refused.2);
    let (_, versions) = admin(&gw, "GET", "/v1/transforms/t/versions", b"", Some(TOKEN)).await;
    assert_eq!(versions["active"], 2, "{versions}");
    let client = gw.client();
    for source in ["s", "pinned"] {
        let r = client.push(source, &[], "{\"n\":1}").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let lines = crate::gw::wait_delivered(&dir.path().join("out"), 2).await;
    let tags: BTreeMap<String, String> = lines
        .iter()
        .map(|(path, l)| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                path.split('/').next().unwrap().to_string(),
                v["tag"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        BTreeMap::from([("pinned".into(), "a".into()), ("s".into(), "b".into())]),
        "the active version on p, the pinned one on q"
    );
    let (status, body) = admin(
        &gw,
        "DELETE",
        "/v1/transforms/t/versions/1",
        b"",
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        status, 409,
        "a version pinned as name@sha256 is kept: {body}"
    );
    gw.stop();

    // Without a token, the API is closed.
    let config = admin_config("", "").replace(&format!("token = \"{TOKEN}\"\n"), "");
    let gw = Gateway::start(dir.path(), &config);
    let (status, body) = admin(&gw, "GET", "/v1/transforms", b"", Some(TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("token")),
        "{body}"
    );
    assert_eq!(
        gw.admin_get("/readyz").await.0,
        StatusCode::OK,
        "the rest stays open"
    );
    gw.stop();
}
