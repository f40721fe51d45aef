//! JSON helpers every transform needs: dotted paths, Elastic's
//! drop-empty-values, and flattening.
//!
//! Paths are dotted (`user_agent.os.name`) and walk nested objects, as
//! Elastic's ingest processors do. A key that itself contains a dot cannot
//! be addressed by a path; use the `Map` API for those.

use serde_json::{Map, Value};
use std::fmt;

/// A path could not be written because a value on the way is not an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// The path being written.
    pub path: String,
    /// The prefix whose value is not an object.
    pub blocked_at: String,
    /// The JSON type found there.
    pub found: &'static str,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot set `{}`: `{}` is {}, not an object",
            self.path, self.blocked_at, self.found
        )
    }
}

impl std::error::Error for PathError {}

impl From<PathError> for crate::RecordError {
    fn from(e: PathError) -> Self {
        crate::RecordError::invalid_input(e.to_string())
    }
}

/// "a string", "an object", … for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value at `path`, if every step exists and is an object.
pub fn get<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(root, |v, key| v.as_object()?.get(key))
}

/// The value at `path` in an object.
pub fn get_in<'a>(root: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let (first, rest) = split_first(path);
    let v = root.get(first)?;
    match rest {
        None => Some(v),
        Some(rest) => get(v, rest),
    }
}

/// The string at `path`, if it is a string.
pub fn get_str<'a>(root: &'a Value, path: &str) -> Option<&'a str> {
    get(root, path)?.as_str()
}

/// A mutable reference to the value at `path`.
pub fn get_mut<'a>(root: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.')
        .try_fold(root, |v, key| v.as_object_mut()?.get_mut(key))
}

/// Sets `path` to `value`, creating missing objects on the way, and returns
/// the previous value.
///
/// # Errors
///
/// [`PathError`] when a value on the way exists and is not an object; the
/// document is left unchanged (nothing is overwritten silently).
pub fn set(root: &mut Value, path: &str, value: Value) -> Result<Option<Value>, PathError> {
    set_or_return(root, path, value).map_err(|failed| failed.0)
}

