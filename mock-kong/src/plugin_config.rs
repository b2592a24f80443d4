//! A plugin's `config` as Kong builds it from the plugin's schema (the dump's `Schema`,
//! docs/protocol.md §2 and §4.3): what a user gives is checked against the schema's `config`
//! record, and every field not given is filled in as Kong's schema library fills it.
//!
//! # Kong's rules, as reproduced here
//!
//! * A field that is not given gets its `default`; without one, a `required` field is an error
//!   (`required field missing`), a nested record (not `abstract`) is built from its own fields'
//!   defaults, and anything else is `null` (JSON null in the config Kong sends).
//! * A field given as `null` stays `null` (no default), and is an error when `required`.
//! * A key the record does not declare is an error (`unknown field`).
//! * Values must have the field's type (`expected a string`, `expected an integer`, ...), checked
//!   recursively through arrays, sets, maps and records; an empty JSON object and an empty array
//!   are the same Lua table, so each is accepted where the other is.
//! * The validators plugin schemas use most are checked with Kong's texts: `one_of`,
//!   `between`, `gt`, `len_eq`, `len_min`, `len_max`. Others (`match`, custom checks) are not.
//!
//! Errors name the field by its path in the config (`config.tag`, `config.limits.minute`,
//! `config.tags[2]`), so a user can find it.

use serde_json::{Map, Value};

/// One way a given config breaks the schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigIssue {
    /// Where: `config.tag`, `config.limits.minute`, `config.tags[2]`.
    pub field: String,
    /// Kong's text: `expected a string`, `unknown field`, `required field missing`, ...
    pub message: String,
}

/// The config does not fit the plugin's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.plugin, .issues))]
pub struct ConfigRejected {
    pub plugin: String,
    pub issues: Vec<ConfigIssue>,
}

fn render(plugin: &str, issues: &[ConfigIssue]) -> String {
    let list: Vec<String> = issues
        .iter()
        .map(|i| format!("{}: {}", i.field, i.message))
        .collect();
    format!(
        "the config does not fit plugin `{plugin}`'s schema (Kong would refuse it): {}. \
         Fix the config, or send it as given with --raw-config (scenarios: raw_config = true)",
        list.join("; ")
    )
}

/// The `fields` of the schema's `config` record, if the schema has one.
fn config_fields(schema: &Value) -> Option<&Vec<Value>> {
    schema.get("fields")?.as_array()?.iter().find_map(|f| {
        f.get("config")
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("record"))
            .and_then(|c| c.get("fields"))
            .and_then(Value::as_array)
    })
}

/// The config Kong would send for `given`: checked against `schema` (the dump's `Schema`),
/// defaults filled in. A schema without a `config` record (the dump check reports that) takes
/// the config as given.
pub fn kong_config(
    plugin: &str,
    schema: &Value,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, ConfigRejected> {
    let Some(fields) = config_fields(schema) else {
        return Ok(given.clone());
    };
    let mut issues = Vec::new();
    let out = record(fields, given, "config", &mut issues);
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(ConfigRejected {
            plugin: plugin.to_owned(),
            issues,
        })
    }
}

/// A field entry `{"name": {definition}}` as its name and definition.
fn entry(f: &Value) -> Option<(&str, &Value)> {
    let obj = f.as_object()?;
    let (name, def) = obj.iter().next()?;
    Some((name.as_str(), def))
}

fn issue(issues: &mut Vec<ConfigIssue>, field: &str, message: impl Into<String>) {
    issues.push(ConfigIssue {
        field: field.to_owned(),
        message: message.into(),
    });
}

/// A record's value: unknown keys reported, every declared field checked or filled.
fn record(
    fields: &[Value],
    given: &Map<String, Value>,
    at: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Map<String, Value> {
    let declared: Vec<(&str, &Value)> = fields.iter().filter_map(entry).collect();
    for key in given.keys() {
        if !declared.iter().any(|(name, _)| name == key) {
            issue(issues, &format!("{at}.{key}"), "unknown field");
        }
    }
    let mut out = Map::new();
    for (name, def) in declared {
        let path = format!("{at}.{name}");
        let value = match given.get(name) {
            Some(v) => field(def, v, &path, issues),
            None => missing(def, &path, issues),
        };
        out.insert(name.to_owned(), value);
    }
    out
}

/// Kong's `handle_missing_field`.
fn missing(def: &Value, at: &str, issues: &mut Vec<ConfigIssue>) -> Value {
    if let Some(d) = def.get("default") {
        return d.clone();
    }
    if def.get("required").and_then(Value::as_bool) == Some(true) {
        issue(issues, at, "required field missing");
        return Value::Null;
    }
    let typ = def.get("type").and_then(Value::as_str);
    let is_abstract = def.get("abstract").and_then(Value::as_bool) == Some(true);
    match (typ, def.get("fields").and_then(Value::as_array)) {
        (Some("record"), Some(fields)) if !is_abstract => {
            Value::Object(record(fields, &Map::new(), at, issues))
        }
        _ => Value::Null,
    }
}

fn is_empty_table(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.is_empty()) || matches!(v, Value::Object(o) if o.is_empty())
}

