//! The HTTP/1.1 server loop of the proxy workers and of the built-in upstreams: accept,
//! serve each connection with keep-alive (hyper), stop gracefully.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

/// A boxed error as hyper's service and body bounds want it.
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a server treats its connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServeConfig {
    /// How long a client may take to send a request head (then the connection is closed).
    pub header_timeout: Duration,
    /// How long a stopping server waits for its connections to finish their requests.
    pub grace: Duration,
}

/// Serves `listener` until `stop` turns true (or its sender is gone): every connection gets
/// the service `make(peer)`; on stop, no new connection is accepted, each open one finishes
/// the request in progress and closes, for at most `cfg.grace`.
pub(super) async fn serve<M, S, B>(
    listener: std::net::TcpListener,
    mut stop: watch::Receiver<bool>,
    cfg: ServeConfig,
    make: M,
) -> std::io::Result<()>
where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut conns = tokio::task::JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .keep_alive(true);
    while !*stop.borrow() {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = builder.serve_connection(TokioIo::new(stream), make(peer));
                    let mut stop = stop.clone();
                    conns.spawn(async move {
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stop.changed() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                // Out of file descriptors or a connection reset before it was accepted: the
                // listener stays usable; a short pause keeps an exhausted process from spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(cfg.grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
