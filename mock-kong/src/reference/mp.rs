//! The `MsgPack:1` server (docs/protocol.md §4), behaving on the wire like the Python and JS PDK servers.
//!
//! * One task per connection; the requests of one connection are answered in order, each with
//!   one `[1, msgid, error, result]` response (docs/protocol.md §4.1). An error response leaves the
//!   connection usable.
//! * Instances and events are global to the process. Instance ids and event ids count up from 0.
//!   Events are keyed by `EventId` only, never by connection: Kong sends the Steps of one event
//!   on whichever pooled connection it gets (docs/protocol.md §4.1, §10.1).
//! * After `kong.response.exit` the server forgets the event: Kong never sends a Step for it
//!   (docs/protocol.md §4.4).
//! * Bytes that are not MessagePack, or a MessagePack object that is not an RPC request, drop
//!   that connection only.
//!
//! Error texts follow the official servers: `no plugin instance #<id>` (Kong resets and retries
//! on "no plugin instance", docs/protocol.md §4.6), `event id <n> not found`, `<name> not initialized`
//! (Python spells it "initizlied"; we do not copy the typo).
//!
//! `plugin.StepError` (never sent by Kong 3.x, docs/protocol.md §4.4) reaches the plugin as a `nil` result,
//! which is what a Lua-style PDK call returns as its first value on error; our plugins then
//! carry on as they do for any `nil`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use super::faults::{self, Fault};
use super::plugins::{self, Action, Event, Instance, Plugin};
use super::Variation;
use super::{lock, now_secs_f64, Faults, IdMap, MAX_FRAME, READ_CHUNK};
use crate::msgpack::{
    encode, encode_array_header, encode_map_header, encode_response, encode_str, encode_uint,
    RpcMessage, StreamDecoder,
};
use crate::{Protocol, Value};

/// The state shared by every connection of one MsgPack server.
pub struct MpServer {
    faults: Arc<Faults>,
    loaded_at: f64,
    instances: Mutex<Instances>,
    events: Mutex<IdMap<u64, Box<dyn Event>>>,
    next_event: AtomicU64,
    /// Fault switches only: a handler raised or exited and no event is answered any more.
    blocked: AtomicBool,
    /// Fault switches only: the connection each open event started on.
    event_conn: Mutex<IdMap<u64, u64>>,
    next_conn: AtomicU64,
}

tokio::task_local! {
    /// The id of the connection a request arrived on (read by the fault switches only).
    static CONN: u64;
}

fn current_conn() -> u64 {
    CONN.try_with(|c| *c).unwrap_or(0)
}

struct Instances {
    map: IdMap<i64, MpInstance>,
    next_id: i64,
    /// The first id of this process ([`faults::first_instance_id`]).
    first_id: i64,
    /// Per plugin (index into [`plugins::all`]): last StartInstance / CloseInstance time.
    stats: Vec<(f64, f64)>,
}

struct MpInstance {
    plugin: &'static dyn Plugin,
    plugin_index: usize,
    /// The decoded config, as StartInstance returned it.
    config: Value,
    start_time: f64,
    /// When it was started (the `expire-on-close` fault's clock).
    created: std::time::Instant,
    inner: Box<dyn Instance>,
}

impl MpInstance {
    /// `{Name, Id, Config}` (+ `StartTime`).
    fn status(&self, id: i64, with_start_time: bool) -> Value {
        let mut m = vec![
            (Value::str("Name"), Value::str(self.plugin.name())),
            (Value::str("Id"), Value::Int(id)),
            (Value::str("Config"), self.config.clone()),
        ];
        if with_start_time {
            m.push((Value::str("StartTime"), Value::Float(self.start_time)));
        }
        Value::Map(m)
    }
}

/// The result of one method.
enum Reply {
    /// A plain result value.
    Value(Value),
    /// `{Data: <action>, EventId: id}`, written without building a [`Value`].
    Event { id: u64, action: Action },
    /// No response at all (fault switches only).
    Silent,
}

impl MpServer {
    /// A server with no instances and no events.
    pub fn new(faults: Arc<Faults>) -> MpServer {
        let first_id = faults::first_instance_id(&faults);
        MpServer {
            faults,
            loaded_at: now_secs_f64(),
            instances: Mutex::new(Instances {
                map: IdMap::default(),
                next_id: first_id,
                first_id,
                stats: vec![(0.0, 0.0); plugins::all().len()],
            }),
            events: Mutex::new(IdMap::default()),
            next_event: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            event_conn: Mutex::new(IdMap::default()),
            next_conn: AtomicU64::new(1),
        }
    }

    /// The fault switches this server was started with.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Number of events waiting for a Step (for tests and diagnostics).
    pub fn open_events(&self) -> usize {
        lock(&self.events).len()
    }

    /// Handles one request and appends its response to `out`.
    fn handle_request(&self, msgid: u64, method: &str, params: Vec<Value>, out: &mut Vec<u8>) {
        if self.faults.any_variation() {
            return self.handle_request_varied(msgid, method, params, out);
        }
        match self.dispatch(method, params) {
            Ok(Reply::Value(v)) => encode_response(msgid, &Value::Nil, &v, out),
            Ok(Reply::Event { id, action }) => {
                write_event_response(out, msgid, id, &action, &self.faults)
            }
            Ok(Reply::Silent) => {}
            Err(e) => encode_response(msgid, &Value::Str(e.into_bytes()), &Value::Nil, out),
        }
    }

