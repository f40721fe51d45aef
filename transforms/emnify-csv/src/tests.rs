use super::*;
use sluice_sdk::testing::{Harness, strict_json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/emnify");

fn fixture(dir: &str, prefix: &str) -> String {
    let dir = format!("{FIXTURES}/{dir}");
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .unwrap_or_else(|| panic!("no fixture {prefix} in {dir}"));
    let text = std::fs::read_to_string(entry.path()).unwrap();
    let v: Value = sluice_sdk::serde_json::from_str(&strict_json(&text)).unwrap();
    v.to_string()
}

fn rows(config: &[(&str, &str)], input: &str) -> Vec<sluice_sdk::Output> {
    let mut h = Harness::<EmnifyCsv>::new(config).unwrap();
    h.run_outputs(input).unwrap()
}

fn row_map(o: &sluice_sdk::Output) -> Map<String, Value> {
    match sluice_sdk::serde_json::from_slice(&o.data).unwrap() {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[test]
fn usage_has_emnify_34_columns_in_order() {
    let out = rows(&[], &fixture("usage", "usage-01"));
    assert_eq!(out.len(), 1, "an array of one gives one row");
    assert_eq!(out[0].route.as_deref(), Some("emnify.usage"));
    let row = row_map(&out[0]);
    let names: Vec<&str> = row.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 34);
    assert_eq!(
        names.join(","),
        "id,event_start_timestamp,event_stop_timestamp,organisation_id,organisation_name,endpoint_id,sim_id,iccid,imsi,\
         operator_id,operator_name,country_id,operator_country_name,traffic_type_id,traffic_type_description,volume,\
         volume_tx,volume_rx,cost,currency_id,currency_code,currency_symbol,ratezone_tariff_id,ratezone_tariff_name,\
         ratezone_id,ratezone_name,endpoint_name,endpoint_ip_address,endpoint_tags,endpoint_imei,msisdn_msisdn,\
         sim_production_date,operator_mncs,country_mcc"
    );
    let s = |k: &str| {
        row[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} is {:?}", row[k]))
            .to_string()
    };
    assert_eq!(s("id"), "333333333333333");
    assert_eq!(s("event_start_timestamp"), "2022-04-26 11:53:43");
    assert_eq!(
        s("event_stop_timestamp"),
        "2024-02-15 14:56:15",
        "fraction dropped"
    );
    assert_eq!(s("cost"), "0.0018851200", "10 decimals");
    assert_eq!(s("volume"), "0.219933");
    assert_eq!(s("volume_tx"), "0.047085");
    assert_eq!(s("volume_rx"), "0.172848");
    assert_eq!(s("currency_symbol"), "€", "UTF-8 as is");
    assert_eq!(s("iccid"), "89883030000080139311");
    assert_eq!(s("msisdn_msisdn"), "423663920123456");
    assert_eq!(
        s("operator_mncs"),
        "07",
        "a string stays a string (leading zero kept)"
    );
    assert_eq!(s("country_mcc"), "262");
    assert_eq!(s("country_id"), "74");
    assert_eq!(s("operator_country_name"), "Germany");
    assert_eq!(s("ratezone_tariff_name"), "Internal Test Data Plan");
    assert_eq!(s("ratezone_name"), "Area 2");
    assert_eq!(s("traffic_type_description"), "Data");
    assert_eq!(s("sim_production_date"), "2020-09-09 06:42:59");
    assert!(
        !row.contains_key("imsi_id") && !row.contains_key("session_id"),
        "not emnify columns"
    );
}

#[test]
fn sms_usage_and_missing_fields_are_null() {
    let out = rows(&[], &fixture("usage", "usage-02"));
    let row = row_map(&out[0]);
    assert_eq!(row["traffic_type_description"], "SMS");
    let out = rows(&[], r#"{"id":1,"traffic_type":{"id":5},"cost":null}"#);
    let row = row_map(&out[0]);
    assert_eq!(row.len(), 34);
    assert_eq!(row["cost"], Value::Null);
    assert_eq!(row["endpoint_name"], Value::Null);
    assert_eq!(row["traffic_type_id"], "5");
}

#[test]
fn events_own_fields_then_the_16_upgrade_columns() {
    let out = rows(&[], &fixture("events", "event-03"));
    assert_eq!(out[0].route.as_deref(), Some("emnify.events"));
    let row = row_map(&out[0]);
    let names: Vec<&str> = row.keys().map(String::as_str).collect();
    assert_eq!(
        names[names.len() - 16..].join(","),
        "endpoint_id,endpoint_name,endpoint_imei,endpoint_ip_address,endpoint_tags,event_source_id,event_source_name,\
         sim_id,sim_iccid,msisdn_msisdn,sim_production_date,imsi_id,imsi_imsi,user_id,user_username,user_name"
    );
    assert_eq!(names[0], "id");
    assert_eq!(row["timestamp"], "2017-10-26 07:28:00", "+0000 offset");
    assert_eq!(row["alert"], "false");
    assert_eq!(row["event_type_description"], "Update location");
    assert_eq!(row["event_source_name"], "Network");
    assert_eq!(row["imsi_imsi"], "401960166508658");
    assert_eq!(row["endpoint_tags"], Value::Null);
    assert_eq!(row["msisdn_msisdn"], Value::Null, "absent in the event");
    let detail: Value = sluice_sdk::serde_json::from_str(row["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        detail["country"]["mcc"], "262",
        "detail kept as compact JSON"
    );
}

#[test]
fn event_timestamp_forms_and_null_objects() {
    let row = row_map(&rows(&[], &fixture("events", "event-29"))[0]);
    assert_eq!(
        row["timestamp"], "2021-10-06 10:42:58",
        "zone-less form is UTC"
    );
    let row = row_map(&rows(&[], &fixture("events", "event-48"))[0]);
    assert_eq!(row["timestamp"], "2021-10-27 15:17:23");
    assert_eq!(row["endpoint_id"], Value::Null, "endpoint: null");
    assert_eq!(row["user_username"], "jane.doe@example.com");
    assert!(!row.contains_key("keen_id"));
    assert_eq!(
        parse_emnify_time("2021-10-27T11:59:29.000Z")
            .unwrap()
            .to_sql_datetime(),
        "2021-10-27 11:59:29"
    );
    assert_eq!(
        parse_emnify_time("2021-10-27T13:59:29+0200")
            .unwrap()
            .to_sql_datetime(),
        "2021-10-27 11:59:29"
    );
    assert_eq!(
        parse_emnify_time("2021-10-27T13:59:29-02:00")
            .unwrap()
            .to_sql_datetime(),
        "2021-10-27 15:59:29"
    );
    assert!(parse_emnify_time("yesterday").is_err());
}

#[test]
fn every_docs_example_flattens() {
    let mut n = 0;
    for dir in ["usage", "events"] {
        for e in std::fs::read_dir(format!("{FIXTURES}/{dir}"))
            .unwrap()
            .flatten()
        {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let input: Value = sluice_sdk::serde_json::from_str(&strict_json(&text))
                .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
            let out = rows(&[], &input.to_string());
            assert_eq!(out.len(), 1, "{}", e.path().display());
            let expected = if dir == "usage" {
                34
            } else {
                EVENT_COLUMNS.len()
            };
            assert_eq!(row_map(&out[0]).len(), expected, "{}", e.path().display());
            n += 1;
        }
    }
    assert_eq!(n, 53);
}

#[test]
fn extra_columns_append_after_the_fixed_ones() {
    let out = rows(
        &[("extra_columns", "append")],
        &fixture("usage", "usage-01"),
    );
    let row = row_map(&out[0]);
    let names: Vec<&str> = row.keys().map(String::as_str).collect();
    assert_eq!(
        &names[..34],
        &USAGE_COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>()[..],
        "fixed columns first, unmoved"
    );
    assert_eq!(&names[34..], ["endpoint_balance", "imsi_id", "session_id"]);
    assert_eq!(row["imsi_id"], "9624042");
    assert_eq!(row["endpoint_balance"], Value::Null);
}

#[test]
fn stream_config_and_bad_input() {
    let mut h = Harness::<EmnifyCsv>::new(&[]).unwrap();
    let e = h.run_outputs(r#"{"id":1}"#).unwrap_err();
    assert!(
        e.message.contains("set stream=usage or stream=events"),
        "{}",
        e.message
    );
    assert!(
        h.run_outputs("[1]")
            .unwrap_err()
            .message
            .contains("array element 0 is a number, not an object")
    );
    assert!(h.run_outputs("\"x\"").is_err());
    let e = h
        .run_outputs(r#"{"event_type":{"id":1},"timestamp":"noon"}"#)
        .unwrap_err();
    assert!(
        e.message.contains("field `timestamp` (column `timestamp`)"),
        "{}",
        e.message
    );
    let e = h
        .run_outputs(r#"{"traffic_type":{"id":5},"cost":"cheap"}"#)
        .unwrap_err();
    assert!(e.message.contains("`cost`"), "{}", e.message);
    let out = rows(&[("stream", "events")], r#"{"id":7}"#);
    assert_eq!(out[0].route.as_deref(), Some("emnify.events"));
    assert!(Harness::<EmnifyCsv>::new(&[("stream", "cdr")]).is_err());
    assert!(Harness::<EmnifyCsv>::new(&[("colour", "red")]).is_err());
}
