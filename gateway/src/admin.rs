//! The admin listener: `/metrics`, `/healthz`, `/readyz`.

use crate::metrics::Metrics;
use crate::sources::push::json;
use crate::spool::Spool;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// Metrics to expose.
    pub metrics: Metrics,
    /// The spool, for its gauges.
    pub spool: Arc<Spool>,
    /// True once every listener and sink has started; false again when
    /// shutdown begins.
    pub ready: AtomicBool,
}

/// Handles one admin request.
pub async fn handle(state: Arc<AdminState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let spool = state.spool.clone();
            let metrics = state.metrics.clone();
            // The oldest-record query touches SQLite: keep it off the reactor.
            let body = tokio::task::spawn_blocking(move || {
                let (records, bytes) = spool.depth();
                metrics.spool_records.set(records as i64);
                metrics.spool_bytes.set(bytes as i64);
                let age = match spool.oldest_received_ms() {
                    Ok(Some(ms)) => {
                        (chrono::Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0
                    }
                    _ => 0.0,
                };
                metrics.spool_oldest_age.set(age);
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
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/readyz" => {
            if state.ready.load(Ordering::Acquire) {
                json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "not ready"}),
                )
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not found"}),
        ),
    }
}
