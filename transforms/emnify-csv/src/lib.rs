//! `emnify-csv`: an emnify Data Streamer record (an element of a Bulk array,
//! or a single REST object) to one flat row with exactly the columns emnify
//! writes to S3 (`shared/reference/emnify.md` section 3.3). Encode the
//! output with the CSV encoding (`--output csv`, or `encoding = "csv"` on a
//! sink): every value quoted, null as an empty unquoted field.
//!
//! - Usage records: the 34 columns of emnify's usage CSV, in order, with
//!   emnify's renames ([`USAGE_COLUMNS`]).
//! - Event records: the event's own fields, then the 16 columns emnify's
//!   2019-10-04 upgrade note added, in the note's order ([`EVENT_COLUMNS`]).
//! - Values: timestamps as `YYYY-MM-DD HH:MM:SS` UTC; `cost` with 10
//!   decimals, volumes with 6; null or absent as null; strings as is
//!   (UTF-8); numbers and booleans as text; an object (event `detail`) as
//!   compact JSON.
//! - Columns are append-only: the lists are fixed, so a field emnify adds
//!   later never moves an existing column. By default such fields are left
//!   out (the output is exactly emnify's layout); `extra_columns = append`
//!   adds them after the fixed columns, named by joining their path with `_`.
//!
//! Config: `stream` = `auto` (default: usage if the record has
//! `traffic_type`, `volume` or `start_timestamp`; events if it has
//! `event_type`) | `usage` | `events`; `extra_columns` = `drop` | `append`.
//! A JSON array input (the docs' examples are arrays of one) gives one row
//! per element. Route: `emnify.usage` / `emnify.events`.

use sluice_sdk::json;
use sluice_sdk::serde_json::{Map, Value};
use sluice_sdk::time::{Timestamp, parse_rfc3339};
use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};

/// How a value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// As is: strings verbatim, numbers and booleans as text, objects and
    /// arrays as compact JSON.
    Plain,
    /// A timestamp, as `YYYY-MM-DD HH:MM:SS` UTC.
    Time,
    /// A number with this many decimals.
    Fixed(usize),
}

/// One output column: its name, the JSON path it comes from, its format.
pub type Column = (&'static str, &'static str, Format);

/// Usage CSV columns, in emnify's order (34).
pub const USAGE_COLUMNS: &[Column] = &[
    ("id", "id", Format::Plain),
    ("event_start_timestamp", "start_timestamp", Format::Time),
    ("event_stop_timestamp", "end_timestamp", Format::Time),
    ("organisation_id", "organisation.id", Format::Plain),
    ("organisation_name", "organisation.name", Format::Plain),
    ("endpoint_id", "endpoint.id", Format::Plain),
    ("sim_id", "sim.id", Format::Plain),
    ("iccid", "sim.iccid", Format::Plain),
    ("imsi", "imsi", Format::Plain),
    ("operator_id", "operator.id", Format::Plain),
    ("operator_name", "operator.name", Format::Plain),
    ("country_id", "operator.country.id", Format::Plain),
    (
        "operator_country_name",
        "operator.country.name",
        Format::Plain,
    ),
    ("traffic_type_id", "traffic_type.id", Format::Plain),
    (
        "traffic_type_description",
        "traffic_type.description",
        Format::Plain,
    ),
    ("volume", "volume.total", Format::Fixed(6)),
    ("volume_tx", "volume.tx", Format::Fixed(6)),
    ("volume_rx", "volume.rx", Format::Fixed(6)),
    ("cost", "cost", Format::Fixed(10)),
    ("currency_id", "currency.id", Format::Plain),
    ("currency_code", "currency.code", Format::Plain),
    ("currency_symbol", "currency.symbol", Format::Plain),
    ("ratezone_tariff_id", "tariff.id", Format::Plain),
    ("ratezone_tariff_name", "tariff.name", Format::Plain),
    ("ratezone_id", "tariff.ratezone.id", Format::Plain),
    ("ratezone_name", "tariff.ratezone.name", Format::Plain),
    // Added by the 2019-10-04 upgrade, appended in the note's order.
    ("endpoint_name", "endpoint.name", Format::Plain),
    ("endpoint_ip_address", "endpoint.ip_address", Format::Plain),
    ("endpoint_tags", "endpoint.tags", Format::Plain),
    ("endpoint_imei", "endpoint.imei", Format::Plain),
    ("msisdn_msisdn", "sim.msisdn", Format::Plain),
    ("sim_production_date", "sim.production_date", Format::Time),
    ("operator_mncs", "operator.mnc", Format::Plain),
    ("country_mcc", "operator.country.mcc", Format::Plain),
];

