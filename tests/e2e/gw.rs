//! A running `sluice run` and an HTTPS client for it, for the gateway tests.
//!
//! The gateway binds port 0 and prints its addresses on stdout; the harness
//! reads them, so tests run in parallel without port clashes. The client
//! trusts only the gateway's own (self-signed) certificate: real TLS, no
//! verification switched off.

use crate::support::shared_cache;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A config with one HTTPS listener (self-signed, port 0), an admin
/// listener on port 0, and whatever `rest` adds.
pub fn config(rest: &str) -> String {
    format!(
        r#"state_dir = "state"

[admin]
address = "127.0.0.1:0"

[listeners.https]
address = "127.0.0.1:0"
tls = {{ self_signed = true }}
{rest}"#
    )
}

/// `config` with the admin API's bearer token set (and `extra` lines in
/// `[admin]`).
pub fn with_admin_token(config: &str, token: &str, extra: &str) -> String {
    let plain = "[admin]\naddress = \"127.0.0.1:0\"";
    assert!(config.contains(plain), "a config made by gw::config");
    config.replace(plain, &format!("{plain}\ntoken = \"{token}\"\n{extra}"))
}

/// A gateway process.
pub struct Gateway {
    child: Option<Child>,
    /// The HTTPS listener.
    pub push: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The listener's certificate.
    pub cert: PathBuf,
    stderr: Arc<std::sync::Mutex<String>>,
}

impl Gateway {
    /// Writes `config` to `dir/sluice.toml` and starts `sluice run` on it.
    pub fn start(dir: &Path, config: &str) -> Self {
        std::fs::write(dir.join("sluice.toml"), config).unwrap();
        Self::start_existing(dir)
    }

    /// Starts `sluice run` on the config already in `dir`.
    pub fn start_existing(dir: &Path) -> Self {
        Self::start_with_env(dir, &[])
    }

    /// Starts `sluice run` on the config in `dir`, with extra environment.
    pub fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(dir, env, &[])
    }

    /// Starts `WRAPPER… sluice run` (a wrapper that ends by exec'ing its
    /// arguments, such as `prlimit`), with extra environment.
    pub fn start_wrapped(dir: &Path, env: &[(&str, &str)], wrapper: &[&str]) -> Self {
        let sluice = env!("CARGO_BIN_EXE_sluice");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(sluice);
                c
            }
            None => Command::new(sluice),
        };
        let mut child = command
            .args(["run", "--config"])
            .arg(dir.join("sluice.toml"))
            .env("SLUICE_LOG", "info")
            .envs(env.iter().copied())
            .env("SLUICE_CACHE_DIR", shared_cache())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice run");
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            // Lossy, so a line that is not UTF-8 never stops the draining
            // (a full pipe would block the gateway's logging).
            for line in BufReader::new(err_pipe).split(b'\n').map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&String::from_utf8_lossy(&line));
                s.push('\n');
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            }
        });
        let (mut push, mut admin, mut cert) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(120);
        while admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sluice run did not start; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["listening", _, url, _, c] => {
                    push = Some(url.trim_start_matches("https://").parse().unwrap());
                    cert = Some(PathBuf::from(c.trim_start_matches("cert=")));
                }
                ["admin", url, ..] => {
                    let addr = url.trim_start_matches("http://");
                    admin = Some(addr.trim_start_matches("https://").parse().unwrap());
                }
                _ => {}
            }
        }
        Self {
            child: Some(child),
            push: push.expect("an HTTPS listener"),
            admin: admin.unwrap(),
            cert: cert.unwrap(),
            stderr,
        }
    }

    /// The process id.
    #[allow(
        dead_code,
        reason = "used by the load benchmark, which includes this file"
    )]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the gateway has logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then waits for a clean exit (status 0).
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = wait_timeout(&mut child, Duration::from_secs(60));
        let log = self.stderr();
        assert_eq!(
            status,
            Some(0),
            "sluice should exit 0 after SIGTERM; stderr:\n{log}"
        );
        // A thread of sluice's that panicked (even one that was caught and
        // reported) is a bug, whatever the test was about. (A guest's panic
        // is quoted inside a log line, never at the start of one.)
        assert!(
            !log.lines()
                .any(|l| l.starts_with("thread '") && l.contains("panicked at")),
            "a thread panicked:\n{log}"
        );
        log
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// An HTTPS client for the push listener.
    pub fn client(&self) -> Client {
        Client::new(self.push, &self.cert)
    }

    /// GET on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        self.admin_request("GET", path, None).await
    }

    /// A request without a body to the (plain HTTP) admin listener, with a
    /// bearer token if given.
    pub async fn admin_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let stream = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, String::from_utf8(body).unwrap())
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    /// The value of one metric sample; fails the test when it is absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    /// The value of one metric sample, or `None` when it is absent (a
    /// labelled counter that was never incremented).
    pub async fn metric_opt(&self, sample: &str) -> Option<f64> {
        metric_opt(&self.metrics().await, sample)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of `sample` (name with labels, as exposed) in a scrape.
/// Panics when the scrape has no such sample: a renamed metric or label
/// must fail the test, never read as 0.
#[track_caller]
pub fn metric_value(text: &str, sample: &str) -> f64 {
    metric_opt(text, sample).unwrap_or_else(|| panic!("no sample {sample} in the scrape:\n{text}"))
}

/// The value of `sample`, or `None` when the scrape does not have it.
pub fn metric_opt(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A reply.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", self.body))
    }
}

