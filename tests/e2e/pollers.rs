//! Pollers end to end: the real gateway against the JumpCloud and
//! JupiterOne stubs (local HTTPS servers that behave as documented),
//! through the real transforms into the local sink.

use crate::gw::{Gateway, config, delivered, wait_delivered};
use crate::stubs::{self, Fault};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn jc_config(stub: &stubs::Stub, start: &str, extra: &str, sink: &str) -> String {
    config(&format!(
        r#"
[sources.jc]
type = "jumpcloud"
api_key = "jc-test-key"
base_url = "{url}"
ca_file = "{ca}"
start = "{start}"
interval_secs = 1
source_lag_secs = 0
{extra}

[pipelines.p]
source = "jc"
sink = "out"
[[pipelines.p.transforms]]
use = "ecs-jumpcloud"

[sinks.out]
type = "local"
path = "out"
key = "{{route}}"
{sink}
"#,
        url = stub.url(),
        ca = stub.cert.display()
    ))
}

const FAST_SINK: &str = "rotate = { max_age_secs = 0.2 }";
const SLOW_SINK: &str = "rotate = { max_age_secs = 3600 }";

fn ago(secs: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The timestamp the stub holds for event `id`.
fn ago_of(state: &stubs::JumpCloud, id: &str) -> String {
    let all = state.events.lock().unwrap();
    let e = all.iter().find(|e| e.id == id).unwrap();
    serde_json::from_str::<Value>(&e.text).unwrap()["timestamp"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `event.id` → how many times it was delivered.
pub(crate) fn ids(root: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, line) in delivered(root) {
        let doc: Value = serde_json::from_str(&line).unwrap();
        let id = doc["event"]["id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| doc["properties"]["_id"].as_str().unwrap().to_string());
        *out.entry(id).or_default() += 1;
    }
    out
}

fn assert_once(root: &Path, expected: usize) {
    let ids = ids(root);
    let dups: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    assert_eq!(ids.len(), expected, "delivered ids: {ids:?}");
}

async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    for _ in 0..600 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumpcloud_to_ecs_with_ties_across_pages_and_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    // 0, 3, 8 and 9 fraction digits; five events share one timestamp, so
    // with 3 per page the tie is split across pages.
    let base = chrono::Utc::now() - chrono::Duration::minutes(10);
    let t = |ms: i64, frac: &str| {
        format!(
            "{}{frac}Z",
            (base + chrono::Duration::milliseconds(ms)).format("%Y-%m-%dT%H:%M:%S")
        )
    };
    let tie = t(2000, ".218593681");
    let mut events = vec![
        ("e01".to_string(), t(0, ""), "directory".to_string()),
        ("e02".into(), t(1000, ".495"), "sso".into()),
        ("e03".into(), t(1000, ".21859368"), "directory".into()),
    ];
    for i in 4..=8 {
        events.push((
            format!("e0{i}"),
            tie.clone(),
            if i % 2 == 0 {
                "sso".into()
            } else {
                "directory".into()
            },
        ));
    }
    events.push(("e09".into(), t(3000, ".1"), "radius".into()));
    events.push(("e10".into(), t(4000, ""), "systems".into()));
    state.add(events);
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let gw = Gateway::start(
        dir.path(),
        &jc_config(&stub, &ago(3600), "limit = 3", FAST_SINK),
    );
    let out = dir.path().join("out");
    let lines = wait_delivered(&out, 10).await;
    assert_once(&out, 10);
    assert!(
        lines.iter().any(|(p, _)| p.starts_with("jumpcloud.sso/"))
            && lines
                .iter()
                .any(|(p, _)| p.starts_with("jumpcloud.radius/"))
    );
    {
        let reqs = state.requests.lock().unwrap();
        let (first, orgs) = &reqs[0];
        assert!(orgs.is_empty(), "no org_ids: the key's own org");
        assert_eq!(first["sort"], "ASC");
        assert_eq!(first["limit"], 3);
        assert_eq!(first["service"], serde_json::json!(["all"]));
        assert!(first["end_time"].is_string() && first.get("search_after").is_none());
        assert!(
            reqs[1].0["search_after"].is_array(),
            "the next page copies X-Search_after"
        );
    }
    // New events: one more at the watermark's timestamp, and newer ones.
    state.add([
        ("e11".to_string(), t(4000, ""), "systems".to_string()),
        ("e12".into(), t(5000, ".000000001"), "ldap".into()),
        ("e13".into(), t(6000, ".5"), "mdm".into()),
    ]);
    wait_delivered(&out, 13).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_once(&out, 13);
    let m = gw.metrics().await;
    assert_eq!(
        crate::gw::metric_value(
            &m,
            "sluice_poller_events_total{source=\"jc\",stage=\"spooled\"}"
        ),
        13.0,
        "{m}"
    );
    assert!(
        crate::gw::metric_value(
            &m,
            "sluice_poller_events_total{source=\"jc\",stage=\"duplicate\"}"
        ) >= 1.0,
        "the inclusive start re-reads the watermark's events and drops them"
    );
    let log = gw.stop();
    assert!(
        log.contains("poll cycle done") && log.contains("duplicates_filtered="),
        "Devo-style cycle statistics:\n{log}"
    );
    assert!(!log.contains("jc-test-key"), "the key is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumpcloud_429_500_malformed_then_401() {
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    state.add((1..=5).map(|i| (format!("f{i}"), ago(600 - i), "directory".to_string())));
    // Retry-After in seconds, then as an HTTP-date about 4 s ahead.
    let date = (chrono::Utc::now() + chrono::Duration::seconds(4)).to_rfc2822();
    state.faults.lock().unwrap().extend([
        Fault::Status(429, Some("3".into()), vec![]),
        Fault::Status(500, None, vec![]),
        Fault::Status(429, Some(date), vec![]),
        Fault::Malformed,
    ]);
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let gw = Gateway::start(dir.path(), &jc_config(&stub, &ago(3600), "", FAST_SINK));
    let out = dir.path().join("out");
    wait_delivered(&out, 5).await;
    // The waits, measured where the requests arrived: each gap is at least
    // what was asked (or the backoff: 1 s, then 2 s, ±20 %).
    let at = state.arrivals.lock().unwrap().clone();
    assert!(at.len() >= 5, "{} requests", at.len());
    let gap = |i: usize| at[i + 1] - at[i];
    assert!(
        gap(0) >= Duration::from_secs(3),
        "Retry-After: 3 honoured: {:?}",
        gap(0)
    );
    assert!(
        gap(1) >= Duration::from_millis(1600),
        "the backoff grew to 2 s ±20 %: {:?}",
        gap(1)
    );
    assert!(
        at[3] - at[0] >= Duration::from_millis(3900),
        "the HTTP-date was honoured: {:?} after the first request",
        at[3] - at[0]
    );
    assert!(
        gap(3) >= Duration::from_millis(800),
        "the malformed page waited too: {:?}",
        gap(3)
    );
    assert_once(&out, 5);
    let m = gw.metrics().await;
    for (outcome, n) in [("429", 2.0), ("5xx", 1.0), ("invalid_json", 1.0)] {
        assert_eq!(
            crate::gw::metric_value(
                &m,
                &format!("sluice_poller_requests_total{{outcome=\"{outcome}\",source=\"jc\"}}")
            ),
            n,
            "{outcome}\n{m}"
        );
    }
    let log = gw.stop();
    assert!(log.contains("retrying"), "{log}");

    // A wrong key: the poller stops and says so; the gateway stays up.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg = jc_config(&stub, &ago(3600), "", FAST_SINK).replace("jc-test-key", "wrong-key-123");
    let gw = Gateway::start(dir2.path(), &cfg);
    wait_for(
        || gw.stderr().contains("poller stopped"),
        "the poller to stop",
    )
    .await;
    assert!(gw.stderr().contains("401 Unauthorized"), "{}", gw.stderr());
    assert_eq!(gw.metric("sluice_poller_stopped{source=\"jc\"}").await, 1.0);
    assert_eq!(gw.admin_get("/readyz").await.0, hyper::StatusCode::OK);
    let log = gw.stop();
    assert!(!log.contains("wrong-key-123"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumpcloud_pages_compare_counts_as_integers() {
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    // 1999 events at 1000 a page: "999" >= "1000" as strings would ask for
    // a third page; as integers the second page (999 < 1000) is the last.
    state.add((0..1999).map(|i| {
        (
            format!("p{i:05}"),
            ago(3000 - i / 10),
            "directory".to_string(),
        )
    }));
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let cfg = jc_config(&stub, &ago(7200), "limit = 1000", FAST_SINK)
        .replace("interval_secs = 1", "interval_secs = 3600");
    let gw = Gateway::start(dir.path(), &cfg);
    let out = dir.path().join("out");
    wait_delivered(&out, 1999).await;
    assert_eq!(state.event_requests(), 2);
    assert_once(&out, 1999);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumpcloud_late_events_are_caught_by_the_source_lag() {
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    state.add((1..=3).map(|i| (format!("l{i}"), ago(60 - i), "directory".to_string())));
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let cfg = jc_config(&stub, &ago(3600), "", FAST_SINK)
        .replace("source_lag_secs = 0", "source_lag_secs = 3");
    let gw = Gateway::start(dir.path(), &cfg);
    let out = dir.path().join("out");
    wait_delivered(&out, 3).await;
    // JumpCloud indexes these late: they appear after a cycle has already
    // run past their timestamps' second, and the earlier one after a newer
    // event was visible. The lag keeps the window behind them.
    let late = ago(1);
    state.add([("newer".to_string(), ago(0), "directory".to_string())]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    state.add([("late".to_string(), late, "directory".to_string())]);
    wait_delivered(&out, 5).await;
    assert_once(&out, 5);
    gw.stop();
    // What makes this work, checked on every request: the window it asked
    // for ended at least the lag before the request arrived.
    let reqs = state.requests.lock().unwrap();
    let arrived = state.arrived_at.lock().unwrap();
    assert!(
        reqs.len() >= 2 && reqs.len() == arrived.len(),
        "{} requests, {} arrivals",
        reqs.len(),
        arrived.len()
    );
    for ((body, _), at) in reqs.iter().zip(arrived.iter()) {
        let end = chrono::DateTime::parse_from_rfc3339(body["end_time"].as_str().unwrap()).unwrap();
        assert!(
            end <= *at - chrono::Duration::seconds(3),
            "end_time {end} is not 3 s before the request's arrival at {at}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumpcloud_kill9_between_pages_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    // 14 events, 3 a page, several sharing timestamps across page edges.
    state.add((0..14).map(|i| {
        (
            format!("k{i:02}"),
            ago(900 - i / 2),
            "directory".to_string(),
        )
    }));
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let out = dir.path().join("out");
    // One start for every run: a changed start would reset the cursor.
    let start = ago(3600);
    let mut committed: Vec<(i64, Value)> = Vec::new();
    for hang_at in [2, 4] {
        let release = Arc::new(tokio::sync::Notify::new());
        {
            let mut faults = state.faults.lock().unwrap();
            faults.clear();
            faults.extend((1..hang_at).map(|_| Fault::None));
            faults.push_back(Fault::Hang(release.clone()));
        }
        let before = state.event_requests();
        // Objects would only rotate after an hour: everything committed is
        // in the spool when sluice dies.
        let gw = Gateway::start(
            dir.path(),
            &jc_config(&stub, &start, "limit = 3", SLOW_SINK),
        );
        wait_for(
            || state.event_requests() >= before + hang_at,
            "the hanging page request",
        )
        .await;
        gw.kill9();
        release.notify_waiters();
        // The pages before the hang were committed, one by one: their
        // records are in the spool and the cursor is at their last event.
        let db = rusqlite::Connection::open(dir.path().join("state/spool.db")).unwrap();
        let spooled: i64 = db
            .query_row(
                "SELECT end_seq - cursor_seq FROM logs WHERE sink = 'out'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let cursor: Value = serde_json::from_str(
            &db.query_row(
                "SELECT cursor FROM checkpoints WHERE source = 'jc'",
                [],
                |r| r.get::<_, String>(0),
            )
            .unwrap(),
        )
        .unwrap();
        committed.push((spooled, cursor));
    }
    // Kill 1 came during page 2: page 1 (3 events) is in; the cursor is at
    // its last event (k02, which shares its second with k03).
    assert_eq!(committed[0].0, 3, "{committed:?}");
    assert_eq!(committed[0].1["at"], ago_of(&state, "k02"), "{committed:?}");
    assert!(
        committed[1].0 > 3,
        "more pages committed before kill 2: {committed:?}"
    );
    assert!(delivered(&out).is_empty());
    let before = state.event_requests();
    let gw = Gateway::start(
        dir.path(),
        &jc_config(&stub, &start, "limit = 3", FAST_SINK),
    );
    wait_delivered(&out, 14).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_once(&out, 14);
    // The first request after the restart resumed at the stored cursor.
    let first = state.requests.lock().unwrap()[before].0.clone();
    let at = chrono::DateTime::parse_from_rfc3339(committed[1].1["at"].as_str().unwrap()).unwrap();
    assert_eq!(
        first["start_time"],
        at.to_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "{first}"
    );
    assert!(first.get("search_after").is_none(), "{first}");
    gw.stop();
}

pub(crate) fn j1_entity(
    id: &str,
    class: &str,
    begin_on: i64,
    version: i64,
    deleted: bool,
) -> Value {
    serde_json::json!({
        "id": id,
        "entity": {
            "_id": id, "_key": format!("key-{id}"), "_type": format!("{}_type", class.to_lowercase()),
            "_class": [class], "_accountId": "j1acct", "_version": version, "_deleted": deleted,
            "_beginOn": begin_on, "_createdOn": begin_on - 1000, "displayName": format!("{class} {id}")
        },
        "properties": {"severity": "high", "open": !deleted, "tag.Production": true}
    })
}

fn j1_config(stub: &stubs::Stub, start: &str, extra: &str, sink: &str) -> String {
    config(&format!(
        r#"
[sources.j1]
type = "jupiterone"
api_token = "j1-token"
account_id = "j1acct"
base_url = "{url}/"
ca_file = "{ca}"
start = "{start}"
interval_secs = 1
{extra}

[pipelines.cdc]
source = "j1"
sink = "out"
[[pipelines.cdc.transforms]]
use = "j1-cdc"

[sinks.out]
type = "local"
path = "out"
key = "jupiterone/graph/cdc/accountId={{.properties._accountId}}/{{hive_date}}"
name = "time=%H%M%S"
{sink}
"#,
        url = stub.url(),
        ca = stub.cert.display(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupiterone_cdc_to_j1ds_layout() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let state = stubs::JupiterOne::new("j1-token", "j1acct", 3);
    {
        let mut e = state.entities.lock().unwrap();
        // Not in time order, as JupiterOne returns them.
        for (i, class) in [
            "Finding",
            "Vulnerability",
            "Alert",
            "Finding",
            "Vulnerability",
            "Alert",
            "Finding",
        ]
        .iter()
        .enumerate()
        {
            e.push(j1_entity(
                &format!("j{i}"),
                class,
                now_ms - 60_000 + ((i as i64 * 7) % 5) * 1000,
                1 + (i as i64 % 2),
                i == 4,
            ));
        }
        e.push(j1_entity("device-1", "Device", now_ms - 1000, 1, false));
    }
    let stub = stubs::jupiterone(dir.path(), state.clone()).await;
    let gw = Gateway::start(
        dir.path(),
        &j1_config(&stub, &ago(86_400), "include_deleted = true", FAST_SINK),
    );
    let out = dir.path().join("out");
    let lines = wait_delivered(&out, 7).await;
    for (path, line) in &lines {
        assert!(is_j1ds_key(path, "j1acct"), "J1DS layout: {path}");
        let doc: Value = serde_json::from_str(line).unwrap();
        assert_eq!(doc["eventType"], "entity");
        assert_eq!(doc["labels"][0], "Entity");
    }
    // Which entity got which operation: `_version` 1 is a create, a later
    // version an update, `_deleted` a delete (j4 is deleted at version 1).
    let ops: BTreeMap<String, String> = lines
        .iter()
        .map(|(_, l)| {
            let doc = serde_json::from_str::<Value>(l).unwrap();
            (
                doc["properties"]["_id"].as_str().unwrap().to_string(),
                doc["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("j0", "c"),
        ("j1", "u"),
        ("j2", "c"),
        ("j3", "u"),
        ("j4", "d"),
        ("j5", "u"),
        ("j6", "c"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(ops, expected);
    {
        let reqs = state.requests.lock().unwrap();
        assert_eq!(reqs[0]["includeDeleted"], true);
        assert_eq!(reqs[0]["flags"]["variableResultSize"], true);
        assert!(
            reqs[0]["query"].as_str().unwrap().contains("_beginOn >= "),
            "{}",
            reqs[0]
        );
        assert!(reqs[0]["cursor"].is_null() && reqs[1]["cursor"].is_string());
    }
    // An update: a new version with a newer _beginOn is spooled once.
    state
        .entities
        .lock()
        .unwrap()
        .push(j1_entity("j0", "Finding", now_ms, 3, false));
    wait_delivered(&out, 8).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(delivered(&out).len(), 8, "later cycles spool nothing again");
    gw.stop();
}

/// `jupiterone/graph/cdc/accountId=<acct>/year=YYYY/month=MM/day=DD/time=HHMMSS[-n].jsonl`.
fn is_j1ds_key(path: &str, account: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let seg: Vec<&str> = path.split('/').collect();
    let Some(name) = seg
        .get(7)
        .and_then(|n| n.strip_prefix("time="))
        .and_then(|n| n.strip_suffix(".jsonl"))
    else {
        return false;
    };
    let (time, dup) = name.split_once('-').unwrap_or((name, "0"));
    seg.len() == 8
        && seg[..4]
            == [
                "jupiterone",
                "graph",
                "cdc",
                &format!("accountId={account}"),
            ]
        && seg[4].strip_prefix("year=").is_some_and(|y| digits(y, 4))
        && seg[5].strip_prefix("month=").is_some_and(|m| digits(m, 2))
        && seg[6].strip_prefix("day=").is_some_and(|d| digits(d, 2))
        && digits(time, 6)
        && dup.bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupiterone_deferred_rate_limits_and_graphql_errors() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let state = stubs::JupiterOne::new("j1-token", "j1acct", 2);
    state
        .entities
        .lock()
        .unwrap()
        .extend((0..5).map(|i| j1_entity(&format!("d{i}"), "Alert", now_ms - 5000 + i, 2, false)));
    // A 429 asking for 3 s (longer than the first backoff), a rate limit
    // reported as a GraphQL error, and one deferred query that FAILS.
    state.faults.lock().unwrap().extend([
        Fault::Status(429, None, vec![("ratelimit-reset".into(), "3".into())]),
        Fault::GraphqlError("429 Too Many Requests".into()),
    ]);
    state
        .fail_deferred
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let stub = stubs::jupiterone(dir.path(), state.clone()).await;
    let gw = Gateway::start(
        dir.path(),
        &j1_config(&stub, &ago(86_400), "deferred = true", FAST_SINK),
    );
    let out = dir.path().join("out");
    wait_delivered(&out, 5).await;
    assert_once(&out, 5);
    let at = state.arrivals.lock().unwrap().clone();
    assert!(
        at[1] - at[0] >= Duration::from_secs(3),
        "RateLimit-Reset: 3 honoured: {:?}",
        at[1] - at[0]
    );
    assert!(
        at[2] - at[1] >= Duration::from_millis(1600),
        "the backoff grew after the GraphQL rate limit: {:?}",
        at[2] - at[1]
    );
    {
        let deferred = state.deferred.lock().unwrap();
        // Pages of 1, 2, 2, and the failed one asked again.
        assert!(deferred.len() >= 4, "{} deferred results", deferred.len());
        assert!(
            deferred.iter().all(|(polls, _)| *polls >= 2),
            "each deferred result was polled until it ended"
        );
    }
    assert_eq!(
        state
            .failed_deferred
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the FAILED path was taken, and its page asked again"
    );
    let log = gw.stderr();
    assert!(
        log.contains("deferred query FAILED") && log.contains("stub: query timed out"),
        "{log}"
    );
    assert_eq!(
        state.requests.lock().unwrap()[2]["deferredResponse"],
        "FORCE"
    );
    let m = gw.metrics().await;
    for (outcome, n) in [("429", 1.0), ("graphql_error", 1.0)] {
        assert_eq!(
            crate::gw::metric_value(
                &m,
                &format!("sluice_poller_requests_total{{outcome=\"{outcome}\",source=\"j1\"}}")
            ),
            n,
            "{outcome}: {m}"
        );
    }
    assert!(
        crate::gw::metric_value(
            &m,
            "sluice_poller_requests_total{outcome=\"ok\",source=\"j1\"}"
        ) >= 4.0
    );
    // A query error is not retried forever: the poller stops and says why.
    state.faults.lock().unwrap().push_back(Fault::GraphqlError(
        "Error parsing J1QL: unexpected token".into(),
    ));
    wait_for(
        || gw.stderr().contains("poller stopped"),
        "the poller to stop",
    )
    .await;
    assert!(
        gw.stderr().contains("Error parsing J1QL"),
        "{}",
        gw.stderr()
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupiterone_kill9_mid_run_resumes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let state = stubs::JupiterOne::new("j1-token", "j1acct", 2);
    state.entities.lock().unwrap().extend((0..9).map(|i| {
        j1_entity(
            &format!("m{i}"),
            "Finding",
            now_ms - 9000 + (i * 37 % 9) * 100,
            2,
            false,
        )
    }));
    let release = Arc::new(tokio::sync::Notify::new());
    state
        .faults
        .lock()
        .unwrap()
        .extend([Fault::None, Fault::None, Fault::Hang(release.clone())]);
    let stub = stubs::jupiterone(dir.path(), state.clone()).await;
    // One start for both runs: a changed start would reset the cursor.
    let start = ago(86_400);
    let gw = Gateway::start(dir.path(), &j1_config(&stub, &start, "", SLOW_SINK));
    wait_for(
        || state.requests.lock().unwrap().len() >= 3,
        "the third page request",
    )
    .await;
    gw.kill9();
    release.notify_waiters();
    // The two pages before the kill were committed: their records are in
    // the spool, their ids in run_ids, and the cursor stayed small (no id
    // list growing with the run).
    {
        let db = rusqlite::Connection::open(dir.path().join("state/spool.db")).unwrap();
        let (cursor,): (String,) = db
            .query_row(
                "SELECT cursor FROM checkpoints WHERE source = 'j1'",
                [],
                |r| Ok((r.get(0)?,)),
            )
            .unwrap();
        let ids: i64 = db
            .query_row("SELECT count(*) FROM run_ids WHERE key = 'j1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(ids, 3, "pages of 1 and 2 committed before the kill");
        let cursor: Value = serde_json::from_str(&cursor).unwrap();
        assert!(
            cursor.get("pending").is_none() && cursor["run_started_ms"].is_i64(),
            "{cursor}"
        );
        // A page's commit records the log's end with its cursor.
        let spooled: i64 = db
            .query_row(
                "SELECT end_seq - cursor_seq FROM logs WHERE sink = 'out'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(spooled, 3, "the 3 records are in the log");
    }
    let before = state.requests.lock().unwrap().len();
    let gw = Gateway::start(dir.path(), &j1_config(&stub, &start, "", FAST_SINK));
    let out = dir.path().join("out");
    wait_delivered(&out, 9).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_once(&out, 9);
    // The run was redone from its start: first page, same query.
    let first_after = state.requests.lock().unwrap()[before].clone();
    assert!(first_after["cursor"].is_null(), "{first_after}");
    assert_eq!(
        first_after["query"],
        state.requests.lock().unwrap()[0]["query"],
        "the watermark did not move for an unfinished run"
    );
    gw.stop();
}

/// JupiterOne can make an entity visible after a run took its snapshot,
/// with a `_beginOn` older than entities already read. With
/// `source_lag_secs`, the watermark stays that far behind each run's
/// start, so the late entity is still queried, and spooled once; what was
/// spooled already is skipped when seen again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupiterone_entities_made_visible_late_are_caught_by_the_lag() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let state = stubs::JupiterOne::new("j1-token", "j1acct", 3);
    // The newest entity is a second old.
    state.entities.lock().unwrap().extend((0..8).map(|i| {
        j1_entity(
            &format!("e{i}"),
            "Finding",
            now_ms - 8000 + i * 1000,
            1,
            false,
        )
    }));
    let stub = stubs::jupiterone(dir.path(), state.clone()).await;
    let gw = Gateway::start(
        dir.path(),
        &j1_config(&stub, &ago(3600), "source_lag_secs = 30", FAST_SINK),
    );
    let out = dir.path().join("out");
    wait_for(|| ids(&out).len() >= 8, "the first entities").await;
    // Made visible now, with a _beginOn four seconds back: older than the
    // newest entity already read.
    state
        .entities
        .lock()
        .unwrap()
        .push(j1_entity("late", "Finding", now_ms - 4000, 1, false));
    wait_for(|| ids(&out).len() >= 9, "the late entity").await;
    // Several more cycles: nothing is spooled twice.
    let runs = state.runs.lock().unwrap().len();
    wait_for(
        || state.runs.lock().unwrap().len() >= runs + 3,
        "three more runs",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_once(&out, 9);
    let m = gw.metrics().await;
    assert!(
        crate::gw::metric_value(
            &m,
            "sluice_poller_events_total{source=\"j1\",stage=\"duplicate\"}"
        ) >= 9.0,
        "seen again and skipped: {m}"
    );
    gw.stop();
}

/// A JumpCloud stub state with `n` events three days ago, 10 ms apart
/// (`b00000`, …), and the timestamp of the `i`-th.
fn window_of(n: i64) -> (Arc<stubs::JumpCloud>, impl Fn(i64) -> String + Clone) {
    let state = stubs::JumpCloud::with_key("jc-test-key");
    let base = chrono::Utc::now() - chrono::Duration::days(3);
    let ts = move |i: i64| {
        (base + chrono::Duration::milliseconds(i * 10))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    state.add((0..n).map(|i| (format!("b{i:05}"), ts(i), "directory".to_string())));
    (state, ts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_a_window_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (state, ts) = window_of(3000);
    // Outside the window: not fetched.
    state.add([
        ("before".to_string(), ts(-100), "directory".to_string()),
        ("after".into(), ts(4000), "directory".into()),
    ]);
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    std::fs::write(
        dir.path().join("sluice.toml"),
        jc_config(&stub, &ago(60), "limit = 500", FAST_SINK),
    )
    .unwrap();
    let mut cmd = crate::support::sluice();
    cmd.args(["backfill", "--config"])
        .arg(dir.path().join("sluice.toml"))
        .args(["--source", "jc", "--since", &ts(0), "--until", &ts(3000)]);
    let run = crate::support::run_with(cmd, "", Duration::from_secs(120));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("backfill jc: 3000 events spooled"),
        "{}",
        run.stdout
    );
    // Six full pages, then the empty seventh: a full page means "ask again".
    assert!(
        run.stderr.contains("backfill: 3000 events, 7 pages"),
        "progress line: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("100%") && run.stderr.contains("ETA"),
        "the total came from /events/count: {}",
        run.stderr
    );
    assert_once(&dir.path().join("out"), 3000);
    // The live cursor is untouched; the window has its own checkpoint.
    let db = rusqlite::Connection::open(dir.path().join("state/spool.db")).unwrap();
    let keys: Vec<String> = db
        .prepare("SELECT source FROM checkpoints")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].starts_with("backfill:jc:"), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_beside_a_running_gateway_runs_inside_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (state, ts) = window_of(2000);
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let base_cfg = jc_config(&stub, &ago(60), "limit = 300", FAST_SINK)
        + r#"
[sources.s]
type = "push"
listener = "https"
auth = { type = "none" }

[pipelines.q]
source = "s"
sink = "pushed"

[sinks.pushed]
type = "local"
path = "pushed"
rotate = { max_age_secs = 0.2 }
"#;
    let with_token = crate::gw::with_admin_token(&base_cfg, "admin-secret", "");
    std::fs::write(dir.path().join("no-token.toml"), &base_cfg).unwrap();
    let gw = Gateway::start(dir.path(), &with_token);
    let load = crate::spool::Load::start(gw.client(), "s", 2, 20);
    let (root, since, until) = (dir.path().to_path_buf(), ts(0), ts(2000));
    let backfill = move |config: &str| {
        let mut cmd = crate::support::sluice();
        cmd.args(["backfill", "--config"])
            .arg(root.join(config))
            .args(["--source", "jc", "--since", &since, "--until", &until]);
        crate::support::run_with(cmd, "", Duration::from_secs(120))
    };
    // Without a token, the gateway cannot take the backfill: refused, and
    // nothing runs beside it on the same spool.
    let run = tokio::task::spawn_blocking({
        let b = backfill.clone();
        move || b("no-token.toml")
    })
    .await
    .unwrap();
    run.expect_failure(2, "the config sets no [admin] token");
    let run = tokio::task::spawn_blocking(move || backfill("sluice.toml"))
        .await
        .unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("the backfill runs inside it"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("backfill jc: 2000 events spooled")
            && run.stdout.contains("done inside the running gateway"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("backfill: 2000 events"),
        "progress: {}",
        run.stderr
    );
    let tally = load.finish().await;
    let out = dir.path().join("out");
    wait_for(|| ids(&out).len() >= 2000, "the window delivered").await;
    crate::spool::wait_drained(&gw, "pushed").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_once(&out, 2000);
    let pushed: Vec<String> = delivered(&dir.path().join("pushed"))
        .iter()
        .map(|(_, l)| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    crate::spool::assert_exactly_once(&pushed, &tally);
    assert!(
        gw.stderr()
            .contains("backfill started through the admin API")
    );
    gw.stop();
}

/// JumpCloud orders one millisecond's events by id, not by their finer
/// time (its `search_after` is `[epoch ms, id]`); the stub does the same.
/// Pages of 3 cut through groups of 5 events per millisecond whose
/// sub-millisecond digits run against their id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumpcloud_events_of_one_millisecond_are_all_kept_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    let second = (chrono::Utc::now() - chrono::Duration::minutes(10)).timestamp();
    let at = |ms: i64, sub_ns: i64| {
        chrono::DateTime::from_timestamp(second, (ms * 1_000_000 + sub_ns) as u32)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    };
    let mut events = Vec::new();
    for ms in 0..30 {
        for k in 0..5i64 {
            events.push((
                format!("m{ms:02}-{k}"),
                at(ms, (5 - k) * 100_000),
                "directory".to_string(),
            ));
        }
    }
    // The pair the report names: the later fraction has the smaller id.
    events.push(("pair-a".into(), at(218, 593_681), "directory".into()));
    events.push(("pair-b".into(), at(218, 500_000), "directory".into()));
    let total = events.len();
    state.add(events);
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let gw = Gateway::start(
        dir.path(),
        &jc_config(&stub, &ago(3600), "limit = 3", FAST_SINK),
    );
    let out = dir.path().join("out");
    wait_for(|| ids(&out).len() >= total, "every event delivered").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_once(&out, total);
    let m = gw.metrics().await;
    assert_eq!(
        crate::gw::metric_value(
            &m,
            "sluice_poller_events_total{source=\"jc\",stage=\"spooled\"}"
        ),
        total as f64
    );
    gw.stop();
}

/// An MSP key reading two orgs: each org is its own stream (one
/// `x-org-id` per request, its own cursor), so interleaved events of both
/// orgs all arrive, once, however the pages fall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumpcloud_org_ids_are_polled_as_separate_streams() {
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    let base = chrono::Utc::now() - chrono::Duration::minutes(10);
    let ts = |i: i64| {
        (base + chrono::Duration::milliseconds(i * 7))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    // Interleaved in time: even events in org-a, odd ones in org-b, and
    // org-b's run on for longer.
    state.add_to(
        "org-a",
        (0..40)
            .step_by(2)
            .map(|i| (format!("a{i:03}"), ts(i), "sso".to_string())),
    );
    state.add_to(
        "org-b",
        (1..61)
            .step_by(2)
            .map(|i| (format!("b{i:03}"), ts(i), "directory".to_string())),
    );
    // The key's own org is not asked for when org_ids is set.
    state.add([("own".to_string(), ts(5), "sso".to_string())]);
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let gw = Gateway::start(
        dir.path(),
        &jc_config(
            &stub,
            &ago(3600),
            "limit = 4\norg_ids = [\"org-a\", \"org-b\"]",
            FAST_SINK,
        ),
    );
    let out = dir.path().join("out");
    wait_for(|| ids(&out).len() >= 50, "both orgs delivered").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_once(&out, 50);
    let got = ids(&out);
    assert_eq!(got.keys().filter(|k| k.starts_with('a')).count(), 20);
    assert_eq!(got.keys().filter(|k| k.starts_with('b')).count(), 30);
    {
        let reqs = state.requests.lock().unwrap();
        assert!(
            reqs.iter().all(|(_, orgs)| orgs.len() == 1),
            "one org per request: {:?}",
            reqs.iter().map(|(_, o)| o).collect::<Vec<_>>()
        );
        for org in ["org-a", "org-b"] {
            assert!(reqs.iter().any(|(_, o)| o[0] == org), "{org} was read");
        }
    }
    gw.stop();
    let db = rusqlite::Connection::open(dir.path().join("state/spool.db")).unwrap();
    let keys: Vec<String> = db
        .prepare("SELECT source FROM checkpoints ORDER BY source")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(keys, ["jc/org=org-a", "jc/org=org-b"], "a cursor per org");
}

/// A full spool disk is a moment's trouble for a poller: it waits and
/// tries the page again (logged), never stops, and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_waits_out_a_full_spool_disk_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let _fs = crate::spool::Tmpfs::mount(&dir.path().join("state"), "4m");
    let state = stubs::JumpCloud::with_key("jc-test-key");
    let base = chrono::Utc::now() - chrono::Duration::minutes(30);
    state.add((0..4000).map(|i| {
        (
            format!("d{i:05}"),
            (base + chrono::Duration::milliseconds(i * 3))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "directory".to_string(),
        )
    }));
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    // The sink cannot write yet, so the ECS documents fill the 4 MiB
    // (1 MiB of it kept free).
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/jumpcloud.directory"), "in the way").unwrap();
    let cfg = jc_config(&stub, &ago(3600), "limit = 500", FAST_SINK)
        + "\n[spool]\nsegment_bytes = 65536\nmin_free_bytes = 1048576\n";
    let gw = Gateway::start(dir.path(), &cfg);
    wait_for(
        || gw.stderr().contains("disk is full"),
        "the spool to run out of space",
    )
    .await;
    assert!(
        gw.stderr().contains("poll request failed; retrying"),
        "{}",
        gw.stderr()
    );
    assert_eq!(
        gw.metric_opt("sluice_poller_stopped{source=\"jc\"}").await,
        Some(0.0),
        "the poller did not stop"
    );
    std::fs::remove_file(dir.path().join("out/jumpcloud.directory")).unwrap();
    let out = dir.path().join("out");
    wait_for(|| ids(&out).len() >= 4000, "every event delivered").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_once(&out, 4000);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumpcloud_network_errors_and_timeouts_are_retried_and_4xx_stop_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    state.add((1..=3).map(|i| (format!("n{i}"), ago(600 - i), "directory".to_string())));
    // A connection closed without an answer, then a request never answered.
    let never = Arc::new(tokio::sync::Notify::new());
    state
        .faults
        .lock()
        .unwrap()
        .extend([Fault::Drop, Fault::Hang(never.clone())]);
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let cfg = jc_config(&stub, &ago(3600), "request_timeout_secs = 1", FAST_SINK);
    let gw = Gateway::start(dir.path(), &cfg);
    let out = dir.path().join("out");
    wait_delivered(&out, 3).await;
    assert_once(&out, 3);
    let m = gw.metrics().await;
    let outcome = |o: &str| {
        crate::gw::metric_value(
            &m,
            &format!("sluice_poller_requests_total{{outcome=\"{o}\",source=\"jc\"}}"),
        )
    };
    assert_eq!(outcome("network"), 2.0, "{m}");
    assert!(outcome("ok") >= 1.0, "{m}");
    assert_eq!(outcome("4xx"), 0.0, "{m}");
    let log = gw.stop();
    assert!(
        log.contains("no answer within 1s"),
        "the timeout is named: {log}"
    );
    assert!(
        log.contains("peer closed connection"),
        "the closed connection is named: {log}"
    );

    // 403, then another 4xx: each stops the source with a message saying
    // why; the gateway stays up and ready.
    for (status, says) in [
        (403, "the API key lacks permission"),
        // As the log line writes it, quotes escaped.
        (
            400,
            "JumpCloud answered 400 Bad Request: {\\\"message\\\":\\\"stub fault 400\\\"}",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        state
            .faults
            .lock()
            .unwrap()
            .push_back(Fault::Status(status, None, vec![]));
        let gw = Gateway::start(dir.path(), &cfg);
        wait_for(
            || gw.stderr().contains("poller stopped"),
            "the poller to stop",
        )
        .await;
        assert!(gw.stderr().contains(says), "{status}: {}", gw.stderr());
        assert_eq!(gw.metric("sluice_poller_stopped{source=\"jc\"}").await, 1.0);
        assert_eq!(
            gw.metric("sluice_poller_requests_total{outcome=\"4xx\",source=\"jc\"}")
                .await,
            1.0
        );
        assert_eq!(gw.admin_get("/readyz").await.0, hyper::StatusCode::OK);
        gw.stop();
    }
    never.notify_waiters();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jumpcloud_a_changed_start_resets_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    state.add([
        ("old".to_string(), ago(5000), "directory".to_string()),
        ("recent".to_string(), ago(100), "directory".to_string()),
    ]);
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let out = dir.path().join("out");
    let (start, earlier) = (ago(3600), ago(7200));
    let cfg = jc_config(&stub, &start, "", FAST_SINK);
    let gw = Gateway::start(dir.path(), &cfg);
    wait_delivered(&out, 1).await;
    gw.stop();
    // The same start: the cursor carries on, nothing is read again.
    let before = state.event_requests();
    let gw = Gateway::start_existing(dir.path());
    wait_for(
        || state.event_requests() >= before + 2,
        "two cycles after the restart",
    )
    .await;
    let log = gw.stop();
    assert!(!log.contains("cursor is reset"), "{log}");
    assert_once(&out, 1);
    // An earlier start: read again from there, as documented (the events
    // after the old start come again; `sluice backfill` fills a gap
    // without that).
    std::fs::write(
        dir.path().join("sluice.toml"),
        jc_config(&stub, &earlier, "", FAST_SINK),
    )
    .unwrap();
    let gw = Gateway::start_existing(dir.path());
    wait_delivered(&out, 3).await;
    let log = gw.stop();
    assert!(
        log.contains("the configured start changed; the cursor is reset"),
        "{log}"
    );
    assert_eq!(
        ids(&out),
        BTreeMap::from([("old".to_string(), 1), ("recent".to_string(), 2)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backfill_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (state, ts) = window_of(3000);
    // Three pages of 500, then the fourth request hangs until killed.
    let never = Arc::new(tokio::sync::Notify::new());
    state.faults.lock().unwrap().extend([
        Fault::None,
        Fault::None,
        Fault::None,
        Fault::Hang(never.clone()),
    ]);
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        jc_config(&stub, &ago(60), "limit = 500", FAST_SINK),
    )
    .unwrap();
    let backfill = || {
        let mut cmd = crate::support::sluice();
        cmd.args(["backfill", "--config"]).arg(&config).args([
            "--source",
            "jc",
            "--since",
            &ts(0),
            "--until",
            &ts(3000),
        ]);
        cmd
    };
    let mut first = backfill()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(|| state.event_requests() == 4, "the fourth page request").await;
    first.kill().unwrap();
    first.wait().unwrap();
    never.notify_waiters();
    // The three pages were committed with their cursor before the kill.
    let db = rusqlite::Connection::open(dir.path().join("state/spool.db")).unwrap();
    let cursor: String = db
        .query_row(
            "SELECT cursor FROM checkpoints WHERE source LIKE 'backfill:jc:%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    assert!(cursor.contains("b01499"), "after page 3: {cursor}");

    let run = crate::support::run_with(backfill(), "", Duration::from_secs(120));
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The second run starts at the last committed event's millisecond
    // (skipping the ids it already has there), not at the window's start.
    let reqs = state.requests.lock().unwrap().clone();
    let asked_from = |i: usize| stubs::ns(reqs[i].0["start_time"].as_str().unwrap());
    assert_eq!(asked_from(0), stubs::ns(&ts(0)));
    assert_eq!(
        asked_from(4),
        stubs::ns(&ts(1499)),
        "the second run's first request: {}",
        reqs[4].0
    );
    assert!(reqs[4].0["search_after"].is_null(), "{}", reqs[4].0);
    assert_once(&dir.path().join("out"), 3000);
}

/// A poller whose pipeline names a transform that is not uploaded yet does
/// not poll (the events stay at the API, the cursor where it was) until the
/// first activation, which brings it up with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_waits_for_its_transform_and_starts_on_the_first_activation() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let state = stubs::JumpCloud::with_key("jc-test-key");
    let at = (chrono::Utc::now() - chrono::Duration::minutes(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    state.add((0..4).map(|i| (format!("w{i}"), at.clone(), "directory".to_string())));
    let stub = stubs::jumpcloud(dir.path(), state.clone()).await;
    let cfg = jc_config(&stub, &ago(3600), "", FAST_SINK)
        .replace("use = \"ecs-jumpcloud\"", "use = \"mapper\"");
    let cfg = crate::gw::with_admin_token(&cfg, "admin-secret", "");
    assert!(cfg.contains("use = \"mapper\"") && cfg.contains("token = \"admin-secret\""));
    let gw = Gateway::start(dir.path(), &cfg);
    // Three poll intervals pass with the pipeline waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        state.event_requests(),
        0,
        "no poll while the pipeline waits"
    );
    assert_eq!(gw.admin_get("/readyz").await.0, 503);
    assert!(delivered(&dir.path().join("out")).is_empty());

    let component = std::fs::read(sluice_test_artifacts::TAGGER_A_COMPONENT).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let head = format!(
        "PUT /v1/transforms/mapper?activate=true HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer admin-secret\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        component.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&component).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let lines = wait_delivered(&dir.path().join("out"), 4).await;
    for (_, line) in &lines {
        assert!(
            line.contains("\"tag\":\"a\""),
            "ran the activated transform: {line}"
        );
    }
    assert!(state.event_requests() > 0);
    assert_eq!(gw.admin_get("/readyz").await.0, 200);
}
