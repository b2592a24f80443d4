//! The emulated Kong request: a stateful model of one proxied HTTP request that answers every PDK
//! call the way Kong 3.9's Lua PDK does, and records every effect.
//!
//! What it covers (the full table, per protocol, is `docs/pdk-surface.md`):
//! * every method of the ProtoBuf PDK service table (spec §5.4), with the Lua result Kong's wrap
//!   step expects, and the MsgPack surface the dynamic kits reach by dotted name (spec §4.4):
//!   `kong.client`, `kong.ctx.shared`, `kong.ip`, `kong.log`, `kong.nginx`, `kong.node`,
//!   `kong.plugin`, `kong.request`, `kong.response`, `kong.router`, `kong.service`,
//!   `kong.service.request`, `kong.service.response`;
//! * Kong's phase checks (`kong/pdk/private/phases.lua`): a call outside its phases raises
//!   `function cannot be called in <phase> phase (only in: <phases>)`;
//! * argument checks with Kong's error texts (`max_headers must be >= 1`, `code must be a number
//!   between 100 and 599`, ...);
//! * the request flow: `rewrite`/`access` see the client request, the upstream request is built
//!   from it and modified by `kong.service.*`; [`KongRequest::proxy`] answers with the scripted
//!   upstream response, which the `response` phase sees buffered (spec §6); `exit` ends the
//!   request; the `log` phase runs after the client response, in a timer: only the data Kong
//!   saves (spec §4.5, §6) is there, other request-bound calls raise `no request found`;
//! * scripted overrides ([`Override`]): a method (and optionally its arguments and phase) that
//!   returns a value, a soft error, raises, or answers after a delay.
//!
//! Header names are case-insensitive; `_` and `-` are the same in lookups, as in nginx's header
//! tables; a multi-valued request header reads as its first value.

use std::time::Duration;

use super::serialize;
use super::{KongVersion, Pdk, PdkOutcome};
pub use crate::lua::loose_eq;
use crate::lua::{
    cjson_encode, cjson_escape, is_number, lua_number, lua_text, lua_tostring, lua_type,
};
use crate::{Protocol, Value};

// ------------------------------------------------------------------------------------------------
// Phases (kong/pdk/private/phases.lua)
// ------------------------------------------------------------------------------------------------

/// Kong's PDK phases in the order of their bit values: phase-check errors list accepted phases
/// in this order.
const PHASE_BITS: [&str; 14] = [
    "init_worker",
    "certificate",
    "client_hello",
    "rewrite",
    "access",
    "balancer",
    "response",
    "cluster_listener",
    "header_filter",
    "body_filter",
    "log",
    "preread",
    "error",
    "admin_api",
];

/// `PHASES.request`.
const REQUEST: &[&str] = &[
    "rewrite",
    "access",
    "balancer",
    "response",
    "cluster_listener",
    "header_filter",
    "body_filter",
    "log",
    "error",
    "admin_api",
];
/// `kong.request.get_raw_body` / `get_body`.
const BEFORE_CONTENT: &[&str] = &["rewrite", "access", "response", "error", "admin_api"];
/// `kong.response` getters.
const HEADER_BODY_LOG: &[&str] = &[
    "response",
    "header_filter",
    "body_filter",
    "log",
    "error",
    "admin_api",
];
/// `kong.response` setters, `exit`, `error`.
const REWRITE_ACCESS_HEADER: &[&str] = &[
    "rewrite",
    "access",
    "balancer",
    "response",
    "header_filter",
    "error",
    "admin_api",
];
/// `kong.client` consumer/credential functions, `kong.router`.
const AUTH_AND_LATER: &[&str] = &["access", "response", "header_filter", "body_filter", "log"];
const ACCESS: &[&str] = &["access"];
const REWRITE_ACCESS_BALANCER_PREREAD: &[&str] = &["rewrite", "access", "balancer", "preread"];
const ACCESS_REWRITE_BALANCER: &[&str] = &["rewrite", "access", "balancer"];
const ACCESS_AND_REWRITE: &[&str] = &["rewrite", "access"];
/// `kong.service.response` getters.
const SERVICE_RESPONSE: &[&str] = &["response", "header_filter", "body_filter", "log"];
/// `kong.log.set_serialize_value`.
const WITH_CTX: &[&str] = &[
    "rewrite",
    "access",
    "response",
    "header_filter",
    "body_filter",
    "log",
];
const LOG: &[&str] = &["log"];
const BODY_FILTER: &[&str] = &["body_filter"];

/// Kong's phase-check error for a call in `phase` of a function allowed in `allowed`.
pub fn phase_error(phase: &str, allowed: &[&str]) -> String {
    let names: Vec<&str> = PHASE_BITS
        .iter()
        .copied()
        .filter(|p| allowed.contains(p))
        .collect();
    format!(
        "function cannot be called in {phase} phase (only in: {})",
        names.join(", ")
    )
}

/// What raising request-bound functions say in the log timer (lua-resty-core's
/// `get_request()` guard).
pub const NO_REQUEST: &str = "no request found";

// ------------------------------------------------------------------------------------------------
// Headers
// ------------------------------------------------------------------------------------------------

/// An ordered header list. Lookups are case-insensitive and treat `_` as `-`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Headers(pub Vec<(String, String)>);

/// nginx's header-table key normalisation: lower case, `_` → `-`.
pub fn normalize_header(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let n = normalize_header(name);
        self.0
            .iter()
            .find(|(k, _)| normalize_header(k) == n)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        let n = normalize_header(name);
        self.0
            .iter()
            .filter(|(k, _)| normalize_header(k) == n)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Replaces every value of `name`.
    pub fn set(&mut self, name: &str, values: Vec<String>) {
        self.clear(name);
        for v in values {
            self.0.push((name.to_owned(), v));
        }
    }

    pub fn add(&mut self, name: &str, value: String) {
        self.0.push((name.to_owned(), value));
    }

    pub fn clear(&mut self, name: &str) {
        let n = normalize_header(name);
        self.0.retain(|(k, _)| normalize_header(k) != n);
    }

    /// Distinct lower-case names in first-seen order.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (k, _) in &self.0 {
            let k = k.to_ascii_lowercase();
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    /// Lua's view (`ngx.req.get_headers(max)`): lower-case names, a string for one value and an
    /// array for several. At most `max` header lines are read. Returns the table and whether
    /// headers were left out.
    pub fn to_table(&self, max: Option<usize>) -> (Value, bool) {
        let limit = max.unwrap_or(usize::MAX);
        let mut entries: Vec<(String, Vec<String>)> = Vec::new();
        let mut truncated = false;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i >= limit {
                truncated = true;
                break;
            }
            let k = k.to_ascii_lowercase();
            match entries.iter_mut().find(|(n, _)| *n == k) {
                Some((_, vals)) => vals.push(v.clone()),
                None => entries.push((k, vec![v.clone()])),
            }
        }
        let table = Value::Map(
            entries
                .into_iter()
                .map(|(k, mut vals)| {
                    let v = if vals.len() == 1 {
                        Value::str(vals.remove(0))
                    } else {
                        Value::Array(vals.into_iter().map(Value::str).collect())
                    };
                    (Value::str(k), v)
                })
                .collect(),
        );
        (table, truncated)
    }

    /// As JSON (lower-case names, a string or an array of strings), for reports and serialize.
    pub fn to_json(&self) -> serde_json::Value {
        self.to_table(None).0.to_json()
    }
}

// ------------------------------------------------------------------------------------------------
// Query strings
// ------------------------------------------------------------------------------------------------

/// Percent-decoding as `ngx.decode_args` does (`+` is a space). Invalid escapes stay as they are.
pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(x) => {
                        out.push(x);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encoding of everything but unreserved characters (`ngx.encode_args`).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One decoded query argument: a value, or a flag (`?debug`, Lua `true`).
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Text(String),
    Flag,
}

/// `ngx.req.get_uri_args`: ordered names, each with its values.
pub fn parse_query(raw: &str) -> Vec<(String, Vec<QueryValue>)> {
    let mut out: Vec<(String, Vec<QueryValue>)> = Vec::new();
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (url_decode(k), QueryValue::Text(url_decode(v))),
            None => (url_decode(part), QueryValue::Flag),
        };
        if k.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vals)) => vals.push(v),
            None => out.push((k, vec![v])),
        }
    }
    out
}

fn query_value(v: &QueryValue) -> Value {
    match v {
        QueryValue::Text(s) => Value::str(s.as_str()),
        QueryValue::Flag => Value::Bool(true),
    }
}

