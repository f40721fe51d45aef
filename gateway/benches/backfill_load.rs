//! Backfill benchmark (not a test): `sluice backfill` (release build) pulls
//! 1M events from the JumpCloud stub over HTTPS, 10 000 a page, through a
//! transform into the spool and a gzip local sink. sluice's own progress
//! bar is shown as it runs; the figures come from its summary line.
//!
//! ```sh
//! cargo bench -p sluice --bench backfill_load
//! # env: BACKFILL_EVENTS (1000000), BACKFILL_TRANSFORM (ecs-jumpcloud | none)
//! #      BACKFILL_API=jupiterone: one JupiterOne run over BACKFILL_EVENTS
//! #      entities (default 200000), 1000 a page, through j1-cdc (whether a
//! #      long unordered run stays linear)
//! ```

#[allow(
    dead_code,
    reason = "shared with the e2e tests; the bench uses part of it"
)]
#[path = "../../tests/e2e/stubs.rs"]
mod stubs;
#[allow(
    dead_code,
    reason = "shared with the e2e tests; the bench uses part of it"
)]
#[path = "../../tests/e2e/support.rs"]
mod support;

use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let n: i64 = std::env::var("BACKFILL_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let transform = std::env::var("BACKFILL_TRANSFORM").unwrap_or_else(|_| "ecs-jumpcloud".into());
    let dir = tempfile::tempdir().unwrap();
    if std::env::var("BACKFILL_API").is_ok_and(|a| a == "jupiterone") {
        let n = std::env::var("BACKFILL_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        return jupiterone(dir.path(), n).await;
    }
    let state = stubs::JumpCloud::with_key("bench-key");
    let base = chrono::Utc::now() - chrono::Duration::days(10);
    let ts = |i: i64| {
        (base + chrono::Duration::microseconds(i * 500))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    };
    let services = ["directory", "sso", "radius", "systems"];
    let t = Instant::now();
    state.add((0..n).map(|i| {
        (
            format!("{i:024x}"),
            ts(i),
            services[i as usize % 4].to_string(),
        )
    }));
    eprintln!(
        "stub: {n} events generated in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let transforms = if transform == "none" {
        String::new()
    } else {
        format!("[[pipelines.p.transforms]]\nuse = \"{transform}\"\n")
    };
    let config = format!(
        r#"state_dir = "state"
[admin]
address = "127.0.0.1:0"

[sources.jc]
type = "jumpcloud"
api_key = "bench-key"
base_url = "{url}"
ca_file = "{ca}"
start = "{start}"
limit = 10000

[pipelines.p]
source = "jc"
sink = "out"
{transforms}
[sinks.out]
type = "local"
path = "out"
key = "{{route}}/%Y/%m/%d"
compression = "gzip"
compression_level = 1
rotate = {{ max_age_secs = 10 }}

[spool]
sync = "full"
"#,
        url = stub.url(),
        ca = stub.cert.display(),
        start = ts(0)
    );
    std::fs::write(dir.path().join("sluice.toml"), config).unwrap();
    let (since, until) = (ts(0), ts(n));
    let (summary, elapsed) = backfill(
        dir.path(),
        &["--source", "jc", "--since", &since, "--until", &until],
    )
    .await;
    println!(
        "backfill_load: {n} JumpCloud events, transform {transform}, 10000 per page, gzip local sink"
    );
    println!("  {}", summary.trim());
    println!(
        "  wall time including start-up and the final flush: {:.1} s",
        elapsed.as_secs_f64()
    );
}

/// One JupiterOne run over `n` entities, 1000 a page, through `j1-cdc`.
async fn jupiterone(dir: &std::path::Path, n: i64) {
    let state = stubs::JupiterOne::new("bench-token", "bench", 1000);
    let now_ms = chrono::Utc::now().timestamp_millis();
    state.entities.lock().unwrap().extend((0..n).map(|i| {
        serde_json::json!({
            "id": format!("ent-{i:08}"),
            "entity": {"_id": format!("ent-{i:08}"), "_key": format!("k{i}"), "_type": "finding",
                       "_class": ["Finding"], "_accountId": "bench", "_version": 1,
                       "_deleted": false, "_beginOn": now_ms - 86_400_000 + (i * 7919 % n)},
            "properties": {"severity": "high", "displayName": format!("Finding {i}")}
        })
    }));
    let stub = stubs::jupiterone(dir, state).await;
    let start = (chrono::Utc::now() - chrono::Duration::days(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let config = format!(
        r#"state_dir = "state"
[admin]
address = "127.0.0.1:0"

[sources.j1]
type = "jupiterone"
api_token = "bench-token"
account_id = "bench"
base_url = "{url}/"
ca_file = "{ca}"
start = "{start}"

[pipelines.p]
source = "j1"
sink = "out"
[[pipelines.p.transforms]]
use = "j1-cdc"

[sinks.out]
type = "local"
path = "out"
compression = "gzip"
compression_level = 1
rotate = {{ max_age_secs = 10 }}
"#,
        url = stub.url(),
        ca = stub.cert.display(),
    );
    std::fs::write(dir.join("sluice.toml"), config).unwrap();
    let (summary, elapsed) = backfill(dir, &["--source", "j1", "--since", &start]).await;
    println!(
        "backfill_load: one JupiterOne run of {n} entities, 1000 a page, j1-cdc, gzip local sink"
    );
    println!("  {}", summary.trim());
    println!(
        "  wall time including start-up and the final flush: {:.1} s, {:.1} µs per entity",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
}

/// Runs the release `sluice backfill ARGS` on `dir/sluice.toml`, its
/// progress bar on our stderr; returns its summary and how long it took.
async fn backfill(dir: &std::path::Path, args: &[&str]) -> (String, std::time::Duration) {
    let config_path = dir.join("sluice.toml");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        support::sluice()
            .env("SLUICE_LOG", "warn")
            .args(["backfill", "--config"])
            .arg(&config_path)
            .args(&args)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "backfill failed: {summary}");
    (summary, elapsed)
}
