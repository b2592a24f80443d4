//! `mock-kong proxy`: real HTTP requests (written and read byte by byte, as curl would) through
//! the proxy in front of the real peers and the reference server, on free ports.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mock_kong::pdk::KongVersion;
use mock_kong::proxy::{
    open_chain, ChainOptions, Proxy, ProxyOptions, UpstreamTarget, UpstreamTimeouts, UpstreamUrl,
};
use mock_kong::session::Session;
use mock_kong::target::{Placement, TargetSpec};
use mock_kong::Protocol;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::child_guard::ChildGuard;
use crate::util;

/// How the tests open their plugin chains: the harness's session options, Kong 3.9, configs
/// built from the schema as the CLI does.
fn chain_opts() -> ChainOptions {
    ChainOptions {
        session: util::opts(),
        version: KongVersion::DEFAULT,
        raw_config: false,
    }
}
/// A hang guard for waits whose subject is not time (a failure, never a measurement).
const HANG: Duration = Duration::from_secs(120);

fn peer(name: &str) -> TargetSpec {
    TargetSpec::Peer {
        name: name.into(),
        registry: util::root().join("peers.toml"),
    }
}

fn reference(protocol: Protocol, faults: &[&str]) -> TargetSpec {
    TargetSpec::Reference {
        protocol,
        exe: Some(util::exe()),
        faults: faults.iter().map(|f| (*f).to_owned()).collect(),
    }
}

/// A proxy on a free port with its plugin servers, and the lines it logged.
struct Served {
    proxy: Proxy,
    sessions: Vec<Session>,
    access: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Served {
    fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    fn access_log(&self) -> Vec<String> {
        self.access.lock().unwrap().clone()
    }

    fn error_log(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    async fn idle(&self) {
        tokio::time::timeout(HANG, self.proxy.stats().wait_idle())
            .await
            .expect("the proxy never became idle");
    }

    /// A client that sends `raw` on a fresh connection and goes away once the proxy has its
    /// request in flight; returns when the proxy is idle again.
    async fn abandon(&self, raw: &[u8]) {
        let mut conn = TcpStream::connect(self.addr()).await.unwrap();
        conn.write_all(raw).await.unwrap();
        tokio::time::timeout(HANG, self.proxy.stats().wait_until(|s| s.in_flight() == 1))
            .await
            .unwrap();
        drop(conn);
        self.idle().await;
    }

    async fn close(self) {
        self.proxy.stop().await;
        for s in self.sessions {
            s.close().await;
        }
    }
}

async fn serve_with(
    spec: &TargetSpec,
    plugins: &[(&str, serde_json::Value)],
    tune: impl FnOnce(&mut ProxyOptions),
) -> Served {
    let plugins: Vec<_> = plugins
        .iter()
        .map(|(n, c)| {
            let serde_json::Value::Object(m) = c.clone() else {
                panic!("config must be an object")
            };
            (Some((*n).to_owned()), m)
        })
        .collect();
    let (sessions, chain) = open_chain(spec, &Placement::default(), &plugins, &chain_opts())
        .await
        .expect("open the plugin servers");
    let access = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut opts = ProxyOptions::new("127.0.0.1:0".parse().unwrap());
    let a = access.clone();
    opts.access_log = Some(Arc::new(move |l: &str| {
        a.lock().unwrap().push(l.to_owned())
    }));
    let e = errors.clone();
    opts.error_log = Some(Arc::new(move |l: &str| {
        e.lock().unwrap().push(l.to_owned())
    }));
    tune(&mut opts);
    let proxy = Proxy::start(opts, chain).expect("start the proxy");
    Served {
        proxy,
        sessions,
        access,
        errors,
    }
}

async fn serve(spec: &TargetSpec, plugins: &[(&str, serde_json::Value)]) -> Served {
    serve_with(spec, plugins, |_| {}).await
}

/// An HTTP answer as a client reads it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// What the echo upstream saw.
    fn echoed(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not the echo upstream's JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Parses one answer from the front of `buf` (Content-Length bodies), if it is all there.
fn parse_answer(buf: &[u8]) -> Option<(Answer, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("a length"));
    if buf.len() < end + len {
        return None;
    }
    let body = buf[end..end + len].to_vec();
    Some((
        Answer {
            status,
            headers,
            body,
        },
        end + len,
    ))
}

/// Reads `n` answers from `conn`.
async fn read_answers(conn: &mut TcpStream, n: usize) -> Vec<Answer> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while out.len() < n {
        while let Some((a, used)) = parse_answer(&buf) {
            out.push(a);
            buf.drain(..used);
            if out.len() == n {
                return out;
            }
        }
        let got = tokio::time::timeout(HANG, conn.read(&mut chunk))
            .await
            .expect("no answer")
            .expect("read");
        assert!(
            got > 0,
            "the connection closed after {} answer(s); unread: {:?}",
            out.len(),
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..got]);
    }
    out
}

