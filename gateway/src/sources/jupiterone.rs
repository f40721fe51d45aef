//! The JupiterOne poller (`shared/reference/jupiterone.md` section 1):
//! GraphQL `queryV1` at `graphql.<region>.jupiterone.io`, with
//! `Authorization: Bearer` and `JupiterOne-Account`.
//!
//! A cycle runs the J1QL query with `{since}` replaced by the watermark
//! (epoch ms), and follows the result cursor until it is null (only a null
//! cursor ends the result; a short page does not). Results are not in time
//! order, so the watermark only moves when a run completes; each page is
//! committed with the ids it spooled (in the spool's `run_ids`, a page's
//! worth at a time), and a run cut short is redone without spooling those
//! again. With `include_deleted` (CDC mode) deleted entities come too, for
//! the `j1-cdc` transform. With `deferred`, each page is fetched through
//! JupiterOne's deferred-response URL.
//!
//! `source_lag_secs`: an entity JupiterOne makes visible after a run's
//! snapshot, with an older `_beginOn`, would fall behind a watermark that
//! moved to the newest `_beginOn` seen. So a run moves the watermark at
//! most to its start minus the lag; the versions spooled past it
//! (`id@_beginOn`) are remembered and skipped when the next runs see them
//! again, and a late entity within the lag is queried and spooled once.

use super::poller::{
    ApiRequest, Backoff, PollCtx, PollError, Region, Watermark, Window, rfc3339_ns, secret_header,
};
use crate::config::{Invalid, Secret, SecretValue, invalid};
use crate::http_client::{HttpClient, Response, retry_after};
use crate::metrics::CycleStats;
use hyper::Method;
use hyper::header::{self, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::PathBuf;
use std::time::Duration;

/// The GraphQL document (the fields JupiterOne's own clients select).
const QUERY_V1: &str = "query J1QL($query: String!, $variables: JSON, $cursor: String, $includeDeleted: Boolean, \
$deferredResponse: DeferredResponseOption, $flags: QueryV1Flags) { queryV1(query: $query, variables: $variables, \
cursor: $cursor, includeDeleted: $includeDeleted, deferredResponse: $deferredResponse, flags: $flags) { type data cursor url } }";

/// The default query: the three risk classes, newer than the watermark.
pub const DEFAULT_QUERY: &str = "FIND (Alert | Vulnerability | Finding) WITH _beginOn >= {since}";

/// Config of a JupiterOne source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JupiterOneConfig {
    /// API token, sent as `Authorization: Bearer`.
    pub api_token: Secret,
    /// The account id, sent as `JupiterOne-Account`.
    pub account_id: String,
    /// `us` or `eu`.
    #[serde(default)]
    pub region: Region,
    /// Replaces the region's GraphQL URL; https only.
    pub base_url: Option<String>,
    /// Extra CA certificates (PEM) to trust, relative to the config file.
    pub ca_file: Option<PathBuf>,
    /// An HTTP CONNECT proxy to reach the API through (default: the
    /// `HTTPS_PROXY` environment variable); see `egress`.
    pub proxy: Option<crate::egress::ProxyConfig>,
    /// J1QL; `{since}` becomes the watermark in epoch ms. Without
    /// `{since}` every cycle reads the whole result again.
    #[serde(default = "default_query")]
    pub query: String,
    /// Include deleted entities (CDC mode, for `j1-cdc`).
    #[serde(default)]
    pub include_deleted: bool,
    /// Fetch pages through deferred responses.
    #[serde(default)]
    pub deferred: bool,
    /// Where the first cycle starts (RFC 3339). Changing it resets the cursor.
    pub start: String,
    /// Seconds between cycles.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Seconds allowed per request.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Seconds the watermark stays behind each run's start, for entities
    /// JupiterOne makes visible late (see the module docs).
    #[serde(default = "default_lag")]
    pub source_lag_secs: u64,
}

fn default_lag() -> u64 {
    120
}

fn default_query() -> String {
    DEFAULT_QUERY.into()
}
fn default_interval() -> u64 {
    3600
}
fn default_timeout() -> u64 {
    30
}

