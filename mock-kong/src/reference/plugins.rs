//! The reference plugins, written as explicit state machines.
//!
//! A plugin never owns a task or a thread. Starting an instance parses its config once
//! ([`Plugin::start`]); each event (one phase of one request, docs/protocol.md §4.4 / §5.3) is a small
//! [`Event`] object. The server drives it: the first [`Event::step`] gets `None`, every later one
//! gets the PDK's reply to the previous [`Action::Call`]. The same machines serve both protocols,
//! so the two servers differ only in how they put an [`Action`] on the wire.
//!
//! The four plugins (same names and behaviour in every language of this project):
//!
//! | plugin | phases | PDK calls |
//! |---|---|---|
//! | `hello` | access | `kong.request.get_header("host")`, `kong.response.set_header("x-hello", "<message> <host>")` |
//! | `bench` | access | `calls - 1` calls of `method`, then `kong.response.set_header("x-bench-calls", "<calls>")` |
//! | `exit` | access | `kong.response.exit(status, message, {"x-exit": "1"})` (terminal) |
//! | `multiphase` | access, response, log | see [`Multiphase`] |
//! | `faults` | access | `mode` `raise-before` / `raise-after` raise ([`Action::Raise`]); otherwise one `get_header("host")` |

use std::sync::Arc;

use serde_json::{json, Value as Json};

use crate::{Protocol, Value};

/// The PDK method name of a callback. Static for fixed plugins, shared for configured ones
/// (`bench`'s `method`), so producing an [`Action`] never copies a method name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Method {
    /// The dotted PDK name, e.g. `kong.request.get_header`.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Static(s) => s,
            Method::Shared(s) => s,
        }
    }
}

/// The positional arguments of a callback: built per call, or shared when they never change
/// (a repeated call of `bench` costs a reference count, not an allocation).
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    Owned(Vec<Value>),
    Shared(Arc<[Value]>),
}

impl std::ops::Deref for Args {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        match self {
            Args::Owned(v) => v,
            Args::Shared(v) => v,
        }
    }
}

/// What a plugin does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Call a PDK method and wait for its first return value.
    Call { method: Method, args: Args },
    /// Call a terminal PDK method (`kong.response.exit`): Kong never answers it (docs/protocol.md §4.4,
    /// §5.3), so the event ends here and the server forgets it.
    Exit { method: Method, args: Args },
    /// The handler returned.
    Done,
    /// The handler raised an exception (the `faults` plugin): the server reports the event as
    /// failed, never as finished (MsgPack: an error response; ProtoBuf: the connection is closed).
    Raise(String),
}

impl Action {
    fn call(method: &'static str, args: Vec<Value>) -> Action {
        Action::Call {
            method: Method::Static(method),
            args: Args::Owned(args),
        }
    }
}

/// One running event (one phase of one request) of one instance.
pub trait Event: Send {
    /// Advances the handler. `reply` is `None` on the first step and the PDK's first return
    /// value (possibly [`Value::Nil`]) on every later one.
    fn step(&mut self, reply: Option<Value>) -> Action;
}

/// A started plugin instance: a parsed config.
pub trait Instance: Send + Sync {
    /// A new event for `phase`, or `None` when the plugin has no handler for it.
    fn event(&self, phase: &str) -> Option<Box<dyn Event>>;
}

