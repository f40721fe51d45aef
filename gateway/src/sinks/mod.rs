//! Sinks: deliver spooled records as objects.
//!
//! The data path inside a sink reads top to bottom:
//! - `delivery`: the loop that reads the sink's log, fills objects, seals
//!   them, uploads several at once, retries, and moves the cursor;
//! - `object`: which records share an object, and its exact bytes (so an
//!   object can be rebuilt for a retry);
//! - `naming`: object names, reserved in the manifest before the first
//!   upload, so a retry overwrites instead of duplicating;
//! - `key`: the key templates;
//! - the stores: `local` (a folder) and `s3`.

pub mod delivery;
pub mod key;
pub mod local;
pub mod naming;
pub mod object;
pub mod s3;

use crate::config::{Compression, Invalid, RotateConfig, invalid};
use crate::encoding::Encoding;
use key::KeyTemplate;
pub use naming::NameStyle;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a configured sink lays out its objects: the folder template, the
/// name style, the encoding and compression, and where they land. What
/// `sluice run` builds its sinks from and `sluice check` shows.
#[derive(Debug, Clone)]
pub struct Naming {
    /// `out/` (a local folder, as configured) or `s3://bucket/prefix`.
    pub location: String,
    /// The folder template (`{route}/%Y/%m/%d`).
    pub key: KeyTemplate,
    /// How objects are named in their folder.
    pub name: NameStyle,
    /// The objects' encoding.
    pub encoding: Encoding,
    /// Their compression.
    pub compression: Compression,
    /// Cluster mode: this replica's id, appended to object names.
    pub instance: Option<Arc<str>>,
}

impl Naming {
    /// A sink's layout (presets applied).
    ///
    /// # Errors
    ///
    /// A template that does not parse (config validation catches these
    /// first).
    pub fn of(sink: &crate::config::SinkConfig) -> Result<Self, key::TemplateError> {
        use crate::config::SinkConfig;
        let style = |name: Option<&str>| -> Result<NameStyle, key::TemplateError> {
            Ok(match name {
                Some("{emnify_file}_%Y%m%d_%H%M%S") => NameStyle::Emnify,
                Some(n) => NameStyle::Template(KeyTemplate::parse(n)?),
                None => NameStyle::Default,
            })
        };
        Ok(match sink {
            SinkConfig::Local(l) => Naming {
                location: format!("{}/", l.path.display()),
                key: KeyTemplate::parse(&l.key)?,
                name: style(l.name.as_deref())?,
                encoding: l.encoding,
                compression: l.compression,
                instance: None,
            },
            SinkConfig::S3(c) => {
                let layout = c.layout();
                Naming {
                    location: format!("s3://{}/{}", c.bucket, layout.prefix),
                    key: KeyTemplate::parse(&layout.key)?,
                    name: style(layout.name.as_deref())?,
                    encoding: layout.encoding,
                    compression: layout.compression,
                    instance: None,
                }
            }
        })
    }

    /// An example object key for a record of `route` and `source` sealed
    /// at `now` (record fields read by the template render as they do for
    /// a record without them).
    pub fn example(&self, route: &str, source: &str, now: chrono::DateTime<chrono::Utc>) -> String {
        let prefix = self.key.render(&key::KeyContext {
            route,
            source,
            time: now,
            record: None,
        });
        let kind = match (&self.name, route) {
            (NameStyle::Emnify, r) if r.ends_with("usage") => object::Kind::Cdr,
            (NameStyle::Emnify, _) => object::Kind::Events,
            _ => object::Kind::Plain,
        };
        let group = object::Group {
            prefix: prefix.trim_end_matches('/').to_string(),
            kind,
            encoding: self.encoding,
        };
        let names = naming::Names {
            style: &self.name,
            instance: self.instance.as_deref(),
        };
        let name = naming::candidate(names, &group, now, 0);
        let extension = extension(self.encoding, self.compression);
        match group.prefix.as_str() {
            "" => format!("{}{name}.{extension}", self.location),
            folder => format!("{}{folder}/{name}.{extension}", self.location),
        }
    }
}

