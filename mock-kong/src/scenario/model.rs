//! The scenario file format (TOML). See `docs/scenarios.md` for the reference with examples.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value as J};

/// One scenario: a request played through one plugin, and what should happen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Where it was read from (set by the loader).
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// Display name (default: the file stem).
    pub name: Option<String>,
    pub description: Option<String>,
    /// The plugin name, as the server's dump lists it.
    pub plugin: String,
    /// The plugin's `config` record.
    #[serde(default)]
    pub config: Map<String, J>,
    /// Phases to run, played in Kong's order (default: the phases the plugin declares; `preread`
    /// is a stream phase and never runs for an HTTP request).
    pub phases: Option<Vec<String>>,
    /// Servers this scenario applies to: `reference`, or a peer name (`go`, `python`, `js`,
    /// ...), or a pluginserver name. Elsewhere it is reported as skipped.
    pub servers: Option<Vec<String>>,
    /// Protocols it applies to (`MsgPack:1`, `ProtoBuf:1`).
    pub protocols: Option<Vec<String>>,
    /// The Kong version to emulate for this scenario (default: `--kong-version`, else 3.9).
    pub kong_version: Option<String>,
    #[serde(default)]
    pub request: RequestSpec,
    /// The matched route entity (any Kong route fields).
    pub route: Option<Map<String, J>>,
    /// The matched service entity.
    pub service: Option<Map<String, J>>,
    /// The authenticated consumer.
    pub consumer: Option<Map<String, J>>,
    /// The authenticated credential (`id`, `consumer_id`).
    pub credential: Option<Map<String, J>>,
    /// More consumers `kong.client.load_consumer` can find.
    #[serde(default)]
    pub consumers: Vec<Map<String, J>>,
    /// Upstream entity names `kong.service.set_upstream` accepts.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// `trusted_ips` (exact addresses; `0.0.0.0/0` trusts everyone).
    #[serde(default)]
    pub trusted_ips: Vec<String>,
    /// Extra nginx variables (`kong.nginx.get_var`).
    #[serde(default)]
    pub nginx_vars: Map<String, J>,
    /// What the upstream service answers.
    pub upstream: Option<UpstreamSpec>,
    /// Scripted PDK answers, tried in order before the emulation.
    #[serde(default)]
    pub pdk: Vec<OverrideSpec>,
    #[serde(default)]
    pub expect: Expect,
}

/// The client request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub id: Option<String>,
    pub method: Option<String>,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub path: Option<String>,
    /// The raw query string (without `?`).
    pub query: Option<String>,
    /// Header values: a string, or a list for a repeated header. A `Host` header is added from
    /// `host` unless given.
    #[serde(default)]
    pub headers: Map<String, J>,
    pub body: Option<String>,
    pub http_version: Option<f64>,
    pub client_ip: Option<String>,
    pub client_port: Option<i64>,
    #[serde(default)]
    pub uri_captures: Vec<String>,
    #[serde(default)]
    pub named_captures: Map<String, J>,
}

/// The upstream service's response (default: 200, `Server: mock-upstream/1.0.0`,
/// `X-Powered-By: mock_upstream`, body `ok`, like Kong's test upstream).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub status: Option<i64>,
    /// Replaces the default headers when given.
    pub headers: Option<Map<String, J>>,
    pub body: Option<String>,
}

/// "This PDK method (with these leading arguments, in this phase) answers ...".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSpec {
    pub method: String,
    pub args: Option<Vec<J>>,
    pub phase: Option<String>,
    /// The value returned.
    pub returns: Option<J>,
    /// Return nil.
    #[serde(default)]
    pub nil: bool,
    /// Return `nil, <error>` (a soft error).
    pub error: Option<String>,
    /// Raise a Lua error.
    pub raise: Option<String>,
    /// Answer only after this many milliseconds.
    pub delay_ms: Option<u64>,
    /// Answer only this many calls.
    pub times: Option<u32>,
}

/// What should happen. Everything is optional; only what is given is checked. Unless
/// `raised` or `errors` is given, any PDK call that raised and any host-side failure fails the
/// scenario.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Whether `kong.response.exit`/`error` ended the request.
    pub exit: Option<bool>,
    /// The client response status.
    pub status: Option<i64>,
    /// Client response headers: a value, a list of values, `false` (absent), `true` (present)
    /// or `{ regex = "..." }`. Names are case-insensitive; unlisted headers are not checked.
    #[serde(default)]
    pub headers: Map<String, J>,
    pub body: Option<String>,
    pub body_regex: Option<String>,
    pub body_json: Option<J>,
    pub upstream: Option<UpstreamExpect>,
    /// `kong.ctx.shared` values at the end of the request (`false`... compare exactly; use
    /// `{ absent = true }` for a missing key).
    #[serde(default)]
    pub shared: Map<String, J>,
    /// Log lines that must appear, in order (a subsequence of all lines).
    #[serde(default)]
    pub log: Vec<LogExpect>,
    /// The exact sequence of PDK calls (all phases).
    pub calls: Option<Vec<CallExpect>>,
    /// PDK calls that must appear in this order, others may come between.
    pub calls_include: Option<Vec<CallExpect>>,
    pub max_calls: Option<usize>,
    /// A PDK call raised with an error matching this regex.
    pub raised: Option<String>,
    /// Host-side failures are expected (regex on the error text).
    pub errors: Option<String>,
    /// Phases skipped after an exit.
    pub skipped: Option<Vec<String>>,
}

/// The upstream request as plugins left it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamExpect {
    pub method: Option<String>,
    pub path: Option<String>,
    pub query: Option<String>,
    #[serde(default)]
    pub headers: Map<String, J>,
    pub body: Option<String>,
    pub upstream: Option<String>,
    pub target: Option<String>,
}

/// A log line: level and text (exact) or regex; optionally the phase.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogExpect {
    pub level: Option<String>,
    pub text: Option<String>,
    pub regex: Option<String>,
    pub phase: Option<String>,
}

/// A PDK call: just the method name, or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CallExpect {
    Method(String),
    Full(CallDetail),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallDetail {
    pub method: String,
    pub phase: Option<String>,
    /// Leading arguments that must match.
    pub args: Option<Vec<J>>,
    /// The answer the host sent (`returns_nil = true` for none).
    pub returns: Option<J>,
    #[serde(default)]
    pub returns_nil: bool,
}

impl CallExpect {
    pub fn method(&self) -> &str {
        match self {
            CallExpect::Method(m) => m,
            CallExpect::Full(d) => &d.method,
        }
    }
}