impl JupiterOneConfig {
    /// Checks values (no I/O).
    pub(crate) fn validate(&self, name: &str, out: &mut Vec<Invalid>) {
        super::poller::validate_common(
            name,
            self.base_url.as_deref(),
            self.proxy.as_ref(),
            &self.start,
            self.interval_secs,
            out,
        );
        if self.account_id.trim().is_empty() {
            out.push(invalid(
                &["sources", name, "account_id"],
                "must not be empty",
            ));
        }
        if self.query.to_ascii_uppercase().contains(" SKIP ") {
            out.push(invalid(
                &["sources", name, "query"],
                "J1QL SKIP is no longer accepted by JupiterOne; pagination uses the cursor",
            ));
        }
    }

    fn url(&self) -> String {
        match (&self.base_url, self.region) {
            (Some(u), _) => u.clone(),
            (None, Region::Us) => "https://graphql.us.jupiterone.io/".into(),
            (None, Region::Eu) => "https://graphql.eu.jupiterone.io/".into(),
        }
    }
}

/// A running JupiterOne poller.
#[derive(Debug)]
pub struct JupiterOne {
    cfg: JupiterOneConfig,
    client: HttpClient,
    headers: Vec<(HeaderName, HeaderValue)>,
    url: String,
}

#[derive(Deserialize)]
struct Gql<'a> {
    #[serde(borrow)]
    data: Option<GqlData<'a>>,
    #[serde(default)]
    errors: Vec<GqlError>,
}

#[derive(Deserialize)]
struct GqlData<'a> {
    #[serde(rename = "queryV1", borrow)]
    query_v1: Option<QueryResult<'a>>,
}

#[derive(Deserialize)]
struct QueryResult<'a> {
    #[serde(borrow, default)]
    data: Option<Vec<&'a RawValue>>,
    cursor: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct GqlError {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Deferred<'a> {
    status: String,
    #[serde(borrow, default)]
    data: Option<Vec<&'a RawValue>>,
    cursor: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// The fields the poller reads from each element.
#[derive(Deserialize)]
struct Head {
    id: Option<String>,
    entity: Option<EntityHead>,
}

#[derive(Deserialize)]
struct EntityHead {
    #[serde(rename = "_id")]
    id: Option<String>,
    #[serde(rename = "_beginOn")]
    begin_on: Option<serde_json::Value>,
}

/// One page: its elements (verbatim) and the next cursor.
type Page = (Vec<Vec<u8>>, Option<String>);

/// What a `queryV1` answer says.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A page: its elements (verbatim), the next cursor (`None`: the end),
    /// and a deferred-response URL to fetch the page from, if given.
    Page(Vec<Vec<u8>>, Option<String>, Option<String>),
    /// GraphQL errors; `rate_limited` when they say so.
    Errors {
        /// The messages, joined.
        text: String,
        /// They report rate limiting (429).
        rate_limited: bool,
    },
}

/// Reads a 200's body (no I/O; fuzzed).
///
/// # Errors
///
/// Why the body is not a usable answer (retried by the caller).
pub fn parse_answer(body: &[u8]) -> Result<Answer, String> {
    let gql: Gql<'_> = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not GraphQL JSON ({e}); nothing of it was spooled"))?;
    if !gql.errors.is_empty() {
        let text = gql
            .errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let rate_limited = text.contains("429") || text.to_ascii_lowercase().contains("rate limit");
        return Ok(Answer::Errors { text, rate_limited });
    }
    let Some(result) = gql.data.and_then(|d| d.query_v1) else {
        return Err("the answer has no data.queryV1".into());
    };
    let data = result.data.unwrap_or_default();
    Ok(Answer::Page(
        data.iter().map(|r| r.get().as_bytes().to_vec()).collect(),
        result.cursor,
        result.url,
    ))
}

