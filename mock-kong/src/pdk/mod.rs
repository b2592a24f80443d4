//! The PDK side of the host: what answers a plugin's `kong.*` callbacks.
//!
//! The host loop ([`crate::host`]) is protocol machinery only. When a plugin calls a PDK method,
//! the loop converts the wire arguments to Lua-like positional [`Value`]s and asks a [`Pdk`]. The
//! answer comes back as a [`PdkOutcome`], which the loop encodes as Kong would for its protocol.
//!
//! * [`SimpleRequest`]: a minimal request (headers, `ctx.shared`, log lines) for quick calls.
//! * [`KongRequest`] (`kong.rs`): the full emulated Kong request: every method of the ProtoBuf
//!   PDK table (docs/protocol.md §5.4) and the MsgPack surface of the dynamic kits (docs/protocol.md §4.4), Kong's phase
//!   checks, the saved log-phase data (docs/protocol.md §4.5, §6) and a record of every effect. Its PDK
//!   functions live in one file per PDK module: `client`, `ctx`, `ip`, `log`, `nginx`, `node`,
//!   `plugin`, `request`, `response`, `router`, `service` (with `service::request` and
//!   `service::response`).
//! * [`phase`]: Kong's phases ([`Phase`]) and each function's allowed set.
//! * [`http`]: headers, query strings, error bodies and the request/response model.
//! * [`script`]: scripted answers ([`Override`]).
//! * [`serialize`]: `kong.log.serialize` shaped like Kong's basic serializer.
//! * [`version::KongVersion`]: the Kong release whose behaviour is emulated (docs/protocol.md §9).
//!
//! How a Lua value behaves (type names, `tostring`, tables, cjson) is [`crate::lua`], shared with
//! the host and the codecs.

mod args;
mod client;
mod ctx;
pub mod http;
mod ip;
mod kong;
mod log;
mod nginx;
mod node;
pub mod phase;
mod plugin;
mod request;
mod response;
mod router;
pub mod script;
pub mod serialize;
mod service;
pub mod version;

use std::time::Duration;

use crate::Value;

pub use http::{
    error_body, http_error_message, normalize_header, parse_query, query_table, response_type,
    url_decode, url_encode, ClientRequest, Headers, HttpResponse, LogLine, QueryValue, Source,
    UpstreamRequest,
};
pub use kong::{KongRequest, Saved, Stage};
pub use phase::{Phase, Phases};
pub use script::{Override, OverrideAnswer};

/// The default workspace id Kong gives a fresh database (`kong.request.get_*` workspace, and the
/// `__ws_id` the host puts into every plugin config).
pub const DEFAULT_WS_ID: &str = "0dc6f45b-8f8d-40d2-a504-473544ee190b";
pub use version::KongVersion;

/// What a PDK call did.
#[derive(Debug, Clone, PartialEq)]
pub enum PdkOutcome {
    /// The PDK function returned; this is its first return value (`Nil` for none).
    Return(Value),
    /// The PDK function returned `nil, err` (a "soft" error). Kong 3.x sends only the first
    /// return value, so the plugin sees nil (MsgPack: a Step without `Data`); Kong 2.x sent
    /// `plugin.StepError` with the message over MsgPack (docs/protocol.md §4.4, §10.4). Which one the host
    /// does is [`Pdk::sends_step_error`]. ProtoBuf has no soft-error channel: always nil.
    SoftError(String),
    /// `kong.response.exit` / `kong.response.error`: terminal, Kong never replies (docs/protocol.md §4.4).
    Exit {
        status: i64,
        body: Option<Vec<u8>>,
        headers: Vec<(String, Vec<String>)>,
    },
    /// The PDK function raised a Lua error (wrong phase, bad argument): the event is aborted.
    Raise(String),
    /// No such PDK function (docs/protocol.md §4.4: MsgPack answers nil and logs; ProtoBuf fails the event).
    NotFound,
    /// The answer (`then`) is given only after `after` (a scripted slow PDK call). The host
    /// waits without blocking, see [`PdkOutcome::settle`].
    Delayed {
        after: Duration,
        then: Box<PdkOutcome>,
    },
}

impl PdkOutcome {
    /// Waits out every [`PdkOutcome::Delayed`] layer and returns the answer itself.
    pub async fn settle(self) -> PdkOutcome {
        let mut outcome = self;
        while let PdkOutcome::Delayed { after, then } = outcome {
            tokio::time::sleep(after).await;
            outcome = *then;
        }
        outcome
    }
}