/// The Lua table of `kong.request.get_query(max)`.
pub fn query_table(raw: &str, max: usize) -> Value {
    Value::Map(
        parse_query(raw)
            .into_iter()
            .take(max)
            .map(|(k, vals)| {
                let v = if vals.len() == 1 {
                    query_value(&vals[0])
                } else {
                    Value::Array(vals.iter().map(query_value).collect())
                };
                (Value::str(k), v)
            })
            .collect(),
    )
}

/// Encodes a Lua table as a query string the way `ngx.encode_args` does (keys sorted by Kong's
/// `set_query`, arrays repeat the key, `true` is a flag, `false` leaves the key out).
fn encode_args(table: &Value) -> Result<String, String> {
    let Some(entries) = table.as_map() else {
        return match table {
            Value::Array(a) if a.is_empty() => Ok(String::new()),
            _ => Err("args must be a table".into()),
        };
    };
    let mut pairs: Vec<(String, &Value)> = Vec::new();
    for (k, v) in entries {
        let key = lua_text(k).ok_or_else(|| {
            format!(
                "invalid key type: expected string or number, got {}",
                lua_type(k)
            )
        })?;
        pairs.push((key, v));
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut parts = Vec::new();
    for (k, v) in pairs {
        let vals: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for x in vals {
            match x {
                Value::Bool(true) => parts.push(url_encode(&k)),
                Value::Bool(false) | Value::Nil => {}
                other => {
                    let t = lua_text(other).ok_or_else(|| {
                        format!(
                            "invalid value \"{k}\": got {}, expected string, number or boolean",
                            lua_type(other)
                        )
                    })?;
                    parts.push(format!("{}={}", url_encode(&k), url_encode(&t)));
                }
            }
        }
    }
    Ok(parts.join("&"))
}

// ------------------------------------------------------------------------------------------------
// Lua-ish helpers
// ------------------------------------------------------------------------------------------------

fn arg(args: &[Value], i: usize) -> &Value {
    static NIL: Value = Value::Nil;
    args.get(i).unwrap_or(&NIL)
}

fn number(v: &Value) -> Option<f64> {
    is_number(v).then(|| v.as_f64()).flatten()
}

fn string_arg(v: &Value) -> Option<String> {
    match v {
        Value::Str(b) | Value::Bin(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// `checks.validate_header`: a header value as strings, or Kong's error.
fn header_values(name: &str, v: &Value) -> Result<Vec<String>, String> {
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

fn header_name(v: &Value) -> Result<String, String> {
    string_arg(v).ok_or_else(|| {
        format!(
            "invalid header name \"{}\": got {}, expected string",
            lua_tostring(v),
            lua_type(v)
        )
    })
}

/// A `{name = value(s)}` table as header entries (validated).
fn header_table(v: &Value, what: &str) -> Result<Vec<(String, Vec<String>)>, String> {
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
fn max_arg(v: &Value, what: &str) -> Result<usize, String> {
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

fn status_arg(v: &Value, min: i64) -> Result<i64, String> {
    let Some(n) = number(v) else {
        return Err("code must be a number".into());
    };
    if n < min as f64 || n > 599.0 {
        return Err(format!("code must be a number between {min} and 599"));
    }
    Ok(n as i64)
}

/// Kong's default messages for `kong.response.error` (`kong/pdk/response.lua`).
pub fn http_error_message(status: i64) -> String {
    let m = match status {
        400 => "Bad request",
        401 => "Unauthorized",
        402 => "Payment required",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        406 => "Not acceptable",
        407 => "Proxy authentication required",
        408 => "Request timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length required",
        412 => "Precondition failed",
        413 => "Payload too large",
        414 => "URI too long",
        415 => "Unsupported media type",
        416 => "Range not satisfiable",
        417 => "Expectation failed",
        418 => "I'm a teapot",
        421 => "Misdirected request",
        422 => "Unprocessable entity",
        423 => "Locked",
        424 => "Failed dependency",
        425 => "Too early",
        426 => "Upgrade required",
        428 => "Precondition required",
        429 => "Too many requests",
        431 => "Request header fields too large",
        451 => "Unavailable for legal reasons",
        494 => "Request header or cookie too large",
        500 => "An unexpected error occurred",
        501 => "Not implemented",
        502 => "An invalid response was received from the upstream server",
        503 => "The upstream server is currently unavailable",
        504 => "The upstream server is timing out",
        505 => "HTTP version not supported",
        506 => "Variant also negotiates",
        507 => "Insufficient storage",
        508 => "Loop detected",
        510 => "Not extended",
        511 => "Network authentication required",
        other => return format!("The upstream server responded with {other}"),
    };
    m.to_owned()
}

/// The response content type Kong picks from an `Accept` header (`tools.http.get_response_type`,
/// simplified: the first listed type Kong knows, JSON by default).
pub fn response_type(accept: Option<&str>) -> &'static str {
    let json = "application/json; charset=utf-8";
    let Some(accept) = accept else {
        return json;
    };
    let mut best: (f64, &'static str) = (0.0, json);
    for item in accept.split(',') {
        let mut parts = item.trim().split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f64>().ok())
            .unwrap_or(1.0);
        let mime = match media.as_str() {
            "text/html" => Some("text/html; charset=utf-8"),
            "application/json" | "application/*" | "*/*" => Some(json),
            "text/plain" | "text/*" => Some("text/plain; charset=utf-8"),
            "application/xml" => Some("application/xml; charset=utf-8"),
            _ => None,
        };
        if let Some(m) = mime {
            if q > best.0 {
                best = (q, m);
            }
        }
    }
    best.1
}

/// Kong's error body for a content type (`tools.http` error templates).
pub fn error_body(content_type: &str, message: &str, request_id: &str) -> String {
    if content_type.starts_with("text/html") {
        format!(
            "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    \
             <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n    <p>{message}.</p>\n    \
             <p>request_id: {request_id}</p>\n  </body>\n</html>\n"
        )
    } else if content_type.starts_with("text/plain") {
        format!("{message}\nrequest_id: {request_id}\n")
    } else if content_type.starts_with("application/xml") {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{message}</message>\n  \
             <requestid>{request_id}</requestid>\n</error>\n"
        )
    } else {
        format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"{request_id}\"\n}}")
    }
}

// ------------------------------------------------------------------------------------------------
// The model
// ------------------------------------------------------------------------------------------------

/// The request as the client sent it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientRequest {
    /// Kong's request id (`kong.request.get_id`, error bodies, serialize `request.id`).
    pub id: String,
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    pub host: String,
    pub port: i64,
    /// The path as received (no query).
    pub path: String,
    /// The raw query string, without `?`.
    pub raw_query: String,
    pub headers: Headers,
    #[serde(serialize_with = "ser_bytes")]
    pub body: Vec<u8>,
    pub http_version: f64,
    pub client_ip: String,
    pub client_port: i64,
    /// `ngx.req.start_time()` in seconds.
    pub start_time: f64,
    /// The router's URI captures.
    pub unnamed_captures: Vec<String>,
    pub named_captures: Vec<(String, String)>,
}

impl Default for ClientRequest {
    fn default() -> ClientRequest {
        ClientRequest {
            id: "4d2d4f6e1c6a4b4f8a9e2b7c3d5e6f70".into(),
            method: "GET".into(),
            scheme: "http".into(),
            host: "example.com".into(),
            port: 80,
            path: "/".into(),
            raw_query: String::new(),
            headers: Headers(vec![("host".into(), "example.com".into())]),
            body: Vec::new(),
            http_version: 1.1,
            client_ip: "127.0.0.1".into(),
            client_port: 54321,
            start_time: 1_767_225_600.123,
            unnamed_captures: Vec::new(),
            named_captures: Vec::new(),
        }
    }
}

/// An HTTP response (the upstream's, or the one sent to the client).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpResponse {
    pub status: i64,
    pub headers: Headers,
    #[serde(serialize_with = "ser_bytes")]
    pub body: Vec<u8>,
}

impl Default for HttpResponse {
    fn default() -> HttpResponse {
        HttpResponse {
            status: 200,
            headers: Headers(vec![
                ("Content-Type".into(), "text/plain".into()),
                ("Server".into(), "mock-upstream/1.0.0".into()),
                ("X-Powered-By".into(), "mock_upstream".into()),
            ]),
            body: b"ok".to_vec(),
        }
    }
}

fn ser_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

fn ser_opt_bytes<S: serde::Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.serialize_some(&String::from_utf8_lossy(b)),
        None => s.serialize_none(),
    }
}