/// Event CSV columns: the event's own fields (emnify did not publish their
/// base order; this is the order of its API reference), then the 16 the
/// 2019-10-04 upgrade note added, in the note's order.
pub const EVENT_COLUMNS: &[Column] = &[
    ("id", "id", Format::Plain),
    ("timestamp", "timestamp", Format::Time),
    ("alert", "alert", Format::Plain),
    ("description", "description", Format::Plain),
    ("event_type_id", "event_type.id", Format::Plain),
    (
        "event_type_description",
        "event_type.description",
        Format::Plain,
    ),
    ("event_severity_id", "event_severity.id", Format::Plain),
    (
        "event_severity_description",
        "event_severity.description",
        Format::Plain,
    ),
    ("organisation_id", "organisation.id", Format::Plain),
    ("organisation_name", "organisation.name", Format::Plain),
    ("detail", "detail", Format::Plain),
    // Added by the 2019-10-04 upgrade, in the note's order.
    ("endpoint_id", "endpoint.id", Format::Plain),
    ("endpoint_name", "endpoint.name", Format::Plain),
    ("endpoint_imei", "endpoint.imei", Format::Plain),
    ("endpoint_ip_address", "endpoint.ip_address", Format::Plain),
    ("endpoint_tags", "endpoint.tags", Format::Plain),
    ("event_source_id", "event_source.id", Format::Plain),
    (
        "event_source_name",
        "event_source.description",
        Format::Plain,
    ),
    ("sim_id", "sim.id", Format::Plain),
    ("sim_iccid", "sim.iccid", Format::Plain),
    ("msisdn_msisdn", "sim.msisdn", Format::Plain),
    ("sim_production_date", "sim.production_date", Format::Time),
    ("imsi_id", "imsi.id", Format::Plain),
    ("imsi_imsi", "imsi.imsi", Format::Plain),
    ("user_id", "user.id", Format::Plain),
    ("user_username", "user.username", Format::Plain),
    ("user_name", "user.name", Format::Plain),
];

/// Which stream a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Usage (CDR) records.
    Usage,
    /// Event records.
    Events,
}

impl Stream {
    fn columns(self) -> &'static [Column] {
        match self {
            Stream::Usage => USAGE_COLUMNS,
            Stream::Events => EVENT_COLUMNS,
        }
    }

    fn route(self) -> &'static str {
        match self {
            Stream::Usage => "emnify.usage",
            Stream::Events => "emnify.events",
        }
    }

    /// Tells usage from events by their own fields.
    pub fn detect(record: &Map<String, Value>) -> Option<Stream> {
        if ["traffic_type", "volume", "start_timestamp"]
            .iter()
            .any(|k| record.contains_key(*k))
        {
            Some(Stream::Usage)
        } else if record.contains_key("event_type") {
            Some(Stream::Events)
        } else {
            None
        }
    }
}

/// The transform.
#[derive(Debug)]
pub struct EmnifyCsv {
    stream: Option<Stream>,
    append_extra: bool,
}

impl Transform for EmnifyCsv {
    fn new(config: Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&["stream", "extra_columns"])?;
        let stream = match config.one_of("stream", &["auto", "usage", "events"], "auto")? {
            "usage" => Some(Stream::Usage),
            "events" => Some(Stream::Events),
            _ => None,
        };
        let append_extra = config.one_of("extra_columns", &["drop", "append"], "drop")? == "append";
        Ok(EmnifyCsv {
            stream,
            append_extra,
        })
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        match record.json()? {
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let Value::Object(obj) = item else {
                        return Err(RecordError::invalid_input(format!(
                            "array element {i} is {}, not an object",
                            json::type_name(&item)
                        )));
                    };
                    self.row(&obj, out)?;
                }
                Ok(())
            }
            Value::Object(obj) => self.row(&obj, out),
            other => Err(RecordError::invalid_input(format!(
                "expected an emnify record (a JSON object), got {}",
                json::type_name(&other)
            ))),
        }
    }
}

