//! The scenario file format (TOML). See `docs/scenarios.md` for the reference with examples.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as J};

/// One scenario: a request played through one plugin, and what should happen.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Where it was read from (set by the loader).
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// Display name (default: the file stem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The plugin name, as the server's dump lists it.
    pub plugin: String,
    /// The plugin's `config` record.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub config: Map<String, J>,
    /// Phases to run, played in Kong's order (default: the phases the plugin declares; `preread`
    /// is a stream phase and never runs for an HTTP request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Vec<String>>,
    /// Servers this scenario applies to: `reference`, or a peer name (`go`, `python`, `js`,
    /// ...), or a pluginserver name. Elsewhere it is reported as skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<String>>,
    /// Protocols it applies to (`MsgPack:1`, `ProtoBuf:1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// The Kong version to emulate for this scenario (default: `--kong-version`, else 3.9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kong_version: Option<String>,
    #[serde(default)]
    pub request: RequestSpec,
    /// The matched route entity (any Kong route fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Map<String, J>>,
    /// The matched service entity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<Map<String, J>>,
    /// The authenticated consumer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<Map<String, J>>,
    /// The authenticated credential (`id`, `consumer_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<Map<String, J>>,
    /// More consumers `kong.client.load_consumer` can find.
    #[serde(default)]
    pub consumers: Vec<Map<String, J>>,
    /// Upstream entity names `kong.service.set_upstream` accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
    /// `trusted_ips` (exact addresses; `0.0.0.0/0` trusts everyone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_ips: Vec<String>,
    /// Extra nginx variables (`kong.nginx.get_var`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub nginx_vars: Map<String, J>,
    /// What the upstream service answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamSpec>,
    /// Scripted PDK answers, tried in order before the emulation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pdk: Vec<OverrideSpec>,
    #[serde(default)]
    pub expect: Expect,
    /// Send `config` exactly as written: no schema defaults filled in, nothing checked against
    /// the plugin's schema (default: the config as Kong builds it, docs/scenarios.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_config: bool,
}

/// The client request.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The raw query string (without `?`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Header values: a string, or a list for a repeated header. A `Host` header is added from
    /// `host` unless given.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, J>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_version: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uri_captures: Vec<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub named_captures: Map<String, J>,
}

/// The upstream service's response (default: 200, `Server: mock-upstream/1.0.0`,
/// `X-Powered-By: mock_upstream`, body `ok`, like Kong's test upstream).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// Replaces the default headers when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Map<String, J>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// "This PDK method (with these leading arguments, in this phase) answers ...".
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSpec {
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<J>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The value returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returns: Option<J>,
    /// Return nil.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nil: bool,
    /// Return `nil, <error>` (a soft error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Raise a Lua error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raise: Option<String>,
    /// Answer only after this many milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Answer only this many calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

/// What should happen. Everything is optional; only what is given is checked. Unless
/// `raised` or `errors` is given, any PDK call that raised and any host-side failure fails the
/// scenario.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Whether `kong.response.exit`/`error` ended the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<bool>,
    /// The client response status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// Client response headers: a value, a list of values, `false` (absent), `true` (present)
    /// or `{ regex = "..." }`. Names are case-insensitive; unlisted headers are not checked.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, J>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_json: Option<J>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamExpect>,
    /// `kong.ctx.shared` values at the end of the request (`false`... compare exactly; use
    /// `{ absent = true }` for a missing key).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub shared: Map<String, J>,
    /// Log lines that must appear, in order (a subsequence of all lines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LogExpect>,
    /// The exact sequence of PDK calls (all phases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<CallExpect>>,
    /// PDK calls that must appear in this order, others may come between.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_include: Option<Vec<CallExpect>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<usize>,
    /// A PDK call raised with an error matching this regex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raised: Option<String>,
    /// Host-side failures are expected (regex on the error text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
    /// Phases skipped after an exit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Vec<String>>,
}

/// The upstream request as plugins left it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamExpect {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, J>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A log line: level and text (exact) or regex; optionally the phase.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogExpect {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// A PDK call: just the method name, or a table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CallExpect {
    Method(String),
    Full(CallDetail),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallDetail {
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Leading arguments that must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<J>>,
    /// The answer the host sent (`returns_nil = true` for none).
    #[serde(skip_serializing_if = "Option::is_none")]
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
