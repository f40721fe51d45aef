//! Cluster mode end to end: two or three real `sluice run` processes, a
//! real 3-member etcd cluster over TLS with client certificates
//! (`scripts/etcd-test-cluster.sh`), the JumpCloud stub, and real faults:
//! kill -9, SIGSTOP past the lease, two etcd members stopped.
//!
//! What is counted: every event the stub holds must be delivered at least
//! once across the replicas' sinks (a killed replica is started again on
//! its own state, as a supervisor would, so what it spooled is delivered),
//! and the duplicates are at most one page per failover and never more
//! than `sluice_cluster_repolled_events_total` says.

use crate::gw::{Gateway, metric_value};
use crate::pollers::{ids, jc_config};
use crate::stubs::{self, Fault};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The lease TTL of these tests: a crashed leader is replaced after ~4 s.
const TTL: u64 = 4;
/// Events per page: the bound on duplicates per failover.
const PAGE: usize = 50;

/// The quorum test stops two members: it takes this for writing, every
/// other cluster test for reading.
static ETCD: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn etcd_dir() -> String {
    std::env::var("SLUICE_ETCD_TEST_DIR")
        .unwrap_or_else(|_| format!("{}/../etcd-test", env!("CARGO_TARGET_TMPDIR")))
}

fn script(args: &[&str]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/etcd-test-cluster.sh"
    );
    let status = std::process::Command::new(script)
        .args(args)
        .status()
        .expect("run scripts/etcd-test-cluster.sh");
    assert!(status.success(), "etcd-test-cluster.sh {args:?} failed");
}

