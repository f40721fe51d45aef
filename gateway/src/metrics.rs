//! Prometheus metrics, and the log line that goes with each event.
//!
//! Every event that is both counted and logged goes through one method
//! here, so the metric and the log line cannot drift apart. Label values
//! are names from the config (sources, pipelines, transforms, sinks) or
//! small fixed sets (reasons, outcomes), so cardinality is bounded by the
//! config, never by the data.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// All of sluice's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    source_records: IntCounterVec,
    source_bytes: IntCounterVec,
    source_rejected: IntCounterVec,
    transform_records: IntCounterVec,
    transform_seconds: HistogramVec,
    dead_letters: IntCounterVec,
    spool_records: prometheus::IntGaugeVec,
    spool_bytes: prometheus::IntGaugeVec,
    spool_oldest_age: prometheus::GaugeVec,
    spool_corrupt: IntCounterVec,
    sink_objects: IntCounterVec,
    sink_records: IntCounterVec,
    sink_bytes: IntCounterVec,
    sink_errors: IntCounterVec,
    sink_latency: HistogramVec,
    ack_seconds: Histogram,
    poller_requests: IntCounterVec,
    poller_events: IntCounterVec,
    poller_stopped: prometheus::IntGaugeVec,
    transform_info: prometheus::IntGaugeVec,
    transform_swaps: IntCounterVec,
    transform_swap_seconds: HistogramVec,
    uploads_rejected: IntCounterVec,
    sink_retries: IntCounterVec,
    sink_stopped: prometheus::IntGaugeVec,
    pipeline_waiting: prometheus::IntGaugeVec,
    admin_auth_failures: IntCounterVec,
    spool_over_high_water: prometheus::IntGaugeVec,
    poller_cursor: prometheus::GaugeVec,
    cluster_leader: prometheus::IntGaugeVec,
    cluster_changes: IntCounterVec,
    cluster_etcd_up: prometheus::IntGaugeVec,
    cluster_repolled: IntCounterVec,
    cluster_fenced: IntCounterVec,
    /// Cluster mode as `/readyz` shows it (None without `[cluster]`).
    cluster_view: std::sync::Arc<std::sync::Mutex<Option<ClusterView>>>,
    /// Sinks stopped for good, and why (for `/readyz`).
    stopped_sinks: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
    let g = prometheus::IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// Why a push request was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No or wrong credentials.
    Unauthorized,
    /// Body over the size limit.
    TooLarge,
    /// Too many records in one request.
    TooManyRecords,
    /// Body not parseable.
    Malformed,
    /// A sink the source feeds is over its spool budget.
    Backpressure,
    /// The spool's disk is full.
    DiskFull,
    /// Unknown source or wrong method.
    NotFound,
    /// The spool could not commit.
    Internal,
    /// The body did not arrive in time.
    Timeout,
    /// A pipeline of the source waits for a transform to be uploaded.
    WaitingForTransform,
}

