//! Prost message types for `ProtoBuf:1`, written by hand from the field tables of docs/protocol.md §5.2
//! (the `RpcCall`/`RpcReturn` envelope) and docs/protocol.md §5.4 (the PDK messages).
//!
//! There is no build script and no `.proto` file: every type derives [`prost::Message`] with
//! explicit field numbers. `google.protobuf.Value`, `Struct` and `ListValue` come from
//! [`prost_types`] (re-exported here as [`PbValue`], [`Struct`], [`ListValue`]).
//!
//! # One deliberate deviation: PDK `string` fields are `Vec<u8>`
//!
//! In the PDK messages every proto3 `string` field is declared with prost's `bytes` type. The
//! two are the same on the wire (wire type LEN, no length or content difference), but prost
//! refuses to decode a `string` field that is not UTF-8, while Kong's lua-protobuf neither checks
//! nor requires UTF-8 in either direction: a header value with raw Latin-1 bytes travels as-is in
//! `String.v`. Declaring the field as bytes lets this crate reproduce and observe exactly that.
//! The envelope messages (`RpcCall`, `RpcReturn` and their payloads) keep `String`: their strings
//! are plugin names, phase names and schema JSON. Map keys (`UriCapturesResult.named`,
//! `StringMap.m`) stay `String` because prost does not allow `bytes` map keys.
//!
//! `PdkArg`, `PdkCall` and `PdkReturn` exist in Kong's proto but are never used by Kong (spec
//! §5.4), so they are not defined here.

use std::collections::BTreeMap;

pub use prost_types::{value::Kind as PbKind, ListValue, Struct, Value as PbValue};

// ------------------------------------------------------------------------------------------------
// Envelope (docs/protocol.md §5.2)
// ------------------------------------------------------------------------------------------------

/// A top-level call from the host: `RpcCall { int64 sequence = 1; oneof call { 31..36 } }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcCall {
    /// Kong starts at 2 and the server must echo it (docs/protocol.md §5.2).
    #[prost(int64, tag = "1")]
    pub sequence: i64,
    #[prost(oneof = "rpc_call::Call", tags = "31, 32, 33, 34, 35, 36")]
    pub call: Option<rpc_call::Call>,
}

/// The `call` oneof of [`RpcCall`].
pub mod rpc_call {
    /// Which command an [`RpcCall`](super::RpcCall) carries. Kong only ever sends
    /// `CmdStartInstance`, `CmdCloseInstance` and `CmdHandleEvent` (docs/protocol.md §5.2).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Call {
        /// Never sent by Kong.
        #[prost(message, tag = "31")]
        CmdGetPluginNames(super::CmdGetPluginNames),
        /// Never sent by Kong.
        #[prost(message, tag = "32")]
        CmdGetPluginInfo(super::CmdGetPluginInfo),
        #[prost(message, tag = "33")]
        CmdStartInstance(super::CmdStartInstance),
        /// Never sent by Kong.
        #[prost(message, tag = "34")]
        CmdGetInstanceStatus(super::CmdGetInstanceStatus),
        #[prost(message, tag = "35")]
        CmdCloseInstance(super::CmdCloseInstance),
        #[prost(message, tag = "36")]
        CmdHandleEvent(super::CmdHandleEvent),
    }
}

/// `CmdGetPluginNames {}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CmdGetPluginNames {}

/// `CmdGetPluginInfo { string name = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CmdGetPluginInfo {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `CmdStartInstance { string name = 1; bytes config = 2; }`; `config` is the plugin
/// configuration as JSON text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CmdStartInstance {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub config: Vec<u8>,
}

/// `CmdGetInstanceStatus { int32 instance_id = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CmdGetInstanceStatus {
    #[prost(int32, tag = "1")]
    pub instance_id: i32,
}

/// `CmdCloseInstance { int32 instance_id = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CmdCloseInstance {
    #[prost(int32, tag = "1")]
    pub instance_id: i32,
}

/// `CmdHandleEvent { int32 instance_id = 1; string event_name = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CmdHandleEvent {
    #[prost(int32, tag = "1")]
    pub instance_id: i32,
    #[prost(string, tag = "2")]
    pub event_name: String,
}

