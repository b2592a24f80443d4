//! Conversions between PDK protobuf messages and [`Value`], in two flavours.
//!
//! * **Lua view** (host side, what Kong's `pb_rpc.lua` does): messages decoded the way
//!   lua-protobuf 0.5.2 decodes them (`auto_default_values`: proto3 scalars get their defaults,
//!   repeated fields an empty table, absent sub-messages stay nil, enums decode to their name),
//!   `google.protobuf.Value` unwrapped with Kong's `or` chain, and Lua tables encoded with
//!   lua-protobuf's rules (repeated fields read with `ipairs`, unknown keys ignored, type
//!   mismatches raise).
//! * **Server view** (plugin-server side, what go-pdk sees): plain proto3 semantics through prost.
//!
//! A Lua table is modelled by [`Value::Array`] (keys `1..n`) or [`Value::Map`]; `nil` values in
//! a map do not exist in Lua, so they are skipped wherever Kong would iterate the table.
//! `Value::Ext` is treated as `nil`, as Kong decodes MessagePack extensions to nil.

use std::collections::BTreeMap;

use super::messages::raw_body_result::Kind as RawKind;
use super::messages::{
    AuthenticateArgs, AuthenticatedCredential, CertificateKey, Consumer, ConsumerSpec, DictStats,
    ExitArgs, Kv, ListValue, LuaSharedDicts, MemoryStats, PbKind, PbValue, RawBodyResult, Route,
    Service, ServiceKey, Struct, Target, UriCapturesResult, WorkerLuaVm,
};
use crate::lua::{field, index, ipairs, lua_type, pairs, Key};
use crate::Value;

/// Which side's semantics a conversion follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// Kong's Lua host: strings and bytes are both Lua strings (`Value::Str`).
    Lua,
    /// A protobuf plugin server: `bytes` fields are `Value::Bin`, `string` fields `Value::Str`.
    Server,
}

impl View {
    fn bytes(self, b: &[u8]) -> Value {
        match self {
            View::Lua => Value::Str(b.to_vec()),
            View::Server => Value::Bin(b.to_vec()),
        }
    }
}

fn s(b: &[u8]) -> Value {
    Value::Str(b.to_vec())
}

fn strings(v: &[Vec<u8>]) -> Value {
    Value::Array(v.iter().map(|b| s(b)).collect())
}

// ------------------------------------------------------------------------------------------------
// Lua tables
// ------------------------------------------------------------------------------------------------

// `Key`, `key_of`, `pairs`, `index`, `ipairs` and `field` live in [`crate::lua`].

// ------------------------------------------------------------------------------------------------
// Scalars with lua-protobuf's coercions
// ------------------------------------------------------------------------------------------------

/// A Lua number as an integer, the way lua-protobuf does under LuaJIT (`lua_tonumber` and a C
/// cast: fractions are truncated toward zero).
pub(crate) fn lua_integer(v: &Value, what: &str) -> Result<i64, String> {
    match *v {
        Value::Int(i) => Ok(i),
        Value::UInt(u) => i64::try_from(u)
            .map_err(|_| format!("{what}: number {u} has no integer representation")),
        Value::Float(f) if f.is_finite() && f >= i64::MIN as f64 && f < -(i64::MIN as f64) => {
            Ok(f as i64)
        }
        Value::Float(f) => Err(format!("{what}: number {f} has no integer representation")),
        ref other => Err(format!("{what}: number expected, got {}", lua_type(other))),
    }
}

/// A Lua number as `int32`: lua-protobuf truncates to 32 bits without a range check.
pub(crate) fn lua_int32(v: &Value, what: &str) -> Result<i32, String> {
    lua_integer(v, what).map(|i| i as i32)
}

pub(crate) fn to_number(v: &Value, what: &str) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("{what}: number expected, got {}", lua_type(v)))
}

pub(crate) fn lua_bytes(v: &Value, what: &str) -> Result<Vec<u8>, String> {
    v.as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("{what}: string expected, got {}", lua_type(v)))
}

/// A `string` going into a prost `String` (google.protobuf.Value/Struct).
fn utf8(b: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| {
        format!(
            "{what}: the string is not UTF-8 and google.protobuf.Value can only carry UTF-8 here \
             (Kong would send the raw bytes; pass text or use a bytes-typed PDK method)"
        )
    })
}

// ------------------------------------------------------------------------------------------------
// google.protobuf.Value / Struct / ListValue
// ------------------------------------------------------------------------------------------------

