//! Load over HTTP (`--via http`): every request is a real HTTP/1.1 request to `mock-kong proxy`
//! in front of the plugin server, as wrk, oha or k6 drive Kong's proxy port.
//!
//! The proxy runs inside loadgen's process on threads of its own (`kong_workers` of them, each
//! a current-thread runtime with its own plugin-server connections, like nginx workers), with
//! the built-in echo upstream on another thread; loadgen's request loops each hold one
//! keep-alive connection to it (concurrency = connections). Its answers carry the PDK calls of
//! each request ([`mock_kong::proxy::PDK_CALLS_HEADER`]), which the counters use. So over HTTP
//! loadgen's own figures (CPU, system calls, allocations: "the harness") are the client's and
//! the proxy's together, as a benchmark of Kong counts wrk and Kong.
//!
//! The HTTP floor ([`http_floor`]) measures, in the same run, the proxy with a plugin that
//! declares no phase (no plugin-server traffic at all) against a plain hyper server answering
//! `hello`: what the HTTP path itself costs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mock_kong::pdk::KongVersion;
use mock_kong::proxy::{
    ChainPlugin, HttpServer, PluginChain, Proxy, ProxyOptions, PDK_CALLS_HEADER,
};
use mock_kong::scenario::model::RequestSpec;
use mock_kong::session::{Session, SessionOptions};
use mock_kong::target::{self, Placement, TargetSpec};
use mock_kong::Protocol;

use crate::driver::{self, DriverError, Mode, PointSpec, PreparedPoint, Requester, Transport};
use crate::stats::{self, LatencyUs, Spread};

/// The last error-log lines of a proxy, kept to explain a failed sample request.
const KEEP_ERRORS: usize = 5;

/// An HTTP point's proxy (absent for a server loadgen only connects to).
pub struct HttpPoint {
    addr: SocketAddr,
    proxy: Option<Proxy>,
    /// Whether answers must carry the PDK-calls header (the proxy's do, a plain server's not).
    counts_calls: bool,
    /// The request every loop sends.
    request: Arc<RequestTemplate>,
    /// Plugin-server events per request (the plugins' declared HTTP phases).
    events: u32,
    /// Whether a 4xx answer (a plugin's `kong.response.exit`) completes a request.
    exits_ok: bool,
}

impl HttpPoint {
    /// A request loop's client: one keep-alive connection.
    pub fn requester(&self) -> HttpRequester {
        HttpRequester {
            addr: self.addr,
            conn: None,
            counts_calls: self.counts_calls,
            request: self.request.clone(),
            exits_ok: self.exits_ok,
        }
    }

    /// Plugin-server events per request.
    pub fn events(&self) -> u32 {
        self.events
    }

    /// Stops the proxy (requests in flight finish first).
    pub async fn stop(self) {
        if let Some(p) = self.proxy {
            p.stop().await;
        }
    }
}

/// What each request of a point is: by default `GET /` with `Host: example.com` and `x-bench: 1`
/// (the header the bench plugin reads); with loadgen's request options (`--http-method`,
/// `--path`, `--query`, `--header`, `--body`) what they describe.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    method: hyper::Method,
    uri: String,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    body: Bytes,
}

impl RequestTemplate {
    /// The bench plugin's request.
    pub fn bench() -> RequestTemplate {
        RequestTemplate {
            method: hyper::Method::GET,
            uri: "/".into(),
            headers: vec![
                (
                    hyper::header::HOST,
                    hyper::header::HeaderValue::from_static("example.com"),
                ),
                (
                    hyper::header::HeaderName::from_static("x-bench"),
                    hyper::header::HeaderValue::from_static("1"),
                ),
            ],
            body: Bytes::new(),
        }
    }

