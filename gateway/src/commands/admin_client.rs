//! The admin API from the CLI: `sluice transform
//! push|versions|activate|delete`, and `sluice backfill` beside a running
//! gateway.

use crate::http_client::{HttpClient, HttpError};
use hyper::Method;
use hyper::header::{self, HeaderName, HeaderValue};
use std::path::Path;
use std::time::Duration;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Could not reach the admin listener.
    #[error("cannot reach the admin API at {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// Why.
        source: HttpError,
    },
    /// The API refused the call.
    #[error("{message} (HTTP {status})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The API's error text.
        message: String,
        /// The 1-based number of the upload sample that failed, if one did.
        sample: Option<usize>,
    },
    /// The call could not be made as given, or its answer not understood.
    #[error("{0}")]
    Client(String),
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// `http://127.0.0.1:9464` (loopback) or an `https://` URL.
    pub url: String,
    /// The bearer token.
    pub token: String,
    /// Extra CA for an https admin listener (e.g. its self-signed cert).
    pub ca_file: Option<std::path::PathBuf>,
}

impl AdminTarget {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &'static str,
    ) -> Result<serde_json::Value, AdminError> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let http = |source| AdminError::Http {
            url: url.clone(),
            source,
        };
        // HTTPS_PROXY applies to a remote admin listener, never to loopback.
        let host = url
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_string))
            .unwrap_or_default();
        let loopback = matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1");
        let proxy = crate::egress::Proxy::resolve(None, None, &|p| p.to_path_buf())
            .map_err(AdminError::Client)?
            .filter(|_| !loopback);
        let client = HttpClient::new(self.ca_file.as_deref(), proxy, Duration::from_secs(300))
            .map_err(http)?
            .allow_loopback_http();
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.token)).map_err(|_| {
            AdminError::Client("the admin token is not a valid header value".into())
        })?;
        auth.set_sensitive(true);
        let headers: Vec<(HeaderName, HeaderValue)> = vec![
            (header::AUTHORIZATION, auth),
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        ];
        let resp = client
            .send(method, &url, &headers, body)
            .await
            .map_err(http)?;
        let value: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_else(|_| {
            serde_json::json!({"error": String::from_utf8_lossy(&resp.body).chars().take(300).collect::<String>()})
        });
        if resp.status.is_success() {
            Ok(value)
        } else {
            Err(AdminError::Refused {
                status: resp.status.as_u16(),
                message: value["error"].as_str().unwrap_or("refused").to_string(),
                sample: value["sample"]
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok()),
            })
        }
    }

    /// Uploads a component as the next version of `name`. `samples` is a
    /// JSON lines file of records it must process; a refusal that names a
    /// sample is reported at its line of that file.
    ///
    /// # Errors
    ///
    /// [`AdminError`].
    pub async fn push(
        &self,
        name: &str,
        file: &Path,
        config: &[(String, String)],
        samples_file: Option<&Path>,
        activate: bool,
    ) -> Result<serde_json::Value, AdminError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| AdminError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let bytes = read(file)?;
        // (line number, record) of each non-blank line.
        let samples: Vec<(usize, String)> = match samples_file {
            Some(path) => String::from_utf8_lossy(&read(path)?)
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| (i + 1, l.to_string()))
                .collect(),
            None => Vec::new(),
        };
        let mut query: Vec<String> = config
            .iter()
            .map(|(k, v)| format!("config={}", encode(&format!("{k}={v}"))))
            .collect();
        query.extend(samples.iter().map(|(_, s)| format!("sample={}", encode(s))));
        if activate {
            query.push("activate=true".into());
        }
        let path = format!("/v1/transforms/{name}?{}", query.join("&"));
        match self
            .call(Method::PUT, &path, Some(bytes), "application/wasm")
            .await
        {
            Err(AdminError::Refused {
                status,
                message,
                sample: Some(n),
            }) => {
                let at = match (samples_file, samples.get(n.wrapping_sub(1))) {
                    (Some(file), Some((line, _))) => format!("{}:{line}: ", file.display()),
                    _ => String::new(),
                };
                Err(AdminError::Refused {
                    status,
                    message: format!("{at}{message}"),
                    sample: Some(n),
                })
            }
            other => other,
        }
    }

    /// Deletes an inactive version of `name`.
    ///
    /// # Errors
    ///
    /// [`AdminError`].
    pub async fn delete(&self, name: &str, version: u32) -> Result<serde_json::Value, AdminError> {
        self.call(
            Method::DELETE,
            &format!("/v1/transforms/{name}/versions/{version}"),
            None,
            "application/json",
        )
        .await
    }

    /// Lists a name's versions.
    ///
    /// # Errors
    ///
    /// [`AdminError`].
    pub async fn versions(&self, name: &str) -> Result<serde_json::Value, AdminError> {
        self.call(
            Method::GET,
            &format!("/v1/transforms/{name}/versions"),
            None,
            "application/json",
        )
        .await
    }

    /// Activates a version (`3`) or a sha256 (`sha256:…`).
    ///
    /// # Errors
    ///
    /// [`AdminError`].
    pub async fn activate(&self, name: &str, which: &str) -> Result<serde_json::Value, AdminError> {
        let body = match which.strip_prefix("sha256:") {
            Some(sha) => serde_json::json!({"sha256": sha}),
            None => match which.parse::<u64>() {
                Ok(n) => serde_json::json!({"version": n}),
                Err(_) => {
                    return Err(AdminError::Client(format!(
                        "{which:?}: give a version number or sha256:<hex> (a unique prefix of at least 4 digits will do)"
                    )));
                }
            },
        };
        self.call(
            Method::POST,
            &format!("/v1/transforms/{name}/activate"),
            Some(body.to_string().into_bytes()),
            "application/json",
        )
        .await
    }
}

impl AdminTarget {
    /// Starts a backfill inside the gateway (`POST /v1/backfills`).
    ///
    /// # Errors
    ///
    /// [`AdminError`].
    pub async fn start_backfill(
        &self,
        source: &str,
        since: &str,
        until: Option<&str>,
    ) -> Result<serde_json::Value, AdminError> {
        let body = serde_json::json!({"source": source, "since": since, "until": until});
        self.call(
            Method::POST,
            "/v1/backfills",
            Some(body.to_string().into_bytes()),
            "application/json",
        )
        .await
    }

    /// A backfill's status.
    ///
    /// # Errors
    ///
    /// [`AdminError`].
    pub async fn backfill(&self, id: u64) -> Result<serde_json::Value, AdminError> {
        self.call(
            Method::GET,
            &format!("/v1/backfills/{id}"),
            None,
            "application/json",
        )
        .await
    }

    /// Cancels a backfill.
    ///
    /// # Errors
    ///
    /// [`AdminError`].
    pub async fn cancel_backfill(&self, id: u64) -> Result<serde_json::Value, AdminError> {
        self.call(
            Method::DELETE,
            &format!("/v1/backfills/{id}"),
            None,
            "application/json",
        )
        .await
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
