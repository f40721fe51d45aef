use super::*;
use sluice_sdk::testing::Harness;

fn map_with(config: &[(&str, &str)], input: &str) -> (Value, String) {
    let mut h = Harness::<EcsJupiterone>::new(config).unwrap();
    let out = h.run_outputs(input).unwrap();
    assert_eq!(out.len(), 1);
    (
        sluice_sdk::serde_json::from_slice(&out[0].data).unwrap(),
        out[0].route.clone().unwrap(),
    )
}

fn map(input: &Value) -> Value {
    map_with(&[], &input.to_string()).0
}

fn without_original(mut doc: Value) -> Value {
    json::remove(&mut doc, "event.original");
    doc
}

const WORKED: &str = r#"{"id":"u-1","entity":{"_class":["Finding"],"_createdOn":"2025-01-02T03:04:05Z","_beginOn":"2025-01-02T04:04:05.5+01:00","_endOn":"2025-01-02T03:05:05.5Z","_version":2,"_deleted":false,"displayName":"Odd login"},"properties":{"description":"Suspicious login","webLink":"https://console.example.com/f/1?tab=a%20b","level":"HIGH","deviceExternalIp":"192.0.2.7","userName":"bob","tactic":"Initial Access","tacticId":"TA0001","tag.AccountName":"dev","numericSeverity":"5","notes":""}}"#;

#[test]
fn the_reference_worked_example() {
    let (doc, route) = map_with(&[], WORKED);
    assert_eq!(route, "jupiterone.finding");
    assert_eq!(doc["event"]["original"], WORKED, "D4: the input verbatim");
    let expected = json!({"ecs":{"version":"9.2.0"},
     "event":{"id":"u-1","kind":"alert","created":"2025-01-02T03:04:05.000Z","start":"2025-01-02T03:04:05.500Z",
              "end":"2025-01-02T03:05:05.500Z","duration":60000000000u64},
     "message":"Suspicious login",
     "url":{"original":"https://console.example.com/f/1?tab=a%20b","scheme":"https","domain":"console.example.com",
            "path":"/f/1","query":"tab=a b"},
     "log":{"level":"high"},
     "related":{"ip":["192.0.2.7"],"user":["bob"]},
     "user":{"name":"bob"},
     "threat":{"indicator":{"ip":"192.0.2.7"},"tactic":{"id":["TA0001"],"name":["Initial Access"]}},
     "jupiter_one":{"asset":{
       "entity":{"_class":["Finding"],"_deleted":false,"_version":"2","display_name":"Odd login"},
       "properties":{"description":"Suspicious login","device_external_ip":"192.0.2.7","numeric_severity":5,
                     "tactic":"Initial Access","tactic_id":"TA0001","tag":{"account_name":"dev"}}}}});
    assert_eq!(without_original(doc), expected);
}

#[test]
fn preserve_duplicate_custom_fields_keeps_d14_fields_and_tags() {
    let (doc, _) = map_with(
        &[
            ("preserve_duplicate_custom_fields", "true"),
            ("preserve_original_event", "true"),
        ],
        WORKED,
    );
    assert_eq!(
        doc["tags"],
        json!([
            "preserve_original_event",
            "preserve_duplicate_custom_fields"
        ])
    );
    let a = &doc["jupiter_one"]["asset"];
    assert_eq!(a["id"], "u-1");
    assert_eq!(
        a["entity"]["_created_on"], "2025-01-02T03:04:05.000Z",
        "kept, normalised"
    );
    assert_eq!(a["properties"]["level"], "HIGH");
    assert_eq!(a["properties"]["user_name"], "bob");
    assert_eq!(
        a["properties"]["web_link"],
        "https://console.example.com/f/1?tab=a%20b"
    );
    assert!(doc.get("error").is_none());
}

