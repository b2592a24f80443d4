//! Small HTTP servers of the proxy's own, each on its own thread (like an upstream process):
//!
//! * the `echo` upstream (`--upstream echo`): answers 200 with the request it saw, as JSON:
//!   `{"method", "path", "query", "uri", "http_version", "headers", "body"}` (headers with
//!   lower-case names, a string for one value and an array for several; the body as text);
//! * the `hello` server: 200 `hello` and nothing else, the plain hyper server loadgen measures
//!   the proxy against (the HTTP floor).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::sync::watch;

use super::server::{serve, ServeConfig};
use crate::pdk::Headers;

/// The largest request body the echo upstream reads.
const ECHO_MAX_BODY: usize = 64 << 20;

/// The `Server` header of the echo upstream's answers.
pub const ECHO_SERVER: &str = concat!("mock-kong-echo/", env!("CARGO_PKG_VERSION"));

/// A running built-in server.
pub struct HttpServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Echo,
    Hello,
}

impl HttpServer {
    /// The echo upstream on `127.0.0.1` and a free port.
    pub fn start_echo() -> std::io::Result<HttpServer> {
        HttpServer::start(Kind::Echo)
    }

    /// The plain `hello` server on `127.0.0.1` and a free port.
    pub fn start_hello() -> std::io::Result<HttpServer> {
        HttpServer::start(Kind::Hello)
    }

    fn start(kind: Kind) -> std::io::Result<HttpServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let cfg = ServeConfig {
            header_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(5),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("mock-kong-{kind:?}").to_lowercase())
            .spawn(move || {
                let _ = rt.block_on(serve(listener, stop_rx, cfg, move |_peer| {
                    hyper::service::service_fn(move |req| answer(kind, req))
                }));
            })?;
        Ok(HttpServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread (its connections get a few seconds to
    /// finish their requests).
    pub fn stop_blocking(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn answer(kind: Kind, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match kind {
        Kind::Hello => Response::new(Full::new(Bytes::from_static(b"hello"))),
        Kind::Echo => echo(req).await,
    })
}

async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, ECHO_MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let status = if e.is::<http_body_util::LengthLimitError>() {
                413
            } else {
                400
            };
            let mut r = Response::new(Full::new(Bytes::from(format!("{e}\n"))));
            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
            return r;
        }
    };
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
    let version = match parts.version {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let seen = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "uri": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "http_version": version,
        "headers": headers.to_json(),
        "body": String::from_utf8_lossy(&body),
    });
    let mut r = Response::new(Full::new(Bytes::from(seen.to_string())));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        hyper::header::SERVER,
        hyper::header::HeaderValue::from_static(ECHO_SERVER),
    );
    r
}
