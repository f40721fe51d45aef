//! A fault-injecting HTTPS proxy between sluice and the S3 test server:
//! the network, not a stand-in for either side. It terminates TLS with its
//! own certificate (sluice trusts it through the sink's `ca_file`),
//! forwards each request unchanged (Host header included, so SigV4 still
//! verifies) to radosgw over TLS, and relays the answer.
//!
//! Armed with a rule, it forwards the first matching request, reads
//! radosgw's answer, then drops the client's connection instead of
//! relaying it: the object was stored, and sluice cannot know. It then
//! refuses connections (its port closed) for a while, longer than the S3
//! SDK's own retries last.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Which request to answer with silence.
pub type Rule = Box<dyn Fn(&hyper::Method, &str) -> bool + Send + Sync>;

/// What happens to the request the rule picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded; the answer is dropped, then connections are refused for
    /// a while.
    DropAnswer,
    /// Never forwarded, never answered: the request hangs.
    Hang,
    /// Not forwarded: the first matching requests are answered with these
    /// statuses in turn (with S3's error document for each), the rest
    /// forwarded.
    Fail(&'static [u16]),
}

/// A request the proxy forwarded: method, path and query, and radosgw's
/// status (`None` when its answer was dropped).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub status: u16,
    pub dropped: bool,
    /// The request's `x-amz-server-side-encryption` header.
    pub sse: Option<String>,
}

/// The running proxy.
pub struct FaultProxy {
    pub addr: SocketAddr,
    /// A PEM bundle with the proxy's certificate and the S3 test CA: the
    /// sink's `ca_file`.
    pub ca_bundle: std::path::PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: watch::Sender<bool>,
}

struct State {
    upstream: SocketAddr,
    upstream_tls: tokio_rustls::TlsConnector,
    rule: Rule,
    fault: Fault,
    armed: AtomicBool,
    failed: std::sync::atomic::AtomicUsize,
    refuse_for: Duration,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Turned true while connections are refused: open ones are closed.
    refusing: watch::Sender<bool>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`https://localhost:PORT`,
    /// signed by `ca`), armed with `rule`, refusing connections for
    /// `refuse_for` after the dropped answer.
    pub async fn start(
        dir: &std::path::Path,
        upstream: &str,
        ca: &str,
        rule: Rule,
        refuse_for: Duration,
    ) -> Self {
        Self::start_with(dir, upstream, ca, rule, Fault::DropAnswer, refuse_for).await
    }

    /// As [`FaultProxy::start`], with the fault to inject.
    pub async fn start_with(
        dir: &std::path::Path,
        upstream: &str,
        ca: &str,
        rule: Rule,
        fault: Fault,
        refuse_for: Duration,
    ) -> Self {
        let port: u16 = upstream.rsplit(':').next().unwrap().parse().unwrap();
        let upstream = SocketAddr::from(([127, 0, 0, 1], port));
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let cert_pem = pair.cert.pem();
        let key_pem = pair.signing_key.serialize_pem();
        let ca_bundle = dir.join("proxy-ca.pem");
        std::fs::write(
            &ca_bundle,
            format!("{}\n{cert_pem}", std::fs::read_to_string(ca).unwrap()),
        )
        .unwrap();
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (refusing, _) = watch::channel(false);
        let state = Arc::new(State {
            upstream,
            upstream_tls: tokio_rustls::TlsConnector::from(Arc::new(client)),
            rule,
            fault,
            armed: AtomicBool::new(true),
            failed: std::sync::atomic::AtomicUsize::new(0),
            refuse_for,
            seen: seen.clone(),
            refusing,
        });
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let mut listener = Some(listener);
            let mut refusing = state.refusing.subscribe();
            loop {
                let Some(l) = &listener else {
                    // Closed port: connections are refused until it reopens.
                    tokio::select! {
                        () = tokio::time::sleep(state.refuse_for) => {}
                        _ = stopped.changed() => return,
                    }
                    state.refusing.send_replace(false);
                    listener = Some(bind(addr).await);
                    continue;
                };
                tokio::select! {
                    accepted = l.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let (acceptor, state) = (acceptor.clone(), state.clone());
                        tokio::spawn(async move { serve(acceptor, state, tcp).await });
                    }
                    _ = refusing.changed() => {
                        if *refusing.borrow() {
                            listener = None;
                        }
                    }
                    _ = stopped.changed() => return,
                }
            }
        });
        Self {
            addr,
            ca_bundle,
            seen,
            stop,
        }
    }

    /// The endpoint for the sink's config.
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Every request forwarded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

