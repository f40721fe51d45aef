use super::*;
use sluice_sdk::testing::Harness;

/// A `queryV1` result element shaped like the J1DS example's entity.
fn slack_user(version: i64, deleted: bool) -> Value {
    json!({
        "id": "3e6fa6e5-158d-5f03-8839-a964652b57dc",
        "entity": {
            "_id": "3e6fa6e5-158d-5f03-8839-a964652b57dc",
            "_key": "slack-user:team_T0129XXXXXX:user_U09B1XXXXXX",
            "_type": "slack_user",
            "_class": ["User"],
            "_accountId": "j1dev",
            "_version": version,
            "_deleted": deleted,
            "_source": "integration-managed",
            "_scope": "eb4f2fac-e9a1-474d-8859-5f0e5ef90b16",
            "_beginOn": "2025-10-03T16:57:35.079Z",
            "_createdOn": 1755879780646u64,
            "_integrationType": "slack",
            "_integrationName": "Slack Example",
            "displayName": "Some User"
        },
        "properties": {
            "id": "U09B1XXXXXX",
            "username": "some.user",
            "email": "some.user@example.com",
            "tag.CriticalAsset": true,
            "updatedOn": 1759495751,
            "active": true,
            "_version": 99
        }
    })
}

fn run(input: &Value) -> (Value, Option<String>) {
    let mut h = Harness::<J1Cdc>::new(&[]).unwrap();
    let out = h.run_outputs(&input.to_string()).unwrap();
    assert_eq!(out.len(), 1);
    (
        sluice_sdk::serde_json::from_slice(&out[0].data).unwrap(),
        out[0].route.clone(),
    )
}

#[test]
fn shape_labels_and_route_as_j1ds_writes_them() {
    let (doc, route) = run(&slack_user(3, false));
    assert_eq!(route.as_deref(), Some("j1ds.j1dev"));
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["operation", "eventType", "properties", "labels"]);
    assert_eq!(doc["operation"], "u");
    assert_eq!(doc["eventType"], "entity");
    assert_eq!(doc["labels"], json!(["Entity", "User", "slack_user"]));
    let p = &doc["properties"];
    assert_eq!(p["_key"], "slack-user:team_T0129XXXXXX:user_U09B1XXXXXX");
    assert_eq!(
        p["tag.CriticalAsset"], true,
        "tag keys stay flat and dotted"
    );
    assert_eq!(p["displayName"], "Some User");
    assert_eq!(p["username"], "some.user");
    assert_eq!(p["updatedOn"], 1759495751, "source properties untouched");
    assert_eq!(
        p["_version"], 3,
        "entity metadata wins over a property of the same name"
    );
    assert_eq!(p["_beginOn"], 1759510655079u64, "ISO converted to epoch ms");
    assert_eq!(p["_createdOn"], 1755879780646u64, "epoch ms kept");
    assert!(p.get("entity").is_none() && doc.get("id").is_none());
}

#[test]
fn operation_from_version_and_deleted() {
    assert_eq!(run(&slack_user(1, false)).0["operation"], "c");
    assert_eq!(run(&slack_user(2, false)).0["operation"], "u");
    assert_eq!(
        run(&slack_user(1, true)).0["operation"],
        "d",
        "deleted wins over version 1"
    );
    assert_eq!(run(&slack_user(7, true)).0["operation"], "d");
    let mut v = slack_user(1, false);
    v["entity"]["_version"] = json!("1");
    assert_eq!(run(&v).0["operation"], "c", "a string version is read too");
}

#[test]
fn type_as_array_and_several_classes() {
    let mut v = slack_user(2, false);
    v["entity"]["_type"] = json!(["aws_inspector_finding"]);
    v["entity"]["_class"] = json!(["Finding", "Vulnerability"]);
    assert_eq!(
        run(&v).0["labels"],
        json!([
            "Entity",
            "Finding",
            "Vulnerability",
            "aws_inspector_finding"
        ])
    );
}

#[test]
fn account_from_config_and_bad_inputs() {
    let mut v = slack_user(2, false);
    v["entity"].as_object_mut().unwrap().remove("_accountId");
    let mut h = Harness::<J1Cdc>::new(&[]).unwrap();
    assert!(
        h.run_outputs(&v.to_string())
            .unwrap_err()
            .message
            .contains("account_id")
    );
    let mut h = Harness::<J1Cdc>::new(&[("account_id", "acme")]).unwrap();
    assert_eq!(
        h.run_outputs(&v.to_string()).unwrap()[0].route.as_deref(),
        Some("j1ds.acme")
    );
    assert!(
        h.run_outputs(r#"{"id":"x"}"#)
            .unwrap_err()
            .message
            .contains("`entity` object")
    );
    assert!(
        h.run_outputs(r#"{"entity":{"_type":"t"}}"#)
            .unwrap_err()
            .message
            .contains("`_class`")
    );
    assert!(
        h.run_outputs(r#"{"entity":{"_class":["A"],"_type":"t","_beginOn":"soon"}}"#)
            .is_err()
    );
    assert!(h.run_outputs("[]").is_err());
}
