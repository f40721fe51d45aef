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

/// Every emnify docs example, as one JSON line each (arrays of one are
/// unwrapped, as the push source does with a Bulk array).
pub(crate) fn emnify_lines(dir: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/emnify/");
    let mut paths: Vec<_> = std::fs::read_dir(format!("{root}{dir}"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    let mut out = String::new();
    for p in paths {
        let text = sluice_sdk::testing::strict_json(&std::fs::read_to_string(&p).unwrap());
        match serde_json::from_str::<Value>(&text).unwrap() {
            Value::Array(items) => items.iter().for_each(|i| out.push_str(&format!("{i}\n"))),
            v => out.push_str(&format!("{v}\n")),
        }
    }
    out
}

#[test]
fn emnify_csv_usage_prints_emnify_header_and_rows() {
    let usage = emnify_lines("usage");
    let run = transform_run(&["emnify-csv", "--output", "csv"], &usage);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "\"id\",\"event_start_timestamp\",\"event_stop_timestamp\",\"organisation_id\",\"organisation_name\",\
         \"endpoint_id\",\"sim_id\",\"iccid\",\"imsi\",\"operator_id\",\"operator_name\",\"country_id\",\
         \"operator_country_name\",\"traffic_type_id\",\"traffic_type_description\",\"volume\",\"volume_tx\",\
         \"volume_rx\",\"cost\",\"currency_id\",\"currency_code\",\"currency_symbol\",\"ratezone_tariff_id\",\
         \"ratezone_tariff_name\",\"ratezone_id\",\"ratezone_name\",\"endpoint_name\",\"endpoint_ip_address\",\
         \"endpoint_tags\",\"endpoint_imei\",\"msisdn_msisdn\",\"sim_production_date\",\"operator_mncs\",\"country_mcc\""
    );
    assert_eq!(
        lines.len(),
        4,
        "header, two rows, and the final CRLF: {:?}",
        run.stdout
    );
    assert!(
        lines[1]
            .starts_with("\"333333333333333\",\"2022-04-26 11:53:43\",\"2024-02-15 14:56:15\","),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains(",\"0.0018851200\",\"1\",\"EUR\",\"€\","),
        "{}",
        lines[1]
    );
}

#[test]
fn emnify_csv_flattens_every_event_example() {
    let events = emnify_lines("events");
    let run = transform_run(&["emnify-csv"], &events);
    assert_eq!(run.code, 0, "every example flattens: {}", run.stderr);
    let rows: Vec<Value> = docs(&run.stdout);
    assert_eq!(rows.len(), events.lines().count());
    assert!(rows.iter().all(|r| r.as_object().unwrap().len() == 27));
    // Event columns differ per record only in values, never in order, so
    // one CSV object holds them all.
    let run = transform_run(&["emnify-csv", "--output", "csv"], &events);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.split("\r\n").count(), events.lines().count() + 2);
}

#[test]
fn redact_masks_and_hashes_the_example_events() {
    let examples = include_str!("../../examples/jumpcloud-events.jsonl");
    let run = transform_run(
        &[
            "redact",
            "--config",
            "fields=username:hash,initiated_by.username:hash",
            "--config",
            "detectors=email:mask,ipv4:mask,ipv6:mask",
            "--config",
            "hash_key=e2e-test-key-0123456789",
        ],
        examples,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), examples.lines().count());
    for (out, input) in docs(&run.stdout).iter().zip(examples.lines()) {
        let input: Value = serde_json::from_str(input).unwrap();
        if let Some(ip) = input["client_ip"].as_str() {
            assert!(!run.stdout.contains(ip), "{ip} left in the clear");
            assert!(
                out["client_ip"].as_str().unwrap().ends_with(".x.x"),
                "{out}"
            );
        }
        if let Some(user) = input["username"].as_str() {
            assert_eq!(out["username"].as_str().unwrap().len(), 64, "hashed: {out}");
            assert_ne!(out["username"], user);
        }
        if let Some(email) = input["initiated_by"]["email"].as_str() {
            assert!(!run.stdout.contains(email), "{email} left in the clear");
            assert_eq!(out["initiated_by"]["email"], "***@example.com", "{out}");
        }
        assert_eq!(
            out["event_type"], input["event_type"],
            "the rest is untouched"
        );
    }
    assert!(
        examples.contains("@example.com"),
        "the example events carry emails, so this example shows masking"
    );
}