/// Kong's unwrap of a `google.protobuf.Value` (`structpb_value` in `pb_rpc.lua`):
/// `list_value` → array, `struct_value` → table, otherwise
/// `v.bool_value or v.string_value or v.number_value or v.null_value`. So `bool_value = false`
/// becomes nil, and `null_value` becomes its enum name `"NULL_VALUE"` (an unknown enum number
/// stays a number). An absent Value is nil.
pub(crate) fn lua_from_pb_value(v: Option<&PbValue>) -> Value {
    match v.and_then(|v| v.kind.as_ref()) {
        None => Value::Nil,
        Some(PbKind::ListValue(l)) => lua_from_list(l),
        Some(PbKind::StructValue(st)) => lua_from_struct(st),
        Some(PbKind::BoolValue(true)) => Value::Bool(true),
        Some(PbKind::BoolValue(false)) => Value::Nil,
        Some(PbKind::StringValue(x)) => Value::str(x.as_str()),
        Some(PbKind::NumberValue(n)) => Value::Float(*n),
        Some(PbKind::NullValue(0)) => Value::str("NULL_VALUE"),
        Some(PbKind::NullValue(n)) => Value::Int(i64::from(*n)),
    }
}

/// Kong's unwrap of a `ListValue`: the values in order. Elements that unwrap to nil leave a
/// hole; trailing holes are dropped (a Lua table cannot hold them).
pub(crate) fn lua_list_items(l: &ListValue) -> Vec<Value> {
    let mut out: Vec<Value> = l
        .values
        .iter()
        .map(|v| lua_from_pb_value(Some(v)))
        .collect();
    while out.last().is_some_and(Value::is_nil) {
        out.pop();
    }
    out
}

fn lua_from_list(l: &ListValue) -> Value {
    Value::Array(lua_list_items(l))
}

/// Kong's unwrap of a `Struct`: a table; keys whose value unwraps to nil disappear. Keys come
/// out sorted (prost's `Struct` is a `BTreeMap`; Lua's order would be hash order).
pub(crate) fn lua_from_struct(st: &Struct) -> Value {
    Value::Map(
        st.fields
            .iter()
            .map(|(k, v)| (Value::str(k.as_str()), lua_from_pb_value(Some(v))))
            .filter(|(_, v)| !v.is_nil())
            .collect(),
    )
}

/// Kong's wrap of a Lua value into a `google.protobuf.Value` (`structpb_value` in the wrap
/// direction): nil → `null_value = 1` (Kong writes 1, not `NULL_VALUE` = 0), booleans →
/// `bool_value`, numbers → `number_value`, strings → `string_value`, a table with `t[1] ~= nil`
/// → `list_value`, any other table → `struct_value`. Being oneof members, `false`, `""` and `0`
/// are still encoded (lua-protobuf only skips defaults outside oneofs).
pub(crate) fn lua_to_pb_value(v: &Value, what: &str) -> Result<PbValue, String> {
    let kind = match v {
        Value::Nil | Value::Ext(..) => PbKind::NullValue(1),
        Value::Bool(b) => PbKind::BoolValue(*b),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
            PbKind::NumberValue(v.as_f64().unwrap_or_default())
        }
        Value::Str(b) | Value::Bin(b) => PbKind::StringValue(utf8(b, what)?),
        Value::Array(_) | Value::Map(_) => {
            if index(v, 1).is_some() {
                PbKind::ListValue(lua_to_list(v, what)?)
            } else {
                PbKind::StructValue(lua_to_struct(v, what)?)
            }
        }
    };
    Ok(PbValue { kind: Some(kind) })
}

/// Kong's wrap of a Lua sequence into a `ListValue` (`ipairs`: stops at the first nil).
pub(crate) fn lua_to_list(v: &Value, what: &str) -> Result<ListValue, String> {
    let items = ipairs(v).ok_or_else(|| format!("{what}: table expected, got {}", lua_type(v)))?;
    let values = items
        .into_iter()
        .enumerate()
        .map(|(i, x)| lua_to_pb_value(x, &format!("{what}[{}]", i + 1)))
        .collect::<Result<_, _>>()?;
    Ok(ListValue { values })
}

/// Kong's wrap of a Lua table into a `Struct` (`pairs`; every value wrapped as a Value). A key
/// that is not a string makes lua-protobuf raise, and so does a non-table.
pub(crate) fn lua_to_struct(v: &Value, what: &str) -> Result<Struct, String> {
    let entries = pairs(v).ok_or_else(|| {
        format!(
            "{what}: table expected, got {} (Kong raises in `pairs`)",
            lua_type(v)
        )
    })?;
    let mut fields = BTreeMap::new();
    for (k, x) in entries {
        let key = match k {
            Key::Str(b) => utf8(b, what)?,
            Key::Int(_) => {
                return Err(format!(
                    "{what}: string expected for field 'key', got number"
                ))
            }
            Key::Other(t) => {
                return Err(format!("{what}: string expected for field 'key', got {t}"))
            }
        };
        let value = lua_to_pb_value(x, &format!("{what}.{key}"))?;
        fields.insert(key, value);
    }
    Ok(Struct { fields })
}

