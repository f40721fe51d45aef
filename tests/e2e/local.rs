//! The local-directory sink's promises: rotation by records and by bytes,
//! names that never overwrite a file (`-1`, `-2`, …), and CSV's records
//! that are not objects kept under `dead_letter/`.

use crate::gw::{Gateway, config, delivered};
use crate::spool::wait_drained;
use hyper::StatusCode;
use std::collections::BTreeMap;
use std::path::Path;

/// Objects under `root` (uncompressed) with their lines in file order,
/// by path.
fn objects(root: &Path) -> BTreeMap<String, Vec<String>> {
    delivered(root)
        .into_iter()
        .map(|(path, _)| {
            let text = std::fs::read_to_string(root.join(&path)).unwrap();
            let lines = text.lines().map(str::to_string).collect();
            (path, lines)
        })
        .collect()
}

/// `n` records of exactly `RECORD_LEN` bytes as a JSON line.
fn records(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(20)))
        .collect()
}

/// A record of [`records`] plus its newline.
const RECORD_LEN: usize = 37;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_records_and_bytes_names_that_never_overwrite_and_csv_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(records(1)[0].len() + 1, RECORD_LEN);
    let mut cfg = String::new();
    for (source, sink) in [("a", "counted"), ("b", "sized"), ("c", "csv")] {
        cfg += &format!(
            "[sources.{source}]\ntype = \"push\"\nlistener = \"https\"\nauth = {{ type = \"none\" }}\n\n\
             [pipelines.{source}]\nsource = \"{source}\"\nsink = \"{sink}\"\n\n"
        );
    }
    // Objects are sealed when they reach a limit: two records; or, at
    // 37-byte lines, the third line reaches 2 x 37 + 1 bytes. A fixed name
    // has no time, so each next object takes the next free suffix.
    cfg += &format!(
        r#"[sinks.counted]
type = "local"
path = "counted"
key = "{{source}}"
name = "fixed"
rotate = {{ max_records = 2, max_age_secs = 30 }}

[sinks.sized]
type = "local"
path = "sized"
key = "{{source}}"
name = "fixed"
rotate = {{ max_bytes = {}, max_age_secs = 0.5 }}

[sinks.csv]
type = "local"
path = "csv"
key = "{{source}}"
encoding = "csv"
rotate = {{ max_age_secs = 0.3 }}
"#,
        2 * RECORD_LEN + 1
    );
    // A file already where the first object would go is left alone.
    std::fs::create_dir_all(dir.path().join("counted/a")).unwrap();
    std::fs::write(dir.path().join("counted/a/fixed.jsonl"), "not ours\n").unwrap();
    let gw = Gateway::start(dir.path(), &config(&cfg));
    let client = gw.client();
    let body = |n| records(n).join("\n");
    let r = client.push("a", &[], body(6)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = client.push("b", &[], body(7)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = client
        .push("c", &[], r#"[{"a":1},"just text",[1,2],{"a":2}]"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for sink in ["counted", "sized", "csv"] {
        wait_drained(&gw, sink).await;
    }
    let log = gw.stop();

    let all = records(7);
    let expect = |names: &[&str], sizes: &[usize]| {
        let mut at = 0;
        names
            .iter()
            .zip(sizes)
            .map(|(name, &n)| {
                at += n;
                (name.to_string(), all[at - n..at].to_vec())
            })
            .collect::<BTreeMap<_, _>>()
    };
    let mut counted = expect(
        &["a/fixed-1.jsonl", "a/fixed-2.jsonl", "a/fixed-3.jsonl"],
        &[2, 2, 2],
    );
    counted.insert("a/fixed.jsonl".into(), vec!["not ours".into()]);
    assert_eq!(objects(&dir.path().join("counted")), counted, "{log}");
    assert_eq!(
        objects(&dir.path().join("sized")),
        expect(
            &["b/fixed.jsonl", "b/fixed-1.jsonl", "b/fixed-2.jsonl"],
            &[3, 3, 1]
        ),
        "{log}"
    );

    let csv = objects(&dir.path().join("csv"));
    let (dead, kept): (Vec<_>, Vec<_>) = csv
        .iter()
        .partition(|(path, _)| path.starts_with("dead_letter/"));
    assert_eq!(kept.len(), 1, "{csv:#?}");
    assert!(
        kept[0].0.starts_with("c/") && kept[0].0.ends_with(".csv"),
        "{csv:#?}"
    );
    assert_eq!(*kept[0].1, ["\"a\"", "\"1\"", "\"2\""], "{csv:#?}");
    let dead: Vec<serde_json::Value> = dead
        .iter()
        .flat_map(|(_, lines)| lines.iter())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let originals: Vec<&str> = dead
        .iter()
        .map(|d| d["original"].as_str().unwrap())
        .collect();
    assert_eq!(originals, ["\"just text\"", "[1,2]"], "{dead:#?}");
    for d in &dead {
        assert_eq!(
            (&d["sink"], &d["route"]),
            (&"csv".into(), &"c".into()),
            "{d}"
        );
        assert!(
            d["error"]
                .as_str()
                .unwrap()
                .starts_with("cannot write as CSV"),
            "{d}"
        );
    }
}
