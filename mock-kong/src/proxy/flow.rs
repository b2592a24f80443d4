//! One request through the proxy, and the worker threads that serve them.
//!
//! Each request is handled in a task of its own: when its client goes away, hyper drops the
//! connection's future, but the events already sent to a plugin server finish (Kong's Lua
//! handlers finish too; a server would otherwise keep an abandoned event), the upstream is not
//! called any more, and `log` runs with nginx's status 499.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use tokio::sync::{oneshot, watch};

use super::access_log::{access_log_line, AccessEntry};
use super::chain::PluginChain;
use super::server::{serve, ServeConfig};
use super::upstream::{self, not_forwarded, Outgoing, UpstreamUrl};
use super::{Gauge, ProxyOptions, ProxyStats, PDK_CALLS_HEADER};
use crate::host::{Client, PluginEntity, PluginRunner};
use crate::pdk::{ClientRequest, Headers, HttpResponse, KongRequest, KongVersion, Phase, Stage};
use crate::session::play_event;
use crate::{Protocol, Value};

/// What every worker shares.
pub(super) struct Shared {
    opts: ProxyOptions,
    chain: PluginChain,
    listen: SocketAddr,
    stats: Arc<ProxyStats>,
    /// The Kong service entity the proxy routes to (`kong.router.get_service`).
    service: Value,
    /// The one route, `/` (`kong.router.get_route`).
    route: Value,
}

impl Shared {
    pub(super) fn new(
        opts: ProxyOptions,
        chain: PluginChain,
        upstream: UpstreamUrl,
        listen: SocketAddr,
        stats: Arc<ProxyStats>,
    ) -> Shared {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let service_id = crate::host::instances::uuid_from("mock-kong-service");
        let mut service = serde_json::json!({
            "id": service_id,
            "name": "mock-kong",
            "protocol": "http",
            "host": upstream.host,
            "port": upstream.port,
            "retries": 5,
            "connect_timeout": ms(opts.upstream_timeouts.connect),
            "write_timeout": ms(opts.upstream_timeouts.read),
            "read_timeout": ms(opts.upstream_timeouts.read),
            "enabled": true,
        });
        if upstream.path != "/" {
            service["path"] = upstream.path.clone().into();
        }
        let route = serde_json::json!({
            "id": crate::host::instances::uuid_from("mock-kong-route"),
            "name": "mock-kong",
            "protocols": ["http"],
            "paths": ["/"],
            "strip_path": true,
            "preserve_host": false,
            "path_handling": "v0",
            "https_redirect_status_code": 426,
            "request_buffering": true,
            "response_buffering": true,
            "service": {"id": service_id},
        });
        Shared {
            service: Value::from_json(&service),
            route: Value::from_json(&route),
            opts,
            chain,
            listen,
            stats,
        }
    }

    fn error_log(&self, line: &str) {
        if let Some(sink) = &self.opts.error_log {
            sink(line);
        }
    }
}

/// One plugin as one worker runs it: its own connection pool and instance cache.
struct WorkerPlugin {
    entity: PluginEntity,
    protocol: Protocol,
    phases: Vec<Phase>,
    runner: PluginRunner,
}

/// A worker: what an nginx worker process of Kong holds.
struct Worker {
    shared: Arc<Shared>,
    plugins: Vec<WorkerPlugin>,
    upstream: upstream::Client,
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        let plugins = shared
            .chain
            .plugins()
            .iter()
            .map(|p| WorkerPlugin {
                entity: p.entity.clone(),
                protocol: p.protocol,
                phases: p.http_phases(),
                runner: PluginRunner::new(Arc::new(Client::new(p.host.clone()))),
            })
            .collect();
        let upstream = upstream::Client::new(shared.opts.upstream_timeouts, shared.opts.max_body);
        Worker {
            shared,
            plugins,
            upstream,
        }
    }
}

/// The body of every answer: the whole text at once, and a signal when hyper is done with it
/// (written, or the connection is gone): the `log` phase waits for it.
pub(super) struct AnswerBody {
    data: Option<Bytes>,
    done: Option<oneshot::Sender<()>>,
}