/// The request Kong sends upstream, as plugins modified it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamRequest {
    pub method: String,
    pub scheme: String,
    pub host: String,
    pub port: i64,
    pub path: String,
    pub raw_query: String,
    pub headers: Headers,
    /// `None`: the client body is passed through unchanged.
    #[serde(serialize_with = "ser_opt_bytes")]
    pub body: Option<Vec<u8>>,
    /// `kong.service.set_upstream`.
    pub upstream: Option<String>,
    /// `kong.service.set_target`.
    pub target: Option<(String, i64)>,
    /// `kong.service.request.enable_buffering` (or a `response` handler, spec §6).
    pub buffering: bool,
    pub retries: Option<i64>,
    pub timeouts: Option<(i64, i64, i64)>,
}

/// Who produced the client response (`kong.response.get_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Service,
    Exit,
    Error,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Service => "service",
            Source::Exit => "exit",
            Source::Error => "error",
        }
    }
}

/// One `kong.log.*` line (or a line Kong itself logged about the plugin).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLine {
    pub phase: String,
    pub level: String,
    pub text: String,
    /// `plugin` (kong.log.* from the plugin) or `kong` (Kong's own messages).
    pub source: String,
}

/// What a scripted override answers.
#[derive(Debug, Clone, PartialEq)]
pub enum OverrideAnswer {
    /// The first return value.
    Return(Value),
    /// `nil, err` (see [`PdkOutcome::SoftError`]).
    SoftError(String),
    /// A Lua error.
    Raise(String),
    /// The emulated PDK answers as usual (with `delay`, only the timing changes).
    Emulate,
}

/// A scripted PDK answer: "this method (with these leading arguments, in this phase) answers X".
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub method: String,
    /// Leading positional arguments that must match (strings compare by bytes, numbers by value).
    pub args: Option<Vec<Value>>,
    pub phase: Option<String>,
    pub answer: OverrideAnswer,
    pub delay: Option<Duration>,
    /// How many calls it answers (`None`: all).
    pub times: Option<u32>,
    pub used: u32,
}

impl Override {
    fn matches(&self, phase: &str, method: &str, args: &[Value]) -> bool {
        if self.method != method {
            return false;
        }
        if self.phase.as_deref().is_some_and(|p| p != phase) {
            return false;
        }
        if self.times.is_some_and(|t| self.used >= t) {
            return false;
        }
        match &self.args {
            None => true,
            Some(want) => want
                .iter()
                .enumerate()
                .all(|(i, w)| loose_eq(w, arg(args, i))),
        }
    }
}

/// The data Kong captures when the log phase starts (spec §6).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Saved {
    /// `cjson.encode(kong.log.serialize())`.
    pub serialize_json: String,
    #[serde(skip)]
    pub ctx_shared: Vec<(String, Value)>,
    #[serde(skip)]
    pub ngx_ctx: Vec<(String, Value)>,
    pub request_headers: Headers,
    pub response_headers: Headers,
    pub response_status: i64,
    pub req_start_time: f64,
    pub source: Source,
}

/// How far the request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Before the upstream was called (rewrite, access).
    Request,
    /// The upstream answered; the response is buffered (response phase).
    Proxied,
    /// The client got its response.
    Sent,
}

/// The emulated Kong request. Fill the public configuration fields, then call
/// [`KongRequest::start`]; drive phases with [`KongRequest::enter_phase`] and hand the request
/// to the host as the [`Pdk`].
#[derive(Debug, Clone)]
pub struct KongRequest {
    // ---- configuration -------------------------------------------------------------------
    pub version: KongVersion,
    /// The protocol of the server being driven (a few answers differ, spec §5.3).
    pub protocol: Protocol,
    pub client: ClientRequest,
    /// The matched route (a Kong route entity as a table), if any.
    pub route: Option<Value>,
    /// The matched service entity, if any.
    pub service: Option<Value>,
    /// The authenticated consumer, if any.
    pub consumer: Option<Value>,
    /// The authenticated credential (`{id, consumer_id}`), if any.
    pub credential: Option<Value>,
    /// Consumers `kong.client.load_consumer` can find (the authenticated one is added).
    pub consumers: Vec<Value>,
    /// Upstream entities `kong.service.set_upstream` accepts.
    pub upstreams: Vec<String>,
    /// `trusted_ips` (exact addresses, or `0.0.0.0/0`, `::/0` for all).
    pub trusted_ips: Vec<String>,
    /// Extra nginx variables for `kong.nginx.get_var`.
    pub nginx_vars: Vec<(String, String)>,
    pub node_id: String,
    pub hostname: String,
    /// The plugin entity id (`kong.plugin.get_id`).
    pub plugin_id: String,
    pub workspace_id: String,
    /// What the upstream answers.
    pub upstream_answer: HttpResponse,
    pub overrides: Vec<Override>,

    // ---- state ----------------------------------------------------------------------------
    pub stage: Stage,
    pub phase: String,
    pub shared: Vec<(String, Value)>,
    pub ngx_ctx: Vec<(String, Value)>,
    pub serialize_values: Vec<(String, Value)>,
    pub upstream_request: UpstreamRequest,
    /// The upstream's answer once proxied.
    pub service_response: Option<HttpResponse>,
    /// The client response as built so far (status `None` until decided).
    pub response_status: Option<i64>,
    pub response_headers: Headers,
    pub response_body: Vec<u8>,
    pub source: Source,
    /// Whether the request ended early (`exit`, `error`, a 500 after a failure).
    pub exited: bool,
    pub logs: Vec<LogLine>,
    pub saved: Option<Saved>,
}

impl Default for KongRequest {
    fn default() -> KongRequest {
        KongRequest::new(ClientRequest::default())
    }
}

impl KongRequest {
    /// A request with Kong 3.9 defaults and no route, service or consumer.
    pub fn new(client: ClientRequest) -> KongRequest {
        let upstream_request = UpstreamRequest {
            method: client.method.clone(),
            scheme: "http".into(),
            host: "127.0.0.1".into(),
            port: 80,
            path: client.path.clone(),
            raw_query: client.raw_query.clone(),
            headers: client.headers.clone(),
            body: None,
            upstream: None,
            target: None,
            buffering: false,
            retries: None,
            timeouts: None,
        };
        KongRequest {
            version: KongVersion::DEFAULT,
            protocol: Protocol::MsgPack,
            client,
            route: None,
            service: None,
            consumer: None,
            credential: None,
            consumers: Vec::new(),
            upstreams: Vec::new(),
            trusted_ips: Vec::new(),
            nginx_vars: Vec::new(),
            node_id: "a8f3b1c2-5d4e-4f60-9a7b-8c9d0e1f2a3b".into(),
            hostname: "mock-kong".into(),
            plugin_id: String::new(),
            workspace_id: super::DEFAULT_WS_ID.into(),
            upstream_answer: HttpResponse::default(),
            overrides: Vec::new(),
            stage: Stage::Request,
            phase: String::new(),
            shared: Vec::new(),
            ngx_ctx: Vec::new(),
            serialize_values: Vec::new(),
            upstream_request,
            service_response: None,
            response_status: None,
            response_headers: Headers::new(),
            response_body: Vec::new(),
            source: Source::Service,
            exited: false,
            logs: Vec::new(),
            saved: None,
        }
    }

