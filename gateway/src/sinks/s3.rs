//! The S3 sink: objects go to a bucket over TLS only, with the
//! expected-bucket-owner guard on every request, optional SSE (AES256 or
//! KMS, with bucket keys), and multipart upload above a threshold with the
//! upload aborted on failure. It needs only `s3:PutObject` and
//! `s3:AbortMultipartUpload`: it never reads or lists the bucket.
//!
//! Objects are built in a temp file by the shared delivery loop (see
//! `sinks::delivery`), then uploaded by [`S3Store::deliver`] on an upload
//! thread. Transient failures (5xx, 429, timeouts, network) leave the
//! records in the spool and the loop retries the same object under the
//! same key with backoff; credential and owner errors stop the sink with a
//! message that says what to check.

use super::{ObjectStore, SinkError};
use crate::config::{
    Compression, Invalid, RotateConfig, Secret, SecretValue, check_key_template, invalid,
};
use crate::encoding::Encoding;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Config of an S3 sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The bucket's region.
    pub region: String,
    /// An S3-compatible endpoint (`https://` only); default: AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); default: true with an
    /// `endpoint`, false for AWS.
    pub path_style: Option<bool>,
    /// Access key id; default: the standard AWS chain (env, profile,
    /// ECS/IMDS role).
    pub access_key_id: Option<Secret>,
    /// Secret access key (with `access_key_id`).
    pub secret_access_key: Option<Secret>,
    /// `when_supported` (default: flexible CRC32 checksums) or
    /// `when_required` (for stores that reject aws-chunked trailers; then
    /// sluice sends Content-MD5 itself).
    #[serde(default)]
    pub checksum: ChecksumMode,
    /// Extra CA certificates (PEM) for a private endpoint, relative to the
    /// config file.
    pub ca_file: Option<PathBuf>,
    /// An HTTP CONNECT proxy to reach S3 through (default: the
    /// `HTTPS_PROXY` environment variable); see `egress`.
    pub proxy: Option<crate::egress::ProxyConfig>,
    /// The account id that must own the bucket (`x-amz-expected-bucket-owner`
    /// on every request).
    pub expected_bucket_owner: Option<String>,
    /// `AES256` or `aws:kms`.
    pub sse: Option<String>,
    /// The KMS key for `aws:kms`.
    pub kms_key_id: Option<String>,
    /// Use an S3 bucket key for SSE-KMS.
    pub bucket_key: Option<bool>,
    /// A literal prefix for every key, e.g. `jupiterone/`. The connection
    /// test writes `<prefix>.connection-test`.
    #[serde(default)]
    pub prefix: String,
    /// `j1ds` or `emnify`: sets key, name, encoding and compression as
    /// those products lay out their buckets (explicit settings win).
    pub preset: Option<Preset>,
    /// Key template for the folder of each object (after `prefix`).
    pub key: Option<String>,
    /// Object name template, without extension (see the local sink).
    pub name: Option<String>,
    /// `jsonl` or `csv`.
    pub encoding: Option<Encoding>,
    /// `none`, `gzip` or `zstd`.
    pub compression: Option<Compression>,
    /// Compression level.
    pub compression_level: Option<i32>,
    /// When an object is finished.
    #[serde(default)]
    pub rotate: RotateConfig,
    /// Objects above this size go up by multipart upload.
    #[serde(default = "default_multipart")]
    pub multipart_threshold_bytes: u64,
    /// Multipart part size (at least 5 MiB).
    #[serde(default = "default_part")]
    pub part_size_bytes: u64,
    /// Objects uploaded at once.
    #[serde(default = "super::default_in_flight")]
    pub max_in_flight: usize,
    /// Seconds to connect (TCP and TLS) before an attempt fails.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds one attempt of one request (a PUT, one part) may take before
    /// it fails and is retried: a server that takes a request and never
    /// answers holds nothing for longer.
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_secs: u64,
}

fn default_connect_timeout() -> u64 {
    10
}
fn default_attempt_timeout() -> u64 {
    120
}

fn default_multipart() -> u64 {
    16 << 20
}
fn default_part() -> u64 {
    8 << 20
}

/// Request checksum behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// Flexible checksums whenever the operation supports them.
    #[default]
    WhenSupported,
    /// Only when required; sluice adds Content-MD5.
    WhenRequired,
}

