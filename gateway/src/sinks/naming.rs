//! Object names, reserved in the manifest.
//!
//! A name is chosen once, when an object is sealed, and recorded with the
//! object before its first upload; every retry (in this process or after a
//! restart) uses it again. No two objects of a sink are given the same
//! key: a name already in the manifest, or (local sink) already on disk,
//! moves a second-resolution name to the next second, and a name without
//! a time gets `-1`, `-2`, … Manifest entries are kept for
//! [`REMEMBER_DAYS`]; a template whose keys repeat (no date in the folder or
//! name) could give a key again after that, which is why the presets and
//! the default layout put the date in the folder.

use super::object::{Group, Kind};
use super::{ObjectStore, SinkError};
use crate::sinks::key::{KeyContext, KeyTemplate};
use crate::spool::meta::{Meta, ObjectRow};
use chrono::{DateTime, Utc};

/// Days a delivered object's name is remembered.
pub const REMEMBER_DAYS: i64 = 30;

/// How finished objects are named (the folder comes from the key template).
#[derive(Debug, Clone)]
pub enum NameStyle {
    /// `<UTC time with ms>-<random>`: unique without coordination.
    Default,
    /// A template rendered with the seal time, e.g. J1DS's `time=%H%M%S`.
    Template(KeyTemplate),
    /// emnify's `cdr_YYYYMMDD_HHmmss` (usage) / `events_YYYYMMDD_HHmmss`.
    Emnify,
}

/// How a sink names its objects: the style and, in cluster mode, this
/// replica's id, appended to every name.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The style.
    pub style: &'a NameStyle,
    /// Cluster mode: the instance id.
    pub instance: Option<&'a str>,
}

/// Most names tried for one object before giving up.
const ATTEMPTS: u32 = 100_000;

/// Picks a name for `row` (its `key` is filled in) and records the object
/// in the manifest. Returns the manifest id. In cluster mode every name
/// ends with this replica's id (see [`Names`]), so two replicas writing to
/// one bucket never pick the same key.
///
/// # Errors
///
/// [`SinkError`] when the manifest cannot be written, or no free name is
/// found.
pub fn reserve(
    meta: &Meta,
    store: &dyn ObjectStore,
    names: Names<'_>,
    group: &Group,
    extension: &str,
    now: DateTime<Utc>,
    row: &mut ObjectRow,
) -> Result<i64, SinkError> {
    for attempt in 0..ATTEMPTS {
        let name = candidate(names, group, now, attempt);
        let key = if group.prefix.is_empty() {
            format!("{name}.{extension}")
        } else {
            format!("{}/{name}.{extension}", group.prefix)
        };
        if store.taken(&key) {
            continue;
        }
        row.key = key;
        if let Some(id) = meta.reserve(row)? {
            return Ok(id);
        }
    }
    Err(SinkError::Fatal(format!(
        "no free object name in {:?} after {ATTEMPTS} tries; give the sink's name template a time",
        group.prefix
    )))
}

/// The `attempt`-th name for an object sealed at `now`, with
/// `_<instance>` appended in cluster mode.
pub(crate) fn candidate(
    names: Names<'_>,
    group: &Group,
    now: DateTime<Utc>,
    attempt: u32,
) -> String {
    let name = style_candidate(names.style, group, now, attempt);
    match names.instance {
        Some(i) => format!("{name}_{i}"),
        None => name,
    }
}

fn style_candidate(style: &NameStyle, group: &Group, now: DateTime<Utc>, attempt: u32) -> String {
    let later =
        |secs: u32| DateTime::from_timestamp(now.timestamp() + i64::from(secs), 0).unwrap_or(now);
    match (style, group.kind) {
        (NameStyle::Emnify, Kind::Cdr) => format!("cdr_{}", later(attempt).format("%Y%m%d_%H%M%S")),
        (NameStyle::Emnify, Kind::Events) => {
            format!("events_{}", later(attempt).format("%Y%m%d_%H%M%S"))
        }
        (NameStyle::Template(t), _) => {
            let render = |at| {
                t.render(&KeyContext {
                    route: "",
                    source: "",
                    time: at,
                    record: None,
                })
            };
            if t.reads_time() {
                render(later(attempt))
            } else if attempt == 0 {
                render(now)
            } else {
                format!("{}-{attempt}", render(now))
            }
        }
        (NameStyle::Default | NameStyle::Emnify, _) => format!(
            "{}-{:08x}",
            now.format("%Y%m%dT%H%M%S%.3fZ"),
            rand::random::<u32>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::Encoding;
    use chrono::TimeZone;

    fn plain(style: &NameStyle) -> Names<'_> {
        Names {
            style,
            instance: None,
        }
    }

    fn group(prefix: &str, kind: Kind) -> Group {
        Group {
            prefix: prefix.into(),
            kind,
            encoding: Encoding::Csv,
        }
    }

    #[test]
    fn candidates_move_on_by_second_or_suffix() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 4, 2, 41).unwrap();
        let cdr = group("", Kind::Cdr);
        assert_eq!(
            candidate(plain(&NameStyle::Emnify), &cdr, now, 0),
            "cdr_20261201_040241"
        );
        assert_eq!(
            candidate(plain(&NameStyle::Emnify), &cdr, now, 1),
            "cdr_20261201_040242"
        );
        let timed = NameStyle::Template(KeyTemplate::parse("time=%H%M%S").unwrap());
        assert_eq!(candidate(plain(&timed), &cdr, now, 2), "time=040243");
        let fixed = NameStyle::Template(KeyTemplate::parse("data").unwrap());
        assert_eq!(candidate(plain(&fixed), &cdr, now, 0), "data");
        assert_eq!(candidate(plain(&fixed), &cdr, now, 3), "data-3");
        // Dead letters under emnify's layout take default names.
        let dead = candidate(
            plain(&NameStyle::Emnify),
            &group("dead_letter", Kind::Plain),
            now,
            0,
        );
        assert!(dead.starts_with("20261201T040241.000Z-"), "{dead}");
        // Cluster mode: the replica's id ends every name.
        assert_eq!(
            candidate(
                Names {
                    style: &NameStyle::Emnify,
                    instance: Some("replica-a")
                },
                &cdr,
                now,
                1
            ),
            "cdr_20261201_040242_replica-a"
        );
    }
}