/// The server side's `google.protobuf.Value` from a value (like Go's `structpb.NewValue`): nil →
/// `null_value = NULL_VALUE (0)`, arrays → lists (nil elements become nulls), maps → structs
/// (string keys required, nil values become nulls).
pub(crate) fn server_to_pb_value(v: &Value, what: &str) -> Result<PbValue, String> {
    let kind = match v {
        Value::Nil | Value::Ext(..) => PbKind::NullValue(0),
        Value::Bool(b) => PbKind::BoolValue(*b),
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
            PbKind::NumberValue(v.as_f64().unwrap_or_default())
        }
        Value::Str(b) | Value::Bin(b) => PbKind::StringValue(utf8(b, what)?),
        Value::Array(a) => PbKind::ListValue(ListValue {
            values: a
                .iter()
                .enumerate()
                .map(|(i, x)| server_to_pb_value(x, &format!("{what}[{i}]")))
                .collect::<Result<_, _>>()?,
        }),
        Value::Map(_) => PbKind::StructValue(server_to_struct(v, what)?),
    };
    Ok(PbValue { kind: Some(kind) })
}

/// The server side's `Struct` from a map (nil → empty struct).
pub(crate) fn server_to_struct(v: &Value, what: &str) -> Result<Struct, String> {
    let entries: &[(Value, Value)] = match v {
        Value::Nil => &[],
        Value::Map(m) => m,
        Value::Array(a) if a.is_empty() => &[],
        other => return Err(format!("{what}: expected a map, got {}", other.type_name())),
    };
    let mut fields = BTreeMap::new();
    for (k, x) in entries {
        let key = match k {
            Value::Str(b) | Value::Bin(b) => utf8(b, what)?,
            other => {
                return Err(format!(
                    "{what}: map keys must be strings, got {}",
                    other.type_name()
                ))
            }
        };
        let value = server_to_pb_value(x, &format!("{what}.{key}"))?;
        fields.insert(key, value);
    }
    Ok(Struct { fields })
}

/// What a protobuf server sees in a `google.protobuf.Value`: no kind or any `null_value` → nil,
/// otherwise the plain value (numbers are floats, structs are maps with sorted keys).
pub(crate) fn server_from_pb_value(v: Option<&PbValue>) -> Value {
    match v.and_then(|v| v.kind.as_ref()) {
        None | Some(PbKind::NullValue(_)) => Value::Nil,
        Some(PbKind::BoolValue(b)) => Value::Bool(*b),
        Some(PbKind::NumberValue(n)) => Value::Float(*n),
        Some(PbKind::StringValue(x)) => Value::str(x.as_str()),
        Some(PbKind::ListValue(l)) => server_from_list(l),
        Some(PbKind::StructValue(st)) => server_from_struct(st),
    }
}

pub(crate) fn server_from_list(l: &ListValue) -> Value {
    Value::Array(
        l.values
            .iter()
            .map(|v| server_from_pb_value(Some(v)))
            .collect(),
    )
}

pub(crate) fn server_from_struct(st: &Struct) -> Value {
    Value::Map(
        st.fields
            .iter()
            .map(|(k, v)| (Value::str(k.as_str()), server_from_pb_value(Some(v))))
            .collect(),
    )
}

/// A `Struct` in the given view.
pub(crate) fn struct_to_value(st: &Struct, view: View) -> Value {
    match view {
        View::Lua => lua_from_struct(st),
        View::Server => server_from_struct(st),
    }
}

fn pb_value_to_value(v: Option<&PbValue>, view: View) -> Value {
    match view {
        View::Lua => lua_from_pb_value(v),
        View::Server => server_from_pb_value(v),
    }
}

// ------------------------------------------------------------------------------------------------
// Lua tables → messages (lua-protobuf `pb.encode` of a table)
// ------------------------------------------------------------------------------------------------

/// Reads a Lua table the way lua-protobuf encodes it into a message: by field name, unknown
/// keys ignored, absent/nil fields left at their default, wrong types rejected.
struct Table<'a> {
    msg: &'static str,
    t: &'a Value,
    /// Field numbers of `bool` fields explicitly set to `false` (see [`Encoded`]).
    false_bools: Vec<u32>,
}

impl<'a> Table<'a> {
    fn new(msg: &'static str, t: &'a Value, what: &str) -> Result<Self, String> {
        match t {
            Value::Array(_) | Value::Map(_) => Ok(Table {
                msg,
                t,
                false_bools: Vec::new(),
            }),
            other => Err(format!(
                "{what}: table expected for {msg}, got {}",
                lua_type(other)
            )),
        }
    }
    fn ctx(&self, name: &str) -> String {
        format!("field '{name}' of {}", self.msg)
    }
    fn get(&self, name: &str) -> Option<&'a Value> {
        field(self.t, name)
    }
    fn string(&self, name: &str) -> Result<Vec<u8>, String> {
        self.get(name)
            .map_or(Ok(Vec::new()), |v| lua_bytes(v, &self.ctx(name)))
    }
    fn int32(&self, name: &str) -> Result<i32, String> {
        self.get(name)
            .map_or(Ok(0), |v| lua_int32(v, &self.ctx(name)))
    }
    fn int64(&self, name: &str) -> Result<i64, String> {
        self.get(name)
            .map_or(Ok(0), |v| lua_integer(v, &self.ctx(name)))
    }
    /// `lua_toboolean`: any non-nil, non-false value is true.
    fn boolean(&mut self, name: &str, number: u32) -> bool {
        match self.get(name) {
            None => false,
            Some(Value::Bool(false)) => {
                self.false_bools.push(number);
                false
            }
            Some(_) => true,
        }
    }
    fn strings(&self, name: &str) -> Result<Vec<Vec<u8>>, String> {
        let Some(v) = self.get(name) else {
            return Ok(Vec::new());
        };
        let ctx = self.ctx(name);
        ipairs(v)
            .ok_or_else(|| format!("{ctx}: table expected, got {}", lua_type(v)))?
            .into_iter()
            .map(|x| lua_bytes(x, &ctx))
            .collect()
    }
    fn message<T>(
        &self,
        name: &str,
        f: impl FnOnce(&Value, &str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        self.get(name).map(|v| f(v, &self.ctx(name))).transpose()
    }
}

