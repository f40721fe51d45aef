//! The S3 test server (radosgw + nginx, `scripts/s3-test-server.sh`) as
//! the tests and the load benchmark use it: started once per process,
//! settings from its `env` file, and an admin client that can create
//! buckets and read back what the write-only sink wrote.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// S3 tests share one radosgw; the outage test stops it, so it takes this
/// lock for writing and every other S3 test for reading.
/// (A tokio lock: the guards are held across awaits.)
pub static RGW: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A read lock on the shared radosgw.
pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    RGW.read().await
}

/// The test server's folder.
pub fn s3_dir() -> String {
    std::env::var("SLUICE_S3_TEST_DIR")
        .unwrap_or_else(|_| format!("{}/../s3-test-server", env!("CARGO_TARGET_TMPDIR")))
}

pub fn rgw(cmd: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/s3-test-server.sh");
    let status = std::process::Command::new(script)
        .args([cmd, &s3_dir()])
        .status()
        .unwrap();
    assert!(status.success(), "s3-test-server.sh {cmd} failed");
}

/// The test server's settings (its `env` file).
pub struct S3Env(BTreeMap<String, String>);

impl S3Env {
    pub fn get(&self, k: &str) -> &str {
        self.0.get(k).map_or_else(
            || panic!("{k} missing from the s3 test server's env"),
            String::as_str,
        )
    }
}

/// Starts the test server once per test binary (idempotent script).
pub fn s3_env() -> &'static S3Env {
    static ENV: OnceLock<S3Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let dir = std::env::var("SLUICE_S3_TEST_DIR")
            .unwrap_or_else(|_| format!("{}/../s3-test-server", env!("CARGO_TARGET_TMPDIR")));
        let status = std::process::Command::new(format!("{root}/scripts/s3-test-server.sh"))
            .args(["up", &dir])
            .status()
            .expect("run scripts/s3-test-server.sh");
        assert!(
            status.success(),
            "scripts/s3-test-server.sh up {dir} failed"
        );
        let text = std::fs::read_to_string(format!("{dir}/env")).unwrap();
        S3Env(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    })
}

/// An S3 client with full rights, for the tests to create buckets and read
/// back what the (write-only) sink wrote.
pub async fn admin_client(env: &S3Env) -> aws_sdk_s3::Client {
    let cfg: sluice::sinks::s3::S3Config = toml::from_str(&format!(
        "bucket = \"x\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nchecksum = \"when_required\"",
        env.get("SLUICE_TEST_S3_ENDPOINT")
    ))
    .unwrap();
    let keys = (
        sluice::config::SecretValue::new(env.get("SLUICE_TEST_S3_ACCESS_KEY")),
        sluice::config::SecretValue::new(env.get("SLUICE_TEST_S3_SECRET_KEY")),
    );
    sluice::sinks::s3::client(
        &cfg,
        Some(std::path::Path::new(env.get("SLUICE_TEST_S3_CA"))),
        Some(keys),
        None,
    )
    .await
    .unwrap()
}

pub async fn new_bucket(client: &aws_sdk_s3::Client) -> String {
    let name = format!("sluice-{:08x}", rand::random::<u32>());
    client.create_bucket().bucket(&name).send().await.unwrap();
    name
}
