//! A small JSON Schema checker (the subset `schema/results.schema.json` uses: `type`,
//! `required`, `properties`, `additionalProperties`, `items`, `enum`, `minimum`, and local
//! `$ref`s), so the schema file itself is what the tests hold the output to.

use serde_json::Value;

const SCHEMA: &str = include_str!("../../schema/results.schema.json");

/// Checks a results document against the committed schema; the error names the JSON path.
pub fn validate_results(doc: &Value) -> Result<(), String> {
    let schema: Value = serde_json::from_str(SCHEMA).map_err(|e| format!("schema file: {e}"))?;
    check(&schema, &schema, doc, "$")
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn check(root: &Value, s: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/$defs/")
            .ok_or_else(|| format!("unsupported $ref {r}"))?;
        let target = root
            .get("$defs")
            .and_then(|d| d.get(name))
            .ok_or_else(|| format!("missing $defs/{name}"))?;
        return check(root, target, v, path);
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)),
            _ => true,
        };
        if !ok {
            return Err(format!("{path}: expected type {t}, got {v}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{path}: {v} is not one of {e:?}"));
        }
    }
    if let (Some(min), Some(x)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            return Err(format!("{path}: {x} is below the minimum {min}"));
        }
    }
    if let Some(obj) = v.as_object() {
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for k in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(k) {
                    return Err(format!("{path}: required property `{k}` is missing"));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            let sub = format!("{path}.{k}");
            match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                (Some(ps), _) => check(root, ps, val, &sub)?,
                (None, Some(Value::Bool(false))) => {
                    return Err(format!("{path}: unexpected property `{k}`"))
                }
                (None, Some(ap @ Value::Object(_))) => check(root, ap, val, &sub)?,
                _ => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(root, items, x, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}