    /// The request `spec` describes (what `mock-kong run` would emulate), as real HTTP.
    pub fn from_spec(spec: &RequestSpec) -> Result<RequestTemplate, String> {
        let method = spec.method.as_deref().unwrap_or("GET");
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("`{method}` is not an HTTP method"))?;
        let mut uri = spec.path.clone().unwrap_or_else(|| "/".into());
        if !uri.starts_with('/') {
            uri.insert(0, '/');
        }
        if let Some(q) = spec.query.as_deref().filter(|q| !q.is_empty()) {
            uri.push('?');
            uri.push_str(q);
        }
        uri.parse::<hyper::Uri>()
            .map_err(|e| format!("`{uri}` is not a request target: {e}"))?;
        let mut headers = Vec::new();
        let mut push = |name: &str, value: &str| -> Result<(), String> {
            let n = hyper::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            let v = hyper::header::HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header `{name}` is not valid in HTTP"))?;
            headers.push((n, v));
            Ok(())
        };
        if !spec.headers.keys().any(|k| k.eq_ignore_ascii_case("host")) {
            push("host", spec.host.as_deref().unwrap_or("example.com"))?;
        }
        for (name, value) in &spec.headers {
            match value {
                serde_json::Value::Array(list) => {
                    for v in list {
                        push(name, &json_text(v))?;
                    }
                }
                v => push(name, &json_text(v))?,
            }
        }
        Ok(RequestTemplate {
            method,
            uri,
            headers,
            body: Bytes::from(spec.body.clone().unwrap_or_default()),
        })
    }

    fn build(&self) -> Result<hyper::Request<Full<Bytes>>, hyper::http::Error> {
        let mut b = hyper::Request::builder()
            .method(self.method.clone())
            .uri(self.uri.as_str());
        for (n, v) in &self.headers {
            b = b.header(n, v);
        }
        b.body(Full::new(self.body.clone()))
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One keep-alive connection sending the point's request and reading each answer whole.
pub struct HttpRequester {
    addr: SocketAddr,
    conn: Option<SendRequest<Full<Bytes>>>,
    counts_calls: bool,
    request: Arc<RequestTemplate>,
    exits_ok: bool,
}

/// The error kind of an answer with `status`.
fn status_kind(status: u16) -> &'static str {
    match status {
        400 => "http_400",
        403 => "http_403",
        413 => "http_413",
        500 => "http_500",
        502 => "http_502",
        503 => "http_503",
        504 => "http_504",
        s if s < 500 => "http_4xx_other",
        _ => "http_5xx_other",
    }
}

impl HttpRequester {
    async fn connection(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, &'static str> {
        let open = matches!(&self.conn, Some(c) if !c.is_closed());
        if !open {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|_| "http_connect")?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| "http_connect")?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.conn = Some(sender);
        }
        self.conn.as_mut().ok_or("http_connect")
    }

    async fn exchange(&mut self) -> Result<u64, &'static str> {
        let counts_calls = self.counts_calls;
        let req = self.request.build().map_err(|_| "http_request")?;
        let sender = self.connection().await?;
        sender.ready().await.map_err(|_| "http_connection")?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|_| "http_connection")?;
        let status = resp.status().as_u16();
        let calls = resp
            .headers()
            .get(PDK_CALLS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        resp.into_body()
            .collect()
            .await
            .map_err(|_| "http_connection")?;
        // A plugin of the user's own may end a request (an auth plugin's 401/403, `exits_ok`);
        // the bench plugin never does. Kong's own 5xx answers are always failures.
        let completed = status == 200 || (self.exits_ok && status < 500);
        if !completed {
            return Err(status_kind(status));
        }
        match (counts_calls, calls) {
            (false, _) => Ok(0),
            (true, Some(n)) => Ok(n),
            (true, None) => Err("http_no_pdk_calls_header"),
        }
    }
}

impl Requester for HttpRequester {
    async fn request(&mut self) -> Result<u64, &'static str> {
        let r = self.exchange().await;
        if r.is_err() {
            // A failed exchange may leave the connection mid-answer: the next one starts afresh.
            self.conn = None;
        }
        r
    }
}

/// Error-log lines of a proxy, the last few.
#[derive(Clone, Default)]
struct RecentErrors(Arc<Mutex<VecDeque<String>>>);