impl Rejection {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unauthorized => "unauthorized",
            Rejection::TooLarge => "too_large",
            Rejection::TooManyRecords => "too_many_records",
            Rejection::Malformed => "malformed",
            Rejection::Backpressure => "backpressure",
            Rejection::DiskFull => "disk_full",
            Rejection::NotFound => "not_found",
            Rejection::Internal => "internal",
            Rejection::Timeout => "timeout",
            Rejection::WaitingForTransform => "waiting_for_transform",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let r = Registry::new();
        let latency = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let delivery = vec![
            0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
        ];
        let spool_records = gauge_vec(
            &r,
            "sluice_spool_records",
            "Records waiting in the spool, per sink.",
            &["sink"],
        );
        let spool_bytes = gauge_vec(
            &r,
            "sluice_spool_bytes",
            "Bytes of records (as framed in the log) waiting in the spool, per sink.",
            &["sink"],
        );
        let spool_oldest_age = prometheus::GaugeVec::new(
            Opts::new(
                "sluice_spool_oldest_record_age_seconds",
                "Age of the oldest record waiting in the spool, per sink (0 when none).",
            ),
            &["sink"],
        )
        .expect("valid metric");
        r.register(Box::new(spool_oldest_age.clone()))
            .expect("unique metric");
        let ack_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_push_ack_duration_seconds",
                "Time from a push request's arrival to its reply, for accepted requests.",
            )
            .buckets(latency.clone()),
        )
        .expect("valid metric");
        r.register(Box::new(ack_seconds.clone()))
            .expect("unique metric");
        Self {
            source_records: counter(
                &r,
                "sluice_source_records_total",
                "Records received and spooled, per source.",
                &["source"],
            ),
            source_bytes: counter(
                &r,
                "sluice_source_bytes_total",
                "Request body bytes received (before decompression), per source.",
                &["source"],
            ),
            source_rejected: counter(
                &r,
                "sluice_source_rejected_requests_total",
                "Requests refused, per source and reason.",
                &["source", "reason"],
            ),
            transform_records: counter(
                &r,
                "sluice_transform_records_total",
                "Records per transform: in, out (emitted), error, dropped, passed.",
                &["pipeline", "transform", "outcome"],
            ),
            transform_seconds: histogram(
                &r,
                "sluice_transform_batch_duration_seconds",
                "Time per batch call into a transform.",
                &["pipeline", "transform"],
                latency,
            ),
            dead_letters: counter(
                &r,
                "sluice_dead_letter_records_total",
                "Records sent to dead letter, per pipeline.",
                &["pipeline"],
            ),
            sink_objects: counter(
                &r,
                "sluice_sink_objects_total",
                "Objects written, per sink.",
                &["sink"],
            ),
            sink_records: counter(
                &r,
                "sluice_sink_records_total",
                "Records delivered, per sink.",
                &["sink"],
            ),
            sink_bytes: counter(
                &r,
                "sluice_sink_bytes_total",
                "Object bytes written (after compression), per sink.",
                &["sink"],
            ),
            sink_errors: counter(
                &r,
                "sluice_sink_errors_total",
                "Failed deliveries, per sink and kind.",
                &["sink", "kind"],
            ),
            sink_latency: histogram(
                &r,
                "sluice_sink_delivery_latency_seconds",
                "Time from a record's arrival to its delivery, per sink.",
                &["sink"],
                delivery,
            ),
            spool_records,
            spool_bytes,
            spool_oldest_age,
            spool_corrupt: counter(
                &r,
                "sluice_spool_corrupt_frames_total",
                "Records lost to damage found in the spool's log (quarantined, never delivered), per sink.",
                &["sink"],
            ),
            ack_seconds,
            poller_requests: counter(
                &r,
                "sluice_poller_requests_total",
                "API requests made by pollers, per source and outcome.",
                &["source", "outcome"],
            ),
            poller_events: counter(
                &r,
                "sluice_poller_events_total",
                "Events per poller: received, duplicate (filtered), spooled.",
                &["source", "stage"],
            ),
            poller_stopped: gauge_vec(
                &r,
                "sluice_poller_stopped",
                "1 when a poller has stopped on an error that needs an operator (bad key, no permission).",
                &["source"],
            ),
            transform_info: gauge_vec(
                &r,
                "sluice_transform_active_info",
                "The active version of each uploaded transform (value 1).",
                &["transform", "version", "sha256"],
            ),
            transform_swaps: counter(
                &r,
                "sluice_transform_swaps_total",
                "Activations that swapped a transform in running pipelines.",
                &["transform"],
            ),
            transform_swap_seconds: histogram(
                &r,
                "sluice_transform_swap_duration_seconds",
                "Time from an activation request to the new version being current (compile, validate, swap).",
                &["transform"],
                vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            uploads_rejected: counter(
                &r,
                "sluice_transform_uploads_rejected_total",
                "Component uploads refused, by reason.",
                &["reason"],
            ),
            sink_retries: counter(
                &r,
                "sluice_sink_retries_total",
                "Deliveries retried after a transient failure, per sink.",
                &["sink"],
            ),
            sink_stopped: gauge_vec(
                &r,
                "sluice_sink_stopped",
                "1 when a sink stopped on an error an operator must fix; its records stay spooled.",
                &["sink"],
            ),
            pipeline_waiting: gauge_vec(
                &r,
                "sluice_pipeline_waiting",
                "1 while a pipeline waits for a transform to be uploaded and activated; its sources answer 503.",
                &["pipeline", "transform"],
            ),
            admin_auth_failures: counter(
                &r,
                "sluice_admin_auth_failures_total",
                "Admin API requests refused for a missing or wrong bearer token.",
                &["reason"],
            ),
            spool_over_high_water: gauge_vec(
                &r,
                "sluice_spool_over_high_water",
                "1 while a sink's backlog is over its spool budget's high-water mark: its sources answer 503 and pollers wait.",
                &["sink"],
            ),
            poller_cursor: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "sluice_poller_cursor_timestamp_seconds",
                        "The newest event time a poller has spooled (its cursor), as a Unix time; time() minus it is the poller's lag.",
                    ),
                    &["source"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            cluster_leader: gauge_vec(
                &r,
                "sluice_cluster_leader",
                "Cluster mode: 1 while this replica leads a poller source (holds its etcd leader key with a renewed lease), else 0.",
                &["source"],
            ),
            cluster_changes: counter(
                &r,
                "sluice_cluster_leadership_changes_total",
                "Cluster mode: times this replica took or lost the lead of a poller source.",
                &["source"],
            ),
            cluster_etcd_up: gauge_vec(
                &r,
                "sluice_cluster_etcd_up",
                "Cluster mode: 1 while this replica's etcd lease is renewed within 2/3 of its TTL; 0 while it is not (its pollers pause).",
                &[],
            ),
            cluster_repolled: counter(
                &r,
                "sluice_cluster_repolled_events_total",
                "Cluster mode: events spooled that another replica may spool too (a new leader's first page after an unclean handover, a deposed leader's refused page). An upper bound on duplicates from failovers.",
                &["source"],
            ),
            cluster_fenced: counter(
                &r,
                "sluice_cluster_fenced_writes_total",
                "Cluster mode: cursor writes etcd refused because this replica no longer led the source.",
                &["source"],
            ),
            cluster_view: std::sync::Arc::default(),
            stopped_sinks: std::sync::Arc::default(),
            registry: r,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a family with a bad name
        // would have failed at registration.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// A push request was accepted: `records` records, `bytes` body bytes.
    pub fn push_accepted(
        &self,
        source: &str,
        records: usize,
        bytes: usize,
        elapsed: std::time::Duration,
    ) {
        self.source_records
            .with_label_values(&[source])
            .inc_by(records as u64);
        self.source_bytes
            .with_label_values(&[source])
            .inc_by(bytes as u64);
        self.ack_seconds.observe(elapsed.as_secs_f64());
        tracing::debug!(
            source,
            records,
            bytes,
            elapsed_ms = elapsed.as_millis() as u64,
            "push accepted"
        );
    }

    /// A push request was refused. `detail` is safe to log (never a secret).
    pub fn push_rejected(&self, source: &str, reason: Rejection, detail: &str) {
        self.source_rejected
            .with_label_values(&[source, reason.as_str()])
            .inc();
        match reason {
            Rejection::Internal | Rejection::DiskFull => {
                tracing::error!(source, reason = reason.as_str(), detail, "push refused")
            }
            Rejection::Backpressure | Rejection::WaitingForTransform => {
                tracing::warn!(source, reason = reason.as_str(), detail, "push refused")
            }
            _ => tracing::info!(source, reason = reason.as_str(), detail, "push refused"),
        }
    }

    /// One batch went through a transform.
    pub fn transform_batch(
        &self,
        pipeline: &str,
        transform: &str,
        counts: &BatchCounts,
        seconds: f64,
    ) {
        let c = |outcome: &str, n: usize| {
            if n > 0 {
                self.transform_records
                    .with_label_values(&[pipeline, transform, outcome])
                    .inc_by(n as u64);
            }
        };
        c("in", counts.input);
        c("out", counts.output);
        c("error", counts.errors);
        c("dropped", counts.dropped);
        c("passed", counts.passed);
        self.transform_seconds
            .with_label_values(&[pipeline, transform])
            .observe(seconds);
    }

    /// A record failed in a transform. Logged at warn: the data is kept
    /// (dead letter or pass) or counted (drop).
    pub fn transform_failed(&self, pipeline: &str, transform: &str, policy: &str, error: &str) {
        tracing::warn!(
            pipeline,
            transform,
            policy,
            error,
            "record failed in transform"
        );
    }

    /// Records went to dead letter.
    pub fn dead_lettered(&self, pipeline: &str, n: usize) {
        self.dead_letters
            .with_label_values(&[pipeline])
            .inc_by(n as u64);
    }

    /// An object was delivered.
    pub fn object_written(
        &self,
        sink: &str,
        key: &str,
        records: usize,
        bytes: u64,
        oldest_ms: i64,
    ) {
        self.sink_objects.with_label_values(&[sink]).inc();
        self.sink_records
            .with_label_values(&[sink])
            .inc_by(records as u64);
        self.sink_bytes.with_label_values(&[sink]).inc_by(bytes);
        let lag = (chrono::Utc::now().timestamp_millis() - oldest_ms).max(0) as f64 / 1000.0;
        self.sink_latency.with_label_values(&[sink]).observe(lag);
        tracing::info!(sink, key, records, bytes, "object written");
    }

    /// A delivery failed; the records stay spooled.
    pub fn sink_failed(&self, sink: &str, kind: &str, error: &str) {
        self.sink_errors.with_label_values(&[sink, kind]).inc();
        tracing::error!(
            sink,
            kind,
            error,
            "delivery failed; records stay in the spool"
        );
    }

    /// A record the sink cannot encode (it goes to the sink's dead-letter
    /// folder instead).
    pub fn sink_rejected_record(&self, sink: &str, error: &str) {
        self.sink_errors.with_label_values(&[sink, "encode"]).inc();
        tracing::warn!(
            sink,
            error,
            "record cannot be encoded; written to dead_letter"
        );
    }
}

impl Metrics {
    /// Creates a configured sink's series at zero, so they are scraped (and
    /// alerts on them work) before anything happens to it.
    pub fn declare_sink(&self, sink: &str) {
        for c in [
            &self.sink_objects,
            &self.sink_records,
            &self.sink_bytes,
            &self.sink_retries,
            &self.spool_corrupt,
        ] {
            c.with_label_values(&[sink]);
        }
        self.sink_stopped.with_label_values(&[sink]).set(0);
        self.spool_depth(sink, 0, 0, 0.0, false);
    }

    /// Creates a configured source's series at zero (see
    /// [`Metrics::declare_sink`]).
    pub fn declare_source(&self, source: &str, poller: bool) {
        if poller {
            self.poller_stopped.with_label_values(&[source]).set(0);
            for stage in ["received", "duplicate", "spooled"] {
                self.poller_events.with_label_values(&[source, stage]);
            }
            // Every API answers these; `graphql_error` (JupiterOne's) shows
            // up when it first happens.
            for outcome in ["ok", "429", "5xx", "4xx", "network", "invalid_json"] {
                self.poller_requests.with_label_values(&[source, outcome]);
            }
        } else {
            self.source_records.with_label_values(&[source]);
            self.source_bytes.with_label_values(&[source]);
        }
    }

    /// A sink's backlog, as a scrape reads it; `over_high_water` when its
    /// sources are being turned away.
    pub fn spool_depth(
        &self,
        sink: &str,
        records: u64,
        bytes: u64,
        oldest_age_secs: f64,
        over_high_water: bool,
    ) {
        self.spool_over_high_water
            .with_label_values(&[sink])
            .set(i64::from(over_high_water));
        self.spool_records
            .with_label_values(&[sink])
            .set(records as i64);
        self.spool_bytes
            .with_label_values(&[sink])
            .set(bytes as i64);
        self.spool_oldest_age
            .with_label_values(&[sink])
            .set(oldest_age_secs);
    }

    /// Damage in a sink's log: the bytes were set aside and their records
    /// are not delivered.
    pub fn spool_damage(&self, sink: &str, d: &crate::spool::log::Damage) {
        self.spool_corrupt
            .with_label_values(&[sink])
            .inc_by(d.frames);
        tracing::error!(
            sink,
            segment = d.at.segment,
            offset = d.at.offset,
            bytes = d.bytes,
            records = d.frames,
            quarantined = %d.quarantined.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string()),
            "spool: damaged bytes in the log (bad checksum); set aside, their records are not delivered"
        );
    }

    /// A version became active (at start-up, or by activation).
    pub fn transform_active(
        &self,
        transform: &str,
        version: u32,
        sha256: &str,
        previous: Option<(u32, &str)>,
    ) {
        if let Some((v, sha)) = previous {
            let _ = self
                .transform_info
                .remove_label_values(&[transform, &v.to_string(), sha]);
        }
        self.transform_info
            .with_label_values(&[transform, &version.to_string(), sha256])
            .set(1);
    }

    /// An activation swapped running pipelines.
    pub fn transform_swapped(&self, transform: &str, version: u32, pipelines: usize, seconds: f64) {
        self.transform_swaps.with_label_values(&[transform]).inc();
        self.transform_swap_seconds
            .with_label_values(&[transform])
            .observe(seconds);
        tracing::info!(
            transform,
            version,
            pipelines,
            swap_ms = format!("{:.1}", seconds * 1e3),
            "transform activated"
        );
    }

    /// The sinks that stopped for good, and why.
    pub fn stopped_sinks(&self) -> std::collections::BTreeMap<String, String> {
        self.stopped_sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A sink will retry after a transient failure.
    pub fn sink_retry(&self, sink: &str) {
        self.sink_retries.with_label_values(&[sink]).inc();
    }

    /// A sink stopped for good; its records stay in the spool.
    pub fn sink_stopped(&self, sink: &str, reason: &str) {
        self.sink_stopped.with_label_values(&[sink]).set(1);
        self.stopped_sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(sink.to_string(), reason.to_string());
        tracing::error!(
            sink,
            reason,
            "sink stopped; records stay in the spool until it is fixed and sluice restarted"
        );
    }

    /// A component was uploaded and stored.
    pub fn transform_uploaded(&self, transform: &str, version: u32, sha256: &str) {
        tracing::info!(transform, version, sha256, "transform uploaded");
    }

    /// A pipeline names a transform that is not uploaded yet (`waiting`
    /// true, at start), or its first activation brought it up (false).
    pub fn pipeline_waiting(&self, pipeline: &str, transform: &str, waiting: bool) {
        self.pipeline_waiting
            .with_label_values(&[pipeline, transform])
            .set(i64::from(waiting));
        if waiting {
            tracing::warn!(
                pipeline,
                transform,
                "pipeline waits for its transform: upload and activate it \
                 (sluice transform push NAME FILE.wasm --activate); until then its sources answer 503"
            );
        } else {
            tracing::info!(
                pipeline,
                transform,
                "pipeline is up: its transform was activated"
            );
        }
    }

    /// An admin API request without the right bearer token. `reason` is
    /// `missing` or `wrong`; the token given is never logged.
    pub fn admin_auth_failed(&self, peer: Option<std::net::SocketAddr>, path: &str, reason: &str) {
        self.admin_auth_failures.with_label_values(&[reason]).inc();
        let peer = peer.map_or_else(|| "-".to_string(), |p| p.to_string());
        tracing::warn!(peer, path, reason, "admin API: bearer token refused");
    }

    /// An activation was refused (a following pipeline cannot instantiate
    /// the version); nothing changed.
    pub fn activation_refused(&self, transform: &str, version: u32, detail: &str) {
        tracing::warn!(
            transform,
            version,
            detail,
            "transform activation refused; the active version is unchanged"
        );
    }

    /// A version was activated that no pipeline follows: nothing runs it.
    pub fn activated_unfollowed(&self, transform: &str, version: u32) {
        tracing::warn!(
            transform,
            version,
            "transform activated, but no pipeline of the config uses it (use = \"NAME\"); nothing runs it"
        );
    }

    /// An upload was refused; `reason` is a fixed label value.
    pub fn upload_rejected(&self, transform: &str, reason: &str, detail: &str) {
        self.uploads_rejected.with_label_values(&[reason]).inc();
        tracing::warn!(transform, reason, detail, "transform upload refused");
    }
}

/// Per-cycle poller statistics, as Devo's collector reports them.
#[derive(Debug, Default, Clone, Copy)]
pub struct CycleStats {
    /// API requests made.
    pub requests: u64,
    /// Events received from the API.
    pub received: u64,
    /// Events dropped because they were already spooled.
    pub duplicates: u64,
    /// Events committed to the spool.
    pub spooled: u64,
    /// Pages committed.
    pub pages: u64,
}

impl Metrics {
    /// One API request finished with `outcome` (`ok`, `429`, `5xx`, `4xx`,
    /// `network`, `invalid_json`, `graphql_error`).
    pub fn poll_request(&self, source: &str, outcome: &str) {
        self.poller_requests
            .with_label_values(&[source, outcome])
            .inc();
    }

    /// A poller's cursor moved to `seconds` (Unix time of the newest event
    /// spooled).
    pub fn poll_cursor(&self, source: &str, seconds: f64) {
        self.poller_cursor.with_label_values(&[source]).set(seconds);
    }

    /// A page was committed.
    pub fn poll_page(&self, source: &str, received: usize, duplicates: usize, spooled: usize) {
        let add = |stage: &str, n: usize| {
            if n > 0 {
                self.poller_events
                    .with_label_values(&[source, stage])
                    .inc_by(n as u64);
            }
        };
        add("received", received);
        add("duplicate", duplicates);
        add("spooled", spooled);
    }

    /// A cycle ended: one log line with the cycle's figures.
    pub fn poll_cycle(&self, source: &str, stats: &CycleStats, elapsed: std::time::Duration) {
        let rate = stats.spooled as f64 / elapsed.as_secs_f64().max(1e-3);
        tracing::info!(
            source,
            requests = stats.requests,
            received = stats.received,
            duplicates_filtered = stats.duplicates,
            spooled = stats.spooled,
            events_per_sec = format!("{rate:.1}"),
            elapsed_ms = elapsed.as_millis() as u64,
            "poll cycle done"
        );
    }

    /// A request will be retried after `wait`.
    pub fn poll_retry(&self, source: &str, reason: &str, wait: std::time::Duration) {
        tracing::warn!(
            source,
            reason,
            wait_ms = wait.as_millis() as u64,
            "poll request failed; retrying"
        );
    }

    /// A poller stopped on an error an operator must fix.
    pub fn poller_stopped(&self, source: &str, reason: &str) {
        self.poller_stopped.with_label_values(&[source]).set(1);
        tracing::error!(
            source,
            reason,
            "poller stopped; fix the cause and restart sluice"
        );
    }
}

/// Cluster mode's state for `/readyz`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterView {
    /// This replica's id.
    pub instance_id: String,
    /// Whether the etcd lease is being renewed.
    pub etcd_up: bool,
    /// The poller sources this replica leads.
    pub leads: std::collections::BTreeSet<String>,
}