/// A plugin the reference server hosts.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin name (the key Kong registers it under).
    fn name(&self) -> &'static str;
    /// The phases it handles, as the dump lists them (docs/protocol.md §6).
    fn phases(&self) -> &'static [&'static str];
    /// The dump's `Version`.
    fn version(&self) -> &'static str {
        "0.1.0"
    }
    /// The dump's `Priority`.
    fn priority(&self) -> i64 {
        100
    }
    /// The `fields` of the config record: `[{"<name>": {"type": ..., "default": ...}}, ...]`.
    fn config_fields(&self) -> Json;
    /// Parses a config (the JSON object Kong sends in StartInstance, docs/protocol.md §4.3) into an instance.
    /// Unknown keys (Kong's `__seq__`, `route_id`, ...) are ignored; a missing or `null` field
    /// takes its default.
    fn start(&self, config: &Json) -> Result<Box<dyn Instance>, String>;

    /// The dump's `Schema`: Kong's envelope around [`Plugin::config_fields`] (docs/protocol.md §2).
    fn schema_json(&self) -> Json {
        json!({
            "name": self.name(),
            "fields": [{"config": {"type": "record", "fields": self.config_fields()}}],
        })
    }

    /// The whole dump entry. Key order follows the official server of each protocol: Python
    /// (`Name, Phases, Priority, Version, Schema`) for MsgPack, go-pdk (`Name, Phases, Version,
    /// Priority, Schema`) for ProtoBuf.
    fn info_json(&self, protocol: Protocol) -> Json {
        let mut m = serde_json::Map::new();
        m.insert("Name".into(), json!(self.name()));
        m.insert("Phases".into(), json!(self.phases()));
        match protocol {
            Protocol::MsgPack => {
                m.insert("Priority".into(), json!(self.priority()));
                m.insert("Version".into(), json!(self.version()));
            }
            Protocol::ProtoBuf => {
                m.insert("Version".into(), json!(self.version()));
                m.insert("Priority".into(), json!(self.priority()));
            }
        }
        m.insert("Schema".into(), self.schema_json());
        Json::Object(m)
    }
}

static PLUGINS: [&dyn Plugin; 7] = [
    &Hello,
    &Bench,
    &Exit,
    &Multiphase,
    &super::tour::Tour,
    &FaultsPlugin,
    &Idle,
];

/// Every plugin, in the default dump order.
pub fn all() -> &'static [&'static dyn Plugin] {
    &PLUGINS
}

/// The plugin with this name.
pub fn find(name: &str) -> Option<&'static dyn Plugin> {
    PLUGINS.iter().copied().find(|p| p.name() == name)
}

/// The names of all plugins, comma-separated (for error messages).
pub fn names() -> String {
    PLUGINS
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Config helpers

/// The config as an object; `null` means "all defaults".
fn config_object<'a>(
    plugin: &str,
    config: &'a Json,
) -> Result<Option<&'a serde_json::Map<String, Json>>, String> {
    match config {
        Json::Object(m) => Ok(Some(m)),
        Json::Null => Ok(None),
        other => Err(format!(
            "{plugin}: config must be a JSON object, got {}",
            json_type(other)
        )),
    }
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn field<'a>(obj: Option<&'a serde_json::Map<String, Json>>, key: &str) -> Option<&'a Json> {
    obj.and_then(|m| m.get(key)).filter(|v| !v.is_null())
}

fn string_field(
    plugin: &str,
    obj: Option<&serde_json::Map<String, Json>>,
    key: &str,
    default: &str,
) -> Result<String, String> {
    match field(obj, key) {
        None => Ok(default.to_owned()),
        Some(Json::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "{plugin}: config.{key} must be a string, got {}",
            json_type(other)
        )),
    }
}

fn integer_field(
    plugin: &str,
    obj: Option<&serde_json::Map<String, Json>>,
    key: &str,
    default: i64,
) -> Result<i64, String> {
    match field(obj, key) {
        None => Ok(default),
        Some(Json::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| format!("{plugin}: config.{key} must be an integer, got {n}")),
        Some(other) => Err(format!(
            "{plugin}: config.{key} must be an integer, got {}",
            json_type(other)
        )),
    }
}

