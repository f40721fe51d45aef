use super::*;
use crate::spool::log::Reader;

fn row(sink: &str, data: &str) -> NewRow {
    NewRow {
        sink: sink.into(),
        route: "r".into(),
        source: "s".into(),
        received_at_ms: 1,
        data: bytes::Bytes::copy_from_slice(data.as_bytes()),
    }
}

fn open(dir: &Path, limits: SpoolConfig, sinks: &[&str]) -> Arc<Spool> {
    let sinks: Vec<String> = sinks.iter().map(|s| (*s).to_string()).collect();
    Spool::open(dir, limits, &sinks, Metrics::new()).unwrap()
}

fn read(spool: &Spool, sink: &str) -> Vec<String> {
    let log = spool.log(sink).unwrap();
    let mut r = Reader::new(log.clone(), log.cursor());
    let mut out = Vec::new();
    while let Some(item) = r.next_frame().unwrap() {
        out.push(String::from_utf8(item.frame.data.to_vec()).unwrap());
    }
    out
}

#[tokio::test]
async fn append_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SpoolConfig::default(), &["a", "b"]);
    spool
        .append(vec![row("a", "1"), row("b", "22"), row("a", "333")])
        .await
        .unwrap();
    assert_eq!(read(&spool, "a"), ["1", "333"]);
    assert_eq!(read(&spool, "b"), ["22"]);
    assert_eq!(spool.depth().0, 3);
    spool.close();
    drop(spool);
    let spool = open(dir.path(), SpoolConfig::default(), &["a", "b"]);
    assert_eq!(read(&spool, "a"), ["1", "333"], "the end is found again");
    assert_eq!(spool.depth().0, 3);
}

#[tokio::test]
async fn a_second_spool_on_the_same_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SpoolConfig::default(), &["a"]);
    let e = Spool::open(dir.path(), SpoolConfig::default(), &[], Metrics::new()).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("is in use by sluice pid {}", std::process::id())),
        "{e}"
    );
    spool.close();
}

#[tokio::test]
async fn checkpoint_commits_with_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SpoolConfig::default(), &["a"]);
    assert_eq!(spool.checkpoint("jc").unwrap(), None);
    spool
        .append_with_checkpoint(vec![row("a", "p1")], Some(("jc".into(), "c1".into())))
        .await
        .unwrap();
    assert_eq!(spool.checkpoint("jc").unwrap().as_deref(), Some("c1"));
    assert_eq!(read(&spool, "a"), ["p1"]);
    // A page for a sink the spool has no log for fails as a whole: neither
    // its records nor its cursor are stored.
    let e = spool
        .append_with_checkpoint(
            vec![row("a", "p2"), row("nowhere", "x")],
            Some(("jc".into(), "c2".into())),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SpoolError::UnknownSink(_)), "{e}");
    assert_eq!(spool.checkpoint("jc").unwrap().as_deref(), Some("c1"));
    assert_eq!(read(&spool, "a"), ["p1"]);
    spool
        .append_with_checkpoint(vec![], Some(("jc".into(), "c3".into())))
        .await
        .unwrap();
    assert_eq!(spool.checkpoint("jc").unwrap().as_deref(), Some("c3"));
}

#[tokio::test]
async fn budgets_are_per_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = SpoolConfig {
        max_records: 10,
        high_water: 0.5,
        ..SpoolConfig::default()
    };
    limits.sinks.insert(
        "big".into(),
        crate::config::SinkBudget {
            max_records: Some(1000),
            ..Default::default()
        },
    );
    let spool = open(dir.path(), limits, &["a", "b", "big"]);
    let a: Vec<Arc<str>> = vec!["a".into()];
    let b: Vec<Arc<str>> = vec!["b".into()];
    let both: Vec<Arc<str>> = vec!["b".into(), "a".into()];
    assert!(spool.admission(&a, 4, 10).is_ok());
    let e = spool.admission(&a, 11, 10).unwrap_err();
    assert_eq!(e.sink, "a", "would not fit");
    spool
        .append((0..5).map(|_| row("a", "x")).collect())
        .await
        .unwrap();
    assert!(
        spool.admission(&a, 1, 1).is_err(),
        "a is at its high-water mark"
    );
    assert!(spool.admission(&b, 1, 1).is_ok(), "b is not held back by a");
    assert_eq!(spool.admission(&both, 1, 1).unwrap_err().sink, "a");
    spool
        .append((0..20).map(|_| row("big", "x")).collect())
        .await
        .unwrap();
    assert!(
        spool.admission(&["big".into()], 1, 1).is_ok(),
        "its own budget"
    );
}

/// The spool.db of the first release (tests/fixtures/spool-v1, written by
/// that release's `sluice run`): 1050 undelivered records for sink `out`.
#[tokio::test]
async fn a_first_release_spool_is_migrated_once_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/spool-v1/spool.db"
    );
    std::fs::copy(fixture, dir.path().join("spool.db")).unwrap();
    let spool = open(dir.path(), SpoolConfig::default(), &["out"]);
    let records = read(&spool, "out");
    assert_eq!(records.len(), 1050);
    let mut s: Vec<i64> = Vec::new();
    let mut t: Vec<i64> = Vec::new();
    for r in &records {
        let v: serde_json::Value = serde_json::from_str(r).unwrap();
        let i = v["i"].as_i64().unwrap();
        match v["src"].as_str().unwrap() {
            "s" => s.push(i),
            _ => {
                assert_eq!(v["note"], "café ☕", "bytes kept exactly");
                t.push(i);
            }
        }
    }
    assert_eq!(s, (0..1000).collect::<Vec<_>>(), "in their original order");
    assert_eq!(t, (0..50).collect::<Vec<_>>());
    let log = spool.log("out").unwrap();
    let mut reader = Reader::new(log.clone(), log.cursor());
    let first = reader.next_frame().unwrap().unwrap();
    assert_eq!((first.frame.route, first.frame.source), ("s", "s"));
    drop(reader);
    spool.close();
    drop(spool);
    // Opened again: nothing is migrated twice.
    let spool = open(dir.path(), SpoolConfig::default(), &["out"]);
    assert_eq!(read(&spool, "out").len(), 1050);
    let conn = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'spool'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the old table is gone");
}

#[tokio::test]
async fn orphaned_logs_are_kept_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path(), SpoolConfig::default(), &["old", "new"]);
    spool.append(vec![row("old", "kept")]).await.unwrap();
    spool.close();
    drop(spool);
    // `old` left the config: its log is still opened, with its data.
    let spool = open(dir.path(), SpoolConfig::default(), &["new"]);
    let names: Vec<&str> = spool.logs().map(|(n, _)| n).collect();
    assert_eq!(names, ["new", "old"]);
    assert_eq!(read(&spool, "old"), ["kept"]);
}