impl Metrics {
    /// Cluster mode is on: every poller source starts as not led here,
    /// and etcd as not (yet) reached.
    pub fn declare_cluster(&self, instance_id: &str, sources: &[String]) {
        for s in sources {
            self.cluster_leader.with_label_values(&[s.as_str()]).set(0);
            self.cluster_changes.with_label_values(&[s.as_str()]);
            self.cluster_repolled.with_label_values(&[s.as_str()]);
            self.cluster_fenced.with_label_values(&[s.as_str()]);
        }
        self.cluster_etcd_up
            .with_label_values(&[] as &[&str])
            .set(0);
        *crate::util::lock(&self.cluster_view) = Some(ClusterView {
            instance_id: instance_id.to_string(),
            ..ClusterView::default()
        });
    }

    /// Cluster mode's state, if it is on.
    pub fn cluster_view(&self) -> Option<ClusterView> {
        crate::util::lock(&self.cluster_view).clone()
    }

    /// The etcd lease was renewed in time (`up`) or was not within 2/3 of
    /// its TTL; logged only on a change.
    pub fn cluster_etcd(&self, up: bool, why: &str) {
        let mut view = crate::util::lock(&self.cluster_view);
        let Some(view) = view.as_mut() else { return };
        if view.etcd_up == up {
            return;
        }
        view.etcd_up = up;
        self.cluster_etcd_up
            .with_label_values(&[] as &[&str])
            .set(i64::from(up));
        if up {
            tracing::info!(
                instance_id = view.instance_id.as_str(),
                "etcd lease held; pollers may lead"
            );
        } else {
            tracing::warn!(
                instance_id = view.instance_id.as_str(),
                reason = why,
                "etcd lease not renewed within 2/3 of its TTL; pollers pause, push and delivery go on"
            );
        }
    }

