//! The JumpCloud Directory Insights poller (`shared/reference/jumpcloud.md`
//! section 1).
//!
//! A cycle asks `POST /insights/directory/v1/events` for
//! `[watermark, now − source_lag)` sorted ascending, `limit` events a page,
//! and follows `X-Search_after` while `X-Result-Count` equals `X-Limit`
//! (compared as integers: JumpCloud's own code compares the strings and
//! stops early at "999" ≥ "1000"). Each page is committed with the
//! watermark after it (see `poller`). `source_lag` leaves time for events
//! JumpCloud indexes late.

use super::poller::{
    ApiRequest, Backoff, PollCtx, PollError, Region, Watermark, Window, rfc3339_ns, secret_header,
};
use crate::config::{Invalid, Secret, SecretValue, invalid};
use crate::http_client::HttpClient;
use crate::metrics::CycleStats;
use hyper::Method;
use hyper::header::{self, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::PathBuf;
use std::time::Duration;

/// The services the API accepts (`all` means every one).
pub const SERVICES: &[&str] = &[
    "all",
    "alerts",
    "directory",
    "ldap",
    "mdm",
    "notifications",
    "object_storage",
    "password_manager",
    "radius",
    "reports",
    "saas_app_management",
    "software",
    "sso",
    "systems",
    "access_management",
    "asset_management",
];

/// Config of a JumpCloud source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JumpCloudConfig {
    /// Administrator API key, sent as `x-api-key`.
    pub api_key: Secret,
    /// Organisations to read with a multi-tenant (MSP) key. Each is polled
    /// as its own stream, with its own `x-org-id` header and its own
    /// cursor, so one org's events never move another's cursor.
    #[serde(default)]
    pub org_ids: Vec<String>,
    /// `us` (api.jumpcloud.com) or `eu` (api.eu.jumpcloud.com).
    #[serde(default)]
    pub region: Region,
    /// Replaces the region's URL (a proxy, a test server); https only.
    pub base_url: Option<String>,
    /// Extra CA certificates (PEM) to trust, relative to the config file.
    pub ca_file: Option<PathBuf>,
    /// An HTTP CONNECT proxy to reach the API through (default: the
    /// `HTTPS_PROXY` environment variable); see `egress`.
    pub proxy: Option<crate::egress::ProxyConfig>,
    /// Services to read (default `["all"]`).
    #[serde(default = "default_services")]
    pub services: Vec<String>,
    /// Where the first cycle starts (RFC 3339, like Devo's
    /// `historic_date_utc`). Changing it resets the cursor.
    pub start: String,
    /// Seconds between cycles.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Seconds to stay behind now, for events JumpCloud indexes late.
    #[serde(default = "default_lag")]
    pub source_lag_secs: u64,
    /// Events per page (1–10000).
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Seconds allowed per request.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

fn default_services() -> Vec<String> {
    vec!["all".into()]
}
fn default_interval() -> u64 {
    60
}
fn default_lag() -> u64 {
    60
}
fn default_limit() -> u32 {
    10_000
}
fn default_timeout() -> u64 {
    30
}

impl JumpCloudConfig {
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
        if self.services.is_empty() {
            out.push(invalid(
                &["sources", name, "services"],
                "list at least one service, or \"all\"",
            ));
        }
        for s in &self.services {
            if !SERVICES.contains(&s.as_str()) {
                out.push(invalid(
                    &["sources", name, "services"],
                    format!("unknown service {s:?} (known: {})", SERVICES.join(", ")),
                ));
            }
        }
        if !(1..=10_000).contains(&self.limit) {
            out.push(invalid(
                &["sources", name, "limit"],
                "must be between 1 and 10000",
            ));
        }
    }

    fn url(&self) -> String {
        match (&self.base_url, self.region) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Region::Us) => "https://api.jumpcloud.com".into(),
            (None, Region::Eu) => "https://api.eu.jumpcloud.com".into(),
        }
    }
}

/// A running JumpCloud poller.
#[derive(Debug)]
pub struct JumpCloud {
    cfg: JumpCloudConfig,
    client: HttpClient,
    /// Headers of every request (credentials included), without `x-org-id`.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// One `x-org-id` value per configured org.
    orgs: Vec<(String, HeaderValue)>,
    url: String,
}