    /// [`Self::handle_request`] with the legal variations switched on ([`super::variations`]):
    /// the answer is built as a value, reshaped, and written with the variations' encodings.
    fn handle_request_varied(
        &self,
        msgid: u64,
        method: &str,
        params: Vec<Value>,
        out: &mut Vec<u8>,
    ) {
        let v = |x| self.faults.varies(x);
        let is_step = method.starts_with("plugin.Step");
        let (error, mut result) = match self.dispatch(method, params) {
            Ok(Reply::Value(v)) => (Value::Nil, v),
            Ok(Reply::Event { id, action }) => (Value::Nil, self.event_value(id, &action, is_step)),
            Ok(Reply::Silent) => return,
            Err(e) => (Value::str(e), Value::Nil),
        };
        if method == "plugin.StartInstance" && v(Variation::StartIdOnly) {
            if let Some(id) = result.get("Id").cloned() {
                result = Value::map([("Id", id)]);
            }
        }
        if v(Variation::UnknownFields) {
            if let Value::Map(m) = &mut result {
                m.push((
                    Value::str("Trace"),
                    Value::map([("Server", Value::str("reference")), ("Seq", Value::Int(1))]),
                ));
            }
        }
        let style = Style {
            wide: v(Variation::WideNumbers),
            bin: v(Variation::BinStrings),
        };
        if v(Variation::ExtraNotifications) {
            let pid = Value::Int(i64::from(std::process::id()));
            for note in [
                Value::Array(vec![Value::Int(2), Value::str("serverPid"), pid]),
                Value::Array(vec![
                    Value::Int(2),
                    Value::str("log"),
                    Value::str(format!("answering {method}")),
                ]),
            ] {
                style.encode(&note, out);
            }
        }
        let envelope = Value::Array(vec![Value::Int(1), Value::UInt(msgid), error, result]);
        style.encode(&envelope, out);
    }

    /// `{Data: <"ret" | {Method, Args}>, EventId: id}` as a value, with the variations that
    /// reshape it (no EventId in Step answers, bare one-argument Args, unknown fields).
    fn event_value(&self, id: u64, action: &Action, is_step: bool) -> Value {
        let v = |x| self.faults.varies(x);
        let data = match action {
            Action::Done | Action::Raise(_) => Value::str("ret"),
            Action::Call { method, args } | Action::Exit { method, args } => {
                let name = faults::method_name(method.as_str(), &self.faults).into_owned();
                let args: &[Value] = args;
                let args = match args {
                    [one]
                        if v(Variation::ScalarArgs)
                            && !one.is_nil()
                            && !matches!(one, Value::Array(_) | Value::Map(_)) =>
                    {
                        one.clone()
                    }
                    all => Value::Array(all.to_vec()),
                };
                let mut m = vec![
                    (Value::str("Method"), Value::str(name)),
                    (Value::str("Args"), args),
                ];
                if v(Variation::UnknownFields) {
                    m.push((Value::str("Caller"), Value::str("reference")));
                }
                Value::Map(m)
            }
        };
        let mut m = vec![(Value::str("Data"), data)];
        if !(is_step && v(Variation::NoStepEventId)) {
            m.push((Value::str("EventId"), Value::UInt(id)));
        }
        Value::Map(m)
    }

    fn dispatch(&self, method: &str, params: Vec<Value>) -> Result<Reply, String> {
        let Some(name) = method.strip_prefix("plugin.") else {
            let ns = method.split('.').next().unwrap_or(method);
            return Err(format!(
                "RPC for {ns} is not supported (expected a plugin.* method)"
            ));
        };
        match name {
            "HandleEvent" => self.handle_event(first_param(method, params)?),
            "StepMultiMap" | "StepCredential" | "StepConsumer" | "StepRoute" | "StepService"
            | "StepMemoryStats"
                if self.faults.has(Fault::RejectStepVariants) =>
            {
                Err(format!("unknown method {method:?}"))
            }
            "Step" | "StepMultiMap" | "StepCredential" | "StepConsumer" | "StepRoute"
            | "StepService" | "StepMemoryStats" => {
                self.step(method, first_param(method, params)?, false)
            }
            "StepError" => self.step(method, first_param(method, params)?, true),
            "StartInstance" => self
                .start_instance(first_param(method, params)?)
                .map(Reply::Value),
            "CloseInstance" => self
                .close_instance(first_param(method, params)?)
                .map(Reply::Value),
            "InstanceStatus" => self
                .instance_status(first_param(method, params)?)
                .map(Reply::Value),
            "GetStatus" => Ok(Reply::Value(self.get_status())),
            "GetPluginInfo" => self
                .get_plugin_info(first_param(method, params)?)
                .map(Reply::Value),
            "SetPluginDir" => set_plugin_dir(first_param(method, params)?).map(Reply::Value),
            _ => Err(format!(
                "unknown method {method:?}: this server serves plugin.StartInstance, \
                 plugin.CloseInstance, plugin.HandleEvent, plugin.Step*, plugin.InstanceStatus, \
                 plugin.GetStatus and plugin.GetPluginInfo"
            )),
        }
    }

    /// `plugin.StartInstance({Name, Config})`: Config must be a JSON string.
    fn start_instance(&self, arg: Value) -> Result<Value, String> {
        const M: &str = "plugin.StartInstance";
        let name = map_field(M, &arg, "Name")?
            .as_str()
            .ok_or_else(|| format!("{M}: Name must be a string"))?;
        let config_text = match map_field(M, &arg, "Config")? {
            Value::Str(b) | Value::Bin(b) => b,
            other => {
                return Err(format!(
                    "{M}: Config must be a JSON string, got {} (Kong sends cjson.encode(conf))",
                    other.type_name()
                ))
            }
        };
        let (plugin_index, plugin) = plugins::all()
            .iter()
            .enumerate()
            .find(|(_, p)| p.name() == name)
            .ok_or_else(|| format!("{name} not initialized"))?;
        let json: serde_json::Value = serde_json::from_slice(config_text)
            .map_err(|e| format!("{M}: Config is not valid JSON: {e}"))?;
        if self.faults.has(Fault::StrictConfig) {
            if let Some(k) = faults::unknown_config_key(&plugin.config_fields(), &json) {
                return Err(format!("{M}: unknown config field {k:?}"));
            }
        }
        let inner = plugin.start(&json)?;
        let config = Value::from_json(&json);
        let start_time = now_secs_f64();
        let instance = MpInstance {
            plugin: *plugin,
            plugin_index,
            config,
            start_time,
            created: std::time::Instant::now(),
            inner,
        };
        let mut inst = lock(&self.instances);
        let id = if self.faults.has(Fault::OneInstance) {
            inst.first_id
        } else {
            inst.next_id
        };
        inst.next_id += 1;
        let status = instance.status(id, true);
        inst.map.insert(id, instance);
        if let Some(s) = inst.stats.get_mut(plugin_index) {
            s.0 = start_time;
        }
        Ok(status)
    }