impl RecentErrors {
    fn sink(&self) -> mock_kong::proxy::LineSink {
        let lines = self.0.clone();
        Arc::new(move |l: &str| {
            if let Ok(mut q) = lines.lock() {
                if q.len() == KEEP_ERRORS {
                    q.pop_front();
                }
                q.push_back(l.to_owned());
            }
        })
    }

    fn text(&self) -> String {
        self.0
            .lock()
            .map(|q| q.iter().cloned().collect::<Vec<_>>().join("; "))
            .unwrap_or_default()
    }
}

/// Starts the proxy with `chain` (`workers` workers, the echo upstream, PDK calls counted in a
/// header) and checks a sample request.
async fn start_proxy(
    chain: PluginChain,
    workers: usize,
    calls: u32,
    request: RequestTemplate,
    exits_ok: bool,
) -> Result<(HttpPoint, u64), DriverError> {
    let events = chain
        .plugins()
        .iter()
        .map(|p| p.http_phases().len())
        .sum::<usize>();
    let mut opts = ProxyOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    opts.workers = workers;
    opts.pdk_calls_header = true;
    opts.grace = Duration::from_secs(2);
    let errors = RecentErrors::default();
    opts.error_log = Some(errors.sink());
    let proxy = Proxy::start(opts, chain).map_err(|e| DriverError::Proxy(e.to_string()))?;
    let point = HttpPoint {
        addr: proxy.addr(),
        proxy: Some(proxy),
        counts_calls: true,
        request: Arc::new(request),
        events: u32::try_from(events).unwrap_or(u32::MAX),
        exits_ok,
    };
    match point.requester().request().await {
        Ok(n) => Ok((point, n)),
        Err(kind) => {
            point.stop().await;
            Err(DriverError::HttpSample {
                calls,
                kind,
                detail: errors.text(),
            })
        }
    }
}

/// An HTTP point: the proxy in front of `session`'s `plugin` (the bench plugin with the
/// point's calls), `kong_workers` workers, a sample request checked.
pub async fn prepare(
    session: &Session,
    plugin: &str,
    spec: PointSpec,
) -> Result<PreparedPoint, DriverError> {
    driver::check(&spec)?;
    let info = session
        .registered_plugin(plugin, KongVersion::DEFAULT)
        .map_err(DriverError::Proxy)?
        .clone();
    let (config, request) = match &spec.custom {
        None => (
            driver::bench_config(spec.calls, &spec.method),
            RequestTemplate::bench(),
        ),
        Some(custom) => (
            custom.kong_config(&info)?,
            RequestTemplate::from_spec(&custom.request).map_err(DriverError::Invalid)?,
        ),
    };
    let custom = spec.custom.is_some();
    let chain = PluginChain::new(vec![ChainPlugin::new(session, info, config)]);
    let (point, verified) =
        start_proxy(chain, spec.kong_workers, spec.calls, request, custom).await?;
    let mut spec = spec;
    if custom {
        spec.calls = u32::try_from(verified).unwrap_or(u32::MAX);
    }
    Ok(PreparedPoint {
        spec,
        transport: Transport::Http(point),
        verified_calls: usize::try_from(verified).unwrap_or(usize::MAX),
    })
}

/// The HTTP path's own cost, measured in one run: the proxy with a plugin that declares no
/// phase (the reference server's `idle`: no plugin-server traffic) against a plain hyper
/// server answering `hello`, one connection, closed loop, trials interleaved.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HttpFloor {
    /// The plain hyper server: requests/s (median of the trials) and latency.
    pub hello_rps: f64,
    pub hello_latency_us: LatencyUs,
    /// The proxy (no phase, echo upstream): requests/s and latency.
    pub proxy_rps: f64,
    pub proxy_latency_us: LatencyUs,
    /// proxy_rps ÷ hello_rps.
    pub proxy_share_of_hello: f64,
    /// The proxy's p50 latency minus the hello server's, µs: what the proxy adds to a request
    /// (its own work and the hop to the upstream).
    pub proxy_p50_overhead_us: f64,
    /// Trials of each side.
    pub trials: usize,
}

