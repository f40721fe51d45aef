//! The admin listener: `/metrics`, `/healthz`, `/readyz` (open), and,
//! with the bearer token of `[admin] token`, the transforms API under
//! `/v1/transforms` and the backfills API under `/v1/backfills`
//! (`POST` `{"source", "since", "until"}`, `GET`/`DELETE /v1/backfills/{id}`;
//! see `commands::backfill`). The transforms API:
//!
//! - `PUT /v1/transforms/{name}` — body: the component. Query: `config=K=V`
//!   (repeatable; the test config), `sample=<JSON>` (repeatable; records
//!   that must go through), `activate=true`. The component is checked
//!   (a component of a contract version the host runs, nothing imported
//!   beyond what the host provides, instantiates with the test config,
//!   processes the samples) before it is stored as the next version.
//! - `GET /v1/transforms`, `GET /v1/transforms/{name}/versions`.
//! - `POST /v1/transforms/{name}/activate` — `{"version": N}` or
//!   `{"sha256": "…"}`; rollback is activating an older version.
//! - `DELETE /v1/transforms/{name}/versions/{N}` — an inactive version.
//!
//! Every refusal is a 4xx with `{"error", "kind"}` and changes nothing.
//! Activations are serialised; each compiles the component once, checks
//! that every following pipeline can instantiate it with its own config,
//! and only then swaps them all (see `Pipeline::commit_swap`).
//!
//! In cluster mode uploads, activations and removals change the cluster's
//! registry in etcd (`cluster::registry`; 503 `cluster_unavailable` when it
//! cannot be reached, and then nothing changed), and every replica applies
//! the new active versions from its watch ([`apply_cluster`]).

use crate::config::SecretValue;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::sources::push::json;
use crate::spool::Spool;
use crate::store::{Store, StoreError, Which};
use crate::wasm::{WasmError, WasmHost, Worker};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

type Reply = Response<Full<Bytes>>;

/// What the admin endpoints read and change.
#[derive(Debug)]
pub struct AdminState {
    /// Metrics to expose.
    pub metrics: Metrics,
    /// The spool, for its gauges.
    pub spool: Arc<Spool>,
    /// True once every listener and sink has started; false again when
    /// shutdown begins.
    pub ready: AtomicBool,
    /// The bearer token of the `/v1/…` APIs; without it they answer 403.
    pub token: Option<SecretValue>,
    /// The transforms API (when a token is configured).
    pub transforms: Option<Arc<TransformsApi>>,
    /// Backfills run inside the gateway (when a token is configured).
    pub backfills: Option<Arc<crate::commands::backfill::Backfills>>,
}

/// Everything the transforms API needs.
#[derive(Debug)]
pub struct TransformsApi {
    /// Where uploads go.
    pub store: Arc<Store>,
    /// The wasm host (to compile and check uploads).
    pub host: WasmHost,
    /// Every pipeline, to swap.
    pub pipelines: Vec<Arc<Pipeline>>,
    /// `name@sha256:…` references in the config (their versions stay).
    pub pinned: Vec<String>,
    /// Largest upload.
    pub max_upload: usize,
    /// Serialises activations.
    pub swap_lock: tokio::sync::Mutex<()>,
    /// Cluster mode: the registry every change goes through.
    pub registry: Option<Arc<crate::cluster::registry::Registry>>,
}

/// Where an activation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// This replica's admin API: it changes the registry.
    Api,
    /// The cluster's registry, already mirrored locally: only applied.
    Cluster,
}

/// A registry failure as the API answers it.
fn registry_refusal(e: crate::cluster::registry::RegistryError) -> Refused {
    use crate::cluster::registry::RegistryError;
    match e {
        RegistryError::Store(e) => store_refusal(e),
        e @ RegistryError::Cluster(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            format!("{e}; nothing was changed, try again"),
        ),
    }
}

/// Cluster mode: runs the active versions of the cluster's registry (just
/// mirrored into the local store) in every pipeline that follows them and
/// does not run them yet, with the same checks and hot swap as an
/// activation through the API. A version that cannot run here is logged
/// and counted; the pipelines keep what they run.
pub async fn apply_cluster(
    metrics: &Metrics,
    api: &TransformsApi,
    index: &std::collections::BTreeMap<String, crate::store::Entry>,
) {
    for (name, entry) in index {
        let Some(v) = entry.active_version() else {
            continue;
        };
        if api.pipelines.iter().all(|p| p.runs(name, &v.sha256)) {
            continue;
        }
        if let Err((_, _, message)) = activate_version(
            metrics,
            api,
            name,
            &Which::Version(v.version),
            Origin::Cluster,
        )
        .await
        {
            tracing::error!(
                transform = name.as_str(),
                version = v.version,
                error = message.as_str(),
                "the cluster activated a version this replica cannot run; its pipelines keep the previous one"
            );
        }
    }
}

