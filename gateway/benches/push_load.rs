//! Load benchmark of the whole gateway (not a test): the real `sluice run`
//! binary, HTTPS push with keep-alive from several connections, through
//! `ecs-jumpcloud`, into the SQLite spool and a gzip local-directory sink.
//!
//! Prints events/s, p50/p99/max acknowledgement latency (request sent →
//! 200, which means durably spooled) and sluice's peak RSS.
//!
//! ```sh
//! cargo bench -p sluice --bench push_load
//! # knobs (env): LOAD_SECS=20 LOAD_CONNS=8 LOAD_BATCH=100 LOAD_SYNC=full|normal LOAD_TRANSFORM=ecs-jumpcloud|none
//! #              LOAD_SINK=local|s3 (s3: radosgw over TLS, started by scripts/s3-test-server.sh)
//! #              LOAD_COMPRESSION=gzip|zstd|none (level 1 for gzip and zstd)
//! ```

mod common;
#[allow(
    dead_code,
    reason = "shared with the e2e tests; the bench uses part of it"
)]
#[path = "../../tests/e2e/gw.rs"]
mod gw;
#[allow(
    dead_code,
    reason = "shared with the e2e tests; the bench uses part of it"
)]
#[path = "../../tests/e2e/s3env.rs"]
mod s3env;
#[allow(
    dead_code,
    reason = "shared with the e2e tests; the bench uses part of it"
)]
#[path = "../../tests/e2e/support.rs"]
mod support;

use hyper::StatusCode;
use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` probes benches with these; nothing to list.
        return;
    }
    let secs: u64 = env_or("LOAD_SECS", 20);
    let conns: usize = env_or("LOAD_CONNS", 8);
    let batch: usize = env_or("LOAD_BATCH", 100);
    let sync: String = env_or("LOAD_SYNC", "full".to_string());
    let transform: String = env_or("LOAD_TRANSFORM", "ecs-jumpcloud".to_string());
    let sink_kind: String = env_or("LOAD_SINK", "local".to_string());
    let compression: String = env_or("LOAD_COMPRESSION", "gzip".to_string());
    let level = match compression.as_str() {
        "gzip" | "zstd" => "compression_level = 1\n",
        _ => "",
    };
    let transforms = if transform == "none" {
        String::new()
    } else {
        format!("[[pipelines.p.transforms]]\nuse = \"{transform}\"\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = if sink_kind == "s3" {
        let env = s3env::s3_env();
        let bucket = s3env::new_bucket(&s3env::admin_client(env).await).await;
        format!(
            r#"[sinks.out]
type = "s3"
bucket = "{bucket}"
region = "us-east-1"
endpoint = "{endpoint}"
ca_file = "{ca}"
access_key_id = "{ak}"
secret_access_key = "{sk}"
checksum = "when_required"
sse = "aws:kms"
kms_key_id = "{kms}"
key = "{{route}}/%Y/%m/%d"
compression = "{compression}"
{level}rotate = {{ max_age_secs = 5 }}
"#,
            endpoint = env.get("SLUICE_TEST_S3_ENDPOINT"),
            ca = env.get("SLUICE_TEST_S3_CA"),
            ak = env.get("SLUICE_TEST_S3_ACCESS_KEY"),
            sk = env.get("SLUICE_TEST_S3_SECRET_KEY"),
            kms = env.get("SLUICE_TEST_S3_KMS_KEY"),
        )
    } else {
        format!(
            "[sinks.out]\ntype = \"local\"\npath = \"out\"\nkey = \"{{route}}/%Y/%m/%d\"\ncompression = \"{compression}\"\n{level}rotate = {{ max_age_secs = 5 }}\n"
        )
    };
    let config = gw::config(&format!(
        r#"
[sources.s]
type = "push"
listener = "https"
auth = {{ type = "bearer", token = "bench-token" }}

[pipelines.p]
source = "s"
sink = "out"
{transforms}
{sink}
[spool]
sync = "{sync}"
"#
    ));
    let gateway = gw::Gateway::start(dir.path(), &config);
    let client = gateway.client();
    let bodies: Vec<bytes::Bytes> = (0..64)
        .map(|b| {
            let mut body = Vec::new();
            for i in 0..batch {
                body.extend_from_slice(&common::push_event(b * batch + i));
                body.push(b'\n');
            }
            bytes::Bytes::from(body)
        })
        .collect();
    let event_bytes = bodies[0].len() / batch;
    // Warm-up: compile caches, open objects, first instances.
    let mut warm = client.connect().await;
    for body in bodies.iter().take(4) {
        let r = warm
            .push(
                "s",
                &[("authorization", "Bearer bench-token")],
                body.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let client = client.clone();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await;
            let mut latencies = Vec::new();
            let mut events = 0usize;
            let mut refused = 0usize;
            let mut i = c;
            while Instant::now() < until {
                let t = Instant::now();
                let r = conn
                    .push(
                        "s",
                        &[("authorization", "Bearer bench-token")],
                        bodies[i % bodies.len()].clone(),
                    )
                    .await;
                match r.status {
                    StatusCode::OK => {
                        latencies.push(t.elapsed());
                        events += batch;
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("unexpected {other}: {}", r.body),
                }
                i += conns;
            }
            (latencies, events, refused)
        }));
    }
    let mut latencies = Vec::new();
    let (mut events, mut refused) = (0, 0);
    for t in tasks {
        let (l, e, r) = t.await.unwrap();
        latencies.extend(l);
        events += e;
        refused += r;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let rss = peak_rss_kib(&gateway);
    println!(
        "push_load: {conns} connections x {batch} events/request, ~{event_bytes} B/event, transform {transform}, sync {sync}, {sink_kind} sink, {compression}, {secs} s"
    );
    println!(
        "  events/s: {:.0}   requests: {}   refused (503): {refused}",
        events as f64 / elapsed.as_secs_f64(),
        latencies.len()
    );
    println!(
        "  ack latency per request: p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!("  sluice peak RSS: {:.1} MiB", rss as f64 / 1024.0);
    // Whether the sink kept up: what it delivered during the run, and the
    // backlog left in the spool when the load stopped.
    let scrape = gateway.metrics().await;
    let value = |sample: &str| gw::metric_opt(&scrape, sample).unwrap_or(0.0);
    println!(
        "  delivered by the sink during the run: {:.0} records; spool backlog at the end: {:.0} records, {:.1} MiB",
        value("sluice_sink_records_total{sink=\"out\"}"),
        value("sluice_spool_records{sink=\"out\"}"),
        value("sluice_spool_bytes{sink=\"out\"}") / 1048576.0
    );
    if std::env::var_os("LOAD_METRICS").is_some() {
        let (_, metrics) = gateway.admin_get("/metrics").await;
        for line in metrics
            .lines()
            .filter(|l| l.contains("_seconds") && !l.starts_with('#'))
        {
            println!("  {line}");
        }
    }
    gateway.stop();
}

/// VmHWM of the gateway process, in KiB.
fn peak_rss_kib(gateway: &gw::Gateway) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gateway.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