/// A server's reply: `RpcReturn { int64 sequence = 1; oneof return { 31..33 } }`. There is no
/// error field: servers signal errors by closing the connection (docs/protocol.md §5.2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcReturn {
    #[prost(int64, tag = "1")]
    pub sequence: i64,
    #[prost(oneof = "rpc_return::Return", tags = "31, 32, 33")]
    pub r#return: Option<rpc_return::Return>,
}

/// The `return` oneof of [`RpcReturn`].
pub mod rpc_return {
    /// What an [`RpcReturn`](super::RpcReturn) carries. A StartInstance reply must carry
    /// `InstanceStatus` (docs/protocol.md §5.2).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Return {
        #[prost(message, tag = "31")]
        PluginNames(super::PluginNames),
        #[prost(message, tag = "32")]
        PluginInfo(super::PluginInfo),
        #[prost(message, tag = "33")]
        InstanceStatus(super::InstanceStatus),
    }
}

/// `InstanceStatus { string name = 1; int32 instance_id = 2; google.protobuf.Value config = 3;
/// int64 started_at = 4; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstanceStatus {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    pub instance_id: i32,
    #[prost(message, optional, tag = "3")]
    pub config: Option<PbValue>,
    #[prost(int64, tag = "4")]
    pub started_at: i64,
}

/// `PluginInfo { string name=1; int64 updated_at=2; int64 loaded_at=3; repeated string phases=4;
/// string version=5; int32 priority=6; string schema=7; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "2")]
    pub updated_at: i64,
    #[prost(int64, tag = "3")]
    pub loaded_at: i64,
    #[prost(string, repeated, tag = "4")]
    pub phases: Vec<String>,
    #[prost(string, tag = "5")]
    pub version: String,
    #[prost(int32, tag = "6")]
    pub priority: i32,
    #[prost(string, tag = "7")]
    pub schema: String,
}

/// `PluginNames { repeated string names = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginNames {
    #[prost(string, repeated, tag = "1")]
    pub names: Vec<String>,
}

// ------------------------------------------------------------------------------------------------
// PDK messages (docs/protocol.md §5.4). `string` fields are `Vec<u8>`, see the module docs.
// ------------------------------------------------------------------------------------------------

/// `google.protobuf.Empty`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// `Bool { bool v = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bool {
    #[prost(bool, tag = "1")]
    pub v: bool,
}

/// `Int { int32 v = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Int {
    #[prost(int32, tag = "1")]
    pub v: i32,
}

/// `Number { double v = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Number {
    #[prost(double, tag = "1")]
    pub v: f64,
}

/// `String { string v = 1; }` (named `PbString` to keep `String` unambiguous).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbString {
    #[prost(bytes = "vec", tag = "1")]
    pub v: Vec<u8>,
}

/// `ByteString { bytes v = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ByteString {
    #[prost(bytes = "vec", tag = "1")]
    pub v: Vec<u8>,
}

/// `KV { string k = 1; google.protobuf.Value v = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Kv {
    #[prost(bytes = "vec", tag = "1")]
    pub k: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub v: Option<PbValue>,
}

/// `ExitArgs { int32 status = 1; bytes body = 2; google.protobuf.Struct headers = 3; }`
/// (`body` is `bytes` since Kong 3.1, docs/protocol.md §9).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExitArgs {
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(bytes = "vec", tag = "2")]
    pub body: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    pub headers: Option<Struct>,
}

/// `Target { string host = 1; int32 port = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Target {
    #[prost(bytes = "vec", tag = "1")]
    pub host: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub port: i32,
}

/// `ConsumerSpec { string id = 1; bool by_username = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConsumerSpec {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(bool, tag = "2")]
    pub by_username: bool,
}

/// `AuthenticatedCredential { string id = 1; string consumer_id = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthenticatedCredential {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub consumer_id: Vec<u8>,
}

/// `Consumer { string id=1; int64 created_at=2; string username=3; string custom_id=4;
/// repeated string tags=5; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Consumer {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub created_at: i64,
    #[prost(bytes = "vec", tag = "3")]
    pub username: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub custom_id: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub tags: Vec<Vec<u8>>,
}

/// `AuthenticateArgs { Consumer consumer = 1; AuthenticatedCredential credential = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthenticateArgs {
    #[prost(message, optional, tag = "1")]
    pub consumer: Option<Consumer>,
    #[prost(message, optional, tag = "2")]
    pub credential: Option<AuthenticatedCredential>,
}