/// Handles one admin request.
pub async fn handle(state: Arc<AdminState>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/metrics" => metrics(&state).await,
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/readyz" => {
            let stopped = state.metrics.stopped_sinks();
            let waiting: serde_json::Map<String, Value> = state
                .transforms
                .iter()
                .flat_map(|api| &api.pipelines)
                .filter_map(|p| {
                    let w = p.waiting();
                    (!w.is_empty()).then(|| (p.name.to_string(), w.into()))
                })
                .collect();
            if !state.ready.load(Ordering::Acquire) {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "not ready"}),
                )
            } else if !stopped.is_empty() {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "sink stopped", "stopped_sinks": stopped}),
                )
            } else if !waiting.is_empty() {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({
                        "status": "waiting for transforms",
                        "waiting_pipelines": waiting,
                        "hint": "upload and activate each: sluice transform push NAME FILE.wasm --activate",
                    }),
                )
            } else {
                let mut body = serde_json::json!({"status": "ready"});
                // Cluster mode: etcd and the sources led here. Push and
                // delivery do not need etcd, so this is detail, not a 503.
                if let Some(view) = state.metrics.cluster_view() {
                    body["cluster"] = serde_json::to_value(view).unwrap_or_default();
                }
                json(StatusCode::OK, &body)
            }
        }
        p if p.starts_with("/v1/") => {
            let Some(token) = &state.token else {
                return error(
                    StatusCode::FORBIDDEN,
                    "disabled",
                    "the admin API is off: set [admin] token",
                );
            };
            if let Err(reason) = authorized(token, req.headers()) {
                let peer = req
                    .extensions()
                    .get::<crate::sources::server::PeerAddr>()
                    .map(|p| p.0);
                state.metrics.admin_auth_failed(peer, &path, reason);
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong bearer token",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"sluice-admin\""),
                );
                return r;
            }
            match (&state.transforms, &state.backfills) {
                (Some(api), _) if p == "/v1/transforms" || p.starts_with("/v1/transforms/") => {
                    transforms(&state.metrics, api, req).await
                }
                (_, Some(b)) if p == "/v1/backfills" || p.starts_with("/v1/backfills/") => {
                    backfills(b, req).await
                }
                _ => json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": "not found"}),
                ),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not found"}),
        ),
    }
}

async fn metrics(state: &AdminState) -> Reply {
    let spool = state.spool.clone();
    let metrics = state.metrics.clone();
    // Reading the logs' state takes locks the writer holds briefly: keep
    // it off the reactor.
    let body = tokio::task::spawn_blocking(move || {
        let now = chrono::Utc::now().timestamp_millis();
        for (sink, log) in spool.logs() {
            let (records, bytes) = log.depth();
            let age = log
                .oldest_ms()
                .map_or(0.0, |ms| (now - ms).max(0) as f64 / 1000.0);
            let over = spool.admission(&[sink.into()], 0, 0).is_err();
            metrics.spool_depth(sink, records, bytes, age, over);
        }
        metrics.render()
    })
    .await
    .unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `Err("missing")` or `Err("wrong")` when the bearer token is not right.
fn authorized(token: &SecretValue, headers: &header::HeaderMap) -> Result<(), &'static str> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("missing")?;
    if token.ct_eq(given.trim().as_bytes()) {
        Ok(())
    } else {
        Err("wrong")
    }
}

