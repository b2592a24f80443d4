//! [`KongRequest`], the emulated Kong request: a stateful model of one proxied HTTP request that answers every PDK
//! call the way Kong 3.9's Lua PDK does, and records every effect.
//!
//! What it covers (the full table, per protocol, is `docs/pdk-surface.md`):
//! * every method of the ProtoBuf PDK service table (docs/protocol.md §5.4), with the Lua result Kong's wrap
//!   step expects, and the MsgPack surface the dynamic kits reach by dotted name (docs/protocol.md §4.4):
//!   `kong.client`, `kong.ctx.shared`, `kong.ip`, `kong.log`, `kong.nginx`, `kong.node`,
//!   `kong.plugin`, `kong.request`, `kong.response`, `kong.router`, `kong.service`,
//!   `kong.service.request`, `kong.service.response`;
//! * Kong's phase checks (`kong/pdk/private/phases.lua`): a call outside its phases raises
//!   `function cannot be called in <phase> phase (only in: <phases>)`;
//! * argument checks with Kong's error texts (`max_headers must be >= 1`, `code must be a number
//!   between 100 and 599`, ...);
//! * the request flow: `rewrite`/`access` see the client request, the upstream request is built
//!   from it and modified by `kong.service.*`; [`KongRequest::proxy`] answers with the scripted
//!   upstream response, which the `response` phase sees buffered (docs/protocol.md §6); `exit` ends the
//!   request; the `log` phase runs after the client response, in a timer: only the data Kong
//!   saves (docs/protocol.md §4.5, §6) is there, other request-bound calls raise `no request found`;
//! * scripted overrides ([`Override`]): a method (and optionally its arguments and phase) that
//!   returns a value, a soft error, raises, or answers after a delay.
//!
//! Header names are case-insensitive; `_` and `-` are the same in lookups, as in nginx's header
//! tables; a multi-valued request header reads as its first value.
//!
//! This file holds the request's state and flow, the phase checks and the dispatch to the PDK
//! modules: one file per module beside it (`client.rs`, `ctx.rs`, `ip.rs`, `log.rs`,
//! `nginx.rs`, `node.rs`, `plugin.rs`, `request.rs`, `response.rs`, `router.rs`, `service/`),
//! each answering the functions of `kong.<module>`.

use super::args::*;
use super::http::*;
use super::phase::*;
use super::script::{Override, OverrideAnswer};
use super::serialize;
use super::{KongVersion, Pdk, PdkOutcome};
use crate::lua::loose_eq;
use crate::{Protocol, Value};

/// The data Kong captures when the log phase starts (docs/protocol.md §6).
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

