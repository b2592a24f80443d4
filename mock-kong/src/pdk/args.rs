//! Arguments as Kong's PDK functions check them: positional access with Lua's nil for a missing
//! one, string and number coercions, header names and values (`checks.validate_header`), the
//! `max_*` limits and status codes, with Kong's error texts. The Lua value rules themselves
//! ([`crate::lua`]) are re-exported here for the PDK modules.

pub(crate) use crate::lua::{
    cjson_encode, cjson_escape, is_number, lua_number, lua_text, lua_tostring, lua_type,
};
use crate::Value;

pub(crate) fn arg(args: &[Value], i: usize) -> &Value {
    static NIL: Value = Value::Nil;
    args.get(i).unwrap_or(&NIL)
}

pub(crate) fn number(v: &Value) -> Option<f64> {
    is_number(v).then(|| v.as_f64()).flatten()
}

pub(crate) fn string_arg(v: &Value) -> Option<String> {
    match v {
        Value::Str(b) | Value::Bin(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// `checks.validate_header`: a header value as strings, or Kong's error.
pub(crate) fn header_values(name: &str, v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Str(_) | Value::Bin(_) => Ok(vec![string_arg(v).unwrap_or_default()]),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
            Ok(vec![lua_text(v).unwrap_or_default()])
        }
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Array(items) => items
            .iter()
            .map(|x| {
                string_arg(x).ok_or_else(|| {
                    format!(
                        "invalid header value in array \"{name}\": got {}, expected string",
                        lua_type(x)
                    )
                })
            })
            .collect(),
        Value::Map(m) if m.is_empty() => Ok(Vec::new()),
        other => Err(format!(
            "invalid header value for \"{name}\": got {}, expected array of string, string, \
             number or boolean",
            lua_type(other)
        )),
    }
}

pub(crate) fn header_name(v: &Value) -> Result<String, String> {
    string_arg(v).ok_or_else(|| {
        format!(
            "invalid header name \"{}\": got {}, expected string",
            lua_tostring(v),
            lua_type(v)
        )
    })
}

/// A `{name = value(s)}` table as header entries (validated).
pub(crate) fn header_table(v: &Value, what: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    match v {
        Value::Map(m) => m
            .iter()
            .map(|(k, x)| {
                let name = header_name(k)?;
                let vals = header_values(&name, x)?;
                Ok((name, vals))
            })
            .collect(),
        Value::Array(a) if a.is_empty() => Ok(Vec::new()),
        _ => Err(format!("{what} must be a table")),
    }
}

/// A `max` argument (`max_headers`, `max_args`): default 100, 1..=1000, or Kong's error.
pub(crate) fn max_arg(v: &Value, what: &str) -> Result<usize, String> {
    if v.is_nil() {
        return Ok(100);
    }
    let Some(n) = number(v) else {
        return Err(format!("{what} must be a number"));
    };
    if n < 1.0 {
        return Err(format!("{what} must be >= 1"));
    }
    if n > 1000.0 {
        return Err(format!("{what} must be <= 1000"));
    }
    Ok(n as usize)
}

pub(crate) fn status_arg(v: &Value, min: i64) -> Result<i64, String> {
    let Some(n) = number(v) else {
        return Err("code must be a number".into());
    };
    if n < min as f64 || n > 599.0 {
        return Err(format!("code must be a number between {min} and 599"));
    }
    Ok(n as i64)
}

pub(crate) fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The value under `key` in an ordered Lua-like table (`kong.ctx.shared`, `ngx.ctx`), nil if absent.
pub(crate) fn lookup(table: &[(String, Value)], key: &str) -> Value {
    table
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::Nil)
}
