//! The config file: one TOML document for listeners, sources, pipelines,
//! sinks, the spool and limits.
//!
//! Loading has three steps, so `sluice check` can run the first two without
//! touching anything: [`Config::parse`] (syntax and types), [`Config::validate`]
//! (cross-references and values, no I/O) and [`Config::resolve_secrets`]
//! (reads env vars and secret files). Every error names the file, the line
//! and the key.

mod locate;
mod secret;

pub use secret::{Secret, SecretValue};

use crate::sinks::key::KeyTemplate;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One config problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {}{message}", file.display(), if key.is_empty() { String::new() } else { format!("`{key}`: ") })]
pub struct ConfigIssue {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted key path (`sources.push.auth.token`); empty for syntax errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Syntax, type or validation problems (at least one).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the spool database, generated TLS material and the compiled
    /// component cache live. Relative to the config file.
    pub state_dir: PathBuf,
    /// The admin listener: `/metrics`, `/healthz`, `/readyz`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// HTTPS listeners that push sources attach to, by name.
    #[serde(default)]
    pub listeners: BTreeMap<String, ListenerConfig>,
    /// Where records come from, by name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Source → transforms → route → sink, by name.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// Where records go, by name.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// The durable spool between pipelines and sinks.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Limits on the transform host.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Cluster mode: run as one of several replicas coordinated through
    /// etcd (docs/cluster.md). Without it, nothing is coordinated.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The directory of the config file; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file itself, for error messages.
    #[serde(skip)]
    pub file: PathBuf,
    /// The config's text, to locate keys in errors found after loading
    /// (a transform that cannot be loaded, say).
    #[serde(skip)]
    text: SourceText,
}

/// A config file's text. Its `Debug` shows only the length: the text may
/// hold literal secrets.
#[derive(Clone, Default)]
struct SourceText(std::sync::Arc<str>);

impl std::fmt::Debug for SourceText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceText({} bytes)", self.0.len())
    }
}

/// The admin listener: metrics, health, and the transforms API. Plain
/// HTTP on loopback by default; TLS when `tls` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to bind (default `127.0.0.1:9464`). Port 0 picks a free port.
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
    /// Bearer token for `/v1/transforms` (`${env:…}` or `${file:…}`).
    /// Without it the transforms API answers 403.
    pub token: Option<Secret>,
    /// Serve the admin listener over TLS.
    pub tls: Option<TlsConfig>,
    /// Largest component upload, in bytes (413 above it).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
            token: None,
            tls: None,
            max_upload_bytes: default_max_upload(),
        }
    }
}

fn default_max_upload() -> usize {
    64 << 20
}

fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// An HTTPS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind, such as `0.0.0.0:8443`. Port 0 picks a free port
    /// (the chosen one is logged).
    pub address: SocketAddr,
    /// Certificate and key.
    pub tls: TlsConfig,
    /// Open connections beyond this wait in the kernel's accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to finish the TLS handshake, and to send each
    /// request's headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds a connection with no request in flight may stay silent
    /// before it is closed (HTTP/1 keep-alive, HTTP/2, or nothing at all).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds a request's body may take to arrive (408 after).
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
}

fn default_idle_timeout() -> u64 {
    60
}
fn default_body_timeout() -> u64 {
    60
}

fn default_max_connections() -> usize {
    1024
}
fn default_header_timeout() -> u64 {
    10
}

/// TLS material for a listener: files, or a self-signed pair generated into
/// the state directory (for trying sluice out).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Generate (once) and use `state_dir/tls/cert.pem` and `key.pem`.
    #[serde(default)]
    pub self_signed: bool,
}

/// A source of records.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Records pushed to `POST /v1/push/{name}` on a listener.
    Push(crate::sources::push::PushConfig),
    /// JumpCloud Directory Insights, polled.
    Jumpcloud(crate::sources::jumpcloud::JumpCloudConfig),
    /// JupiterOne `queryV1`, polled.
    Jupiterone(crate::sources::jupiterone::JupiterOneConfig),
}

/// How a push source authenticates requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// `Authorization: Basic` (what emnify's Data Streamer sends).
    Basic {
        /// User name (not secret).
        username: String,
        /// Password.
        password: Secret,
    },
    /// HMAC-SHA256 of the raw request body (before decompression), hex, in
    /// a header, optionally prefixed `sha256=`.
    Hmac {
        /// The shared key.
        key: Secret,
        /// Header that carries the signature.
        #[serde(default = "default_hmac_header")]
        header: String,
    },
    /// No authentication. Must be chosen explicitly.
    None,
}

