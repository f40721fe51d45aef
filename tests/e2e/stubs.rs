//! Local HTTPS servers that behave as the JumpCloud Directory Insights and
//! JupiterOne APIs are documented to behave (shared/reference/jumpcloud.md
//! section 1, jupiterone.md section 1). They are the only stand-ins the
//! tests use, for services that cannot be reached from here; they follow
//! the documentation, not sluice's code.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A fault to answer the next matching request with, instead of data.
#[derive(Debug, Clone)]
pub enum Fault {
    /// No fault: answer normally (to place a later fault in the queue).
    None,
    /// This status, with an optional `Retry-After` and extra headers.
    Status(u16, Option<String>, Vec<(String, String)>),
    /// A 200 whose body is not valid JSON.
    Malformed,
    /// A 200 with a GraphQL `errors` array (JupiterOne).
    GraphqlError(String),
    /// Hold the request until `release` is notified (to kill sluice while
    /// it waits for a page, or to make it time out).
    Hang(Arc<Notify>),
    /// Close the connection without an answer: a network error.
    Drop,
    /// Hold the request until `release` is notified, then answer it
    /// normally (to pause sluice while a page is in flight).
    Delay(Arc<Notify>),
}

/// Marks a response that must not be sent: the connection is closed.
#[derive(Debug, Clone, Copy)]
struct CloseConnection;

/// An HTTPS server on 127.0.0.1 with a self-signed certificate.
pub struct Stub {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate (PEM), for the poller's `ca_file`.
    pub cert: PathBuf,
}

