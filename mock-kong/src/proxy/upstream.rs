//! The upstream call: the request as the plugins left it, over keep-alive HTTP/1.1
//! connections pooled per worker (Kong keeps upstream connections alive too), with Kong's
//! failure statuses: 502 when the upstream cannot be reached or answers badly, 504 when it
//! does not answer in time.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::UpstreamTimeouts;
use crate::pdk::Headers;

/// Idle connections kept per upstream address (Kong: `upstream_keepalive_pool_size` 512).
const POOL_PER_ADDRESS: usize = 512;

/// An upstream named by the user: `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub host: String,
    pub port: u16,
    /// The service path requests are appended to (`/` when none).
    pub path: String,
}

impl UpstreamUrl {
    /// `http://ADDR/`.
    pub fn local(addr: SocketAddr) -> UpstreamUrl {
        UpstreamUrl {
            host: addr.ip().to_string(),
            port: addr.port(),
            path: "/".into(),
        }
    }

    /// Parses `http://host[:port][/path]` (`https` needs TLS, which the proxy does not do).
    pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
        let bad = |why: &str| {
            format!("--upstream expects echo or http://HOST[:PORT][/PATH], got {text:?}: {why}")
        };
        let rest = if let Some(r) = text.strip_prefix("http://") {
            r
        } else if text.starts_with("https://") {
            return Err(bad(
                "https upstreams are not supported (the proxy speaks plain HTTP/1.1)",
            ));
        } else {
            return Err(bad("the scheme must be http://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.contains(['?', '#']) {
            return Err(bad("a query or fragment has no meaning for a service"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        Ok(UpstreamUrl {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// Why the upstream call failed; [`UpstreamError::status`] is what Kong answers.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to the upstream {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to the upstream {addr} timed out after {after:?}")]
    ConnectTimeout {
        addr: String,
        after: std::time::Duration,
    },
    #[error("the upstream {addr} did not answer within {after:?}")]
    ReadTimeout {
        addr: String,
        after: std::time::Duration,
    },
    #[error("the upstream {addr} answered with something that is not HTTP/1.1: {reason}")]
    Invalid { addr: String, reason: String },
    #[error("the upstream {addr} answered with a body larger than {max} bytes")]
    TooLarge { addr: String, max: usize },
    #[error("the request for the upstream cannot be sent: {0}")]
    BadRequest(String),
}

impl UpstreamError {
    /// Kong's answer: 504 for timeouts, 500 for a request the plugins made unsendable, 502
    /// otherwise.
    pub fn status(&self) -> i64 {
        match self {
            UpstreamError::ConnectTimeout { .. } | UpstreamError::ReadTimeout { .. } => 504,
            UpstreamError::BadRequest(_) => 500,
            _ => 502,
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the length, which the sender recomputes: never
/// forwarded in either direction.
pub(super) fn not_forwarded(name: &str) -> bool {
    const NAMES: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "proxy-authenticate",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The upstream's answer, whole.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// The request to send, rebuilt for a retry on a fresh connection.
pub(super) struct Outgoing<'a> {
    pub method: &'a str,
    /// Path and query, `/a?b=c`.
    pub path_and_query: String,
    pub headers: &'a [(String, String)],
    pub body: Bytes,
}

impl Outgoing<'_> {
    fn build(&self) -> Result<hyper::Request<Full<Bytes>>, UpstreamError> {
        let bad = |e: String| UpstreamError::BadRequest(e);
        let method = hyper::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| bad(format!("invalid method {:?}", self.method)))?;
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(self.path_and_query.as_str());
        for (k, v) in self.headers {
            if not_forwarded(k) {
                continue;
            }
            let name = hyper::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| bad(format!("invalid header name {k:?}")))?;
            let value = hyper::header::HeaderValue::from_bytes(v.as_bytes())
                .map_err(|_| bad(format!("invalid value of header {k}: {v:?}")))?;
            b = b.header(name, value);
        }
        b.body(Full::new(self.body.clone()))
            .map_err(|e| bad(format!("{e} (path {:?})", self.path_and_query)))
    }
}

/// An idle keep-alive connection to an upstream.
type Idle = SendRequest<Full<Bytes>>;

/// Pooled keep-alive connections to upstreams, one pool per proxy worker.
pub(super) struct Client {
    /// Idle connections by `(host, port)`, the most recently used last.
    pool: Mutex<HashMap<(String, u16), Vec<Idle>>>,
    timeouts: UpstreamTimeouts,
    max_body: usize,
}

enum Failure {
    /// A pooled connection that the upstream had closed: try a fresh one.
    Stale,
    Failed(UpstreamError),
}

impl Client {
    pub fn new(timeouts: UpstreamTimeouts, max_body: usize) -> Client {
        Client {
            pool: Mutex::new(HashMap::new()),
            timeouts,
            max_body,
        }
    }

    /// Sends `req` to `host:port` on a pooled connection (or a fresh one if the pooled one
    /// turns out closed) and reads the whole answer.
    pub async fn send(
        &self,
        host: &str,
        port: u16,
        req: &Outgoing<'_>,
    ) -> Result<Answer, UpstreamError> {
        let key = (host.to_owned(), port);
        let addr = display_addr(host, port);
        while let Some(mut sender) = self.take(&key) {
            match self.exchange(&mut sender, req.build()?, &addr, true).await {
                Ok(answer) => {
                    self.put(key, sender);
                    return Ok(answer);
                }
                Err(Failure::Stale) => continue,
                Err(Failure::Failed(e)) => return Err(e),
            }
        }
        let mut sender = self.connect(host, port, &addr).await?;
        match self.exchange(&mut sender, req.build()?, &addr, false).await {
            Ok(answer) => {
                self.put(key, sender);
                Ok(answer)
            }
            Err(Failure::Failed(e)) => Err(e),
            Err(Failure::Stale) => Err(UpstreamError::Invalid {
                addr,
                reason: "the connection closed before an answer".into(),
            }),
        }
    }

    fn take(&self, key: &(String, u16)) -> Option<SendRequest<Full<Bytes>>> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.get_mut(key)?;
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, key: (String, u16), sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(key).or_default();
        if idle.len() < POOL_PER_ADDRESS {
            idle.push(sender);
        }
    }

    async fn connect(
        &self,
        host: &str,
        port: u16,
        addr: &str,
    ) -> Result<SendRequest<Full<Bytes>>, UpstreamError> {
        let after = self.timeouts.connect;
        let stream = tokio::time::timeout(after, tokio::net::TcpStream::connect((host, port)))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout {
                addr: addr.to_owned(),
                after,
            })?
            .map_err(|source| UpstreamError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Invalid {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?;
        // Drives the connection; it ends when the sender is dropped or the upstream closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn exchange(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        req: hyper::Request<Full<Bytes>>,
        addr: &str,
        pooled: bool,
    ) -> Result<Answer, Failure> {
        let after = self.timeouts.read;
        let invalid = |e: hyper::Error| {
            // A pooled connection the upstream closed while idle fails before any answer.
            if pooled && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) {
                Failure::Stale
            } else {
                Failure::Failed(UpstreamError::Invalid {
                    addr: addr.to_owned(),
                    reason: e.to_string(),
                })
            }
        };
        let exchange = async {
            sender.ready().await.map_err(invalid)?;
            let resp = sender.send_request(req).await.map_err(invalid)?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    Failure::Failed(if e.is::<http_body_util::LengthLimitError>() {
                        UpstreamError::TooLarge {
                            addr: addr.to_owned(),
                            max: self.max_body,
                        }
                    } else {
                        UpstreamError::Invalid {
                            addr: addr.to_owned(),
                            reason: e.to_string(),
                        }
                    })
                })?
                .to_bytes();
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
            Ok(Answer {
                status: parts.status.as_u16(),
                headers,
                body: body.to_vec(),
            })
        };
        tokio::time::timeout(after, exchange).await.map_err(|_| {
            Failure::Failed(UpstreamError::ReadTimeout {
                addr: addr.to_owned(),
                after,
            })
        })?
    }
}

fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_parse_with_reasons() {
        let u = UpstreamUrl::parse("http://example.com:8080/api").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("example.com", 8080, "/api")
        );
        assert_eq!(u.to_string(), "http://example.com:8080/api");
        let u = UpstreamUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9000, "/")
        );
        assert_eq!(u.to_string(), "http://[::1]:9000/");
        assert_eq!(UpstreamUrl::parse("http://h").unwrap().port, 80);
        for (bad, why) in [
            ("https://h", "not supported"),
            ("ftp://h", "scheme must be http"),
            ("http://h:0", "port must be"),
            ("http://h:x", "port must be"),
            ("http://:80", "no host"),
            ("http://h/p?q=1", "query"),
        ] {
            let e = UpstreamUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn kong_statuses_for_upstream_failures() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let refused = UpstreamError::Connect {
            addr: "a".into(),
            source: io,
        };
        assert_eq!(refused.status(), 502);
        let slow = UpstreamError::ReadTimeout {
            addr: "a".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(slow.status(), 504);
        assert!(not_forwarded("Transfer-Encoding") && !not_forwarded("x-hello"));
    }
}
