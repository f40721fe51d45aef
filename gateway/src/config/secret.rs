//! Secrets in the config file: a literal, `${env:NAME}` or `${file:/path}`.
//!
//! A [`Secret`] is what the file says (never the value of an env var or a
//! file); [`SecretValue`] is the resolved bytes. Neither prints its value:
//! both `Debug` impls redact, and nothing else formats them.

use serde::Deserialize;
use std::path::PathBuf;

/// A secret as written in the config.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Written inline in the file.
    Literal(String),
    /// `${env:NAME}`: read from the environment at start.
    Env(String),
    /// `${file:/path}`: read from a file at start; one trailing newline is
    /// removed, as files written by `echo` or Kubernetes secrets carry one.
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Literal(_) => f.write_str("Secret(<redacted>)"),
            Secret::Env(name) => write!(f, "Secret(${{env:{name}}})"),
            Secret::File(path) => write!(f, "Secret(${{file:{}}})", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Secret::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Secret {
    /// Parses the config syntax.
    ///
    /// # Errors
    ///
    /// A `${...}` reference that is neither `env:` nor `file:`, or is empty.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) else {
            if s.is_empty() {
                return Err("a secret cannot be empty".into());
            }
            return Ok(Secret::Literal(s.to_string()));
        };
        match inner.split_once(':') {
            Some(("env", name)) if !name.is_empty() => Ok(Secret::Env(name.to_string())),
            Some(("file", path)) if !path.is_empty() => Ok(Secret::File(PathBuf::from(path))),
            _ => Err("a secret reference must be ${env:NAME} or ${file:/path}".into()),
        }
    }

    /// Reads the secret's value.
    ///
    /// # Errors
    ///
    /// A message naming the variable or file (never its contents).
    pub fn resolve(&self) -> Result<SecretValue, String> {
        let value = match self {
            Secret::Literal(s) => s.clone().into_bytes(),
            Secret::Env(name) => std::env::var_os(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?
                .into_encoded_bytes(),
            Secret::File(path) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                bytes
            }
        };
        if value.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(SecretValue(value))
    }
}

/// A resolved secret. Compare it with [`SecretValue::ct_eq`], never `==`.
#[derive(Clone)]
pub struct SecretValue(Vec<u8>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl SecretValue {
    /// Wraps bytes (used by tests and the CLI).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The raw bytes, for keying an HMAC or building a header.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time comparison: the time taken does not depend on where
    /// the inputs differ. (Lengths are not secret: they leak anyway through
    /// the request size.)
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.len() && bool::from(self.0.as_slice().ct_eq(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(Secret::parse("abc"), Ok(Secret::Literal("abc".into())));
        assert_eq!(
            Secret::parse("${env:TOKEN}"),
            Ok(Secret::Env("TOKEN".into()))
        );
        assert_eq!(
            Secret::parse("${file:/run/s}"),
            Ok(Secret::File("/run/s".into()))
        );
        assert!(Secret::parse("${vault:x}").is_err());
        assert!(Secret::parse("").is_err());
    }

    #[test]
    fn debug_never_shows_a_value() {
        let s = Secret::parse("hunter2").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        let v = s.resolve().unwrap();
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(v.ct_eq(b"hunter2"));
        assert!(!v.ct_eq(b"hunter3"));
        assert!(!v.ct_eq(b"hunter"));
    }

    #[test]
    fn file_secret_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "tok\n").unwrap();
        let v = Secret::File(path).resolve().unwrap();
        assert_eq!(v.expose(), b"tok");
        let missing = Secret::Env("SLUICE_TEST_SURELY_UNSET".into()).resolve();
        assert_eq!(
            missing.unwrap_err(),
            "environment variable SLUICE_TEST_SURELY_UNSET is not set"
        );
    }
}