/// Bucket layouts of the products Sluice replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// `jupiterone/graph/cdc/accountId=<id>/year=…/month=…/day=…/time=HHMMSS.jsonl.gz`.
    J1ds,
    /// `events_YYYYMMDD_HHmmss.csv` and `cdr_YYYYMMDD_HHmmss.csv`.
    Emnify,
}

/// Key, name, encoding and compression after the preset is applied.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Literal prefix.
    pub prefix: String,
    /// Folder template.
    pub key: String,
    /// Name template.
    pub name: Option<String>,
    /// Encoding.
    pub encoding: Encoding,
    /// Compression.
    pub compression: Compression,
}

impl S3Config {
    /// The layout, preset applied.
    pub fn layout(&self) -> Layout {
        let (prefix, key, name, encoding, compression) = match self.preset {
            Some(Preset::J1ds) => (
                "jupiterone/",
                "graph/cdc/accountId={.properties._accountId}/{hive_date}",
                Some("time=%H%M%S"),
                Encoding::Jsonl,
                Compression::Gzip,
            ),
            // `{emnify_file}` is `cdr` for usage records, `events` otherwise.
            Some(Preset::Emnify) => (
                "",
                "",
                Some("{emnify_file}_%Y%m%d_%H%M%S"),
                Encoding::Csv,
                Compression::None,
            ),
            None => (
                "",
                "{route}/%Y/%m/%d",
                None,
                Encoding::Jsonl,
                Compression::None,
            ),
        };
        Layout {
            prefix: if self.prefix.is_empty() {
                prefix.to_string()
            } else {
                self.prefix.clone()
            },
            key: self.key.clone().unwrap_or_else(|| key.to_string()),
            name: self.name.clone().or_else(|| name.map(str::to_string)),
            encoding: self.encoding.unwrap_or(encoding),
            compression: self.compression.unwrap_or(compression),
        }
    }

    /// Checks values (no I/O). An `http://` endpoint is refused: there is
    /// no switch to allow it.
    pub(crate) fn validate(&self, name: &str, out: &mut Vec<Invalid>) {
        let at = |k: &'static str| ["sinks", name, k];
        if let Some(p) = &self.proxy {
            crate::egress::validate(p, &["sinks", name, "proxy"], out);
        }
        if let Some(e) = &self.endpoint
            && !e.starts_with("https://")
        {
            out.push(invalid(
                &at("endpoint"),
                "must be https:// (sluice delivers over TLS only; there is no override)",
            ));
        }
        if self.bucket.is_empty() {
            out.push(invalid(&at("bucket"), "must not be empty"));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            out.push(invalid(
                &at("access_key_id"),
                "set both access_key_id and secret_access_key, or neither (AWS chain)",
            ));
        }
        if let Some(o) = &self.expected_bucket_owner
            && !(o.len() == 12 && o.bytes().all(|b| b.is_ascii_digit()))
        {
            out.push(invalid(
                &at("expected_bucket_owner"),
                "an AWS account id: 12 digits",
            ));
        }
        match self.sse.as_deref() {
            None | Some("AES256" | "aws:kms") => {}
            Some(_) => out.push(invalid(&at("sse"), "must be \"AES256\" or \"aws:kms\"")),
        }
        if self.kms_key_id.is_some() && self.sse.as_deref() != Some("aws:kms") {
            out.push(invalid(&at("kms_key_id"), "needs sse = \"aws:kms\""));
        }
        if self.connect_timeout_secs == 0 || self.attempt_timeout_secs == 0 {
            out.push(invalid(
                &at("attempt_timeout_secs"),
                "connect_timeout_secs and attempt_timeout_secs must be positive",
            ));
        }
        if self.part_size_bytes < (5 << 20) {
            out.push(invalid(
                &at("part_size_bytes"),
                "S3 parts are at least 5 MiB",
            ));
        }
        if self.prefix.starts_with('/') || self.prefix.contains("..") {
            out.push(invalid(&at("prefix"), "must be relative, without `..`"));
        }
        let layout = self.layout();
        check_key_template(&["sinks", name, "key"], &layout.key, out);
        if let Some(n) = &layout.name
            && n != "{emnify_file}_%Y%m%d_%H%M%S"
        {
            check_key_template(&["sinks", name, "name"], n, out);
        }
        super::validate_common(
            name,
            layout.compression,
            self.compression_level,
            &self.rotate,
            self.max_in_flight,
            out,
        );
    }
}