/// An element's entity id and `_beginOn` (text of epoch ms, ns), as the
/// cursor needs them (no I/O; fuzzed).
pub fn element_head(raw: &[u8]) -> (Option<String>, Option<(String, i128)>) {
    let head: Option<Head> = serde_json::from_slice(raw).ok();
    let entity = head.as_ref().and_then(|h| h.entity.as_ref());
    let id = head
        .as_ref()
        .and_then(|h| h.id.clone())
        .or_else(|| entity.and_then(|e| e.id.clone()));
    let begin = entity
        .and_then(|e| e.begin_on.as_ref())
        .and_then(begin_on_ns);
    (id, begin)
}

impl JupiterOne {
    /// Builds the poller.
    ///
    /// # Errors
    ///
    /// When the CA file, token or account id cannot be used.
    pub fn new(
        cfg: JupiterOneConfig,
        token: &SecretValue,
        ca_file: Option<PathBuf>,
        proxy: Option<crate::egress::Proxy>,
    ) -> Result<Self, PollError> {
        let client = HttpClient::new(
            ca_file.as_deref(),
            proxy,
            Duration::from_secs(cfg.request_timeout_secs),
        )
        .map_err(|e| PollError::Fatal(e.to_string()))?;
        let mut bearer = b"Bearer ".to_vec();
        bearer.extend_from_slice(token.expose());
        let account = HeaderValue::from_str(&cfg.account_id)
            .map_err(|_| PollError::Fatal("account_id is not a valid header value".into()))?;
        let headers = vec![
            (header::AUTHORIZATION, secret_header(&bearer)?),
            (HeaderName::from_static("jupiterone-account"), account),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::USER_AGENT,
                HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))),
            ),
        ];
        let url = cfg.url();
        Ok(Self {
            cfg,
            client,
            headers,
            url,
        })
    }

    /// One cycle (see the module docs).
    ///
    /// # Errors
    ///
    /// [`PollError`].
    pub async fn cycle(
        &self,
        ctx: &mut PollCtx,
        stats: &mut CycleStats,
        window: Option<&Window>,
    ) -> Result<(), PollError> {
        let start_cfg = window.map_or(self.cfg.start.as_str(), |w| w.since.as_str());
        let mut wm: Watermark = ctx.load(start_cfg)?;
        let since_ns = wm.at_ns.or_else(|| rfc3339_ns(start_cfg)).unwrap_or(0);
        let since_ms = since_ns.div_euclid(1_000_000);
        let query = self.cfg.query.replace("{since}", &since_ms.to_string());
        // The run in progress (resumed after a crash, or new).
        let mut run = Run::resume(ctx, &mut wm)?;
        let mut cursor: Option<String> = None;
        loop {
            let (elements, next) = self.page(ctx, stats, &query, cursor.as_deref()).await?;
            let mut records = Vec::with_capacity(elements.len());
            let mut duplicates = 0;
            let mut added = Vec::new();
            for raw in &elements {
                let (id, begin) = element_head(raw);
                let key = id
                    .as_deref()
                    .map(|id| version_key(id, begin.as_ref().map(|b| b.1)));
                if key.as_ref().is_some_and(|k| {
                    wm.recent.contains(k) || run.spooled.contains(k) || run.legacy_seen(&wm, k)
                }) {
                    duplicates += 1;
                    continue;
                }
                if let Some((text, ns)) = &begin {
                    wm.add_pending(Some((text.as_str(), *ns)), id.as_deref());
                }
                if let Some(k) = key {
                    run.spooled.insert(k.clone());
                    added.push(k);
                }
                records.push(raw.clone());
            }
            let finished = next.is_none();
            if finished {
                run.finish(&mut wm, self.cfg.source_lag_secs);
            }
            wm.pending.clear();
            let ids = crate::spool::meta::RunIds {
                key: ctx.checkpoint.clone(),
                add: added,
                clear: finished,
            };
            ctx.commit_page(records, &wm, Some(ids), elements.len(), duplicates, stats)
                .await?;
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    /// One page, retried until it succeeds or fails for good.
    async fn page(
        &self,
        ctx: &mut PollCtx,
        stats: &mut CycleStats,
        query: &str,
        cursor: Option<&str>,
    ) -> Result<Page, PollError> {
        let body = serde_json::json!({
            "query": QUERY_V1,
            "variables": {
                "query": query,
                "cursor": cursor,
                "includeDeleted": self.cfg.include_deleted,
                "deferredResponse": if self.cfg.deferred { "FORCE" } else { "DISABLED" },
                "flags": {"variableResultSize": true},
            },
        })
        .to_string()
        .into_bytes();
        let req = ApiRequest {
            client: &self.client,
            url: &self.url,
            headers: &self.headers,
            body: &body,
            api: "JupiterOne",
            unauthorized: "JupiterOne rejected the credentials (401 Unauthorized); check `api_token` and `account_id`",
            forbidden: "JupiterOne answered 403 Forbidden: the token lacks permission (it needs query:ReadGraphData)",
        };
        let mut backoff = Backoff::new();
        loop {
            let resp = ctx.send_until_ok(stats, &req, &mut backoff).await?;
            match self.read(ctx, stats, &resp).await? {
                Ok(page) => return Ok(page),
                Err(reason) => {
                    let hint = retry_after(&resp);
                    let reason = format!("{reason}{}", super::poller::hint_text(hint));
                    ctx.retry_answer(&reason, backoff.next(hint)).await?
                }
            }
        }
    }

    /// Reads a 200: `Ok(Ok(page))`, `Ok(Err(reason))` to retry, or a fatal error.
    async fn read(
        &self,
        ctx: &mut PollCtx,
        stats: &mut CycleStats,
        resp: &Response,
    ) -> Result<Result<Page, String>, PollError> {
        match parse_answer(&resp.body) {
            Err(reason) => {
                ctx.metrics.poll_request(&ctx.name, "invalid_json");
                Ok(Err(reason))
            }
            Ok(Answer::Errors { text, rate_limited }) => {
                ctx.metrics.poll_request(&ctx.name, "graphql_error");
                // JupiterOne reports rate limiting as a GraphQL error too.
                if rate_limited {
                    return Ok(Err(format!("rate limited: {text}")));
                }
                Err(PollError::Fatal(format!(
                    "JupiterOne returned GraphQL errors: {text}"
                )))
            }
            Ok(Answer::Page(_, _, Some(url))) if self.cfg.deferred => {
                ctx.metrics.poll_request(&ctx.name, "ok");
                self.deferred(ctx, stats, &url).await
            }
            Ok(Answer::Page(data, cursor, _)) => {
                ctx.metrics.poll_request(&ctx.name, "ok");
                Ok(Ok((data, cursor)))
            }
        }
    }

    /// Polls a deferred result until COMPLETED or FAILED (5 minutes at most).
    async fn deferred(
        &self,
        ctx: &mut PollCtx,
        stats: &mut CycleStats,
        url: &str,
    ) -> Result<Result<Page, String>, PollError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        let mut wait = Duration::from_millis(200);
        // The deferred URL is pre-signed: it is fetched without the API
        // credentials, as JupiterOne's own clients do.
        let plain = [(header::ACCEPT, HeaderValue::from_static("application/json"))];
        while std::time::Instant::now() < deadline {
            stats.requests += 1;
            let resp = match self.client.send(Method::GET, url, &plain, None).await {
                Ok(r) if r.status.is_success() => r,
                Ok(r) => return Ok(Err(format!("deferred result answered {}", r.status))),
                Err(e) => return Ok(Err(format!("deferred result: {e}"))),
            };
            let d: Deferred<'_> = match serde_json::from_slice(&resp.body) {
                Ok(d) => d,
                Err(e) => return Ok(Err(format!("deferred result is not JSON ({e})"))),
            };
            match d.status.as_str() {
                "COMPLETED" => {
                    let data = d.data.unwrap_or_default();
                    return Ok(Ok((
                        data.iter().map(|r| r.get().as_bytes().to_vec()).collect(),
                        d.cursor,
                    )));
                }
                "FAILED" => {
                    return Ok(Err(format!(
                        "deferred query FAILED: {}",
                        d.error.map(|e| e.to_string()).unwrap_or_default()
                    )));
                }
                _ => {}
            }
            ctx.sleep(wait).await?;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        Ok(Err(
            "deferred query still IN_PROGRESS after 5 minutes".into()
        ))
    }
}