/// A PDK result as text: strings as-is, `nil` as empty, numbers and booleans printed, tables
/// as JSON.
pub fn text(v: &Value) -> String {
    use super::faults::{on, Fault};
    match v {
        Value::Nil if on(Fault::NilAsText) => "nil".into(),
        Value::Nil => String::new(),
        Value::Str(b) | Value::Bin(b) if on(Fault::MangleStrings) => b
            .iter()
            .map(|&c| if c.is_ascii() { char::from(c) } else { '?' })
            .collect(),
        Value::Str(b) | Value::Bin(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                format!("{}", *f as i64)
            } else {
                f.to_string()
            }
        }
        other => other.to_json().to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// hello

/// `hello`: `x-hello: <message> <host>`, and the same value in the upstream request header
/// named by config `upstream_header` when it is set.
pub struct Hello;

struct HelloInstance {
    message: Arc<str>,
    /// `None`: no upstream header (two PDK calls).
    upstream_header: Option<Arc<str>>,
}

struct HelloEvent {
    message: Arc<str>,
    upstream_header: Option<Arc<str>>,
    value: Option<Value>,
    state: u8,
}

impl Plugin for Hello {
    fn name(&self) -> &'static str {
        "hello"
    }
    fn phases(&self) -> &'static [&'static str] {
        &["access"]
    }
    fn config_fields(&self) -> Json {
        json!([
            {"message": {"type": "string", "default": "hello"}},
            {"upstream_header": {"type": "string"}},
        ])
    }
    fn start(&self, config: &Json) -> Result<Box<dyn Instance>, String> {
        let obj = config_object("hello", config)?;
        let message = string_field("hello", obj, "message", "hello")?;
        let upstream_header = string_field("hello", obj, "upstream_header", "")?;
        Ok(Box::new(HelloInstance {
            message: message.into(),
            upstream_header: (!upstream_header.is_empty()).then(|| upstream_header.into()),
        }))
    }
}

impl Instance for HelloInstance {
    fn event(&self, phase: &str) -> Option<Box<dyn Event>> {
        (phase == "access").then(|| {
            Box::new(HelloEvent {
                message: self.message.clone(),
                upstream_header: self.upstream_header.clone(),
                value: None,
                state: 0,
            }) as _
        })
    }
}