/// `RawBodyResult { oneof kind { bytes content = 1; string body_filepath = 2; string error = 3; } }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawBodyResult {
    #[prost(oneof = "raw_body_result::Kind", tags = "1, 2, 3")]
    pub kind: Option<raw_body_result::Kind>,
}

/// The `kind` oneof of [`RawBodyResult`].
pub mod raw_body_result {
    /// The body itself, the file nginx buffered it to, or why it could not be read.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(bytes = "vec", tag = "1")]
        Content(Vec<u8>),
        #[prost(bytes = "vec", tag = "2")]
        BodyFilepath(Vec<u8>),
        #[prost(bytes = "vec", tag = "3")]
        Error(Vec<u8>),
    }
}

/// `UriCapturesResult { repeated bytes unnamed = 1; map<string, bytes> named = 2; }`. `named` is
/// a `BTreeMap`, so it encodes in key order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UriCapturesResult {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub unnamed: Vec<Vec<u8>>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    pub named: BTreeMap<String, Vec<u8>>,
}

/// `ServiceKey { string id = 1; }` (the `service` of a [`Route`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceKey {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
}

/// `CertificateKey { string id = 1; }` (the `client_certificate` of a [`Service`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CertificateKey {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
}

/// `Route` (docs/protocol.md §5.4: fields 1 – 18).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Route {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub created_at: i64,
    #[prost(int64, tag = "3")]
    pub updated_at: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub name: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub protocols: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub methods: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub hosts: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub paths: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub headers: Vec<Vec<u8>>,
    #[prost(int32, tag = "10")]
    pub https_redirect_status_code: i32,
    #[prost(int32, tag = "11")]
    pub regex_priority: i32,
    #[prost(bool, tag = "12")]
    pub strip_path: bool,
    #[prost(bool, tag = "13")]
    pub preserve_host: bool,
    #[prost(bytes = "vec", repeated, tag = "14")]
    pub snis: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "15")]
    pub sources: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "16")]
    pub destinations: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "17")]
    pub tags: Vec<Vec<u8>>,
    #[prost(message, optional, tag = "18")]
    pub service: Option<ServiceKey>,
}

/// `Service` (docs/protocol.md §5.4: fields 1 – 14).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Service {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub created_at: i64,
    #[prost(int64, tag = "3")]
    pub updated_at: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub name: Vec<u8>,
    #[prost(int32, tag = "5")]
    pub retries: i32,
    #[prost(bytes = "vec", tag = "6")]
    pub protocol: Vec<u8>,
    #[prost(bytes = "vec", tag = "7")]
    pub host: Vec<u8>,
    #[prost(int32, tag = "8")]
    pub port: i32,
    #[prost(bytes = "vec", tag = "9")]
    pub path: Vec<u8>,
    #[prost(int32, tag = "10")]
    pub connect_timeout: i32,
    #[prost(int32, tag = "11")]
    pub write_timeout: i32,
    #[prost(int32, tag = "12")]
    pub read_timeout: i32,
    #[prost(bytes = "vec", repeated, tag = "13")]
    pub tags: Vec<Vec<u8>>,
    #[prost(message, optional, tag = "14")]
    pub client_certificate: Option<CertificateKey>,
}

/// `MemoryStats.LuaSharedDicts.DictStats { int64 allocated_slabs = 1; int64 capacity = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DictStats {
    #[prost(int64, tag = "1")]
    pub allocated_slabs: i64,
    #[prost(int64, tag = "2")]
    pub capacity: i64,
}

/// `MemoryStats.LuaSharedDicts { DictStats kong = 1; DictStats kong_db_cache = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LuaSharedDicts {
    #[prost(message, optional, tag = "1")]
    pub kong: Option<DictStats>,
    #[prost(message, optional, tag = "2")]
    pub kong_db_cache: Option<DictStats>,
}

/// `MemoryStats.WorkerLuaVm { int64 http_allocated_gc = 1; int64 pid = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkerLuaVm {
    #[prost(int64, tag = "1")]
    pub http_allocated_gc: i64,
    #[prost(int64, tag = "2")]
    pub pid: i64,
}

/// `MemoryStats { LuaSharedDicts lua_shared_dicts = 1; repeated WorkerLuaVm workers_lua_vms = 2; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryStats {
    #[prost(message, optional, tag = "1")]
    pub lua_shared_dicts: Option<LuaSharedDicts>,
    #[prost(message, repeated, tag = "2")]
    pub workers_lua_vms: Vec<WorkerLuaVm>,
}

