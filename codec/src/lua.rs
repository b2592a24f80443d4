//! How Kong's Lua sees a [`Value`]: type names, tables, `tostring`, string coercion, equality
//! across wire representations, and lua-cjson's text.
//!
//! One place for these rules, because the host loop, the ProtoBuf conversions and the emulated
//! PDK all depend on them and must agree:
//!
//! * Kong decodes MessagePack `bin` and `str` to the same Lua string, and extension types to
//!   `nil` (docs/protocol.md §4.2). So a [`Value::Ext`] is `nil` everywhere here: its [`lua_type`] is
//!   `"nil"`, [`lua_tostring`] prints `nil`, and tables skip it like any nil.
//! * A Lua table is a [`Value::Array`] (keys `1..n`) or a [`Value::Map`]; a map entry whose key
//!   or value is nil does not exist in Lua.

use crate::Value;

// ------------------------------------------------------------------------------------------------
// Types and scalars
// ------------------------------------------------------------------------------------------------

/// Lua's `nil`: [`Value::Nil`], and [`Value::Ext`] (which Kong decodes to nil).
pub fn is_nil(v: &Value) -> bool {
    matches!(v, Value::Nil | Value::Ext(..))
}

/// Lua's `type()` of a value as Kong holds it (an extension value arrives as nil).
pub fn lua_type(v: &Value) -> &'static str {
    match v {
        Value::Nil | Value::Ext(..) => "nil",
        Value::Bool(_) => "boolean",
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => "number",
        Value::Str(_) | Value::Bin(_) => "string",
        Value::Array(_) | Value::Map(_) => "table",
    }
}

/// Whether `v` is a Lua number.
pub fn is_number(v: &Value) -> bool {
    matches!(v, Value::Int(_) | Value::UInt(_) | Value::Float(_))
}

/// A Lua number as `tostring` prints it under LuaJIT (`%.14g`).
pub fn lua_number(f: f64) -> String {
    if f.is_nan() {
        return if f.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // %.14g: 14 significant digits; exponential when exp < -4 or exp >= 14.
    let e = format!("{f:.13e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let strip = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if !(-4..14).contains(&exp) {
        let m = strip(mantissa.to_owned());
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (13 - exp).max(0) as usize;
        strip(format!("{f:.decimals$}"))
    }
}

/// Strings and numbers as text (what Lua's string coercion accepts); `None` for other types.
pub fn lua_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(b) | Value::Bin(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(lua_number(*f)),
        _ => None,
    }
}

/// `tostring(v)`, except that tables are shown as JSON (Lua would print an address).
pub fn lua_tostring(v: &Value) -> String {
    match v {
        Value::Nil | Value::Ext(..) => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Array(_) | Value::Map(_) => v.to_json().to_string(),
        other => lua_text(other).unwrap_or_default(),
    }
}

/// Equality across wire representations: `str` = `bin` with the same bytes, `2` = `2.0`, an
/// empty array = an empty map (both are the empty Lua table).
pub fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x) | Value::Bin(x), Value::Str(y) | Value::Bin(y)) => x == y,
        (x, y) if is_number(x) && is_number(y) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| loose_eq(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| loose_eq(k, k2) && loose_eq(v, v2)))
        }
        (Value::Array(x), Value::Map(y)) | (Value::Map(y), Value::Array(x)) => {
            x.is_empty() && y.is_empty()
        }
        (x, y) => x == y,
    }
}

// ------------------------------------------------------------------------------------------------
// Tables
// ------------------------------------------------------------------------------------------------