/// A message encoded from a Lua table, plus the `bool` fields the table set to `false`.
///
/// lua-protobuf 0.4.0 – 0.5.2 (Kong 3.3 – 3.9) skips proto3 defaults when encoding, **except
/// `false`**: an explicit `false` is written (`tag 00`); this was fixed upstream after 0.5.2.
/// prost never writes it, so the host appends those fields after the prost encoding
/// ([`Encoded::into_bytes`]); field order is unspecified in Kong's encoder anyway (docs/protocol.md §5.2).
pub(crate) struct Encoded<M> {
    pub msg: M,
    pub false_bools: Vec<u32>,
}

impl<M: prost::Message> Encoded<M> {
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        let mut out = self.msg.encode_to_vec();
        for number in self.false_bools {
            // Varint key (field << 3 | 0), then the value 0.
            let mut key = u64::from(number) << 3;
            while key >= 0x80 {
                out.push((key as u8) | 0x80);
                key >>= 7;
            }
            out.push(key as u8);
            out.push(0);
        }
        out
    }
}

pub(crate) fn credential_from_table(
    v: &Value,
    what: &str,
) -> Result<AuthenticatedCredential, String> {
    let t = Table::new("AuthenticatedCredential", v, what)?;
    Ok(AuthenticatedCredential {
        id: t.string("id")?,
        consumer_id: t.string("consumer_id")?,
    })
}

pub(crate) fn consumer_from_table(v: &Value, what: &str) -> Result<Consumer, String> {
    let t = Table::new("Consumer", v, what)?;
    Ok(Consumer {
        id: t.string("id")?,
        created_at: t.int64("created_at")?,
        username: t.string("username")?,
        custom_id: t.string("custom_id")?,
        tags: t.strings("tags")?,
    })
}

fn key_from_table(msg: &'static str, v: &Value, what: &str) -> Result<Vec<u8>, String> {
    Table::new(msg, v, what)?.string("id")
}

pub(crate) fn route_from_table(v: &Value, what: &str) -> Result<Encoded<Route>, String> {
    let mut t = Table::new("Route", v, what)?;
    let msg = Route {
        id: t.string("id")?,
        created_at: t.int64("created_at")?,
        updated_at: t.int64("updated_at")?,
        name: t.string("name")?,
        protocols: t.strings("protocols")?,
        methods: t.strings("methods")?,
        hosts: t.strings("hosts")?,
        paths: t.strings("paths")?,
        headers: t.strings("headers")?,
        https_redirect_status_code: t.int32("https_redirect_status_code")?,
        regex_priority: t.int32("regex_priority")?,
        strip_path: t.boolean("strip_path", 12),
        preserve_host: t.boolean("preserve_host", 13),
        snis: t.strings("snis")?,
        sources: t.strings("sources")?,
        destinations: t.strings("destinations")?,
        tags: t.strings("tags")?,
        service: t
            .message("service", |v, w| key_from_table("ServiceKey", v, w))?
            .map(|id| ServiceKey { id }),
    };
    Ok(Encoded {
        msg,
        false_bools: t.false_bools,
    })
}

pub(crate) fn service_from_table(v: &Value, what: &str) -> Result<Service, String> {
    let t = Table::new("Service", v, what)?;
    Ok(Service {
        id: t.string("id")?,
        created_at: t.int64("created_at")?,
        updated_at: t.int64("updated_at")?,
        name: t.string("name")?,
        retries: t.int32("retries")?,
        protocol: t.string("protocol")?,
        host: t.string("host")?,
        port: t.int32("port")?,
        path: t.string("path")?,
        connect_timeout: t.int32("connect_timeout")?,
        write_timeout: t.int32("write_timeout")?,
        read_timeout: t.int32("read_timeout")?,
        tags: t.strings("tags")?,
        client_certificate: t
            .message("client_certificate", |v, w| {
                key_from_table("CertificateKey", v, w)
            })?
            .map(|id| CertificateKey { id }),
    })
}