/// A page's events, verbatim (no I/O; fuzzed).
///
/// # Errors
///
/// The body is not a JSON array.
pub fn parse_page(body: &[u8]) -> Result<Vec<Box<RawValue>>, serde_json::Error> {
    serde_json::from_slice::<Vec<Box<RawValue>>>(body)
}

/// An event's id and timestamp (text, ns), as the cursor needs them.
pub fn event_head(raw: &str) -> (Option<String>, Option<(String, i128)>) {
    let head: Head<'_> = serde_json::from_str(raw).unwrap_or(Head {
        id: None,
        timestamp: None,
    });
    let at = head
        .timestamp
        .as_deref()
        .and_then(|t| rfc3339_ns(t).map(|ns| (t.to_string(), ns)));
    (head.id.map(std::borrow::Cow::into_owned), at)
}

/// The two fields the poller reads from each event.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    timestamp: Option<std::borrow::Cow<'a, str>>,
}

impl JumpCloud {
    /// Builds the poller.
    ///
    /// # Errors
    ///
    /// When the CA file or the key cannot be used.
    pub fn new(
        cfg: JumpCloudConfig,
        key: &SecretValue,
        ca_file: Option<PathBuf>,
        proxy: Option<crate::egress::Proxy>,
    ) -> Result<Self, PollError> {
        let client = HttpClient::new(
            ca_file.as_deref(),
            proxy,
            Duration::from_secs(cfg.request_timeout_secs),
        )
        .map_err(|e| PollError::Fatal(e.to_string()))?;
        let headers = vec![
            (
                HeaderName::from_static("x-api-key"),
                secret_header(key.expose())?,
            ),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ACCEPT, HeaderValue::from_static("application/json")),
            (
                header::USER_AGENT,
                HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))),
            ),
        ];
        let mut orgs = Vec::new();
        for org in &cfg.org_ids {
            let v = HeaderValue::from_str(org).map_err(|_| {
                PollError::Fatal(format!("org id {org:?} is not a valid header value"))
            })?;
            orgs.push((org.clone(), v));
        }
        let url = cfg.url();
        Ok(Self {
            cfg,
            client,
            headers,
            orgs,
            url,
        })
    }

    /// The request headers for one org (`None`: the key's own org).
    fn headers_for(&self, org: Option<&HeaderValue>) -> Vec<(HeaderName, HeaderValue)> {
        let mut h = self.headers.clone();
        if let Some(v) = org {
            h.push((HeaderName::from_static("x-org-id"), v.clone()));
        }
        h
    }

    fn end_time(&self, window: Option<&Window>) -> String {
        match window.and_then(|w| w.until.clone()) {
            Some(u) => u,
            None => (chrono::Utc::now()
                - chrono::Duration::seconds(self.cfg.source_lag_secs as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    /// One cycle (see the module docs): each org in turn, each with its
    /// own cursor (`<checkpoint>/org=<id>`).
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
        if self.orgs.is_empty() {
            let headers = self.headers_for(None);
            return self.cycle_stream(ctx, None, stats, window, &headers).await;
        }
        for (org, value) in &self.orgs {
            let mut stream = ctx.clone();
            stream.checkpoint = format!("{}/org={org}", ctx.checkpoint);
            // A cursor kept by a release that read every org in one stream
            // is where each org's own cursor starts.
            let legacy = ctx
                .spool
                .checkpoint(&stream.checkpoint)
                .map_err(|e| PollError::Fatal(e.to_string()))?
                .is_none()
                .then(|| ctx.checkpoint.clone());
            let headers = self.headers_for(Some(value));
            self.cycle_stream(&mut stream, legacy.as_deref(), stats, window, &headers)
                .await?;
        }
        Ok(())
    }

    /// One stream's pages from its cursor (or, the first time, from the
    /// cursor under `seed`) to the end of the window.
    async fn cycle_stream(
        &self,
        ctx: &mut PollCtx,
        seed: Option<&str>,
        stats: &mut CycleStats,
        window: Option<&Window>,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<(), PollError> {
        let start_cfg = window.map_or(self.cfg.start.as_str(), |w| w.since.as_str());
        let mut wm: Watermark = match seed {
            Some(key) => ctx.load_from(key, start_cfg)?,
            None => ctx.load(start_cfg)?,
        };
        let start = wm.query_start().unwrap_or_else(|| start_cfg.to_string());
        let end = self.end_time(window);
        if rfc3339_ns(&start) >= rfc3339_ns(&end) {
            return Ok(());
        }
        let mut search_after: Option<serde_json::Value> = None;
        loop {
            let mut body = serde_json::json!({
                "service": self.cfg.services,
                "start_time": start,
                "end_time": end,
                "limit": self.cfg.limit,
                "sort": "ASC",
            });
            if let Some(sa) = &search_after {
                body["search_after"] = sa.clone();
            }
            let (resp, events) = self.fetch(ctx, stats, headers, &body).await?;
            let mut records = Vec::with_capacity(events.len());
            let mut duplicates = 0;
            for raw in &events {
                let (id, at) = event_head(raw.get());
                if wm.seen(at.as_ref().map(|a| a.1), id.as_deref()) {
                    duplicates += 1;
                    continue;
                }
                if let Some((text, ns)) = &at {
                    wm.advance(text, *ns, id.as_deref());
                }
                records.push(raw.get().as_bytes().to_vec());
            }
            ctx.commit_page(records, &wm, None, events.len(), duplicates, stats)
                .await?;
            // Integers, not strings: "999" >= "1000" as text.
            let count = resp
                .header("x-result-count")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(events.len() as u64);
            let limit = resp
                .header("x-limit")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(u64::from(self.cfg.limit));
            if count == 0 || count < limit {
                return Ok(());
            }
            match resp
                .header("x-search_after")
                .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            {
                Some(sa @ serde_json::Value::Array(_)) => search_after = Some(sa),
                _ => {
                    // Without a token the next page cannot be asked for;
                    // the next cycle resumes from the watermark.
                    tracing::warn!(
                        source = &*ctx.name,
                        "full page without a usable X-Search_after header; resuming next cycle"
                    );
                    return Ok(());
                }
            }
        }
    }

    /// `/events/count` for a window (every org together), for the
    /// backfill's ETA.
    pub async fn count(&self, ctx: &mut PollCtx, window: &Window) -> Option<u64> {
        let body = serde_json::json!({
            "service": self.cfg.services,
            "start_time": window.since,
            "end_time": self.end_time(Some(window)),
        });
        let mut headers = self.headers.clone();
        headers.extend(
            self.orgs
                .iter()
                .map(|(_, v)| (HeaderName::from_static("x-org-id"), v.clone())),
        );
        let resp = self
            .client
            .send(
                Method::POST,
                &format!("{}/insights/directory/v1/events/count", self.url),
                &headers,
                Some(body.to_string().into_bytes()),
            )
            .await
            .ok()?;
        ctx.metrics.poll_request(
            &ctx.name,
            if resp.status.is_success() {
                "ok"
            } else {
                "4xx"
            },
        );
        if !resp.status.is_success() {
            return None;
        }
        serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()?
            .get("count")?
            .as_u64()
    }

    /// One page, retried until it is a 200 with a JSON array.
    async fn fetch(
        &self,
        ctx: &mut PollCtx,
        stats: &mut CycleStats,
        headers: &[(HeaderName, HeaderValue)],
        body: &serde_json::Value,
    ) -> Result<(crate::http_client::Response, Vec<Box<RawValue>>), PollError> {
        let url = format!("{}/insights/directory/v1/events", self.url);
        let body = body.to_string().into_bytes();
        let req = ApiRequest {
            client: &self.client,
            url: &url,
            headers,
            body: &body,
            api: "JumpCloud",
            unauthorized: "JumpCloud rejected the API key (401 Unauthorized); check `api_key`",
            forbidden: "JumpCloud answered 403 Forbidden: the API key lacks permission (Directory Insights needs an administrator's key, and `org_ids` must be orgs it manages)",
        };
        let mut backoff = Backoff::new();
        loop {
            let resp = ctx.send_until_ok(stats, &req, &mut backoff).await?;
            match parse_page(&resp.body) {
                Ok(events) => {
                    ctx.metrics.poll_request(&ctx.name, "ok");
                    return Ok((resp, events));
                }
                Err(e) => {
                    ctx.metrics.poll_request(&ctx.name, "invalid_json");
                    let reason = format!(
                        "the answer is not a JSON array of events ({e}); nothing of it was spooled"
                    );
                    ctx.retry_answer(&reason, backoff.next(None)).await?;
                }
            }
        }
    }
}