/// A Lua table key, normalised the way Lua does (an integral float key is an integer key).
#[derive(Debug, Clone, PartialEq)]
pub enum Key<'a> {
    Int(i64),
    Str(&'a [u8]),
    /// A key of another type (float, boolean, table), by Lua type name.
    Other(&'static str),
}

/// The Lua key a map key becomes; `None` for keys Lua drops (nil, NaN).
pub fn key_of(k: &Value) -> Option<Key<'_>> {
    match k {
        Value::Nil | Value::Ext(..) => None,
        Value::Str(b) | Value::Bin(b) => Some(Key::Str(b)),
        Value::Int(i) => Some(Key::Int(*i)),
        Value::UInt(u) => Some(i64::try_from(*u).map_or(Key::Other("number"), Key::Int)),
        Value::Float(f) if f.is_nan() => None,
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(Key::Int(*f as i64)),
        Value::Float(_) => Some(Key::Other("number")),
        Value::Bool(_) => Some(Key::Other("boolean")),
        Value::Array(_) | Value::Map(_) => Some(Key::Other("table")),
    }
}

/// Lua `pairs(t)`: every entry with a non-nil key and value. `None` when `t` is not a table.
pub fn pairs(t: &Value) -> Option<Vec<(Key<'_>, &Value)>> {
    match t {
        Value::Array(a) => Some(
            a.iter()
                .enumerate()
                .filter(|(_, v)| !is_nil(v))
                .map(|(i, v)| (Key::Int(i as i64 + 1), v))
                .collect(),
        ),
        Value::Map(m) => Some(
            m.iter()
                .filter(|(_, v)| !is_nil(v))
                .filter_map(|(k, v)| key_of(k).map(|k| (k, v)))
                .collect(),
        ),
        _ => None,
    }
}

/// Lua `t[i]` for an integer key (non-nil values only).
pub fn index(t: &Value, i: i64) -> Option<&Value> {
    let found = match t {
        Value::Array(a) => usize::try_from(i - 1).ok().and_then(|i| a.get(i)),
        Value::Map(m) => m
            .iter()
            .rev() // a later duplicate wins, as in a Lua table built from the map
            .find(|(k, _)| key_of(k) == Some(Key::Int(i)))
            .map(|(_, v)| v),
        _ => None,
    };
    found.filter(|v| !is_nil(v))
}

/// Whether `v` is a Lua number equal to `n` (Lua has one number type: `1.0 == 1`).
pub fn number_is(v: &Value, n: f64) -> bool {
    v.as_f64() == Some(n)
}

/// Lua `ipairs(t)`: `t[1], t[2], …` up to the first nil (also how lua-protobuf reads repeated
/// fields). `None` when `t` is not a table.
pub fn ipairs(t: &Value) -> Option<Vec<&Value>> {
    if !matches!(t, Value::Array(_) | Value::Map(_)) {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 1;
    while let Some(v) = index(t, i) {
        out.push(v);
        i += 1;
    }
    Some(out)
}

/// Lua `t.name` (non-nil values only).
pub fn field<'a>(t: &'a Value, name: &str) -> Option<&'a Value> {
    match t {
        Value::Map(m) => m
            .iter()
            .rev() // a later duplicate wins, as it would in a Lua table constructor
            .find(|(k, _)| matches!(key_of(k), Some(Key::Str(b)) if b == name.as_bytes()))
            .map(|(_, v)| v)
            .filter(|v| !is_nil(v)),
        _ => None,
    }
}

/// Takes `t.name` out of a map (the entry Lua would read: the last one with that string key and
/// a non-nil value), leaving nil in its place; `None` when absent or when `t` is not a map. The
/// event drivers read answers with it without copying them.
pub fn take_field(t: &mut Value, name: &str) -> Option<Value> {
    let Value::Map(m) = t else {
        return None;
    };
    m.iter_mut()
        .rev()
        .find(|(k, v)| {
            matches!(k, Value::Str(b) | Value::Bin(b) if b == name.as_bytes()) && !is_nil(v)
        })
        .map(|(_, v)| std::mem::take(v))
}

/// Takes `t[i]` out of a table (nil when absent; a map's last entry with that integer key),
/// leaving nil in its place.
pub fn take_index(t: &mut Value, i: i64) -> Value {
    let slot = match t {
        Value::Array(a) => usize::try_from(i - 1).ok().and_then(|i| a.get_mut(i)),
        Value::Map(m) => m
            .iter_mut()
            .rev()
            .find(|(k, _)| key_of(k) == Some(Key::Int(i)))
            .map(|(_, v)| v),
        _ => None,
    };
    match slot {
        Some(v) if !is_nil(v) => std::mem::take(v),
        _ => Value::Nil,
    }
}