/// `POST /v1/backfills` (`{"source", "since", "until"}`), `GET` and
/// `DELETE /v1/backfills/{id}`.
async fn backfills(b: &Arc<crate::commands::backfill::Backfills>, req: Request<Incoming>) -> Reply {
    use crate::commands::backfill::BackfillError;
    let path = req.uri().path().trim_end_matches('/').to_string();
    let id = path
        .strip_prefix("/v1/backfills/")
        .map(|id| id.parse::<u64>().ok());
    let status = |s: Option<crate::commands::backfill::Status>| match s {
        Some(s) => json(StatusCode::OK, &serde_json::to_value(s).unwrap_or_default()),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such backfill"),
    };
    match (req.method().clone(), id) {
        (Method::POST, None) => {
            let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large");
                }
            };
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        &format!("not JSON: {e}"),
                    );
                }
            };
            let (Some(source), Some(since)) = (v["source"].as_str(), v["since"].as_str()) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "send {\"source\": …, \"since\": …, \"until\": …}",
                );
            };
            match b.start(source, since, v["until"].as_str()) {
                Ok(s) => json(
                    StatusCode::ACCEPTED,
                    &serde_json::to_value(s).unwrap_or_default(),
                ),
                Err(e @ (BackfillError::NotAPoller(_) | BackfillError::Run(_))) => {
                    error(StatusCode::NOT_FOUND, "not_found", &e.to_string())
                }
                Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
            }
        }
        (Method::GET, Some(Some(id))) => status(b.status(id)),
        (Method::DELETE, Some(Some(id))) => status(b.cancel(id)),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such backfills endpoint",
        ),
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Reply {
    error_with(status, kind, message, Value::Null)
}

/// An error reply with more fields (those of `extra`, an object).
fn error_with(status: StatusCode, kind: &str, message: &str, extra: Value) -> Reply {
    let mut doc = serde_json::json!({"error": message, "kind": kind});
    if let (Some(obj), Value::Object(extra)) = (doc.as_object_mut(), extra) {
        obj.extend(extra.into_iter().filter(|(_, v)| !v.is_null()));
    }
    json(status, &doc)
}

async fn transforms(metrics: &Metrics, api: &TransformsApi, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path
        .trim_start_matches("/v1/transforms")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, []) => list(api),
        (Method::GET, [name, "versions"]) => match api.store.get(name) {
            Some(e) => json(StatusCode::OK, &entry_json(api, name, &e)),
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no transform named {name:?}"),
            ),
        },
        (Method::PUT, [name]) => {
            let name = (*name).to_string();
            upload(metrics, api, &name, req).await
        }
        (Method::POST, [name, "activate"]) => {
            let name = (*name).to_string();
            let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        "the activation body is too large",
                    );
                }
            };
            let which = match serde_json::from_slice::<Value>(&body) {
                Ok(v) => match (
                    v.get("version").and_then(Value::as_u64),
                    v.get("sha256").and_then(Value::as_str),
                ) {
                    (Some(n), _) => Which::Version(u32::try_from(n).unwrap_or(u32::MAX)),
                    (None, Some(s)) => Which::Sha256(s.to_ascii_lowercase()),
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "send {\"version\": N} or {\"sha256\": \"…\"}",
                        );
                    }
                },
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        &format!("the body is not JSON: {e}"),
                    );
                }
            };
            activate(metrics, api, &name, &which).await
        }
        (Method::DELETE, [name, "versions", version]) => {
            let Ok(n) = version.parse::<u32>() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the version must be a number",
                );
            };
            let entry = api.store.get(name);
            let sha = entry
                .as_ref()
                .and_then(|e| e.find(&Which::Version(n)))
                .map(|v| v.sha256.clone());
            if let Some(sha) = &sha
                && api
                    .pinned
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&format!("{name}@sha256:{sha}")))
            {
                return error(
                    StatusCode::CONFLICT,
                    "in_use",
                    "a pipeline of the config pins this version",
                );
            }
            let removed = match &api.registry {
                Some(r) => r
                    .remove(name, &Which::Version(n))
                    .await
                    .map_err(registry_refusal),
                None => api
                    .store
                    .remove(name, &Which::Version(n))
                    .map_err(store_refusal),
            };
            match removed {
                Ok(v) => json(StatusCode::OK, &serde_json::json!({"removed": v})),
                Err((status, kind, message)) => error(status, kind, &message),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such transforms endpoint",
        ),
    }
}

fn store_refusal(e: StoreError) -> Refused {
    match e {
        StoreError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
        StoreError::InUse(m) => (StatusCode::CONFLICT, "in_use", m),
        e @ StoreError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()),
    }
}

fn entry_json(api: &TransformsApi, name: &str, e: &crate::store::Entry) -> Value {
    let pipelines: Vec<&str> = api
        .pipelines
        .iter()
        .filter(|p| p.follows().iter().any(|f| f == name))
        .map(|p| &*p.name)
        .collect();
    serde_json::json!({
        "name": name,
        "active": e.active,
        "active_sha256": e.active_version().map(|v| v.sha256.clone()),
        "versions": e.versions,
        "pipelines": pipelines,
    })
}