impl AnswerBody {
    fn new(data: Vec<u8>) -> (AnswerBody, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let body = AnswerBody {
            data: (!data.is_empty()).then(|| Bytes::from(data)),
            done: Some(tx),
        };
        (body, rx)
    }
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

/// The body of a worker thread: a current-thread runtime serving `listener` until `stop`.
pub(super) fn worker_thread(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shared.error_log(&format!("[error] cannot start a proxy worker runtime: {e}"));
            return;
        }
    };
    rt.block_on(async move {
        let worker = Arc::new(Worker::new(shared.clone()));
        let cfg = ServeConfig {
            header_timeout: shared.opts.header_timeout,
            grace: shared.opts.grace,
        };
        let w = worker.clone();
        let served = serve(listener, stop, cfg, move |peer| {
            let w = w.clone();
            let open = Arc::new(w.shared.stats.enter(Gauge::Connections));
            hyper::service::service_fn(move |req| {
                let w = w.clone();
                let _open = open.clone();
                async move { Ok::<_, Infallible>(handle(w, req, peer).await) }
            })
        })
        .await;
        if let Err(e) = served {
            shared.error_log(&format!("[error] the proxy worker stopped: {e}"));
        }
        // Requests still in flight finish their `log` phase (within the grace period).
        let _ = tokio::time::timeout(
            shared.opts.grace,
            shared.stats.wait_until(|s| s.in_flight() == 0),
        )
        .await;
    });
}

