//! `sluice s3 test` (write each S3 sink's connection-test object and say
//! exactly what S3 answered) and `sluice policy` (print the
//! least-privilege bucket policy for a sink).

use crate::config::{Config, SinkConfig};
use crate::sinks::s3::{S3Store, client};

/// One sink's connection test.
#[derive(Debug)]
pub struct TestResult {
    /// The sink.
    pub sink: String,
    /// The object written, or the exact S3 error and what to check.
    pub outcome: Result<String, String>,
}

/// Runs the connection test of every S3 sink (or only `only`).
///
/// # Errors
///
/// A message when the config cannot be used at all.
pub async fn test(config: &Config, only: Option<&str>) -> Result<Vec<TestResult>, String> {
    let secrets = config.resolve_secrets().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (name, sink) in &config.sinks {
        let SinkConfig::S3(c) = sink else { continue };
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let ca = c.ca_file.as_deref().map(|p| config.path(p));
        let proxy =
            super::run::egress_proxy(config, &secrets.proxy, "sinks", name, c.proxy.as_ref());
        let client = match proxy {
            Ok(proxy) => {
                client(
                    c,
                    ca.as_deref(),
                    secrets.s3.get(name).cloned(),
                    proxy.as_ref(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        let outcome = match client {
            Err(e) => Err(e),
            Ok(client) => S3Store::connection_test(&client, c)
                .await
                .map(|key| format!("s3://{}/{key}", c.bucket))
                .map_err(|f| f.explain(c)),
        };
        out.push(TestResult {
            sink: name.clone(),
            outcome,
        });
    }
    if out.is_empty() {
        return Err(match only {
            Some(o) => format!("no S3 sink named {o:?}"),
            None => "the config has no S3 sink".into(),
        });
    }
    Ok(out)
}

/// The least-privilege bucket policy: PutObject and aborting multipart
/// uploads on the prefix only, for one principal; and a deny of any
/// request that is not over TLS, as the J1DS and emnify guidance shows.
pub fn policy(bucket: &str, principal: &str, prefix: Option<&str>) -> serde_json::Value {
    let prefix = prefix.unwrap_or("").trim_start_matches('/');
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "SluicePutObjectsOnly",
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                // PutObject also covers CreateMultipartUpload, UploadPart and
                // CompleteMultipartUpload; sluice never reads or lists.
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": format!("arn:aws:s3:::{bucket}/{prefix}*"),
            },
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn policy_allows_put_on_the_prefix_and_denies_plain_http() {
        let p = super::policy(
            "lake",
            "arn:aws:iam::111122223333:role/sluice",
            Some("/jupiterone/"),
        );
        let s = &p["Statement"];
        assert_eq!(s[0]["Resource"], "arn:aws:s3:::lake/jupiterone/*");
        assert_eq!(
            s[0]["Action"],
            serde_json::json!(["s3:PutObject", "s3:AbortMultipartUpload"])
        );
        assert_eq!(
            s[0]["Principal"]["AWS"],
            "arn:aws:iam::111122223333:role/sluice"
        );
        assert_eq!(s[1]["Effect"], "Deny");
        assert_eq!(s[1]["Condition"]["Bool"]["aws:SecureTransport"], "false");
        let text = p.to_string();
        assert!(
            !text.contains("GetObject") && !text.contains("ListBucket"),
            "write-only"
        );
    }
}
