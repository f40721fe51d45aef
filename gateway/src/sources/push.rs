//! The HTTPS push source: `POST /v1/push/{source}`.
//!
//! A request is handled top to bottom: authenticate, check the spool has
//! room, read the body within its limit, check an HMAC signature, decode,
//! split into records, run every pipeline of the source, commit all rows
//! in one spool transaction, and only then answer 200. Any failure before
//! the commit answers an error and keeps nothing, so a client that retries
//! after anything but a 200 causes no loss and no partial duplicates.

use crate::config::{AuthConfig, Config, Invalid, ResolvedAuth, invalid};
use crate::metrics::{Metrics, Rejection};
use crate::pipeline::{Pipeline, RunAllError};
use crate::sources::body::{self, BodyError};
use crate::spool::Spool;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// Config of a push source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// The listener (see `[listeners.NAME]`) that serves it.
    pub listener: String,
    /// How requests authenticate.
    pub auth: AuthConfig,
    /// Largest request body, as sent (compressed or not); 413 above it.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest body after decompression; 413 above it.
    #[serde(default = "default_max_decoded")]
    pub max_decoded_bytes: usize,
    /// Most records in one request; 413 above it.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Seconds in the `Retry-After` of a backpressure reply.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
}

fn default_max_body() -> usize {
    10 << 20
}
fn default_max_decoded() -> usize {
    100 << 20
}
fn default_max_records() -> usize {
    100_000
}
fn default_retry_after() -> u64 {
    5
}

impl PushConfig {
    /// Checks references and limits (no I/O).
    pub(crate) fn validate(&self, name: &str, config: &Config, out: &mut Vec<Invalid>) {
        if !config.listeners.contains_key(&self.listener) {
            out.push(invalid(
                &["sources", name, "listener"],
                format!("no listener named {:?}", self.listener),
            ));
        }
        for (key, v) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_decoded_bytes", self.max_decoded_bytes),
            ("max_records", self.max_records),
        ] {
            if v == 0 {
                out.push(invalid(&["sources", name, key], "must be positive"));
            }
        }
        if let AuthConfig::Hmac { header, .. } = &self.auth
            && HeaderValue::from_str(header).is_err()
        {
            out.push(invalid(
                &["sources", name, "auth", "header"],
                "not a valid header name",
            ));
        }
    }
}

/// Everything a request for one push source needs.
#[derive(Debug)]
pub struct PushSource {
    /// The source's name.
    pub name: Arc<str>,
    /// Its config.
    pub config: PushConfig,
    /// Its resolved credentials.
    pub auth: ResolvedAuth,
    /// The pipelines it feeds.
    pub pipelines: Vec<Arc<Pipeline>>,
}

impl PushSource {
    /// The sinks its pipelines write to (data and dead letters): it backs
    /// off when any of them is over its spool budget.
    pub fn sinks(&self) -> Vec<Arc<str>> {
        crate::pipeline::sinks_of(&self.pipelines)
    }
}

/// State shared by all requests.
#[derive(Debug)]
pub struct PushState {
    /// Sources by name.
    pub sources: std::collections::HashMap<String, PushSource>,
    /// The spool.
    pub spool: Arc<Spool>,
    /// Metrics.
    pub metrics: Metrics,
    /// Bounds how many transform calls run at once (one per worker thread).
    pub workers: Arc<Semaphore>,
    /// How long a request's body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Memory for request bodies in flight, shared by every listener.
    pub body_budget: BodyBudget,
}

type Reply = Response<Full<Bytes>>;

/// A refusal: status, reason label, and a message for the client and log.
struct Refusal {
    status: StatusCode,
    reason: Rejection,
    message: String,
    extra: Option<Box<serde_json::Value>>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Refusal {
    fn new(status: StatusCode, reason: Rejection, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            extra: None,
            headers: Vec::new(),
        }
    }
}

/// Handles one request.
pub async fn handle(state: Arc<PushState>, req: Request<Incoming>) -> Reply {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let Some(name) = path
        .strip_prefix("/v1/push/")
        .filter(|n| !n.is_empty() && !n.contains('/'))
    else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not found; push to /v1/push/{source}"}),
        );
    };
    let Some(source) = state.sources.get(name) else {
        state
            .metrics
            .push_rejected("unknown", Rejection::NotFound, "no such source");
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no push source named {name:?}")}),
        );
    };
    if req.method() != Method::POST {
        let mut r = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "use POST"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    match accept(&state, source, req).await {
        Ok((records, bytes)) => {
            state
                .metrics
                .push_accepted(&source.name, records, bytes, started.elapsed());
            json(StatusCode::OK, &serde_json::json!({"accepted": records}))
        }
        Err(r) => {
            state
                .metrics
                .push_rejected(&source.name, r.reason, &r.message);
            let mut body = serde_json::json!({"error": r.message});
            if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
                (r.extra.map(|e| *e), body.as_object_mut())
            {
                obj.extend(extra);
            }
            let mut reply = json(r.status, &body);
            reply.headers_mut().extend(r.headers);
            reply
        }
    }
}