/// Uploads finished objects to the bucket.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    cfg: S3Config,
    handle: tokio::runtime::Handle,
    temp: PathBuf,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.cfg.bucket)
            .finish_non_exhaustive()
    }
}

/// Builds the S3 client: rustls (ring) with the system roots plus the
/// optional CA, static or chained credentials, the checksum mode, the
/// timeouts, and the TLS-only guard.
///
/// TLS only, whatever sets the endpoint: the config's `endpoint` is checked
/// by `validate`, and here the endpoint the SDK would really use (the
/// config, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, a profile's
/// `endpoint_url`) is checked before anything is sent; and every request
/// passes [`TlsOnly`] just before it is transmitted, so no future code path
/// can send one in clear.
///
/// # Errors
///
/// A message when the CA file cannot be read, the TLS setup fails, or the
/// endpoint is not `https://`.
pub async fn client(
    cfg: &S3Config,
    ca_file: Option<&Path>,
    keys: Option<(SecretValue, SecretValue)>,
    proxy: Option<&crate::egress::Proxy>,
) -> Result<aws_sdk_s3::Client, String> {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
    let mut trust = TrustStore::empty().with_native_roots(true);
    for path in [ca_file, proxy.and_then(|p| p.ca_file.as_deref())]
        .into_iter()
        .flatten()
    {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        trust = trust.with_pem_certificate(pem);
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| e.to_string())?;
    let proxy = proxy
        .map(crate::egress::Proxy::for_aws)
        .transpose()
        .map_err(|e| format!("proxy: {e}"))?;
    // The SDK's connector, built per client as its `build_https` does, with
    // the proxy (CONNECT tunnels, TLS to S3 inside them) when there is one.
    let http = aws_smithy_http_client::Builder::new().build_with_connector_fn(
        move |settings, components| {
            let mut b = aws_smithy_http_client::Connector::builder();
            b.set_connector_settings(settings.cloned());
            if let Some(c) = components {
                b.set_sleep_impl(c.sleep_impl());
            }
            b.set_proxy_config(proxy.clone());
            b.tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .tls_context(tls_context.clone())
            .build()
        },
    );
    let region = aws_config::Region::new(cfg.region.clone());
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(region)
        .load()
        .await;
    let endpoint = cfg.endpoint.clone().or_else(|| {
        let key = aws_types::service_config::ServiceConfigKey::builder()
            .service_id("S3")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .ok()?;
        shared
            .service_config()
            .and_then(|c| c.load_config(key))
            .or_else(|| shared.endpoint_url().map(str::to_string))
    });
    if let Some(e) = &endpoint
        && !e.to_ascii_lowercase().starts_with("https://")
    {
        return Err(format!(
            "the S3 endpoint {e:?} (from the config, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or the profile's endpoint_url) \
             is not https://; sluice delivers over TLS only and sends nothing to it"
        ));
    }
    let timeouts = aws_smithy_types::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(cfg.connect_timeout_secs))
        .operation_attempt_timeout(std::time::Duration::from_secs(cfg.attempt_timeout_secs))
        .build();
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(cfg.path_style.unwrap_or(cfg.endpoint.is_some()))
        .timeout_config(timeouts)
        .interceptor(TlsOnly);
    if let Some(e) = &cfg.endpoint {
        b = b.endpoint_url(e.clone());
    }
    if let Some((ak, sk)) = keys {
        b = b.credentials_provider(aws_sdk_s3::config::Credentials::new(
            String::from_utf8_lossy(ak.expose()),
            String::from_utf8_lossy(sk.expose()),
            None,
            None,
            "sluice-config",
        ));
    }
    b = b.request_checksum_calculation(match cfg.checksum {
        ChecksumMode::WhenSupported => {
            aws_sdk_s3::config::RequestChecksumCalculation::WhenSupported
        }
        ChecksumMode::WhenRequired => aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
    });
    Ok(aws_sdk_s3::Client::from_conf(b.build()))
}

/// Part of the message [`TlsOnly`] refuses with.
const TLS_ONLY: &str = "sluice talks to S3 over TLS only";

/// Refuses, just before transmission, any request whose URL is not
/// `https://`: the last line behind the endpoint checks, whatever set it.
#[derive(Debug)]
pub struct TlsOnly;

impl aws_sdk_s3::config::Intercept for TlsOnly {
    fn name(&self) -> &'static str {
        "sluice-tls-only"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let uri = context.request().uri();
        if uri.to_ascii_lowercase().starts_with("https://") {
            return Ok(());
        }
        let shown = uri.split(['?', '/']).take(3).collect::<Vec<_>>().join("/");
        Err(format!("refusing to send a request to {shown} in clear text: {TLS_ONLY}").into())
    }
}