    /// `plugin.CloseInstance(id)`: a bare id.
    fn close_instance(&self, arg: Value) -> Result<Value, String> {
        let id = bare_id("plugin.CloseInstance", &arg)?;
        let mut inst = lock(&self.instances);
        let instance = inst.map.remove(&id).ok_or_else(|| self.no_instance(&arg))?;
        if self.faults.has(Fault::ExpireOnClose) {
            inst.map
                .retain(|_, x| x.created.elapsed() <= faults::EXPIRE_AFTER);
        }
        if self.faults.has(Fault::CloseAll) {
            let index = instance.plugin_index;
            inst.map.retain(|_, x| x.plugin_index != index);
        }
        if let Some(s) = inst.stats.get_mut(instance.plugin_index) {
            s.1 = now_secs_f64();
        }
        Ok(instance.status(id, false))
    }

    /// `plugin.InstanceStatus(id)`.
    fn instance_status(&self, arg: Value) -> Result<Value, String> {
        let id = bare_id("plugin.InstanceStatus", &arg)?;
        let inst = lock(&self.instances);
        let instance = inst.map.get(&id).ok_or_else(|| self.no_instance(&arg))?;
        Ok(instance.status(id, true))
    }

    /// `plugin.GetStatus()`: `{Pid, Plugins: {name: {...}}}` like the Python server.
    fn get_status(&self) -> Value {
        let inst = lock(&self.instances);
        let mut ids: Vec<&i64> = inst.map.keys().collect();
        ids.sort_unstable();
        let plugins = plugins::all()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let instances = ids
                    .iter()
                    .filter(|_| !self.faults.has(Fault::StatusEmpty))
                    .filter_map(|id| inst.map.get(id).map(|x| (**id, x)))
                    .filter(|(_, x)| x.plugin_index == i)
                    .map(|(id, x)| x.status(id, true))
                    .collect();
                let (last_start, last_close) = inst.stats.get(i).copied().unwrap_or_default();
                (
                    Value::str(p.name()),
                    Value::map([
                        ("Name", Value::str(p.name())),
                        ("Modtime", Value::Float(self.loaded_at)),
                        ("LoadTime", Value::Float(self.loaded_at)),
                        ("Instances", Value::Array(instances)),
                        ("LastStartInstance", Value::Float(last_start)),
                        ("LastCloseInstance", Value::Float(last_close)),
                    ]),
                )
            })
            .collect();
        Value::map([
            ("Pid", Value::Int(i64::from(std::process::id()))),
            ("Plugins", Value::Map(plugins)),
        ])
    }

    /// `plugin.GetPluginInfo(name)`: one dump entry.
    fn get_plugin_info(&self, arg: Value) -> Result<Value, String> {
        let name = arg.as_str().ok_or_else(|| {
            format!(
                "plugin.GetPluginInfo expects a plugin name, got {}",
                arg.type_name()
            )
        })?;
        let plugin = plugins::find(name).ok_or_else(|| format!("{name} not initialized"))?;
        Ok(Value::from_json(&plugin.info_json(Protocol::MsgPack)))
    }

    /// `plugin.HandleEvent({InstanceId, EventName})`: starts an event and runs it to its first
    /// callback (or to its end).
    fn handle_event(&self, arg: Value) -> Result<Reply, String> {
        const M: &str = "plugin.HandleEvent";
        let iid_value = map_field(M, &arg, "InstanceId")?;
        let iid = iid_value.as_i64().ok_or_else(|| {
            format!(
                "{M}: InstanceId must be an integer, got {}",
                iid_value.type_name()
            )
        })?;
        let phase = map_field(M, &arg, "EventName")?
            .as_str()
            .ok_or_else(|| format!("{M}: EventName must be a string"))?;
        if self.blocked.load(Ordering::Relaxed) {
            return Ok(Reply::Silent);
        }
        if self.faults.has(Fault::ExpireIdle) && faults::touch_expired(iid) {
            lock(&self.instances).map.remove(&iid);
        }
        if self.faults.has(Fault::LeakPerEvent) {
            faults::leak();
        }
        let event = {
            let inst = lock(&self.instances);
            let instance = inst
                .map
                .get(&iid)
                .ok_or_else(|| self.no_instance(iid_value))?;
            instance.inner.event(phase).ok_or_else(|| {
                format!(
                    "plugin {} has no handler for event {phase:?} (it handles {})",
                    instance.plugin.name(),
                    instance.plugin.phases().join(", ")
                )
            })
        };
        let mut event = match event {
            Ok(e) => e,
            Err(_) if self.faults.has(Fault::UndeclaredPhaseHangs) => return Ok(Reply::Silent),
            Err(e) => return Err(e),
        };
        let id = self.next_event.fetch_add(1, Ordering::Relaxed);
        let action = event.step(None);
        if self.faults.has(Fault::LeakEntry) && matches!(action, Action::Done | Action::Exit { .. })
        {
            faults::leak_entry();
        }
        if matches!(action, Action::Call { .. }) {
            if self.faults.has(Fault::LeakAbandoned) {
                faults::hold(id);
            }
            if self.faults.has(Fault::BindEvents) || self.faults.has(Fault::CrashOnVanish) {
                lock(&self.event_conn).insert(id, current_conn());
            }
            // Registered before the response is written: the next Step may come on another
            // connection as soon as the host has read it.
            lock(&self.events).insert(id, event);
        }
        self.finish(id, action)
    }

    /// The reply for an event's next action; a raised handler becomes an error response.
    fn finish(&self, id: u64, action: Action) -> Result<Reply, String> {
        if !matches!(action, Action::Call { .. }) {
            faults::release(id);
            lock(&self.event_conn).remove(&id);
        }
        match action {
            // The event's end is never sent: the host waits for it forever.
            Action::Done if self.faults.has(Fault::NoEndFrame) => Ok(Reply::Silent),
            Action::Raise(_) if self.faults.has(Fault::RaiseIsSuccess) => Ok(Reply::Event {
                id,
                action: Action::Done,
            }),
            Action::Raise(_) if self.faults.has(Fault::RaiseHangs) => {
                self.blocked.store(true, Ordering::Relaxed);
                Ok(Reply::Silent)
            }
            Action::Raise(e) => Err(e),
            Action::Exit { .. } => {
                if self.faults.has(Fault::ExitBlocks) {
                    self.blocked.store(true, Ordering::Relaxed);
                }
                if self.faults.has(Fault::LeakExit) {
                    faults::leak();
                }
                Ok(Reply::Event { id, action })
            }
            action => Ok(Reply::Event { id, action }),
        }
    }

    /// The error for an unknown instance id (docs/protocol.md §4.6: Kong looks for "no plugin instance").
    fn no_instance(&self, id: &Value) -> String {
        if self.faults.has(Fault::WrongErrorText) {
            format!("instance {} does not exist", plugins::text(id))
        } else {
            no_instance(id)
        }
    }

    /// `plugin.Step*({EventId, Data})`: delivers a PDK result to its event.
    fn step(&self, method: &str, arg: Value, is_error: bool) -> Result<Reply, String> {
        let Value::Map(entries) = arg else {
            return Err(format!(
                "{method} expects a map {{EventId, Data}}, got {}",
                arg.type_name()
            ));
        };
        let mut event_id = None;
        let mut data = Value::Nil;
        let mut has_data = false;
        for (k, v) in entries {
            match k.as_bytes() {
                Some(b"EventId") => event_id = Some(v),
                Some(b"Data") => {
                    data = v;
                    has_data = true;
                }
                _ => {}
            }
        }
        if !has_data && self.faults.has(Fault::NilNeedsData) {
            return Err(format!("{method}: the Data field is missing"));
        }
        let event_id = event_id.ok_or_else(|| format!("{method}: the EventId field is missing"))?;
        let id = event_id
            .as_i64()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| format!("event id {} not found", plugins::text(&event_id)))?;
        let reply = if is_error { Value::Nil } else { data };
        if self.faults.has(Fault::BindEvents)
            && lock(&self.event_conn)
                .get(&id)
                .is_some_and(|c| *c != current_conn())
        {
            return Err(format!("event id {id} not found"));
        }
        let action = {
            let mut events = lock(&self.events);
            // cross-talk: the reply goes to the newest event in flight, not to `EventId`.
            let target = if self.faults.has(Fault::CrossTalk) {
                events.keys().copied().max().unwrap_or(id)
            } else {
                id
            };
            let event = events
                .get_mut(&target)
                .ok_or_else(|| format!("event id {id} not found"))?;
            let action = event.step(Some(reply));
            if !matches!(action, Action::Call { .. }) {
                events.remove(&target);
            }
            action
        };
        if self.faults.has(Fault::LeakEntry) && matches!(action, Action::Exit { .. }) {
            faults::leak_entry();
        }
        self.finish(id, action)
    }
}

