//! No secret value ever leaves the gateway: not in its log (at debug
//! level), not in `/metrics`, not in any answer or error, not in any file
//! it writes. One gateway holds every kind of secret, each used both
//! rightly and wrongly, and everything it printed, answered and wrote is
//! searched for each value.

use crate::gw::{Gateway, config};
use crate::s3env::{admin_client, new_bucket, s3_env, shared};
use crate::stubs::{self, Fault};
use hyper::StatusCode;
use std::path::Path;
use std::time::Duration;

/// Every configured secret, by the environment variable that carries it.
const SECRETS: [(&str, &str); 9] = [
    ("PUSH_BEARER", "secret-bearer-7f3a91c2e0"),
    ("PROXY_PASSWORD", "secret-proxy-pw-3c3c3c"),
    ("PUSH_BASIC", "secret-basic-pw-4be1d9"),
    ("PUSH_HMAC", "secret-hmac-key-9d02aa"),
    ("JC_KEY", "secret-jc-key-51aa7c"),
    ("JC_WRONG_KEY", "secret-jc-wrong-6b6b6b"),
    ("J1_TOKEN", "secret-j1-token-c3d4e5"),
    ("ADMIN_TOKEN", "secret-admin-token-8e8e8e"),
    ("WRONG_S3_SECRET", "secret-wrong-s3-0a0a0a"),
];

const REDACT_KEY: &str = "secret-redact-key-77ffee";

fn secret(var: &str) -> &'static str {
    SECRETS.iter().find(|(v, _)| *v == var).unwrap().1
}

