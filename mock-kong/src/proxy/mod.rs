//! `mock-kong proxy`: a real HTTP/1.1 data plane in front of plugin servers, as Kong's proxy
//! port is in front of its external plugins.
//!
//! Every request runs the plugins' declared phases in Kong's order through the real plugin
//! servers (docs/protocol.md §6), with the emulated PDK ([`KongRequest`]) answering from the real HTTP
//! request and the real upstream response:
//!
//! 1. the client request is read (head and whole body) and becomes the emulated request;
//! 2. `rewrite`, then `access`, for each plugin declaring it, by Kong's plugin order
//!    ([`PluginChain`]: priority, highest first); `kong.response.exit` ends the request there,
//!    and a plugin error answers 500 as Kong does ([`crate::session::play_event`]);
//! 3. the upstream gets the request as `kong.service.request.*` left it ([`upstream`]): a URL
//!    of the user's, or the built-in `echo` upstream ([`echo`]); an unreachable upstream
//!    answers 502, a timed-out one 504, as Kong does;
//! 4. `response` runs on the buffered upstream answer (`kong.service.response.*` see it), and
//!    the client gets the response as the plugins left it, with Kong's own headers;
//! 5. `log` runs after the client got its answer (Kong runs it in a timer), from the data saved
//!    when the response was done.
//!
//! The proxy runs on its own threads: `workers` of them, each a current-thread runtime with its
//! own plugin-server connection pools and instance caches, like nginx workers
//! ([`Proxy::start`]). The plugin servers themselves (their processes, respawned as Kong
//! respawns them) belong to the caller's [`Session`](crate::session::Session)s.

mod access_log;
mod chain;
pub mod echo;
mod flow;
mod server;
mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::pdk::KongVersion;

pub use access_log::{access_log_line, LineSink};
pub use chain::{open_chain, ChainError, ChainPlugin, PluginChain};
pub use echo::HttpServer;
pub use upstream::{UpstreamError, UpstreamUrl};

/// Kong's proxy listener (`proxy_listen`'s first address).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";

/// The response header with the number of PDK calls a request's events made before it was
/// answered (rewrite, access, response), when [`ProxyOptions::pdk_calls_header`] is on.
pub const PDK_CALLS_HEADER: &str = "x-mock-kong-pdk-calls";

/// Where requests go after `access`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// The built-in echo upstream ([`echo`]): 200 with the request it saw as JSON.
    Echo,
    /// An HTTP URL of the user's (`http://host:port/path`).
    Url(UpstreamUrl),
}

/// Timeouts of the upstream call (Kong's service defaults: 60 s each).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// From the request sent to the last byte of the answer.
    pub read: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> UpstreamTimeouts {
        UpstreamTimeouts {
            connect: Duration::from_secs(60),
            read: Duration::from_secs(60),
        }
    }
}

/// Everything the proxy needs besides its plugins.
#[derive(Clone)]
pub struct ProxyOptions {
    pub listen: SocketAddr,
    pub upstream: UpstreamTarget,
    pub upstream_timeouts: UpstreamTimeouts,
    /// The Kong release emulated (the PDK's answers, the failure rules).
    pub kong_version: KongVersion,
    /// Worker threads (nginx `worker_processes`), each with its own plugin-server connections.
    pub workers: usize,
    /// The largest request body (and upstream answer) accepted, bytes: 413 (502) beyond.
    pub max_body: usize,
    /// Kong's `client_header_timeout`: how long a client may take to send a request head.
    pub header_timeout: Duration,
    /// How long a stopping proxy waits for requests in flight (their `log` phase included).
    pub grace: Duration,
    /// One line per request, in Kong's access-log format.
    pub access_log: Option<LineSink>,
    /// Where the proxy reports what went wrong (plugin-server errors, upstream failures):
    /// Kong's error log.
    pub error_log: Option<LineSink>,
    /// Add [`PDK_CALLS_HEADER`] to every response (loadgen counts PDK calls with it).
    pub pdk_calls_header: bool,
}

impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("listen", &self.listen)
            .field("upstream", &self.upstream)
            .field("kong_version", &self.kong_version)
            .field("workers", &self.workers)
            .field("pdk_calls_header", &self.pdk_calls_header)
            .finish_non_exhaustive()
    }
}

