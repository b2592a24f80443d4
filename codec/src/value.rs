//! The dynamic value that crosses the plugin-server boundary.
//!
//! Kong's host side is Lua: every PDK argument and result is a Lua value. [`Value`] models what
//! can appear on the wire in either protocol, close to MessagePack's data model, while keeping the
//! distinctions a conformance tool needs to see (a `str` is not a `bin`, `2.0` sent as a float is
//! not `2` sent as an integer). Both codecs and the emulated PDK speak `Value`.
//!
//! Lua semantics that matter on the wire (docs/protocol.md §4.2) are applied by the *encoders*, not here:
//! a `nil` value inside a map makes its key disappear, an integral float is sent as an integer.

use std::fmt;

/// One wire value.
#[derive(Clone, PartialEq, Default)]
pub enum Value {
    /// `nil` (MessagePack `C0`, protobuf "absent" / `null_value`).
    #[default]
    Nil,
    Bool(bool),
    /// Any integer that fits an `i64`.
    Int(i64),
    /// Integers above `i64::MAX` only (MessagePack `uint64`).
    UInt(u64),
    Float(f64),
    /// A MessagePack `str`: bytes that are usually, but not necessarily, UTF-8 (Kong sends
    /// non-UTF-8 bytes as `str` too, docs/protocol.md §4.2).
    Str(Vec<u8>),
    /// A MessagePack `bin` (raw bodies, docs/protocol.md §4.2).
    Bin(Vec<u8>),
    Array(Vec<Value>),
    /// A map in wire order. Keys are usually strings.
    Map(Vec<(Value, Value)>),
    /// A MessagePack extension value (Kong decodes these to nil).
    Ext(i8, Vec<u8>),
}

impl Value {
    /// A `str` value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into().into_bytes())
    }

    /// A map with string keys.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::str(k), v))
                .collect(),
        )
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// The text of a `str` (or `bin`) value if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(b) | Value::Bin(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a `str` or `bin` value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(b) | Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// An integer value, also accepting integral floats (Lua has one number type).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(f as i64),
            _ => None,
        }
    }

    /// Any number as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Looks up a string key in a map value. `None` when absent or when `self` is not a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_bytes() == Some(key.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Lua truthiness: everything but `nil` and `false` is true.
    pub fn is_truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// A short name of the value's type, for error messages ("expected a map, got str").
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bin(_) => "bin",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Ext(..) => "ext",
        }
    }

    /// Converts to JSON for reports and transcripts. `bin` becomes a string when it is UTF-8 and
    /// `{"$bin": "<hex>"}` otherwise; non-string map keys are rendered as text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Nil => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(b) => J::String(String::from_utf8_lossy(b).into_owned()),
            Value::Bin(b) => match std::str::from_utf8(b) {
                Ok(s) => J::String(s.to_owned()),
                Err(_) => serde_json::json!({ "$bin": hex(b) }),
            },
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(
                m.iter()
                    .map(|(k, v)| {
                        let key = match k.as_str() {
                            Some(s) => s.to_owned(),
                            None => format!("{k:?}"),
                        };
                        (key, v.to_json())
                    })
                    .collect(),
            ),
            Value::Ext(t, d) => serde_json::json!({ "$ext": t, "data": hex(d) }),
        }
    }

    /// Converts from JSON: numbers without a fraction become `Int`, objects become maps with
    /// `str` keys (in document order), `null` becomes `Nil`.
    pub fn from_json(json: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match json {
            J::Null => Value::Nil,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Value::str(s.as_str()),
            J::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            J::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (Value::str(k.as_str()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for Value {
    /// A compact, Lua/JSON-like rendering: `{"EventId": 0, "Data": "ret"}`, `bin"\xff"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("nil"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::Bin(b) => write!(f, "bin{:?}", String::from_utf8_lossy(b)),
            Value::Array(a) => f.debug_list().entries(a).finish(),
            Value::Map(m) => f
                .debug_map()
                .entries(m.iter().map(|(k, v)| (k, v)))
                .finish(),
            Value::Ext(t, d) => write!(f, "ext({t}, {} bytes)", d.len()),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::str(s)
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s.into_bytes())
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Float(x)
    }
}
impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Value {
        Value::Array(a)
    }
}
