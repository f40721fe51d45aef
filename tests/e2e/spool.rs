//! The spool under faults, with the local sink: kill -9 in a loop under
//! load, a damaged byte, a torn tail, a full disk, a first-release
//! `spool.db`, one process per state folder, and one sink's trouble kept
//! away from the other sinks.

use crate::gw::{Client, Gateway, config, delivered, wait_delivered};
use hyper::StatusCode;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A JumpCloud Directory Insights event with a given id.
pub fn jc_event(id: &str, service: &str) -> String {
    format!(
        concat!(
            r#"{{"id":"{id}","event_type":"user_login_attempt","service":"{service}","#,
            r#""timestamp":"2025-06-18T01:40:48.953462371Z","success":true,"client_ip":"203.0.113.7","#,
            r#""organization":"5f0c1d2e3a4b5c6d7e8f9a0b","username":"jane.doe","#,
            r#""initiated_by":{{"id":"5f0c1d2e3a4b5c6d7e8f9a01","type":"user","username":"jane.doe"}},"@version":"1"}}"#
        ),
        id = id,
        service = service
    )
}

/// What a load run sent and what was acknowledged with a 200.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: BTreeSet<String>,
    pub acked: BTreeSet<String>,
}

/// Push load from `conns` connections of `batch`-event requests, every
/// event with its own id, that follows the gateway across restarts: a
/// request that gets no answer is not sent again (its events may or may
/// not have been stored; they must then be there at most once).
pub struct Load {
    target: Arc<RwLock<Option<Client>>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(client: Client, source: &'static str, conns: usize, batch: usize) -> Self {
        let target = Arc::new(RwLock::new(Some(client)));
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let services = ["directory", "sso", "radius", "systems"];
        let tasks = (0..conns)
            .map(|c| {
                let (target, stop, tally) = (target.clone(), stop.clone(), tally.clone());
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let client = target.read().unwrap().clone();
                        let Some(client) = client else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        let Ok(mut conn) = client.try_connect().await else {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        while !stop.load(Ordering::Relaxed) {
                            let ids: Vec<String> =
                                (0..batch).map(|i| format!("c{c}-r{n}-e{i}")).collect();
                            n += 1;
                            let body: String = ids
                                .iter()
                                .enumerate()
                                .map(|(i, id)| jc_event(id, services[i % services.len()]) + "\n")
                                .collect();
                            tally.lock().unwrap().sent.extend(ids.iter().cloned());
                            match conn.try_push(source, &[], body).await {
                                Ok(r) if r.status == StatusCode::OK => {
                                    tally.lock().unwrap().acked.extend(ids);
                                }
                                Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE => {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                Ok(r) => panic!("unexpected {}: {}", r.status, r.body),
                                Err(_) => break,
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            target,
            stop,
            tally,
            tasks,
        }
    }

    /// Points the load at another gateway (`None`: hold off).
    pub fn retarget(&self, client: Option<Client>) {
        *self.target.write().unwrap() = client;
    }

    /// Stops the load and returns the tally.
    pub async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.tally).unwrap().into_inner().unwrap()
    }
}

/// Kills the gateway `kills` times at random moments under `load`,
/// restarting it each time with `start`. Returns the last gateway.
pub async fn kill_loop(
    dir: &Path,
    mut gw: Gateway,
    load: &Load,
    kills: usize,
    start: &dyn Fn(&Path) -> Gateway,
) -> Gateway {
    for _ in 0..kills {
        let ms = 300 + rand::random::<u64>() % 1200;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        gw.kill9();
        load.retarget(None);
        gw = start(dir);
        load.retarget(Some(gw.client()));
    }
    gw
}

/// Every acknowledged event delivered, none twice, nothing that was not
/// sent. `ids` are the delivered events' ids, one per delivered record.
#[track_caller]
pub fn assert_exactly_once(ids: &[String], tally: &Tally) {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for id in ids {
        *count.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} events delivered more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    let lost: Vec<_> = tally
        .acked
        .iter()
        .filter(|id| !count.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events never delivered, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let unknown: Vec<_> = count
        .keys()
        .filter(|id| !tally.sent.contains(**id))
        .collect();
    assert!(unknown.is_empty(), "delivered but never sent: {unknown:?}");
    assert!(!tally.acked.is_empty(), "the load got nothing acknowledged");
}

/// The `event.id` of every ECS document delivered under `root`.
pub fn ecs_ids(lines: &[(String, String)]) -> Vec<String> {
    lines
        .iter()
        .map(|(path, l)| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {e}: {l}"));
            v["event"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{path}: no event.id: {l}"))
                .to_string()
        })
        .collect()
}

/// Push source `s` (no auth, `source_extra` added) → pipeline `p`
/// (`transforms`) → local sink `out` under `out/` (`sink` settings), and
/// `rest` after it.
fn one_way(source_extra: &str, transforms: &str, sink: &str, rest: &str) -> String {
    config(&format!(
        r#"
[sources.s]
type = "push"
listener = "https"
auth = {{ type = "none" }}
{source_extra}

[pipelines.p]
source = "s"
sink = "out"
{transforms}

[sinks.out]
type = "local"
path = "out"
{sink}
{rest}"#
    ))
}

fn local_cfg(extra: &str) -> String {
    one_way(
        "",
        "[[pipelines.p.transforms]]\nuse = \"ecs-jumpcloud\"",
        "key = \"{route}/%Y/%m/%d\"\ncompression = \"gzip\"\nrotate = { max_age_secs = 0.3, max_records = 700 }",
        extra,
    )
}

/// Waits until nothing is left in the spool for `sink`.
pub async fn wait_drained(gw: &Gateway, sink: &str) {
    let sample = format!("sluice_spool_records{{sink=\"{sink}\"}}");
    for _ in 0..600 {
        if gw.metric_opt(&sample).await == Some(0.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sink {sink} did not drain:\n{}", gw.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_in_a_loop_under_load_delivers_every_ack_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &local_cfg(""));
    let load = Load::start(gw.client(), "s", 4, 50);
    let gw = kill_loop(dir.path(), gw, &load, 6, &Gateway::start_existing).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.finish().await;
    wait_drained(&gw, "out").await;
    let log = gw.stop();
    assert!(log.contains("undelivered=0"), "{log}");
    let lines = delivered(&dir.path().join("out"));
    assert_exactly_once(&ecs_ids(&lines), &tally);
    assert!(
        lines.iter().all(|(p, _)| p.starts_with("jumpcloud.")),
        "routed by service"
    );
}

/// Starts a gateway whose sink cannot write yet (a file in the way of its
/// folder), pushes `n` records, and stops it: they wait in the log.
async fn spooled(dir: &Path, n: usize, extra: &str) {
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/s"), "in the way").unwrap();
    let cfg = one_way(
        "",
        "",
        "key = \"{source}\"\nrotate = { max_age_secs = 0.2 }",
        extra,
    );
    let gw = Gateway::start(dir, &cfg);
    let body: String = (0..n).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let r = gw.client().push("s", &[], body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    gw.stop();
    std::fs::remove_file(dir.join("out/s")).unwrap();
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut s: Vec<_> = std::fs::read_dir(dir.join("state/log/out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    s.sort();
    s
}

/// The `i` field of every delivered line, sorted.
pub fn numbers(lines: &[(String, String)]) -> Vec<i64> {
    let mut v: Vec<i64> = lines
        .iter()
        .map(|(_, l)| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["i"]
                .as_i64()
                .unwrap()
        })
        .collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_byte_is_quarantined_and_counted_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    spooled(dir.path(), 100, "").await;
    // Flip one byte inside record 50's data.
    let seg = &segments(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let at = memchr::memmem::find(&bytes, b"{\"i\":50}").unwrap();
    bytes[at + 5] ^= 0x01;
    std::fs::write(seg, &bytes).unwrap();
    let gw = Gateway::start_existing(dir.path());
    let lines = wait_delivered(&dir.path().join("out"), 99).await;
    let expected: Vec<i64> = (0..100).filter(|i| *i != 50).collect();
    assert_eq!(numbers(&lines), expected, "never delivered as garbage");
    assert_eq!(
        gw.metric("sluice_spool_corrupt_frames_total{sink=\"out\"}")
            .await,
        1.0
    );
    let quarantined: Vec<_> = std::fs::read_dir(dir.path().join("state/quarantine"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(quarantined.len(), 1);
    assert!(
        memchr::memmem::find(&quarantined[0], b"{\"i\":40}").is_some(),
        "the damaged frame's bytes are kept for inspection"
    );
    let log = gw.stop();
    assert!(log.contains("damaged bytes in the log"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_silently() {
    let dir = tempfile::tempdir().unwrap();
    spooled(dir.path(), 20, "").await;
    // Half of a frame at the end, as a kill in the middle of a write leaves.
    let seg = segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[..bytes.len().min(40) / 2]);
    std::fs::write(&seg, &torn).unwrap();
    let gw = Gateway::start_existing(dir.path());
    let lines = wait_delivered(&dir.path().join("out"), 20).await;
    assert_eq!(numbers(&lines), (0..20).collect::<Vec<_>>());
    assert_eq!(
        gw.metric_opt("sluice_spool_corrupt_frames_total{sink=\"out\"}")
            .await,
        Some(0.0),
        "a torn tail is not damage"
    );
    let log = gw.stop();
    assert!(log.contains("cut an unfinished write"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_release_spool_db_is_delivered_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/spool-v1/spool.db"
    );
    std::fs::copy(fixture, dir.path().join("state/spool.db")).unwrap();
    let cfg = one_way(
        "",
        "",
        "key = \"{route}\"\nrotate = { max_age_secs = 0.2 }",
        "",
    );
    let gw = Gateway::start(dir.path(), &cfg);
    let lines = wait_delivered(&dir.path().join("out"), 1050).await;
    let s: Vec<_> = lines.iter().filter(|(p, _)| p.starts_with("s/")).collect();
    let t: Vec<_> = lines.iter().filter(|(p, _)| p.starts_with("t/")).collect();
    assert_eq!((s.len(), t.len()), (1000, 50), "routes kept");
    assert!(
        gw.stderr()
            .contains("moved the records of a first-release spool.db")
    );
    gw.stop();
    // A restart migrates nothing again and delivers nothing twice.
    let gw = Gateway::start_existing(dir.path());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(delivered(&dir.path().join("out")).len(), 1050);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_state_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &local_cfg(""));
    let mut cmd = crate::support::sluice();
    cmd.args(["run", "--config"])
        .arg(dir.path().join("sluice.toml"));
    let run = crate::support::run_with(cmd, "", Duration::from_secs(60));
    run.expect_failure(2, &format!("is in use by sluice pid {}", gw.pid()));
    run.expect_failure(2, "state_dir");
    let mut cmd = crate::support::sluice();
    cmd.args(["spool", "list", "--config"])
        .arg(dir.path().join("sluice.toml"));
    let run = crate::support::run_with(cmd, "", Duration::from_secs(60));
    run.expect_failure(2, "is in use by sluice pid");
    gw.stop();
    // Once it is gone, the folder is free again (the kernel drops the lock
    // even after kill -9).
    let gw = Gateway::start_existing(dir.path());
    gw.kill9();
    let mut cmd = crate::support::sluice();
    cmd.args(["spool", "list", "--config"])
        .arg(dir.path().join("sluice.toml"));
    let run = crate::support::run_with(cmd, "", Duration::from_secs(60));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("out\tyes\t0\t"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_write_holds_back_only_its_own_sources() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a/a"), "in the way").unwrap();
    let cfg = config(
        r#"
[sources.a]
type = "push"
listener = "https"
auth = { type = "none" }
retry_after_secs = 7

[sources.b]
type = "push"
listener = "https"
auth = { type = "none" }

[pipelines.pa]
source = "a"
sink = "a"

[pipelines.pb]
source = "b"
sink = "b"

[sinks.a]
type = "local"
path = "a"
key = "{source}"
rotate = { max_age_secs = 0.1 }

[sinks.b]
type = "local"
path = "b"
key = "{source}"
rotate = { max_age_secs = 0.1 }

[spool.sinks.a]
max_records = 10
"#,
    );
    let gw = Gateway::start(dir.path(), &cfg);
    let c = gw.client();
    let mut a_refused = None;
    for i in 0..10 {
        let r = c
            .push("a", &[], format!("[{{\"a\":{i}}},{{\"a\":{i}}}]"))
            .await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            a_refused = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = a_refused.expect("source a is held back once sink a is over its budget");
    assert_eq!(r.headers["retry-after"], "7");
    assert!(
        r.body.contains("sink `a` is over its spool budget"),
        "{}",
        r.body
    );
    for i in 0..10 {
        let r = c.push("b", &[], format!("{{\"b\":{i}}}")).await;
        assert_eq!(r.status, StatusCode::OK, "source b goes on: {}", r.body);
    }
    let lines = wait_delivered(&dir.path().join("b"), 10).await;
    assert_eq!(lines.len(), 10, "sink b delivers");
    assert_eq!(
        gw.metric("sluice_source_rejected_requests_total{reason=\"backpressure\",source=\"a\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric_opt(
            "sluice_source_rejected_requests_total{reason=\"backpressure\",source=\"b\"}"
        )
        .await,
        None
    );
    // Sink a writes again: its backlog drains and source a is let in.
    std::fs::remove_file(dir.path().join("a/a")).unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if c.push("a", &[], "{\"a\":\"late\"}").await.status == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok);
    gw.stop();
}

/// Mounts a small tmpfs at `path` for the test's life (we run as root).
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount tmpfs on {} (needs root)",
            path.display()
        );
        Self(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_acknowledges_nothing_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    // The state folder on a 4 MiB file system, 1 MiB of it kept free for
    // the metadata; the sink writes elsewhere, and starts blocked so the
    // log fills the disk.
    let _fs = Tmpfs::mount(&dir.path().join("state"), "4m");
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/s"), "in the way").unwrap();
    let cfg = one_way(
        "retry_after_secs = 2",
        "",
        "key = \"{source}\"\nrotate = { max_age_secs = 0.1 }",
        "[spool]\nsegment_bytes = 65536\nmin_free_bytes = 1048576",
    );
    let gw = Gateway::start(dir.path(), &cfg);
    let c = gw.client();
    let pad = "x".repeat(900);
    let mut acked = Vec::new();
    let mut full = None;
    for req in 0..200 {
        let body: String = (0..50)
            .map(|i| format!("{{\"i\":{},\"pad\":\"{pad}\"}}\n", req * 50 + i))
            .collect();
        let r = c.push("s", &[], body).await;
        match r.status {
            StatusCode::OK => acked.extend(req * 50..req * 50 + 50),
            StatusCode::INSUFFICIENT_STORAGE => {
                full = Some(r);
                break;
            }
            other => panic!("{other}: {}", r.body),
        }
    }
    let r = full.expect("the disk filled up");
    assert_eq!(r.headers["retry-after"], "2");
    assert!(r.body.contains("disk is full"), "{}", r.body);
    assert!(!acked.is_empty());
    // The sink can write again: it delivers, the delivered segments are
    // deleted, and the space comes back without a restart.
    std::fs::remove_file(dir.path().join("out/s")).unwrap();
    let mut later = None;
    for attempt in 0..200 {
        let i = 1_000_000 + attempt;
        let r = c.push("s", &[], format!("{{\"i\":{i}}}")).await;
        if r.status == StatusCode::OK {
            later = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let later = later.expect("pushes are accepted again once space returns");
    acked.push(later as usize);
    let lines = wait_delivered(&dir.path().join("out"), acked.len()).await;
    let got: Vec<usize> = numbers(&lines).into_iter().map(|n| n as usize).collect();
    acked.sort_unstable();
    assert_eq!(got, acked, "every acknowledged record once, nothing else");
    assert!(
        gw.metric("sluice_source_rejected_requests_total{reason=\"disk_full\",source=\"s\"}")
            .await
            >= 1.0
    );
    gw.stop();
}

/// A CSV object whose next record brings new columns is sealed and a new
/// one begins; when the new one cannot even be created (no inode left on
/// the sink's file system), the sink must not die: it logs, counts,
/// retries, and delivers everything once the disk has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_column_change_on_a_full_disk_keeps_the_sink_alive() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Three inodes: the root, `.sluice-tmp`, and one object being built.
    let _fs = Tmpfs::mount(&out, "1m,nr_inodes=3");
    let cfg = one_way(
        "",
        "",
        "key = \"{source}\"\nencoding = \"csv\"\nrotate = { max_age_secs = 0.2 }",
        "",
    );
    let gw = Gateway::start(dir.path(), &cfg);
    let r = gw
        .client()
        .push("s", &[], "[{\"a\":1},{\"a\":2,\"b\":3},{\"a\":4}]")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for _ in 0..100 {
        if gw
            .metric_opt("sluice_sink_errors_total{kind=\"io\",sink=\"out\"}")
            .await
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gw.metric("sluice_sink_errors_total{kind=\"io\",sink=\"out\"}")
            .await
            >= 1.0,
        "the full disk is reported:\n{}",
        gw.stderr()
    );
    assert_eq!(
        gw.admin_get("/readyz").await.0,
        StatusCode::OK,
        "the sink is alive: {}",
        gw.stderr()
    );
    assert_eq!(
        gw.metric_opt("sluice_sink_stopped{sink=\"out\"}").await,
        Some(0.0)
    );
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,nr_inodes=1000"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    wait_drained(&gw, "out").await;
    let lines = delivered(&out);
    let rows: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    // Two objects: header "a" with row 1; header "a","b" with rows 2,3
    // and 4 (its missing column empty).
    assert_eq!(lines.len(), 5, "{rows:?}");
    for row in ["\"1\"", "\"2\",\"3\"", "\"4\","] {
        assert_eq!(
            rows.iter().filter(|r| **r == row).count(),
            1,
            "{row} once: {rows:?}"
        );
    }
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_cannot_commit_answers_500_and_keeps_nothing_half_done() {
    let dir = tempfile::tempdir().unwrap();
    // No file of the process may grow past 256 KiB (SIGXFSZ ignored, so a
    // write past it fails with EFBIG, possibly after a part of it): the
    // spool's segment hits that limit mid-append. Not a full disk.
    const LIMIT: usize = 256 << 10;
    let cfg = one_way(
        "max_body_bytes = 1048576",
        "",
        "key = \"{source}\"\nrotate = { max_age_secs = 0.1 }",
        "[spool]\nsegment_bytes = 16777216",
    );
    std::fs::write(dir.path().join("sluice.toml"), &cfg).unwrap();
    let limit = format!("--fsize={LIMIT}");
    let wrapper = [
        "sh",
        "-c",
        "trap '' XFSZ; exec prlimit \"$0\" -- \"$@\"",
        &limit,
    ];
    let gw = Gateway::start_wrapped(dir.path(), &[], &wrapper);
    let c = gw.client();
    let body = |from: usize, n: usize, pad: usize| -> String {
        (from..from + n)
            .map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(pad)))
            .collect()
    };
    let mut acked = Vec::new();
    let r = c.push("s", &[], body(0, 100, 1000)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    acked.extend(0..100);
    // Past the limit: the append fails half written.
    let r = c.push("s", &[], body(1000, 200, 1000)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert!(
        r.body.contains("not stored") && r.body.contains("File too large"),
        "{}",
        r.body
    );
    assert_eq!(
        gw.metric("sluice_source_rejected_requests_total{reason=\"internal\",source=\"s\"}")
            .await,
        1.0
    );
    // A small request still fits: the half-written bytes were taken back,
    // and it is stored after the first.
    let r = c.push("s", &[], body(2000, 10, 100)).await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.body, gw.stderr());
    acked.extend(2000..2010);
    wait_drained(&gw, "out").await;
    let log = gw.stop();
    assert_eq!(numbers(&delivered(&dir.path().join("out"))), acked, "{log}");
    // And after a restart without the limit, nothing torn is found or
    // delivered again.
    let gw = Gateway::start_existing(dir.path());
    let r = gw.client().push("s", &[], body(3000, 1, 10)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    acked.push(3000);
    wait_drained(&gw, "out").await;
    assert_eq!(
        gw.metric("sluice_spool_corrupt_frames_total{sink=\"out\"}")
            .await,
        0.0
    );
    let log = gw.stop();
    assert_eq!(numbers(&delivered(&dir.path().join("out"))), acked, "{log}");
}