/// Returns (records, body bytes) once every record is durably spooled.
async fn accept(
    state: &PushState,
    source: &PushSource,
    req: Request<Incoming>,
) -> Result<(usize, usize), Refusal> {
    let (parts, body) = req.into_parts();
    check_credentials(&source.auth, &parts.headers)?;
    let cfg = &source.config;
    if let Some((pipeline, transform)) = crate::pipeline::first_waiting(&source.pipelines) {
        let mut r = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Rejection::WaitingForTransform,
            format!(
                "pipeline `{pipeline}` waits for transform `{transform}` to be uploaded and activated; retry later"
            ),
        );
        r.headers
            .push((header::RETRY_AFTER, HeaderValue::from(cfg.retry_after_secs)));
        return Err(r);
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cfg.max_body_bytes as u64) {
        return Err(too_large(cfg.max_body_bytes));
    }
    backoff_if_full(state, source, 0, declared.unwrap_or(0))?;
    // Every byte held for this request (the body as sent, decompressed,
    // split into records) is charged to the gateway-wide budget first.
    let mut held = Held::new(&state.body_budget);
    let body = tokio::time::timeout(
        state.body_timeout,
        read_body(body, cfg.max_body_bytes, &mut held),
    )
    .await
    .map_err(|_| {
        Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            Rejection::Timeout,
            format!(
                "the body did not arrive within {} s",
                state.body_timeout.as_secs()
            ),
        )
    })??;
    let received_at_ms = chrono::Utc::now().timestamp_millis();
    let wire_bytes = body.len();
    check_signature(&source.auth, &parts.headers, &body)?;
    let header_str = |h: header::HeaderName| parts.headers.get(h).and_then(|v| v.to_str().ok());
    let decoded = body::decode(
        body,
        header_str(header::CONTENT_ENCODING),
        cfg.max_decoded_bytes,
        &mut |n| held.charge(n),
    )
    .map_err(|e| body_refusal(e, cfg))?;
    // The records are copies of the decoded body.
    if !held.charge(decoded.len()) {
        return Err(body_refusal(BodyError::Busy, cfg));
    }
    let records = body::split(&decoded, header_str(header::CONTENT_TYPE), cfg.max_records)
        .map_err(|e| body_refusal(e, cfg))?;
    drop(decoded);
    let count = records.len();
    if count == 0 {
        return Ok((0, wire_bytes));
    }
    let bytes: usize = records.iter().map(Vec::len).sum();
    backoff_if_full(state, source, count as u64, bytes as u64)?;
    let rows = crate::pipeline::run_all(
        &source.pipelines,
        &state.workers,
        Arc::new(records),
        received_at_ms,
    )
    .await
    .map_err(|e| match e {
        RunAllError::Closed => shutting_down(),
        other => internal(other.to_string()),
    })?;
    state.spool.append(rows).await.map_err(|e| {
        if e.is_disk_full() {
            let mut r = Refusal::new(
                StatusCode::INSUFFICIENT_STORAGE,
                Rejection::DiskFull,
                format!("not stored: {e}; retry later"),
            );
            r.headers.push((
                header::RETRY_AFTER,
                HeaderValue::from(source.config.retry_after_secs),
            ));
            r
        } else {
            internal(e.to_string())
        }
    })?;
    Ok((count, wire_bytes))
}

fn backoff_if_full(
    state: &PushState,
    source: &PushSource,
    records: u64,
    bytes: u64,
) -> Result<(), Refusal> {
    let Err(over) = state.spool.admission(&source.sinks(), records, bytes) else {
        return Ok(());
    };
    let mut refusal = Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Rejection::Backpressure,
        format!(
            "sink `{}` is over its spool budget ({}); retry later",
            over.sink, over.why
        ),
    );
    refusal.headers.push((
        header::RETRY_AFTER,
        HeaderValue::from(source.config.retry_after_secs),
    ));
    Err(refusal)
}