fn list(api: &TransformsApi) -> Reply {
    let all: Vec<Value> = api
        .store
        .list()
        .iter()
        .map(|(n, e)| entry_json(api, n, e))
        .collect();
    json(StatusCode::OK, &Value::Array(all))
}

/// A refused upload: status, metric reason, message.
fn refuse(metrics: &Metrics, name: &str, status: StatusCode, reason: &str, message: &str) -> Reply {
    metrics.upload_rejected(name, reason, message);
    error(status, reason, message)
}

async fn upload(
    metrics: &Metrics,
    api: &TransformsApi,
    name: &str,
    req: Request<Incoming>,
) -> Reply {
    if !crate::store::valid_name(name) {
        return refuse(
            metrics,
            name,
            StatusCode::BAD_REQUEST,
            "bad_name",
            "names are 1-64 of A-Z a-z 0-9 . _ -",
        );
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let mut config = Vec::new();
    let mut samples = Vec::new();
    let mut activate_after = false;
    for (k, v) in form_pairs(&query) {
        match k.as_str() {
            "config" => match v.split_once('=') {
                Some((ck, cv)) if !ck.is_empty() => config.push((ck.to_string(), cv.to_string())),
                _ => {
                    return refuse(
                        metrics,
                        name,
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "config must be KEY=VALUE",
                    );
                }
            },
            "sample" => samples.push(v.into_bytes()),
            "activate" => activate_after = v == "true" || v == "1",
            other => {
                return refuse(
                    metrics,
                    name,
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("unknown parameter {other:?}"),
                );
            }
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // Refused on the declared length before reading, or on the bytes read.
    let too_large = || {
        refuse(
            metrics,
            name,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!(
                "the component exceeds the upload limit of {} bytes",
                api.max_upload
            ),
        )
    };
    if declared.is_some_and(|n| n > api.max_upload as u64) {
        return too_large();
    }
    let bytes = match Limited::new(req.into_body(), api.max_upload)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => {
            return refuse(
                metrics,
                name,
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("cannot read the body: {e}"),
            );
        }
    };
    let sha = crate::util::hex_sha256(&bytes);
    // Without a test config, the component is checked with the config of
    // every pipeline step that follows the name: what activation will use.
    let (configs, checked_with) = if config.is_empty() {
        let following: Vec<(String, Vec<(String, String)>)> = api
            .pipelines
            .iter()
            .flat_map(|p| {
                p.configs_for(name)
                    .into_iter()
                    .map(|c| (p.name.to_string(), c))
            })
            .collect();
        if following.is_empty() {
            (
                vec![Vec::new()],
                format!(
                    "an empty config (no pipeline uses {name:?}; give --config KEY=VALUE to test one)"
                ),
            )
        } else {
            let names: Vec<&str> = following.iter().map(|(p, _)| p.as_str()).collect();
            let with = format!("the config of pipeline(s) {}", names.join(", "));
            (following.into_iter().map(|(_, c)| c).collect(), with)
        }
    } else {
        (vec![config], "the given --config".to_string())
    };
    let host = api.host.clone();
    let owned_name = name.to_string();
    let check_bytes = bytes.clone();
    let checked = tokio::task::spawn_blocking(move || {
        check(&host, &owned_name, &check_bytes, &configs, &samples)
    })
    .await;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => {
            let message = format!("{} (checked with {checked_with})", refusal.message);
            metrics.upload_rejected(name, refusal.reason, &message);
            return error_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                refusal.reason,
                &message,
                serde_json::json!({"sample": refusal.sample}),
            );
        }
        Err(e) => {
            return refuse(
                metrics,
                name,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            );
        }
    }
    let added = match &api.registry {
        Some(r) => r.add(name, &bytes, &sha).await.map_err(registry_refusal),
        None => api.store.add(name, &bytes, &sha).map_err(store_refusal),
    };
    let version = match added {
        Ok(v) => v,
        Err((status, kind, message)) => return error(status, kind, &message),
    };
    metrics.transform_uploaded(name, version.version, &sha);
    let mut answer = serde_json::json!({
        "name": name,
        "version": version.version,
        "sha256": sha,
        "size": version.size,
        "checked_with": checked_with,
    });
    if activate_after {
        match activate_version(
            metrics,
            api,
            name,
            &Which::Version(version.version),
            Origin::Api,
        )
        .await
        {
            Ok(activated) => {
                if let (Some(a), Some(obj)) = (activated.as_object(), answer.as_object_mut()) {
                    for key in ["previous", "pipelines", "swap_ms", "warning"] {
                        if let Some(v) = a.get(key) {
                            obj.insert(key.into(), v.clone());
                        }
                    }
                }
            }
            Err((status, kind, message)) => {
                return error_with(
                    status,
                    kind,
                    &format!(
                        "stored as version {}; activation refused: {message}",
                        version.version
                    ),
                    serde_json::json!({"version": version.version, "sha256": sha, "stored": true}),
                );
            }
        }
    }
    let active = api.store.get(name).and_then(|e| e.active) == Some(version.version);
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("active".into(), active.into());
    }
    json(StatusCode::CREATED, &answer)
}