#[test]
fn j1_cdc_turns_entities_into_change_records() {
    // queryV1 result elements (deleted ones included, as with includeDeleted):
    // a new Finding, an updated Vulnerability, a deleted Alert.
    let input = concat!(
        r#"{"id":"a1","entity":{"_id":"a1","_key":"f-1","_type":"aws_inspector_finding","_class":["Finding"],"_accountId":"j1acct","_version":1,"_deleted":false,"_createdOn":"2025-11-03T10:55:37.188Z","_beginOn":"2025-11-03T10:55:37.188Z","displayName":"CVE-2025-0001 on host"},"properties":{"severity":"high","numericSeverity":7,"open":true,"category":"system","tag.Production":true}}"#,
        "\n",
        r#"{"id":"b2","entity":{"_id":"b2","_key":"v-9","_type":["snyk_vulnerability"],"_class":["Vulnerability"],"_accountId":"j1acct","_version":4,"_deleted":false,"_createdOn":1553366320704,"_beginOn":1759510655079,"displayName":"lodash prototype pollution"},"properties":{"severity":"medium","blocking":false,"open":true,"production":true,"public":false,"category":"application"}}"#,
        "\n",
        r#"{"id":"c3","entity":{"_id":"c3","_key":"alert-3","_type":"jupiterone_alert","_class":["Alert"],"_accountId":"j1acct","_version":2,"_deleted":true,"_createdOn":1553366320704,"_beginOn":1759510655079,"_endOn":1759510699000,"displayName":"Open S3 bucket"},"properties":{"name":"Open S3 bucket"}}"#,
        "\n",
    );
    let run = transform_run(&["j1-cdc"], input);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = docs(&run.stdout);
    let ops: Vec<&str> = out
        .iter()
        .map(|d| d["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["c", "u", "d"]);
    assert_eq!(
        out[0]["labels"],
        serde_json::json!(["Entity", "Finding", "aws_inspector_finding"])
    );
    assert_eq!(out[0]["properties"]["_createdOn"], 1762167337188u64);
    assert_eq!(out[0]["properties"]["tag.Production"], true);
    assert_eq!(
        out[1]["labels"],
        serde_json::json!(["Entity", "Vulnerability", "snyk_vulnerability"])
    );
    assert_eq!(out[2]["properties"]["_deleted"], true);
}

#[test]
fn ecs_jupiterone_maps_alerts_findings_and_vulnerabilities() {
    // queryV1 result elements shaped like Elastic's pipeline test data
    // (ISO dates, string `_type`) and the Node client's (epoch ms dates).
    let input = concat!(
        r#"{"id":"3a4e5b6c-0001","entity":{"_id":"3a4e5b6c-0001","_key":"arn:aws:inspector2:finding/1","_type":"aws_inspector_finding","_class":["Finding"],"_accountId":"j1acct","_createdOn":"2025-11-03T10:55:37.188Z","_beginOn":"2025-11-03T10:55:37.188Z","_version":3,"_deleted":false,"_source":"integration-managed","_integrationType":"aws","_integrationClass":["CSP"],"displayName":"Port 22 open to the internet"},"properties":{"description":"SSH reachable from 0.0.0.0/0","webLink":"https://console.aws.amazon.com/inspector/v2/home#/findings/1","level":"HIGH","severity":"high","numericSeverity":"8","open":"true","category":"network","deviceHostname":"bastion-1","deviceLocalIp":"10.0.1.7","deviceExternalIp":"203.0.113.40","tactic":"Initial Access","tacticId":"TA0001","technique":"Exploit Public-Facing Application","techniqueId":"T1190","tag.AccountName":"prod","tag.Production":"true"}}"#,
        "\n",
        r#"{"id":"9f00-0002","entity":{"_id":"9f00-0002","_key":"snyk:vuln:1","_type":"snyk_vulnerability","_class":["Vulnerability"],"_accountId":"j1acct","_createdOn":1553366320704,"_beginOn":1759510655079,"_version":1,"_deleted":false,"displayName":"Prototype pollution in lodash"},"properties":{"description":"lodash before 4.17.19","cveId":"CVE-2020-8203","score":7.4,"severity":"High","category":"application","open":true,"blocking":false,"production":true,"public":false}}"#,
        "\n",
        r#"{"id":"77aa-0003","entity":{"_id":"77aa-0003","_key":"j1-alert-3","_type":"jupiterone_alert","_class":["Alert"],"_accountId":"j1acct","_createdOn":"2025-10-01T08:00:00Z","_beginOn":"2025-10-01T08:00:00Z","_endOn":"2025-10-02T08:00:00Z","_version":2,"_deleted":true,"displayName":"Unencrypted S3 bucket"},"properties":{"description":"Bucket logs-raw is not encrypted","level":"Medium","userName":"alice","approvers":["bob","carol"]}}"#,
        "\n",
    );
    let run = transform_run(
        &["ecs-jupiterone", "--config", "preserve_original_event=true"],
        input,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = docs(&run.stdout);
    assert_eq!(out.len(), 3);
    for (doc, line) in out.iter().zip(input.lines()) {
        assert_eq!(doc["ecs"]["version"], "9.2.0");
        assert_eq!(doc["event"]["kind"], "alert", "{doc}");
        assert_eq!(doc["event"]["original"], line);
        assert!(doc.get("error").is_none(), "{doc}");
        assert_eq!(doc["tags"], serde_json::json!(["preserve_original_event"]));
    }
    let finding = &out[0];
    assert_eq!(finding["url"]["domain"], "console.aws.amazon.com");
    assert_eq!(finding["url"]["fragment"], "/findings/1");
    assert_eq!(
        finding["threat"]["technique"]["id"],
        serde_json::json!(["T1190"])
    );
    assert_eq!(
        finding["related"]["ip"],
        serde_json::json!(["10.0.1.7", "203.0.113.40"])
    );
    assert_eq!(
        finding["jupiter_one"]["asset"]["properties"]["tag"]["production"],
        true
    );
    let vuln = &out[1];
    assert_eq!(vuln["vulnerability"]["id"], "CVE-2020-8203");
    assert_eq!(
        vuln["event"]["created"], "2019-03-23T18:38:40.704Z",
        "epoch ms read (Sluice difference 1)"
    );
    let alert = &out[2];
    assert_eq!(alert["event"]["duration"], 86_400_000_000_000u64);
    assert_eq!(
        alert["related"]["user"],
        serde_json::json!(["alice", "bob", "carol"])
    );
    assert_eq!(alert["log"]["level"], "medium");
}