impl EmnifyCsv {
    fn row(&self, record: &Map<String, Value>, out: &mut Emit) -> Result<(), RecordError> {
        let stream = match self.stream.or_else(|| Stream::detect(record)) {
            Some(s) => s,
            None => {
                return Err(RecordError::invalid_input(
                    "neither a usage record (no traffic_type, volume or start_timestamp) nor an event (no event_type); \
                     set stream=usage or stream=events",
                ));
            }
        };
        let root = Value::Object(record.clone());
        let mut row = Map::new();
        for &(name, path, format) in stream.columns() {
            let value = match json::get(&root, path) {
                None | Some(Value::Null) => Value::Null,
                Some(v) => Value::String(cell(v, format).map_err(|e| {
                    RecordError::invalid_input(format!("field `{path}` (column `{name}`): {e}"))
                })?),
            };
            row.insert(name.to_string(), value);
        }
        if self.append_extra {
            for (key, value) in json::flatten(&root) {
                let consumed = stream
                    .columns()
                    .iter()
                    .any(|(_, path, _)| key == *path || key.starts_with(&format!("{path}.")));
                let name = key.replace('.', "_");
                if consumed || row.contains_key(&name) {
                    continue;
                }
                let value = match value {
                    Value::Null => Value::Null,
                    v => Value::String(cell(&v, Format::Plain).unwrap_or_default()),
                };
                row.insert(name, value);
            }
        }
        out.emit_json_routed(&Value::Object(row), stream.route());
        Ok(())
    }
}

/// Formats one value for its column.
///
/// # Errors
///
/// A message when a timestamp or number does not parse.
pub fn cell(value: &Value, format: Format) -> Result<String, String> {
    match (format, value) {
        (Format::Time, Value::String(s)) => Ok(parse_emnify_time(s)?.to_sql_datetime()),
        (Format::Time, other) => Err(format!(
            "expected a timestamp string, got {}",
            json::type_name(other)
        )),
        (Format::Fixed(places), Value::Number(n)) => {
            let f = n.as_f64().ok_or("not a finite number")?;
            Ok(format!("{f:.places$}"))
        }
        (Format::Fixed(places), Value::String(s)) => {
            let f: f64 = s
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a number"))?;
            Ok(format!("{f:.places$}"))
        }
        (Format::Fixed(_), other) => {
            Err(format!("expected a number, got {}", json::type_name(other)))
        }
        (Format::Plain, Value::String(s)) => Ok(s.clone()),
        (Format::Plain, other) => Ok(other.to_string()),
    }
}

/// Parses the timestamp forms emnify's examples use: RFC 3339
/// (`2021-10-27T11:59:29.000Z`, `2021-10-27T15:17:23Z`), an offset without
/// a colon (`2017-10-26T07:28:00.000+0000`), and a zone-less
/// `2021-10-06 10:42:58`, which emnify documents as UTC.
///
/// # Errors
///
/// The parser's message.
pub fn parse_emnify_time(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    let b = s.as_bytes();
    let fixed;
    let candidate = if b.len() > 5
        && matches!(b[b.len() - 5], b'+' | b'-')
        && b[b.len() - 4..].iter().all(u8::is_ascii_digit)
        && b.len() > 19
    {
        // `+0000` → `+00:00`
        fixed = format!("{}:{}", &s[..s.len() - 2], &s[s.len() - 2..]);
        fixed.as_str()
    } else if b.len() >= 19 && !s.ends_with(['Z', 'z']) && !s[19..].contains(['+', '-']) {
        fixed = format!("{s}Z");
        fixed.as_str()
    } else {
        s
    };
    parse_rfc3339(candidate).map_err(|e| e.to_string())
}

sluice_sdk::export!(EmnifyCsv);

#[cfg(test)]
mod tests;