fn dict_stats_from_table(v: &Value, what: &str) -> Result<DictStats, String> {
    let t = Table::new("DictStats", v, what)?;
    Ok(DictStats {
        allocated_slabs: t.int64("allocated_slabs")?,
        capacity: t.int64("capacity")?,
    })
}

pub(crate) fn memory_stats_from_table(v: &Value, what: &str) -> Result<MemoryStats, String> {
    let t = Table::new("MemoryStats", v, what)?;
    let lua_shared_dicts = t.message("lua_shared_dicts", |v, w| {
        let d = Table::new("LuaSharedDicts", v, w)?;
        Ok(LuaSharedDicts {
            kong: d.message("kong", dict_stats_from_table)?,
            kong_db_cache: d.message("kong_db_cache", dict_stats_from_table)?,
        })
    })?;
    let workers_lua_vms = match t.get("workers_lua_vms") {
        None => Vec::new(),
        Some(list) => {
            let ctx = t.ctx("workers_lua_vms");
            ipairs(list)
                .ok_or_else(|| format!("{ctx}: table expected, got {}", lua_type(list)))?
                .into_iter()
                .map(|w| {
                    let w = Table::new("WorkerLuaVm", w, &ctx)?;
                    Ok(WorkerLuaVm {
                        http_allocated_gc: w.int64("http_allocated_gc")?,
                        pid: w.int64("pid")?,
                    })
                })
                .collect::<Result<_, String>>()?
        }
    };
    Ok(MemoryStats {
        lua_shared_dicts,
        workers_lua_vms,
    })
}

/// `{unnamed = {...}, named = {...}}` → `UriCapturesResult`. `unnamed` is read like any
/// lua-protobuf repeated field, `t[1], t[2], …` up to the first nil, so a regex capture table's
/// index 0 (the whole match, docs/protocol.md §4.5) is **not** sent. `named` needs string keys.
pub(crate) fn uri_captures_from_table(v: &Value, what: &str) -> Result<UriCapturesResult, String> {
    let t = Table::new("UriCapturesResult", v, what)?;
    let unnamed = t.strings("unnamed")?;
    let mut named = BTreeMap::new();
    if let Some(n) = t.get("named") {
        let ctx = t.ctx("named");
        let entries =
            pairs(n).ok_or_else(|| format!("{ctx}: table expected, got {}", lua_type(n)))?;
        for (k, x) in entries {
            let key = match k {
                Key::Str(b) => utf8(b, &ctx)?,
                Key::Int(_) => {
                    return Err(format!("{ctx}: string expected for map key, got number"))
                }
                Key::Other(t) => {
                    return Err(format!("{ctx}: string expected for map key, got {t}"))
                }
            };
            named.insert(key, lua_bytes(x, &ctx)?);
        }
    }
    Ok(UriCapturesResult { unnamed, named })
}

/// Kong's `RawBodyResult` wrap: a string → `content`; otherwise `body_filepath` if nginx
/// buffered the body to a file, else `error` (`err` or `"Can't read request body"`). Our PDK
/// hands the non-string cases over as `{body_filepath = …}` or `{error = …}`.
pub(crate) fn raw_body_from_lua(v: &Value, what: &str) -> Result<RawBodyResult, String> {
    let kind = match v {
        Value::Str(b) | Value::Bin(b) => RawKind::Content(b.clone()),
        Value::Map(_) => {
            if let Some(p) = field(v, "body_filepath") {
                RawKind::BodyFilepath(lua_bytes(p, &format!("{what}: body_filepath"))?)
            } else if let Some(e) = field(v, "error") {
                RawKind::Error(lua_bytes(e, &format!("{what}: error"))?)
            } else {
                RawKind::Error(b"Can't read request body".to_vec())
            }
        }
        _ => RawKind::Error(b"Can't read request body".to_vec()),
    };
    Ok(RawBodyResult { kind: Some(kind) })
}

/// Any message shape that Kong passes through as a table, encoded with lua-protobuf's rules.
pub(crate) fn kv_from_table(v: &Value, what: &str) -> Result<Kv, String> {
    let t = Table::new("KV", v, what)?;
    Ok(Kv {
        k: t.string("k")?,
        v: t.message("v", lua_to_pb_value)?,
    })
}

pub(crate) fn exit_args_from_table(v: &Value, what: &str) -> Result<ExitArgs, String> {
    let t = Table::new("ExitArgs", v, what)?;
    Ok(ExitArgs {
        status: t.int32("status")?,
        body: t.string("body")?,
        headers: t.message("headers", lua_to_struct)?,
    })
}

pub(crate) fn target_from_table(v: &Value, what: &str) -> Result<Target, String> {
    let t = Table::new("Target", v, what)?;
    Ok(Target {
        host: t.string("host")?,
        port: t.int32("port")?,
    })
}