impl ProxyOptions {
    /// Kong's defaults: `127.0.0.1:8000`, the echo upstream, one worker, 60 s timeouts.
    pub fn new(listen: SocketAddr) -> ProxyOptions {
        ProxyOptions {
            listen,
            upstream: UpstreamTarget::Echo,
            upstream_timeouts: UpstreamTimeouts::default(),
            kong_version: KongVersion::DEFAULT,
            workers: 1,
            max_body: 64 << 20,
            header_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            access_log: None,
            error_log: None,
            pdk_calls_header: false,
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source} (choose another address with --listen, e.g. 127.0.0.1:0 for any free port)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the echo upstream: {0}")]
    Echo(std::io::Error),
    #[error("cannot start a proxy worker thread: {0}")]
    Thread(std::io::Error),
    #[error("invalid proxy options: {0}")]
    Invalid(String),
}

/// What the proxy has done so far (all workers together).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests whose answer was decided (sent, or the client was gone).
    pub requests: AtomicU64,
    /// Requests being handled, `log` phase included.
    in_flight: AtomicI64,
    /// PDK calls of every event.
    pub pdk_calls: AtomicU64,
    /// Events that ended in a failure (raised, unknown method, host error).
    pub event_failures: AtomicU64,
    /// Answers with a 5xx status.
    pub server_errors: AtomicU64,
    /// Requests whose client went away before the answer.
    pub client_gone: AtomicU64,
    /// Client connections open now.
    connections: AtomicI64,
    /// Notified whenever a request or connection starts or ends.
    idle: Notify,
}

impl ProxyStats {
    /// Requests being handled now (their `log` phase included).
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Client connections open now.
    pub fn connections(&self) -> i64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Resolves once no request is in flight and no client connection is open.
    pub async fn wait_idle(&self) {
        self.wait_until(|s| s.in_flight() == 0 && s.connections() == 0)
            .await;
    }

    /// Resolves once `done` holds (checked whenever a request or connection starts or ends).
    pub async fn wait_until(&self, done: impl Fn(&ProxyStats) -> bool) {
        loop {
            let notified = self.idle.notified();
            if done(self) {
                return;
            }
            notified.await;
        }
    }

    fn enter(self: &Arc<Self>, which: Gauge) -> GaugeGuard {
        self.gauge(which).fetch_add(1, Ordering::SeqCst);
        self.idle.notify_waiters();
        GaugeGuard {
            stats: self.clone(),
            which,
        }
    }

    fn gauge(&self, which: Gauge) -> &AtomicI64 {
        match which {
            Gauge::InFlight => &self.in_flight,
            Gauge::Connections => &self.connections,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Gauge {
    InFlight,
    Connections,
}

/// Counts one request or connection for as long as it lives.
struct GaugeGuard {
    stats: Arc<ProxyStats>,
    which: Gauge,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.stats.gauge(self.which).fetch_sub(1, Ordering::SeqCst);
        self.stats.idle.notify_waiters();
    }
}

/// A running proxy. Dropping it stops the workers without waiting (use [`Proxy::stop`]).
pub struct Proxy {
    addr: SocketAddr,
    upstream: String,
    stats: Arc<ProxyStats>,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    echo: Option<HttpServer>,
}

impl Proxy {
    /// Binds `opts.listen`, starts the echo upstream if asked, and starts the workers.
    pub fn start(opts: ProxyOptions, chain: PluginChain) -> Result<Proxy, ProxyError> {
        if opts.workers == 0 {
            return Err(ProxyError::Invalid("workers must be at least 1".into()));
        }
        let listener =
            std::net::TcpListener::bind(opts.listen).map_err(|source| ProxyError::Listen {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Listen {
            addr: opts.listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ProxyError::Listen {
                addr: opts.listen,
                source,
            })?;
        let (echo, upstream_url) = match &opts.upstream {
            UpstreamTarget::Echo => {
                let server = HttpServer::start_echo().map_err(ProxyError::Echo)?;
                let url = UpstreamUrl::local(server.addr());
                (Some(server), url)
            }
            UpstreamTarget::Url(u) => (None, u.clone()),
        };
        let upstream = match &echo {
            Some(_) => format!("echo ({upstream_url})"),
            None => upstream_url.to_string(),
        };
        let stats = Arc::new(ProxyStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(flow::Shared::new(
            opts.clone(),
            chain,
            upstream_url,
            addr,
            stats.clone(),
        ));
        let mut threads = Vec::with_capacity(opts.workers);
        for i in 0..opts.workers {
            let listener = listener.try_clone().map_err(ProxyError::Thread)?;
            let shared = shared.clone();
            let stop_rx = stop_rx.clone();
            let t = std::thread::Builder::new()
                .name(format!("mock-kong-proxy-{i}"))
                .spawn(move || flow::worker_thread(listener, shared, stop_rx))
                .map_err(ProxyError::Thread)?;
            threads.push(t);
        }
        Ok(Proxy {
            addr,
            upstream,
            stats,
            stop,
            threads,
            echo,
        })
    }

    /// The address the proxy listens on (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream, as the banner shows it: `echo (http://127.0.0.1:PORT)` or the URL.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.stats
    }

    /// Stops accepting, lets the requests in flight finish (their `log` phase included, at
    /// most the grace period), and joins the workers and the echo upstream.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let threads = std::mem::take(&mut self.threads);
        let echo = self.echo.take();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
            if let Some(e) = echo {
                e.stop_blocking();
            }
        })
        .await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