/// A value as Kong writes it back after reading it (the Lua round trip, docs/protocol.md §4.2): `bin`
/// becomes `str`, an extension value nil, a number an integer when integral and below 2^53 (a
/// float otherwise), and a table an array when its keys are exactly `1..n` (an empty table
/// included), else a map without its nil keys and values.
pub fn reencode(v: &Value) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let number = |f: f64| {
        if f.fract() == 0.0 && f.abs() < EXACT {
            Value::Int(f as i64)
        } else {
            Value::Float(f)
        }
    };
    match v {
        Value::Nil | Value::Ext(..) => Value::Nil,
        Value::Bool(b) => Value::Bool(*b),
        Value::Int(i) if (i.unsigned_abs() as f64) < EXACT => Value::Int(*i),
        Value::Int(i) => Value::Float(*i as f64),
        Value::UInt(u) => number(*u as f64),
        Value::Float(f) => number(*f),
        Value::Str(b) | Value::Bin(b) => Value::Str(b.clone()),
        Value::Array(_) | Value::Map(_) => {
            let entries: Vec<(Value, Value)> = match v {
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| !is_nil(x))
                    .map(|(i, x)| (Value::Int(i as i64 + 1), reencode(x)))
                    .collect(),
                Value::Map(m) => m
                    .iter()
                    .filter(|(k, x)| !is_nil(x) && key_of(k).is_some())
                    .map(|(k, x)| (reencode(k), reencode(x)))
                    .collect(),
                _ => Vec::new(),
            };
            let n = entries.len() as i64;
            let is_sequence = (1..=n).all(|i| {
                entries
                    .iter()
                    .any(|(k, _)| matches!(k, Value::Int(j) if *j == i))
            });
            if is_sequence {
                let mut out = vec![Value::Nil; entries.len()];
                for (k, x) in entries {
                    if let Value::Int(i) = k {
                        out[(i - 1) as usize] = x;
                    }
                }
                Value::Array(out)
            } else {
                Value::Map(entries)
            }
        }
    }
}

/// The positional arguments Kong passes for a callback's `Args` (docs/protocol.md §4.4): a table is
/// unpacked (`unpack(args)`: `t[1] .. t[n]`, so an array as it is, a map by its integer keys),
/// anything else is the single argument. `None` (no `Args` at all) is no argument.
///
/// An array keeps its nils (`[nil, "x"]` stays two arguments), as Lua's `unpack` does for a
/// table built by the MessagePack decoder with explicit length.
pub fn unpack_args(args: Option<&Value>) -> Vec<Value> {
    match args {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(t @ Value::Map(_)) => ipairs(t).unwrap_or_default().into_iter().cloned().collect(),
        Some(v) if is_nil(v) => Vec::new(),
        Some(other) => vec![other.clone()],
    }
}

// ------------------------------------------------------------------------------------------------
// lua-cjson
// ------------------------------------------------------------------------------------------------

/// lua-cjson escapes every `/`. In JSON text a `/` can only occur inside a string, so escaping
/// all of them is exact.
pub fn cjson_escape(json: &str) -> String {
    json.replace('/', "\\/")
}