/// One entity version: `id@_beginOn` (epoch ms), or `id@` without a time.
fn version_key(id: &str, begin_ns: Option<i128>) -> String {
    match begin_ns {
        Some(ns) => format!("{id}@{}", ns.div_euclid(1_000_000)),
        None => format!("{id}@"),
    }
}

/// The `_beginOn` of a version key.
fn key_ms(key: &str) -> Option<i128> {
    key.rsplit_once('@')?.1.parse().ok()
}

/// A query run: what it has spooled so far, and when it started.
struct Run {
    started_ms: i64,
    spooled: std::collections::HashSet<String>,
    /// Ids (without a version) that a run interrupted under an earlier
    /// release spooled.
    legacy: std::collections::BTreeSet<String>,
}

impl Run {
    /// The run in progress, or a new one. Its ids come from the spool, its
    /// start time from the cursor.
    fn resume(ctx: &PollCtx, wm: &mut Watermark) -> Result<Self, PollError> {
        let spooled = ctx
            .spool
            .run_ids(&ctx.checkpoint)
            .map_err(|e| PollError::Fatal(e.to_string()))?;
        let started_ms = match wm.run_started_ms {
            Some(t) if !spooled.is_empty() || !wm.pending.is_empty() => t,
            _ => {
                let now = chrono::Utc::now().timestamp_millis();
                wm.run_started_ms = Some(now);
                wm.pending_max = None;
                now
            }
        };
        // An earlier release kept the watermark's ids in `ids` and the
        // run's in `pending`, without versions.
        for id in std::mem::take(&mut wm.ids) {
            if let Some(ns) = wm.at_ns {
                wm.recent.insert(version_key(&id, Some(ns)));
            }
        }
        Ok(Self {
            started_ms,
            spooled,
            legacy: std::mem::take(&mut wm.pending),
        })
    }