/// A given value, checked against its field definition; returns it with nested defaults filled.
fn field(def: &Value, v: &Value, at: &str, issues: &mut Vec<ConfigIssue>) -> Value {
    if v.is_null() {
        if def.get("required").and_then(Value::as_bool) == Some(true) {
            issue(issues, at, "required field missing");
        }
        return Value::Null;
    }
    let typ = def.get("type").and_then(Value::as_str).unwrap_or("any");
    let before = issues.len();
    let out = match typ {
        "string" if !v.is_string() => wrong(issues, at, "a string"),
        "boolean" if !v.is_boolean() => wrong(issues, at, "a boolean"),
        "number" if !v.is_number() => wrong(issues, at, "a number"),
        "integer" if !is_integer(v) => wrong(issues, at, "an integer"),
        "array" | "set" => match v {
            Value::Array(items) => {
                let elements = def.get("elements");
                Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| match elements {
                            Some(e) => field(e, item, &format!("{at}[{}]", i + 1), issues),
                            None => item.clone(),
                        })
                        .collect(),
                )
            }
            _ if is_empty_table(v) => Value::Array(Vec::new()),
            _ => wrong(issues, at, if typ == "set" { "a set" } else { "an array" }),
        },
        "map" => match v {
            Value::Object(entries) => {
                let keys = def.get("keys");
                let values = def.get("values");
                let mut m = Map::new();
                for (k, item) in entries {
                    let item_at = format!("{at}.{k}");
                    if let Some(kd) = keys {
                        field(kd, &Value::String(k.clone()), &item_at, issues);
                    }
                    let item = match values {
                        Some(vd) => field(vd, item, &item_at, issues),
                        None => item.clone(),
                    };
                    m.insert(k.clone(), item);
                }
                Value::Object(m)
            }
            _ if is_empty_table(v) => Value::Object(Map::new()),
            _ => wrong(issues, at, "a map"),
        },
        "record" => match (v, def.get("fields").and_then(Value::as_array)) {
            (Value::Object(given), Some(fields)) => {
                Value::Object(record(fields, given, at, issues))
            }
            (Value::Object(_), None) => v.clone(),
            _ if is_empty_table(v) => match def.get("fields").and_then(Value::as_array) {
                Some(fields) => Value::Object(record(fields, &Map::new(), at, issues)),
                None => Value::Object(Map::new()),
            },
            _ => wrong(issues, at, "a record"),
        },
        "function" => {
            issue(issues, at, "a function cannot come from a config");
            Value::Null
        }
        // string, number, integer, boolean of the right type; json, foreign, any: anything.
        _ => v.clone(),
    };
    if issues.len() == before {
        validators(def, v, at, issues);
    }
    out
}

fn wrong(issues: &mut Vec<ConfigIssue>, at: &str, what: &str) -> Value {
    issue(issues, at, format!("expected {what}"));
    Value::Null
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// Lua's rendering of a number in Kong's messages: integers without `.0`.
fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => v.to_string(),
    }
}

