use crate::Value;

/// The message type of a PDK method's input or output (spec §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Empty, Bool, Int, Number, String, ByteString, Kv, ExitArgs, Target, ConsumerSpec,
    AuthenticateArgs, AuthenticatedCredential, Consumer, RawBodyResult, UriCapturesResult,
    Route, Service, MemoryStats, Value, ListValue, Struct,
}

/// One row of the PDK service table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    pub name: &'static str,
    pub input: Shape,
    pub output: Shape,
}

/// A PDK message that could not be converted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PbError {
    #[error("cannot decode {shape:?} for {method}: {reason}")]
    Decode { method: String, shape: Shape, reason: String },
    #[error("cannot encode {shape:?} for {method}: {reason}")]
    Encode { method: String, shape: Shape, reason: String },
}

/// Looks a wire method name up (exact, lower-case; spec §5.3).
pub fn lookup(name: &str) -> Option<&'static MethodSpec> {
    let _ = name;
    todo!()
}

/// Every method of the table.
pub fn methods() -> &'static [MethodSpec] {
    todo!()
}

/// Host side: the args frame → Lua positional args ("unwrap", spec §5.3/§5.4).
pub fn unwrap_args(spec: &MethodSpec, bytes: &[u8]) -> Result<Vec<Value>, PbError> {
    let _ = (spec, bytes);
    todo!()
}

/// Host side: the PDK's first return value → reply frame payload ("wrap"); empty = empty frame.
pub fn wrap_result(spec: &MethodSpec, result: &Value) -> Result<Vec<u8>, PbError> {
    let _ = (spec, result);
    todo!()
}

/// Server side: positional args → the args frame payload.
pub fn encode_args(spec: &MethodSpec, args: &[Value]) -> Result<Vec<u8>, PbError> {
    let _ = (spec, args);
    todo!()
}

/// Server side: a reply frame payload → a value.
pub fn decode_result(spec: &MethodSpec, bytes: &[u8]) -> Result<Value, PbError> {
    let _ = (spec, bytes);
    todo!()
}