/// `cjson.encode(v)` (tables as JSON objects or arrays, `/` escaped).
pub fn cjson_encode(v: &Value) -> String {
    cjson_escape(&v.to_json().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::str(x)
    }

    #[test]
    fn extension_values_are_nil_everywhere() {
        let ext = Value::Ext(1, vec![0]);
        assert_eq!(lua_type(&ext), "nil");
        assert_eq!(lua_tostring(&ext), "nil");
        assert!(is_nil(&ext));
        let t = Value::Map(vec![(s("a"), ext.clone()), (s("b"), Value::Int(1))]);
        assert_eq!(pairs(&t).map(|p| p.len()), Some(1));
        assert_eq!(unpack_args(Some(&ext)), Vec::<Value>::new());
    }

    #[test]
    fn numbers_print_like_luajit() {
        assert_eq!(lua_number(1.1), "1.1");
        assert_eq!(lua_number(0.1 + 0.2), "0.3");
        assert_eq!(lua_number(5.0), "5");
        assert_eq!(lua_number(1e20), "1e+20");
        assert_eq!(lua_number(1e14), "1e+14");
        assert_eq!(lua_number(99_999_999_999_999.0), "99999999999999");
    }

    #[test]
    fn args_unpack_as_kong_does() {
        let arr = Value::Array(vec![s("a"), Value::Nil, s("c")]);
        assert_eq!(unpack_args(Some(&arr)).len(), 3);
        // A bare value is the single argument.
        assert_eq!(unpack_args(Some(&s("host"))), vec![s("host")]);
        // A map is unpacked by its integer keys 1..n; other keys are not arguments.
        let map = Value::Map(vec![
            (Value::Int(2), s("b")),
            (Value::Int(1), s("a")),
            (s("x"), s("ignored")),
        ]);
        assert_eq!(unpack_args(Some(&map)), vec![s("a"), s("b")]);
        assert_eq!(
            unpack_args(Some(&Value::Map(Vec::new()))),
            Vec::<Value>::new()
        );
        assert_eq!(unpack_args(None), Vec::<Value>::new());
        assert_eq!(unpack_args(Some(&Value::Nil)), Vec::<Value>::new());
    }

    #[test]
    fn values_round_trip_through_lua() {
        assert_eq!(reencode(&Value::Bin(b"id".to_vec())), s("id"));
        assert_eq!(reencode(&Value::Float(7.0)), Value::Int(7));
        assert_eq!(reencode(&Value::Float(7.5)), Value::Float(7.5));
        assert_eq!(reencode(&Value::UInt(5)), Value::Int(5));
        assert_eq!(
            reencode(&Value::Int(1 << 60)),
            Value::Float((1u64 << 60) as f64)
        );
        assert_eq!(reencode(&Value::Ext(1, vec![])), Value::Nil);
        // Integer keys 1..n make an array; holes and other keys a map; empty is an array.
        let seq = Value::Map(vec![(Value::Int(2), s("b")), (Value::Float(1.0), s("a"))]);
        assert_eq!(reencode(&seq), Value::Array(vec![s("a"), s("b")]));
        let holes = Value::Array(vec![s("a"), Value::Nil, s("c")]);
        assert_eq!(
            reencode(&holes),
            Value::Map(vec![(Value::Int(1), s("a")), (Value::Int(3), s("c"))])
        );
        assert_eq!(reencode(&Value::Map(vec![])), Value::Array(vec![]));
        let map = Value::Map(vec![
            (s("k"), Value::Nil),
            (Value::Bin(b"j".to_vec()), Value::Int(1)),
        ]);
        assert_eq!(reencode(&map), Value::Map(vec![(s("j"), Value::Int(1))]));
    }

    #[test]
    fn take_field_reads_as_lua_does() {
        let mut t = Value::Map(vec![
            (s("Data"), s("first")),
            (Value::Bin(b"Data".to_vec()), s("last")),
            (s("Nil"), Value::Nil),
        ]);
        assert_eq!(take_field(&mut t, "Data"), Some(s("last")));
        assert_eq!(take_field(&mut t, "Nil"), None);
        assert_eq!(take_field(&mut s("x"), "Data"), None);
        assert!(number_is(&Value::Float(1.0), 1.0) && number_is(&Value::UInt(1), 1.0));
    }

    #[test]
    fn cjson_escapes_slashes() {
        assert_eq!(cjson_encode(&s("a/b")), "\"a\\/b\"");
    }

    #[test]
    fn loose_equality() {
        assert!(loose_eq(&Value::Bin(b"a".to_vec()), &s("a")));
        assert!(loose_eq(&Value::Int(2), &Value::Float(2.0)));
        assert!(loose_eq(&Value::Array(vec![]), &Value::Map(vec![])));
        assert!(!loose_eq(&s("2"), &Value::Int(2)));
    }
}
