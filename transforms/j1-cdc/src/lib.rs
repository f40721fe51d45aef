//! `j1-cdc`: one JupiterOne entity, as the poller fetches it from `queryV1`
//! (`{id, entity, properties}`, deleted ones included with
//! `includeDeleted`), to a J1DS change record, laid out as in
//! `shared/seeds/jupiterone-data-stream-j1ds.txt`:
//!
//! ```json
//! {"operation":"u","eventType":"entity","properties":{…},"labels":["Entity","User","slack_user"]}
//! ```
//!
//! - `properties` is one flat object: the entity's metadata (`_id`, `_key`,
//!   `_type`, `_class`, `_accountId`, `_version`, `_deleted`, `_beginOn`,
//!   `_createdOn`, `_source`, `_scope`, `_integration*`, `displayName`, …)
//!   and the entity's own properties, with `tag.*` keys kept flat and
//!   dotted. Where both carry a key, the entity's `_`-prefixed metadata
//!   wins and the property wins otherwise. J1DS writes `_createdOn`,
//!   `_beginOn` and `_endOn` as epoch milliseconds; ISO strings (as some
//!   API answers carry them) are converted.
//! - `labels` = `["Entity", <each _class>, <each _type>]`.
//! - `operation`: `d` when `_deleted` is true, else `c` when `_version` is
//!   1, else `u`.
//! - Route: `j1ds.<accountId>`, for the sink's J1DS key layout
//!   (`jupiterone/graph/cdc/accountId=…/`). Config `account_id` is used
//!   when the entity carries no `_accountId`.

use sluice_sdk::json;
use sluice_sdk::serde_json::{Map, Value, json};
use sluice_sdk::time::parse_rfc3339;
use sluice_sdk::{Config, ConfigError, Emit, Record, RecordError, Transform};

/// Metadata J1DS writes as epoch milliseconds.
const EPOCH_MS_FIELDS: &[&str] = &["_createdOn", "_beginOn", "_endOn"];

/// The transform.
#[derive(Debug)]
pub struct J1Cdc {
    account_id: Option<String>,
}

impl Transform for J1Cdc {
    fn new(config: Config) -> Result<Self, ConfigError> {
        config.deny_unknown(&["account_id"])?;
        Ok(J1Cdc {
            account_id: config.get("account_id").map(str::to_string),
        })
    }

    fn process(&mut self, record: Record, out: &mut Emit) -> Result<(), RecordError> {
        let input = record.json_object()?;
        let (doc, account) = self.change_record(input)?;
        out.emit_json_routed(&doc, format!("j1ds.{account}"));
        Ok(())
    }
}

impl J1Cdc {
    /// Builds the change record and returns it with its account id.
    ///
    /// # Errors
    ///
    /// A [`RecordError`] when the input has no `entity` object, no `_class`
    /// or `_type`, or no account id.
    pub fn change_record(
        &self,
        mut input: Map<String, Value>,
    ) -> Result<(Value, String), RecordError> {
        let Some(Value::Object(entity)) = input.remove("entity") else {
            return Err(RecordError::invalid_input(
                "expected a queryV1 result element with an `entity` object ({id, entity, properties})",
            ));
        };
        let own = match input.remove("properties") {
            Some(Value::Object(p)) => p,
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                return Err(RecordError::invalid_input(format!(
                    "`properties` is {}, not an object",
                    json::type_name(&other)
                )));
            }
        };
        let mut properties = entity;
        for (k, v) in own {
            if k.starts_with('_') && properties.contains_key(&k) {
                continue;
            }
            properties.insert(k, v);
        }
        for field in EPOCH_MS_FIELDS {
            if let Some(Value::String(s)) = properties.get(*field) {
                let ms = parse_rfc3339(s)
                    .map_err(|e| RecordError::invalid_input(format!("entity `{field}`: {e}")))?
                    .unix_millis();
                properties.insert((*field).to_string(), ms.into());
            }
        }
        let classes = names(properties.get("_class"), "_class")?;
        let types = names(properties.get("_type"), "_type")?;
        let deleted = matches!(properties.get("_deleted"), Some(Value::Bool(true)));
        let version = match properties.get("_version") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        let operation = if deleted {
            "d"
        } else if version == Some(1) {
            "c"
        } else {
            "u"
        };
        let account = match properties.get("_accountId").and_then(Value::as_str) {
            Some(a) => a.to_string(),
            None => self.account_id.clone().ok_or_else(|| {
                RecordError::invalid_input(
                    "the entity has no `_accountId`; set the transform's `account_id`",
                )
            })?,
        };
        let mut labels = vec![Value::from("Entity")];
        labels.extend(classes.into_iter().map(Value::from));
        labels.extend(types.into_iter().map(Value::from));
        let doc = json!({
            "operation": operation,
            "eventType": "entity",
            "properties": Value::Object(properties),
            "labels": labels,
        });
        Ok((doc, account))
    }
}

/// `_class` / `_type`: a string or an array of strings.
fn names(v: Option<&Value>, field: &str) -> Result<Vec<String>, RecordError> {
    match v {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    RecordError::invalid_input(format!("`{field}` holds {}", json::type_name(x)))
                })
            })
            .collect(),
        _ => Err(RecordError::invalid_input(format!(
            "the entity has no `{field}` (JupiterOne requires it on every entity)"
        ))),
    }
}

sluice_sdk::export!(J1Cdc);

#[cfg(test)]
mod tests;