fn default_hmac_header() -> String {
    "x-sluice-signature".into()
}

/// A pipeline: records from one source through an ordered list of
/// transforms, to one sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The source that feeds it.
    pub source: String,
    /// Transforms, applied in order.
    #[serde(default)]
    pub transforms: Vec<TransformRef>,
    /// Route for records whose transform sets none (default: the source name).
    pub route: Option<String>,
    /// The sink that receives the records.
    pub sink: String,
    /// The sink for dead letters (default: `sink`). Dead letters carry the
    /// route `dead_letter`.
    pub dead_letter_sink: Option<String>,
    /// Records per batch into the transforms (passed in calls of at most 64).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_batch() -> usize {
    256
}

/// One transform in a pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformRef {
    /// A built-in name (`sluice transform list`) or a path to a component.
    #[serde(rename = "use")]
    pub uses: String,
    /// Refuse to start unless the component's sha256 is this (64 hex digits).
    pub sha256: Option<String>,
    /// What happens to a record the transform fails on.
    #[serde(default)]
    pub on_error: FailPolicy,
    /// Passed to the transform's `create`. Values may be strings, numbers
    /// or booleans; the transform receives them as strings.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

/// What happens to a record a transform fails on (an error value, a trap,
/// a deadline or a memory cap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailPolicy {
    /// To the dead-letter sink, with its original bytes and the error.
    #[default]
    DeadLetter,
    /// Dropped and counted.
    Drop,
    /// Forwarded unchanged to the next step.
    Pass,
}

/// A sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "read once at start; boxing would only add noise"
)]
pub enum SinkConfig {
    /// Files under a local directory.
    Local(crate::sinks::local::LocalConfig),
    /// Objects in an S3 bucket (AWS or S3-compatible).
    S3(crate::sinks::s3::S3Config),
}

/// How finished objects are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip (`.gz`).
    Gzip,
    /// zstd (`.zst`).
    Zstd,
}

/// When an open object is finished and made visible.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateConfig {
    /// Encoded bytes before compression.
    #[serde(default = "default_rotate_bytes")]
    pub max_bytes: u64,
    /// Records.
    #[serde(default = "default_rotate_records")]
    pub max_records: u64,
    /// Seconds since the object's first record.
    #[serde(default = "default_rotate_age")]
    pub max_age_secs: f64,
}

impl Default for RotateConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_rotate_bytes(),
            max_records: default_rotate_records(),
            max_age_secs: default_rotate_age(),
        }
    }
}

fn default_rotate_bytes() -> u64 {
    64 << 20
}
fn default_rotate_records() -> u64 {
    1_000_000
}
fn default_rotate_age() -> f64 {
    60.0
}

/// Spool budgets and durability. The budgets apply to each sink's backlog
/// on its own: a source is told to back off only when a sink it feeds is
/// over its budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Record bytes (as framed in the log) one sink's backlog may hold.
    #[serde(default = "default_spool_bytes")]
    pub max_bytes: u64,
    /// Records one sink's backlog may hold.
    #[serde(default = "default_spool_records")]
    pub max_records: u64,
    /// Seconds the oldest undelivered record of a sink may wait before its
    /// sources are told to back off (default: no limit).
    pub max_age_secs: Option<f64>,
    /// Fraction of `max_bytes` or `max_records` above which sources are
    /// told to back off.
    #[serde(default = "default_high_water")]
    pub high_water: f64,
    /// `full`: every acknowledged record survives power loss (the log is
    /// fsynced before the answer). `normal`: it survives a crash of sluice
    /// (kill -9), not of the machine.
    #[serde(default)]
    pub sync: SyncMode,
    /// Size at which a sink's log moves to a new segment file; delivered
    /// data is deleted a whole segment at a time.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Appends are refused (507) while the state folder's file system has
    /// less than this free, so the metadata can still record the deliveries
    /// that free space again.
    #[serde(default = "default_min_free")]
    pub min_free_bytes: u64,
    /// Budgets for particular sinks, over the ones above.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkBudget>,
}

