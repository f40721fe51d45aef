//! The S3 sink against a real S3 server over HTTPS: Ceph radosgw (Debian's
//! packages, one-node memstore cluster, test CA, SSE-KMS `testing`
//! backend), with nginx in front answering a wrong expected bucket owner
//! with 403 as AWS does. `scripts/s3-test-server.sh` starts them; the tests
//! start it themselves when it is not running.

use crate::faultproxy::FaultProxy;
use crate::gw::{Gateway, config, metric_value};
use crate::s3env::{RGW, S3Env, admin_client, new_bucket, rgw, s3_env, shared};
use hyper::StatusCode;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// What most tests start from: the shared radosgw (held for reading, so the
/// outage test waits for them), its settings, an admin client, a new bucket
/// and a state folder.
pub(crate) struct Lake {
    pub(crate) _rgw: tokio::sync::RwLockReadGuard<'static, ()>,
    pub(crate) env: &'static S3Env,
    pub(crate) admin: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn lake() -> Lake {
    let _rgw = shared().await;
    let env = s3_env();
    let admin = admin_client(env).await;
    let bucket = new_bucket(&admin).await;
    Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// Fails unless every multipart upload in `bucket` was completed or
/// aborted.
async fn assert_no_upload_open(client: &aws_sdk_s3::Client, bucket: &str) {
    let uploads = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "no upload left open");
}

/// Every object: key → (bytes, sse, kms key id).
pub(crate) async fn objects(
    client: &aws_sdk_s3::Client,
    bucket: &str,
) -> BTreeMap<String, (Vec<u8>, Option<String>, Option<String>)> {
    let mut out = BTreeMap::new();
    let list = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    for o in list.contents() {
        let key = o.key().unwrap().to_string();
        let got = client
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let sse = got.server_side_encryption().map(|s| s.as_str().to_string());
        let kms = got.ssekms_key_id().map(str::to_string);
        let bytes = got.body.collect().await.unwrap().into_bytes().to_vec();
        out.insert(key, (bytes, sse, kms));
    }
    out
}

pub(crate) fn lines_of(key: &str, bytes: &[u8]) -> Vec<String> {
    let text = if key.ends_with(".gz") {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_string(&mut s)
            .unwrap();
        s
    } else {
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    text.lines().map(str::to_string).collect()
}

/// Data objects (not the connection test) and their lines.
async fn wait_lines(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    n: usize,
) -> BTreeMap<String, Vec<String>> {
    for _ in 0..300 {
        let objs = objects(client, bucket).await;
        let data: BTreeMap<String, Vec<String>> = objs
            .iter()
            .filter(|(k, _)| !k.ends_with(".connection-test"))
            .map(|(k, (b, _, _))| (k.clone(), lines_of(k, b)))
            .collect();
        if data.values().map(Vec::len).sum::<usize>() >= n {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "fewer than {n} records reached the bucket: {:?}",
        objects(client, bucket).await.keys().collect::<Vec<_>>()
    );
}

pub(crate) fn s3_sink(env: &S3Env, bucket: &str, extra: &str) -> String {
    format!(
        r#"
[sinks.lake]
type = "s3"
bucket = "{bucket}"
region = "us-east-1"
endpoint = "{endpoint}"
ca_file = "{ca}"
access_key_id = "{ak}"
secret_access_key = "${{env:SLUICE_TEST_S3_SECRET}}"
checksum = "when_required"
rotate = {{ max_age_secs = 0.3 }}
{extra}
"#,
        endpoint = env.get("SLUICE_TEST_S3_ENDPOINT"),
        ca = env.get("SLUICE_TEST_S3_CA"),
        ak = env.get("SLUICE_TEST_S3_ACCESS_KEY"),
    )
}

/// `sluice s3 test --config path` with `vars` as the only AWS settings of
/// its environment (none inherited, no IMDS lookups).
fn s3_test(path: &std::path::Path, vars: &[(&str, &str)]) -> crate::support::Run {
    let mut cmd = crate::support::sluice();
    cmd.args(["s3", "test", "--config"]).arg(path);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        cmd.env_remove(k);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(vars.iter().copied());
    crate::support::run_with(cmd, "", Duration::from_secs(60))
}

fn push_to(sink_cfg: &str, transforms: &str) -> String {
    config(&format!(
        r#"
[sources.s]
type = "push"
listener = "https"
auth = {{ type = "none" }}
max_body_bytes = 4194304

[pipelines.p]
source = "s"
sink = "lake"
{transforms}
{sink_cfg}"#
    ))
}

fn start(dir: &std::path::Path, cfg: &str) -> Gateway {
    // The secret comes from the environment, as it would in production.
    std::fs::write(dir.join("sluice.toml"), cfg).unwrap();
    Gateway::start_with_env(
        dir,
        &[(
            "SLUICE_TEST_S3_SECRET",
            s3_env().get("SLUICE_TEST_S3_SECRET_KEY"),
        )],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_land_encrypted_with_kms_after_a_connection_test() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    let sink = s3_sink(
        env,
        &bucket,
        "prefix = \"lake/\"\nkey = \"{route}/%Y\"\ncompression = \"gzip\"\nsse = \"aws:kms\"\nkms_key_id = \"testkey-1\"\nbucket_key = true",
    );
    let gw = start(dir.path(), &push_to(&sink, ""));
    let body: String = (0..5).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    assert_eq!(
        gw.client().push("s", &[], body).await.status,
        StatusCode::OK
    );
    let data = wait_lines(&admin, &bucket, 5).await;
    let (key, lines) = data.iter().next().unwrap();
    assert!(
        key.starts_with("lake/s/") && key.ends_with(".jsonl.gz"),
        "{key}"
    );
    assert_eq!(lines.len(), 5);
    let all = objects(&admin, &bucket).await;
    assert!(
        all.contains_key("lake/.connection-test"),
        "{:?}",
        all.keys()
    );
    let (_, sse, kms) = &all[key];
    assert_eq!(
        (sse.as_deref(), kms.as_deref()),
        (Some("aws:kms"), Some("testkey-1")),
        "really encrypted with the KMS key"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = gw.metrics().await;
    assert_eq!(metric_value(&m, "sluice_spool_records{sink=\"lake\"}"), 0.0);
    assert!(metric_value(&m, "sluice_sink_objects_total{sink=\"lake\"}") >= 1.0);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_go_up_by_multipart() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    let sink = s3_sink(env, &bucket, "multipart_threshold_bytes = 6291456\npart_size_bytes = 5242880\nsse = \"aws:kms\"\nkms_key_id = \"testkey-1\"")
        .replace("max_age_secs = 0.3", "max_age_secs = 2.0");
    let gw = start(dir.path(), &push_to(&sink, ""));
    let pad = "x".repeat(1000);
    let mut conn = gw.client().connect().await;
    for chunk in 0..9 {
        let body: String = (0..1000)
            .map(|i| format!("{{\"n\":{},\"pad\":\"{pad}\"}}\n", chunk * 1000 + i))
            .collect();
        assert_eq!(conn.push("s", &[], body).await.status, StatusCode::OK);
    }
    let data = wait_lines(&admin, &bucket, 9000).await;
    assert_eq!(data.len(), 1, "one object: {:?}", data.keys());
    let (key, lines) = data.iter().next().unwrap();
    let mut seen: Vec<i64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..9000).collect::<Vec<_>>());
    let head = admin
        .head_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    assert!(head.content_length().unwrap() > 6 << 20);
    assert!(
        head.e_tag().unwrap().contains('-'),
        "a multipart ETag: {:?}",
        head.e_tag()
    );
    assert_no_upload_open(&admin, &bucket).await;
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_mismatch_stops_the_sink_and_keeps_the_data() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    let via_nginx = |owner: &str| {
        s3_sink(
            env,
            &bucket,
            &format!("expected_bucket_owner = \"{owner}\"\nprefix = \"o/\""),
        )
        .replace(
            env.get("SLUICE_TEST_S3_ENDPOINT"),
            env.get("SLUICE_TEST_S3_OWNER_ENDPOINT"),
        )
    };
    let gw = start(dir.path(), &push_to(&via_nginx("999999999999"), ""));
    assert_eq!(
        gw.client().push("s", &[], "[1,2,3]").await.status,
        StatusCode::OK,
        "data is still accepted and spooled"
    );
    for _ in 0..100 {
        if gw.stderr().contains("sink stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = gw.stderr();
    assert!(log.contains("sink stopped"), "{log}");
    assert!(
        log.contains("is owned by account 999999999999 (expected_bucket_owner)"),
        "says what to check: {log}"
    );
    let m = gw.metrics().await;
    assert_eq!(metric_value(&m, "sluice_sink_stopped{sink=\"lake\"}"), 1.0);
    assert_eq!(metric_value(&m, "sluice_spool_records{sink=\"lake\"}"), 3.0);
    let (status, body) = gw.admin_get("/readyz").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a stopped sink fails /readyz"
    );
    assert!(
        body.contains("\"lake\"") && body.contains("expected_bucket_owner"),
        "{body}"
    );
    gw.stop();
    assert!(objects(&admin, &bucket).await.is_empty());
    // The right owner: the spooled records go out; every request carried the header.
    let owner = env.get("SLUICE_TEST_S3_OWNER");
    let gw = start(dir.path(), &push_to(&via_nginx(owner), ""));
    let data = wait_lines(&admin, &bucket, 3).await;
    assert_eq!(data.values().flatten().collect::<Vec<_>>(), ["1", "2", "3"]);
    gw.stop();
    let log = std::fs::read_to_string(env.get("SLUICE_TEST_S3_OWNER_LOG")).unwrap();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("/{bucket}/")))
        .collect();
    assert!(
        ours.iter()
            .any(|l| l.contains("status=403") && l.contains("owner=\"999999999999\"")),
        "{ours:?}"
    );
    assert!(
        ours.iter()
            .filter(|l| l.contains("status=200"))
            .all(|l| l.contains(&format!("owner=\"{owner}\""))),
        "{ours:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radosgw_stopped_and_restarted_loses_nothing() {
    let env = s3_env();
    let _rgw = RGW.write().await;
    let admin = admin_client(env).await;
    let bucket = new_bucket(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    // A spool budget of six records for the lake, filled to the top
    // before pushes are refused.
    let budget = "\n[spool]\nhigh_water = 1.0\n\n[spool.sinks.lake]\nmax_records = 6\n";
    let gw = start(
        dir.path(),
        &(push_to(&s3_sink(env, &bucket, ""), "") + budget),
    );
    assert_eq!(
        gw.client().push("s", &[], "[1,2]").await.status,
        StatusCode::OK
    );
    wait_lines(&admin, &bucket, 2).await;
    rgw("rgw-stop");
    // While S3 is down, pushes are still acknowledged: the records are in
    // the spool, and the sink retries.
    assert_eq!(
        gw.client().push("s", &[], "[3,4,5]").await.status,
        StatusCode::OK
    );
    let mut retried = 0.0;
    for _ in 0..100 {
        retried = gw
            .metric_opt("sluice_sink_retries_total{sink=\"lake\"}")
            .await
            .unwrap_or(0.0);
        if retried >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(retried >= 2.0, "the sink kept retrying");
    let m = gw.metrics().await;
    assert_eq!(
        metric_value(&m, "sluice_spool_records{sink=\"lake\"}"),
        3.0,
        "{m}"
    );
    assert!(
        m.contains("sluice_sink_errors_total{kind=\"network\",sink=\"lake\"}"),
        "errors by S3 code: {m}"
    );
    // The outage goes on: the spool fills to its budget, then pushes are
    // refused with 503 and Retry-After, and nothing of them is kept.
    let c = gw.client();
    assert_eq!(c.push("s", &[], "[6,7,8]").await.status, StatusCode::OK);
    let refused = c.push("s", &[], "[9]").await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(
        gw.metric("sluice_source_rejected_requests_total{reason=\"backpressure\",source=\"s\"}")
            .await,
        1.0
    );
    rgw("rgw-start");
    let data = wait_lines(&admin, &bucket, 8).await;
    let mut all: Vec<&String> = data.values().flatten().collect();
    all.sort();
    assert_eq!(
        all,
        ["1", "2", "3", "4", "5", "6", "7", "8"],
        "nothing lost, nothing twice, nothing refused kept"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.metric("sluice_spool_records{sink=\"lake\"}").await, 0.0);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j1ds_and_emnify_layouts() {
    let _rgw = shared().await;
    let env = s3_env();
    let admin = admin_client(env).await;
    let (j1, em) = (new_bucket(&admin).await, new_bucket(&admin).await);
    let dir = tempfile::tempdir().unwrap();
    let j1_sink = s3_sink(env, &j1, "preset = \"j1ds\"");
    let em_sink =
        s3_sink(env, &em, "preset = \"emnify\"").replace("[sinks.lake]", "[sinks.emnify]");
    let cfg = config(&format!(
        r#"
[sources.j1]
type = "push"
listener = "https"
auth = {{ type = "none" }}

[sources.em]
type = "push"
listener = "https"
auth = {{ type = "none" }}

[pipelines.cdc]
source = "j1"
sink = "lake"
[[pipelines.cdc.transforms]]
use = "j1-cdc"

[pipelines.emnify]
source = "em"
sink = "emnify"
[[pipelines.emnify.transforms]]
use = "emnify-csv"
{j1_sink}
{em_sink}"#
    ));
    let gw = start(dir.path(), &cfg);
    let entity = r#"{"id":"e1","entity":{"_id":"e1","_key":"k","_type":"t","_class":["Finding"],"_accountId":"j1acct","_version":1,"_deleted":false,"_beginOn":1759510655079},"properties":{"x":1}}"#;
    assert_eq!(
        gw.client().push("j1", &[], entity).await.status,
        StatusCode::OK
    );
    let usage = r#"[{"id":1,"traffic_type":{"id":5,"description":"Data"},"start_timestamp":"2022-04-26T11:53:43Z","cost":0.5,"volume":{"total":1.0,"rx":0.5,"tx":0.5}}]"#;
    let event = r#"{"id":2,"event_type":{"id":1,"description":"Update location"},"timestamp":"2021-10-27T11:59:29.000Z","alert":false}"#;
    assert_eq!(
        gw.client().push("em", &[], usage).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.client().push("em", &[], event).await.status,
        StatusCode::OK
    );
    let j1_objects = wait_lines(&admin, &j1, 1).await;
    let key = j1_objects.keys().next().unwrap();
    let seg: Vec<&str> = key.split('/').collect();
    assert_eq!(
        &seg[..4],
        ["jupiterone", "graph", "cdc", "accountId=j1acct"],
        "{key}"
    );
    assert!(
        seg[4].starts_with("year=") && seg[5].starts_with("month=") && seg[6].starts_with("day="),
        "{key}"
    );
    assert!(
        seg[7].starts_with("time=")
            && seg[7].ends_with(".jsonl.gz")
            && seg[7].len() == "time=HHMMSS.jsonl.gz".len(),
        "{key}"
    );
    assert!(
        objects(&admin, &j1)
            .await
            .contains_key("jupiterone/.connection-test")
    );
    let em_objects = wait_lines(&admin, &em, 4).await;
    let names: Vec<&String> = em_objects.keys().collect();
    assert!(
        names.iter().any(|k| k.starts_with("cdr_")
            && k.ends_with(".csv")
            && k.len() == "cdr_YYYYMMDD_HHMMSS.csv".len()),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|k| k.starts_with("events_") && k.ends_with(".csv")),
        "{names:?}"
    );
    let cdr = em_objects
        .iter()
        .find(|(k, _)| k.starts_with("cdr_"))
        .unwrap()
        .1;
    assert!(
        cdr[0].starts_with("\"id\",\"event_start_timestamp\",\"event_stop_timestamp\""),
        "{cdr:?}"
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_test_command_reports_success_or_the_exact_error_and_http_is_refused() {
    let Lake {
        _rgw,
        env,
        admin: _,
        bucket,
        dir,
    } = lake().await;
    let path = dir.path().join("sluice.toml");
    let run = |cfg: &str| {
        std::fs::write(&path, cfg).unwrap();
        s3_test(
            &path,
            &[(
                "SLUICE_TEST_S3_SECRET",
                env.get("SLUICE_TEST_S3_SECRET_KEY"),
            )],
        )
    };
    let ok = run(&push_to(&s3_sink(env, &bucket, "prefix = \"t/\""), ""));
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout
            .contains(&format!("lake: ok, wrote s3://{bucket}/t/.connection-test")),
        "{}",
        ok.stdout
    );
    let bad = run(&push_to(
        &s3_sink(env, &bucket, "").replace(env.get("SLUICE_TEST_S3_ACCESS_KEY"), "NOSUCHACCESSKEY"),
        "",
    ));
    assert_eq!(bad.code, 2);
    assert!(
        bad.stdout
            .contains("lake: FAILED: S3 InvalidAccessKeyId (403)")
            && bad.stdout.contains("Check the access key id"),
        "{}",
        bad.stdout
    );
    let http = run(&push_to(
        &s3_sink(env, &bucket, "").replace("https://localhost", "http://localhost"),
        "",
    ));
    http.expect_failure(2, "`sinks.lake.endpoint`: must be https://");
    let mut cmd = crate::support::sluice();
    cmd.args([
        "policy",
        "--bucket",
        "lake",
        "--principal",
        "arn:aws:iam::111122223333:role/sluice",
        "--prefix",
        "jupiterone/",
    ]);
    let policy = crate::support::run_with(cmd, "", Duration::from_secs(30));
    let p: serde_json::Value = serde_json::from_str(&policy.stdout).unwrap();
    assert_eq!(
        p["Statement"][0]["Resource"],
        "arn:aws:s3:::lake/jupiterone/*"
    );
    assert_eq!(
        p["Statement"][1]["Condition"]["Bool"]["aws:SecureTransport"],
        "false"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_in_the_config_credentials_come_from_the_aws_chain() {
    let Lake {
        _rgw,
        env,
        admin: _,
        bucket,
        dir,
    } = lake().await;
    let path = dir.path().join("sluice.toml");
    let cfg: String = push_to(&s3_sink(env, &bucket, "prefix = \"chain/\""), "")
        .lines()
        .filter(|l| !l.starts_with("access_key_id") && !l.starts_with("secret_access_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, cfg).unwrap();
    let (ak, sk) = (
        env.get("SLUICE_TEST_S3_ACCESS_KEY"),
        env.get("SLUICE_TEST_S3_SECRET_KEY"),
    );
    let no_config = dir.path().join("aws-config");
    std::fs::write(&no_config, "").unwrap();
    let no_config = no_config.to_str().unwrap();
    let run =
        |vars: &[(&str, &str)]| s3_test(&path, &[&[("AWS_CONFIG_FILE", no_config)], vars].concat());
    let wrote = format!("lake: ok, wrote s3://{bucket}/chain/.connection-test");

    let from_env = run(&[("AWS_ACCESS_KEY_ID", ak), ("AWS_SECRET_ACCESS_KEY", sk)]);
    assert_eq!(from_env.code, 0, "{}{}", from_env.stdout, from_env.stderr);
    assert!(from_env.stdout.contains(&wrote), "{}", from_env.stdout);

    let profile = |secret: &str| {
        let file = dir.path().join(format!("credentials-{}", secret.len()));
        std::fs::write(
            &file,
            format!("[lake-writer]\naws_access_key_id = {ak}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap();
        file
    };
    let good = profile(sk);
    let from_profile = run(&[
        ("AWS_SHARED_CREDENTIALS_FILE", good.to_str().unwrap()),
        ("AWS_PROFILE", "lake-writer"),
    ]);
    assert_eq!(
        from_profile.code, 0,
        "{}{}",
        from_profile.stdout, from_profile.stderr
    );
    assert!(
        from_profile.stdout.contains(&wrote),
        "{}",
        from_profile.stdout
    );

    // The profile is really what signs: a wrong secret in it fails, and
    // the secret appears nowhere in the output.
    let bad = profile("wrong-secret-0123456789");
    let wrong = run(&[
        ("AWS_SHARED_CREDENTIALS_FILE", bad.to_str().unwrap()),
        ("AWS_PROFILE", "lake-writer"),
    ]);
    assert_eq!(wrong.code, 2, "{}{}", wrong.stdout, wrong.stderr);
    assert!(
        wrong
            .stdout
            .contains("lake: FAILED: S3 SignatureDoesNotMatch (403)"),
        "{}",
        wrong.stdout
    );
    assert!(!format!("{}{}", wrong.stdout, wrong.stderr).contains("wrong-secret-0123456789"));
}

/// A sink config through the fault proxy instead of straight to radosgw.
fn via_proxy(env: &S3Env, bucket: &str, proxy: &FaultProxy, extra: &str) -> String {
    s3_sink(env, bucket, extra)
        .replace(env.get("SLUICE_TEST_S3_ENDPOINT"), &proxy.endpoint())
        .replace(
            env.get("SLUICE_TEST_S3_CA"),
            &proxy.ca_bundle.display().to_string(),
        )
}

/// Data objects and their lines, once the bucket holds `n` lines, and
/// again a moment later (so a late duplicate would be seen).
pub(crate) async fn settled_lines(
    admin: &aws_sdk_s3::Client,
    bucket: &str,
    n: usize,
) -> BTreeMap<String, Vec<String>> {
    wait_lines(admin, bucket, n).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    objects(admin, bucket)
        .await
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".connection-test"))
        .map(|(k, (b, _, _))| {
            let lines = lines_of(&k, &b);
            (k, lines)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_put_answer_is_retried_under_the_same_key_and_lands_once() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    let proxy = FaultProxy::start(
        dir.path(),
        env.get("SLUICE_TEST_S3_ENDPOINT"),
        env.get("SLUICE_TEST_S3_CA"),
        Box::new(|m, target| {
            m == hyper::Method::PUT
                && !target.contains(".connection-test")
                && !target.contains("uploadId")
        }),
        Duration::from_secs(8),
    )
    .await;
    let gw = start(
        dir.path(),
        &push_to(&via_proxy(env, &bucket, &proxy, ""), ""),
    );
    let body: String = (0..300).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let r = gw.client().push("s", &[], body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Delivered only once an answer got through, after the refusals.
    crate::spool::wait_drained(&gw, "lake").await;
    let data = settled_lines(&admin, &bucket, 300).await;
    assert_eq!(data.len(), 1, "exactly one object: {:?}", data.keys());
    let mut got: Vec<i64> = data
        .values()
        .flatten()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["i"]
                .as_i64()
                .unwrap()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..300).collect::<Vec<_>>(), "every record once");
    // The dropped PUT had landed; the retry went to the same key.
    let key = data.keys().next().unwrap();
    let puts: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT" && !s.target.contains(".connection-test"))
        .collect();
    assert!(puts[0].dropped && puts[0].status == 200, "{puts:?}");
    assert!(puts.len() >= 2, "{puts:?}");
    assert!(
        puts.iter()
            .all(|p| p.target.starts_with(&format!("/{bucket}/{key}"))),
        "{puts:?}"
    );
    assert!(gw.metric("sluice_sink_retries_total{sink=\"lake\"}").await >= 1.0);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_complete_multipart_answer_is_retried_and_lands_once() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    let proxy = FaultProxy::start(
        dir.path(),
        env.get("SLUICE_TEST_S3_ENDPOINT"),
        env.get("SLUICE_TEST_S3_CA"),
        Box::new(|m, target| m == hyper::Method::POST && target.contains("uploadId=")),
        Duration::from_secs(8),
    )
    .await;
    let sink = via_proxy(
        env,
        &bucket,
        &proxy,
        "multipart_threshold_bytes = 1048576\npart_size_bytes = 5242880",
    );
    let gw = start(dir.path(), &push_to(&sink, ""));
    // About 3 MB of records that do not compress: one multipart object.
    let body: String = (0..3000)
        .map(|i| {
            let pad: String = (0..500)
                .map(|_| format!("{:x}", rand::random::<u8>() % 16))
                .collect();
            format!("{{\"i\":{i},\"pad\":\"{pad}\"}}\n")
        })
        .collect();
    let r = gw.client().push("s", &[], body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    crate::spool::wait_drained(&gw, "lake").await;
    let data = settled_lines(&admin, &bucket, 3000).await;
    assert_eq!(data.len(), 1, "exactly one object: {:?}", data.keys());
    let lines = data.values().next().unwrap();
    assert_eq!(lines.len(), 3000, "every record once");
    let completes: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.target.contains("uploadId="))
        .collect();
    assert!(completes[0].dropped, "{completes:?}");
    assert!(completes.len() >= 2, "{completes:?}");
    let key = data.keys().next().unwrap();
    assert!(
        completes
            .iter()
            .all(|c| c.target.starts_with(&format!("/{bucket}/{key}?"))),
        "{completes:?}"
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emnify_events_usage_and_dead_letters_of_one_second_are_all_kept() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    // Two records per object: several objects of one kind are finished in
    // the same second, and their second-resolution names must not collide.
    let sink = s3_sink(
        env,
        &bucket,
        "preset = \"emnify\"\nrotate = { max_age_secs = 0.3, max_records = 2 }",
    );
    let gw = start(
        dir.path(),
        &push_to(
            &sink.replace("rotate = { max_age_secs = 0.3 }\n", ""),
            "[[pipelines.p.transforms]]\nuse = \"emnify-csv\"\n",
        ),
    );
    let event = |id: i64| {
        format!(
            r#"{{"id":{id},"event_type":{{"id":1,"description":"Update location"}},"timestamp":"2021-10-27T11:59:29.000Z","alert":false}}"#
        )
    };
    let usage = |id: i64| {
        format!(
            r#"{{"id":{id},"traffic_type":{{"id":5,"description":"Data"}},"start_timestamp":"2022-04-26T11:53:43Z","cost":0.5,"volume":{{"total":1.0,"rx":0.5,"tx":0.5}}}}"#
        )
    };
    let mut records: Vec<String> = (1..=5).map(event).collect();
    records.extend((11..=13).map(usage));
    records.push(r#"{"neither":"usage nor event"}"#.into());
    records.push("42".into());
    let r = gw
        .client()
        .push("s", &[], format!("[{}]", records.join(",")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["accepted"], 10);
    // Rows plus one header per object: wait for all ten rows.
    let mut data = BTreeMap::new();
    for _ in 0..100 {
        data = settled_lines(&admin, &bucket, 10).await;
        let rows: usize = data.values().map(|l| l.len() - 1).sum();
        if rows >= 10 {
            break;
        }
    }
    let rows = |prefix: &str| -> Vec<String> {
        data.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .flat_map(|(_, l)| l[1..].to_vec())
            .collect()
    };
    assert_eq!(rows("events_").len(), 5, "{:?}", data.keys());
    assert_eq!(rows("cdr_").len(), 3, "{:?}", data.keys());
    let dead = rows("dead_letter/");
    assert_eq!(dead.len(), 2, "{:?}", data.keys());
    assert!(dead.iter().any(|r| r.contains("neither")) && dead.iter().any(|r| r.contains("42")));
    assert!(
        data.keys()
            .filter(|k| k.starts_with("events_"))
            .all(|k| k.len() == "events_YYYYMMDD_HHMMSS.csv".len()),
        "{:?}",
        data.keys()
    );
    assert!(data.keys().filter(|k| k.starts_with("events_")).count() >= 3);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_in_a_loop_under_load_puts_every_ack_in_the_bucket_exactly_once() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    let sink = s3_sink(
        env,
        &bucket,
        "compression = \"gzip\"\nkey = \"{route}/%Y/%m/%d\"",
    );
    let cfg = push_to(
        &sink,
        "[[pipelines.p.transforms]]\nuse = \"ecs-jumpcloud\"\n",
    );
    let gw = start(dir.path(), &cfg);
    let load = crate::spool::Load::start(gw.client(), "s", 4, 50);
    let restart = |d: &std::path::Path| start(d, &cfg);
    let gw = crate::spool::kill_loop(dir.path(), gw, &load, 5, &restart).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.finish().await;
    crate::spool::wait_drained(&gw, "lake").await;
    gw.stop();
    let lines: Vec<(String, String)> = objects(&admin, &bucket)
        .await
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".connection-test"))
        .flat_map(|(k, (b, _, _))| {
            lines_of(&k, &b)
                .into_iter()
                .map(move |l| (k.clone(), l))
                .collect::<Vec<_>>()
        })
        .collect();
    crate::spool::assert_exactly_once(&crate::spool::ecs_ids(&lines), &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_stopped_by_a_403_holds_back_only_its_own_sources() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    let lake_sink = s3_sink(env, &bucket, "expected_bucket_owner = \"999999999999\"").replace(
        env.get("SLUICE_TEST_S3_ENDPOINT"),
        env.get("SLUICE_TEST_S3_OWNER_ENDPOINT"),
    );
    let cfg = config(&format!(
        r#"
[sources.s]
type = "push"
listener = "https"
auth = {{ type = "none" }}

[sources.local]
type = "push"
listener = "https"
auth = {{ type = "none" }}

[pipelines.p]
source = "s"
sink = "lake"

[pipelines.l]
source = "local"
sink = "out"

[sinks.out]
type = "local"
path = "out"
key = "{{source}}"
rotate = {{ max_age_secs = 0.1 }}

[spool.sinks.lake]
max_records = 6
{lake_sink}"#
    ));
    let gw = start(dir.path(), &cfg);
    for _ in 0..100 {
        if gw.stderr().contains("sink stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = gw.client();
    let mut refused = None;
    for _ in 0..10 {
        let r = c.push("s", &[], "[1,2]").await;
        if r.status != StatusCode::OK {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the stopped sink's source is held back at its budget");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["retry-after"], "5");
    for i in 0..5 {
        let r = c.push("local", &[], format!("{{\"i\":{i}}}")).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "the other source goes on: {}",
            r.body
        );
    }
    let lines = crate::gw::wait_delivered(&dir.path().join("out"), 5).await;
    assert_eq!(lines.len(), 5, "the other sink delivers");
    assert_eq!(gw.metric("sluice_sink_stopped{sink=\"lake\"}").await, 1.0);
    gw.stop();
    assert!(objects(&admin, &bucket).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_endpoint_from_the_environment_or_a_profile_gets_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    // A plain listener that counts what reaches it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    listener.set_nonblocking(true).unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (reached, stop) = (reached.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let mut buf = [0u8; 4096];
                        reached.fetch_add(1, Ordering::Relaxed);
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            reached.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let cfg = push_to(
        r#"
[sinks.lake]
type = "s3"
bucket = "lake"
region = "us-east-1"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
expected_bucket_owner = "111122223333"
"#,
        "",
    );
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, &cfg).unwrap();
    let profile = dir.path().join("aws-config");
    std::fs::write(&profile, format!("[profile plain]\nendpoint_url = {url}\n")).unwrap();
    let profile = profile.display().to_string();
    for vars in [
        vec![("AWS_ENDPOINT_URL_S3", url.as_str())],
        vec![("AWS_ENDPOINT_URL", url.as_str())],
        vec![
            ("AWS_CONFIG_FILE", profile.as_str()),
            ("AWS_PROFILE", "plain"),
        ],
    ] {
        let run = s3_test(&path, &vars);
        assert_eq!(run.code, 2, "{vars:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("lake: FAILED") && run.stdout.contains("is not https://"),
            "{vars:?}: {}",
            run.stdout
        );
        assert!(!run.stdout.contains("wJalr"), "no secret in the error");
        // `sluice run` refuses to start the same way.
        let mut cmd = crate::support::sluice();
        cmd.args(["run", "--config"]).arg(&path);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
            cmd.env_remove(k);
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(vars.iter().copied());
        let run = crate::support::run_with(cmd, "", Duration::from_secs(60));
        run.expect_failure(2, "is not https://");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    counter.join().unwrap();
    assert_eq!(
        reached.load(Ordering::Relaxed),
        0,
        "no connection and no byte reached the plain-HTTP endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_that_takes_requests_and_never_answers_times_out_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let hole = crate::faultproxy::BlackHole::start(dir.path()).await;
    let sink = format!(
        r#"
[sinks.lake]
type = "s3"
bucket = "lake"
region = "us-east-1"
endpoint = "{endpoint}"
ca_file = "{ca}"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "secret-for-the-black-hole"
checksum = "when_required"
connect_timeout_secs = 1
attempt_timeout_secs = 1
rotate = {{ max_age_secs = 0.2 }}
"#,
        endpoint = hole.endpoint(),
        ca = hole.cert.display()
    );
    std::fs::write(dir.path().join("sluice.toml"), push_to(&sink, "")).unwrap();
    let gw = Gateway::start_existing(dir.path());
    let r = gw.client().push("s", &[], "[1,2,3]").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut timeouts = None;
    for _ in 0..300 {
        timeouts = gw
            .metric_opt("sluice_sink_errors_total{kind=\"timeout\",sink=\"lake\"}")
            .await;
        if timeouts.is_some_and(|t| t >= 2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        timeouts.is_some_and(|t| t >= 2.0),
        "attempts time out and are retried:\n{}",
        gw.stderr()
    );
    assert!(gw.metric("sluice_sink_retries_total{sink=\"lake\"}").await >= 1.0);
    let started = std::time::Instant::now();
    let log = gw.stop();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "SIGTERM is not held up by a silent store: {:?}",
        started.elapsed()
    );
    assert!(log.contains("undelivered=3"), "{log}");
}

/// SIGTERM while an upload hangs: sluice waits for it a while (15 s),
/// then exits cleanly; the object stays recorded and the next start
/// uploads it, under the same key, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_upload_at_shutdown_is_left_recorded_and_delivered_at_the_next_start() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    let proxy = FaultProxy::start_with(
        dir.path(),
        env.get("SLUICE_TEST_S3_ENDPOINT"),
        env.get("SLUICE_TEST_S3_CA"),
        Box::new(|m, target| m == hyper::Method::PUT && !target.contains(".connection-test")),
        crate::faultproxy::Fault::Hang,
        Duration::from_secs(1),
    )
    .await;
    let stuck = via_proxy(env, &bucket, &proxy, "attempt_timeout_secs = 120");
    let gw = start(dir.path(), &push_to(&stuck, ""));
    let r = gw.client().push("s", &[], "[1,2,3]").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for _ in 0..100 {
        if proxy.seen().iter().any(|s| s.method == "PUT" && s.dropped) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proxy.seen().iter().any(|s| s.method == "PUT" && s.dropped),
        "an upload is under way"
    );
    let started = std::time::Instant::now();
    let log = gw.stop();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        log.contains("uploads still under way at shutdown are left"),
        "{log}"
    );
    assert!(log.contains("undelivered=3"), "{log}");
    // Straight to radosgw now: the recorded object goes up once.
    let gw = start(dir.path(), &push_to(&s3_sink(env, &bucket, ""), ""));
    let data = settled_lines(&admin, &bucket, 3).await;
    assert_eq!(data.len(), 1, "{:?}", data.keys());
    assert_eq!(data.values().flatten().collect::<Vec<_>>(), ["1", "2", "3"]);
    let stuck_key = proxy
        .seen()
        .into_iter()
        .find(|s| s.method == "PUT" && s.dropped)
        .unwrap()
        .target;
    let key = data.keys().next().unwrap();
    assert!(
        stuck_key.starts_with(&format!("/{bucket}/{key}")),
        "the same key as the stuck attempt: {stuck_key} vs {key}"
    );
    assert!(
        gw.stderr().contains("uploaded again under their names"),
        "{}",
        gw.stderr()
    );
    gw.stop();
}

/// A part that keeps failing (500, past the SDK's own retries): the
/// multipart upload is aborted, so no upload is left open, and the object
/// is uploaded again later, once, under the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_aborts_the_multipart_upload_and_the_object_lands_once() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    let proxy = FaultProxy::start_with(
        dir.path(),
        env.get("SLUICE_TEST_S3_ENDPOINT"),
        env.get("SLUICE_TEST_S3_CA"),
        Box::new(|m, target| m == hyper::Method::PUT && target.contains("partNumber=")),
        crate::faultproxy::Fault::Fail(&[500, 500, 500]),
        Duration::from_secs(1),
    )
    .await;
    let sink = via_proxy(
        env,
        &bucket,
        &proxy,
        "multipart_threshold_bytes = 1048576\npart_size_bytes = 5242880",
    );
    let gw = start(dir.path(), &push_to(&sink, ""));
    let body: String = (0..2000)
        .map(|i| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "y".repeat(1000)))
        .collect();
    let r = gw.client().push("s", &[], body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    crate::spool::wait_drained(&gw, "lake").await;
    let data = settled_lines(&admin, &bucket, 2000).await;
    assert_eq!(data.len(), 1, "{:?}", data.keys());
    assert_eq!(data.values().next().unwrap().len(), 2000);
    let seen = proxy.seen();
    let failed = seen.iter().filter(|s| s.status == 500).count();
    assert_eq!(
        failed, 3,
        "the SDK retried the part, then gave up: {seen:?}"
    );
    let aborts: Vec<_> = seen
        .iter()
        .filter(|s| s.method == "DELETE" && s.target.contains("uploadId="))
        .collect();
    assert_eq!(aborts.len(), 1, "the failed upload was aborted: {seen:?}");
    assert_no_upload_open(&admin, &bucket).await;
    gw.stop();
}

/// 503 SlowDown, 500 InternalError and 429, more of them than the SDK's
/// own retries take: counted, retried by the sink with the same key, and
/// the records land once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_answers_are_retried_and_the_object_lands_once() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    let proxy = FaultProxy::start_with(
        dir.path(),
        env.get("SLUICE_TEST_S3_ENDPOINT"),
        env.get("SLUICE_TEST_S3_CA"),
        Box::new(|m, target| m == hyper::Method::PUT && !target.contains(".connection-test")),
        crate::faultproxy::Fault::Fail(&[503, 500, 429, 503, 500, 429]),
        Duration::from_secs(1),
    )
    .await;
    let gw = start(
        dir.path(),
        &push_to(&via_proxy(env, &bucket, &proxy, ""), ""),
    );
    let r = gw.client().push("s", &[], "[1,2,3]").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    crate::spool::wait_drained(&gw, "lake").await;
    let data = settled_lines(&admin, &bucket, 3).await;
    assert_eq!(data.len(), 1, "{:?}", data.keys());
    assert_eq!(data.values().flatten().collect::<Vec<_>>(), ["1", "2", "3"]);
    let puts: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT" && !s.target.contains(".connection-test"))
        .collect();
    let statuses: Vec<u16> = puts.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [503, 500, 429, 503, 500, 429, 200], "{puts:?}");
    let key = data.keys().next().unwrap();
    assert!(
        puts.iter()
            .all(|p| p.target.starts_with(&format!("/{bucket}/{key}"))),
        "{puts:?}"
    );
    assert!(gw.metric("sluice_sink_retries_total{sink=\"lake\"}").await >= 1.0);
    gw.stop();
}

/// SSE settings: AES256 is applied; an unknown KMS key is refused by the
/// store and stops the sink with a message that says so; explicit settings
/// win over a preset's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes256_an_unknown_kms_key_and_settings_over_a_preset() {
    let Lake {
        _rgw,
        env,
        admin,
        bucket,
        dir,
    } = lake().await;
    // AES256, and the J1DS preset with compression and name overridden.
    // Through a proxy that only watches: radosgw without an SSE-S3 backend
    // stores the object but does not record AES256, so the request itself
    // is checked.
    let watch = FaultProxy::start(
        dir.path(),
        env.get("SLUICE_TEST_S3_ENDPOINT"),
        env.get("SLUICE_TEST_S3_CA"),
        Box::new(|_, _| false),
        Duration::from_secs(1),
    )
    .await;
    let sink = via_proxy(
        env,
        &bucket,
        &watch,
        "preset = \"j1ds\"\ncompression = \"none\"\nname = \"part-%H%M%S\"\nsse = \"AES256\"",
    );
    let gw = start(
        dir.path(),
        &push_to(&sink, "[[pipelines.p.transforms]]\nuse = \"j1-cdc\"\n"),
    );
    let entity = r#"{"id":"e1","entity":{"_id":"e1","_key":"k","_type":"t","_class":["Finding"],"_accountId":"acct9","_version":1,"_deleted":false,"_beginOn":1759510655079},"properties":{"x":1}}"#;
    assert_eq!(
        gw.client().push("s", &[], entity).await.status,
        StatusCode::OK
    );
    let data = wait_lines(&admin, &bucket, 1).await;
    let key = data.keys().next().unwrap().clone();
    assert!(
        key.starts_with("jupiterone/graph/cdc/accountId=acct9/year=")
            && key.contains("/part-")
            && key.ends_with(".jsonl"),
        "the preset's folder, the explicit name and no compression: {key}"
    );
    let put = watch
        .seen()
        .into_iter()
        .find(|s| s.method == "PUT" && s.target.contains("/part-"))
        .unwrap();
    assert_eq!(put.sse.as_deref(), Some("AES256"), "{put:?}");
    gw.stop();

    // An unknown KMS key id: refused by the store, the sink stops and says so.
    let dir2 = tempfile::tempdir().unwrap();
    let bad = s3_sink(
        env,
        &bucket,
        "sse = \"aws:kms\"\nkms_key_id = \"no-such-key\"\nprefix = \"kms/\"",
    );
    let gw = start(dir2.path(), &push_to(&bad, ""));
    assert_eq!(
        gw.client().push("s", &[], "[1]").await.status,
        StatusCode::OK
    );
    for _ in 0..100 {
        if gw.stderr().contains("sink stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = gw.stderr();
    assert!(log.contains("sink stopped"), "{log}");
    assert_eq!(gw.metric("sluice_sink_stopped{sink=\"lake\"}").await, 1.0);
    gw.stop();
    assert!(
        !objects(&admin, &bucket)
            .await
            .keys()
            .any(|k| k.starts_with("kms/") && !k.ends_with(".connection-test")),
        "nothing was stored unencrypted"
    );
}