impl Event for HelloEvent {
    fn step(&mut self, reply: Option<Value>) -> Action {
        let state = self.state;
        self.state = state.saturating_add(1);
        match state {
            0 => Action::call("kong.request.get_header", vec![Value::str("host")]),
            1 => {
                let host = reply.as_ref().map(text).unwrap_or_default();
                let mut v = String::with_capacity(self.message.len() + 1 + host.len());
                v.push_str(&self.message);
                v.push(' ');
                v.push_str(&host);
                let v = Value::from(v);
                if self.upstream_header.is_some() {
                    self.value = Some(v.clone());
                }
                Action::call("kong.response.set_header", vec![Value::str("x-hello"), v])
            }
            2 => match (&self.upstream_header, self.value.take()) {
                (Some(h), Some(v)) => {
                    Action::call("kong.service.request.set_header", vec![Value::str(&**h), v])
                }
                _ => Action::Done,
            },
            _ => Action::Done,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// bench

/// `bench`: exactly `calls` PDK calls per access event (`calls - 1` of `method`, then one
/// `kong.response.set_header("x-bench-calls", "<calls>")`); none when `calls` is 0.
pub struct Bench;

/// The default `bench` method.
pub const BENCH_DEFAULT_METHOD: &str = "kong.request.get_header";

struct BenchConfig {
    calls: u64,
    method: Method,
    /// The arguments of the repeated call (`["x-bench"]` for `get_header`, else none).
    args: Arc<[Value]>,
    /// The arguments of the final `set_header`.
    final_args: Arc<[Value]>,
}

struct BenchInstance {
    config: Arc<BenchConfig>,
}

struct BenchEvent {
    config: Arc<BenchConfig>,
    done: u64,
}

impl Plugin for Bench {
    fn name(&self) -> &'static str {
        "bench"
    }
    fn phases(&self) -> &'static [&'static str] {
        &["access"]
    }
    fn config_fields(&self) -> Json {
        json!([
            {"calls": {"type": "integer", "default": 0}},
            {"method": {"type": "string", "default": BENCH_DEFAULT_METHOD}},
        ])
    }
    fn start(&self, config: &Json) -> Result<Box<dyn Instance>, String> {
        let obj = config_object("bench", config)?;
        let calls = integer_field("bench", obj, "calls", 0)?;
        let calls = u64::try_from(calls)
            .map_err(|_| format!("bench: config.calls must be >= 0, got {calls}"))?;
        let method = string_field("bench", obj, "method", BENCH_DEFAULT_METHOD)?;
        if method.is_empty() {
            return Err("bench: config.method must be a PDK method name such as \
                        kong.request.get_header, got an empty string"
                .into());
        }
        let args: Arc<[Value]> = if method == BENCH_DEFAULT_METHOD {
            Arc::new([Value::str("x-bench")])
        } else {
            Arc::new([])
        };
        let method = if method == BENCH_DEFAULT_METHOD {
            Method::Static(BENCH_DEFAULT_METHOD)
        } else {
            Method::Shared(method.into())
        };
        let final_args: Arc<[Value]> =
            Arc::new([Value::str("x-bench-calls"), Value::from(calls.to_string())]);
        Ok(Box::new(BenchInstance {
            config: Arc::new(BenchConfig {
                calls,
                method,
                args,
                final_args,
            }),
        }))
    }
}

impl Instance for BenchInstance {
    fn event(&self, phase: &str) -> Option<Box<dyn Event>> {
        (phase == "access").then(|| {
            Box::new(BenchEvent {
                config: self.config.clone(),
                done: 0,
            }) as _
        })
    }
}

impl Event for BenchEvent {
    fn step(&mut self, _reply: Option<Value>) -> Action {
        let c = &*self.config;
        // `extra-callback` makes one repeated call more than configured (0 normally).
        let calls = c.calls + super::faults::extra_calls();
        if self.done >= calls {
            return Action::Done;
        }
        self.done += 1;
        if let Some(d) = super::faults::pdk_delay() {
            super::faults::busy_wait(d);
        }
        if self.done < calls {
            Action::Call {
                method: c.method.clone(),
                args: Args::Shared(c.args.clone()),
            }
        } else {
            Action::Call {
                method: Method::Static("kong.response.set_header"),
                args: Args::Shared(c.final_args.clone()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// exit

/// `exit`: `kong.response.exit(status, message, {"x-exit": "1"})`.
pub struct Exit;

struct ExitInstance {
    args: Arc<[Value]>,
}

struct ExitEvent {
    args: Arc<[Value]>,
    sent: bool,
}

impl Plugin for Exit {
    fn name(&self) -> &'static str {
        "exit"
    }
    fn phases(&self) -> &'static [&'static str] {
        &["access"]
    }
    fn config_fields(&self) -> Json {
        json!([
            {"status": {"type": "integer", "default": 403}},
            {"message": {"type": "string", "default": "blocked"}},
        ])
    }
    fn start(&self, config: &Json) -> Result<Box<dyn Instance>, String> {
        let obj = config_object("exit", config)?;
        let status = integer_field("exit", obj, "status", 403)?;
        if !(100..=599).contains(&status) {
            return Err(format!(
                "exit: config.status must be an HTTP status (100-599), got {status}"
            ));
        }
        let message = mangle_config(string_field("exit", obj, "message", "blocked")?);
        let args: Arc<[Value]> = Arc::new([
            Value::Int(status),
            Value::from(message),
            Value::map([("x-exit", Value::str("1"))]),
        ]);
        Ok(Box::new(ExitInstance { args }))
    }
}

impl Instance for ExitInstance {
    fn event(&self, phase: &str) -> Option<Box<dyn Event>> {
        (phase == "access").then(|| {
            Box::new(ExitEvent {
                args: self.args.clone(),
                sent: false,
            }) as _
        })
    }
}

impl Event for ExitEvent {
    fn step(&mut self, _reply: Option<Value>) -> Action {
        if self.sent {
            // Kong never answers an exit; a host that does anyway just ends the event.
            return Action::Done;
        }
        self.sent = true;
        Action::Exit {
            method: Method::Static("kong.response.exit"),
            args: Args::Shared(self.args.clone()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// multiphase

/// `multiphase`: modelled on Kong's own go-hello test fixture (docs/protocol.md §8 items 11-12).
///
/// * access: `get_header("host")` → `set_header("x-multi-access", host)` →
///   `kong.ctx.shared.set("shared_msg", message)`.
/// * response: `kong.service.response.get_header("Server")` →
///   `set_header("x-multi-response", "got from server '<v>'")`.
/// * log: `kong.ctx.shared.get("shared_msg")`, `kong.request.get_header("x-loose-data")`,
///   `kong.response.get_header("x-powered-by")`, `kong.log.serialize()`, then four
///   `kong.log.notice` lines: `shared_msg: <v>`, `request_header: <v>`, `response_header: <v>`,
///   `serialized: <json>`.
pub struct Multiphase;

struct MultiphaseInstance {
    message: Arc<str>,
}

#[derive(Clone, Copy)]
enum MultiPhase {
    Access,
    Response,
    Log,
}

struct MultiphaseEvent {
    message: Arc<str>,
    phase: MultiPhase,
    state: u8,
    /// Log phase: the four results, printed once all are in.
    results: Vec<String>,
}

impl Plugin for Multiphase {
    fn name(&self) -> &'static str {
        "multiphase"
    }
    fn phases(&self) -> &'static [&'static str] {
        &["access", "response", "log"]
    }
    fn config_fields(&self) -> Json {
        json!([{"message": {"type": "string", "default": "hello"}}])
    }
    fn start(&self, config: &Json) -> Result<Box<dyn Instance>, String> {
        let obj = config_object("multiphase", config)?;
        let message = string_field("multiphase", obj, "message", "hello")?;
        Ok(Box::new(MultiphaseInstance {
            message: message.into(),
        }))
    }
}

impl Instance for MultiphaseInstance {
    fn event(&self, phase: &str) -> Option<Box<dyn Event>> {
        let phase = match phase {
            "access" => MultiPhase::Access,
            "response" => MultiPhase::Response,
            "log" => MultiPhase::Log,
            _ => return None,
        };
        Some(Box::new(MultiphaseEvent {
            message: self.message.clone(),
            phase,
            state: 0,
            results: Vec::new(),
        }))
    }
}

impl Event for MultiphaseEvent {
    fn step(&mut self, reply: Option<Value>) -> Action {
        let state = self.state;
        self.state = state.saturating_add(1);
        let s = |v: &str| Value::str(v);
        match (self.phase, state) {
            (MultiPhase::Access, 0) => Action::call("kong.request.get_header", vec![s("host")]),
            (MultiPhase::Access, 1) => {
                let host = reply.as_ref().map(text).unwrap_or_default();
                Action::call(
                    "kong.response.set_header",
                    vec![s("x-multi-access"), Value::from(host)],
                )
            }
            (MultiPhase::Access, 2) => Action::call(
                "kong.ctx.shared.set",
                vec![s("shared_msg"), Value::str(&*self.message)],
            ),
            (MultiPhase::Response, 0) => {
                Action::call("kong.service.response.get_header", vec![s("Server")])
            }
            (MultiPhase::Response, 1) => {
                let v = reply.as_ref().map(text).unwrap_or_default();
                Action::call(
                    "kong.response.set_header",
                    vec![
                        s("x-multi-response"),
                        Value::from(format!("got from server '{v}'")),
                    ],
                )
            }
            (MultiPhase::Log, n @ 0..=7) => {
                if (1..=4).contains(&n) {
                    self.results
                        .push(reply.as_ref().map(text).unwrap_or_default());
                }
                match n {
                    0 => Action::call("kong.ctx.shared.get", vec![s("shared_msg")]),
                    1 => Action::call("kong.request.get_header", vec![s("x-loose-data")]),
                    2 => Action::call("kong.response.get_header", vec![s("x-powered-by")]),
                    3 => Action::call("kong.log.serialize", Vec::new()),
                    _ => {
                        const LABELS: [&str; 4] = [
                            "shared_msg",
                            "request_header",
                            "response_header",
                            "serialized",
                        ];
                        let i = usize::from(n - 4);
                        let v = self.results.get(i).map(String::as_str).unwrap_or("");
                        Action::call(
                            "kong.log.notice",
                            vec![Value::from(format!("{}: {v}", LABELS[i]))],
                        )
                    }
                }
            }
            _ => Action::Done,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// faults

/// `faults`: a handler that raises on demand (`mode`: `raise-before` raises before any PDK call,
/// `raise-after` after one `get_header("host")`; anything else makes that one call and returns).
/// The official kits raise an exception or panic; here the event ends with [`Action::Raise`].
pub struct FaultsPlugin;

struct FaultsInstance {
    mode: Arc<str>,
}

struct FaultsEvent {
    mode: Arc<str>,
    state: u8,
}

impl Plugin for FaultsPlugin {
    fn name(&self) -> &'static str {
        "faults"
    }
    fn phases(&self) -> &'static [&'static str] {
        &["access"]
    }
    fn config_fields(&self) -> Json {
        json!([{"mode": {"type": "string", "default": "none"}}])
    }
    fn start(&self, config: &Json) -> Result<Box<dyn Instance>, String> {
        let obj = config_object("faults", config)?;
        let mode = string_field("faults", obj, "mode", "none")?;
        Ok(Box::new(FaultsInstance { mode: mode.into() }))
    }
}

impl Instance for FaultsInstance {
    fn event(&self, phase: &str) -> Option<Box<dyn Event>> {
        (phase == "access").then(|| {
            Box::new(FaultsEvent {
                mode: self.mode.clone(),
                state: 0,
            }) as _
        })
    }
}

impl Event for FaultsEvent {
    fn step(&mut self, _reply: Option<Value>) -> Action {
        let state = self.state;
        self.state = state.saturating_add(1);
        match (&*self.mode, state) {
            ("raise-before", _) => Action::Raise("faults: raise-before".into()),
            (_, 0) => Action::call("kong.request.get_header", vec![Value::str("host")]),
            ("raise-after", _) => Action::Raise("faults: raise-after".into()),
            _ => Action::Done,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// idle

/// `idle`: declares no phase, so Kong registers it and never calls it. `mock-kong proxy` with
/// it measures the HTTP path alone (loadgen's HTTP floor).
pub struct Idle;

struct IdleInstance;

impl Plugin for Idle {
    fn name(&self) -> &'static str {
        "idle"
    }
    fn phases(&self) -> &'static [&'static str] {
        &[]
    }
    fn config_fields(&self) -> Json {
        json!([])
    }
    fn start(&self, config: &Json) -> Result<Box<dyn Instance>, String> {
        config_object("idle", config)?;
        Ok(Box::new(IdleInstance))
    }
}

impl Instance for IdleInstance {
    fn event(&self, _phase: &str) -> Option<Box<dyn Event>> {
        None
    }
}

/// `mangle-strings` also applies to strings a plugin takes from its config.
fn mangle_config(s: String) -> String {
    if super::faults::on(super::faults::Fault::MangleStrings) {
        s.chars()
            .map(|c| if c.is_ascii() { c } else { '?' })
            .collect()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs an event to its end, answering every call with `answer(method, args)`.
    fn run(
        plugin: &str,
        config: Json,
        phase: &str,
        mut answer: impl FnMut(&str, &[Value]) -> Value,
    ) -> Vec<(String, Vec<Value>, bool)> {
        let instance = find(plugin).expect("plugin").start(&config).expect("start");
        let mut ev = instance.event(phase).expect("phase");
        let mut calls = Vec::new();
        let mut reply = None;
        loop {
            match ev.step(reply.take()) {
                Action::Done => return calls,
                Action::Raise(e) => {
                    calls.push((e, Vec::new(), true));
                    return calls;
                }
                Action::Exit { method, args } => {
                    calls.push((method.as_str().to_owned(), args.to_vec(), true));
                    return calls;
                }
                Action::Call { method, args } => {
                    reply = Some(answer(method.as_str(), &args));
                    calls.push((method.as_str().to_owned(), args.to_vec(), false));
                    assert!(calls.len() < 10_000, "runaway event");
                }
            }
        }
    }

    #[test]
    fn hello_makes_exactly_two_calls() {
        let calls = run(
            "hello",
            json!({"message": "hi", "__seq__": 3}),
            "access",
            |m, _| {
                if m == "kong.request.get_header" {
                    Value::str("example.com")
                } else {
                    Value::Nil
                }
            },
        );
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].0, "kong.request.get_header");
        assert_eq!(calls[0].1, vec![Value::str("host")]);
        assert_eq!(calls[1].0, "kong.response.set_header");
        assert_eq!(
            calls[1].1,
            vec![Value::str("x-hello"), Value::str("hi example.com")]
        );
    }

    #[test]
    fn hello_sets_the_upstream_header_when_configured() {
        let calls = run(
            "hello",
            json!({"message": "hi", "upstream_header": "x-up"}),
            "access",
            |m, _| {
                if m == "kong.request.get_header" {
                    Value::str("example.com")
                } else {
                    Value::Nil
                }
            },
        );
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[2].0, "kong.service.request.set_header");
        assert_eq!(
            calls[2].1,
            vec![Value::str("x-up"), Value::str("hi example.com")]
        );
    }

    #[test]
    fn hello_nil_host_and_default_message() {
        let calls = run("hello", json!({"message": null}), "access", |_, _| {
            Value::Nil
        });
        assert_eq!(calls[1].1[1], Value::str("hello "));
    }

    #[test]
    fn bench_counts() {
        for n in [0u64, 1, 2, 30] {
            let calls = run("bench", json!({"calls": n}), "access", |_, _| Value::Nil);
            assert_eq!(calls.len() as u64, n, "calls={n}");
            if n >= 1 {
                let last = calls.last().expect("last");
                assert_eq!(last.0, "kong.response.set_header");
                assert_eq!(
                    last.1,
                    vec![Value::str("x-bench-calls"), Value::from(n.to_string())]
                );
                for c in &calls[..calls.len() - 1] {
                    assert_eq!(c.0, "kong.request.get_header");
                    assert_eq!(c.1, vec![Value::str("x-bench")]);
                }
            }
        }
        let calls = run(
            "bench",
            json!({"calls": 3, "method": "kong.request.get_path"}),
            "access",
            |_, _| Value::Nil,
        );
        assert_eq!(calls[0].0, "kong.request.get_path");
        assert!(calls[0].1.is_empty());
    }

    #[test]
    fn bad_configs_are_rejected_with_reasons() {
        let e = find("bench")
            .unwrap()
            .start(&json!({"calls": -1}))
            .err()
            .unwrap();
        assert!(e.contains("calls must be >= 0"), "{e}");
        let e = find("hello")
            .unwrap()
            .start(&json!({"message": 5}))
            .err()
            .unwrap();
        assert!(e.contains("message must be a string, got number"), "{e}");
        let e = find("exit").unwrap().start(&json!([1])).err().unwrap();
        assert!(e.contains("must be a JSON object"), "{e}");
        assert!(find("nope").is_none());
    }

    #[test]
    fn exit_is_terminal() {
        let calls = run("exit", json!({"status": 401}), "access", |_, _| Value::Nil);
        assert_eq!(calls.len(), 1);
        assert!(calls[0].2);
        assert_eq!(calls[0].0, "kong.response.exit");
        assert_eq!(
            calls[0].1,
            vec![
                Value::Int(401),
                Value::str("blocked"),
                Value::map([("x-exit", Value::str("1"))])
            ]
        );
    }

    #[test]
    fn multiphase_log_prints_results() {
        let calls = run("multiphase", json!({}), "log", |m, _| match m {
            "kong.ctx.shared.get" => Value::str("Kong!"),
            "kong.request.get_header" => Value::str("this"),
            "kong.response.get_header" => Value::Nil,
            "kong.log.serialize" => Value::str("{\"a\":1}"),
            _ => Value::Nil,
        });
        let names: Vec<_> = calls.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "kong.ctx.shared.get",
                "kong.request.get_header",
                "kong.response.get_header",
                "kong.log.serialize",
                "kong.log.notice",
                "kong.log.notice",
                "kong.log.notice",
                "kong.log.notice"
            ]
        );
        assert_eq!(calls[4].1, vec![Value::str("shared_msg: Kong!")]);
        assert_eq!(calls[5].1, vec![Value::str("request_header: this")]);
        assert_eq!(calls[6].1, vec![Value::str("response_header: ")]);
        assert_eq!(calls[7].1, vec![Value::str("serialized: {\"a\":1}")]);

        let calls = run("multiphase", json!({"message": "m"}), "access", |_, _| {
            Value::str("h")
        });
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[2].1, vec![Value::str("shared_msg"), Value::str("m")]);
        let calls = run("multiphase", json!({}), "response", |_, _| {
            Value::str("up/1.0")
        });
        assert_eq!(calls[1].1[1], Value::str("got from server 'up/1.0'"));
        let inst = find("multiphase").unwrap().start(&json!({})).unwrap();
        assert!(inst.event("rewrite").is_none());
    }
}