/// An S3 error, classified.
#[derive(Debug)]
pub struct S3Failure {
    /// The S3 error code (`AccessDenied`, `SlowDown`, …) or `network`.
    pub code: String,
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// S3's message, or the transport error.
    pub message: String,
}

impl S3Failure {
    fn from_sdk<E: ProvideErrorMetadata + std::error::Error + 'static>(
        e: &aws_sdk_s3::error::SdkError<E>,
    ) -> Self {
        let status = e.raw_response().map(|r| r.status().as_u16());
        match e.as_service_error() {
            Some(se) => S3Failure {
                code: se.code().unwrap_or("Unknown").to_string(),
                status,
                message: se.message().unwrap_or("").to_string(),
            },
            None => {
                let message = aws_smithy_types::error::display::DisplayErrorContext(e).to_string();
                let code = if message.contains(TLS_ONLY) {
                    "tls_only"
                } else if status.is_some() {
                    "Unknown"
                } else if matches!(e, aws_sdk_s3::error::SdkError::TimeoutError(_))
                    || message.contains("timed out")
                    || message.contains("timeout")
                {
                    "timeout"
                } else {
                    "network"
                };
                S3Failure {
                    code: code.into(),
                    status,
                    message,
                }
            }
        }
    }

    /// Errors no retry can fix: credentials, permissions, the owner guard,
    /// a missing bucket, an unknown KMS key, a plain-HTTP endpoint.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.code.as_str(),
            "tls_only"
                | "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "NoSuchBucket"
                | "AllAccessDisabled"
                | "InvalidArgument"
        ) || self.status == Some(403)
    }

    /// What to tell the operator.
    pub fn explain(&self, cfg: &S3Config) -> String {
        let base = format!(
            "S3 {} ({}): {}",
            self.code,
            self.status.map_or("no answer".into(), |s| s.to_string()),
            self.message
        );
        match (self.code.as_str(), &cfg.expected_bucket_owner) {
            ("AccessDenied", Some(owner)) => format!(
                "{base}. Check that bucket {:?} is owned by account {owner} (expected_bucket_owner), and that the credentials may s3:PutObject on it",
                cfg.bucket
            ),
            ("AccessDenied", None) => format!(
                "{base}. Check that the credentials may s3:PutObject on bucket {:?}",
                cfg.bucket
            ),
            ("InvalidAccessKeyId" | "SignatureDoesNotMatch", _) => {
                format!("{base}. Check the access key id and secret")
            }
            ("NoSuchBucket", _) => format!(
                "{base}. Check the bucket name {:?} and region {:?}",
                cfg.bucket, cfg.region
            ),
            _ => base,
        }
    }
}

impl S3Store {
    /// A store for one sink. `temp` holds objects being built.
    pub fn new(
        client: aws_sdk_s3::Client,
        cfg: S3Config,
        handle: tokio::runtime::Handle,
        temp: PathBuf,
    ) -> Self {
        Self {
            client,
            cfg,
            handle,
            temp,
        }
    }

    /// Writes `<prefix>.connection-test`, as J1DS does, to prove the
    /// credentials, TLS, owner guard and encryption settings work.
    ///
    /// # Errors
    ///
    /// The classified S3 failure.
    pub async fn connection_test(
        client: &aws_sdk_s3::Client,
        cfg: &S3Config,
    ) -> Result<String, S3Failure> {
        let key = format!("{}.connection-test", cfg.layout().prefix);
        let body = format!(
            "sluice connection test {}\n",
            chrono::Utc::now().to_rfc3339()
        );
        let md5 =
            (cfg.checksum == ChecksumMode::WhenRequired).then(|| content_md5(body.as_bytes()));
        apply_put(client.put_object(), cfg)
            .key(&key)
            .set_content_md5(md5)
            .body(ByteStream::from(body.into_bytes()))
            .send()
            .await
            .map_err(|e| S3Failure::from_sdk(&e))?;
        Ok(key)
    }