/// One sink's backlog budget (unset keys come from `[spool]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkBudget {
    /// Record bytes.
    pub max_bytes: Option<u64>,
    /// Records.
    pub max_records: Option<u64>,
    /// Seconds the oldest record may wait.
    pub max_age_secs: Option<f64>,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_spool_bytes(),
            max_records: default_spool_records(),
            max_age_secs: None,
            high_water: default_high_water(),
            sync: SyncMode::default(),
            segment_bytes: default_segment_bytes(),
            min_free_bytes: default_min_free(),
            sinks: BTreeMap::new(),
        }
    }
}

fn default_spool_bytes() -> u64 {
    1 << 30
}
fn default_spool_records() -> u64 {
    10_000_000
}
fn default_high_water() -> f64 {
    0.8
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_min_free() -> u64 {
    64 << 20
}

/// Whether appends are fsynced before they are acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fsync the log (and the metadata's WAL) on every group commit.
    #[default]
    Full,
    /// Leave writing back to the OS.
    Normal,
}

/// Limits on the transform host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Deadline per batch into a transform, in milliseconds.
    #[serde(default = "default_deadline_ms")]
    pub transform_deadline_ms: u64,
    /// Memory cap per transform instance, in MiB.
    #[serde(default = "default_memory_mib")]
    pub transform_memory_mib: u64,
    /// Threads that run transforms (0: one per core).
    #[serde(default)]
    pub workers: usize,
    /// Memory for request bodies in flight, all push sources together (as
    /// sent, decompressed, and split into records). A request that would
    /// go over it is answered 503 with `Retry-After` instead of queued.
    #[serde(default = "default_body_memory")]
    pub max_body_memory_bytes: u64,
}

fn default_body_memory() -> u64 {
    256 << 20
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            transform_deadline_ms: default_deadline_ms(),
            transform_memory_mib: default_memory_mib(),
            workers: 0,
            max_body_memory_bytes: default_body_memory(),
        }
    }
}

fn default_deadline_ms() -> u64 {
    1000
}
fn default_memory_mib() -> u64 {
    64
}

/// A validation finding before it is located in the file.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) path: Vec<String>,
    pub(crate) message: String,
}

/// Builds a validation finding at a key path.
pub(crate) fn invalid(path: &[&str], message: impl Into<String>) -> Invalid {
    Invalid {
        path: path.iter().map(|s| (*s).to_string()).collect(),
        message: message.into(),
    }
}