/// Sends `raw` on a fresh connection and reads one answer.
async fn send(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut conn = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    conn.write_all(raw).await.unwrap();
    read_answers(&mut conn, 1).await.remove(0)
}

async fn get(addr: SocketAddr, path: &str, host: &str) -> Answer {
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
    );
    send(addr, raw.as_bytes()).await
}

/// The issue's must: curl against the proxy with each real peer: the header hello sets, the
/// header it sets for the upstream (kong.service.request.set_header) as the upstream saw it,
/// and the 403 of exit, which never reaches the upstream.
#[tokio::test(flavor = "current_thread")]
async fn proxy_runs_hello_and_exit_on_every_real_peer() {
    for name in ["go", "python", "js"] {
        if !util::peer_installed(name) {
            continue;
        }
        let hello = json!({"message": "hi", "upstream_header": "x-from-plugin"});
        let s = serve(&peer(name), &[("hello", hello)]).await;
        let a = get(s.addr(), "/some/path?a=1", "example.com").await;
        assert_eq!(a.status, 200, "{name}: {a:?} {:?}", s.error_log());
        assert_eq!(a.header("x-hello"), Some("hi example.com"), "{name}");
        assert_eq!(a.header("via"), Some("1.1 kong/3.9.0"), "{name}");
        let seen = a.echoed();
        assert_eq!(seen["headers"]["x-from-plugin"], "hi example.com", "{name}");
        assert_eq!(seen["path"], "/some/path", "{name}");
        assert_eq!(seen["query"], "a=1", "{name}");
        assert_eq!(seen["headers"]["x-forwarded-host"], "example.com", "{name}");
        s.close().await;

        // exit: 403 without calling the upstream (a listener that is never accepted from
        // shows any connection attempt in its queue).
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        upstream.set_nonblocking(true).unwrap();
        let url = UpstreamUrl::local(upstream.local_addr().unwrap());
        let s = serve_with(&peer(name), &[("exit", json!({}))], |o| {
            o.upstream = UpstreamTarget::Url(url)
        })
        .await;
        let a = get(s.addr(), "/", "example.com").await;
        assert_eq!(a.status, 403, "{name}: {a:?}");
        assert_eq!(a.body, b"blocked", "{name}");
        assert_eq!(a.header("x-exit"), Some("1"), "{name}");
        assert_eq!(a.header("server"), Some("kong/3.9.0"), "{name}");
        assert!(
            upstream.accept().is_err(),
            "{name}: the upstream was called after an exit"
        );
        s.close().await;
    }
}

/// Keep-alive connections serve request after request, a chunked request body reaches the
/// upstream whole, and the access log has one line per request in Kong's format.
#[tokio::test(flavor = "current_thread")]
async fn keep_alive_and_chunked_bodies() {
    let s = serve(&reference(Protocol::MsgPack, &[]), &[("hello", json!({}))]).await;
    let mut conn = TcpStream::connect(s.addr()).await.unwrap();
    let raw = "POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
               5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
               GET /second HTTP/1.1\r\nHost: a.test\r\n\r\n";
    conn.write_all(raw.as_bytes()).await.unwrap();
    let answers = read_answers(&mut conn, 2).await;
    assert_eq!(answers[0].status, 200);
    let first = answers[0].echoed();
    assert_eq!(first["body"], "hello world");
    assert_eq!(first["method"], "POST");
    assert_eq!(answers[1].echoed()["path"], "/second");
    assert_eq!(answers[1].header("x-hello"), Some("hello a.test"));
    assert_eq!(
        s.proxy.stats().connections(),
        1,
        "one keep-alive connection"
    );
    drop(conn);
    s.idle().await;
    let log = s.access_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].starts_with("127.0.0.1 - - [") && log[0].contains("] \"POST /up HTTP/1.1\" 200 "),
        "{}",
        log[0]
    );
    assert!(log[1].contains("kong_request_id: \""), "{}", log[1]);
    s.close().await;
}

