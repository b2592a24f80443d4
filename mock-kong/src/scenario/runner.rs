//! Plays a scenario through a session the way Kong runs one request (docs/protocol.md §6): the phases in
//! Kong's order; `rewrite`/`access` on the client request; the upstream answers (buffered when
//! a `response` handler exists); an exit ends the request and only `log` still runs; `log`
//! runs after the client response from the saved data.
//!
//! Failures are treated as Kong treats them: a PDK call that raises in `rewrite`/`access` makes
//! Kong answer 500 (docs/protocol.md §4.7); a failed ProtoBuf event answers 500 from Kong 3.8 on (spec
//! §5.6), and is only logged before; a MsgPack host-side error is logged and the request
//! continues without the plugin's effect (docs/protocol.md §4.7).

use std::time::{Duration, Instant};

use serde_json::{json, Value as J};

use super::expect::{self, Mismatch};
use super::model::Scenario;
use crate::host::{EventReport, PluginEntity};
use crate::pdk::{ClientRequest, Headers, HttpResponse, Override, OverrideAnswer, Phase};
use crate::pdk::{KongRequest, KongVersion};
use crate::session::{kong_order, play_event, Session};
use crate::{Protocol, Value};

/// Options for a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The Kong version to emulate unless the scenario names one.
    pub kong_version: KongVersion,
    /// The key `servers = [...]` is matched against (`reference`, a peer name, ...). `None`:
    /// every scenario applies.
    pub server_key: Option<String>,
    /// Send every scenario's config as written (`--raw-config`), as `raw_config = true` does
    /// for one scenario.
    pub raw_config: bool,
}

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    /// Not applicable to this server or protocol.
    Skipped,
    /// The scenario could not be played (bad phases, plugin not registered, no session).
    Error,
    /// The scenario cannot be used as written: an unreadable or invalid file, a config the
    /// plugin's schema rejects. A usage error: `mock-kong run` exits 2.
    Invalid,
}

/// One PDK call as a flat transcript line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallLine {
    pub phase: String,
    pub method: String,
    #[serde(serialize_with = "ser_values")]
    pub args: Vec<Value>,
    #[serde(serialize_with = "ser_opt_value")]
    pub answer: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn ser_values<S: serde::Serializer>(v: &[Value], s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    v.iter()
        .map(Value::to_json)
        .collect::<Vec<_>>()
        .serialize(s)
}

fn ser_opt_value<S: serde::Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    v.as_ref().map(Value::to_json).serialize(s)
}

impl CallLine {
    /// `access  kong.request.get_header("host") -> "example.com"`.
    pub fn render(&self) -> String {
        let args: Vec<String> = self.args.iter().map(|a| a.to_json().to_string()).collect();
        let answer = match &self.answer {
            Some(v) => v.to_json().to_string(),
            None => "(no answer)".into(),
        };
        format!(
            "{:<8} {}({}) -> {answer}{}",
            self.phase,
            self.method,
            args.join(", "),
            self.note
                .as_ref()
                .map(|n| format!("   [{n}]"))
                .unwrap_or_default()
        )
    }
}

/// Everything observed while playing the request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Observed {
    pub phases: Vec<String>,
    pub skipped: Vec<String>,
    pub exited: bool,
    pub status: i64,
    pub headers: Headers,
    #[serde(serialize_with = "ser_body")]
    pub body: Vec<u8>,
    pub upstream: Option<crate::pdk::UpstreamRequest>,
    pub shared: serde_json::Map<String, J>,
    pub log: Vec<crate::pdk::LogLine>,
    pub calls: Vec<CallLine>,
    /// `(phase, method, error)` of PDK calls that raised.
    pub raised: Vec<(String, String, String)>,
    /// `(phase, error)` host-side failures and method-not-found.
    pub errors: Vec<(String, String)>,
}

