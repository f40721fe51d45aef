//! Egress through a corporate proxy: Debian's tinyproxy on loopback, with
//! Basic authentication, between sluice and both the JumpCloud stub and
//! radosgw. TLS runs end to end inside CONNECT tunnels; a refused CONNECT
//! or refused credentials are a clear error; the proxy password is never
//! logged.

use crate::gw::{Gateway, config};
use crate::s3::{lake, settled_lines};
use crate::stubs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROXY_USER: &str = "sluice";
const PROXY_PASSWORD: &str = "proxy-password-4f1d9c";

/// A tinyproxy of its own: a config in `dir`, a free loopback port, every
/// CONNECT logged.
struct TinyProxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl TinyProxy {
    fn start(dir: &Path, extra: &str) -> Self {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let installed = Command::new(format!("{root}/scripts/debian-packages.sh"))
            .arg("tinyproxy=tinyproxy")
            .status()
            .expect("run scripts/debian-packages.sh");
        assert!(installed.success(), "cannot install tinyproxy");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("tinyproxy-{port}.log"));
        std::fs::write(&log, "").unwrap();
        // tinyproxy drops to `nobody`: it must be able to write its log.
        let _ = Command::new("chmod").args(["0666"]).arg(&log).status();
        let _ = Command::new("chmod").args(["0755"]).arg(dir).status();
        let conf = dir.join(format!("tinyproxy-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 60\n\
                 LogFile \"{}\"\nLogLevel Connect\nMaxClients 64\nAllow 127.0.0.1\n{extra}\n",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tinyproxy");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        TinyProxy { child, port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The CONNECT requests it received, as `host:port`.
    fn connects(&self) -> Vec<String> {
        std::io::BufReader::new(std::fs::File::open(&self.log).unwrap())
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                l.split_once("): CONNECT ")
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .map(str::to_string)
            })
            .collect()
    }
}

impl Drop for TinyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JumpCloud source and an S3 sink; `jc_proxy` and `s3_proxy` are their
/// `proxy` lines (empty: none).
fn gateway_config(
    stub: &stubs::Stub,
    env: &crate::s3env::S3Env,
    bucket: &str,
    jc_proxy: &str,
    s3_proxy: &str,
) -> String {
    let ago = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    config(&format!(
        r#"
[sources.jc]
type = "jumpcloud"
api_key = "jc-test-key"
base_url = "{url}"
ca_file = "{ca}"
start = "{ago}"
interval_secs = 1
source_lag_secs = 0
{jc_proxy}

[pipelines.jc]
source = "jc"
sink = "lake"
{sink}"#,
        url = stub.url(),
        ca = stub.cert.display(),
        sink = crate::s3::s3_sink(env, bucket, s3_proxy),
    ))
}