async fn serve(acceptor: tokio_rustls::TlsAcceptor, state: Arc<State>, tcp: TcpStream) {
    let mut refusing = state.refusing.subscribe();
    if *refusing.borrow() {
        return;
    }
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let st = state.clone();
    let service = hyper::service::service_fn(move |req| forward(st.clone(), req));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        _ = conn => {}
        // Entering the refusing period closes every open connection too,
        // so the client's pooled connections fail like new ones.
        _ = refusing.wait_for(|r| *r) => {}
    }
}

async fn forward(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    if let Fault::Fail(statuses) = state.fault
        && (state.rule)(&parts.method, &target)
        && let Some(&status) = statuses.get(state.failed.fetch_add(1, Ordering::SeqCst))
    {
        state.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            target: target.clone(),
            status,
            dropped: false,
            sse: sse_of(&parts.headers),
        });
        // The codes S3 (and S3-compatible stores) send with these.
        let code = match status {
            503 => "SlowDown",
            429 => "TooManyRequests",
            _ => "InternalError",
        };
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
             <Message>fault proxy: failed on purpose</Message></Error>"
        );
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "application/xml")
            .body(Full::new(Bytes::from(xml)))
            .unwrap());
    }
    if state.fault == Fault::Hang && (state.rule)(&parts.method, &target) {
        state.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            target: target.clone(),
            status: 0,
            dropped: true,
            sse: sse_of(&parts.headers),
        });
        std::future::pending::<()>().await;
    }
    let mut up = Request::builder().method(parts.method.clone()).uri(&target);
    for (k, v) in &parts.headers {
        up = up.header(k, v);
    }
    let up = up.body(Full::new(body)).unwrap();
    let tcp = TcpStream::connect(state.upstream).await?;
    let tls = state
        .upstream_tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let resp = send.send_request(up).await.map_err(std::io::Error::other)?;
    let (rparts, rbody) = resp.into_parts();
    let rbody = rbody
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let drop_it = state.fault == Fault::DropAnswer
        && (state.rule)(&parts.method, &target)
        && rparts.status.is_success()
        && state.armed.swap(false, Ordering::SeqCst);
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        status: rparts.status.as_u16(),
        dropped: drop_it,
        sse: sse_of(&parts.headers),
    });
    if drop_it {
        // radosgw has applied the request; its answer goes nowhere, and the
        // connection (with every other) closes as the port does.
        state.refusing.send_replace(true);
        return Err(std::io::Error::other("answer dropped by the fault proxy"));
    }
    let mut out = Response::builder().status(rparts.status);
    for (k, v) in &rparts.headers {
        out = out.header(k, v);
    }
    Ok(out.body(Full::new(rbody)).unwrap())
}

/// An HTTPS server that completes TLS, reads whatever it is sent, and
/// never answers: a store that took the request and went silent.
pub struct BlackHole {
    pub addr: SocketAddr,
    /// Its certificate (PEM), for the sink's `ca_file`.
    pub cert: std::path::PathBuf,
    stop: watch::Sender<bool>,
}

impl BlackHole {
    pub async fn start(dir: &std::path::Path) -> Self {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join("black-hole.pem");
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(pair.cert.pem().as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pair.signing_key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let acceptor = acceptor.clone();
                        let mut stopped = stopped.clone();
                        tokio::spawn(async move {
                            let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                            let mut buf = vec![0u8; 1 << 16];
                            loop {
                                tokio::select! {
                                    n = tokio::io::AsyncReadExt::read(&mut tls, &mut buf) => {
                                        if matches!(n, Ok(0) | Err(_)) { return }
                                    }
                                    _ = stopped.changed() => return,
                                }
                            }
                        });
                    }
                    _ = stopped.changed() => return,
                }
            }
        });
        Self { addr, cert, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn sse_of(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get("x-amz-server-side-encryption")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