fn ser_body<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// The result of one scenario on one server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub file: Option<String>,
    pub plugin: String,
    pub server: String,
    pub protocol: Protocol,
    pub kong_version: KongVersion,
    pub outcome: Outcome,
    /// Why it was skipped or could not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub mismatches: Vec<Mismatch>,
    pub duration_ms: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    /// The host's event transcripts (instance ids, connections, findings).
    pub events: Vec<EventReport>,
}

impl ScenarioResult {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Passed
    }

    /// Whether it counts as a failure (failed, could not run, or invalid).
    pub fn failed(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Failed | Outcome::Error | Outcome::Invalid
        )
    }

    /// A readable explanation: every mismatch (expected vs actual) and, for a failure, the PDK
    /// transcript.
    pub fn explain(&self) -> String {
        self.explain_with(self.failed())
    }

    /// [`ScenarioResult::explain`], with the PDK transcript when `transcript` (`run -v` shows
    /// it for passing scenarios too).
    pub fn explain_with(&self, transcript: bool) -> String {
        let mut out = String::new();
        if let Some(r) = &self.reason {
            out.push_str(&format!("  {r}\n"));
        }
        for m in &self.mismatches {
            out.push_str(&m.render());
        }
        if transcript {
            if let Some(o) = &self.observed {
                out.push_str("  PDK transcript:\n");
                if o.calls.is_empty() {
                    out.push_str("    (no PDK calls)\n");
                }
                for c in &o.calls {
                    out.push_str(&format!("    {}\n", c.render()));
                }
                for (phase, e) in &o.errors {
                    out.push_str(&format!("    {phase:<8} FAILED: {e}\n"));
                }
            }
        }
        out
    }

    /// A scenario file that cannot be used (it does not parse, a field is wrong).
    pub fn invalid_file(
        path: &std::path::Path,
        reason: String,
        version: KongVersion,
    ) -> ScenarioResult {
        let scenario = Scenario {
            file: Some(path.to_owned()),
            plugin: "?".into(),
            ..Scenario::default()
        };
        ScenarioResult::not_run(
            &scenario,
            "-",
            Protocol::MsgPack,
            version,
            Outcome::Invalid,
            reason,
        )
    }

    pub(crate) fn not_run(
        scenario: &Scenario,
        server: &str,
        protocol: Protocol,
        version: KongVersion,
        outcome: Outcome,
        reason: String,
    ) -> ScenarioResult {
        ScenarioResult {
            name: scenario.display_name(),
            file: scenario.file.as_ref().map(|f| f.display().to_string()),
            plugin: scenario.plugin.clone(),
            server: server.to_owned(),
            protocol,
            kong_version: version,
            outcome,
            reason: Some(reason),
            mismatches: Vec::new(),
            duration_ms: 0,
            observed: None,
            events: Vec::new(),
        }
    }
}

/// Why a scenario does not apply to the server named `key` (`servers = [...]`), if it does not.
pub fn not_for_server(s: &Scenario, key: &str) -> Option<String> {
    let list = s.servers.as_ref()?;
    (!list.iter().any(|x| x == key))
        .then(|| format!("only for servers [{}], this is `{key}`", list.join(", ")))
}

/// Why a scenario does not apply here (`servers`, `protocols`), if it does not.
pub fn not_applicable(
    s: &Scenario,
    server_key: Option<&str>,
    protocol: Protocol,
) -> Option<String> {
    if let Some(reason) = server_key.and_then(|k| not_for_server(s, k)) {
        return Some(reason);
    }
    let list = s.protocols.as_ref()?;
    (!list.iter().any(|p| p == protocol.as_str()))
        .then(|| format!("only for protocols [{}]", list.join(", ")))
}

fn header_list(map: &serde_json::Map<String, J>) -> Headers {
    let mut h = Headers::new();
    for (k, v) in map {
        match v {
            J::Array(a) => {
                for x in a {
                    h.add(k, json_text(x));
                }
            }
            other => h.add(k, json_text(other)),
        }
    }
    h
}

fn json_text(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        J::Null => String::new(),
        other => other.to_string(),
    }
}

fn entity_value(m: &Option<serde_json::Map<String, J>>) -> Option<Value> {
    m.as_ref().map(|m| Value::from_json(&J::Object(m.clone())))
}

