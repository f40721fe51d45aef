//! Transform configuration: string keys and values, given once per instance.

use std::collections::BTreeMap;
use std::fmt;

/// A transform's configuration, as written in the pipeline or on the
/// command line (`--config key=value`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: BTreeMap<String, String>,
}

/// A configuration the transform rejects. The gateway reports it with the
/// transform's name and refuses to start the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending key, when one key is to blame.
    pub key: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn key(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// An error about the configuration as a whole.
    pub fn general(message: impl Into<String>) -> Self {
        ConfigError {
            key: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "config key `{k}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Builds a configuration from key/value pairs. A repeated key keeps its
    /// last value, as a command line or TOML table would.
    pub fn new<K: Into<String>, V: Into<String>>(
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Config {
            entries: entries
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// All entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`, which must be present.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `key` when it is absent.
    pub fn require(&self, key: &str) -> Result<&str, ConfigError> {
        self.get(key)
            .ok_or_else(|| ConfigError::key(key, "is required"))
    }

    /// Reads `key` as a boolean (`true`/`false`, also `1`/`0`, `yes`/`no`,
    /// any case), or `default` when absent.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `key` for any other value.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::key(
                    key,
                    format!("expected true or false, got {v:?}"),
                )),
            },
        }
    }

    /// Reads `key` as one of `allowed`, or `default` when absent.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `key` and the allowed values otherwise.
    pub fn one_of<'a>(
        &'a self,
        key: &str,
        allowed: &[&str],
        default: &'a str,
    ) -> Result<&'a str, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) if allowed.contains(&v) => Ok(v),
            Some(v) => Err(ConfigError::key(
                key,
                format!("expected one of {}, got {v:?}", allowed.join(", ")),
            )),
        }
    }

    /// Rejects every key not in `known`, so that a typo fails loudly instead
    /// of being ignored.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first unknown key and listing the known
    /// ones.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self.entries.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) if known.is_empty() => Err(ConfigError::key(
                k,
                "unknown key: this transform takes no configuration",
            )),
            Some(k) => Err(ConfigError::key(
                k,
                format!("unknown key; known keys: {}", known.join(", ")),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_parses_and_rejects() {
        let c = Config::new([("a", "TRUE"), ("b", "0"), ("c", "maybe")]);
        assert_eq!(c.bool("a", false), Ok(true));
        assert_eq!(c.bool("b", true), Ok(false));
        assert_eq!(c.bool("missing", true), Ok(true));
        let e = c.bool("c", true).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("c"));
        assert!(e.to_string().contains("expected true or false"), "{e}");
    }

    #[test]
    fn deny_unknown_names_the_key() {
        let c = Config::new([("good", "1"), ("typo", "2")]);
        let e = c.deny_unknown(&["good"]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("typo"));
        assert!(c.deny_unknown(&["good", "typo"]).is_ok());
        assert!(Config::default().deny_unknown(&[]).is_ok());
    }

    #[test]
    fn one_of_and_require() {
        let c = Config::new([("mode", "x")]);
        assert!(c.one_of("mode", &["a", "b"], "a").is_err());
        assert_eq!(c.one_of("other", &["a", "b"], "a"), Ok("a"));
        assert_eq!(c.require("mode"), Ok("x"));
        assert!(c.require("nope").is_err());
    }
}