/// `response` runs on the upstream's answer (it reads the upstream's Server header), `log`
/// runs after the client got its answer, and several plugins run by priority, then name
/// (equal priorities: multiphase before hello before exit), exit ending the request.
#[tokio::test(flavor = "current_thread")]
async fn phases_run_in_kongs_order_across_plugins() {
    let spec = reference(Protocol::ProtoBuf, &[]);
    let s = serve(&spec, &[("multiphase", json!({"message": "m1"}))]).await;
    let a = get(s.addr(), "/", "b.test").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-multi-access"), Some("b.test"));
    assert_eq!(
        a.header("x-multi-response"),
        Some(format!("got from server '{}'", mock_kong::proxy::echo::ECHO_SERVER).as_str())
    );
    s.idle().await;
    let errors = s.error_log();
    assert!(
        errors.iter().any(|l| l.contains("shared_msg: m1")),
        "the log phase read kong.ctx.shared: {errors:?}"
    );
    s.close().await;

    let s = serve(
        &spec,
        &[
            ("exit", json!({"status": 401})),
            ("hello", json!({})),
            ("multiphase", json!({})),
        ],
    )
    .await;
    let a = get(s.addr(), "/", "c.test").await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("x-multi-access"), Some("c.test"), "ran first");
    assert_eq!(a.header("x-hello"), Some("hello c.test"), "ran second");
    assert_eq!(
        a.header("x-multi-response"),
        None,
        "no response phase after an exit"
    );
    s.idle().await;
    assert!(
        s.error_log()
            .iter()
            .any(|l| l.contains("shared_msg: hello")),
        "log still runs after an exit"
    );
    s.close().await;
}

/// An upstream that refuses connections answers 502, one that does not answer in time 504,
/// as Kong does.
#[tokio::test(flavor = "current_thread")]
async fn upstream_failures_answer_502_and_504() {
    let spec = reference(Protocol::MsgPack, &[]);
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = serve_with(&spec, &[("hello", json!({}))], |o| {
        o.upstream = UpstreamTarget::Url(UpstreamUrl::local(refused))
    })
    .await;
    let a = get(s.addr(), "/", "d.test").await;
    assert_eq!(a.status, 502, "{a:?}");
    let body = String::from_utf8_lossy(&a.body);
    assert!(
        body.contains("An invalid response was received from the upstream server"),
        "{body}"
    );
    assert!(
        s.error_log()
            .iter()
            .any(|l| l.contains("connecting to the upstream")),
        "{:?}",
        s.error_log()
    );
    s.close().await;

    // Accepts, reads, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let s = serve_with(&spec, &[("hello", json!({}))], |o| {
        o.upstream = UpstreamTarget::Url(UpstreamUrl::local(silent_addr));
        o.upstream_timeouts = UpstreamTimeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_millis(300),
        };
    })
    .await;
    let a = get(s.addr(), "/", "d.test").await;
    assert_eq!(a.status, 504, "{a:?}");
    assert!(String::from_utf8_lossy(&a.body).contains("The upstream server is timing out"));
    s.close().await;
    holder.abort();
}

/// Malformed HTTP answers 400 (hyper's parser, as nginx's), and the proxy keeps serving.
#[tokio::test(flavor = "current_thread")]
async fn malformed_http_answers_400() {
    let s = serve(&reference(Protocol::MsgPack, &[]), &[("hello", json!({}))]).await;
    for raw in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ] {
        let mut conn = TcpStream::connect(s.addr()).await.unwrap();
        conn.write_all(raw).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(HANG, conn.read_to_end(&mut got))
            .await
            .expect("hyper closes after a 400")
            .unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 400"), "{raw:?}: {text}");
    }
    assert_eq!(get(s.addr(), "/", "e.test").await.status, 200);
    s.close().await;
}

/// A client that goes away mid-body or while a plugin's event runs: no request or connection
/// stays behind. Mid-body, no plugin runs and the request is logged 400 (nginx's status for a
/// body that breaks off); mid-event, the event in flight finishes (the plugin server is not
/// left with an abandoned event), the upstream is not called, `log` runs with nginx's 499.
#[tokio::test(flavor = "current_thread")]
async fn clients_that_disconnect_leave_nothing_behind() {
    // 3000 PDK calls of 200 µs of server CPU each: an access event of well over half a second.
    let spec = reference(Protocol::MsgPack, &["very-slow-pdk"]);
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    upstream.set_nonblocking(true).unwrap();
    let url = UpstreamUrl::local(upstream.local_addr().unwrap());
    let s = serve_with(&spec, &[("bench", json!({"calls": 3000}))], |o| {
        o.upstream = UpstreamTarget::Url(url)
    })
    .await;
    let stats = s.proxy.stats().clone();

    // Mid-body: 10 of 100 bytes, then gone.
    s.abandon(b"POST / HTTP/1.1\r\nHost: f.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    assert_eq!(stats.pdk_calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    let log = s.access_log();
    assert!(
        log.len() == 1 && log[0].contains("\"POST / HTTP/1.1\" 400 "),
        "{log:?}"
    );

    // Mid-event.
    s.abandon(b"GET / HTTP/1.1\r\nHost: f.test\r\n\r\n").await;
    assert_eq!(
        stats.client_gone.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        stats.pdk_calls.load(std::sync::atomic::Ordering::SeqCst),
        3000,
        "the event in flight ran to its end"
    );
    assert!(
        upstream.accept().is_err(),
        "the upstream was called for a client that was gone"
    );
    let log = s.access_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1].contains("\"GET / HTTP/1.1\" 499 0 "), "{log:?}");
    assert_eq!(stats.connections(), 0);
    assert_eq!(stats.in_flight(), 0);
    s.close().await;
}