/// The cluster's settings (its `env` file), started once per test binary.
fn etcd_env() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = etcd_dir();
        script(&["up", &dir]);
        std::fs::read_to_string(format!("{dir}/env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// The `[cluster]` section of replica `instance`, under a prefix of the
/// test's own.
fn cluster_section(prefix: &str, instance: &str) -> String {
    let env = etcd_env();
    let endpoints: Vec<String> = env["SLUICE_TEST_ETCD_ENDPOINTS"]
        .split(',')
        .map(|e| format!("{e:?}"))
        .collect();
    format!(
        r#"
[cluster]
etcd = [{}]
tls = {{ ca = "{}", cert = "{}", key = "{}" }}
prefix = "{prefix}"
instance_id = "{instance}"
lease_ttl_secs = {TTL}
"#,
        endpoints.join(", "),
        env["SLUICE_TEST_ETCD_CA"],
        env["SLUICE_TEST_ETCD_CERT"],
        env["SLUICE_TEST_ETCD_KEY"],
    )
}

fn prefix() -> String {
    format!("/sluice-test/{:016x}", rand::random::<u64>())
}

/// A replica: the JumpCloud poller (50 events a page, 1 s behind now), a
/// push source, the local sink, and `[cluster]`.
/// Every replica of a test is given the same `start`: a replica whose
/// configured start differs resets the cursor it takes over (and says so).
fn replica_config(stub: &stubs::Stub, start: &str, prefix: &str, instance: &str) -> String {
    let mut c = jc_config(
        stub,
        start,
        &format!("limit = {PAGE}\nsource_lag_secs = 1"),
        "rotate = { max_age_secs = 0.2 }",
    )
    .replace("source_lag_secs = 0\n", "");
    c.push_str(
        r#"
[sources.push]
type = "push"
listener = "https"
auth = { type = "none" }

[pipelines.pushed]
source = "push"
sink = "pushed"

[sinks.pushed]
type = "local"
path = "pushed"
rotate = { max_age_secs = 0.2 }
"#,
    );
    c.push_str(&cluster_section(prefix, instance));
    c
}

/// Adds 10 events every 100 ms, stamped now (the poller stays 1 s behind,
/// so none arrives behind a cursor), until stopped. Returns the stop flag.
fn feed(state: Arc<stubs::JumpCloud>) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut n = 0u32;
        while !flag.load(Ordering::Relaxed) {
            let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            state.add((0..10).map(|_| {
                n += 1;
                (format!("ev{n:07}"), ts.clone(), "directory".to_string())
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    stop
}

async fn metric(gw: &Gateway, sample: &str) -> f64 {
    metric_value(&gw.metrics().await, sample)
}

/// How many terms a replica has led the source for (from its log).
fn terms(gw: &Gateway) -> usize {
    gw.stderr()
        .matches("this replica now leads the poller")
        .count()
}

const LEADS: &str = r#"sluice_cluster_leader{source="jc"}"#;
const REPOLLED: &str = r#"sluice_cluster_repolled_events_total{source="jc"}"#;
const FENCED: &str = r#"sluice_cluster_fenced_writes_total{source="jc"}"#;

/// Waits until exactly one of `gws` leads the source; returns its index.
async fn one_leader(gws: &[&Gateway], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut leaders = Vec::new();
        for (i, g) in gws.iter().enumerate() {
            if metric(g, LEADS).await == 1.0 {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "two replicas lead at once: {leaders:?}");
        if let [i] = leaders[..] {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no replica took the lead within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every stub event is delivered (at least once) across the
/// replicas' sinks; returns id → deliveries.
async fn all_delivered(state: &stubs::JumpCloud, outs: &[PathBuf]) -> BTreeMap<String, usize> {
    let want: BTreeSet<String> = state
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.id.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let mut got = BTreeMap::new();
        for out in outs {
            for (id, n) in ids(out) {
                *got.entry(id).or_default() += n;
            }
        }
        let missing: Vec<&String> = want.iter().filter(|id| !got.contains_key(*id)).collect();
        if missing.is_empty() {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events never delivered, such as {:?}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every stub event is delivered across both replicas' sinks,
/// and checks that the duplicates are no more than `gws` counted as
/// repolled. Returns the duplicates.
async fn delivered_once_or_counted(
    what: &str,
    state: &stubs::JumpCloud,
    dirs: &[PathBuf; 2],
    gws: &[&Gateway],
) -> usize {
    let got = all_delivered(state, &[dirs[0].join("out"), dirs[1].join("out")]).await;
    let dups: usize = got.values().map(|n| n - 1).sum();
    let mut counted = 0.0;
    for g in gws {
        counted += metric(g, REPOLLED).await;
    }
    println!(
        "{what}: {} events, {dups} duplicates, {counted} counted as repolled",
        got.len()
    );
    if dups > 0 {
        let (a, b) = (ids(&dirs[0].join("out")), ids(&dirs[1].join("out")));
        let twice: Vec<String> = got
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| {
                format!(
                    "{id}:{}/{}",
                    a.get(id).unwrap_or(&0),
                    b.get(id).unwrap_or(&0)
                )
            })
            .collect();
        println!("{what}: more than once (a/b): {}", twice.join(" "));
    }
    assert!(
        dups as f64 <= counted,
        "{what}: {dups} duplicates but only {counted} counted as repolled"
    );
    dups
}

/// What a poller test runs in: a folder, the JumpCloud stub fed with
/// events, a prefix of its own in etcd, and the folders of replicas a, b.
struct Scene {
    dir: tempfile::TempDir,
    state: Arc<stubs::JumpCloud>,
    stub: stubs::Stub,
    stop: Arc<AtomicBool>,
    prefix: String,
    /// The poller's configured start, the same for every replica.
    start: String,
    dirs: [PathBuf; 2],
}

async fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let stop = feed(state.clone());
    let dirs = [replica_dir(dir.path(), "a"), replica_dir(dir.path(), "b")];
    Scene {
        dir,
        state,
        stub,
        stop,
        prefix: prefix(),
        start: (chrono::Utc::now() - chrono::Duration::minutes(5))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        dirs,
    }
}

fn replica_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// kill -9 the polling replica at a random moment: another takes over
/// within TTL + 2 s, every event is delivered, duplicates are at most one
/// page and counted. Prints the failover time (BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_moves_the_poller_within_the_ttl_and_loses_nothing() {
    let _etcd = ETCD.read().await;
    let Scene {
        dir: _dir,
        state,
        stub,
        stop,
        prefix,
        start,
        dirs,
    } = scene().await;
    let a = Gateway::start(&dirs[0], &replica_config(&stub, &start, &prefix, "a"));
    let b = Gateway::start(&dirs[1], &replica_config(&stub, &start, &prefix, "b"));
    let leader = one_leader(&[&a, &b], Duration::from_secs(30)).await;
    // Every documented cluster metric, and every one the alert rules
    // query, is exported by a replica; the scrape passes promtool.
    let scrape = a.metrics().await;
    let mut cluster_metrics: Vec<String> = crate::metrics::documented()
        .into_iter()
        .chain(crate::metrics::queried("deploy/prometheus/alerts.yml"))
        .filter(|n| n.starts_with("sluice_cluster_"))
        .collect();
    cluster_metrics.dedup();
    assert!(cluster_metrics.len() >= 5, "{cluster_metrics:?}");
    for name in &cluster_metrics {
        assert!(
            scrape.contains(&format!("# TYPE {name} ")),
            "{name} not exported:\n{scrape}"
        );
    }
    crate::support::promtool_check(&scrape);
    tokio::time::sleep(Duration::from_millis(1500 + rand::random::<u64>() % 1500)).await;
    let killed_terms = terms(if leader == 0 { &a } else { &b });
    let (dead_dir, survivor) = if leader == 0 {
        a.kill9();
        (dirs[0].clone(), b)
    } else {
        b.kill9();
        (dirs[1].clone(), a)
    };
    let killed = Instant::now();
    // The new leader's first request is the first one after the kill.
    let first = loop {
        let after = state
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .copied()
            .find(|t| *t > killed);
        if let Some(t) = after {
            break t;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(TTL + 10),
            "no replica polled after the leader was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let failover = first - killed;
    println!(
        "cluster failover: kill -9 to the new leader's first request in {failover:?} (TTL {TTL} s)"
    );
    assert!(
        failover <= Duration::from_secs(TTL + 2),
        "failover took {failover:?}, more than TTL + 2 s"
    );
    assert_eq!(metric(&survivor, LEADS).await, 1.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    // Started again on its own state, the killed replica delivers what it
    // spooled, and follows.
    let restarted = Gateway::start_existing(&dead_dir);
    let dups = delivered_once_or_counted("kill -9", &state, &dirs, &[&survivor, &restarted]).await;
    // One failover by the kill; on a loaded machine a replica that misses
    // renewals gives the lead up too, and each failover may repeat a page.
    let failovers = killed_terms + terms(&survivor) + terms(&restarted) - 1;
    assert!(
        dups <= PAGE * failovers,
        "{dups} duplicates: more than one page per failover ({failovers})"
    );
    assert_eq!(metric(&restarted, LEADS).await, 0.0, "two leaders");
    survivor.stop();
    restarted.stop();
}

/// SIGSTOP the leader while a page is in flight, past the TTL; another
/// replica takes over; SIGCONT: the paused replica's cursor write is
/// refused by etcd, it stops polling, and no event is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_and_stops_polling() {
    let _etcd = ETCD.read().await;
    let Scene {
        dir: _dir,
        state,
        stub,
        stop,
        prefix,
        start,
        dirs,
    } = scene().await;
    let a = Gateway::start(&dirs[0], &replica_config(&stub, &start, &prefix, "a"));
    one_leader(&[&a], Duration::from_secs(30)).await;
    let b = Gateway::start(&dirs[1], &replica_config(&stub, &start, &prefix, "b"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(one_leader(&[&a, &b], Duration::from_secs(1)).await, 0);
    // A's next request is held by the stub; pause A while it waits.
    let release = Arc::new(tokio::sync::Notify::new());
    state
        .faults
        .lock()
        .unwrap()
        .push_back(Fault::Delay(release.clone()));
    while !state.faults.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signal = |sig: &str, pid: u32| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP", a.pid());
    let paused = Instant::now();
    let deadline = paused + Duration::from_secs(TTL + 10);
    while metric(&b, LEADS).await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "B did not take over from the paused A"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B polls; then A's held page is answered (A is still stopped).
    tokio::time::sleep(Duration::from_secs(2)).await;
    release.notify_one();
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal("-CONT", a.pid());
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&a, FENCED).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "A's stale cursor write was not refused; stderr:\n{}",
            a.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&a, LEADS).await, 0.0);
    assert_eq!(metric(&b, LEADS).await, 1.0);
    // A sends nothing more.
    let ok = r#"sluice_poller_requests_total{outcome="ok",source="jc"}"#;
    let before = metric(&a, ok).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        metric(&a, ok).await,
        before,
        "the fenced replica still polls"
    );
    stop.store(true, Ordering::Relaxed);
    let dups = delivered_once_or_counted("SIGSTOP", &state, &dirs, &[&a, &b]).await;
    // A page per failover, and the page the paused leader spooled on waking.
    let failovers = terms(&a) + terms(&b) - 1;
    assert!(
        dups <= PAGE * (failovers + 1),
        "{dups} duplicates: more than one page per failover ({failovers}) and the refused one"
    );
    assert!(a.stderr().contains("cursor write refused by etcd"));
    a.stop();
    b.stop();
}

/// Two of three etcd members stopped: pollers pause, push still answers
/// 200, `/readyz` says etcd is down; with the members back, polling
/// resumes from the fenced cursor and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_etcd_quorum_pauses_pollers_only() {
    let _etcd = ETCD.write().await;
    let Scene {
        dir: _dir,
        state,
        stub,
        stop,
        prefix,
        start,
        dirs,
    } = scene().await;
    let a = Gateway::start(&dirs[0], &replica_config(&stub, &start, &prefix, "a"));
    let b = Gateway::start(&dirs[1], &replica_config(&stub, &start, &prefix, "b"));
    one_leader(&[&a, &b], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Two members stopped; started again however this block ends.
    struct Restart(String);
    impl Drop for Restart {
        fn drop(&mut self) {
            script(&["start", &self.0, "2"]);
            script(&["start", &self.0, "3"]);
        }
    }
    let members = Restart(etcd_dir());
    script(&["stop", &members.0, "2"]);
    script(&["stop", &members.0, "3"]);
    let deadline = Instant::now() + Duration::from_secs(TTL + 10);
    while metric(&a, "sluice_cluster_etcd_up").await != 0.0
        || metric(&b, "sluice_cluster_etcd_up").await != 0.0
    {
        assert!(Instant::now() < deadline, "etcd still reported up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The leader's poller drops the lead when it sees the lapsed lease,
    // which the gauge above reports first (a scrape may fall between).
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&a, LEADS).await + metric(&b, LEADS).await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "a replica still leads without etcd"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = a.admin_get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["cluster"]["etcd_up"], false, "{body}");
    // Pollers pause...
    let requests = state.event_requests();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        state.event_requests(),
        requests,
        "a replica polled without quorum"
    );
    // ...push does not.
    for gw in [&a, &b] {
        let r = gw
            .client()
            .push(
                "push",
                &[("content-type", "application/json")],
                r#"{"pushed":true}"#,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    drop(members);
    one_leader(&[&a, &b], Duration::from_secs(TTL * 3 + 10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    delivered_once_or_counted("quorum", &state, &dirs, &[&a, &b]).await;
    a.stop();
    b.stop();
}

/// Push spread over two replicas, one killed (-9) mid-load: every
/// acknowledged record is delivered, none twice, and each replica's
/// object names carry its instance id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_across_replicas_with_one_killed_loses_no_acknowledged_record() {
    let _etcd = ETCD.read().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let dirs = [replica_dir(dir.path(), "a"), replica_dir(dir.path(), "b")];
    let config = |instance: &str| {
        let mut c = crate::gw::config(
            r#"
[sources.push]
type = "push"
listener = "https"
auth = { type = "none" }

[pipelines.pushed]
source = "push"
sink = "pushed"

[sinks.pushed]
type = "local"
path = "pushed"
rotate = { max_age_secs = 0.2 }
"#,
        );
        c.push_str(&cluster_section(&prefix, instance));
        c
    };
    let a = Gateway::start(&dirs[0], &config("a"));
    let b = Gateway::start(&dirs[1], &config("b"));
    let clients = [a.client(), b.client()];
    let acked = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let kill_at = Instant::now() + Duration::from_millis(700 + rand::random::<u64>() % 800);
    let mut pushers = Vec::new();
    // Four senders per replica, 20 records a request, for 3 s; a request
    // whose connection fails is simply not acknowledged.
    for (r, client) in clients.into_iter().enumerate() {
        let client = Arc::new(client);
        for w in 0..4u64 {
            let (client, acked) = (client.clone(), acked.clone());
            pushers.push(tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(3);
                let mut seq = 0u64;
                while Instant::now() < until {
                    let base = ((r as u64 * 4 + w) << 32) | (seq << 5);
                    seq += 1;
                    let body: String = (0..20)
                        .map(|i| format!("{{\"n\":{}}}\n", base + i))
                        .collect();
                    let Ok(mut conn) = client.try_connect().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let reply = conn
                        .try_push("push", &[("content-type", "application/x-ndjson")], body)
                        .await;
                    if let Ok(r) = reply
                        && r.status == 200
                    {
                        acked.lock().unwrap().extend((0..20).map(|i| base + i));
                    }
                }
            }));
        }
    }
    tokio::time::sleep_until(kill_at.into()).await;
    b.kill9();
    for p in pushers {
        p.await.unwrap();
    }
    let b = Gateway::start_existing(&dirs[1]);
    let acked: BTreeSet<u64> = acked.lock().unwrap().iter().copied().collect();
    assert!(
        acked.len() > 100,
        "the load acknowledged only {}",
        acked.len()
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    let (got, names) = loop {
        let mut got: BTreeMap<u64, usize> = BTreeMap::new();
        let mut names = Vec::new();
        for (d, instance) in dirs.iter().zip(["a", "b"]) {
            for (file, line) in crate::gw::delivered(&d.join("pushed")) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                *got.entry(v["n"].as_u64().unwrap()).or_default() += 1;
                names.push((file, instance));
            }
        }
        if acked.iter().all(|n| got.contains_key(n)) || Instant::now() > deadline {
            break (got, names);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lost: Vec<_> = acked
        .iter()
        .filter(|n| !got.contains_key(n))
        .take(5)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged records lost, such as {lost:?}"
    );
    let twice: Vec<_> = got.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    for (file, instance) in names {
        let stem = file.split('.').next().unwrap_or_default().to_string();
        assert!(
            file.contains(&format!("_{instance}.")),
            "{file} (replica {instance}) does not carry its instance id ({stem})"
        );
    }
    println!(
        "push across replicas: {} acknowledged, all delivered once",
        acked.len()
    );
    a.stop();
    b.stop();
}

/// `sluice check --connect` reaches the cluster (TLS with a client
/// certificate), and says plainly when it cannot.
#[test]
fn check_connect_reaches_etcd_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let section = cluster_section(&prefix(), "check-a");
    let config = crate::gw::config(&format!(
        r#"
[sources.push]
type = "push"
listener = "https"
auth = {{ type = "none" }}

[pipelines.p]
source = "push"
sink = "out"

[sinks.out]
type = "local"
path = "out"
{section}"#
    ));
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, &config).unwrap();
    let check = |path: &Path| {
        let mut cmd = crate::support::sluice();
        cmd.args(["check", "--connect", "--config"]).arg(path);
        crate::support::run_with(cmd, "", Duration::from_secs(60))
    };
    let run = check(&path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("etcd: reached (3 members"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("_check-a."),
        "object names carry the instance id: {}",
        run.stdout
    );
    // A port nothing listens on: a clear error, exit 2 (not a hang).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoints = etcd_env()["SLUICE_TEST_ETCD_ENDPOINTS"]
        .split(',')
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let bad = config.replace(&endpoints, &format!("\"https://{closed}\""));
    assert_ne!(bad, config);
    std::fs::write(&path, bad).unwrap();
    let run = check(&path);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("no etcd member answered"),
        "{}",
        run.stderr
    );
    // A plain-HTTP endpoint is refused before anything is sent.
    let plain = config.replace(&endpoints, "\"http://127.0.0.1:2379\"");
    std::fs::write(&path, plain).unwrap();
    let mut cmd = crate::support::sluice();
    cmd.args(["check", "--config"]).arg(&path);
    let run = crate::support::run_with(cmd, "", Duration::from_secs(60));
    run.expect_failure(
        2,
        "`cluster.etcd.0`: \"http://127.0.0.1:2379\" must be an https:// URL",
    );
}

/// Whether `gw` runs version `version` of transform `name` (its metric
/// is set once every following pipeline swapped to it).
async fn runs(gw: &Gateway, name: &str, version: u32) -> bool {
    gw.metrics().await.lines().any(|l| {
        l.starts_with("sluice_transform_active_info{")
            && l.contains(&format!("transform=\"{name}\""))
            && l.contains(&format!("version=\"{version}\""))
    })
}

/// Waits until `gw` runs the version; returns how long that took.
async fn until_runs(gw: &Gateway, name: &str, version: u32, since: Instant) -> Duration {
    while !runs(gw, name, version).await {
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "{name} v{version} never ran; stderr:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    since.elapsed()
}

/// The tags of the records `gw` delivered.
/// `GET /v1/transforms/tagger/versions` on `gw`: the versions it lists.
async fn tagger_versions(gw: &Gateway) -> serde_json::Value {
    let (_, listed) = crate::admin::admin(
        gw,
        "GET",
        "/v1/transforms/tagger/versions",
        b"",
        Some(crate::admin::TOKEN),
    )
    .await;
    listed
}

fn tags(dir: &Path) -> Vec<String> {
    crate::gw::delivered(&dir.join("out"))
        .into_iter()
        .filter_map(|(_, l)| {
            let v: serde_json::Value = serde_json::from_str(&l).ok()?;
            Some(v["tag"].as_str()?.to_string())
        })
        .collect()
}

/// Upload and activate on replica A: B runs it within 2 s. Activating
/// another version on B reaches A, and so does a rollback on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transform_registry_is_shared_through_etcd() {
    use crate::admin::{TOKEN, admin, admin_config, component};
    let _etcd = ETCD.read().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let dirs = [replica_dir(dir.path(), "a"), replica_dir(dir.path(), "b")];
    let config = |instance: &str| {
        let mut c = admin_config("[[pipelines.p.transforms]]\nuse = \"tagger\"", "");
        c.push_str(&cluster_section(&prefix, instance));
        c
    };
    let a = Gateway::start(&dirs[0], &config("a"));
    let b = Gateway::start(&dirs[1], &config("b"));
    let push = |gw: &Gateway| {
        let client = gw.client();
        async move {
            let r = client
                .push("s", &[("content-type", "application/json")], r#"{"x":1}"#)
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };
    // v1 (tags "a") uploaded and activated on A.
    let tagger_a = component(sluice_test_artifacts::TAGGER_A_COMPONENT);
    let t0 = Instant::now();
    let (status, reply) = admin(
        &a,
        "PUT",
        "/v1/transforms/tagger?activate=true",
        &tagger_a,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["version"], 1);
    let took = until_runs(&b, "tagger", 1, t0).await;
    println!("registry: v1 uploaded on A ran on B after {took:?}");
    assert!(took <= Duration::from_secs(2), "B ran v1 after {took:?}");
    push(&b).await;
    // v2 (tags "b") uploaded and activated on B reaches A.
    let tagger_b = component(sluice_test_artifacts::TAGGER_B_COMPONENT);
    let t1 = Instant::now();
    let (status, reply) = admin(
        &b,
        "PUT",
        "/v1/transforms/tagger?activate=true",
        &tagger_b,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["version"], 2, "versions are numbered cluster-wide");
    let took = until_runs(&a, "tagger", 2, t1).await;
    println!("registry: v2 activated on B ran on A after {took:?}");
    assert!(took <= Duration::from_secs(2), "A ran v2 after {took:?}");
    push(&a).await;
    // A rollback on B reaches A.
    let t2 = Instant::now();
    let (status, reply) = admin(
        &b,
        "POST",
        "/v1/transforms/tagger/activate",
        br#"{"version": 1}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let took = until_runs(&a, "tagger", 1, t2).await;
    println!("registry: rollback on B ran on A after {took:?}");
    assert!(
        took <= Duration::from_secs(2),
        "A rolled back after {took:?}"
    );
    push(&a).await;
    // Both list the same registry.
    let on_a = tagger_versions(&a).await;
    let on_b = tagger_versions(&b).await;
    assert_eq!(on_a["versions"], on_b["versions"]);
    assert_eq!(
        (on_a["active"].clone(), on_b["active"].clone()),
        (1.into(), 1.into())
    );
    // Removing the inactive v2 on A removes it on B too; the active one
    // cannot be removed.
    let (status, reply) = admin(
        &a,
        "DELETE",
        "/v1/transforms/tagger/versions/1",
        b"",
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (status, reply["kind"].clone()),
        (409, "in_use".into()),
        "{reply}"
    );
    let (status, reply) = admin(
        &a,
        "DELETE",
        "/v1/transforms/tagger/versions/2",
        b"",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let on_b = tagger_versions(&b).await;
        let versions: Vec<u64> = on_b["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["version"].as_u64())
            .collect();
        if versions == [1] {
            break;
        }
        assert!(Instant::now() < deadline, "B still lists {versions:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What ran: B tagged "a" (v1); A tagged "b" (v2), then "a" (rollback).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ta, tb) = (tags(&dirs[0]), tags(&dirs[1]));
        if ta.len() == 2 && tb.len() == 1 {
            let mut ta = ta;
            ta.sort();
            assert_eq!(
                (ta, tb),
                (
                    vec!["a".to_string(), "b".to_string()],
                    vec!["a".to_string()]
                )
            );
            break;
        }
        assert!(Instant::now() < deadline, "delivered: A {ta:?}, B {tb:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop();
    b.stop();
    // B started again while etcd cannot be reached: it runs its last local
    // copy of the registry, and says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = std::fs::read_to_string(dirs[1].join("sluice.toml")).unwrap();
    let start = text.find("etcd = [").unwrap();
    let end = start + text[start..].find(']').unwrap() + 1;
    let cut_off = format!(
        "{}etcd = [\"https://{closed}\"]{}",
        &text[..start],
        &text[end..]
    );
    let b = Gateway::start(&dirs[1], &cut_off);
    push(&b).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tags(&dirs[1]).len() < 2 || !b.stderr().contains("running the last local copy") {
        assert!(Instant::now() < deadline, "stderr:\n{}", b.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tags(&dirs[1]), ["a", "a"], "v1 runs from the local copy");
    b.stop();
}

/// `cursor_commit = "delivered"`: the leader is killed and its disk is
/// lost for good (never started again) while records it polled still wait
/// in its spool; the new leader polls them again from the delivered
/// cursor, so nothing is lost, and the duplicates are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_delivered_cursors_a_leader_s_lost_disk_loses_nothing() {
    let _etcd = ETCD.read().await;
    let Scene {
        dir: _dir,
        state,
        stub,
        stop,
        prefix,
        start,
        dirs,
    } = scene().await;
    // Objects close every 3 s: the leader always holds undelivered pages.
    let config = |instance: &str| {
        replica_config(&stub, &start, &prefix, instance)
            .replace(
                "rotate = { max_age_secs = 0.2 }\n",
                "rotate = { max_age_secs = 3 }\n",
            )
            .replace(
                "lease_ttl_secs = ",
                "cursor_commit = \"delivered\"\nlease_ttl_secs = ",
            )
    };
    let a = Gateway::start(&dirs[0], &config("a"));
    one_leader(&[&a], Duration::from_secs(30)).await;
    let b = Gateway::start(&dirs[1], &config("b"));
    tokio::time::sleep(Duration::from_millis(4000 + rand::random::<u64>() % 1500)).await;
    // Kill while pages wait for delivery (not in the instant after a flush).
    let undelivered = r#"sluice_spool_records{sink="out"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&a, undelivered).await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "nothing ever waited for delivery"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spooled_at_kill = metric(&a, undelivered).await;
    a.kill9();
    std::fs::remove_dir_all(dirs[0].join("state")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(TTL + 10);
    while metric(&b, LEADS).await != 1.0 {
        assert!(Instant::now() < deadline, "B did not take over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    println!("delivered mode: about {spooled_at_kill} records undelivered at the kill");
    delivered_once_or_counted("delivered mode, disk lost", &state, &dirs, &[&b]).await;
    b.stop();
}
