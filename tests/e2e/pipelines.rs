//! What a pipeline does when a transform fails (`on_error`), where its
//! dead letters go, and how a large input is shared among the workers.

use crate::gw::{Gateway, config, metric_value};
use crate::spool::wait_drained;
use hyper::StatusCode;
use std::path::Path;

/// The lines of every object under `dir` (one folder of a local sink), in
/// file-name order and file order.
fn lines_under(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_drop_pass_and_dead_letters_to_their_own_sink_and_large_inputs_split() {
    let hostile = sluice_test_artifacts::HOSTILE_COMPONENT;
    let mut cfg = String::from("[limits]\nworkers = 2\n\n");
    for (source, mode, pipeline_extra) in [
        ("dropping", "trap", "on_error = \"drop\""),
        ("passing", "trap", "on_error = \"pass\""),
        ("lettered", "trap", ""),
        ("big", "count", ""),
    ] {
        let dead_letter_sink = if source == "lettered" {
            "dead_letter_sink = \"letters\"\n"
        } else {
            ""
        };
        cfg += &format!(
            r#"[sources.{source}]
type = "push"
listener = "https"
auth = {{ type = "none" }}
max_records = 10000

[pipelines.{source}]
source = "{source}"
sink = "out"
{dead_letter_sink}
[[pipelines.{source}.transforms]]
use = "{hostile}"
{pipeline_extra}
config = {{ mode = "{mode}" }}

"#
        );
    }
    cfg += r#"[sinks.out]
type = "local"
path = "out"
key = "{route}"
rotate = { max_age_secs = 0.2 }

[sinks.letters]
type = "local"
path = "letters"
key = "{route}"
rotate = { max_age_secs = 0.2 }
"#;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &config(&cfg));
    let client = gw.client();
    for source in ["dropping", "passing", "lettered"] {
        let r = client.push(source, &[], r#"["a","boom","b"]"#).await;
        assert_eq!(r.status, StatusCode::OK, "{source}: {}", r.body);
    }
    // Above the size from which an input is shared among the workers.
    let big: Vec<u32> = (1..=5000).collect();
    let r = client
        .push("big", &[], serde_json::to_string(&big).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    wait_drained(&gw, "out").await;
    wait_drained(&gw, "letters").await;
    let metrics = gw.metrics().await;
    let log = gw.stop();
    let out = dir.path().join("out");

    assert_eq!(
        lines_under(&out.join("dropping")),
        ["\"a\"", "\"b\""],
        "{log}"
    );
    assert_eq!(
        lines_under(&out.join("passing")),
        ["\"a\"", "\"boom\"", "\"b\""],
        "passed on unchanged, in its place"
    );
    assert_eq!(lines_under(&out.join("lettered")), ["\"a\"", "\"b\""]);
    assert!(
        !out.join("dead_letter").exists(),
        "dead letters go only to their own sink"
    );
    let letters = lines_under(&dir.path().join("letters/dead_letter"));
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter: serde_json::Value = serde_json::from_str(&letters[0]).unwrap();
    assert_eq!(
        (&letter["pipeline"], &letter["source"], &letter["original"]),
        (&"lettered".into(), &"lettered".into(), &"\"boom\"".into()),
        "{letter}"
    );
    let outcome = |pipeline: &str, outcome: &str| {
        metric_value(
            &metrics,
            &format!(
                "sluice_transform_records_total{{outcome=\"{outcome}\",pipeline=\"{pipeline}\",transform=\"{hostile}\"}}"
            ),
        )
    };
    assert_eq!(outcome("dropping", "dropped"), 1.0, "{metrics}");
    assert_eq!(outcome("passing", "passed"), 1.0, "{metrics}");
    assert_eq!(outcome("lettered", "error"), 1.0, "{metrics}");
    for pipeline in ["dropping", "passing", "lettered"] {
        assert_eq!(outcome(pipeline, "in"), 3.0, "{pipeline}: {metrics}");
    }
    assert_eq!(
        metric_value(
            &metrics,
            "sluice_dead_letter_records_total{pipeline=\"lettered\"}"
        ),
        1.0
    );

    // The large input: every record once and in order, and each of the two
    // instances saw about half of it (one instance would count to 5000).
    let counted: Vec<(u64, u32)> = lines_under(&out.join("big"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        counted.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        big,
        "every record once, in order"
    );
    let firsts = counted.iter().filter(|(n, _)| *n == 1).count();
    let most = counted.iter().map(|(n, _)| *n).max().unwrap();
    assert_eq!((firsts, most), (2, 2500), "shared between two workers");
}