    fn legacy_seen(&self, _wm: &Watermark, key: &str) -> bool {
        key.rsplit_once('@')
            .is_some_and(|(id, _)| self.legacy.contains(id))
    }

    /// Ends the run: the watermark moves to the newest `_beginOn` spooled,
    /// but not past the run's start minus the lag; versions at or after it
    /// are remembered.
    fn finish(&mut self, wm: &mut Watermark, lag_secs: u64) {
        let cap_ms = i128::from(self.started_ms) - i128::from(lag_secs) * 1000;
        if let Some((text, ns, _)) = wm.pending_max.take() {
            let to_ms = super::poller::ms_of(ns).min(cap_ms);
            if wm.at_ns.is_none_or(|w| super::poller::ms_of(w) < to_ms) {
                wm.at_ns = Some(to_ms * 1_000_000);
                wm.at = Some(if to_ms == super::poller::ms_of(ns) {
                    text
                } else {
                    to_ms.to_string()
                });
            }
        }
        let floor = wm.at_ns.map(super::poller::ms_of);
        let mut recent = std::mem::take(&mut wm.recent);
        recent.extend(self.spooled.drain());
        recent.retain(|k| matches!((key_ms(k), floor), (Some(ms), Some(w)) if ms >= w));
        wm.recent = recent;
        wm.run_started_ms = None;
    }
}

/// `_beginOn` as epoch ms (a number) or an ISO string: (text of epoch ms, ns).
fn begin_on_ns(v: &serde_json::Value) -> Option<(String, i128)> {
    let ms: i64 = match v {
        serde_json::Value::Number(n) => n.as_i64()?,
        serde_json::Value::String(s) => (rfc3339_ns(s)? / 1_000_000) as i64,
        _ => return None,
    };
    Some((ms.to_string(), i128::from(ms) * 1_000_000))
}