impl Config {
    /// Reads, parses and validates a config file (no other I/O).
    ///
    /// # Errors
    ///
    /// [`ConfigError`], listing every problem found.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(path, &text)
    }

    /// Parses and validates config text as if read from `path` (no I/O).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`], listing every problem found.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config = Self::parse(path, text)?;
        let issues = config.validate();
        if !issues.is_empty() {
            return Err(ConfigError::Invalid(locate_all(path, text, issues)));
        }
        config.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        config.file = path.to_path_buf();
        config.text = SourceText(text.into());
        Ok(config)
    }

    /// Where a key is, as `file:line:column: \`key\``, for errors found
    /// after loading. The line is the nearest existing part of the path.
    pub fn locate(&self, path: &[&str]) -> String {
        let path: Vec<String> = path.iter().map(|s| (*s).to_string()).collect();
        let issue = locate_one(&locate::Locator::new(&self.text.0), &self.file, path, "");
        issue.to_string().trim_end_matches(": ").to_string()
    }

    /// Parses TOML text (syntax and types only).
    ///
    /// # Errors
    ///
    /// One located [`ConfigIssue`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str::<Config>(text).map_err(|e| {
            let locator = locate::Locator::new(text);
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_string();
            let field = backticked(&message);
            let (key, at) = locator.key_at(&span, field.as_deref());
            let (line, column) = locator.line_col(at.unwrap_or(span).start);
            ConfigError::Invalid(vec![ConfigIssue {
                file: path.to_path_buf(),
                line,
                column,
                key: locate::dotted(&key),
                message,
            }])
        })
    }

    /// Checks references and values. No I/O.
    pub(crate) fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        for (name, l) in &self.listeners {
            match (&l.tls.cert, &l.tls.key, l.tls.self_signed) {
                (Some(_), Some(_), false) | (None, None, true) => {}
                (_, _, true) => out.push(invalid(
                    &["listeners", name, "tls", "self_signed"],
                    "set either `self_signed = true` or `cert` and `key`, not both",
                )),
                _ => out.push(invalid(
                    &["listeners", name, "tls"],
                    "needs both `cert` and `key`, or `self_signed = true`",
                )),
            }
            if l.header_timeout_secs == 0 || l.idle_timeout_secs == 0 || l.body_timeout_secs == 0 {
                out.push(invalid(
                    &["listeners", name],
                    "header_timeout_secs, idle_timeout_secs and body_timeout_secs must be positive",
                ));
            }
            if l.max_connections == 0 {
                out.push(invalid(
                    &["listeners", name, "max_connections"],
                    "must be at least 1",
                ));
            }
        }
        for (name, s) in &self.sources {
            match s {
                SourceConfig::Push(p) => p.validate(name, self, &mut out),
                SourceConfig::Jumpcloud(j) => j.validate(name, &mut out),
                SourceConfig::Jupiterone(j) => j.validate(name, &mut out),
            }
            if !self.pipelines.values().any(|p| &p.source == name) {
                out.push(invalid(
                    &["sources", name],
                    "no pipeline reads from this source; its data would be acknowledged and go nowhere",
                ));
            }
        }
        for (name, p) in &self.pipelines {
            if !self.sources.contains_key(&p.source) {
                out.push(invalid(
                    &["pipelines", name, "source"],
                    format!(
                        "no source named {:?} (sources: {})",
                        p.source,
                        names(&self.sources)
                    ),
                ));
            }
            for (key, sink) in [
                ("sink", Some(&p.sink)),
                ("dead_letter_sink", p.dead_letter_sink.as_ref()),
            ] {
                if let Some(sink) = sink
                    && !self.sinks.contains_key(sink)
                {
                    out.push(invalid(
                        &["pipelines", name, key],
                        format!("no sink named {sink:?} (sinks: {})", names(&self.sinks)),
                    ));
                }
            }
            if p.batch_size == 0 || p.batch_size > 100_000 {
                out.push(invalid(
                    &["pipelines", name, "batch_size"],
                    "must be between 1 and 100000",
                ));
            }
            for (i, t) in p.transforms.iter().enumerate() {
                let i = i.to_string();
                if let Some(pin) = &t.sha256
                    && (pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    out.push(invalid(
                        &["pipelines", name, "transforms", &i, "sha256"],
                        "must be 64 hex digits",
                    ));
                }
                for (k, v) in &t.config {
                    if config_value_string(v).is_none() {
                        out.push(invalid(
                            &["pipelines", name, "transforms", &i, "config", k],
                            "must be a string, number or boolean",
                        ));
                    }
                }
            }
        }
        for (name, s) in &self.sinks {
            match s {
                SinkConfig::Local(l) => l.validate(name, &mut out),
                SinkConfig::S3(c) => c.validate(name, &mut out),
            }
        }
        if let Some(tls) = &self.admin.tls
            && !matches!(
                (&tls.cert, &tls.key, tls.self_signed),
                (Some(_), Some(_), false) | (None, None, true)
            )
        {
            out.push(invalid(
                &["admin", "tls"],
                "needs both `cert` and `key`, or `self_signed = true`",
            ));
        }
        if !self.admin.address.ip().is_loopback()
            && self.admin.tls.is_none()
            && self.admin.token.is_some()
        {
            out.push(invalid(
                &["admin", "address"],
                "a non-loopback address with a token serves the transforms and backfills APIs, whose \
                 bearer token and uploaded components would cross the network in clear text: set \
                 [admin] tls = { self_signed = true } (or cert and key), or bind 127.0.0.1. Without a \
                 token only /metrics, /healthz and /readyz are served, and they may stay plain",
            ));
        }
        if self.admin.max_upload_bytes == 0 {
            out.push(invalid(&["admin", "max_upload_bytes"], "must be positive"));
        }
        let s = &self.spool;
        if !(s.high_water > 0.0 && s.high_water <= 1.0) {
            out.push(invalid(&["spool", "high_water"], "must be in (0, 1]"));
        }
        if s.max_bytes == 0 || s.max_records == 0 {
            out.push(invalid(
                &["spool"],
                "max_bytes and max_records must be positive",
            ));
        }
        if s.max_age_secs.is_some_and(|a| a.is_nan() || a <= 0.0) {
            out.push(invalid(&["spool", "max_age_secs"], "must be positive"));
        }
        if s.segment_bytes < (1 << 16) {
            out.push(invalid(
                &["spool", "segment_bytes"],
                "must be at least 65536",
            ));
        }
        for (name, b) in &s.sinks {
            if !self.sinks.contains_key(name) {
                out.push(invalid(
                    &["spool", "sinks", name],
                    format!("no sink named {name:?} (sinks: {})", names(&self.sinks)),
                ));
            }
            if b.max_bytes == Some(0)
                || b.max_records == Some(0)
                || b.max_age_secs.is_some_and(|a| a.is_nan() || a <= 0.0)
            {
                out.push(invalid(
                    &["spool", "sinks", name],
                    "budgets must be positive",
                ));
            }
        }
        if self.limits.transform_deadline_ms == 0 {
            out.push(invalid(
                &["limits", "transform_deadline_ms"],
                "must be positive",
            ));
        }
        for (name, s) in &self.sources {
            if let SourceConfig::Push(p) = s {
                let need = p.max_body_bytes as u64 + 2 * p.max_decoded_bytes as u64;
                if need > self.limits.max_body_memory_bytes {
                    out.push(invalid(
                        &["limits", "max_body_memory_bytes"],
                        format!(
                            "{} bytes cannot hold one full request of source `{name}` \
                             (max_body_bytes + 2 × max_decoded_bytes = {need})",
                            self.limits.max_body_memory_bytes
                        ),
                    ));
                }
            }
        }
        if let Some(c) = &self.cluster {
            c.validate(&mut out);
        }
        if !(1..=4096).contains(&self.limits.transform_memory_mib) {
            out.push(invalid(
                &["limits", "transform_memory_mib"],
                "must be between 1 and 4096",
            ));
        }
        out
    }

    /// Resolves every secret the config references. Reads env vars and
    /// secret files; never logs a value.
    ///
    /// # Errors
    ///
    /// A located issue per secret that cannot be read.
    pub fn resolve_secrets(&self) -> Result<Secrets, ConfigError> {
        let mut resolved = Secrets::default();
        let mut issues = Vec::new();
        for (name, s) in &self.sources {
            let (path, secret) = match s {
                SourceConfig::Push(p) => {
                    match resolve_auth(name, &p.auth) {
                        Ok(r) => {
                            resolved.push.insert(name.clone(), r);
                        }
                        Err(i) => issues.push(i),
                    }
                    continue;
                }
                SourceConfig::Jumpcloud(j) => ("api_key", &j.api_key),
                SourceConfig::Jupiterone(j) => ("api_token", &j.api_token),
            };
            match secret.resolve() {
                Ok(v) => {
                    resolved.api.insert(name.clone(), v);
                }
                Err(e) => issues.push(invalid(&["sources", name, path], e)),
            }
        }
        let proxies = self
            .sources
            .iter()
            .filter_map(|(name, s)| match s {
                SourceConfig::Jumpcloud(j) => Some(("sources", name, j.proxy.as_ref()?)),
                SourceConfig::Jupiterone(j) => Some(("sources", name, j.proxy.as_ref()?)),
                SourceConfig::Push(_) => None,
            })
            .chain(self.sinks.iter().filter_map(|(name, s)| match s {
                SinkConfig::S3(c) => Some(("sinks", name, c.proxy.as_ref()?)),
                SinkConfig::Local(_) => None,
            }));
        for (kind, name, proxy) in proxies {
            if let Some(password) = &proxy.password {
                match password.resolve() {
                    Ok(v) => {
                        resolved.proxy.insert(format!("{kind}.{name}"), v);
                    }
                    Err(e) => issues.push(invalid(&[kind, name, "proxy", "password"], e)),
                }
            }
        }
        for (name, sink) in &self.sinks {
            let SinkConfig::S3(c) = sink else { continue };
            if let (Some(ak), Some(sk)) = (&c.access_key_id, &c.secret_access_key) {
                match (ak.resolve(), sk.resolve()) {
                    (Ok(a), Ok(s)) => {
                        resolved.s3.insert(name.clone(), (a, s));
                    }
                    (Err(e), _) => issues.push(invalid(&["sinks", name, "access_key_id"], e)),
                    (_, Err(e)) => issues.push(invalid(&["sinks", name, "secret_access_key"], e)),
                }
            }
        }
        if let Some(token) = &self.admin.token {
            match token.resolve() {
                Ok(v) => resolved.admin_token = Some(v),
                Err(e) => issues.push(invalid(&["admin", "token"], e)),
            }
        }
        if issues.is_empty() {
            Ok(resolved)
        } else {
            Err(ConfigError::Invalid(locate_all(
                &self.file,
                &self.text.0,
                issues,
            )))
        }
    }

    /// A path from the config, made absolute against the config's folder.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The state directory, resolved.
    pub fn state_dir(&self) -> PathBuf {
        self.path(&self.state_dir)
    }
}