pub(crate) fn consumer_spec_from_table(
    v: &Value,
    what: &str,
) -> Result<Encoded<ConsumerSpec>, String> {
    let mut t = Table::new("ConsumerSpec", v, what)?;
    let msg = ConsumerSpec {
        id: t.string("id")?,
        by_username: t.boolean("by_username", 2),
    };
    Ok(Encoded {
        msg,
        false_bools: t.false_bools,
    })
}

pub(crate) fn authenticate_args_from_table(
    v: &Value,
    what: &str,
) -> Result<AuthenticateArgs, String> {
    let t = Table::new("AuthenticateArgs", v, what)?;
    Ok(AuthenticateArgs {
        consumer: t.message("consumer", consumer_from_table)?,
        credential: t.message("credential", credential_from_table)?,
    })
}

// ------------------------------------------------------------------------------------------------
// Messages → maps (field order = proto field order; absent sub-messages are omitted)
// ------------------------------------------------------------------------------------------------

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::map(entries)
}

pub(crate) fn credential_to_map(c: &AuthenticatedCredential) -> Value {
    map(vec![("id", s(&c.id)), ("consumer_id", s(&c.consumer_id))])
}

pub(crate) fn consumer_to_map(c: &Consumer) -> Value {
    map(vec![
        ("id", s(&c.id)),
        ("created_at", Value::Int(c.created_at)),
        ("username", s(&c.username)),
        ("custom_id", s(&c.custom_id)),
        ("tags", strings(&c.tags)),
    ])
}

pub(crate) fn route_to_map(r: &Route) -> Value {
    let mut e = vec![
        ("id", s(&r.id)),
        ("created_at", Value::Int(r.created_at)),
        ("updated_at", Value::Int(r.updated_at)),
        ("name", s(&r.name)),
        ("protocols", strings(&r.protocols)),
        ("methods", strings(&r.methods)),
        ("hosts", strings(&r.hosts)),
        ("paths", strings(&r.paths)),
        ("headers", strings(&r.headers)),
        (
            "https_redirect_status_code",
            Value::Int(r.https_redirect_status_code.into()),
        ),
        ("regex_priority", Value::Int(r.regex_priority.into())),
        ("strip_path", Value::Bool(r.strip_path)),
        ("preserve_host", Value::Bool(r.preserve_host)),
        ("snis", strings(&r.snis)),
        ("sources", strings(&r.sources)),
        ("destinations", strings(&r.destinations)),
        ("tags", strings(&r.tags)),
    ];
    if let Some(k) = &r.service {
        e.push(("service", map(vec![("id", s(&k.id))])));
    }
    map(e)
}

pub(crate) fn service_to_map(x: &Service) -> Value {
    let mut e = vec![
        ("id", s(&x.id)),
        ("created_at", Value::Int(x.created_at)),
        ("updated_at", Value::Int(x.updated_at)),
        ("name", s(&x.name)),
        ("retries", Value::Int(x.retries.into())),
        ("protocol", s(&x.protocol)),
        ("host", s(&x.host)),
        ("port", Value::Int(x.port.into())),
        ("path", s(&x.path)),
        ("connect_timeout", Value::Int(x.connect_timeout.into())),
        ("write_timeout", Value::Int(x.write_timeout.into())),
        ("read_timeout", Value::Int(x.read_timeout.into())),
        ("tags", strings(&x.tags)),
    ];
    if let Some(k) = &x.client_certificate {
        e.push(("client_certificate", map(vec![("id", s(&k.id))])));
    }
    map(e)
}

fn dict_stats_to_map(d: &DictStats) -> Value {
    map(vec![
        ("allocated_slabs", Value::Int(d.allocated_slabs)),
        ("capacity", Value::Int(d.capacity)),
    ])
}

pub(crate) fn memory_stats_to_map(m: &MemoryStats) -> Value {
    let mut e = Vec::new();
    if let Some(d) = &m.lua_shared_dicts {
        let mut de = Vec::new();
        if let Some(k) = &d.kong {
            de.push(("kong", dict_stats_to_map(k)));
        }
        if let Some(k) = &d.kong_db_cache {
            de.push(("kong_db_cache", dict_stats_to_map(k)));
        }
        e.push(("lua_shared_dicts", map(de)));
    }
    e.push((
        "workers_lua_vms",
        Value::Array(
            m.workers_lua_vms
                .iter()
                .map(|w| {
                    map(vec![
                        ("http_allocated_gc", Value::Int(w.http_allocated_gc)),
                        ("pid", Value::Int(w.pid)),
                    ])
                })
                .collect(),
        ),
    ));
    map(e)
}

pub(crate) fn uri_captures_to_map(u: &UriCapturesResult, view: View) -> Value {
    map(vec![
        (
            "unnamed",
            Value::Array(u.unnamed.iter().map(|b| view.bytes(b)).collect()),
        ),
        (
            "named",
            Value::Map(
                u.named
                    .iter()
                    .map(|(k, b)| (Value::str(k.as_str()), view.bytes(b)))
                    .collect(),
            ),
        ),
    ])
}