impl Stub {
    /// `https://localhost:<port>`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

type Handler = Arc<
    dyn Fn(
            hyper::Method,
            String,
            hyper::HeaderMap,
            Bytes,
        ) -> std::pin::Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// Starts an HTTPS server in the current tokio runtime.
pub async fn serve(dir: &Path, handler: Handler) -> Stub {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join(format!("stub-{}.pem", rand::random::<u32>()));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(pair.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pair.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let resp =
                            handler(parts.method, parts.uri.to_string(), parts.headers, body).await;
                        if resp.extensions().get::<CloseConnection>().is_some() {
                            // An error from the service makes hyper close
                            // the connection without writing anything.
                            return Err("the stub drops this connection");
                        }
                        Ok(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Stub { addr, cert }
}

fn reply(status: u16, body: impl Into<Bytes>, headers: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for (k, v) in headers {
        r.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

/// Answers a fault, if one is queued; `None` to answer normally.
async fn take_fault(faults: &Mutex<VecDeque<Fault>>) -> Option<Response<Full<Bytes>>> {
    let fault = faults.lock().unwrap().pop_front()?;
    Some(match fault {
        Fault::None => return None,
        Fault::Status(code, retry, extra) => {
            let mut headers: Vec<(&str, String)> =
                extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            if let Some(r) = retry {
                headers.push(("retry-after", r));
            }
            reply(
                code,
                json!({"message": format!("stub fault {code}")}).to_string(),
                &headers,
            )
        }
        Fault::Malformed => reply(200, "[{\"id\": \"truncated", &[]),
        Fault::GraphqlError(m) => reply(
            200,
            json!({"data": null, "errors": [{"message": m}]}).to_string(),
            &[],
        ),
        Fault::Hang(release) => {
            release.notified().await;
            reply(503, "{}", &[])
        }
        Fault::Delay(release) => {
            release.notified().await;
            return None;
        }
        Fault::Drop => {
            let mut r = reply(500, "", &[]);
            r.extensions_mut().insert(CloseConnection);
            r
        }
    })
}

/// RFC 3339 to nanoseconds.
pub fn ns(ts: &str) -> i128 {
    let t = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}

/// A JumpCloud event as the DI API returns it, ~450 bytes.
pub fn jc_event(id: &str, timestamp: &str, service: &str) -> String {
    json!({
        "id": id,
        "event_type": if service == "sso" { "sso_auth" } else { "user_login_attempt" },
        "service": service,
        "timestamp": timestamp,
        "success": true,
        "client_ip": "203.0.113.10",
        "organization": "5f0c1d2e3a4b5c6d7e8f9a0b",
        "username": "jane.doe",
        "initiated_by": {"id": "5f0c1d2e3a4b5c6d7e8f9a01", "type": "user", "username": "jane.doe"},
        "useragent": {"name": "Chrome", "os_name": "Mac OS X", "version": "125.0.0.0"},
        "@version": "1"
    })
    .to_string()
}

/// One stored JumpCloud event.
#[derive(Debug, Clone)]
pub struct JcEvent {
    /// The millisecond the API sorts and filters by.
    pub ms: i128,
    /// The org it belongs to ("" is the API key's own org, read without an
    /// `x-org-id` header).
    pub org: String,
    pub id: String,
    pub service: String,
    pub text: String,
}

/// The JumpCloud stub's state.
///
/// Like the real API, it orders events by (epoch millisecond, id) and
/// compares times at millisecond precision (its `search_after` token is
/// `[epoch ms, id]`): within one millisecond, order follows the id, not
/// the sub-millisecond digits of the timestamp.
#[derive(Default)]
pub struct JumpCloud {
    /// Events, kept sorted by (millisecond, id).
    pub events: Mutex<Vec<JcEvent>>,
    /// The accepted API key.
    pub api_key: String,
    /// Faults for the next `/events` requests.
    pub faults: Mutex<VecDeque<Fault>>,
    /// Every `/events` request body, with its `x-org-id` headers.
    pub requests: Mutex<Vec<(Value, Vec<String>)>>,
    /// When each `/events` request arrived.
    pub arrivals: Mutex<Vec<std::time::Instant>>,
    /// The same, by the wall clock.
    pub arrived_at: Mutex<Vec<chrono::DateTime<chrono::Utc>>>,
}

impl JumpCloud {
    /// An empty stub that accepts `api_key`.
    pub fn with_key(api_key: &str) -> Arc<Self> {
        Arc::new(JumpCloud {
            api_key: api_key.into(),
            ..Default::default()
        })
    }

    /// Adds events of the key's own org (kept in the API's sort order).
    pub fn add(&self, events: impl IntoIterator<Item = (String, String, String)>) {
        self.add_to("", events);
    }

    /// Adds events of a managed org, read with `x-org-id: <org>`.
    pub fn add_to(&self, org: &str, events: impl IntoIterator<Item = (String, String, String)>) {
        let mut all = self.events.lock().unwrap();
        for (id, ts, service) in events {
            let text = jc_event(&id, &ts, &service);
            let ns = ns(&ts);
            all.push(JcEvent {
                ms: ns.div_euclid(1_000_000),
                org: org.to_string(),
                id,
                service,
                text,
            });
        }
        all.sort_by(|a, b| (a.ms, &a.id).cmp(&(b.ms, &b.id)));
    }

    /// `/events` requests made so far.
    pub fn event_requests(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn handle(&self, path: &str, headers: &hyper::HeaderMap, body: &[u8]) -> Response<Full<Bytes>> {
        if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(self.api_key.as_str()) {
            return reply(401, json!({"message": "Unauthorized"}).to_string(), &[]);
        }
        let Ok(q) = serde_json::from_slice::<Value>(body) else {
            return reply(
                400,
                json!({"message": "invalid JSON body"}).to_string(),
                &[],
            );
        };
        let Some(services) = q["service"].as_array().map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        }) else {
            return reply(
                400,
                json!({"message": "service is required"}).to_string(),
                &[],
            );
        };
        let Some(start) = q["start_time"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        else {
            return reply(
                400,
                json!({"message": "start_time is required and must be RFC 3339"}).to_string(),
                &[],
            );
        };
        if start > chrono::Utc::now() {
            return reply(
                400,
                json!({"message": "start_time is in the future"}).to_string(),
                &[],
            );
        }
        let start = ns(q["start_time"].as_str().unwrap()).div_euclid(1_000_000);
        let end = q["end_time"].as_str().map(|t| ns(t).div_euclid(1_000_000));
        let all = self.events.lock().unwrap();
        // An MSP key reads the orgs named in its x-org-id headers; without
        // one, the key's own org.
        let orgs: Vec<&str> = headers
            .get_all("x-org-id")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let wanted = |e: &&JcEvent| {
            (services.iter().any(|s| s == "all") || services.contains(&e.service))
                && if orgs.is_empty() {
                    e.org.is_empty()
                } else {
                    orgs.contains(&e.org.as_str())
                }
        };
        let in_window = |e: &&JcEvent| end.is_none_or(|end| e.ms < end);
        // Events are sorted by (millisecond, id): binary search to the start.
        let from = all.partition_point(|e| e.ms < start);
        if path.ends_with("/events/count") {
            let count = all[from..]
                .iter()
                .take_while(in_window)
                .filter(wanted)
                .count();
            return reply(200, json!({"count": count}).to_string(), &[]);
        }
        // A nonsensical limit falls back to the default (1000); at most 10000.
        let limit = q["limit"]
            .as_u64()
            .filter(|l| (1..=10_000).contains(l))
            .unwrap_or(1000) as usize;
        // The search_after token: [epoch ms, id], as JumpCloud's.
        let after: Option<(i128, String)> = q["search_after"]
            .as_array()
            .and_then(|a| Some((a.first()?.as_i64()?.into(), a.get(1)?.as_str()?.to_string())));
        let from = match &after {
            Some((ms, id)) => from + all[from..].partition_point(|e| (e.ms, &e.id) <= (*ms, id)),
            None => from,
        };
        let page: Vec<&JcEvent> = all[from..]
            .iter()
            .take_while(in_window)
            .filter(wanted)
            .take(limit)
            .collect();
        let token = match page.last() {
            Some(e) => json!([e.ms, e.id]),
            None => q.get("search_after").cloned().unwrap_or(json!([])),
        };
        let body = format!(
            "[{}]",
            page.iter()
                .map(|e| e.text.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        reply(
            200,
            body,
            &[
                ("x-result-count", page.len().to_string()),
                ("x-limit", limit.to_string()),
                ("x-sort", "ASC".into()),
                ("x-search_after", token.to_string()),
                ("x-request-id", format!("{:x}", rand::random::<u64>())),
            ],
        )
    }
}

/// Starts the JumpCloud stub.
pub async fn jumpcloud(dir: &Path, state: Arc<JumpCloud>) -> Stub {
    let handler: Handler = Arc::new(move |method, uri, headers, body| {
        let state = state.clone();
        Box::pin(async move {
            if method != hyper::Method::POST || !uri.starts_with("/insights/directory/v1/events") {
                return reply(404, "{}", &[]);
            }
            if !uri.ends_with("/count") {
                state
                    .arrivals
                    .lock()
                    .unwrap()
                    .push(std::time::Instant::now());
                state.arrived_at.lock().unwrap().push(chrono::Utc::now());
                let orgs = headers
                    .get_all("x-org-id")
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_string))
                    .collect();
                state
                    .requests
                    .lock()
                    .unwrap()
                    .push((serde_json::from_slice(&body).unwrap_or(Value::Null), orgs));
                if let Some(r) = take_fault(&state.faults).await {
                    return r;
                }
            }
            state.handle(&uri, &headers, &body)
        })
    });
    serve(dir, handler).await
}

/// The JupiterOne stub's state.
#[derive(Default)]
pub struct JupiterOne {
    /// Entities as `queryV1` returns them: `{id, entity, properties}`.
    pub entities: Mutex<Vec<Value>>,
    /// The accepted token and account.
    pub token: String,
    pub account: String,
    /// Rows per page.
    pub page_size: usize,
    /// Faults for the next GraphQL requests.
    pub faults: Mutex<VecDeque<Fault>>,
    /// Every GraphQL request's variables.
    pub requests: Mutex<Vec<Value>>,
    /// Deferred results: id → (polls so far, result).
    pub deferred: Mutex<Vec<(usize, Value)>>,
    /// This stub's own URL, for deferred result links.
    pub url: Mutex<String>,
    /// Each run's result, taken when its first page is asked for: later
    /// pages read that snapshot, so an entity added during a run (or made
    /// visible late) shows only in a later run, as with JupiterOne.
    pub runs: Mutex<Vec<Vec<Value>>>,
    /// When each GraphQL request arrived.
    pub arrivals: Mutex<Vec<std::time::Instant>>,
    /// How many of the next deferred results end `FAILED` instead of
    /// `COMPLETED`.
    pub fail_deferred: std::sync::atomic::AtomicUsize,
    /// Deferred results that ended `FAILED`.
    pub failed_deferred: std::sync::atomic::AtomicUsize,
}

impl JupiterOne {
    /// An empty stub that accepts `token` for `account`, `page_size` rows
    /// a page.
    pub fn new(token: &str, account: &str, page_size: usize) -> Arc<Self> {
        Arc::new(JupiterOne {
            token: token.into(),
            account: account.into(),
            page_size,
            ..Default::default()
        })
    }

    /// A J1QL query the stub understands: `FIND (A | B)` or `FIND A`,
    /// optionally `WITH _beginOn >= N` or `> N`.
    fn select(&self, j1ql: &str, include_deleted: bool) -> Result<Vec<Value>, String> {
        let rest = j1ql
            .trim()
            .strip_prefix("FIND ")
            .ok_or("J1QL must start with FIND")?;
        let (classes, filter) = match rest.split_once(" WITH ") {
            Some((c, f)) => (c, Some(f)),
            None => (rest, None),
        };
        let classes: Vec<&str> = classes
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split('|')
            .map(str::trim)
            .collect();
        let bound = match filter {
            None => None,
            Some(f) => {
                let f = f
                    .trim()
                    .strip_prefix("_beginOn")
                    .ok_or("only _beginOn filters are supported by this stub")?
                    .trim();
                let (op, n) = if let Some(n) = f.strip_prefix(">=") {
                    (">=", n)
                } else {
                    (">", f.strip_prefix('>').ok_or("bad operator")?)
                };
                Some((op, n.trim().parse::<i64>().map_err(|_| "bad number")?))
            }
        };
        let all = self.entities.lock().map_err(|_| "stub state poisoned")?;
        Ok(all
            .iter()
            .filter(|e| {
                let entity = &e["entity"];
                // `FIND *` is every class, as in J1QL.
                let class_ok = classes.contains(&"*")
                    || entity["_class"].as_array().is_some_and(|a| {
                        a.iter()
                            .any(|c| classes.contains(&c.as_str().unwrap_or("")))
                    });
                let deleted = entity["_deleted"].as_bool().unwrap_or(false);
                let begin = entity["_beginOn"].as_i64().unwrap_or(0);
                let time_ok = match bound {
                    None => true,
                    Some((">=", n)) => begin >= n,
                    Some((_, n)) => begin > n,
                };
                class_ok && time_ok && (include_deleted || !deleted)
            })
            .cloned()
            .collect())
    }

    fn handle(&self, headers: &hyper::HeaderMap, body: &[u8]) -> Response<Full<Bytes>> {
        let auth_ok = headers.get("authorization").and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {}", self.token))
            && headers
                .get("jupiterone-account")
                .and_then(|v| v.to_str().ok())
                == Some(self.account.as_str());
        if !auth_ok {
            return reply(401, json!({"error": "Unauthorized"}).to_string(), &[]);
        }
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return reply(
                400,
                json!({"errors": [{"message": "invalid JSON"}]}).to_string(),
                &[],
            );
        };
        let vars = &req["variables"];
        // Cursor: "run:<snapshot>:off:<offset>", opaque to the client.
        let at: Option<(usize, usize)> = vars["cursor"].as_str().and_then(|c| {
            let (run, off) = c.strip_prefix("run:")?.split_once(":off:")?;
            Some((run.parse().ok()?, off.parse().ok()?))
        });
        // Only the page is copied out of the snapshot (a run can be long).
        let size = if at.is_none_or(|(_, off)| off == 0) {
            self.page_size.max(2) - 1
        } else {
            self.page_size
        };
        let (run, offset, total, page) = match at {
            Some((run, offset)) => match self.runs.lock().unwrap().get(run) {
                Some(rows) => (
                    run,
                    offset,
                    rows.len(),
                    rows.iter()
                        .skip(offset)
                        .take(size)
                        .cloned()
                        .collect::<Vec<_>>(),
                ),
                None => {
                    return reply(
                        200,
                        json!({"data": null, "errors": [{"message": "unknown cursor"}]})
                            .to_string(),
                        &[],
                    );
                }
            },
            None => {
                let rows = match self.select(
                    vars["query"].as_str().unwrap_or(""),
                    vars["includeDeleted"].as_bool().unwrap_or(false),
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        return reply(
                            200,
                            json!({"data": null, "errors": [{"message": e}]}).to_string(),
                            &[],
                        );
                    }
                };
                let page = rows.iter().take(size).cloned().collect::<Vec<_>>();
                let total = rows.len();
                let mut runs = self.runs.lock().unwrap();
                runs.push(rows);
                (runs.len() - 1, 0, total, page)
            }
        };
        // Pages come in no time order (JupiterOne does not sort), and their
        // sizes vary (the first is one short): a short page is not the end,
        // only a null cursor is.
        let next = offset + page.len();
        let cursor = if next < total {
            json!(format!("run:{run}:off:{next}"))
        } else {
            Value::Null
        };
        let result = json!({"type": "list", "data": page, "cursor": cursor});
        if vars["deferredResponse"] == "FORCE" {
            let mut deferred = self.deferred.lock().unwrap();
            deferred.push((0, result));
            let url = format!(
                "{}/deferred/{}",
                self.url.lock().unwrap(),
                deferred.len() - 1
            );
            return reply(200, json!({"data": {"queryV1": {"type": "deferred", "data": null, "cursor": null, "url": url}}}).to_string(), &[]);
        }
        reply(200, json!({"data": {"queryV1": result}}).to_string(), &[])
    }

    fn deferred_result(&self, id: usize) -> Response<Full<Bytes>> {
        let mut deferred = self.deferred.lock().unwrap();
        let Some((polls, result)) = deferred.get_mut(id) else {
            return reply(404, "{}", &[]);
        };
        *polls += 1;
        if *polls == 1 {
            return reply(
                200,
                json!({"status": "IN_PROGRESS", "url": "", "correlationId": "c"}).to_string(),
                &[],
            );
        }
        use std::sync::atomic::Ordering;
        if *polls == 2
            && self
                .fail_deferred
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            self.failed_deferred.fetch_add(1, Ordering::SeqCst);
            return reply(
                200,
                json!({"status": "FAILED", "error": "stub: query timed out", "correlationId": "c"})
                    .to_string(),
                &[],
            );
        }
        reply(200, json!({"status": "COMPLETED", "data": result["data"], "cursor": result["cursor"], "totalCount": 0}).to_string(), &[])
    }
}

/// Starts the JupiterOne stub.
pub async fn jupiterone(dir: &Path, state: Arc<JupiterOne>) -> Stub {
    let st = state.clone();
    let handler: Handler = Arc::new(move |method, uri, headers, body| {
        let state = st.clone();
        Box::pin(async move {
            if method == hyper::Method::GET
                && let Some(id) = uri.strip_prefix("/deferred/").and_then(|i| i.parse().ok())
            {
                return state.deferred_result(id);
            }
            if method != hyper::Method::POST {
                return reply(404, "{}", &[]);
            }
            let vars = serde_json::from_slice::<Value>(&body)
                .map(|v| v["variables"].clone())
                .unwrap_or(Value::Null);
            state
                .arrivals
                .lock()
                .unwrap()
                .push(std::time::Instant::now());
            state.requests.lock().unwrap().push(vars);
            if let Some(r) = take_fault(&state.faults).await {
                return r;
            }
            state.handle(&headers, &body)
        })
    });
    let stub = serve(dir, handler).await;
    *state.url.lock().unwrap() = stub.url();
    stub
}
