//! The HTTP side of the emulated request: header lists with nginx's lookup rules, query strings
//! as `ngx.decode_args` / `ngx.encode_args` treat them, Kong's error responses, and the client
//! request, upstream request and responses a request carries.

use super::args::{lua_text, lua_type};
use crate::Value;

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

pub(crate) fn query_value(v: &QueryValue) -> Value {
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
pub(crate) fn encode_args(table: &Value) -> Result<String, String> {
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
    /// `kong.service.request.enable_buffering` (or a `response` handler, docs/protocol.md §6).
    pub buffering: bool,
    pub retries: Option<i64>,
    pub timeouts: Option<(i64, i64, i64)>,
}

impl UpstreamRequest {
    /// What Kong sends upstream before the service and the plugins change anything: the client's
    /// method, path, query and headers to `http://127.0.0.1:80`.
    pub fn from_client(client: &ClientRequest) -> UpstreamRequest {
        UpstreamRequest {
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
        }
    }
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