/// Builds the emulated request a scenario describes.
pub fn build_request(s: &Scenario, version: KongVersion, protocol: Protocol) -> KongRequest {
    let r = &s.request;
    let d = ClientRequest::default();
    let scheme = r.scheme.clone().unwrap_or(d.scheme.clone());
    let host = r.host.clone().unwrap_or(d.host.clone());
    let mut headers = header_list(&r.headers);
    if headers.get("host").is_none() {
        headers.0.insert(0, ("host".into(), host.clone()));
    }
    let client = ClientRequest {
        id: r.id.clone().unwrap_or(d.id),
        method: r.method.clone().unwrap_or(d.method),
        port: r.port.unwrap_or(if scheme == "https" { 443 } else { 80 }),
        scheme,
        host,
        path: r.path.clone().unwrap_or(d.path),
        raw_query: r.query.clone().unwrap_or_default(),
        headers,
        body: r.body.clone().unwrap_or_default().into_bytes(),
        http_version: r.http_version.unwrap_or(d.http_version),
        client_ip: r.client_ip.clone().unwrap_or(d.client_ip),
        client_port: r.client_port.unwrap_or(d.client_port),
        start_time: d.start_time,
        unnamed_captures: r.uri_captures.clone(),
        named_captures: r
            .named_captures
            .iter()
            .map(|(k, v)| (k.clone(), json_text(v)))
            .collect(),
    };
    let mut req = KongRequest::new(client);
    req.version = version;
    req.protocol = protocol;
    req.route = entity_value(&s.route);
    req.service = entity_value(&s.service);
    req.consumer = entity_value(&s.consumer);
    req.credential = entity_value(&s.credential);
    req.consumers = s
        .consumers
        .iter()
        .map(|c| Value::from_json(&J::Object(c.clone())))
        .collect();
    req.upstreams = s.upstreams.clone();
    req.trusted_ips = s.trusted_ips.clone();
    req.nginx_vars = s
        .nginx_vars
        .iter()
        .map(|(k, v)| (k.clone(), json_text(v)))
        .collect();
    if let Some(u) = &s.upstream {
        let d = HttpResponse::default();
        req.upstream_answer = HttpResponse {
            status: u.status.unwrap_or(d.status),
            headers: u.headers.as_ref().map(header_list).unwrap_or(d.headers),
            body: u.body.clone().map(String::into_bytes).unwrap_or(d.body),
        };
    }
    req.overrides = s
        .pdk
        .iter()
        .map(|o| Override {
            method: o.method.clone(),
            args: o
                .args
                .as_ref()
                .map(|a| a.iter().map(Value::from_json).collect()),
            phase: o.phase.clone(),
            answer: if let Some(e) = &o.raise {
                OverrideAnswer::Raise(e.clone())
            } else if let Some(e) = &o.error {
                OverrideAnswer::SoftError(e.clone())
            } else if o.nil {
                OverrideAnswer::Return(Value::Nil)
            } else if let Some(v) = &o.returns {
                OverrideAnswer::Return(Value::from_json(v))
            } else {
                OverrideAnswer::Emulate
            },
            delay: o.delay_ms.map(Duration::from_millis),
            times: o.times,
            used: 0,
        })
        .collect();
    req.start();
    req
}