/// An HTTPS client that trusts one certificate.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    tls_h2: tokio_rustls::TlsConnector,
}

/// An open HTTP/2 connection.
pub struct H2Conn {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2Conn {
    /// POSTs on this connection (a new stream each time).
    pub async fn push(
        &mut self,
        source: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (hyper::Version, Reply) {
        let mut req = Request::post(format!("https://localhost/v1/push/{source}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send.ready().await.unwrap();
        let resp = self
            .send
            .send_request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let version = resp.version();
        (version, read(resp).await)
    }
}

/// An open HTTP/1.1 keep-alive connection.
pub struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub fn new(addr: SocketAddr, cert: &Path) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let make = |alpn: &[&[u8]]| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
        };
        Self {
            addr,
            tls: make(&[b"http/1.1"]),
            tls_h2: make(&[b"h2"]),
        }
    }

    /// A raw TLS stream to the listener (ALPN `h2` or `http/1.1`), for
    /// tests that speak (or withhold) HTTP by hand.
    pub async fn tls_stream(
        &self,
        h2: bool,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let connector = if h2 { &self.tls_h2 } else { &self.tls };
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Opens a keep-alive HTTP/1.1 connection.
    pub async fn connect(&self) -> Conn {
        self.try_connect().await.unwrap()
    }

    /// Opens a keep-alive HTTP/1.1 connection, or says why it could not.
    pub async fn try_connect(&self) -> std::io::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let tls = self
            .tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Conn { send })
    }

    /// One request on a fresh connection.
    pub async fn push(
        &self,
        source: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.connect().await.push(source, headers, body).await
    }

    /// An HTTP/2 connection, for several requests on it.
    pub async fn h2_conn(&self) -> H2Conn {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let tls = self
            .tls_h2
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        H2Conn { send }
    }

    /// One request over HTTP/2.
    pub async fn push_h2(
        &self,
        source: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (hyper::Version, Reply) {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let tls = self
            .tls_h2
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = Request::post(format!("https://localhost/v1/push/{source}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = send
            .send_request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let version = resp.version();
        (version, read(resp).await)
    }
}

impl Conn {
    /// POSTs to `/v1/push/{source}` on this connection.
    pub async fn push(
        &mut self,
        source: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        self.try_push(source, headers, body).await.unwrap()
    }

    /// POSTs, or says why no answer came (the connection broke).
    pub async fn try_push(
        &mut self,
        source: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let mut req = Request::post(format!("/v1/push/{source}")).header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send.ready().await.map_err(|e| e.to_string())?;
        let resp = self
            .send
            .send_request(req.body(Full::new(body.into())).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

async fn read(resp: hyper::Response<hyper::body::Incoming>) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Every line of every delivered object under `root` (gzip and zstd
/// decompressed), with the object's path relative to `root`. Temp files
/// are skipped.
pub fn delivered(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.file_name().is_some_and(|n| n == ".sluice-tmp") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let text = if path.extension().is_some_and(|x| x == "gz") {
                let mut s = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::MultiGzDecoder::new(bytes.as_slice()),
                    &mut s,
                )
                .unwrap();
                s
            } else if path.extension().is_some_and(|x| x == "zst") {
                String::from_utf8(zstd::decode_all(bytes.as_slice()).unwrap()).unwrap()
            } else {
                String::from_utf8(bytes).unwrap()
            };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.extend(text.lines().map(|l| (rel.clone(), l.to_string())));
        }
    }
    out.sort();
    out
}

/// Polls until `delivered(root)` has `n` lines (or fails after 30 s).
pub async fn wait_delivered(root: &Path, n: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = delivered(root);
        if lines.len() >= n || Instant::now() > deadline {
            assert_eq!(lines.len(), n, "delivered lines: {lines:#?}");
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