async fn handle(w: Arc<Worker>, req: Request<Incoming>, peer: SocketAddr) -> Response<AnswerBody> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(process(w, req, peer, tx));
    match rx.await {
        Ok(r) => r,
        // The request's task ended without an answer (it cannot, short of a panic).
        Err(_) => {
            let mut r = Response::new(AnswerBody::new(Vec::new()).0);
            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

/// Kong's request id: 32 hex digits, unique per process.
fn request_id() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        t ^ u64::from(std::process::id()).rotate_left(32)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let a = splitmix(seed ^ n);
    let b = splitmix(a ^ n.rotate_left(17));
    format!("{a:016x}{b:016x}")
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn version_text(v: hyper::Version) -> (&'static str, f64) {
    match v {
        hyper::Version::HTTP_10 => ("HTTP/1.0", 1.0),
        _ => ("HTTP/1.1", 1.1),
    }
}

/// The emulated request of a real HTTP request.
fn client_request(
    parts: &hyper::http::request::Parts,
    body: Vec<u8>,
    peer: SocketAddr,
    listen: SocketAddr,
    wall: SystemTime,
) -> ClientRequest {
    let headers = Headers(
        parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    );
    let host = headers
        .get("host")
        .map(|h| strip_port(h).to_ascii_lowercase())
        .unwrap_or_else(|| listen.ip().to_string());
    let start = wall
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    ClientRequest {
        id: request_id(),
        method: parts.method.as_str().to_owned(),
        scheme: "http".into(),
        host,
        port: i64::from(listen.port()),
        path: parts.uri.path().to_owned(),
        raw_query: parts.uri.query().unwrap_or("").to_owned(),
        headers,
        body,
        http_version: version_text(parts.version).1,
        client_ip: peer.ip().to_string(),
        client_port: i64::from(peer.port()),
        // ngx.req.start_time(): seconds with millisecond precision.
        start_time: (start * 1000.0).floor() / 1000.0,
        unnamed_captures: Vec::new(),
        named_captures: Vec::new(),
    }
}

/// `example.com:8000` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// What one request went through, for the access log and the counters.
struct Trail {
    request_line: String,
    /// PDK calls of the events before the answer.
    calls_before_answer: u64,
}

async fn process(
    w: Arc<Worker>,
    req: Request<Incoming>,
    peer: SocketAddr,
    reply: oneshot::Sender<Response<AnswerBody>>,
) {
    let sh = w.shared.clone();
    let _in_flight = sh.stats.enter(Gauge::InFlight);
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let (parts, body) = req.into_parts();
    let mut trail = Trail {
        request_line: format!(
            "{} {} {}",
            parts.method,
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            version_text(parts.version).0
        ),
        calls_before_answer: 0,
    };
    let body = match Limited::new(body, sh.opts.max_body).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => {
            // nginx answers a body over client_max_body_size with 413; a body that breaks off
            // leaves nobody to answer (499 in the log).
            let too_large = e.is::<http_body_util::LengthLimitError>();
            let status = if too_large { 413 } else { 400 };
            let mut kr = w.request(&parts, Vec::new(), peer, wall);
            kr.fail(status);
            kr.finish();
            answer(&w, kr, reply, &mut trail, t0, false).await;
            return;
        }
    };
    let mut kr = w.request(&parts, body, peer, wall);
    for phase in [Phase::Rewrite, Phase::Access] {
        w.run_phase(phase, &mut kr, &mut trail).await;
    }
    let proxy_latency = t0.elapsed();
    if !kr.exited {
        if reply.is_closed() {
            // The client went away during rewrite/access: nginx gives up the request.
            kr.fail(499);
        } else {
            let t = Instant::now();
            match w.call_upstream(&kr).await {
                Ok(answer) => {
                    kr.upstream_answer = answer;
                    kr.proxy();
                    let ms = |d: Duration| d.as_millis().to_string();
                    kr.response_headers
                        .set("X-Kong-Upstream-Latency", vec![ms(t.elapsed())]);
                    kr.response_headers
                        .set("X-Kong-Proxy-Latency", vec![ms(proxy_latency)]);
                }
                Err(e) => {
                    sh.error_log(&format!(
                        "[error] {e} while proxying request {} ({})",
                        kr.client.id, trail.request_line
                    ));
                    kr.kong_log("err", e.to_string());
                    kr.fail(e.status());
                }
            }
        }
    }
    if kr.stage == Stage::Proxied && !kr.exited {
        w.run_phase(Phase::Response, &mut kr, &mut trail).await;
    }
    kr.finish();
    answer(&w, kr, reply, &mut trail, t0, true).await;
}

impl Worker {
    fn request(
        &self,
        parts: &hyper::http::request::Parts,
        body: Vec<u8>,
        peer: SocketAddr,
        wall: SystemTime,
    ) -> KongRequest {
        let sh = &self.shared;
        let mut kr = KongRequest::new(client_request(parts, body, peer, sh.listen, wall));
        kr.version = sh.opts.kong_version;
        kr.service = Some(sh.service.clone());
        kr.route = Some(sh.route.clone());
        kr.start();
        if sh.chain.buffers() {
            kr.upstream_request.buffering = true;
        }
        kr
    }

    /// Runs `phase` of every plugin declaring it, in Kong's order. Only `log` runs after an
    /// exit.
    async fn run_phase(&self, phase: Phase, kr: &mut KongRequest, trail: &mut Trail) {
        let stats = &self.shared.stats;
        for p in &self.plugins {
            if !p.phases.contains(&phase) {
                continue;
            }
            if kr.exited && phase != Phase::Log {
                break;
            }
            kr.plugin_id.clone_from(&p.entity.id);
            kr.protocol = p.protocol;
            let logged = kr.logs.len();
            let played = play_event(&p.runner, &p.entity, phase.as_str(), kr).await;
            let calls = played.event.as_ref().map_or(0, |e| e.calls.len() as u64);
            stats.pdk_calls.fetch_add(calls, Ordering::Relaxed);
            if phase != Phase::Log {
                trail.calls_before_answer += calls;
            }
            if played.raised.is_some() || played.error.is_some() {
                stats.event_failures.fetch_add(1, Ordering::Relaxed);
            }
            // The plugin's kong.log.* lines and Kong's own about it (a raise, a server error)
            // go to the error log, as Kong writes them to its error.log.
            if self.shared.opts.error_log.is_some() {
                for line in &kr.logs[logged..] {
                    self.shared.error_log(&format!(
                        "[{}] [{}] {}: {} (request {})",
                        line.level, line.source, p.entity.name, line.text, kr.client.id
                    ));
                }
            }
        }
    }

    /// Sends the upstream request as the plugins left it.
    async fn call_upstream(
        &self,
        kr: &KongRequest,
    ) -> Result<HttpResponse, upstream::UpstreamError> {
        let up = &kr.upstream_request;
        let (host, port) = match &up.target {
            Some((h, p)) => (h.clone(), *p),
            None => (up.host.clone(), up.port),
        };
        let port = u16::try_from(port).map_err(|_| {
            upstream::UpstreamError::BadRequest(format!("upstream port {port} is not a TCP port"))
        })?;
        let mut headers: Vec<(String, String)> = up
            .headers
            .0
            .iter()
            .filter(|(k, _)| !not_forwarded(k))
            .cloned()
            .collect();
        let c = &kr.client;
        let host_header = c.headers.get("host").unwrap_or(&c.host).to_owned();
        // nginx's proxy_set_header lines of Kong's template (the client is not a trusted IP).
        let mut forwarded = vec![
            ("X-Real-IP", c.client_ip.clone()),
            ("X-Forwarded-For", c.client_ip.clone()),
            ("X-Forwarded-Proto", c.scheme.clone()),
            ("X-Forwarded-Host", strip_port(&host_header).to_owned()),
            ("X-Forwarded-Port", c.port.to_string()),
            ("X-Forwarded-Path", c.path.clone()),
        ];
        if sends_request_id(kr.version) {
            forwarded.push(("X-Kong-Request-Id", c.id.clone()));
        }
        for (name, value) in forwarded {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            headers.push((name.to_owned(), value));
        }
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            headers.insert(0, ("Host".into(), format!("{host}:{port}")));
        }
        let path = if up.path.starts_with('/') {
            up.path.clone()
        } else {
            format!("/{}", up.path)
        };
        let path_and_query = if up.raw_query.is_empty() {
            path
        } else {
            format!("{path}?{}", up.raw_query)
        };
        let body = match &up.body {
            Some(b) => Bytes::from(b.clone()),
            None => Bytes::from(c.body.clone()),
        };
        let out = Outgoing {
            method: &up.method,
            path_and_query,
            headers: &headers,
            body,
        };
        let answer = self.upstream.send(&host, port, &out).await?;
        let headers = Headers(
            answer
                .headers
                .0
                .into_iter()
                .filter(|(k, _)| !not_forwarded(k))
                .collect(),
        );
        Ok(HttpResponse {
            status: i64::from(answer.status),
            headers,
            body: answer.body,
        })
    }
}