/// A delivery failure. The records stay spooled and are retried.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file operation failed.
    #[error("{}: {message}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    /// The store refused or failed the upload; worth retrying.
    #[error("{message}")]
    Remote {
        /// The store's error code (`SlowDown`, `InternalError`, `network`, …).
        code: String,
        /// What happened and what to check.
        message: String,
    },
    /// An error no retry can fix (credentials, the owner guard): the sink
    /// stops and its records stay in the spool.
    #[error("{0}")]
    Fatal(String),
}

impl SinkError {
    pub(crate) fn io(path: &Path, e: &std::io::Error) -> Self {
        SinkError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    fn kind(&self) -> &str {
        match self {
            SinkError::Io { .. } => "io",
            SinkError::Spool(_) => "spool",
            SinkError::Remote { code, .. } => code,
            SinkError::Fatal(_) => "fatal",
        }
    }
}

/// Where finished objects go. Several uploads run at once, from the
/// sink's upload threads.
pub trait ObjectStore: Send + Sync + 'static {
    /// Folder for objects being written (on the same file system as the
    /// destination when the store renames).
    fn temp_dir(&self) -> &Path;
    /// Whether `key` is already used by something else (the local sink
    /// checks the folder; a write-only S3 sink cannot know).
    fn taken(&self, _key: &str) -> bool {
        false
    }
    /// Makes the finished, fsynced file at `temp` visible as `key`,
    /// replacing an earlier attempt of the same object. Returns its size.
    ///
    /// # Errors
    ///
    /// [`SinkError`]; the caller keeps the records spooled.
    fn deliver(&self, temp: &Path, key: &str) -> Result<u64, SinkError>;
}

/// Settings of the delivery loop.
#[derive(Debug, Clone)]
pub struct ObjectSettings {
    /// The sink's name.
    pub name: Arc<str>,
    /// Key template.
    pub key: KeyTemplate,
    /// How objects are named.
    pub object_name: NameStyle,
    /// Encoding.
    pub encoding: Encoding,
    /// Compression.
    pub compression: Compression,
    /// Compression level.
    pub compression_level: Option<i32>,
    /// Rotation.
    pub rotate: RotateConfig,
    /// Objects uploaded at once.
    pub max_in_flight: usize,
    /// Cluster mode: this replica's id, appended to object names.
    pub instance: Option<Arc<str>>,
}

pub(crate) fn default_in_flight() -> usize {
    4
}

pub(crate) fn validate_common(
    name: &str,
    compression: Compression,
    level: Option<i32>,
    rotate: &RotateConfig,
    max_in_flight: usize,
    out: &mut Vec<Invalid>,
) {
    if !(1..=64).contains(&max_in_flight) {
        out.push(invalid(
            &["sinks", name, "max_in_flight"],
            "must be between 1 and 64",
        ));
    }
    if let Some(level) = level {
        let ok = match compression {
            Compression::None => false,
            Compression::Gzip => (0..=9).contains(&level),
            Compression::Zstd => (1..=22).contains(&level),
        };
        if !ok {
            out.push(invalid(
                &["sinks", name, "compression_level"],
                "out of range for the compression (gzip 0-9, zstd 1-22, none takes no level)",
            ));
        }
    }
    if rotate.max_bytes == 0
        || rotate.max_records == 0
        || rotate.max_age_secs.is_nan()
        || rotate.max_age_secs <= 0.0
    {
        out.push(invalid(
            &["sinks", name, "rotate"],
            "max_bytes, max_records and max_age_secs must be positive",
        ));
    }
}

/// The file extension of objects with these settings.
pub fn extension(encoding: Encoding, compression: Compression) -> String {
    let base = match encoding {
        Encoding::Jsonl => "jsonl",
        Encoding::Csv => "csv",
    };
    match compression {
        Compression::None => base.to_string(),
        Compression::Gzip => format!("{base}.gz"),
        Compression::Zstd => format!("{base}.zst"),
    }
}