/// Every file under `root`, as bytes, with its path.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_metrics_answers_errors_or_files() {
    let _rgw = shared().await;
    let env = s3_env();
    let s3 = admin_client(env).await;
    let bucket = new_bucket(&s3).await;
    let s3_secret = env.get("SLUICE_TEST_S3_SECRET_KEY").to_string();
    let dir = tempfile::tempdir().unwrap();
    let secrets_dir = tempfile::tempdir().unwrap();
    let key_file = secrets_dir.path().join("redact.key");
    std::fs::write(&key_file, format!("{REDACT_KEY}\n")).unwrap();

    let ago = |s: i64| {
        (chrono::Utc::now() - chrono::Duration::seconds(s))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let jc = stubs::JumpCloud::with_key(secret("JC_KEY"));
    jc.add((0..3).map(|i| (format!("e{i}"), ago(120 - i), "sso".to_string())));
    jc.faults
        .lock()
        .unwrap()
        .push_back(Fault::Status(500, None, vec![]));
    let jc_stub = stubs::jumpcloud(dir.path(), jc.clone()).await;
    let j1 = stubs::JupiterOne::new(secret("J1_TOKEN"), "acct", 5);
    j1.faults
        .lock()
        .unwrap()
        .push_back(Fault::GraphqlError("stub says no".into()));
    let j1_stub = stubs::jupiterone(dir.path(), j1.clone()).await;

    let push = |name: &str, auth: &str| {
        format!(
            "[sources.{name}]\ntype = \"push\"\nlistener = \"https\"\nauth = {auth}\n\n\
             [pipelines.{name}]\nsource = \"{name}\"\nsink = \"lake\"\n\n"
        )
    };
    let s3_sink = |name: &str, secret_var: &str| {
        format!(
            "[sinks.{name}]\ntype = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\n\
             endpoint = \"{}\"\nca_file = \"{}\"\naccess_key_id = \"{}\"\n\
             secret_access_key = \"${{env:{secret_var}}}\"\nchecksum = \"when_required\"\n\
             key = \"{name}/{{source}}\"\nrotate = {{ max_age_secs = 0.2 }}\n\n",
            env.get("SLUICE_TEST_S3_ENDPOINT"),
            env.get("SLUICE_TEST_S3_CA"),
            env.get("SLUICE_TEST_S3_ACCESS_KEY"),
        )
    };
    let mut cfg = push(
        "bearer",
        r#"{ type = "bearer", token = "${env:PUSH_BEARER}" }"#,
    ) + &push(
        "basic",
        r#"{ type = "basic", username = "emnify", password = "${env:PUSH_BASIC}" }"#,
    ) + &push("hmac", r#"{ type = "hmac", key = "${env:PUSH_HMAC}" }"#)
        + &push("refused", r#"{ type = "none" }"#).replace("sink = \"lake\"", "sink = \"badlake\"");
    cfg += &format!(
        r#"[[pipelines.bearer.transforms]]
use = "redact"
config = {{ fields = "user:hash", hash_key = "${{file:{key}}}" }}

[sources.jc]
type = "jumpcloud"
api_key = "${{env:JC_KEY}}"
base_url = "{jc_url}"
ca_file = "{jc_ca}"
start = "{start}"
interval_secs = 1
source_lag_secs = 0

[pipelines.jc]
source = "jc"
sink = "lake"

[sources.jc_wrong]
type = "jumpcloud"
api_key = "${{env:JC_WRONG_KEY}}"
base_url = "{jc_url}"
ca_file = "{jc_ca}"
start = "{start}"

[pipelines.jc_wrong]
source = "jc_wrong"
sink = "lake"

# A proxy that cannot be reached: every attempt is an error to log.
[sources.jc_proxied]
type = "jumpcloud"
api_key = "${{env:JC_KEY}}"
base_url = "{jc_url}"
ca_file = "{jc_ca}"
start = "{start}"
interval_secs = 1
proxy = {{ url = "http://127.0.0.1:9", username = "sluice", password = "${{env:PROXY_PASSWORD}}" }}

[pipelines.jc_proxied]
source = "jc_proxied"
sink = "lake"

[sources.j1]
type = "jupiterone"
api_token = "${{env:J1_TOKEN}}"
account_id = "acct"
base_url = "{j1_url}/"
ca_file = "{j1_ca}"
start = "{start}"
interval_secs = 1

[pipelines.j1]
source = "j1"
sink = "lake"

"#,
        key = key_file.display(),
        jc_url = jc_stub.url(),
        jc_ca = jc_stub.cert.display(),
        j1_url = j1_stub.url(),
        j1_ca = j1_stub.cert.display(),
        start = ago(3600),
    );
    cfg += &s3_sink("lake", "SLUICE_TEST_S3_SECRET");
    cfg += &s3_sink("badlake", "WRONG_S3_SECRET");
    let cfg = config(&cfg).replace(
        "[admin]\naddress = \"127.0.0.1:0\"",
        "[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"${env:ADMIN_TOKEN}\"",
    );
    std::fs::write(dir.path().join("sluice.toml"), &cfg).unwrap();
    let mut vars: Vec<(&str, &str)> = SECRETS.to_vec();
    vars.push(("SLUICE_TEST_S3_SECRET", &s3_secret));
    vars.push(("SLUICE_LOG", "debug"));

    // What the commands print about this config.
    let mut seen = String::new();
    for args in [&["check", "--config"][..], &["s3", "test", "--config"]] {
        let out = crate::support::sluice()
            .args(args)
            .arg(dir.path().join("sluice.toml"))
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        seen += &String::from_utf8_lossy(&out.stdout);
        seen += &String::from_utf8_lossy(&out.stderr);
    }
    assert!(
        seen.contains("SignatureDoesNotMatch"),
        "the wrong key was tried: {seen}"
    );

    let gw = Gateway::start_wrapped(dir.path(), &vars, &[]);
    let c = gw.client();
    let mut answers = Vec::new();
    let mut expect = |r: crate::gw::Reply, status: StatusCode| {
        assert_eq!(r.status, status, "{}", r.body);
        answers.push(format!("{:?} {}", r.headers, r.body));
    };
    let bearer = format!("Bearer {}", secret("PUSH_BEARER"));
    expect(
        c.push(
            "bearer",
            &[("authorization", &bearer)],
            r#"{"user":"jane"}"#,
        )
        .await,
        StatusCode::OK,
    );
    expect(
        c.push("bearer", &[("authorization", "Bearer not-it")], "{}")
            .await,
        StatusCode::UNAUTHORIZED,
    );
    use base64::Engine;
    let basic = |pw: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("emnify:{pw}"))
        )
    };
    expect(
        c.push(
            "basic",
            &[("authorization", &basic(secret("PUSH_BASIC")))],
            "{}",
        )
        .await,
        StatusCode::OK,
    );
    expect(
        c.push("basic", &[("authorization", &basic("not-it"))], "{}")
            .await,
        StatusCode::UNAUTHORIZED,
    );
    let sign = |key: &[u8], body: &[u8]| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let good = sign(secret("PUSH_HMAC").as_bytes(), b"{}");
    expect(
        c.push("hmac", &[("x-sluice-signature", &good)], "{}").await,
        StatusCode::OK,
    );
    let bad = sign(b"not-it", b"{}");
    expect(
        c.push("hmac", &[("x-sluice-signature", &bad)], "{}").await,
        StatusCode::FORBIDDEN,
    );
    expect(c.push("refused", &[], "{}").await, StatusCode::OK);
    for token in [Some(secret("ADMIN_TOKEN")), Some("not-it"), None] {
        let (status, body) = gw.admin_request("GET", "/v1/transforms", token).await;
        answers.push(format!("{status} {body}"));
    }
    // Wait for the pollers' retries, the wrong key's stop and the bad
    // sink's stop to have happened (and been logged).
    for _ in 0..300 {
        let log = gw.stderr();
        if log.matches("poller stopped").count() >= 1
            && log.contains("SignatureDoesNotMatch")
            && log.contains("stub says no")
            && log.contains("500 Internal Server Error")
            && log.contains("cannot reach the proxy 127.0.0.1:9")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = gw.metrics().await;
    let log = gw.stop();
    assert!(log.contains("DEBUG"), "the log is at debug level");
    for (what, must) in [
        (
            "the wrong JumpCloud key stopped its poller",
            "poller stopped",
        ),
        ("the wrong S3 key stopped its sink", "SignatureDoesNotMatch"),
        ("JupiterOne's error was logged", "stub says no"),
        ("JumpCloud's 500 was logged", "500 Internal Server Error"),
        (
            "the unreachable proxy was logged",
            "cannot reach the proxy 127.0.0.1:9",
        ),
    ] {
        assert!(log.contains(must), "{what}:\n{log}");
    }

    let mut texts: Vec<(String, Vec<u8>)> = vec![
        ("the log".into(), log.into_bytes()),
        ("/metrics".into(), metrics.into_bytes()),
        ("check and s3 test".into(), seen.into_bytes()),
        ("answers".into(), answers.join("\n").into_bytes()),
    ];
    // Every file in the folder: what sluice wrote (spool, checkpoints,
    // manifest, certificates), and the config, which names the secrets'
    // variables and file, never their values.
    texts.extend(files(dir.path()));
    let mut all: Vec<&str> = SECRETS.iter().map(|(_, v)| *v).collect();
    all.push(REDACT_KEY);
    all.push(&s3_secret);
    for (place, bytes) in &texts {
        for value in &all {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{value} appears in {place}"
            );
        }
    }
}