/// Every secret of the config, read.
#[derive(Debug, Default)]
pub struct Secrets {
    /// Push sources' credentials, by source.
    pub push: BTreeMap<String, ResolvedAuth>,
    /// Pollers' API keys and tokens, by source.
    pub api: BTreeMap<String, SecretValue>,
    /// The admin API's bearer token.
    pub admin_token: Option<SecretValue>,
    /// S3 sinks' static credentials, by sink.
    pub s3: BTreeMap<String, (SecretValue, SecretValue)>,
    /// Proxy passwords, by `sources.NAME` or `sinks.NAME`.
    pub proxy: BTreeMap<String, SecretValue>,
}

fn resolve_auth(name: &str, auth: &AuthConfig) -> Result<ResolvedAuth, Invalid> {
    match auth {
        AuthConfig::Bearer { token } => token
            .resolve()
            .map(ResolvedAuth::Bearer)
            .map_err(|e| invalid(&["sources", name, "auth", "token"], e)),
        AuthConfig::Basic { username, password } => password
            .resolve()
            .map(|p| {
                use base64::Engine;
                let mut creds = format!("{username}:").into_bytes();
                creds.extend_from_slice(p.expose());
                ResolvedAuth::Basic(SecretValue::new(
                    base64::engine::general_purpose::STANDARD.encode(creds),
                ))
            })
            .map_err(|e| invalid(&["sources", name, "auth", "password"], e)),
        AuthConfig::Hmac { key, header } => key
            .resolve()
            .map(|k| ResolvedAuth::Hmac {
                key: k,
                header: header.to_ascii_lowercase(),
            })
            .map_err(|e| invalid(&["sources", name, "auth", "key"], e)),
        AuthConfig::None => Ok(ResolvedAuth::None),
    }
}