/// `{content = …}`, `{body_filepath = …}`, `{error = …}`, or an empty map when no kind is set.
pub(crate) fn raw_body_to_map(r: &RawBodyResult, view: View) -> Value {
    match &r.kind {
        None => Value::Map(Vec::new()),
        Some(RawKind::Content(b)) => map(vec![("content", view.bytes(b))]),
        Some(RawKind::BodyFilepath(b)) => map(vec![("body_filepath", s(b))]),
        Some(RawKind::Error(b)) => map(vec![("error", s(b))]),
    }
}

pub(crate) fn kv_to_map(kv: &Kv, view: View) -> Value {
    let mut e = vec![("k", s(&kv.k))];
    if kv.v.is_some() {
        e.push(("v", pb_value_to_value(kv.v.as_ref(), view)));
    }
    map(e)
}

pub(crate) fn exit_args_to_map(x: &ExitArgs, view: View) -> Value {
    let mut e = vec![
        ("status", Value::Int(x.status.into())),
        ("body", view.bytes(&x.body)),
    ];
    if let Some(h) = &x.headers {
        e.push(("headers", struct_to_value(h, view)));
    }
    map(e)
}

pub(crate) fn target_to_map(x: &Target) -> Value {
    map(vec![
        ("host", s(&x.host)),
        ("port", Value::Int(x.port.into())),
    ])
}

pub(crate) fn consumer_spec_to_map(x: &ConsumerSpec) -> Value {
    map(vec![
        ("id", s(&x.id)),
        ("by_username", Value::Bool(x.by_username)),
    ])
}