/// Bearer and basic credentials, checked before the body is read.
fn check_credentials(auth: &ResolvedAuth, headers: &HeaderMap) -> Result<(), Refusal> {
    let (scheme, expected) = match auth {
        ResolvedAuth::Bearer(token) => ("Bearer", token),
        ResolvedAuth::Basic(creds) => ("Basic", creds),
        ResolvedAuth::Hmac { .. } | ResolvedAuth::None => return Ok(()),
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
        .map(|(_, v)| v.trim());
    let challenge = if scheme == "Basic" {
        HeaderValue::from_static("Basic realm=\"sluice\"")
    } else {
        HeaderValue::from_static("Bearer realm=\"sluice\"")
    };
    let refusal = |message: &str| {
        let mut r = Refusal::new(StatusCode::UNAUTHORIZED, Rejection::Unauthorized, message);
        r.headers
            .push((header::WWW_AUTHENTICATE, challenge.clone()));
        r
    };
    match given {
        None => Err(refusal(&format!(
            "missing `Authorization: {scheme}` credentials"
        ))),
        Some(v) if expected.ct_eq(v.as_bytes()) => Ok(()),
        Some(_) => Err(refusal("wrong credentials")),
    }
}

/// HMAC-SHA256 over the body exactly as sent.
fn check_signature(auth: &ResolvedAuth, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let ResolvedAuth::Hmac { key, header } = auth else {
        return Ok(());
    };
    use hmac::Mac;
    let Some(given) = headers.get(header.as_str()).and_then(|v| v.to_str().ok()) else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            Rejection::Unauthorized,
            format!("missing signature header `{header}`"),
        ));
    };
    let given = given.trim();
    let given = given.strip_prefix("sha256=").unwrap_or(given);
    let forbidden = || {
        Refusal::new(
            StatusCode::FORBIDDEN,
            Rejection::Unauthorized,
            "signature does not match the body",
        )
    };
    let given = hex::decode(given).map_err(|_| forbidden())?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key.expose()).map_err(|_| forbidden())?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| forbidden())
}

fn body_refusal(e: BodyError, cfg: &PushConfig) -> Refusal {
    if matches!(e, BodyError::Busy) {
        let mut r = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Backpressure,
            e.to_string(),
        );
        r.headers
            .push((header::RETRY_AFTER, HeaderValue::from(cfg.retry_after_secs)));
        return r;
    }
    let (status, reason) = match e {
        BodyError::TooLarge { .. } | BodyError::TooManyRecords { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, Rejection::TooManyRecords)
        }
        BodyError::UnsupportedEncoding(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, Rejection::Malformed)
        }
        _ => (StatusCode::BAD_REQUEST, Rejection::Malformed),
    };
    let reason = if matches!(e, BodyError::TooLarge { .. }) {
        Rejection::TooLarge
    } else {
        reason
    };
    let mut r = Refusal::new(status, reason, e.to_string());
    if let BodyError::Malformed { line, column, .. } = e {
        r.extra = Some(Box::new(
            serde_json::json!({"line": line, "column": column}),
        ));
    }
    r
}

/// The memory budget of request bodies in flight, shared by every push
/// source of the gateway (`[limits] max_body_memory_bytes`), in KiB.
#[derive(Debug, Clone)]
pub struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let kib = usize::try_from(bytes / 1024)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self(Arc::new(Semaphore::new(kib)))
    }
}

/// What one request holds of the budget; given back when dropped.
struct Held {
    budget: BodyBudget,
    permits: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Held {
    fn new(budget: &BodyBudget) -> Self {
        Self {
            budget: budget.clone(),
            permits: None,
        }
    }

    /// Takes `bytes` more, without waiting: `false` when the budget is
    /// spent (the request is answered 503 rather than queued in memory).
    fn charge(&mut self, bytes: usize) -> bool {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        if kib == 0 {
            return true;
        }
        match self.budget.0.clone().try_acquire_many_owned(kib) {
            Ok(p) => {
                match &mut self.permits {
                    Some(held) => held.merge(p),
                    None => self.permits = Some(p),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// Reads the body within `limit` bytes, charging each piece as it comes.
async fn read_body(mut body: Incoming, limit: usize, held: &mut Held) -> Result<Bytes, Refusal> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                Rejection::Malformed,
                format!("cannot read the body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(too_large(limit));
        }
        if !held.charge(data.len()) {
            let mut r = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Rejection::Backpressure,
                BodyError::Busy.to_string(),
            );
            r.headers
                .push((header::RETRY_AFTER, HeaderValue::from_static("1")));
            return Err(r);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

fn too_large(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Rejection::TooLarge,
        format!("the body exceeds this source's limit of {limit} bytes"),
    )
}

fn internal(message: String) -> Refusal {
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        Rejection::Internal,
        format!("not stored: {message}"),
    )
}

fn shutting_down() -> Refusal {
    let mut r = Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Rejection::Internal,
        "shutting down",
    );
    r.headers
        .push((header::RETRY_AFTER, HeaderValue::from_static("5")));
    r
}

/// A JSON reply.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