    async fn put(&self, temp: &Path, key: &str, size: u64) -> Result<(), S3Failure> {
        if size > self.cfg.multipart_threshold_bytes {
            return self.multipart(temp, key).await;
        }
        let bytes = std::fs::read(temp).map_err(|e| local(temp, &e))?;
        let md5 = (self.cfg.checksum == ChecksumMode::WhenRequired).then(|| content_md5(&bytes));
        apply_put(self.client.put_object(), &self.cfg)
            .key(key)
            .set_content_md5(md5)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| S3Failure::from_sdk(&e))?;
        Ok(())
    }

    /// Streams the file in parts; aborts the upload if any part fails.
    async fn multipart(&self, temp: &Path, key: &str) -> Result<(), S3Failure> {
        let c = &self.cfg;
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&c.bucket)
            .key(key)
            .set_expected_bucket_owner(c.expected_bucket_owner.clone());
        if let Some(sse) = &c.sse {
            create = create
                .server_side_encryption(ServerSideEncryption::from(sse.as_str()))
                .set_ssekms_key_id(c.kms_key_id.clone())
                .set_bucket_key_enabled(c.bucket_key);
        }
        let upload = create.send().await.map_err(|e| S3Failure::from_sdk(&e))?;
        let id = upload.upload_id().unwrap_or_default().to_string();
        let result = self.parts(temp, key, &id).await;
        match result {
            Ok(parts) => {
                let done = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&c.bucket)
                    .key(key)
                    .upload_id(&id)
                    .set_expected_bucket_owner(c.expected_bucket_owner.clone())
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                match done {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let failure = S3Failure::from_sdk(&e);
                        self.abort(key, &id).await;
                        Err(failure)
                    }
                }
            }
            Err(failure) => {
                self.abort(key, &id).await;
                Err(failure)
            }
        }
    }

    async fn parts(
        &self,
        temp: &Path,
        key: &str,
        id: &str,
    ) -> Result<Vec<CompletedPart>, S3Failure> {
        let c = &self.cfg;
        let mut file = std::fs::File::open(temp).map_err(|e| local(temp, &e))?;
        let mut parts = Vec::new();
        let mut buf = vec![0u8; c.part_size_bytes as usize];
        for number in 1.. {
            let mut filled = 0;
            while filled < buf.len() {
                let n = file.read(&mut buf[filled..]).map_err(|e| local(temp, &e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            let chunk = buf[..filled].to_vec();
            let md5 = (c.checksum == ChecksumMode::WhenRequired).then(|| content_md5(&chunk));
            let part = self
                .client
                .upload_part()
                .bucket(&c.bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .set_expected_bucket_owner(c.expected_bucket_owner.clone())
                .set_content_md5(md5)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| S3Failure::from_sdk(&e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
            if filled < buf.len() {
                break;
            }
        }
        Ok(parts)
    }

    async fn abort(&self, key: &str, id: &str) {
        let r = self
            .client
            .abort_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .upload_id(id)
            .set_expected_bucket_owner(self.cfg.expected_bucket_owner.clone())
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(bucket = self.cfg.bucket.as_str(), key, error = %S3Failure::from_sdk(&e).message, "could not abort a failed multipart upload");
        }
    }
}

fn apply_put(
    put: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    c: &S3Config,
) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
    let mut put = put
        .bucket(&c.bucket)
        .set_expected_bucket_owner(c.expected_bucket_owner.clone());
    if let Some(sse) = &c.sse {
        put = put
            .server_side_encryption(ServerSideEncryption::from(sse.as_str()))
            .set_ssekms_key_id(c.kms_key_id.clone())
            .set_bucket_key_enabled(c.bucket_key);
    }
    put
}

fn content_md5(bytes: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
}

fn local(path: &Path, e: &std::io::Error) -> S3Failure {
    S3Failure {
        code: "local".into(),
        status: None,
        message: format!("{}: {e}", path.display()),
    }
}

impl ObjectStore for S3Store {
    fn temp_dir(&self) -> &Path {
        &self.temp
    }

    fn deliver(&self, temp: &Path, key: &str) -> Result<u64, SinkError> {
        let size = std::fs::metadata(temp)
            .map_err(|e| SinkError::io(temp, &e))?
            .len();
        let full_key = format!("{}{key}", self.cfg.layout().prefix);
        match self.handle.block_on(self.put(temp, &full_key, size)) {
            Ok(()) => Ok(size),
            Err(f) if f.is_fatal() => Err(SinkError::Fatal(f.explain(&self.cfg))),
            Err(f) => Err(SinkError::Remote {
                code: f.code.clone(),
                message: f.explain(&self.cfg),
            }),
        }
    }
}