    /// Whether this replica leads `source` (as last reported).
    pub fn cluster_leads(&self, source: &str) -> bool {
        crate::util::lock(&self.cluster_view)
            .as_ref()
            .is_some_and(|v| v.leads.contains(source))
    }

    /// This replica took (`leads`) or lost the lead of `source`.
    pub fn cluster_leader(&self, source: &str, leads: bool, why: &str) {
        self.cluster_leader
            .with_label_values(&[source])
            .set(i64::from(leads));
        self.cluster_changes.with_label_values(&[source]).inc();
        if let Some(view) = crate::util::lock(&self.cluster_view).as_mut() {
            if leads {
                view.leads.insert(source.to_string());
            } else {
                view.leads.remove(source);
            }
        }
        if leads {
            tracing::info!(source, reason = why, "this replica now leads the poller");
        } else {
            tracing::warn!(
                source,
                reason = why,
                "this replica no longer leads the poller; it stops polling"
            );
        }
    }

    /// Events spooled that another replica may spool too (see the metric).
    pub fn cluster_repolled(&self, source: &str, events: usize, why: &str) {
        if events == 0 {
            return;
        }
        self.cluster_repolled
            .with_label_values(&[source])
            .inc_by(events as u64);
        tracing::warn!(
            source,
            events,
            reason = why,
            "events may be duplicated by a failover"
        );
    }

    /// etcd refused a cursor write: another replica leads `source` now.
    pub fn cluster_fenced(&self, source: &str) {
        self.cluster_fenced.with_label_values(&[source]).inc();
        tracing::warn!(
            source,
            "cursor write refused by etcd: another replica took the lead (this one was paused or cut off)"
        );
    }
}

/// What happened to the records of one batch in one transform.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchCounts {
    /// Records in.
    pub input: usize,
    /// Records emitted.
    pub output: usize,
    /// Records that failed (any policy).
    pub errors: usize,
    /// Failed records dropped.
    pub dropped: usize,
    /// Failed records passed on unchanged.
    pub passed: usize,
}