/// `X-Kong-Request-Id` goes to the upstream and the client from Kong 3.5 on (`headers`,
/// `headers_upstream`).
fn sends_request_id(v: KongVersion) -> bool {
    v >= KongVersion::new(3, 5)
}

/// Answers the client, writes the access-log line, then runs `log` (after the answer, as Kong
/// runs it in a timer).
async fn answer(
    w: &Worker,
    mut kr: KongRequest,
    reply: oneshot::Sender<Response<AnswerBody>>,
    trail: &mut Trail,
    t0: Instant,
    run_log: bool,
) {
    let sh = &w.shared;
    let mut headers = kr.response_headers.clone();
    headers.0.retain(|(k, _)| !not_forwarded(k));
    let server = format!("kong/{}.0", kr.version);
    if kr.exited {
        // A response Kong made itself (exit, error): Kong's server and latency headers.
        headers.set("Server", vec![server]);
        headers.set(
            "X-Kong-Response-Latency",
            vec![t0.elapsed().as_millis().to_string()],
        );
    }
    if sends_request_id(kr.version) {
        headers.set("X-Kong-Request-Id", vec![kr.client.id.clone()]);
    }
    if sh.opts.pdk_calls_header {
        headers.set(
            PDK_CALLS_HEADER,
            vec![trail.calls_before_answer.to_string()],
        );
    }
    let status = u16::try_from(kr.status())
        .ok()
        .and_then(|s| hyper::StatusCode::from_u16(s).ok())
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let body_bytes = kr.response_body.len();
    let (body, done) = AnswerBody::new(kr.response_body.clone());
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let mut bad_headers = Vec::new();
    for (k, v) in &headers.0 {
        match (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            (Ok(name), Ok(value)) => {
                resp.headers_mut().append(name, value);
            }
            _ => bad_headers.push(k.clone()),
        }
    }
    if !bad_headers.is_empty() {
        sh.error_log(&format!(
            "[warn] response headers left out, not valid HTTP: {} (request {})",
            bad_headers.join(", "),
            kr.client.id
        ));
    }
    let delivered = reply.send(resp).is_ok();
    let mut logged_status = i64::from(status.as_u16());
    if delivered {
        // Written, or the connection broke while writing.
        let _ = done.await;
    } else {
        sh.stats.client_gone.fetch_add(1, Ordering::Relaxed);
        logged_status = 499;
        kr.response_status = Some(499);
    }
    sh.stats.requests.fetch_add(1, Ordering::Relaxed);
    if logged_status >= 500 {
        sh.stats.server_errors.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(sink) = &sh.opts.access_log {
        let c = &kr.client;
        sink(&access_log_line(&AccessEntry {
            client_ip: &c.client_ip,
            request_line: &trail.request_line,
            status: logged_status,
            body_bytes: if delivered { body_bytes } else { 0 },
            referer: c.headers.get("referer"),
            user_agent: c.headers.get("user-agent"),
            request_id: &c.id,
            time: SystemTime::now(),
        }));
    }
    if run_log {
        w.run_phase(Phase::Log, &mut kr, trail).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_are_stripped() {
        assert_eq!(strip_port("example.com:8000"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