/// Answers PDK callbacks for one request.
pub trait Pdk: Send {
    /// Runs `method` with positional `args` in the current `phase`.
    fn call(&mut self, phase: &str, method: &str, args: &[Value]) -> PdkOutcome;

    /// Whether a [`PdkOutcome::SoftError`] goes out as MsgPack `plugin.StepError` (Kong 2.x)
    /// instead of a Step without data (Kong 3.x, the default).
    fn sends_step_error(&self) -> bool {
        false
    }
}

/// A minimal emulated request: request headers, response headers and `kong.ctx.shared`.
/// Enough for the hello/bench/exit plugins; the full emulation is [`KongRequest`].
#[derive(Debug, Clone, Default)]
pub struct SimpleRequest {
    /// Request headers in order; names compared case-insensitively.
    pub request_headers: Vec<(String, String)>,
    /// Response headers set by plugins, in order.
    pub response_headers: Vec<(String, String)>,
    /// `kong.ctx.shared`.
    pub shared: Vec<(String, Value)>,
    /// Log lines from `kong.log.*`, as `(level, text)`.
    pub log: Vec<(String, String)>,
}

impl SimpleRequest {
    /// A request with a `host` header.
    pub fn new(host: &str) -> SimpleRequest {
        SimpleRequest {
            request_headers: vec![("host".into(), host.into())],
            ..Default::default()
        }
    }

    /// The first response header with this name (case-insensitive).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A value as text, the way the simple request stores header values.
pub(crate) fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Str(b) | Value::Bin(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(v) if v.as_f64().is_some() => {
            let f = v.as_f64().unwrap_or_default();
            if f.fract() == 0.0 {
                format!("{}", f as i64)
            } else {
                format!("{f}")
            }
        }
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

impl Pdk for SimpleRequest {
    fn call(&mut self, _phase: &str, method: &str, args: &[Value]) -> PdkOutcome {
        match method {
            "kong.request.get_header" => {
                let name = text(args.first());
                let v = self
                    .request_headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&name))
                    .map(|(_, v)| Value::str(v.as_str()))
                    .unwrap_or(Value::Nil);
                PdkOutcome::Return(v)
            }
            "kong.response.set_header" => {
                let name = text(args.first());
                let value = text(args.get(1));
                self.response_headers
                    .retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
                self.response_headers.push((name, value));
                PdkOutcome::Return(Value::Nil)
            }
            "kong.response.add_header" => {
                self.response_headers
                    .push((text(args.first()), text(args.get(1))));
                PdkOutcome::Return(Value::Nil)
            }
            "kong.ctx.shared.set" => {
                let k = text(args.first());
                let v = args.get(1).cloned().unwrap_or(Value::Nil);
                self.shared.retain(|(key, _)| key != &k);
                self.shared.push((k, v));
                PdkOutcome::Return(Value::Nil)
            }
            "kong.ctx.shared.get" => {
                let k = text(args.first());
                let v = self
                    .shared
                    .iter()
                    .find(|(key, _)| key == &k)
                    .map(|(_, v)| v.clone());
                PdkOutcome::Return(v.unwrap_or(Value::Nil))
            }
            "kong.response.exit" | "kong.response.error" => {
                let status = args.first().and_then(Value::as_i64).unwrap_or(500);
                let body = args.get(1).and_then(Value::as_bytes).map(<[u8]>::to_vec);
                let headers = match args.get(2) {
                    Some(Value::Map(m)) => m
                        .iter()
                        .map(|(k, v)| {
                            let vals = match v {
                                Value::Array(a) => a.iter().map(|x| text(Some(x))).collect(),
                                other => vec![text(Some(other))],
                            };
                            (text(Some(k)), vals)
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                PdkOutcome::Exit {
                    status,
                    body,
                    headers,
                }
            }
            m if m.starts_with("kong.log.") => {
                let level = m.trim_start_matches("kong.log.").to_owned();
                let line = args
                    .iter()
                    .map(|a| text(Some(a)))
                    .collect::<Vec<_>>()
                    .join(" ");
                self.log.push((level, line));
                PdkOutcome::Return(Value::Nil)
            }
            _ => PdkOutcome::NotFound,
        }
    }
}