/// `host:port` of an `https://host:port/…` URL: what a CONNECT names.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_s3_are_reached_through_the_proxy_with_tls_end_to_end() {
    let lake = lake().await;
    let dir = lake.dir.path();
    let proxy = TinyProxy::start(dir, &format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}"));
    let state = stubs::JumpCloud::with_key("jc-test-key");
    let at = (chrono::Utc::now() - chrono::Duration::minutes(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    state.add((0..5).map(|i| (format!("p{i}"), at.clone(), "sso".to_string())));
    let stub = stubs::jumpcloud(dir, state.clone()).await;
    // The source names its proxy; the sink takes HTTPS_PROXY, with the
    // credentials in the URL as the environment customarily has them.
    let cfg = gateway_config(
        &stub,
        lake.env,
        &lake.bucket,
        &format!(
            "proxy = {{ url = \"{}\", username = \"{PROXY_USER}\", password = \"${{env:PROXY_PASSWORD}}\" }}",
            proxy.url()
        ),
        "",
    );
    std::fs::write(dir.join("sluice.toml"), &cfg).unwrap();
    let env_proxy = format!(
        "http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}",
        proxy.port
    );
    let gw = Gateway::start_with_env(
        dir,
        &[
            (
                "SLUICE_TEST_S3_SECRET",
                lake.env.get("SLUICE_TEST_S3_SECRET_KEY"),
            ),
            ("PROXY_PASSWORD", PROXY_PASSWORD),
            ("HTTPS_PROXY", &env_proxy),
            ("SLUICE_LOG", "debug"),
        ],
    );
    let data = settled_lines(&lake.admin, &lake.bucket, 5).await;
    assert_eq!(data.values().map(Vec::len).sum::<usize>(), 5, "{data:?}");
    let connects = proxy.connects();
    let stub_target = authority(&stub.url());
    let s3_target = authority(lake.env.get("SLUICE_TEST_S3_ENDPOINT"));
    let to_stub = connects.iter().filter(|c| **c == stub_target).count();
    assert!(to_stub >= 1, "{connects:?}");
    assert_eq!(
        to_stub,
        state.event_requests(),
        "every API request came through a tunnel: {connects:?}"
    );
    assert!(
        connects.contains(&s3_target),
        "S3 through the proxy too: {connects:?}"
    );
    let logs = gw.stop();
    assert!(
        !logs.contains(PROXY_PASSWORD),
        "the proxy password is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_and_refused_credentials_are_clear_errors() {
    let lake = lake().await;
    let dir = lake.dir.path();
    // Tunnels only to port 443: the stub's and radosgw's ports are refused.
    let strict = TinyProxy::start(dir, "ConnectPort 443");
    let state = stubs::JumpCloud::with_key("jc-test-key");
    let stub = stubs::jumpcloud(dir, state.clone()).await;
    let line = |p: &TinyProxy| format!("proxy = {{ url = \"{}\" }}", p.url());
    let cfg = gateway_config(
        &stub,
        lake.env,
        &lake.bucket,
        &line(&strict),
        &line(&strict),
    );
    std::fs::write(dir.join("sluice.toml"), &cfg).unwrap();
    let secret = [(
        "SLUICE_TEST_S3_SECRET",
        lake.env.get("SLUICE_TEST_S3_SECRET_KEY"),
    )];
    let mut test = crate::support::sluice();
    test.args(["s3", "test", "--config"])
        .arg(dir.join("sluice.toml"))
        .envs(secret);
    let run = crate::support::run_with(test, "", Duration::from_secs(60));
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("lake: FAILED"), "{}", run.stdout);

    let gw = Gateway::start_with_env(dir, &secret);
    let wait_for = |gw: &Gateway, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !gw.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                gw.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(
        &gw,
        &format!(
            "proxy 127.0.0.1:{} refused CONNECT {}: HTTP/1.1 403 Access violation",
            strict.port,
            authority(&stub.url())
        ),
    );
    assert!(gw.stderr().contains("its rules forbid this host or port"));
    assert_eq!(state.event_requests(), 0, "nothing reached the API");
    gw.stop();

    // Credentials the proxy does not accept.
    let authed = TinyProxy::start(dir, &format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}"));
    let wrong = format!(
        "proxy = {{ url = \"{}\", username = \"{PROXY_USER}\", password = \"${{env:PROXY_PASSWORD}}\" }}",
        authed.url()
    );
    let cfg = gateway_config(&stub, lake.env, &lake.bucket, &wrong, "");
    std::fs::write(dir.join("sluice.toml"), &cfg).unwrap();
    let gw = Gateway::start_with_env(
        dir,
        &[secret[0], ("PROXY_PASSWORD", "not-the-password-9c2e")],
    );
    wait_for(
        &gw,
        &format!(
            "proxy 127.0.0.1:{} refused CONNECT {}: HTTP/1.0 401 Unauthorized (it refused the credentials)",
            authed.port,
            authority(&stub.url())
        ),
    );
    let logs = gw.stop();
    assert!(!logs.contains("not-the-password-9c2e"), "never logged");

    // A proxy given as https://, or with credentials in the URL, is a
    // config error with its line and key.
    let bad = gateway_config(
        &stub,
        lake.env,
        &lake.bucket,
        "proxy = { url = \"https://proxy.corp:3128\" }",
        "proxy = { url = \"http://me:secret@proxy.corp:3128\" }",
    );
    std::fs::write(dir.join("bad.toml"), &bad).unwrap();
    let mut check = crate::support::sluice();
    check
        .args(["check", "--config"])
        .arg(dir.join("bad.toml"))
        .envs(secret);
    let run = crate::support::run_with(check, "", Duration::from_secs(60));
    run.expect_failure(
        2,
        "`sources.jc.proxy.url`: give the proxy's http:// CONNECT address",
    );
    run.expect_failure(
        2,
        "`sinks.lake.proxy.url`: put the proxy's credentials in `username` and `password`",
    );
    assert!(!run.stderr.contains("me:secret"), "{}", run.stderr);
}