/// [`set`], handing the value back on failure so the caller can restore it.
fn set_or_return(
    root: &mut Value,
    path: &str,
    value: Value,
) -> Result<Option<Value>, Box<(PathError, Value)>> {
    let (parent_path, leaf) = match path.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, path),
    };
    // Check the existing part of the way first, so a failure changes nothing.
    let mut cur = &*root;
    let mut walked = 0usize;
    let mut steps = parent_path.into_iter().flat_map(|p| p.split('.'));
    loop {
        let Some(obj) = cur.as_object() else {
            let blocked_at = if walked == 0 {
                "(root)".to_string()
            } else {
                path[..walked - 1].to_string()
            };
            return Err(Box::new((
                PathError {
                    path: path.to_string(),
                    blocked_at,
                    found: type_name(cur),
                },
                value,
            )));
        };
        let Some(key) = steps.next() else { break };
        walked += key.len() + 1;
        match obj.get(key) {
            Some(next) => cur = next,
            None => break, // the rest of the way is created below
        }
    }
    let mut parent = root;
    if let Some(parent_path) = parent_path {
        for key in parent_path.split('.') {
            parent = parent
                .as_object_mut()
                .expect("checked above")
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    Ok(parent
        .as_object_mut()
        .expect("checked above")
        .insert(leaf.to_string(), value))
}

/// Removes the value at `path` and returns it. Parent objects are kept even
/// if they become empty (run [`drop_empty`] to prune them).
pub fn remove(root: &mut Value, path: &str) -> Option<Value> {
    match path.rsplit_once('.') {
        None => root.as_object_mut()?.shift_remove(path),
        Some((parent, leaf)) => get_mut(root, parent)?.as_object_mut()?.shift_remove(leaf),
    }
}

/// Moves the value at `from` to `to`, overwriting `to`. Returns whether
/// `from` existed.
///
/// # Errors
///
/// [`PathError`] when `to` cannot be created; `from` is then restored.
pub fn rename(root: &mut Value, from: &str, to: &str) -> Result<bool, PathError> {
    let Some(v) = remove(root, from) else {
        return Ok(false);
    };
    match set_or_return(root, to, v) {
        Ok(_) => Ok(true),
        Err(failed) => {
            let (e, v) = *failed;
            // `from`'s parent still exists, so this cannot fail. It goes
            // back as the last key of its object.
            let _ = set_or_return(root, from, v);
            Err(e)
        }
    }
}

/// True for the values Elastic's `dropEmptyFields` deletes: `null`, `""`,
/// and (after their own contents are dropped) empty objects and arrays.
/// `false` and `0` are kept.
pub fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Elastic's `dropEmptyFields` over a whole document: recursively deletes
/// every `null` or `""` value, every object or array left empty, and every
/// `null` or `""` element of an array. `false` and `0` are kept.
///
/// Returns true when `v` itself is now empty (the caller decides whether to
/// drop it; the root document is never removed).
pub fn drop_empty(v: &mut Value) -> bool {
    match v {
        Value::Object(map) => {
            map.retain(|_, child| !drop_empty(child));
            map.is_empty()
        }
        Value::Array(items) => {
            items.retain_mut(|child| !drop_empty(child));
            items.is_empty()
        }
        other => is_empty_value(other),
    }
}

/// Flattens nested objects into one level with dotted keys, in document
/// order: `{"a":{"b":1},"c":[{"d":2}]}` becomes `{"a.b":1,"c":[{"d":2}]}`.
/// Arrays and scalars are leaves and are kept as they are; an empty object
/// is kept as a leaf `{}` so no key disappears.
pub fn flatten(v: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    match v {
        Value::Object(map) => flatten_into(map, &mut String::new(), &mut out),
        other => {
            out.insert(String::new(), other.clone());
        }
    }
    out
}

fn flatten_into(map: &Map<String, Value>, prefix: &mut String, out: &mut Map<String, Value>) {
    for (k, v) in map {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(k);
        match v {
            Value::Object(child) if !child.is_empty() => flatten_into(child, prefix, out),
            leaf => {
                out.insert(prefix.clone(), leaf.clone());
            }
        }
        prefix.truncate(len);
    }
}

fn split_first(path: &str) -> (&str, Option<&str>) {
    match path.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (path, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn get_walks_objects_only() {
        let v = json!({"a": {"b": {"c": 1}}, "l": [1]});
        assert_eq!(get(&v, "a.b.c"), Some(&json!(1)));
        assert_eq!(get(&v, "a.x"), None);
        assert_eq!(get(&v, "l.0"), None);
        assert_eq!(get_str(&json!({"s": "x"}), "s"), Some("x"));
        assert_eq!(
            get_in(v.as_object().unwrap(), "a.b"),
            Some(&json!({"c": 1}))
        );
    }

    #[test]
    fn set_creates_parents_and_refuses_to_clobber() {
        let mut v = json!({"a": 1});
        assert_eq!(set(&mut v, "x.y.z", json!(true)), Ok(None));
        assert_eq!(v, json!({"a": 1, "x": {"y": {"z": true}}}));
        assert_eq!(set(&mut v, "a", json!(2)), Ok(Some(json!(1))));
        let e = set(&mut v, "a.b", json!(3)).unwrap_err();
        assert_eq!(e.blocked_at, "a");
        assert_eq!(e.found, "a number");
        assert_eq!(v["a"], json!(2), "unchanged after the error");
        let e = set(&mut json!([1]), "k", json!(1)).unwrap_err();
        assert_eq!(e.blocked_at, "(root)");
    }

    #[test]
    fn remove_and_rename() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": 3});
        assert_eq!(remove(&mut v, "a.b"), Some(json!(1)));
        assert_eq!(remove(&mut v, "a.zz"), None);
        assert_eq!(rename(&mut v, "d", "e.f"), Ok(true));
        assert_eq!(rename(&mut v, "missing", "x"), Ok(false));
        assert_eq!(v, json!({"a": {"c": 2}, "e": {"f": 3}}));
        let e = rename(&mut v, "a.c", "e.f.g").unwrap_err();
        assert_eq!(e.blocked_at, "e.f");
        assert_eq!(v, json!({"a": {"c": 2}, "e": {"f": 3}}), "source restored");
    }

    #[test]
    fn rename_keeps_order_of_other_keys() {
        let mut v = json!({"a": 1, "b": 2, "c": 3});
        rename(&mut v, "b", "z").unwrap();
        assert_eq!(v.to_string(), r#"{"a":1,"c":3,"z":2}"#);
    }

    #[test]
    fn drop_empty_follows_elastic() {
        let mut v = json!({
            "null": null, "empty": "", "zero": 0, "no": false, "s": "x",
            "obj": {"inner": null, "deeper": {"e": ""}},
            "list": [null, "", 0, "a", {}, []],
            "emptylist": [null, ""],
            "keep": {"k": false}
        });
        let root_empty = drop_empty(&mut v);
        assert!(!root_empty);
        assert_eq!(
            v,
            json!({"zero": 0, "no": false, "s": "x", "list": [0, "a"], "keep": {"k": false}})
        );
        assert!(drop_empty(&mut json!({"a": {"b": null}})));
    }

    #[test]
    fn flatten_dots_objects_keeps_arrays() {
        let v = json!({"a": {"b": 1, "c": {"d": "x"}}, "e": [{"f": 1}], "g": {}, "h": null});
        let f = flatten(&v);
        assert_eq!(
            Value::Object(f),
            json!({"a.b": 1, "a.c.d": "x", "e": [{"f": 1}], "g": {}, "h": null})
        );
        assert_eq!(flatten(&json!(5)).get(""), Some(&json!(5)));
    }
}