#[test]
fn vulnerability_fields() {
    let doc = map(
        &json!({"id": "v-1", "entity": {"_class": ["Vulnerability"], "_type": "snyk_vulnerability"},
        "properties": {"description": "lodash proto pollution", "cveId": "CVE-2020-8203", "score": "7.4",
                       "severity": "High", "category": ["application", "dependency"], "open": "TRUE",
                       "production": "false", "public": false, "blocking": true}}),
    );
    assert_eq!(doc["event"]["kind"], "alert");
    assert_eq!(doc["event"]["category"], json!(["vulnerability"]));
    assert_eq!(doc["event"]["type"], json!(["info"]));
    let v = &doc["vulnerability"];
    assert_eq!(v["id"], "CVE-2020-8203");
    assert_eq!(v["score"]["base"], 7.4);
    assert_eq!(v["severity"], "High", "case kept");
    assert_eq!(v["description"], "lodash proto pollution");
    assert_eq!(v["enumeration"], "CVE");
    assert_eq!(
        v["category"],
        json!(["application", "dependency"]),
        "difference 4: elements, not \"[a, b]\""
    );
    let p = &doc["jupiter_one"]["asset"]["properties"];
    assert_eq!(
        (p["open"].clone(), p["production"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(p["cve_id"], "CVE-2020-8203", "not removed by D14");
    assert!(doc.get("threat").is_none(), "no Finding fields");
}

#[test]
fn alert_has_no_category_and_a_finding_with_cve_gets_only_enumeration() {
    let doc = map(
        &json!({"id": "a", "entity": {"_class": ["Alert"]}, "properties": {"name": "x", "level": "Medium"}}),
    );
    assert_eq!(doc["event"]["kind"], "alert");
    assert!(doc["event"].get("category").is_none());
    assert_eq!(doc["log"]["level"], "medium");
    let doc =
        map(&json!({"id": "f", "entity": {"_class": "Finding"}, "properties": {"cveId": ""}}));
    assert_eq!(
        doc["vulnerability"],
        json!({"enumeration": "CVE"}),
        "R13 even for \"\""
    );
}

#[test]
fn class_string_is_a_substring_test() {
    let (_, route) = map_with(
        &[],
        r#"{"id":"x","entity":{"_class":"NotAVulnerability"},"properties":{}}"#,
    );
    assert_eq!(route, "jupiterone.vulnerability");
    let (doc, route) = map_with(
        &[],
        r#"{"id":"x","entity":{"_class":["Finding","Vulnerability"]},"properties":{"filename":"a.exe","cveId":"CVE-1"}}"#,
    );
    assert_eq!(route, "jupiterone.vulnerability", "vulnerability first");
    assert_eq!(doc["threat"]["indicator"]["file"]["name"], "a.exe");
    assert_eq!(doc["vulnerability"]["id"], "CVE-1");
}

#[test]
fn related_order_and_approvers() {
    let doc = map(
        &json!({"id": "f", "entity": {"_class": ["Finding"]}, "properties": {
        "reporter": "rita", "deviceLocalIp": "10.0.0.5", "userId": "u1", "deviceExternalIp": "198.51.100.4",
        "deviceHostname": "web-1", "userName": "bob", "approvers": ["ann", null, "rita"],
        "deviceMacAddress": "AA:bb:CC:00:11:22", "technique": "Phishing", "techniqueId": "T1566",
        "deviceId": "d-9", "deviceOsVersion": "14.2", "devicePlatformName": "macOS"}}),
    );
    assert_eq!(
        doc["related"]["user"],
        json!(["rita", "u1", "bob", "ann"]),
        "no duplicates; the null approver renders \"\" and is dropped"
    );
    assert_eq!(doc["related"]["ip"], json!(["10.0.0.5", "198.51.100.4"]));
    assert_eq!(doc["related"]["hosts"], json!(["web-1"]));
    assert_eq!(
        doc["host"],
        json!({"id": "d-9", "os": {"version": "14.2", "platform": "macOS"}, "hostname": "web-1", "mac": ["AA:bb:CC:00:11:22"]})
    );
    assert_eq!(doc["user"], json!({"id": "u1", "name": "bob"}));
    assert_eq!(
        doc["threat"]["technique"],
        json!({"name": ["Phishing"], "id": ["T1566"]})
    );
    let p = &doc["jupiter_one"]["asset"]["properties"];
    assert!(
        p.get("device_id").is_none() && p.get("device_hostname").is_none(),
        "D14"
    );
    assert_eq!(p["device_local_ip"], "10.0.0.5", "not on the D14 list");
}

#[test]
fn f1_failures_remove_the_field_and_go_on() {
    let doc = map(
        &json!({"id": "x", "entity": {"_class": ["Alert"], "_createdOn": "02/01/2025", "_deleted": "yes"},
        "properties": {"numericSeverity": "7.0", "deviceLocalIp": "010.1.1.1", "webLink": "not a url", "name": "kept"}}),
    );
    assert_eq!(doc["event"]["kind"], "pipeline_error");
    assert_eq!(doc["tags"], json!(["preserve_original_event"]));
    let errors: Vec<&str> = doc["error"]["message"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert!(errors[0].starts_with(
        "Processor date with tag date_jupiter_one_asset_entity__created_on_into_jupiter_one_asset_entity__created_on in pipeline logs-jupiter_one.asset failed with message:"
    ));
    assert!(
        errors[1].contains("convert_jupiter_one_asset_entity__deleted_to_boolean")
            && errors[1].ends_with("[yes] is not a boolean value, cannot convert to boolean")
    );
    assert!(errors[2].starts_with("Processor uri_parts with tag uri_parts_url_original"));
    assert!(
        errors[3]
            .contains("pipeline_risks_and_alerts failed with message: For input string: \"7.0\"")
    );
    assert!(errors[4].ends_with("'010.1.1.1' is not an IP string literal."));
    let a = &doc["jupiter_one"]["asset"];
    assert!(a["entity"].get("_created_on").is_none() && a["entity"].get("_deleted").is_none());
    assert!(doc.get("url").is_none() && doc["event"].get("created").is_none());
    assert!(
        doc.get("related").is_none(),
        "the bad IP was removed before R9"
    );
    assert_eq!(a["properties"]["name"], "kept");
}

#[test]
fn f2_stops_without_cleanup() {
    let doc = map(
        &json!({"id": "x", "entity": {"displayName": "no class", "notes": ""}, "properties": {"webLink": "https://h.example.com"}}),
    );
    assert_eq!(doc["event"]["kind"], "pipeline_error");
    assert!(
        doc["error"]["message"][0]
            .as_str()
            .unwrap()
            .contains("cannot access method/field [contains] from a null def reference")
    );
    assert_eq!(doc["jupiter_one"]["asset"]["id"], "x", "D14 did not run");
    assert_eq!(
        doc["jupiter_one"]["asset"]["entity"]["notes"], "",
        "D15 did not run"
    );
    assert_eq!(doc["url"]["path"], "", "built before the stop, left as is");

    let (doc, route) = map_with(
        &[],
        r#"{"id":"x","entity":{"_class":["Alert"],"a":1,"a":2}}"#,
    );
    assert_eq!(route, "jupiterone.unknown");
    assert!(
        doc["error"]["message"][0]
            .as_str()
            .unwrap()
            .starts_with("Processor json with tag json_event_original_into_json")
    );
    assert!(doc.get("jupiter_one").is_none());
    assert_eq!(doc["tags"], json!(["preserve_original_event"]));
    let (doc, _) = map_with(&[], "not json");
    assert_eq!(doc["event"]["original"], "not json");
    assert_eq!(doc["event"]["kind"], "pipeline_error");
}

#[test]
fn f3_stops_the_sub_pipeline_but_cleans_up() {
    // R3: `tag` is a string and `tag.x` needs it to be an object.
    let doc = map(
        &json!({"id": "x", "entity": {"_class": ["Alert"]}, "properties": {"tag": "flat", "tag.X": 1, "level": "HIGH", "userName": "bob"}}),
    );
    assert_eq!(doc["event"]["kind"], "pipeline_error");
    assert!(
        doc["error"]["message"][0]
            .as_str()
            .unwrap()
            .contains("in pipeline logs-jupiter_one.asset-pipeline_risks_and_alerts")
    );
    assert!(doc.get("log").is_none(), "R10 did not run");
    assert!(doc["jupiter_one"]["asset"].get("id").is_none(), "D14 ran");
    assert!(
        doc["jupiter_one"]["asset"]["properties"]
            .get("user_name")
            .is_none()
    );
    // R10: a numeric level.
    let doc = map(
        &json!({"id": "x", "entity": {"_class": ["Alert"]}, "properties": {"level": 3, "userName": "bob"}}),
    );
    assert_eq!(doc["log"]["level"], 3, "keeps the raw value");
    assert!(doc.get("user").is_none(), "R11 did not run");
    assert_eq!(doc["event"]["kind"], "pipeline_error");
}

#[test]
fn dot_expansion_merges_into_lists() {
    let doc = map(
        &json!({"id": "x", "entity": {"_class": ["Alert"]}, "properties": {
        "tag": {"a": 1}, "tag.A": 2, "tag.Production": "TRUE", "tag.List": ["p", "q"], ".hidden": 1}}),
    );
    let p = &doc["jupiter_one"]["asset"]["properties"];
    assert_eq!(p["tag"]["a"], json!([1, 2]));
    assert_eq!(p["tag"]["production"], true, "R7 after R3");
    assert_eq!(p["tag"]["list"], json!(["p", "q"]));
    assert_eq!(p[".hidden"], 1, "a key starting with `.` is not expanded");
}

#[test]
fn epoch_millis_dates_are_sluices_difference() {
    let doc = map(
        &json!({"id": "x", "entity": {"_class": ["Alert"], "_createdOn": 1748779200000u64, "_beginOn": 1748779200000u64, "_endOn": 1748779201500u64}, "properties": {"lastSeenOn": 1748779200000u64}}),
    );
    assert_eq!(doc["event"]["created"], "2025-06-01T12:00:00.000Z");
    assert_eq!(doc["event"]["duration"], 1_500_000_000u64);
    assert!(doc.get("error").is_none());
    assert_eq!(
        doc["jupiter_one"]["asset"]["properties"]["last_seen_on"], 1748779200000u64,
        "other dates untouched"
    );
}

#[test]
fn config_is_checked() {
    assert!(Harness::<EcsJupiterone>::new(&[("geo_from_event", "true")]).is_err());
    assert!(Harness::<EcsJupiterone>::new(&[("preserve_original_event", "maybe")]).is_err());
}