/// `plugin.SetPluginDir(dir)`: accepted for compatibility (the plugins are built in).
fn set_plugin_dir(arg: Value) -> Result<Value, String> {
    let dir = arg.as_str().ok_or_else(|| {
        format!(
            "plugin.SetPluginDir expects a path, got {}",
            arg.type_name()
        )
    })?;
    if std::path::Path::new(dir).exists() {
        Ok(Value::str("ok"))
    } else {
        Err(format!("{dir} not exists"))
    }
}

fn first_param(method: &str, params: Vec<Value>) -> Result<Value, String> {
    params
        .into_iter()
        .next()
        .ok_or_else(|| format!("{method} expects one parameter, got an empty params array"))
}

fn map_field<'a>(method: &str, arg: &'a Value, key: &str) -> Result<&'a Value, String> {
    if arg.as_map().is_none() {
        return Err(format!(
            "{method} expects a map parameter, got {}",
            arg.type_name()
        ));
    }
    arg.get(key)
        .ok_or_else(|| format!("{method}: the {key} field is missing"))
}

fn bare_id(method: &str, arg: &Value) -> Result<i64, String> {
    arg.as_i64().ok_or_else(|| {
        format!(
            "{method} expects a bare instance id (an integer), got {}",
            arg.type_name()
        )
    })
}

fn no_instance(id: &Value) -> String {
    format!("no plugin instance #{}", plugins::text(id))
}

// ---------------------------------------------------------------------------------------------
// Response writing: the codec's writers (Kong-compatible widths: fixstr / str16 / str32, never
// str8, docs/protocol.md §4.2), with the envelope and the fixed keys written directly.

/// `[1, msgid, ` (the caller writes error and result).
fn response_head(out: &mut Vec<u8>, msgid: u64) {
    encode_array_header(4, out);
    encode_uint(1, out);
    encode_uint(msgid, out);
}

