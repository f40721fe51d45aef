//! Built-in transforms run end to end through the CLI's wasm host.

use crate::support::transform_run;
use serde_json::Value;

fn docs(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("output is JSON"))
        .collect()
}

#[test]
fn ecs_jumpcloud_maps_the_example_events_and_keeps_bad_ones() {
    let examples = include_str!("../../examples/jumpcloud-events.jsonl");
    let input = format!(
        "{examples}{{\"timestamp\":\"2023-03-07T13:03:42Z\",\"client_ip\":\"nope\"}}\nnot json\n"
    );
    let run = transform_run(
        &["ecs-jumpcloud", "--config", "preserve_original_event=true"],
        &input,
    );
    assert_eq!(
        run.code, 0,
        "failures are documents, not record errors: {}",
        run.stderr
    );
    let docs = docs(&run.stdout);
    assert_eq!(
        docs.len(),
        examples.lines().count() + 2,
        "one document per input line"
    );
    for (doc, line) in docs.iter().zip(input.lines()) {
        assert_eq!(doc["ecs"]["version"], "8.11.0");
        assert_eq!(doc["event"]["original"], line, "original bytes verbatim");
    }
    let first = &docs[0];
    assert_eq!(first["@timestamp"], "2025-06-18T01:40:40.953Z");
    assert_eq!(
        first["event"]["category"],
        serde_json::json!(["authentication"])
    );
    assert_eq!(first["event"]["module"], "directory");
    assert_eq!(first["user_agent"]["os"]["name"], "Mac OS X");
    assert_eq!(
        first["tags"],
        serde_json::json!(["preserve_original_event"])
    );
    assert!(first["jumpcloud"]["event"].get("timestamp").is_none());
    let bad = &docs[docs.len() - 2..];
    assert!(bad.iter().all(|d| d["event"]["kind"] == "pipeline_error"));
    assert!(
        bad[0]["error"]["message"][0]
            .as_str()
            .unwrap()
            .contains("'nope' is not an IP")
    );
}

#[test]
fn ecs_jumpcloud_rejects_unknown_config() {
    let run = transform_run(&["ecs-jumpcloud", "--config", "geo=1"], "{}\n");
    run.expect_failure(2, "rejected its configuration: key `geo`: unknown key");
}