    /// Derives the upstream request from the client request and the service (call after
    /// setting the configuration fields): method, path (service path + request path), query,
    /// headers (`Host` becomes the service host unless the route preserves it), body unchanged.
    pub fn start(&mut self) {
        let svc = self.service.clone();
        let get = |k: &str| svc.as_ref().and_then(|s| s.get(k)).cloned();
        let scheme = get("protocol")
            .and_then(|v| string_arg(&v))
            .unwrap_or_else(|| "http".into());
        let host = get("host")
            .and_then(|v| string_arg(&v))
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = get("port")
            .and_then(|v| v.as_i64())
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let prefix = get("path").and_then(|v| string_arg(&v)).unwrap_or_default();
        let path = if prefix.is_empty() || prefix == "/" {
            self.client.path.clone()
        } else if self.client.path == "/" {
            prefix
        } else {
            format!(
                "{}/{}",
                prefix.trim_end_matches('/'),
                self.client.path.trim_start_matches('/')
            )
        };
        let preserve_host = self
            .route
            .as_ref()
            .and_then(|r| r.get("preserve_host"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut headers = self.client.headers.clone();
        if !preserve_host && self.service.is_some() {
            let default_port = if scheme == "https" { 443 } else { 80 };
            let h = if port == default_port {
                host.clone()
            } else {
                format!("{host}:{port}")
            };
            headers.set("host", vec![h]);
        }
        self.upstream_request = UpstreamRequest {
            method: self.client.method.clone(),
            scheme,
            host,
            port,
            path,
            raw_query: self.client.raw_query.clone(),
            headers,
            body: None,
            upstream: None,
            target: None,
            buffering: false,
            retries: None,
            timeouts: None,
        };
        if let Some(c) = self.consumer.clone() {
            if !self.consumers.iter().any(|x| loose_eq(x, &c)) {
                self.consumers.push(c);
            }
        }
        let ms = (self.client.start_time * 1000.0) as i64;
        self.set_ctx_value("KONG_PROCESSING_START", Value::Int(ms));
    }

    fn set_ctx_value(&mut self, k: &str, v: Value) {
        self.ngx_ctx.retain(|(key, _)| key != k);
        if !v.is_nil() {
            self.ngx_ctx.push((k.to_owned(), v));
        }
    }

    /// Called before each event: moves the request along Kong's flow. Entering `response`
    /// proxies (buffered); entering `log` sends the client response (proxying first if the
    /// request was not ended) and takes the log-phase snapshot.
    pub fn enter_phase(&mut self, phase: &str) {
        self.phase = phase.to_owned();
        let ms = (self.client.start_time * 1000.0) as i64;
        match phase {
            "rewrite" => self.set_ctx_value("KONG_REWRITE_START", Value::Int(ms + 1)),
            "access" => self.set_ctx_value("KONG_ACCESS_START", Value::Int(ms + 2)),
            "response" => {
                self.upstream_request.buffering = true;
                if self.stage == Stage::Request && !self.exited {
                    self.proxy();
                }
                self.set_ctx_value("KONG_RESPONSE_START", Value::Int(ms + 40));
            }
            "log" => {
                self.finish();
                self.save();
                self.set_ctx_value("KONG_LOG_START", Value::Int(ms + 50));
            }
            _ => {}
        }
    }

    /// The upstream answers: `kong.service.response.*` see it; the client response starts as a
    /// copy, with the headers plugins set before (those win over the upstream's).
    pub fn proxy(&mut self) {
        if self.stage != Stage::Request || self.exited {
            return;
        }
        let up = self.upstream_answer.clone();
        let mut headers = up.headers.clone();
        for name in self.response_headers.names() {
            headers.clear(&name);
        }
        headers.0.extend(self.response_headers.0.iter().cloned());
        for (k, v) in [
            ("X-Kong-Upstream-Latency", "0"),
            ("X-Kong-Proxy-Latency", "0"),
        ] {
            if headers.get(k).is_none() {
                headers.add(k, v.into());
            }
        }
        if headers.get("via").is_none() {
            headers.add("Via", format!("1.1 kong/{}.0", self.version));
        }
        self.response_status = Some(up.status);
        self.response_headers = headers;
        self.response_body = up.body.clone();
        self.source = Source::Service;
        self.service_response = Some(up);
        self.stage = Stage::Proxied;
    }

    /// The client response is sent (proxying first when nothing ended the request).
    pub fn finish(&mut self) {
        if self.stage == Stage::Request && !self.exited {
            self.proxy();
        }
        self.stage = Stage::Sent;
    }

    /// Ends the request with Kong's generic error (a handler failed in a request phase,
    /// spec §4.7, §5.6): `kong.response.error(status)`.
    pub fn fail(&mut self, status: i64) {
        let ct = response_type(self.client.headers.get("accept"));
        let body = error_body(ct, &http_error_message(status), &self.client.id);
        self.response_status = Some(status);
        self.response_headers = Headers(vec![("Content-Type".into(), ct.into())]);
        self.response_body = body.into_bytes();
        self.source = Source::Error;
        self.exited = true;
    }

    /// Records a line Kong itself logs (not the plugin).
    pub fn kong_log(&mut self, level: &str, text: impl Into<String>) {
        self.logs.push(LogLine {
            phase: self.phase.clone(),
            level: level.into(),
            text: text.into(),
            source: "kong".into(),
        });
    }

    /// The log-phase snapshot (spec §6).
    pub fn save(&mut self) {
        if self.saved.is_some() {
            return;
        }
        let json = serialize::serialize(self);
        self.saved = Some(Saved {
            serialize_json: cjson_escape(&json.to_string()),
            ctx_shared: self.shared.clone(),
            ngx_ctx: self.ngx_ctx.clone(),
            request_headers: self.client.headers.clone(),
            response_headers: self.response_headers.clone(),
            response_status: self.response_status.unwrap_or(200),
            req_start_time: self.client.start_time,
            source: self.source,
        });
    }

    /// The client response status as sent (200 if nothing set one).
    pub fn status(&self) -> i64 {
        self.response_status.unwrap_or(200)
    }

    fn trusted(&self, ip: &str) -> bool {
        self.trusted_ips
            .iter()
            .any(|t| t == ip || t == "0.0.0.0/0" || t == "::/0")
    }

    fn raw_body_value(&self, body: &[u8]) -> Value {
        if self.version.raw_body_as_bin() && self.protocol == Protocol::MsgPack {
            Value::Bin(body.to_vec())
        } else {
            Value::Str(body.to_vec())
        }
    }

    fn log_line(&mut self, level: &str, text: String) {
        self.logs.push(LogLine {
            phase: self.phase.clone(),
            level: level.into(),
            text,
            source: "plugin".into(),
        });
    }

    /// The effective phase for checks: the one the host passes.
    fn check(phase: &str, allowed: &[&str]) -> Result<(), PdkOutcome> {
        if allowed.contains(&phase) {
            Ok(())
        } else {
            Err(PdkOutcome::Raise(phase_error(phase, allowed)))
        }
    }

    /// In the log timer there is no request: request-bound functions raise.
    fn live(phase: &str) -> Result<(), PdkOutcome> {
        if phase == "log" {
            Err(PdkOutcome::Raise(NO_REQUEST.into()))
        } else {
            Ok(())
        }
    }

    fn request_uri(&self) -> String {
        if self.client.raw_query.is_empty() {
            self.client.path.clone()
        } else {
            format!("{}?{}", self.client.path, self.client.raw_query)
        }
    }

    /// An nginx variable as Kong would read it (a few common ones plus `nginx_vars`).
    pub fn nginx_var(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.nginx_vars.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        let c = &self.client;
        let v = match name {
            "remote_addr" | "realip_remote_addr" | "binary_remote_addr" => c.client_ip.clone(),
            "remote_port" | "realip_remote_port" => c.client_port.to_string(),
            "host" => c.host.clone(),
            "scheme" => c.scheme.clone(),
            "server_port" => c.port.to_string(),
            "request_method" => c.method.clone(),
            "request_uri" => self.request_uri(),
            "uri" => c.path.clone(),
            "args" | "query_string" => {
                if c.raw_query.is_empty() {
                    return None;
                }
                c.raw_query.clone()
            }
            "is_args" => if c.raw_query.is_empty() { "" } else { "?" }.into(),
            "server_protocol" => format!("HTTP/{}", lua_number(c.http_version)),
            "request_length" => serialize::request_size(self).to_string(),
            "upstream_uri" => self.upstream_request.path.clone(),
            "upstream_scheme" => self.upstream_request.scheme.clone(),
            "upstream_host" => self
                .upstream_request
                .headers
                .get("host")
                .unwrap_or(&self.upstream_request.host)
                .to_owned(),
            "request_id" => c.id.clone(),
            "hostname" => self.hostname.clone(),
            _ => {
                if let Some(h) = name.strip_prefix("http_") {
                    return c.headers.get(h).map(str::to_owned);
                }
                if let Some(a) = name.strip_prefix("arg_") {
                    return parse_query(&c.raw_query)
                        .into_iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(a))
                        .and_then(|(_, v)| match v.first() {
                            Some(QueryValue::Text(t)) => Some(t.clone()),
                            Some(QueryValue::Flag) => Some(String::new()),
                            None => None,
                        });
                }
                if let Some(h) = name.strip_prefix("sent_http_") {
                    return self.response_headers.get(h).map(str::to_owned);
                }
                return None;
            }
        };
        Some(v)
    }

    fn forwarded(&self, header: &str) -> Option<String> {
        if self.trusted(&self.client.client_ip) {
            self.client
                .headers
                .get(header)
                .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
        } else {
            None
        }
    }

    fn find_consumer(&self, id: &str, by_username: bool) -> Option<Value> {
        let key = if by_username { "username" } else { "id" };
        self.consumers
            .iter()
            .find(|c| c.get(key).and_then(Value::as_str) == Some(id))
            .or_else(|| {
                // `by_username`: Kong tries the id first, then the username.
                by_username.then(|| {
                    self.consumers
                        .iter()
                        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
                })?
            })
            .cloned()
    }

    fn exit_outcome(&mut self, status: i64, body: Vec<u8>, headers: Headers) -> PdkOutcome {
        let mut merged = self.response_headers.clone();
        for name in headers.names() {
            merged.clear(&name);
        }
        merged.0.extend(headers.0.iter().cloned());
        self.response_status = Some(status);
        self.response_headers = merged;
        self.response_body = body.clone();
        self.exited = true;
        let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in headers.0 {
            match grouped.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&k)) {
                Some((_, vals)) => vals.push(v),
                None => grouped.push((k, vec![v])),
            }
        }
        PdkOutcome::Exit {
            status,
            body: (!body.is_empty()).then_some(body),
            headers: grouped,
        }
    }

    /// Runs the emulated PDK function (no overrides).
    fn dispatch(&mut self, phase: &str, method: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        let in_log = phase == "log";
        // ---- saved data in the log timer (spec §4.5) ----------------------------------------
        if in_log {
            if let Some(saved) = self.saved.clone() {
                let v = self.version;
                match method {
                    "kong.request.get_headers" if v.saves_request_headers() => {
                        return Ok(saved.request_headers.to_table(None).0)
                    }
                    "kong.request.get_header" if v.saves_request_headers() => {
                        let name = string_arg(arg(args, 0)).unwrap_or_default();
                        return Ok(saved
                            .request_headers
                            .get(&name)
                            .map(Value::str)
                            .unwrap_or(Value::Nil));
                    }
                    "kong.response.get_status" if v.saves_response() => {
                        return Ok(Value::Int(saved.response_status))
                    }
                    "kong.response.get_headers" if v.saves_response() => {
                        return Ok(saved.response_headers.to_table(None).0)
                    }
                    "kong.response.get_header" if v.saves_response() => {
                        let name = string_arg(arg(args, 0)).unwrap_or_default();
                        return Ok(saved
                            .response_headers
                            .get(&name)
                            .map(Value::str)
                            .unwrap_or(Value::Nil));
                    }
                    "kong.response.get_source" => return Ok(Value::str(saved.source.as_str())),
                    "kong.nginx.req_start_time" => return Ok(Value::Float(saved.req_start_time)),
                    "kong.log.serialize" => return Ok(Value::str(saved.serialize_json)),
                    _ => {}
                }
            }
        }
        let a0 = arg(args, 0);
        let a1 = arg(args, 1);
        let v = match method {
            // ---- kong.client -----------------------------------------------------------------
            "kong.client.get_ip" => {
                Self::live(phase)?;
                Value::str(self.client.client_ip.as_str())
            }
            "kong.client.get_forwarded_ip" => {
                Self::live(phase)?;
                Value::str(
                    self.forwarded("x-forwarded-for")
                        .unwrap_or_else(|| self.client.client_ip.clone()),
                )
            }
            "kong.client.get_port" => {
                Self::live(phase)?;
                Value::Int(self.client.client_port)
            }
            "kong.client.get_forwarded_port" => {
                Self::live(phase)?;
                Value::Int(
                    self.forwarded("x-forwarded-port")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(self.client.client_port),
                )
            }
            "kong.client.get_credential" => {
                Self::check(phase, AUTH_AND_LATER)?;
                self.credential.clone().unwrap_or(Value::Nil)
            }
            "kong.client.get_consumer" => {
                Self::check(phase, AUTH_AND_LATER)?;
                self.consumer.clone().unwrap_or(Value::Nil)
            }
            "kong.client.load_consumer" => {
                Self::check(phase, AUTH_AND_LATER)?;
                let Some(id) = string_arg(a0) else {
                    return Err(raise("consumer_id must be a string".into()));
                };
                let by_username = a1.is_truthy();
                if !by_username && !is_uuid(&id) {
                    return Err(raise(
                        "cannot load a consumer with an id that is not a uuid".into(),
                    ));
                }
                self.find_consumer(&id, by_username).unwrap_or(Value::Nil)
            }
            "kong.client.authenticate" => {
                Self::check(phase, ACCESS)?;
                if !matches!(a0, Value::Nil | Value::Map(_) | Value::Array(_)) {
                    return Err(raise("consumer must be a table or nil".into()));
                }
                if !matches!(a1, Value::Nil | Value::Map(_) | Value::Array(_)) {
                    return Err(raise("credential must be a table or nil".into()));
                }
                if a0.is_nil() && a1.is_nil() {
                    return Err(raise(
                        "either credential or consumer must be provided".into(),
                    ));
                }
                self.consumer = (!a0.is_nil()).then(|| a0.clone());
                self.credential = (!a1.is_nil()).then(|| a1.clone());
                Value::Nil
            }
            "kong.client.get_protocol" => {
                Self::check(phase, AUTH_AND_LATER)?;
                Self::live(phase)?;
                let terminated = a0.is_truthy()
                    && self.trusted(&self.client.client_ip)
                    && self.client.headers.get("x-forwarded-proto").is_some();
                if terminated {
                    Value::str(
                        self.client
                            .headers
                            .get("x-forwarded-proto")
                            .unwrap_or("http")
                            .to_ascii_lowercase(),
                    )
                } else {
                    Value::str(self.client.scheme.as_str())
                }
            }
            // ---- kong.ctx.shared (saved table in log, spec §4.5) ---------------------------------
            "kong.ctx.shared.get" => {
                let k = lua_text(a0).unwrap_or_default();
                let table = match (&self.saved, in_log) {
                    (Some(s), true) => &s.ctx_shared,
                    _ => &self.shared,
                };
                lookup(table, &k)
            }
            "kong.ctx.shared.set" => {
                let k = lua_text(a0).ok_or_else(|| {
                    raise(format!(
                        "bad argument #1 to 'kong.ctx.shared.set' (string expected, got {})",
                        lua_type(a0)
                    ))
                })?;
                let table = match (&mut self.saved, in_log) {
                    (Some(s), true) => &mut s.ctx_shared,
                    _ => &mut self.shared,
                };
                table.retain(|(key, _)| *key != k);
                if !a1.is_nil() {
                    table.push((k, a1.clone()));
                }
                Value::Nil
            }
            // ---- kong.ip ---------------------------------------------------------------------
            "kong.ip.is_trusted" => {
                let ip = lua_text(a0).unwrap_or_default();
                Value::Bool(self.trusted(&ip))
            }
            // ---- kong.log --------------------------------------------------------------------
            "kong.log.alert" | "kong.log.crit" | "kong.log.err" | "kong.log.warn"
            | "kong.log.notice" | "kong.log.info" | "kong.log.debug" => {
                let level = method.trim_start_matches("kong.log.");
                let text: String = args.iter().map(lua_tostring).collect();
                self.log_line(level, text);
                Value::Nil
            }
            "kong.log.inspect" => {
                let text: Vec<String> = args.iter().map(lua_tostring).collect();
                self.log_line("debug", text.join(" "));
                Value::Nil
            }
            "kong.log.set_serialize_value" => {
                Self::check(phase, WITH_CTX)?;
                let Some(k) = string_arg(a0) else {
                    return Err(raise("key must be a string".into()));
                };
                let mode = arg(args, 2)
                    .get("mode")
                    .and_then(Value::as_str)
                    .unwrap_or("set")
                    .to_owned();
                if !["set", "add", "replace"].contains(&mode.as_str()) {
                    return Err(raise("mode must be 'set', 'add' or 'replace'".into()));
                }
                if matches!(a1, Value::Ext(..)) {
                    return Err(raise("value must be nil, a number, string, boolean or a non-self-referencial table containing numbers, string and booleans".into()));
                }
                self.serialize_values.retain(|(key, _)| *key != k);
                self.serialize_values.push((k, a1.clone()));
                Value::Nil
            }
            "kong.log.serialize" => {
                Self::check(phase, LOG)?;
                // Only reached in log without a snapshot (not through the runner).
                Value::str(cjson_escape(&serialize::serialize(self).to_string()))
            }
            // ---- kong.nginx ------------------------------------------------------------------
            "kong.nginx.get_var" => {
                Self::live(phase)?;
                let name = lua_text(a0).unwrap_or_default();
                self.nginx_var(&name).map(Value::str).unwrap_or(Value::Nil)
            }
            "kong.nginx.get_tls1_version_str" => {
                Self::live(phase)?;
                if self.client.scheme == "https" {
                    Value::str("TLSv1.3")
                } else {
                    Value::Nil
                }
            }
            "kong.nginx.get_ctx" => {
                let k = lua_text(a0).unwrap_or_default();
                let table = match (&self.saved, in_log) {
                    (Some(s), true) => &s.ngx_ctx,
                    _ => &self.ngx_ctx,
                };
                lookup(table, &k)
            }
            "kong.nginx.set_ctx" => {
                let k = lua_text(a0).unwrap_or_default();
                let table = match (&mut self.saved, in_log) {
                    (Some(s), true) => &mut s.ngx_ctx,
                    _ => &mut self.ngx_ctx,
                };
                table.retain(|(key, _)| *key != k);
                if !a1.is_nil() {
                    table.push((k, a1.clone()));
                }
                Value::Nil
            }
            "kong.nginx.req_start_time" => {
                Self::live(phase)?;
                Value::Float(self.client.start_time)
            }
            "kong.nginx.get_subsystem" => Value::str("http"),
            "kong.nginx.get_statistics" => {
                Self::live(phase)?;
                Value::map([
                    ("connections_active", Value::Int(1)),
                    ("connections_reading", Value::Int(0)),
                    ("connections_writing", Value::Int(1)),
                    ("connections_waiting", Value::Int(0)),
                    ("connections_accepted", Value::Int(1)),
                    ("connections_handled", Value::Int(1)),
                    ("total_requests", Value::Int(1)),
                ])
            }
            // ---- kong.node -------------------------------------------------------------------
            "kong.node.get_id" => Value::str(self.node_id.as_str()),
            "kong.node.get_hostname" => Value::str(self.hostname.as_str()),
            "kong.node.get_memory_stats" => {
                let dict = |cap: i64| {
                    Value::map([
                        ("allocated_slabs", Value::Int(cap / 8)),
                        ("capacity", Value::Int(cap)),
                    ])
                };
                Value::map([
                    (
                        "lua_shared_dicts",
                        Value::map([
                            ("kong", dict(5_242_880)),
                            ("kong_db_cache", dict(134_217_728)),
                        ]),
                    ),
                    (
                        "workers_lua_vms",
                        Value::Array(vec![Value::map([
                            ("http_allocated_gc", Value::Int(1_048_576)),
                            ("pid", Value::Int(i64::from(std::process::id()))),
                        ])]),
                    ),
                ])
            }
            // ---- kong.plugin -----------------------------------------------------------------
            "kong.plugin.get_id" => Value::str(self.plugin_id.as_str()),
            // ---- kong.request ----------------------------------------------------------------
            m if m.starts_with("kong.request.") => return self.request_fn(phase, m, args),
            // ---- kong.response ---------------------------------------------------------------
            m if m.starts_with("kong.response.") => return self.response_fn(phase, m, args),
            // ---- kong.router -----------------------------------------------------------------
            "kong.router.get_route" => {
                Self::check(phase, AUTH_AND_LATER)?;
                self.route.clone().unwrap_or(Value::Nil)
            }
            "kong.router.get_service" => {
                Self::check(phase, AUTH_AND_LATER)?;
                self.service.clone().unwrap_or(Value::Nil)
            }
            // ---- kong.service ----------------------------------------------------------------
            m if m.starts_with("kong.service.request.") => {
                return self.service_request_fn(phase, m, args)
            }
            m if m.starts_with("kong.service.response.") => {
                return self.service_response_fn(phase, m, args)
            }
            "kong.service.set_upstream" => {
                Self::check(phase, ACCESS)?;
                let Some(host) = string_arg(a0) else {
                    return Err(raise("host must be a string".into()));
                };
                if !self.upstreams.contains(&host) {
                    return Err(PdkOutcome::SoftError(format!(
                        "could not find an Upstream named '{host}'"
                    )));
                }
                self.upstream_request.upstream = Some(host);
                if self.protocol == Protocol::ProtoBuf && !self.version.set_upstream_returns_bool()
                {
                    // The pre-3.7 output type was Empty: pb.encode raised (spec §5.3).
                    return Err(raise(
                        "bad argument #2 to 'encode' (table expected, got boolean)".into(),
                    ));
                }
                Value::Bool(true)
            }
            "kong.service.set_target" => {
                Self::check(phase, REWRITE_ACCESS_BALANCER_PREREAD)?;
                let Some(host) = string_arg(a0) else {
                    return Err(raise("host must be a string".into()));
                };
                let Some(port) = number(a1).filter(|p| p.fract() == 0.0) else {
                    return Err(raise("port must be an integer".into()));
                };
                if !(0.0..=65535.0).contains(&port) {
                    return Err(raise(format!(
                        "port must be an integer between 0 and 65535: given {}",
                        lua_number(port)
                    )));
                }
                self.upstream_request.target = Some((host, port as i64));
                Value::Nil
            }
            "kong.service.set_retries" => {
                Self::check(phase, ACCESS)?;
                let Some(r) = number(a0).filter(|p| p.fract() == 0.0) else {
                    return Err(raise("retries must be an integer".into()));
                };
                if !(0.0..=32767.0).contains(&r) {
                    return Err(raise(format!(
                        "retries must be an integer between 0 and 32767: given {}",
                        lua_number(r)
                    )));
                }
                self.upstream_request.retries = Some(r as i64);
                Value::Nil
            }
            "kong.service.set_timeouts" => {
                Self::check(phase, ACCESS)?;
                let mut t = [0i64; 3];
                for (i, name) in ["connect_timeout", "write_timeout", "read_timeout"]
                    .iter()
                    .enumerate()
                {
                    let Some(n) = number(arg(args, i)).filter(|p| p.fract() == 0.0) else {
                        return Err(raise(format!("{name} must be an integer")));
                    };
                    if !(1.0..=2_147_483_646.0).contains(&n) {
                        return Err(raise(format!(
                            "{name} must be an integer between 1 and 2147483646: given {}",
                            lua_number(n)
                        )));
                    }
                    t[i] = n as i64;
                }
                self.upstream_request.timeouts = Some((t[0], t[1], t[2]));
                Value::Nil
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }

    fn request_fn(&mut self, phase: &str, m: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let raise = |m: &str| PdkOutcome::Raise(m.to_owned());
        let a0 = arg(args, 0);
        let c = &self.client;
        let before_content = matches!(m, "kong.request.get_raw_body" | "kong.request.get_body");
        if before_content {
            Self::check(phase, BEFORE_CONTENT)?;
        } else if m != "kong.request.get_uri_captures" || self.version.has_uri_captures() {
            Self::check(phase, REQUEST)?;
        }
        // get_start_time and get_uri_captures read ngx.ctx (cloned into the timer).
        if !matches!(
            m,
            "kong.request.get_start_time" | "kong.request.get_uri_captures" | "kong.request.get_id"
        ) {
            Self::live(phase)?;
        }
        let v = match m {
            "kong.request.get_id" => Value::str(c.id.as_str()),
            "kong.request.get_scheme" => Value::str(c.scheme.as_str()),
            "kong.request.get_host" => Value::str(c.host.as_str()),
            "kong.request.get_port" => Value::Int(c.port),
            "kong.request.get_forwarded_scheme" => Value::str(
                self.forwarded("x-forwarded-proto")
                    .map(|s| s.to_ascii_lowercase())
                    .unwrap_or_else(|| c.scheme.clone()),
            ),
            "kong.request.get_forwarded_host" => Value::str(
                self.forwarded("x-forwarded-host")
                    .map(|h| h.split(':').next().unwrap_or("").to_ascii_lowercase())
                    .unwrap_or_else(|| c.host.clone()),
            ),
            "kong.request.get_forwarded_port" => Value::Int(
                self.forwarded("x-forwarded-port")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(c.port),
            ),
            "kong.request.get_forwarded_path" => Value::str(
                self.forwarded("x-forwarded-path")
                    .unwrap_or_else(|| c.path.clone()),
            ),
            "kong.request.get_forwarded_prefix" => self
                .forwarded("x-forwarded-prefix")
                .map(Value::str)
                .unwrap_or(Value::Nil),
            "kong.request.get_http_version" => Value::Float(c.http_version),
            "kong.request.get_method" => Value::str(c.method.as_str()),
            "kong.request.get_path" | "kong.request.get_raw_path" => Value::str(c.path.as_str()),
            "kong.request.get_path_with_query" => Value::str(self.request_uri()),
            "kong.request.get_raw_query" => Value::str(c.raw_query.as_str()),
            "kong.request.get_query_arg" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("query argument name must be a string"));
                };
                parse_query(&c.raw_query)
                    .into_iter()
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, v)| v.first().map(query_value))
                    .unwrap_or(Value::Nil)
            }
            "kong.request.get_query" => {
                let max = max_arg(a0, "max_args").map_err(PdkOutcome::Raise)?;
                query_table(&c.raw_query, max)
            }
            "kong.request.get_header" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("header name must be a string"));
                };
                c.headers.get(&name).map(Value::str).unwrap_or(Value::Nil)
            }
            "kong.request.get_headers" => {
                let max = max_arg(a0, "max_headers").map_err(PdkOutcome::Raise)?;
                c.headers.to_table(Some(max)).0
            }
            "kong.request.get_raw_body" => self.raw_body_value(&c.body),
            "kong.request.get_body" => {
                let mime =
                    string_arg(a0).or_else(|| c.headers.get("content-type").map(str::to_owned));
                let Some(mime) = mime else {
                    return Err(PdkOutcome::SoftError("missing content type".into()));
                };
                let base = mime
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                match base.as_str() {
                    "application/json" => {
                        match serde_json::from_slice::<serde_json::Value>(&c.body) {
                            Ok(j) if j.is_object() || j.is_array() => Value::from_json(&j),
                            _ => {
                                return Err(PdkOutcome::SoftError("invalid json body".into()));
                            }
                        }
                    }
                    "application/x-www-form-urlencoded" => {
                        query_table(&String::from_utf8_lossy(&c.body), 100)
                    }
                    _ => {
                        return Err(PdkOutcome::SoftError(format!(
                            "unsupported content type '{mime}'"
                        )))
                    }
                }
            }
            "kong.request.get_start_time" => Value::Int((c.start_time * 1000.0) as i64),
            "kong.request.get_uri_captures" => {
                if !self.version.has_uri_captures() {
                    return Err(PdkOutcome::NotFound);
                }
                let unnamed = Value::Array(c.unnamed_captures.iter().map(Value::str).collect());
                let named = if c.named_captures.is_empty() {
                    // An empty Lua table packs as an empty array (spec §4.5).
                    Value::Array(Vec::new())
                } else {
                    Value::Map(
                        c.named_captures
                            .iter()
                            .map(|(k, v)| (Value::str(k.as_str()), Value::str(v.as_str())))
                            .collect(),
                    )
                };
                Value::map([("unnamed", unnamed), ("named", named)])
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }

    fn response_fn(&mut self, phase: &str, m: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        let a0 = arg(args, 0);
        let a1 = arg(args, 1);
        let a2 = arg(args, 2);
        let getter = matches!(
            m,
            "kong.response.get_status"
                | "kong.response.get_header"
                | "kong.response.get_headers"
                | "kong.response.get_source"
        );
        if getter {
            Self::check(phase, HEADER_BODY_LOG)?;
            Self::live(phase)?;
        } else if matches!(
            m,
            "kong.response.get_raw_body" | "kong.response.set_raw_body"
        ) {
            Self::check(phase, BODY_FILTER)?;
        } else if m.starts_with("kong.response.") && m != "kong.response.get_body" {
            Self::check(phase, REWRITE_ACCESS_HEADER)?;
            if self.stage == Stage::Sent {
                return Err(raise("headers have already been sent".into()));
            }
        }
        let v = match m {
            "kong.response.get_status" => Value::Int(self.status()),
            "kong.response.get_header" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("header name must be a string".into()));
                };
                self.response_headers
                    .get(&name)
                    .map(Value::str)
                    .unwrap_or(Value::Nil)
            }
            "kong.response.get_headers" => {
                let max = max_arg(a0, "max_headers").map_err(PdkOutcome::Raise)?;
                self.response_headers.to_table(Some(max)).0
            }
            "kong.response.get_source" => Value::str(self.source.as_str()),
            "kong.response.set_status" => {
                let s = status_arg(a0, 100).map_err(PdkOutcome::Raise)?;
                self.response_status = Some(s);
                Value::Nil
            }
            "kong.response.set_header" | "kong.response.add_header" => {
                let name = header_name(a0).map_err(PdkOutcome::Raise)?;
                let vals = header_values(&name, a1).map_err(PdkOutcome::Raise)?;
                if m.ends_with("set_header") {
                    self.response_headers.set(&name, vals);
                } else {
                    for v in vals {
                        self.response_headers.add(&name, v);
                    }
                }
                Value::Nil
            }
            "kong.response.clear_header" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("header name must be a string".into()));
                };
                self.response_headers.clear(&name);
                Value::Nil
            }
            "kong.response.set_headers" => {
                let entries = header_table(a0, "headers").map_err(PdkOutcome::Raise)?;
                for (name, vals) in entries {
                    self.response_headers.set(&name, vals);
                }
                Value::Nil
            }
            "kong.response.exit" => {
                let status = status_arg(a0, 100).map_err(PdkOutcome::Raise)?;
                let mut headers = match a2 {
                    Value::Nil => Headers::new(),
                    h => Headers(
                        header_table(h, "headers")
                            .map_err(|e| {
                                PdkOutcome::Raise(if e == "headers must be a table" {
                                    "headers must be a nil or table".into()
                                } else {
                                    e
                                })
                            })?
                            .into_iter()
                            .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
                            .collect(),
                    ),
                };
                let body = match a1 {
                    Value::Nil => Vec::new(),
                    Value::Str(b) | Value::Bin(b) => b.clone(),
                    t @ (Value::Map(_) | Value::Array(_)) => {
                        if headers.get("content-type").is_none() {
                            headers.add("Content-Type", "application/json; charset=utf-8".into());
                        }
                        cjson_encode(t).into_bytes()
                    }
                    _ => return Err(raise("body must be a nil, string or table".into())),
                };
                self.source = Source::Exit;
                return Err(self.exit_outcome(status, body, headers));
            }
            "kong.response.error" => {
                let status = status_arg(a0, 400).map_err(PdkOutcome::Raise)?;
                let message = match a1 {
                    Value::Nil => http_error_message(status),
                    Value::Str(_) | Value::Bin(_) => string_arg(a1).unwrap_or_default(),
                    t @ (Value::Map(_) | Value::Array(_)) => cjson_encode(t),
                    _ => return Err(raise("message must be a nil, a string or a table".into())),
                };
                let mut headers = match a2 {
                    Value::Nil => Headers::new(),
                    h => Headers(
                        header_table(h, "headers")
                            .map_err(PdkOutcome::Raise)?
                            .into_iter()
                            .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
                            .collect(),
                    ),
                };
                let ct = match headers.get("content-type") {
                    Some(ct) => ct.to_owned(),
                    None => {
                        let ct = response_type(self.client.headers.get("accept"));
                        headers.add("Content-Type", ct.into());
                        ct.to_owned()
                    }
                };
                let body = error_body(&ct, &message, &self.client.id);
                self.source = Source::Error;
                return Err(self.exit_outcome(status, body.into_bytes(), headers));
            }
            "kong.response.get_raw_body" => Value::Str(self.response_body.clone()),
            "kong.response.set_raw_body" => {
                let Some(b) = a0.as_bytes() else {
                    return Err(raise("body must be a string".into()));
                };
                self.response_body = b.to_vec();
                Value::Nil
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }

    fn service_request_fn(
        &mut self,
        phase: &str,
        m: &str,
        args: &[Value],
    ) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        let a0 = arg(args, 0);
        let a1 = arg(args, 1);
        let allowed = match m {
            "kong.service.request.enable_buffering"
            | "kong.service.request.set_scheme"
            | "kong.service.request.set_path"
            | "kong.service.request.set_header"
            | "kong.service.request.set_raw_body" => ACCESS_REWRITE_BALANCER,
            "kong.service.request.set_raw_query"
            | "kong.service.request.set_method"
            | "kong.service.request.set_query"
            | "kong.service.request.clear_query_arg"
            | "kong.service.request.add_header"
            | "kong.service.request.clear_header"
            | "kong.service.request.set_headers"
            | "kong.service.request.set_body" => ACCESS_AND_REWRITE,
            _ => return Err(PdkOutcome::NotFound),
        };
        Self::check(phase, allowed)?;
        let up = &mut self.upstream_request;
        match m {
            "kong.service.request.enable_buffering" => up.buffering = true,
            "kong.service.request.set_scheme" => {
                let Some(s) = string_arg(a0) else {
                    return Err(raise("scheme must be a string".into()));
                };
                if s != "http" && s != "https" {
                    return Err(raise(format!("invalid scheme: {s}")));
                }
                up.scheme = s;
            }
            "kong.service.request.set_path" => {
                let Some(p) = string_arg(a0) else {
                    return Err(raise("path must be a string".into()));
                };
                if !p.starts_with('/') {
                    return Err(raise("path must start with /".into()));
                }
                up.path = p;
            }
            "kong.service.request.set_raw_query" => {
                let Some(q) = string_arg(a0) else {
                    return Err(raise("query must be a string".into()));
                };
                up.raw_query = q;
            }
            "kong.service.request.set_method" => {
                let Some(meth) = string_arg(a0) else {
                    return Err(raise("method must be a string".into()));
                };
                const METHODS: [&str; 16] = [
                    "GET",
                    "HEAD",
                    "PUT",
                    "POST",
                    "DELETE",
                    "OPTIONS",
                    "MKCOL",
                    "COPY",
                    "MOVE",
                    "PROPFIND",
                    "PROPPATCH",
                    "LOCK",
                    "UNLOCK",
                    "PATCH",
                    "TRACE",
                    "CONNECT",
                ];
                if !METHODS.contains(&meth.as_str()) {
                    return Err(raise(format!("invalid method: {meth}")));
                }
                up.method = meth;
            }
            "kong.service.request.set_query" => {
                if !matches!(a0, Value::Map(_) | Value::Array(_)) {
                    return Err(raise("args must be a table".into()));
                }
                up.raw_query = encode_args(a0).map_err(PdkOutcome::Raise)?;
            }
            "kong.service.request.clear_query_arg" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("query argument name must be a string".into()));
                };
                let kept: Vec<&str> = up
                    .raw_query
                    .split('&')
                    .filter(|p| {
                        !p.is_empty() && url_decode(p.split('=').next().unwrap_or("")) != name
                    })
                    .collect();
                up.raw_query = kept.join("&");
            }
            "kong.service.request.set_header" | "kong.service.request.add_header" => {
                let name = header_name(a0).map_err(PdkOutcome::Raise)?;
                let vals = header_values(&name, a1).map_err(PdkOutcome::Raise)?;
                if m.ends_with("set_header") {
                    up.headers.set(&name, vals);
                } else {
                    for v in vals {
                        up.headers.add(&name, v);
                    }
                }
            }
            "kong.service.request.clear_header" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("header must be a string".into()));
                };
                up.headers.clear(&name);
            }
            "kong.service.request.set_headers" => {
                if !matches!(a0, Value::Map(_) | Value::Array(_)) {
                    return Err(raise("headers must be a table".into()));
                }
                let entries = header_table(a0, "headers").map_err(PdkOutcome::Raise)?;
                for (name, vals) in entries {
                    up.headers.set(&name, vals);
                }
            }
            "kong.service.request.set_raw_body" => {
                let Some(b) = a0.as_bytes() else {
                    return Err(raise("body must be a string".into()));
                };
                up.headers.set("content-length", vec![b.len().to_string()]);
                up.body = Some(b.to_vec());
            }
            "kong.service.request.set_body" => {
                if !matches!(a0, Value::Map(_) | Value::Array(_)) {
                    return Err(raise("args must be a table".into()));
                }
                if !matches!(a1, Value::Nil | Value::Str(_) | Value::Bin(_)) {
                    return Err(raise("mime must be a string".into()));
                }
                let mime = match string_arg(a1) {
                    Some(m) => m,
                    None => match self.client.headers.get("content-type") {
                        Some(m) => m.to_owned(),
                        None => {
                            return Err(PdkOutcome::SoftError(
                                "content type was neither explicitly given as an argument or \
                                 received as a header"
                                    .into(),
                            ))
                        }
                    },
                };
                let base = mime.split(';').next().unwrap_or("").trim().to_owned();
                let body = match base.as_str() {
                    "application/json" => cjson_encode(a0),
                    "application/x-www-form-urlencoded" => {
                        encode_args(a0).map_err(PdkOutcome::Raise)?
                    }
                    _ => return Err(raise(format!("unsupported content type {mime}"))),
                };
                let up = &mut self.upstream_request;
                up.headers.set("content-type", vec![mime.clone()]);
                up.headers
                    .set("content-length", vec![body.len().to_string()]);
                up.body = Some(body.into_bytes());
                return Ok(Value::Bool(true));
            }
            _ => return Err(PdkOutcome::NotFound),
        }
        Ok(Value::Nil)
    }

    fn service_response_fn(
        &mut self,
        phase: &str,
        m: &str,
        args: &[Value],
    ) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        if !matches!(
            m,
            "kong.service.response.get_status"
                | "kong.service.response.get_header"
                | "kong.service.response.get_headers"
                | "kong.service.response.get_raw_body"
                | "kong.service.response.get_body"
        ) {
            return Err(PdkOutcome::NotFound);
        }
        Self::check(phase, SERVICE_RESPONSE)?;
        Self::live(phase)?;
        let a0 = arg(args, 0);
        let resp = self.service_response.as_ref();
        let v = match m {
            "kong.service.response.get_status" => {
                resp.map(|r| Value::Int(r.status)).unwrap_or(Value::Nil)
            }
            "kong.service.response.get_header" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("name must be a string".into()));
                };
                resp.and_then(|r| r.headers.get(&name))
                    .map(Value::str)
                    .unwrap_or(Value::Nil)
            }
            "kong.service.response.get_headers" => {
                let max = max_arg(a0, "max_headers").map_err(PdkOutcome::Raise)?;
                resp.map(|r| r.headers.to_table(Some(max)).0)
                    .unwrap_or_else(|| Value::Map(Vec::new()))
            }
            _ => {
                if !self.upstream_request.buffering {
                    return Err(raise(
                        "service body is only available with buffered proxying (see: \
                         kong.service.request.enable_buffering function)"
                            .into(),
                    ));
                }
                let body = resp.map(|r| r.body.clone()).unwrap_or_default();
                if m.ends_with("get_raw_body") {
                    self.raw_body_value(&body)
                } else {
                    match serde_json::from_slice::<serde_json::Value>(&body) {
                        Ok(j) if j.is_object() || j.is_array() => Value::from_json(&j),
                        _ => return Err(PdkOutcome::SoftError("invalid json body".into())),
                    }
                }
            }
        };
        Ok(v)
    }

    /// The override answering this call, if any (and counts it).
    fn scripted(&mut self, phase: &str, method: &str, args: &[Value]) -> Option<Override> {
        let o = self
            .overrides
            .iter_mut()
            .find(|o| o.matches(phase, method, args))?;
        o.used += 1;
        Some(o.clone())
    }
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Pdk for KongRequest {
    fn call(&mut self, phase: &str, method: &str, args: &[Value]) -> PdkOutcome {
        if self.phase != phase {
            self.enter_phase(phase);
        }
        let scripted = self.scripted(phase, method, args);
        let outcome = match scripted.as_ref().map(|o| &o.answer) {
            Some(OverrideAnswer::Return(v)) => PdkOutcome::Return(v.clone()),
            Some(OverrideAnswer::SoftError(e)) => PdkOutcome::SoftError(e.clone()),
            Some(OverrideAnswer::Raise(e)) => PdkOutcome::Raise(e.clone()),
            Some(OverrideAnswer::Emulate) | None => match self.dispatch(phase, method, args) {
                Ok(v) => PdkOutcome::Return(v),
                Err(o) => o,
            },
        };
        match &outcome {
            PdkOutcome::NotFound => {
                self.kong_log("err", format!("could not find pdk method: {method}"))
            }
            PdkOutcome::Raise(e) => self.kong_log("err", format!("{method}: {e}")),
            _ => {}
        }
        match scripted.and_then(|o| o.delay) {
            Some(after) => PdkOutcome::Delayed {
                after,
                then: Box::new(outcome),
            },
            None => outcome,
        }
    }

    fn sends_step_error(&self) -> bool {
        self.version.sends_step_error()
    }
}

/// The value under `key` in an ordered Lua-like table (`kong.ctx.shared`, `ngx.ctx`), nil if absent.
fn lookup(table: &[(String, Value)], key: &str) -> Value {
    table
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::Nil)
}

#[cfg(test)]
mod tests;