/// Plays `s` over `session`.
pub async fn run(s: &Scenario, session: &Session, opts: &RunOptions) -> ScenarioResult {
    let started = Instant::now();
    let protocol = session.protocol();
    let server = session.target.label.clone();
    let version = match s.kong_version.as_deref().map(str::parse::<KongVersion>) {
        None => opts.kong_version,
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            return ScenarioResult::not_run(
                s,
                &server,
                protocol,
                opts.kong_version,
                Outcome::Error,
                e.to_string(),
            )
        }
    };
    let fail = |reason: String| {
        ScenarioResult::not_run(s, &server, protocol, version, Outcome::Error, reason)
    };
    if let Some(reason) = not_applicable(s, opts.server_key.as_deref(), protocol) {
        return ScenarioResult::not_run(s, &server, protocol, version, Outcome::Skipped, reason);
    }
    // Which plugin Kong registers from this dump (docs/protocol.md §2, §9).
    let info = match session.registered_plugin(&s.plugin, version) {
        Ok(info) => info,
        Err(e) => return fail(e),
    };
    let phases = match &s.phases {
        Some(list) => {
            if let Some(bad) = list.iter().find(|p| !info.phases.contains(p)) {
                return fail(format!(
                    "phase `{bad}` is not declared by plugin `{}` (it declares [{}]); Kong never \
                     calls an undeclared phase",
                    s.plugin,
                    info.phases.join(", ")
                ));
            }
            kong_order(list)
        }
        None => kong_order(&info.phases)
            .into_iter()
            .filter(|p| p != "preread")
            .collect(),
    };
    // The config as Kong builds it from the plugin's schema (docs/protocol.md §4.3).
    let config = if s.raw_config || opts.raw_config {
        s.config.clone()
    } else {
        match crate::plugin_config::kong_config(&info.name, &info.schema, &s.config) {
            Ok(c) => c,
            Err(e) => {
                return ScenarioResult::not_run(
                    s,
                    &server,
                    protocol,
                    version,
                    Outcome::Invalid,
                    e.to_string(),
                )
            }
        }
    };
    let entity = PluginEntity::new(&s.plugin, config);
    let mut req = build_request(s, version, protocol);
    req.plugin_id = entity.id.clone();
    if phases.iter().any(|p| p == Phase::Response.as_str()) {
        req.upstream_request.buffering = true;
    }

    let mut events = Vec::new();
    let mut skipped = Vec::new();
    let mut raised = Vec::new();
    let mut errors = Vec::new();
    for phase in &phases {
        if req.exited && Phase::parse(phase) != Some(Phase::Log) {
            skipped.push(phase.clone());
            continue;
        }
        let played = play_event(&session.runner, &entity, phase, &mut req).await;
        if let Some((method, error)) = played.raised {
            raised.push((phase.clone(), method, error));
        }
        if let Some(e) = played.error {
            errors.push((phase.clone(), e));
        }
        events.extend(played.event);
    }
    req.finish();

    let mut calls = Vec::new();
    for ev in &events {
        for c in &ev.calls {
            calls.push(CallLine {
                phase: ev.phase.clone(),
                method: c.method.clone(),
                args: c.args.clone(),
                answer: c.answer.clone(),
                note: c.note.clone(),
            });
        }
    }
    let observed = Observed {
        phases: phases.clone(),
        skipped,
        exited: req.exited,
        status: req.status(),
        headers: req.response_headers.clone(),
        body: req.response_body.clone(),
        upstream: (!req.exited).then(|| req.upstream_request.clone()),
        shared: req
            .saved
            .as_ref()
            .map(|sv| sv.ctx_shared.clone())
            .unwrap_or_else(|| req.shared.clone())
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
        log: req.logs.clone(),
        calls,
        raised,
        errors,
    };
    let mismatches = expect::check(&s.expect, &observed);
    ScenarioResult {
        name: s.display_name(),
        file: s.file.as_ref().map(|f| f.display().to_string()),
        plugin: s.plugin.clone(),
        server,
        protocol,
        kong_version: version,
        outcome: if mismatches.is_empty() {
            Outcome::Passed
        } else {
            Outcome::Failed
        },
        reason: None,
        mismatches,
        duration_ms: started.elapsed().as_millis(),
        observed: Some(observed),
        events,
    }
}

/// A JSON summary of a list of results.
pub fn summary_json(results: &[ScenarioResult]) -> J {
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    json!({
        "passed": count(Outcome::Passed),
        "failed": count(Outcome::Failed) + count(Outcome::Error) + count(Outcome::Invalid),
        "invalid": count(Outcome::Invalid),
        "skipped": count(Outcome::Skipped),
        "scenarios": results,
    })
}