/// `StringMap { map<string, string> m = 1; }` (defined by Kong's proto, used by no method).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringMap {
    #[prost(btree_map = "string, string", tag = "1")]
    pub m: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn oneof_tags_encode_as_two_byte_keys() {
        // docs/protocol.md §5.2: f33 LEN = 8A 02, f35 LEN = 9A 02, f36 LEN = A2 02.
        let start = RpcCall {
            sequence: 0,
            call: Some(rpc_call::Call::CmdStartInstance(CmdStartInstance::default())),
        };
        assert_eq!(start.encode_to_vec(), [0x8A, 0x02, 0x00]);
        let close = RpcCall {
            sequence: 0,
            call: Some(rpc_call::Call::CmdCloseInstance(CmdCloseInstance::default())),
        };
        assert_eq!(close.encode_to_vec(), [0x9A, 0x02, 0x00]);
        let event = RpcCall {
            sequence: 0,
            call: Some(rpc_call::Call::CmdHandleEvent(CmdHandleEvent::default())),
        };
        assert_eq!(event.encode_to_vec(), [0xA2, 0x02, 0x00]);
        let info = RpcCall {
            sequence: 1,
            call: Some(rpc_call::Call::CmdGetPluginInfo(CmdGetPluginInfo {
                name: "x".into(),
            })),
        };
        assert_eq!(
            info.encode_to_vec(),
            [0x08, 0x01, 0x82, 0x02, 0x03, 0x0A, 0x01, b'x']
        );
    }

    #[test]
    fn rpc_return_tags() {
        let names = RpcReturn {
            sequence: 2,
            r#return: Some(rpc_return::Return::PluginNames(PluginNames {
                names: vec!["a".into()],
            })),
        };
        assert_eq!(
            names.encode_to_vec(),
            [0x08, 0x02, 0xFA, 0x01, 0x03, 0x0A, 0x01, b'a']
        );
        let info = RpcReturn {
            sequence: 0,
            r#return: Some(rpc_return::Return::PluginInfo(PluginInfo {
                priority: 1,
                ..Default::default()
            })),
        };
        assert_eq!(info.encode_to_vec(), [0x82, 0x02, 0x02, 0x30, 0x01]);
    }

    #[test]
    fn route_and_service_field_numbers() {
        let route = Route {
            https_redirect_status_code: 426,
            tags: vec![b"t".to_vec()],
            service: Some(ServiceKey { id: b"s".to_vec() }),
            ..Default::default()
        };
        // f10 varint (0x50), f17 LEN (0x8A 0x01), f18 LEN (0x92 0x01)
        assert_eq!(
            route.encode_to_vec(),
            [0x50, 0xAA, 0x03, 0x8A, 0x01, 0x01, b't', 0x92, 0x01, 0x03, 0x0A, 0x01, b's']
        );
        let service = Service {
            read_timeout: 1,
            client_certificate: Some(CertificateKey { id: b"c".to_vec() }),
            ..Default::default()
        };
        assert_eq!(
            service.encode_to_vec(),
            [0x60, 0x01, 0x72, 0x03, 0x0A, 0x01, b'c']
        );
    }

    #[test]
    fn pdk_string_fields_carry_non_utf8() {
        let s = PbString {
            v: vec![0xFF, 0xFE],
        };
        let bytes = s.encode_to_vec();
        assert_eq!(bytes, [0x0A, 0x02, 0xFF, 0xFE]);
        assert_eq!(PbString::decode(bytes.as_slice()).ok(), Some(s));
    }

    #[test]
    fn memory_stats_nesting() {
        let m = MemoryStats {
            lua_shared_dicts: Some(LuaSharedDicts {
                kong: Some(DictStats {
                    allocated_slabs: 1,
                    capacity: 2,
                }),
                kong_db_cache: None,
            }),
            workers_lua_vms: vec![WorkerLuaVm {
                http_allocated_gc: 3,
                pid: 4,
            }],
        };
        assert_eq!(
            m.encode_to_vec(),
            [0x0A, 0x06, 0x0A, 0x04, 0x08, 0x01, 0x10, 0x02, 0x12, 0x04, 0x08, 0x03, 0x10, 0x04]
        );
    }
}