/// The validators of `def` that plugin schemas use most, with Kong's messages.
fn validators(def: &Value, v: &Value, at: &str, issues: &mut Vec<ConfigIssue>) {
    if let Some(options) = def.get("one_of").and_then(Value::as_array) {
        if !options
            .iter()
            .any(|o| o == v || (o.is_number() && o.as_f64() == v.as_f64()))
        {
            let shown: Vec<String> = options
                .iter()
                .map(|o| match o {
                    Value::String(s) => s.clone(),
                    other => num(other),
                })
                .collect();
            issue(issues, at, format!("expected one of: {}", shown.join(", ")));
        }
    }
    if let (Some(range), Some(x)) = (def.get("between").and_then(Value::as_array), v.as_f64()) {
        if let (Some(lo), Some(hi)) = (
            range.first().and_then(Value::as_f64),
            range.get(1).and_then(Value::as_f64),
        ) {
            if x < lo || x > hi {
                issue(
                    issues,
                    at,
                    format!(
                        "value should be between {} and {}",
                        num(&range[0]),
                        num(&range[1])
                    ),
                );
            }
        }
    }
    if let (Some(gt), Some(x)) = (def.get("gt"), v.as_f64()) {
        if gt.as_f64().is_some_and(|g| x <= g) {
            issue(
                issues,
                at,
                format!("value must be greater than {}", num(gt)),
            );
        }
    }
    let len = match v {
        Value::String(s) => Some(s.len()),
        Value::Array(a) => Some(a.len()),
        _ => None,
    };
    if let Some(len) = len {
        let bound = |key: &str| def.get(key).and_then(Value::as_u64);
        if let Some(n) = bound("len_eq").filter(|&n| len as u64 != n) {
            issue(issues, at, format!("length must be {n}"));
        }
        if let Some(n) = bound("len_min").filter(|&n| (len as u64) < n) {
            issue(issues, at, format!("length must be at least {n}"));
        }
        if let Some(n) = bound("len_max").filter(|&n| len as u64 > n) {
            issue(issues, at, format!("length must be at most {n}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(config_fields: Value) -> Value {
        json!({"name": "p", "fields": [{"config": {"type": "record", "fields": config_fields}}]})
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    /// Regression (issue 13, item 4): the config was sent without the schema's defaults, and
    /// `{"nosuch":1,"tag":5}` was accepted.
    #[test]
    fn defaults_are_filled_and_unset_fields_are_null() {
        let s = schema(json!([
            {"tag": {"type": "string", "default": "hi"}},
            {"count": {"type": "integer"}},
            {"limits": {"type": "record", "fields": [
                {"minute": {"type": "integer", "default": 60}},
                {"hour": {"type": "integer"}}
            ]}},
            {"tags": {"type": "array", "elements": {"type": "string"}, "default": []}}
        ]));
        let out = kong_config("p", &s, &Map::new()).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"tag": "hi", "count": null, "limits": {"minute": 60, "hour": null}, "tags": []})
        );
        let out = kong_config("p", &s, &map(json!({"tag": "yo", "limits": {"hour": 2}}))).unwrap();
        assert_eq!(out["tag"], "yo");
        assert_eq!(out["limits"], json!({"minute": 60, "hour": 2}));
        // An explicit null is kept (no default).
        let out = kong_config("p", &s, &map(json!({"tag": null}))).unwrap();
        assert_eq!(out["tag"], Value::Null);
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_rejected_by_path() {
        let s = schema(json!([
            {"tag": {"type": "string", "default": "hi"}},
            {"limits": {"type": "record", "fields": [{"minute": {"type": "integer"}}]}},
            {"tags": {"type": "set", "elements": {"type": "string"}}},
            {"headers": {"type": "map", "keys": {"type": "string"}, "values": {"type": "number"}}}
        ]));
        let e = kong_config(
            "p",
            &s,
            &map(json!({
                "nosuch": 1, "tag": 5, "limits": {"minute": 1.5, "x": true},
                "tags": ["a", 2], "headers": {"a": "b"}
            })),
        )
        .unwrap_err();
        let got: Vec<String> = e
            .issues
            .iter()
            .map(|i| format!("{}: {}", i.field, i.message))
            .collect();
        assert_eq!(
            got,
            [
                "config.nosuch: unknown field",
                "config.tag: expected a string",
                "config.limits.x: unknown field",
                "config.limits.minute: expected an integer",
                "config.tags[2]: expected a string",
                "config.headers.a: expected a number",
            ]
        );
        let text = e.to_string();
        assert!(
            text.starts_with("the config does not fit plugin `p`'s schema"),
            "{text}"
        );
        assert!(text.contains("--raw-config"), "{text}");
        let e = kong_config("p", &s, &map(json!({"limits": 3}))).unwrap_err();
        assert_eq!(e.issues[0].message, "expected a record");
    }

    #[test]
    fn required_fields_and_validators_use_kongs_texts() {
        let s = schema(json!([
            {"key": {"type": "string", "required": true}},
            {"mode": {"type": "string", "one_of": ["fast", "slow"], "default": "fast"}},
            {"port": {"type": "integer", "between": [1, 65535]}},
            {"ratio": {"type": "number", "gt": 0}},
            {"name": {"type": "string", "len_min": 2, "len_max": 4}}
        ]));
        let e = kong_config("p", &s, &Map::new()).unwrap_err();
        assert_eq!(e.issues.len(), 1);
        assert_eq!(e.issues[0].field, "config.key");
        assert_eq!(e.issues[0].message, "required field missing");
        let e = kong_config(
            "p",
            &s,
            &map(json!({"key": "k", "mode": "odd", "port": 0, "ratio": 0, "name": "x"})),
        )
        .unwrap_err();
        let msgs: Vec<&str> = e.issues.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "expected one of: fast, slow",
                "value should be between 1 and 65535",
                "value must be greater than 0",
                "length must be at least 2",
            ]
        );
        assert!(kong_config(
            "p",
            &s,
            &map(json!({"key": "k", "mode": "slow", "port": 80, "ratio": 0.5, "name": "abc"}))
        )
        .is_ok());
    }

    #[test]
    fn a_schema_without_a_config_record_takes_the_config_as_given() {
        let given = map(json!({"anything": 1}));
        assert_eq!(
            kong_config("p", &json!({"name": "p"}), &given).unwrap(),
            given
        );
    }
}