/// Why an upload check failed.
struct CheckRefusal {
    /// The `kind` (and metric reason).
    reason: &'static str,
    /// What happened.
    message: String,
    /// The 1-based number of the sample that failed, if one did.
    sample: Option<usize>,
}

impl CheckRefusal {
    fn new(reason: &'static str, message: String) -> Self {
        Self {
            reason,
            message,
            sample: None,
        }
    }
}

/// The upload checks, in order: a component of the right world, that
/// instantiates with each config, and runs every sample (with the first
/// config) without error. A sample that traps is found by running them one
/// at a time, as the gateway does with a batch.
fn check(
    host: &WasmHost,
    name: &str,
    bytes: &[u8],
    configs: &[Vec<(String, String)>],
    samples: &[Vec<u8>],
) -> Result<(), CheckRefusal> {
    let component = host.load(name, bytes).map_err(|e| {
        let reason = match &e {
            WasmError::NotWasm { .. } => "not_a_component",
            WasmError::CoreModule { .. } => "core_module",
            WasmError::Imports { .. } => "imports",
            WasmError::WrongWorld { .. } => "wrong_world",
            _ => "invalid_component",
        };
        CheckRefusal::new(reason, e.to_string())
    })?;
    let mut workers = Vec::with_capacity(configs.len());
    for config in configs {
        workers.push(Worker::new(component.clone(), config.clone()).map_err(|e| {
            let reason = match &e {
                WasmError::Config { .. } => "config_rejected",
                WasmError::Trap { .. } => "trap_at_init",
                _ => "instantiate_failed",
            };
            CheckRefusal::new(reason, e.to_string())
        })?);
    }
    let Some(worker) = workers.first_mut() else {
        return Ok(());
    };
    if samples.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let inputs: Vec<_> = samples
        .iter()
        .map(|s| crate::wasm::input_record(s.clone(), "upload-check", &now, None))
        .collect();
    let results = match worker.process(&inputs) {
        Ok(results) => results,
        Err(e) if e.is_batch_failure() => {
            for (i, input) in inputs.iter().enumerate() {
                if let Err(e) = worker.process(std::slice::from_ref(input)) {
                    return Err(CheckRefusal {
                        reason: "trap_on_sample",
                        message: format!("sample {} trapped: {e}", i + 1),
                        sample: Some(i + 1),
                    });
                }
            }
            return Err(CheckRefusal::new("trap_on_sample", e.to_string()));
        }
        Err(e) => return Err(CheckRefusal::new("trap_on_sample", e.to_string())),
    };
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            return Err(CheckRefusal {
                reason: "sample_failed",
                message: format!(
                    "sample {} failed: {}: {}",
                    i + 1,
                    crate::wasm::error_kind_str(e.kind),
                    e.message
                ),
                sample: Some(i + 1),
            });
        }
    }
    Ok(())
}

async fn activate(metrics: &Metrics, api: &TransformsApi, name: &str, which: &Which) -> Reply {
    match activate_version(metrics, api, name, which, Origin::Api).await {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err((status, kind, message)) => error(status, kind, &message),
    }
}

