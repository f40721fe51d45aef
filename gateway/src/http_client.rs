//! A small HTTPS client for the pollers: one TLS connection per request
//! (pollers make one request per page, so pooling would buy little),
//! rustls with Mozilla's roots plus optional extra CAs, a timeout per
//! request and a cap on the response size, optionally through an HTTP
//! CONNECT proxy ([`crate::egress`]). HTTPS only: API keys never travel in
//! clear text, and a proxy only ever sees a tunnel.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Largest response body accepted.
const MAX_BODY: usize = 256 << 20;

/// Why a request failed. Never contains header values (they carry keys).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not an `https://` URL with a host.
    #[error("bad URL {0:?}: only https:// URLs with a host are allowed")]
    Url(String),
    /// The extra CA file could not be used.
    #[error("CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Connecting, TLS, or the HTTP exchange failed.
    #[error("{host}: {reason}")]
    Network {
        /// The host.
        host: String,
        /// What happened.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("{host}: no answer within {timeout:?}")]
    Timeout {
        /// The host.
        host: String,
        /// The timeout.
        timeout: Duration,
    },
}

impl HttpError {
    /// Whether retrying later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, HttpError::Network { .. } | HttpError::Timeout { .. })
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The client.
#[derive(Clone)]
pub struct HttpClient {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
    loopback_http: bool,
    proxy: Option<crate::egress::Proxy>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client trusting Mozilla's roots and, if given, the CAs in `ca_file`
    /// and in the proxy's `ca_file`, connecting through `proxy` (unless its
    /// `no_proxy` exempts the host).
    ///
    /// # Errors
    ///
    /// [`HttpError::Ca`] when a file cannot be read or holds no certificate.
    pub fn new(
        ca_file: Option<&Path>,
        proxy: Option<crate::egress::Proxy>,
        timeout: Duration,
    ) -> Result<Self, HttpError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let proxy_ca = proxy.as_ref().and_then(|p| p.ca_file.clone());
        for path in [ca_file, proxy_ca.as_deref()].into_iter().flatten() {
            let ca = |reason: String| HttpError::Ca {
                path: path.display().to_string(),
                reason,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca("no CERTIFICATE block".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| ca(e.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Ca {
                path: String::new(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeout,
            loopback_http: false,
            proxy,
        })
    }

    /// Also allows `http://` to loopback addresses (the CLI talking to a
    /// local admin listener). Never used for third-party APIs.
    #[must_use]
    pub fn allow_loopback_http(mut self) -> Self {
        self.loopback_http = true;
        self
    }

    /// Sends one request and reads the whole response.
    ///
    /// # Errors
    ///
    /// [`HttpError`]; an HTTP error status is a successful [`Response`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        let uri: Uri = url.parse().map_err(|_| HttpError::Url(url.to_string()))?;
        let host = uri
            .host()
            .ok_or_else(|| HttpError::Url(url.to_string()))?
            .to_string();
        let loopback = matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]" | "::1");
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.loopback_http && loopback => {}
            _ => return Err(HttpError::Url(url.to_string())),
        }
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(method, &uri, &host, headers, body)).await
        {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout { host, timeout }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        uri: &Uri,
        host: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        let net = |reason: String| HttpError::Network {
            host: host.to_string(),
            reason,
        };
        let port = uri.port_u16().unwrap_or(443);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        // Only https goes through a proxy: plain http is for the loopback
        // admin API alone.
        let tcp = match &self.proxy {
            Some(p) if uri.scheme_str() == Some("https") && p.applies_to(bare) => {
                p.connect(bare, port).await.map_err(net)?
            }
            _ => tokio::net::TcpStream::connect((bare, port))
                .await
                .map_err(|e| net(format!("connect: {e}")))?,
        };
        let _ = tcp.set_nodelay(true);
        let mut sender = if uri.scheme_str() == Some("http") {
            handshake(tcp).await.map_err(net)?
        } else {
            let name = ServerName::try_from(bare.to_string()).map_err(|e| net(e.to_string()))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| net(format!("TLS: {e}")))?;
            handshake(tls).await.map_err(net)?
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map_or(host, |a| a.as_str());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| net(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| net(crate::util::error_chain(&e)))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                net(format!(
                    "reading the body: {}",
                    crate::util::error_chain(&*e)
                ))
            })?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// An HTTP/1.1 connection over `io`, driven on its own task.
async fn handshake<T>(io: T) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| crate::util::error_chain(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP
/// date) or `RateLimit-Reset` (seconds).
pub fn retry_after(resp: &Response) -> Option<Duration> {
    if let Some(v) = resp.header("retry-after") {
        if let Ok(secs) = v.trim().parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(when) = chrono::DateTime::parse_from_rfc2822(v.trim()) {
            let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0);
            return Some(Duration::from_secs(secs as u64));
        }
    }
    resp.header("ratelimit-reset")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