/// Measures the [`HttpFloor`]: `trials` trials of each side, alternating.
///
/// `exe` starts the reference server (`reference-server` subcommand; default: this
/// executable).
pub async fn http_floor(
    exe: Option<std::path::PathBuf>,
    session_opts: &SessionOptions,
    warmup: Duration,
    duration: Duration,
    trials: usize,
) -> Result<HttpFloor, String> {
    let spec = TargetSpec::Reference {
        protocol: Protocol::MsgPack,
        exe,
        faults: Vec::new(),
    };
    let resolved = target::resolve(&spec, &Placement::default(), "idle")
        .map_err(|e| format!("the reference server: {e}"))?;
    let session = Session::open(resolved, session_opts)
        .await
        .map_err(|e| format!("the reference server: {e}"))?;
    let measured = async {
        let info = session
            .registered_plugin("idle", KongVersion::DEFAULT)
            .map_err(|e| format!("the reference server: {e}"))?
            .clone();
        let chain = PluginChain::new(vec![ChainPlugin::new(
            &session,
            info,
            serde_json::Map::new(),
        )]);
        let (proxy, _) = start_proxy(chain, 1, 0, RequestTemplate::bench(), false)
            .await
            .map_err(|e| format!("the proxy with plugin idle: {e}"))?;
        let hello = HttpServer::start_hello().map_err(|e| format!("the hello server: {e}"))?;
        let spec = PointSpec {
            calls: 0,
            method: String::new(),
            concurrency: 1,
            kong_workers: 1,
            mode: Mode::Closed,
            warmup,
            duration,
            custom: None,
        };
        let sides = [
            PreparedPoint {
                spec: spec.clone(),
                transport: Transport::Http(HttpPoint {
                    addr: hello.addr(),
                    proxy: None,
                    counts_calls: false,
                    request: Arc::new(RequestTemplate::bench()),
                    events: 0,
                    exits_ok: false,
                }),
                verified_calls: 0,
            },
            PreparedPoint {
                spec,
                transport: Transport::Http(proxy),
                verified_calls: 0,
            },
        ];
        let mut runs: [Vec<driver::TrialResult>; 2] = [Vec::new(), Vec::new()];
        for t in 0..trials.max(1) {
            // Alternate which side goes first: a slow phase of the machine hits both alike.
            let order = if t % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                runs[i].push(driver::run_trial_on(None, &sides[i], None).await);
            }
        }
        for side in sides {
            side.finish().await;
        }
        hello.stop_blocking();
        let summary = |runs: &[driver::TrialResult]| {
            let mut h = stats::new_histogram();
            for r in runs {
                let _ = h.add(&r.latency);
            }
            let rps = Spread::of(&runs.iter().map(|r| r.rps).collect::<Vec<_>>()).median;
            let errors: u64 = runs.iter().map(|r| r.errors).sum();
            (rps, LatencyUs::of(&h), errors)
        };
        let (hello_rps, hello_latency_us, e1) = summary(&runs[0]);
        let (proxy_rps, proxy_latency_us, e2) = summary(&runs[1]);
        if e1 + e2 > 0 {
            return Err(format!(
                "{e1} error(s) from the hello server, {e2} from the proxy"
            ));
        }
        Ok(HttpFloor {
            proxy_share_of_hello: if hello_rps > 0.0 {
                proxy_rps / hello_rps
            } else {
                0.0
            },
            proxy_p50_overhead_us: proxy_latency_us.p50 - hello_latency_us.p50,
            hello_rps,
            hello_latency_us,
            proxy_rps,
            proxy_latency_us,
            trials: trials.max(1),
        })
    }
    .await;
    session.close().await;
    measured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_have_kinds() {
        assert_eq!(status_kind(500), "http_500");
        assert_eq!(status_kind(418), "http_4xx_other");
        assert_eq!(status_kind(599), "http_5xx_other");
    }
}