pub(crate) fn authenticate_args_to_map(x: &AuthenticateArgs) -> Value {
    let mut e = Vec::new();
    if let Some(c) = &x.consumer {
        e.push(("consumer", consumer_to_map(c)));
    }
    if let Some(c) = &x.credential {
        e.push(("credential", credential_to_map(c)));
    }
    map(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn arr(v: Vec<Value>) -> Value {
        Value::Array(v)
    }

    #[test]
    fn lua_unwrap_quirks() {
        let f = PbValue {
            kind: Some(PbKind::BoolValue(false)),
        };
        assert_eq!(lua_from_pb_value(Some(&f)), Value::Nil);
        let t = PbValue {
            kind: Some(PbKind::BoolValue(true)),
        };
        assert_eq!(lua_from_pb_value(Some(&t)), Value::Bool(true));
        let null0 = PbValue {
            kind: Some(PbKind::NullValue(0)),
        };
        assert_eq!(lua_from_pb_value(Some(&null0)), Value::str("NULL_VALUE"));
        let null1 = PbValue {
            kind: Some(PbKind::NullValue(1)),
        };
        assert_eq!(lua_from_pb_value(Some(&null1)), Value::Int(1));
        assert_eq!(lua_from_pb_value(Some(&PbValue::default())), Value::Nil);
        assert_eq!(lua_from_pb_value(None), Value::Nil);
        let num = PbValue {
            kind: Some(PbKind::NumberValue(2.0)),
        };
        assert_eq!(lua_from_pb_value(Some(&num)), Value::Float(2.0));
    }

    #[test]
    fn lua_struct_drops_nil_values_and_sorts_keys() {
        let st = Struct {
            fields: [
                (
                    "b".to_string(),
                    PbValue {
                        kind: Some(PbKind::StringValue("x".into())),
                    },
                ),
                (
                    "a".to_string(),
                    PbValue {
                        kind: Some(PbKind::BoolValue(false)),
                    },
                ),
                (
                    "0".to_string(),
                    PbValue {
                        kind: Some(PbKind::NumberValue(1.5)),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            lua_from_struct(&st),
            Value::map([("0", Value::Float(1.5)), ("b", Value::str("x"))])
        );
    }

    #[test]
    fn lua_list_keeps_inner_holes_and_trims_trailing() {
        let v = |k| PbValue { kind: Some(k) };
        let l = ListValue {
            values: vec![
                v(PbKind::StringValue("a".into())),
                v(PbKind::BoolValue(false)),
                v(PbKind::StringValue("b".into())),
                v(PbKind::BoolValue(false)),
                PbValue::default(),
            ],
        };
        assert_eq!(
            lua_list_items(&l),
            vec![Value::str("a"), Value::Nil, Value::str("b")]
        );
    }

    #[test]
    fn lua_wrap_of_tables() {
        // t[1] ~= nil → list; ipairs stops at the first nil.
        let v = arr(vec![Value::str("a"), Value::Nil, Value::str("c")]);
        let pb = lua_to_pb_value(&v, "x").unwrap();
        assert_eq!(
            pb.kind,
            Some(PbKind::ListValue(ListValue {
                values: vec![PbValue {
                    kind: Some(PbKind::StringValue("a".into()))
                }]
            }))
        );
        // Empty table → empty struct.
        let pb = lua_to_pb_value(&arr(vec![]), "x").unwrap();
        assert_eq!(pb.kind, Some(PbKind::StructValue(Struct::default())));
        assert_eq!(pb.encode_to_vec(), [0x2A, 0x00]);
        // Map with integer key 1 is a sequence too.
        let m = Value::Map(vec![(Value::Int(1), Value::str("x"))]);
        assert!(matches!(
            lua_to_pb_value(&m, "x").unwrap().kind,
            Some(PbKind::ListValue(_))
        ));
        // Non-string struct keys make lua-protobuf raise.
        let bad = Value::Map(vec![(Value::Int(2), Value::str("x"))]);
        let err = lua_to_pb_value(&bad, "x").unwrap_err();
        assert!(err.contains("string expected"), "{err}");
        // Nil values vanish from structs.
        let m = Value::map([("a", Value::Nil), ("b", Value::Int(1))]);
        let st = lua_to_struct(&m, "x").unwrap();
        assert_eq!(st.fields.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn lua_integer_coercions() {
        assert_eq!(lua_int32(&Value::Float(3.9), "x"), Ok(3));
        assert_eq!(lua_int32(&Value::Float(-3.9), "x"), Ok(-3));
        assert_eq!(lua_int32(&Value::Int(1 << 32 | 5), "x"), Ok(5));
        assert!(lua_integer(&Value::Float(f64::NAN), "x").is_err());
        assert!(lua_integer(&Value::Float(1e300), "x").is_err());
        assert!(lua_integer(&Value::str("1"), "x")
            .unwrap_err()
            .contains("got string"));
        assert!(lua_integer(&Value::UInt(u64::MAX), "x").is_err());
    }

    #[test]
    fn false_bools_are_appended() {
        let route = Value::map([
            ("strip_path", Value::Bool(false)),
            ("preserve_host", Value::Bool(true)),
        ]);
        let enc = route_from_table(&route, "r").unwrap();
        assert_eq!(enc.into_bytes(), [0x68, 0x01, 0x60, 0x00]);
        let route = Value::map([("strip_path", Value::Int(0))]); // lua_toboolean(0) is true
        assert_eq!(
            route_from_table(&route, "r").unwrap().into_bytes(),
            [0x60, 0x01]
        );
        // Big field numbers get multi-byte keys.
        let e = Encoded {
            msg: crate::protobuf::messages::Empty {},
            false_bools: vec![18],
        };
        assert_eq!(e.into_bytes(), [0x90, 0x01, 0x00]);
    }

    #[test]
    fn table_type_errors() {
        let err = consumer_from_table(&Value::Bool(true), "result").unwrap_err();
        assert!(
            err.contains("table expected for Consumer, got boolean"),
            "{err}"
        );
        let err =
            consumer_from_table(&Value::map([("created_at", Value::str("x"))]), "r").unwrap_err();
        assert!(
            err.contains("field 'created_at' of Consumer: number expected, got string"),
            "{err}"
        );
        let err = consumer_from_table(&Value::map([("tags", Value::str("x"))]), "r").unwrap_err();
        assert!(err.contains("table expected"), "{err}");
        // Unknown keys are ignored, like lua-protobuf does.
        let c = consumer_from_table(&Value::map([("nope", Value::Int(1))]), "r").unwrap();
        assert_eq!(c, Consumer::default());
    }

    #[test]
    fn uri_captures_skip_index_zero() {
        let t = Value::map([
            (
                "unnamed",
                Value::Map(vec![
                    (Value::Int(2), Value::str("b")),
                    (Value::Int(0), Value::str("whole")),
                    (Value::Int(1), Value::str("a")),
                ]),
            ),
            (
                "named",
                Value::map([("z", Value::str("1")), ("a", Value::str("2"))]),
            ),
        ]);
        let u = uri_captures_from_table(&t, "r").unwrap();
        assert_eq!(u.unnamed, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(u.named.keys().collect::<Vec<_>>(), ["a", "z"]);
        // An empty `named` that arrives as an empty array is an empty table.
        let t = Value::map([("unnamed", arr(vec![])), ("named", arr(vec![]))]);
        assert_eq!(
            uri_captures_from_table(&t, "r").unwrap(),
            UriCapturesResult::default()
        );
    }

    #[test]
    fn server_values() {
        let v = Value::map([("a", arr(vec![Value::Nil, Value::Int(1)]))]);
        let pb = server_to_pb_value(&v, "x").unwrap();
        assert_eq!(
            server_from_pb_value(Some(&pb)),
            Value::map([("a", arr(vec![Value::Nil, Value::Float(1.0)]))])
        );
        assert_eq!(
            server_to_pb_value(&Value::Nil, "x")
                .unwrap()
                .encode_to_vec(),
            [0x08, 0x00]
        );
        assert!(server_to_pb_value(&Value::Str(vec![0xFF]), "x")
            .unwrap_err()
            .contains("UTF-8"));
        let null1 = PbValue {
            kind: Some(PbKind::NullValue(1)),
        };
        assert_eq!(server_from_pb_value(Some(&null1)), Value::Nil);
    }
}