/// The per-request tables a plugin can write: `kong.ctx.shared` and `ngx.ctx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CtxTable {
    Shared,
    Ngx,
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
    /// The protocol of the server being driven (a few answers differ, docs/protocol.md §5.3).
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
    /// The event name of the current phase (as the host passed it).
    pub phase: String,
    /// `phase` as a Kong phase (`None`: a name Kong does not know).
    current: Option<Phase>,
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
        let upstream_request = UpstreamRequest::from_client(&client);
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
            current: None,
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
            scheme,
            host,
            port,
            path,
            headers,
            ..UpstreamRequest::from_client(&self.client)
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
        self.current = Phase::parse(phase);
        let ms = (self.client.start_time * 1000.0) as i64;
        match self.current {
            Some(Phase::Rewrite) => self.set_ctx_value("KONG_REWRITE_START", Value::Int(ms + 1)),
            Some(Phase::Access) => self.set_ctx_value("KONG_ACCESS_START", Value::Int(ms + 2)),
            Some(Phase::Response) => {
                self.upstream_request.buffering = true;
                if self.stage == Stage::Request && !self.exited {
                    self.proxy();
                }
                self.set_ctx_value("KONG_RESPONSE_START", Value::Int(ms + 40));
            }
            Some(Phase::Log) => {
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
    /// docs/protocol.md §4.7, §5.6): `kong.response.error(status)`.
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

    /// The log-phase snapshot (docs/protocol.md §6).
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

    pub(super) fn trusted(&self, ip: &str) -> bool {
        self.trusted_ips
            .iter()
            .any(|t| t == ip || t == "0.0.0.0/0" || t == "::/0")
    }

    pub(super) fn raw_body_value(&self, body: &[u8]) -> Value {
        if self.version.raw_body_as_bin() && self.protocol == Protocol::MsgPack {
            Value::Bin(body.to_vec())
        } else {
            Value::Str(body.to_vec())
        }
    }

    pub(super) fn log_line(&mut self, level: &str, text: String) {
        self.logs.push(LogLine {
            phase: self.phase.clone(),
            level: level.into(),
            text,
            source: "plugin".into(),
        });
    }

    /// The effective phase for checks: the one the host passes.
    pub(super) fn check(&self, allowed: Phases) -> Result<(), PdkOutcome> {
        if allowed.contains(self.current) {
            Ok(())
        } else {
            Err(PdkOutcome::Raise(phase_error(&self.phase, allowed)))
        }
    }

    /// In the log timer there is no request: request-bound functions raise.
    pub(super) fn live(&self) -> Result<(), PdkOutcome> {
        if self.in_log() {
            Err(PdkOutcome::Raise(NO_REQUEST.into()))
        } else {
            Ok(())
        }
    }

    /// `kong.ctx.shared` or `ngx.ctx`: in the log timer the clone saved when it started (spec
    /// §4.5), else the live table.
    pub(super) fn ctx_table(&mut self, which: CtxTable) -> &mut Vec<(String, Value)> {
        let in_log = self.in_log();
        match (&mut self.saved, in_log, which) {
            (Some(s), true, CtxTable::Shared) => &mut s.ctx_shared,
            (Some(s), true, CtxTable::Ngx) => &mut s.ngx_ctx,
            (_, _, CtxTable::Shared) => &mut self.shared,
            (_, _, CtxTable::Ngx) => &mut self.ngx_ctx,
        }
    }

    /// Sets `key` in a ctx table (nil removes it, as in Lua).
    pub(super) fn ctx_set(&mut self, which: CtxTable, key: String, v: &Value) {
        let table = self.ctx_table(which);
        table.retain(|(k, _)| *k != key);
        if !v.is_nil() {
            table.push((key, v.clone()));
        }
    }

    /// Whether the current phase is `log` (Kong runs it in a timer, after the response).
    pub(super) fn in_log(&self) -> bool {
        self.current == Some(Phase::Log)
    }

    pub(super) fn request_uri(&self) -> String {
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

    pub(super) fn forwarded(&self, header: &str) -> Option<String> {
        if self.trusted(&self.client.client_ip) {
            self.client
                .headers
                .get(header)
                .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
        } else {
            None
        }
    }

    pub(super) fn find_consumer(&self, id: &str, by_username: bool) -> Option<Value> {
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

    pub(super) fn exit_outcome(
        &mut self,
        status: i64,
        body: Vec<u8>,
        headers: Headers,
    ) -> PdkOutcome {
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

    /// Runs the emulated PDK function (no overrides): the log timer's saved data first (Kong's
    /// `exposed_api` overrides, docs/protocol.md §4.5), then the function of the PDK module the name
    /// belongs to.
    fn dispatch(&mut self, method: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        if let Some(v) = self.saved_answer(method, args) {
            return Ok(v);
        }
        let module = method
            .strip_prefix("kong.")
            .and_then(|m| m.rsplit_once('.'))
            .map(|(module, _)| module);
        match module {
            Some("client") => self.client(method, args),
            Some("ctx.shared") => self.ctx_shared(method, args),
            Some("ip") => self.ip(method, args),
            Some("log") => self.log(method, args),
            Some("nginx") => self.nginx(method, args),
            Some("node") => self.node(method, args),
            Some("plugin") => self.plugin(method, args),
            Some("request") => self.request(method, args),
            Some("response") => self.response(method, args),
            Some("router") => self.router(method, args),
            Some("service") => self.service(method, args),
            Some("service.request") => self.service_request(method, args),
            Some("service.response") => self.service_response(method, args),
            _ => Err(PdkOutcome::NotFound),
        }
    }

    /// In the log timer, what Kong answers from the data it saved when the log phase started
    /// (`None`: the function runs as usual).
    fn saved_answer(&self, method: &str, args: &[Value]) -> Option<Value> {
        let saved = self.saved.as_ref().filter(|_| self.in_log())?;
        let v = self.version;
        let header = |h: &Headers| {
            let name = string_arg(arg(args, 0)).unwrap_or_default();
            h.get(&name).map(Value::str).unwrap_or(Value::Nil)
        };
        Some(match method {
            "kong.request.get_headers" if v.saves_request_headers() => {
                saved.request_headers.to_table(None).0
            }
            "kong.request.get_header" if v.saves_request_headers() => {
                header(&saved.request_headers)
            }
            "kong.response.get_status" if v.saves_response() => Value::Int(saved.response_status),
            "kong.response.get_headers" if v.saves_response() => {
                saved.response_headers.to_table(None).0
            }
            "kong.response.get_header" if v.saves_response() => header(&saved.response_headers),
            "kong.response.get_source" => Value::str(saved.source.as_str()),
            "kong.nginx.req_start_time" => Value::Float(saved.req_start_time),
            "kong.log.serialize" => Value::str(saved.serialize_json.as_str()),
            _ => return None,
        })
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
            Some(OverrideAnswer::Emulate) | None => match self.dispatch(method, args) {
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

#[cfg(test)]
mod tests;
