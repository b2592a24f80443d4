//! Prost message types (spec §5.2, §5.4). Filled in by the protobuf work.
// TEMPORARY placeholders so the host compiles until the real types land.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcCall { #[prost(int64, tag = "1")] pub sequence: i64, #[prost(oneof = "rpc_call::Call", tags = "33, 35, 36")] pub call: Option<rpc_call::Call> }
pub mod rpc_call { #[derive(Clone, PartialEq, prost::Oneof)] pub enum Call { #[prost(message, tag = "33")] CmdStartInstance(super::CmdStartInstance), #[prost(message, tag = "35")] CmdCloseInstance(super::CmdCloseInstance), #[prost(message, tag = "36")] CmdHandleEvent(super::CmdHandleEvent) } }
#[derive(Clone, PartialEq, prost::Message)]
pub struct CmdStartInstance { #[prost(string, tag = "1")] pub name: String, #[prost(bytes = "vec", tag = "2")] pub config: Vec<u8> }
#[derive(Clone, PartialEq, prost::Message)]
pub struct CmdCloseInstance { #[prost(int32, tag = "1")] pub instance_id: i32 }
#[derive(Clone, PartialEq, prost::Message)]
pub struct CmdHandleEvent { #[prost(int32, tag = "1")] pub instance_id: i32, #[prost(string, tag = "2")] pub event_name: String }
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcReturn { #[prost(int64, tag = "1")] pub sequence: i64, #[prost(oneof = "rpc_return::Return", tags = "33")] pub r#return: Option<rpc_return::Return> }
pub mod rpc_return { #[derive(Clone, PartialEq, prost::Oneof)] pub enum Return { #[prost(message, tag = "33")] InstanceStatus(super::InstanceStatus) } }
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstanceStatus { #[prost(string, tag = "1")] pub name: String, #[prost(int32, tag = "2")] pub instance_id: i32, #[prost(int64, tag = "4")] pub started_at: i64 }