/// `[1, msgid, nil, {Data: <"ret" | {Method, Args}>, EventId: id}]`, keys in the Python
/// server's order.
fn write_event_response(out: &mut Vec<u8>, msgid: u64, id: u64, action: &Action, faults: &Faults) {
    response_head(out, msgid);
    encode(&Value::Nil, out);
    encode_map_header(2, out);
    encode_str(b"Data", out);
    match action {
        // A raise is answered as an error before it gets here.
        Action::Done | Action::Raise(_) => encode_str(b"ret", out),
        Action::Call { method, args } | Action::Exit { method, args } => {
            encode_map_header(2, out);
            encode_str(b"Method", out);
            encode_str(faults::method_name(method.as_str(), faults).as_bytes(), out);
            encode_str(b"Args", out);
            encode_array_header(args.len(), out);
            for a in args.iter() {
                encode(a, out);
            }
        }
    }
    encode_str(b"EventId", out);
    encode_uint(id, out);
}

/// How the `wide-numbers` and `bin-strings` variations write a value: every integer as
/// `int64`/`uint64`, every string as `bin`.
struct Style {
    wide: bool,
    bin: bool,
}

impl Style {
    fn encode(&self, v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Int(i) if self.wide => {
                out.push(0xD3);
                out.extend(i.to_be_bytes());
            }
            Value::UInt(u) if self.wide => {
                out.push(0xCF);
                out.extend(u.to_be_bytes());
            }
            Value::Str(b) if self.bin => encode(&Value::Bin(b.clone()), out),
            Value::Array(items) => {
                encode_array_header(items.len(), out);
                for i in items {
                    self.encode(i, out);
                }
            }
            Value::Map(entries) => {
                let live: Vec<_> = entries
                    .iter()
                    .filter(|(k, x)| !k.is_nil() && !x.is_nil())
                    .collect();
                encode_map_header(live.len(), out);
                for (k, x) in live {
                    self.encode(k, out);
                    self.encode(x, out);
                }
            }
            other => encode(other, out),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

/// Serves one connection until EOF, an I/O error or undecodable input.
pub async fn serve_connection(server: Arc<MpServer>, stream: UnixStream) {
    let conn = server.next_conn.fetch_add(1, Ordering::Relaxed);
    CONN.scope(conn, serve_connection_inner(server, stream, conn))
        .await
}

async fn serve_connection_inner(server: Arc<MpServer>, mut stream: UnixStream, conn: u64) {
    let f = server.faults.clone();
    let max = if f.has(Fault::SmallFrames) {
        256 * 1024
    } else {
        MAX_FRAME
    };
    let garbage = |why: &str| {
        if f.has(Fault::CrashOnGarbage) {
            faults::crash(Fault::CrashOnGarbage, why);
        }
    };
    let mut decoder = StreamDecoder::new(max);
    let mut rbuf = vec![0u8; READ_CHUNK];
    let mut out = Vec::with_capacity(512);
    loop {
        let mut decoded = 0usize;
        loop {
            match decoder.next_value() {
                Ok(Some(value)) => match RpcMessage::from_value(value) {
                    Ok(RpcMessage::Request {
                        msgid,
                        method,
                        params,
                    }) => {
                        decoded += 1;
                        if decoded > 1 && f.has(Fault::CrashOnCoalesced) {
                            faults::crash(Fault::CrashOnCoalesced, "two requests in one read");
                        }
                        if f.has(Fault::SerialEvents) && !method.starts_with("plugin.Step") {
                            // One event at a time: wait until no event waits for a Step.
                            while server.open_events() > 0 {
                                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            }
                        }
                        server.handle_request(msgid, &method, params, &mut out);
                    }
                    Ok(other) => {
                        garbage("a MessagePack object that is not a request");
                        eprintln!(
                            "reference server (MsgPack): dropping connection: expected a \
                             request [0, msgid, method, params], got {other:?}"
                        );
                        return;
                    }
                    Err(e) => {
                        garbage("a MessagePack object that is not a request");
                        eprintln!("reference server (MsgPack): dropping connection: {e}");
                        return;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    garbage("undecodable bytes");
                    eprintln!("reference server (MsgPack): dropping connection: {e}");
                    return;
                }
            }
        }
        if decoder.buffered() > 0 && f.has(Fault::CrashOnSplit) {
            faults::crash(Fault::CrashOnSplit, "a request split across reads");
        }
        if !out.is_empty() {
            if faults::write_out(&mut stream, &out, &f).await.is_err() {
                return;
            }
            out.clear();
            if out.capacity() > 1 << 20 {
                out.shrink_to(64 * 1024);
            }
        }
        let read = if f.has(Fault::IdleClose) {
            match tokio::time::timeout(std::time::Duration::from_secs(1), stream.read(&mut rbuf))
                .await
            {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            stream.read(&mut rbuf).await
        };
        match read {
            Ok(0) | Err(_) => {
                if decoder.buffered() > 0 {
                    garbage("a truncated request");
                }
                if f.has(Fault::CrashOnVanish)
                    && lock(&server.event_conn).values().any(|c| *c == conn)
                {
                    faults::crash(Fault::CrashOnVanish, "a client vanished mid-event");
                }
                return;
            }
            Ok(n) => decoder.feed(&rbuf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::TestServer;
    use super::*;
    use crate::msgpack::{decode, encode_to_vec};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    fn s(x: &str) -> Value {
        Value::str(x)
    }

    fn request(msgid: i64, method: &str, params: Vec<Value>) -> Vec<u8> {
        encode_to_vec(&Value::Array(vec![
            Value::Int(0),
            Value::Int(msgid),
            s(method),
            Value::Array(params),
        ]))
    }

    /// fixstr bytes (test expectations are written out by hand, not with the encoder).
    fn fs(x: &str) -> Vec<u8> {
        assert!(x.len() < 32);
        let mut v = vec![0xA0 | x.len() as u8];
        v.extend_from_slice(x.as_bytes());
        v
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// Reads exactly one MessagePack object; returns its raw bytes.
    async fn read_raw(stream: &mut UnixStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if !buf.is_empty() {
                if let Ok((_, used)) = decode(&buf) {
                    assert_eq!(used, buf.len(), "one response per request, nothing extra");
                    return buf;
                }
            }
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("response within 5 s")
                .expect("read");
            assert!(n > 0, "connection closed while waiting for a response");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn call_raw(stream: &mut UnixStream, bytes: &[u8]) -> Vec<u8> {
        stream.write_all(bytes).await.expect("write");
        read_raw(stream).await
    }

    async fn call(stream: &mut UnixStream, msgid: i64, method: &str, params: Vec<Value>) -> Value {
        let raw = call_raw(stream, &request(msgid, method, params)).await;
        let (v, _) = decode(&raw).expect("decode");
        v
    }

    /// `(error, result)` of a response, checking its envelope.
    fn parts(resp: Value, msgid: i64) -> (Value, Value) {
        let Value::Array(mut a) = resp else {
            panic!("response is not an array: {resp:?}")
        };
        assert_eq!(a.len(), 4);
        assert_eq!(a[0], Value::Int(1));
        assert_eq!(a[1], Value::Int(msgid));
        let result = a.pop().unwrap();
        let error = a.pop().unwrap();
        (error, result)
    }

    async fn start_instance(stream: &mut UnixStream, msgid: i64, name: &str, config: &str) -> i64 {
        let resp = call(
            stream,
            msgid,
            "plugin.StartInstance",
            vec![Value::map([("Name", s(name)), ("Config", s(config))])],
        )
        .await;
        let (err, result) = parts(resp, msgid);
        assert_eq!(err, Value::Nil, "StartInstance failed");
        result.get("Id").and_then(Value::as_i64).expect("Id")
    }

    /// The verified Python hello exchange (plugin-servers.md), byte for byte apart from the
    /// plugin name, the header asked for and StartTime.
    #[tokio::test]
    async fn hello_exchange_byte_for_byte() {
        let srv = TestServer::start_with(Protocol::MsgPack, &["ids-from-zero"]).await;
        let mut c = srv.connect().await;

        let raw = call_raw(
            &mut c,
            &request(
                4,
                "plugin.StartInstance",
                vec![Value::map([
                    ("Name", s("hello")),
                    ("Config", s("{\"message\":\"hi\"}")),
                ])],
            ),
        )
        .await;
        let head = cat(&[
            &[0x94, 0x01, 0x04, 0xC0, 0x84],
            &fs("Name"),
            &fs("hello"),
            &fs("Id"),
            &[0x00],
            &fs("Config"),
            &[0x81],
            &fs("message"),
            &fs("hi"),
            &fs("StartTime"),
        ]);
        assert_eq!(&raw[..head.len()], &head[..], "{raw:02x?}");
        let (t, used) = decode(&raw[head.len()..]).expect("StartTime");
        assert_eq!(head.len() + used, raw.len());
        let t = t.as_f64().expect("StartTime is a number");
        assert!((t - now_secs_f64()).abs() < 60.0, "StartTime {t} is now");

        let raw = call_raw(
            &mut c,
            &request(
                8,
                "plugin.HandleEvent",
                vec![Value::map([
                    ("InstanceId", Value::Int(0)),
                    ("EventName", s("access")),
                ])],
            ),
        )
        .await;
        let expected = cat(&[
            &[0x94, 0x01, 0x08, 0xC0, 0x82],
            &fs("Data"),
            &[0x82],
            &fs("Method"),
            &fs("kong.request.get_header"),
            &fs("Args"),
            &[0x91],
            &fs("host"),
            &fs("EventId"),
            &[0x00],
        ]);
        assert_eq!(raw, expected);

        let raw = call_raw(
            &mut c,
            &request(
                9,
                "plugin.Step",
                vec![Value::map([("EventId", Value::Int(0)), ("Data", s("Bob"))])],
            ),
        )
        .await;
        let expected = cat(&[
            &[0x94, 0x01, 0x09, 0xC0, 0x82],
            &fs("Data"),
            &[0x82],
            &fs("Method"),
            &fs("kong.response.set_header"),
            &fs("Args"),
            &[0x92],
            &fs("x-hello"),
            &fs("hi Bob"),
            &fs("EventId"),
            &[0x00],
        ]);
        assert_eq!(raw, expected);

        // Data absent = nil (docs/protocol.md §4.4).
        let raw = call_raw(
            &mut c,
            &request(
                10,
                "plugin.Step",
                vec![Value::map([("EventId", Value::Int(0))])],
            ),
        )
        .await;
        let expected = cat(&[
            &[0x94, 0x01, 0x0A, 0xC0, 0x82],
            &fs("Data"),
            &fs("ret"),
            &fs("EventId"),
            &[0],
        ]);
        assert_eq!(raw, expected);
        srv.stop().await;
    }

    /// Kong sends the Steps of one event on whichever pooled connection it gets (docs/protocol.md §4.1).
    #[tokio::test]
    async fn steps_of_one_event_on_other_connections() {
        let srv = TestServer::start(Protocol::MsgPack).await;
        let mut a = srv.connect().await;
        let mut b = srv.connect().await;
        let iid = start_instance(&mut a, 1, "multiphase", "{}").await;
        let resp = call(
            &mut a,
            2,
            "plugin.HandleEvent",
            vec![Value::map([
                ("InstanceId", Value::Int(iid)),
                ("EventName", s("access")),
            ])],
        )
        .await;
        let (_, r) = parts(resp, 2);
        let eid = r.get("EventId").and_then(Value::as_i64).unwrap();
        let resp = call(
            &mut b,
            3,
            "plugin.Step",
            vec![Value::map([
                ("EventId", Value::Int(eid)),
                ("Data", s("example.com")),
            ])],
        )
        .await;
        let (err, r) = parts(resp, 3);
        assert_eq!(err, Value::Nil);
        let data = r.get("Data").unwrap();
        assert_eq!(data.get("Method"), Some(&s("kong.response.set_header")));
        assert_eq!(
            data.get("Args"),
            Some(&Value::Array(vec![s("x-multi-access"), s("example.com")]))
        );
        // Third call on a third connection, then done back on the first.
        let mut c = srv.connect().await;
        let resp = call(
            &mut c,
            4,
            "plugin.StepMultiMap",
            vec![Value::map([("EventId", Value::Int(eid))])],
        )
        .await;
        let (_, r) = parts(resp, 4);
        assert_eq!(
            r.get("Data").and_then(|d| d.get("Method")),
            Some(&s("kong.ctx.shared.set"))
        );
        let resp = call(
            &mut a,
            5,
            "plugin.Step",
            vec![Value::map([("EventId", Value::Int(eid))])],
        )
        .await;
        let (_, r) = parts(resp, 5);
        assert_eq!(r.get("Data"), Some(&s("ret")));
        srv.stop().await;
    }

    #[tokio::test]
    async fn errors_are_phrased_like_the_official_servers_and_keep_the_connection() {
        let srv = TestServer::start(Protocol::MsgPack).await;
        let mut c = srv.connect().await;

        let raw = call_raw(
            &mut c,
            &request(
                2,
                "plugin.HandleEvent",
                vec![Value::map([
                    ("InstanceId", Value::Int(42)),
                    ("EventName", s("access")),
                ])],
            ),
        )
        .await;
        // Appendix A: [1, 2, "no plugin instance #42", nil]
        assert_eq!(
            raw,
            cat(&[&[0x94, 0x01, 0x02], &fs("no plugin instance #42"), &[0xC0]])
        );

        let resp = call(
            &mut c,
            3,
            "plugin.Step",
            vec![Value::map([("EventId", Value::Int(99))])],
        )
        .await;
        assert_eq!(parts(resp, 3), (s("event id 99 not found"), Value::Nil));

        let resp = call(
            &mut c,
            4,
            "plugin.StartInstance",
            vec![Value::map([("Name", s("nope")), ("Config", s("{}"))])],
        )
        .await;
        assert_eq!(parts(resp, 4), (s("nope not initialized"), Value::Nil));

        let resp = call(
            &mut c,
            5,
            "plugin.StartInstance",
            vec![Value::map([
                ("Name", s("hello")),
                ("Config", Value::map([("message", s("x"))])),
            ])],
        )
        .await;
        let (err, _) = parts(resp, 5);
        assert!(
            err.as_str()
                .unwrap()
                .contains("Config must be a JSON string"),
            "{err:?}"
        );

        let resp = call(&mut c, 6, "plugin.CloseInstance", vec![Value::Int(7)]).await;
        assert_eq!(parts(resp, 6), (s("no plugin instance #7"), Value::Nil));

        let resp = call(&mut c, 7, "plugin.Nope", vec![]).await;
        let (err, _) = parts(resp, 7);
        assert!(err.as_str().unwrap().contains("unknown method"), "{err:?}");

        let resp = call(&mut c, 8, "plugin.HandleEvent", vec![]).await;
        let (err, _) = parts(resp, 8);
        assert!(
            err.as_str().unwrap().contains("expects one parameter"),
            "{err:?}"
        );

        let resp = call(
            &mut c,
            9,
            "plugin.StartInstance",
            vec![Value::map([
                ("Name", s("bench")),
                ("Config", s("{\"calls\": -3}")),
            ])],
        )
        .await;
        let (err, _) = parts(resp, 9);
        assert!(
            err.as_str().unwrap().contains("calls must be >= 0"),
            "{err:?}"
        );

        // Unknown phase for the instance's plugin.
        let iid = start_instance(&mut c, 10, "hello", "{}").await;
        let resp = call(
            &mut c,
            11,
            "plugin.HandleEvent",
            vec![Value::map([
                ("InstanceId", Value::Int(iid)),
                ("EventName", s("log")),
            ])],
        )
        .await;
        let (err, _) = parts(resp, 11);
        assert!(
            err.as_str()
                .unwrap()
                .contains("no handler for event \"log\""),
            "{err:?}"
        );

        // Still usable; close works and then the instance is gone.
        let resp = call(&mut c, 12, "plugin.CloseInstance", vec![Value::Int(iid)]).await;
        let (err, r) = parts(resp, 12);
        assert_eq!(err, Value::Nil);
        assert_eq!(r.get("Name"), Some(&s("hello")));
        assert_eq!(r.get("Id"), Some(&Value::Int(iid)));
        let resp = call(
            &mut c,
            13,
            "plugin.HandleEvent",
            vec![Value::map([
                ("InstanceId", Value::Int(iid)),
                ("EventName", s("access")),
            ])],
        )
        .await;
        let (err, _) = parts(resp, 13);
        assert_eq!(err, s(&format!("no plugin instance #{iid}")));
        srv.stop().await;
    }

    #[tokio::test]
    async fn bad_bytes_drop_only_that_connection() {
        let srv = TestServer::start(Protocol::MsgPack).await;
        let mut good = srv.connect().await;
        let mut bad = srv.connect().await;
        let iid = start_instance(&mut good, 1, "hello", "{}").await;
        bad.write_all(&[0xC1, 0x00]).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), bad.read(&mut buf))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0, "the bad connection is closed without a reply");
        // A well-formed object that is not a request also drops the connection.
        let mut odd = srv.connect().await;
        odd.write_all(&encode_to_vec(&s("hello"))).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), odd.read(&mut buf))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0);
        let resp = call(
            &mut good,
            2,
            "plugin.HandleEvent",
            vec![Value::map([
                ("InstanceId", Value::Int(iid)),
                ("EventName", s("access")),
            ])],
        )
        .await;
        assert_eq!(parts(resp, 2).0, Value::Nil);
        let mut fresh = srv.connect().await;
        let iid2 = start_instance(&mut fresh, 3, "hello", "{}").await;
        assert_eq!(iid2, iid + 1, "instance ids count up");
        srv.stop().await;
    }

    /// Requests split at every byte boundary and several in one write.
    #[tokio::test]
    async fn split_and_pipelined_requests() {
        let srv = TestServer::start_with(Protocol::MsgPack, &["ids-from-zero"]).await;
        let mut c = srv.connect().await;
        let req = request(
            1,
            "plugin.StartInstance",
            vec![Value::map([("Name", s("exit")), ("Config", s("{}"))])],
        );
        for b in &req {
            c.write_all(std::slice::from_ref(b)).await.unwrap();
            tokio::task::yield_now().await;
        }
        let (err, _) = parts(decode(&read_raw(&mut c).await).unwrap().0, 1);
        assert_eq!(err, Value::Nil);
        let mut both = request(2, "plugin.GetStatus", vec![]);
        both.extend(request(3, "plugin.InstanceStatus", vec![Value::Int(0)]));
        c.write_all(&both).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut values = Vec::new();
        while values.len() < 2 {
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
            while let Ok((v, used)) = decode(&buf) {
                values.push(v);
                buf.drain(..used);
            }
        }
        let (err, status) = parts(values.remove(0), 2);
        assert_eq!(err, Value::Nil);
        let exit_status = status.get("Plugins").and_then(|p| p.get("exit")).unwrap();
        assert_eq!(
            exit_status
                .get("Instances")
                .and_then(Value::as_array)
                .map(<[_]>::len),
            Some(1)
        );
        let (err, r) = parts(values.remove(0), 3);
        assert_eq!(err, Value::Nil);
        assert_eq!(r.get("Name"), Some(&s("exit")));
        srv.stop().await;
    }

    /// Runs one access event of `iid` over MsgPack, answering every call with nil, switching
    /// connections on every Step. Returns the callbacks and whether the last one was an exit.
    async fn run_event(srv: &TestServer, iid: i64) -> Vec<(String, Value)> {
        let mut conns = [srv.connect().await, srv.connect().await];
        let resp = call(
            &mut conns[0],
            100,
            "plugin.HandleEvent",
            vec![Value::map([
                ("InstanceId", Value::Int(iid)),
                ("EventName", s("access")),
            ])],
        )
        .await;
        let (err, mut r) = parts(resp, 100);
        assert_eq!(err, Value::Nil);
        let eid = r.get("EventId").and_then(Value::as_i64).unwrap();
        let mut calls = Vec::new();
        let mut msgid = 101;
        loop {
            let data = r.get("Data").cloned().expect("Data");
            if data == s("ret") {
                return calls;
            }
            let method = data
                .get("Method")
                .and_then(Value::as_str)
                .expect("Method")
                .to_owned();
            let args = data.get("Args").cloned().expect("Args");
            let is_exit = method == "kong.response.exit";
            calls.push((method, args));
            if is_exit {
                return calls;
            }
            let c = &mut conns[(msgid % 2) as usize];
            let resp = call(
                c,
                msgid,
                "plugin.Step",
                vec![Value::map([("EventId", Value::Int(eid))])],
            )
            .await;
            let (err, next) = parts(resp, msgid);
            assert_eq!(err, Value::Nil);
            assert_eq!(next.get("EventId"), Some(&Value::Int(eid)));
            r = next;
            msgid += 1;
        }
    }

    #[tokio::test]
    async fn bench_makes_exactly_n_calls() {
        let srv = TestServer::start(Protocol::MsgPack).await;
        let mut c = srv.connect().await;
        for n in [0i64, 1, 30] {
            let iid = start_instance(&mut c, 1, "bench", &format!("{{\"calls\":{n}}}")).await;
            let calls = run_event(&srv, iid).await;
            assert_eq!(calls.len() as i64, n, "bench calls={n}");
            if n > 0 {
                let (m, args) = calls.last().unwrap();
                assert_eq!(m, "kong.response.set_header");
                assert_eq!(
                    args,
                    &Value::Array(vec![s("x-bench-calls"), s(&n.to_string())])
                );
            }
        }
        srv.stop().await;
    }

    #[tokio::test]
    async fn exit_forgets_the_event() {
        let srv = TestServer::start(Protocol::MsgPack).await;
        let mut c = srv.connect().await;
        let iid = start_instance(&mut c, 1, "exit", "{\"status\":401,\"message\":\"no\"}").await;
        let resp = call(
            &mut c,
            2,
            "plugin.HandleEvent",
            vec![Value::map([
                ("InstanceId", Value::Int(iid)),
                ("EventName", s("access")),
            ])],
        )
        .await;
        let (_, r) = parts(resp, 2);
        let data = r.get("Data").unwrap();
        assert_eq!(data.get("Method"), Some(&s("kong.response.exit")));
        assert_eq!(
            data.get("Args"),
            Some(&Value::Array(vec![
                Value::Int(401),
                s("no"),
                Value::map([("x-exit", s("1"))])
            ]))
        );
        let eid = r.get("EventId").and_then(Value::as_i64).unwrap();
        let resp = call(
            &mut c,
            3,
            "plugin.Step",
            vec![Value::map([("EventId", Value::Int(eid))])],
        )
        .await;
        assert_eq!(parts(resp, 3).0, s(&format!("event id {eid} not found")));
        srv.stop().await;
    }
}
