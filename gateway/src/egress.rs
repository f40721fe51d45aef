//! Egress through a corporate HTTP proxy, by CONNECT only.
//!
//! On-premises collectors usually reach SaaS APIs and S3 through a proxy.
//! Sluice only ever talks HTTPS to them, so it only ever asks a proxy to
//! open a tunnel (`CONNECT host:443`) and runs TLS to the real server inside
//! it: the proxy sees a host name and encrypted bytes, never a request,
//! a key or a record. A proxy is therefore given as `http://host:port` (its
//! CONNECT port); a plain-HTTP proxy can never be used to send a request in
//! clear, because no request goes to it. `HTTP_PROXY` is ignored for the
//! same reason.
//!
//! A poller source or an S3 sink takes `proxy = { url, ca_file, username,
//! password, no_proxy }`; without it, `HTTPS_PROXY` (or `https_proxy`) and
//! `NO_PROXY` (or `no_proxy`) apply, as curl and the AWS SDKs read them.
//! Proxy credentials go in a `Proxy-Authorization: Basic` header on the
//! CONNECT request and appear in no log, error or metric.

use crate::config::{Invalid, Secret, SecretValue, invalid};
use serde::Deserialize;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `proxy = { … }` of a poller source or an S3 sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The proxy's CONNECT address, `http://host:port`.
    pub url: String,
    /// Extra CA certificates (PEM) to trust for the servers reached through
    /// this proxy: the CA of a TLS-inspecting proxy.
    pub ca_file: Option<PathBuf>,
    /// User for the proxy's Basic authentication.
    pub username: Option<String>,
    /// Its password: a literal, `${env:NAME}` or `${file:/path}`.
    pub password: Option<Secret>,
    /// Hosts reached directly, `NO_PROXY` syntax (`example.com` also
    /// matches its subdomains; `*` matches every host). Default: the
    /// `NO_PROXY` environment variable.
    pub no_proxy: Option<String>,
}

/// Checks a `proxy` table (no I/O). `path` is where it sits in the config.
pub(crate) fn validate(cfg: &ProxyConfig, path: &[&str], out: &mut Vec<Invalid>) {
    let at = |key: &'static str| {
        let mut p = path.to_vec();
        p.push(key);
        p
    };
    if let Err(e) = parse_url(&cfg.url, false) {
        out.push(invalid(&at("url"), e));
    }
    if cfg.username.is_some() != cfg.password.is_some() {
        out.push(invalid(
            &at("username"),
            "give both `username` and `password`, or neither",
        ));
    }
}

/// `http://host:port` → (host, port). Credentials in the URL are allowed
/// only from the environment (`from_env`), where they are customary; in the
/// config they belong in `username` and `password`, where the password can
/// be a secret reference.
/// What a proxy URL gives: host, port, and credentials (user, password).
type ParsedUrl = (String, u16, Option<(String, String)>);

fn parse_url(url: &str, from_env: bool) -> Result<ParsedUrl, String> {
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(
            "give the proxy's http:// CONNECT address: sluice only opens tunnels through it, and TLS runs end to end inside them"
                .into(),
        );
    } else {
        return Err("must be http://host:port".into());
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '?', '#']) {
        return Err("must be http://host:port, without a path".into());
    }
    let (creds, hostport) = match rest.rsplit_once('@') {
        Some(_) if !from_env => {
            return Err(
                "put the proxy's credentials in `username` and `password` (which may be ${env:…}), not in the URL"
                    .into(),
            );
        }
        Some((c, h)) => {
            let (u, p) = c.split_once(':').unwrap_or((c, ""));
            (
                Some((
                    crate::util::percent_decode(u),
                    crate::util::percent_decode(p),
                )),
                h,
            )
        }
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| "the port must be a number".to_string())?,
        ),
        _ => (hostport, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("must be http://host:port".into());
    }
    Ok((host.to_string(), port, creds))
}

/// A proxy to tunnel through.
#[derive(Clone)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `user` and `password`, for the Basic header.
    credentials: Option<(String, SecretValue)>,
    no_proxy: Vec<String>,
    /// Extra CA certificates for servers reached through it.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        write!(f, "Proxy({}:{})", self.host, self.port)
    }
}

impl Proxy {
    /// The proxy of a source or sink: its `proxy` table (with the resolved
    /// password), else the environment's `HTTPS_PROXY`, else none.
    ///
    /// # Errors
    ///
    /// A message when the URL (from the config or the environment) is not
    /// usable.
    pub fn resolve(
        cfg: Option<&ProxyConfig>,
        password: Option<SecretValue>,
        base: &dyn Fn(&std::path::Path) -> PathBuf,
    ) -> Result<Option<Self>, String> {
        let env = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let no_proxy_env = env(["NO_PROXY", "no_proxy"]);
        let Some(cfg) = cfg else {
            let Some(url) = env(["HTTPS_PROXY", "https_proxy"]) else {
                return Ok(None);
            };
            let (host, port, creds) =
                parse_url(url.trim(), true).map_err(|e| format!("HTTPS_PROXY: {e}"))?;
            return Ok(Some(Proxy {
                host,
                port,
                credentials: creds.map(|(u, p)| (u, SecretValue::new(p))),
                no_proxy: rules(no_proxy_env.as_deref()),
                ca_file: None,
            }));
        };
        let (host, port, _) = parse_url(&cfg.url, false)?;
        Ok(Some(Proxy {
            host,
            port,
            credentials: cfg.username.clone().zip(password),
            no_proxy: rules(cfg.no_proxy.as_deref().or(no_proxy_env.as_deref())),
            ca_file: cfg.ca_file.as_deref().map(base),
        }))
    }