/// A refused activation: status, kind, message.
type Refused = (StatusCode, &'static str, String);

/// Activates a stored version: compiles it once, checks that every
/// following pipeline can instantiate it with its own config, and only
/// then swaps them all. Refusals change nothing and are logged.
async fn activate_version(
    metrics: &Metrics,
    api: &TransformsApi,
    name: &str,
    which: &Which,
    origin: Origin,
) -> Result<Value, Refused> {
    let started = std::time::Instant::now();
    let _serial = api.swap_lock.lock().await;
    if origin == Origin::Cluster
        && let Some(v) = api.store.get(name).and_then(|e| e.find(which).cloned())
        && api.pipelines.iter().all(|p| p.runs(name, &v.sha256))
    {
        // Applied meanwhile (by this replica's own activation).
        return Ok(serde_json::json!({"name": name, "version": v.version}));
    }
    let entry = api.store.get(name).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no transform named {name:?}"),
        )
    })?;
    let version = entry.lookup(which).cloned().map_err(|why| {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            format!("transform {name:?}: {why}"),
        )
    })?;
    let bytes = api.store.blob(&version.sha256).map_err(store_refusal)?;
    let host = api.host.clone();
    let pipelines = api.pipelines.clone();
    let owned = name.to_string();
    let prepared = tokio::task::spawn_blocking(move || {
        let component = host.load(&owned, &bytes).map_err(|e| e.to_string())?;
        let mut prepared = Vec::new();
        for p in &pipelines {
            if let Some(swap) = p
                .prepare_swap(&owned, &component)
                .map_err(|e| e.to_string())?
            {
                prepared.push((p.clone(), swap));
            }
        }
        Ok::<_, String>(prepared)
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| {
        metrics.activation_refused(name, version.version, &e);
        (StatusCode::UNPROCESSABLE_ENTITY, "activation_failed", e)
    })?;
    let (_, previous) = match (origin, &api.registry) {
        (Origin::Api, Some(r)) => r
            .activate(name, &Which::Version(version.version))
            .await
            .map_err(registry_refusal)?,
        _ => api
            .store
            .activate(name, &Which::Version(version.version))
            .map_err(store_refusal)?,
    };
    // From the cluster, the mirror already holds the new active version:
    // what it replaces is what the pipelines ran.
    let previous = match origin {
        Origin::Cluster => entry
            .versions
            .iter()
            .find(|x| {
                api.pipelines
                    .iter()
                    .any(|p| p.follows().iter().any(|f| f == name) && p.runs(name, &x.sha256))
            })
            .map(|x| x.version),
        Origin::Api => previous,
    };
    let swapped: Vec<String> = prepared.iter().map(|(p, _)| p.name.to_string()).collect();
    for (p, swap) in prepared {
        let was_waiting = p.waiting();
        p.commit_swap(swap);
        for t in was_waiting.iter().filter(|t| !p.waiting().contains(t)) {
            metrics.pipeline_waiting(&p.name, t, false);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let previous_sha = previous.and_then(|v| {
        entry
            .find(&Which::Version(v))
            .map(|x| (v, x.sha256.clone()))
    });
    metrics.transform_active(
        name,
        version.version,
        &version.sha256,
        previous_sha.as_ref().map(|(v, s)| (*v, s.as_str())),
    );
    metrics.transform_swapped(name, version.version, swapped.len(), seconds);
    let mut answer = serde_json::json!({
        "name": name,
        "version": version.version,
        "sha256": version.sha256,
        "previous": previous,
        "pipelines": swapped,
        // Tenths of a millisecond: more digits are noise.
        "swap_ms": (seconds * 1e4).round() / 10.0,
    });
    if swapped.is_empty() {
        metrics.activated_unfollowed(name, version.version);
        if let Some(obj) = answer.as_object_mut() {
            obj.insert(
                "warning".into(),
                format!("no pipeline of the config uses {name:?} (use = \"{name}\"): nothing runs this version").into(),
            );
        }
    }
    Ok(answer)
}

/// `application/x-www-form-urlencoded` pairs of a query string.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Form decoding: `+` is a space, then `%XX` escapes.
fn decode(s: &str) -> String {
    crate::util::percent_decode(&s.replace('+', " "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_decoding_and_names() {
        let pairs = super::form_pairs("config=a%3Db&sample=%7B%22x%22%3A1%7D&activate=true&q=a+b");
        assert_eq!(pairs[0], ("config".into(), "a=b".into()));
        assert_eq!(pairs[1].1, "{\"x\":1}");
        assert_eq!(pairs[3].1, "a b");
        assert!(crate::store::valid_name("ecs-jumpcloud.v2_x"));
        assert!(
            !crate::store::valid_name("a/b")
                && !crate::store::valid_name("")
                && !crate::store::valid_name("x@sha256:1")
        );
    }
}