/// Authentication with its secrets read.
#[derive(Debug, Clone)]
pub enum ResolvedAuth {
    /// The expected bearer token.
    Bearer(SecretValue),
    /// The expected base64 of `user:password`.
    Basic(SecretValue),
    /// HMAC key and the (lower-case) header that carries the signature.
    Hmac {
        /// The shared key.
        key: SecretValue,
        /// The header name.
        header: String,
    },
    /// Open.
    None,
}

/// A transform config value as the string the transform receives.
pub fn config_value_string(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn names<V>(map: &BTreeMap<String, V>) -> String {
    if map.is_empty() {
        "none defined".into()
    } else {
        map.keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The first `name` in a serde message such as "unknown field `name`".
fn backticked(message: &str) -> Option<String> {
    let rest = message.split_once('`')?.1;
    Some(rest.split_once('`')?.0.to_string())
}

fn locate_all(file: &Path, text: &str, issues: Vec<Invalid>) -> Vec<ConfigIssue> {
    let locator = locate::Locator::new(text);
    issues
        .into_iter()
        .map(|i| locate_one(&locator, file, i.path, &i.message))
        .collect()
}

fn locate_one(
    locator: &locate::Locator<'_>,
    file: &Path,
    path: Vec<String>,
    message: &str,
) -> ConfigIssue {
    let (line, column) = locator
        .span_of(&path)
        .map_or((1, 1), |s| locator.line_col(s.start));
    ConfigIssue {
        file: file.to_path_buf(),
        line,
        column,
        key: locate::dotted(&path),
        message: message.to_string(),
    }
}

/// Checks a route or name that ends up in object keys.
pub(crate) fn check_key_template(path: &[&str], template: &str, out: &mut Vec<Invalid>) {
    if let Err(e) = KeyTemplate::parse(template) {
        out.push(invalid(path, e.to_string()));
    }
}

#[cfg(test)]
mod tests;