    /// Whether connections to `host` go through the proxy (`no_proxy` does
    /// not exempt it).
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        !self.no_proxy.iter().any(|rule| {
            rule == "*"
                || host == *rule
                || host
                    .strip_suffix(rule.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        })
    }

    /// `host:port` of the proxy, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn basic(&self) -> Option<String> {
        use base64::Engine;
        self.credentials.as_ref().map(|(u, p)| {
            let mut raw = format!("{u}:").into_bytes();
            raw.extend_from_slice(p.expose());
            base64::engine::general_purpose::STANDARD.encode(raw)
        })
    }

    /// Opens a tunnel to `host:port` through the proxy.
    ///
    /// # Errors
    ///
    /// A message naming the proxy and the target: it cannot be reached, it
    /// refused the CONNECT (its status line), or it answered garbage.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, String> {
        let proxy = self.address();
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot reach the proxy {proxy}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let target = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(b) = self.basic() {
            head.push_str(&format!("Proxy-Authorization: Basic {b}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("proxy {proxy}: sending CONNECT {target}: {e}"))?;
        // Read the answer's head byte by byte, so nothing of the tunnel's
        // first bytes is consumed (a proxy sends none before our TLS hello).
        let mut answer = Vec::with_capacity(256);
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() > 16 << 10 {
                return Err(format!(
                    "proxy {proxy}: the answer to CONNECT {target} has no end"
                ));
            }
            let byte = tcp.read_u8().await.map_err(|e| {
                format!("proxy {proxy} closed the connection on CONNECT {target}: {e}")
            })?;
            answer.push(byte);
        }
        let text = String::from_utf8_lossy(&answer);
        let status_line = text.lines().next().unwrap_or("").trim().to_string();
        let code = status_line.split_whitespace().nth(1).unwrap_or("");
        if code.starts_with('2') {
            Ok(tcp)
        } else {
            // 407 is the standard answer; some proxies (tinyproxy) say 401.
            let hint = match code {
                "407" | "401" if self.credentials.is_none() => {
                    " (it wants credentials: set the proxy's username and password)"
                }
                "407" | "401" => " (it refused the credentials)",
                "403" => " (its rules forbid this host or port)",
                _ => "",
            };
            Err(format!(
                "proxy {proxy} refused CONNECT {target}: {status_line}{hint}"
            ))
        }
    }

    /// The same proxy for the AWS SDK's HTTP client (it tunnels HTTPS with
    /// CONNECT as well).
    ///
    /// # Errors
    ///
    /// The SDK's message when it does not accept the URL.
    pub fn for_aws(&self) -> Result<aws_smithy_http_client::proxy::ProxyConfig, String> {
        let mut p =
            aws_smithy_http_client::proxy::ProxyConfig::https(format!("http://{}", self.address()))
                .map_err(|e| e.to_string())?;
        if let Some((u, pw)) = &self.credentials {
            p = p.with_basic_auth(u.clone(), String::from_utf8_lossy(pw.expose()).into_owned());
        }
        if !self.no_proxy.is_empty() {
            p = p.no_proxy(self.no_proxy.join(","));
        }
        Ok(p)
    }
}

fn rules(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .map(|r| {
            r.trim()
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .to_ascii_lowercase()
        })
        .map(|r| match r.rsplit_once(':') {
            // A port in a rule is ignored (as curl does for host rules).
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h.to_string(),
            _ => r,
        })
        .filter(|r| !r.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_connect_addresses_only() {
        assert_eq!(
            parse_url("http://proxy.corp:3128", false).unwrap(),
            ("proxy.corp".into(), 3128, None)
        );
        assert_eq!(parse_url("http://proxy.corp/", false).unwrap().1, 80);
        assert!(
            parse_url("https://proxy.corp:3128", false)
                .unwrap_err()
                .contains("http:// CONNECT address")
        );
        assert!(parse_url("socks5://p:1080", false).is_err());
        assert!(parse_url("http://p:3128/path", false).is_err());
        assert!(
            parse_url("http://u:pw@p:3128", false)
                .unwrap_err()
                .contains("username")
        );
        let (_, _, creds) = parse_url("http://me:p%40ss@p:3128", true).unwrap();
        assert_eq!(creds, Some(("me".into(), "p@ss".into())));
        assert_eq!(parse_url("http://[::1]:8080", false).unwrap().0, "::1");
    }

    #[test]
    fn no_proxy_matches_hosts_and_their_subdomains() {
        let p = Proxy {
            host: "p".into(),
            port: 1,
            credentials: None,
            no_proxy: rules(Some(" internal.corp, .s3.local ,10.0.0.5:9000, *.lan")),
            ca_file: None,
        };
        assert!(!p.applies_to("internal.corp"));
        assert!(!p.applies_to("api.internal.corp"));
        assert!(p.applies_to("notinternal.corp"));
        assert!(!p.applies_to("bucket.s3.local"));
        assert!(!p.applies_to("10.0.0.5"));
        assert!(!p.applies_to("nas.lan"));
        assert!(p.applies_to("console.jumpcloud.com"));
        let all = Proxy {
            no_proxy: rules(Some("*")),
            ..p.clone()
        };
        assert!(!all.applies_to("anything"));
        assert_eq!(format!("{p:?}"), "Proxy(p:1)");
    }
}