/// A plugin server that dies in the middle of a request (go-pdk: a panic in a handler ends the
/// process) answers 500, as Kong 3.8+ does for a failed ProtoBuf event; Kong-style respawn
/// brings the server back and the same proxy serves the next request with it.
///
/// The server is started by a command that runs the go `faults` plugin (mode `raise-after`:
/// one PDK call, then a panic) the first time and the go `hello` plugin after, both named
/// `hello` (go-pdk names the plugin and its socket after its executable file, here copies).
#[tokio::test(flavor = "current_thread")]
async fn a_plugin_server_dying_mid_request_answers_500_and_the_proxy_keeps_serving() {
    if !util::peer_installed("go") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = util::root().join(".peers/go/bin");
    for (sub, target) in [("first", "faults"), ("then", "hello")] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        std::fs::copy(bin.join(target), dir.path().join(sub).join("hello")).unwrap();
    }
    let d = dir.path().display();
    let start = format!(
        "sh -c 'if [ -e {d}/died ]; then exec {d}/then/hello -kong-prefix {d}; \
         else touch {d}/died; exec {d}/first/hello -kong-prefix {d}; fi'"
    );
    let spec = TargetSpec::Commands {
        name: Some("hello".into()),
        start_cmd: Some(start),
        query_cmd: format!("{d}/then/hello -dump"),
    };
    let (sessions, chain) = open_chain(
        &spec,
        &Placement {
            socket: Some(dir.path().join("hello.socket")),
            prefix: None,
        },
        &[(
            Some("hello".into()),
            serde_json::from_value(json!({"mode": "raise-after", "message": "back"})).unwrap(),
        )],
        // One config for two plugins (faults' `mode`, hello's `message`): hello's schema, the
        // one dumped, would reject `mode`.
        &ChainOptions {
            raw_config: true,
            ..chain_opts()
        },
    )
    .await
    .expect("open");
    let proxy =
        Proxy::start(ProxyOptions::new("127.0.0.1:0".parse().unwrap()), chain).expect("start");
    let a = get(proxy.addr(), "/", "g.test").await;
    assert_eq!(a.status, 500, "{a:?}");
    assert!(String::from_utf8_lossy(&a.body).contains("An unexpected error occurred"));
    let process = sessions[0].process.as_ref().expect("managed");
    // The 500 can reach the client before the dead server is reaped.
    let died = async {
        loop {
            if let Some(exit) = process.last_exit() {
                break exit;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let exit = tokio::time::timeout(HANG, died)
        .await
        .expect("the server died");
    assert_eq!(process.spawn_count(), 1, "{exit:?}");
    // Kong respawns at most once a second; wait for the new server's socket.
    let respawned = async {
        while process.spawn_count() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process.wait_socket(Duration::from_secs(30)).await
    };
    tokio::time::timeout(HANG, respawned)
        .await
        .expect("respawn")
        .expect("socket");
    let a = get(proxy.addr(), "/", "g.test").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("x-hello"), Some("back g.test"));
    proxy.stop().await;
    for s in sessions {
        s.close().await;
    }
}

/// `mock-kong proxy` as users run it: the banner names the address, the upstream, the plugin
/// and its phases; requests are served and logged; Ctrl-C stops the proxy and the plugin
/// server (exit 130, as every command interrupted by SIGINT).
#[test]
fn the_proxy_command_serves_until_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let mut child = ChildGuard::new(
        Command::new(util::exe())
            .args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--quiet-server",
                "--access-log",
                "--config",
                r#"{"message":"cli"}"#,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("Ctrl-C") {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "banner: {banner}");
        banner.push_str(&line);
    }
    let addr: SocketAddr = banner
        .split("listening on http://")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in the banner: {banner}"));
    assert!(
        banner.contains("upstream  echo (http://127.0.0.1:"),
        "{banner}"
    );
    assert!(
        banner.contains(
            "plugin    hello 0.1.0, priority 100, phases [access]: reference (MsgPack:1), pid "
        ),
        "{banner}"
    );
    let pid: i32 = banner
        .split(", pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("the server's pid");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a = rt.block_on(get(addr, "/cli", "h.test"));
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-hello"), Some("cli h.test"));
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("\"GET /cli HTTP/1.1\" 200 "), "{line}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(rest.contains("mock-kong proxy stopped"), "{rest}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z")),
        "the plugin server {pid} outlived the proxy"
    );
}
