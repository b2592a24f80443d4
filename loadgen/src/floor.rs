//! The transport floor: a raw Unix-socket ping-pong with the message sizes of one PDK round
//! trip, measured in the same run as the harness so a report can state the harness's
//! efficiency as a ratio (round trips/s of the harness ÷ round trips/s of the floor).
//!
//! The shape mirrors the host: the client is a tokio current-thread runtime on its own thread
//! (as loadgen's), the server a plain blocking thread that reads one request and writes one
//! answer, over a connected socket pair. No codec work at all: this is what the kernel and the
//! runtime cost for the same bytes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdStream;
use std::time::{Duration, Instant};

use mock_kong::protobuf::encode_frame;
use mock_kong::{msgpack, Protocol, Value};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procstat;
use crate::stats::{self, LatencyUs};

/// The bytes of one PDK round trip of the bench plugin (`get_header("x-bench")`) in `protocol`:
/// `(host → server, server → host)`.
pub fn message_sizes(protocol: Protocol) -> (usize, usize) {
    match protocol {
        Protocol::MsgPack => {
            // Host: plugin.Step carrying the answer; server: the next callback.
            let mut req = Vec::new();
            let step = Value::map([("EventId", Value::Int(1)), ("Data", Value::str("1"))]);
            msgpack::encode_request(1000, "plugin.Step", &[step], &mut req);
            let mut resp = Vec::new();
            let data = Value::map([
                ("Method", Value::str("kong.request.get_header")),
                ("Args", Value::Array(vec![Value::str("x-bench")])),
            ]);
            let result = Value::map([("Data", data), ("EventId", Value::Int(1))]);
            msgpack::encode_response(1000, &Value::Nil, &result, &mut resp);
            (req.len(), resp.len())
        }
        Protocol::ProtoBuf => {
            // Host: the String reply frame; server: method-name frame + args frame.
            let mut req = Vec::new();
            encode_frame(&[0x0a, 0x01, b'1'], &mut req);
            let mut resp = Vec::new();
            encode_frame(b"kong.request.get_header", &mut resp);
            encode_frame(
                &[0x0a, 0x07, b'x', b'-', b'b', b'e', b'n', b'c', b'h'],
                &mut resp,
            );
            (req.len(), resp.len())
        }
    }
}

/// What the floor measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorResult {
    pub protocol: Protocol,
    pub request_bytes: usize,
    pub response_bytes: usize,
    pub round_trips: u64,
    pub seconds: f64,
    pub round_trips_per_s: f64,
    /// Round-trip time distribution.
    pub rtt_us: LatencyUs,
    /// CPU of the client thread per round trip.
    pub client_cpu_ns_per_round_trip: f64,
    /// CPU of the server thread per round trip.
    pub server_cpu_ns_per_round_trip: f64,
}

/// Why the floor could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("cannot set up the floor's socket pair or threads: {0}")]
    Io(#[from] std::io::Error),
    #[error("a floor thread panicked")]
    Thread,
}

/// Runs the ping-pong for `warmup + duration` (only `duration` is measured).
pub fn run(
    protocol: Protocol,
    warmup: Duration,
    duration: Duration,
) -> Result<FloorResult, FloorError> {
    let (req_len, resp_len) = message_sizes(protocol);
    let (client_std, mut server) = StdStream::pair()?;
    client_std.set_nonblocking(true)?;
    let server_thread = std::thread::Builder::new()
        .name("floor-server".into())
        .spawn(move || -> std::io::Result<(Duration, u64)> {
            let mut req = vec![0u8; req_len];
            let resp = vec![0x5au8; resp_len];
            let cpu0 = procstat::thread_cpu();
            let mut n = 0u64;
            loop {
                match server.read_exact(&mut req) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
                server.write_all(&resp)?;
                n += 1;
            }
            Ok((procstat::thread_cpu().saturating_sub(cpu0), n))
        })?;
    let client_thread = std::thread::Builder::new()
        .name("floor-client".into())
        .spawn(move || -> std::io::Result<(FloorClient, ())> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let out = rt.block_on(client(client_std, req_len, resp_len, warmup, duration))?;
            Ok((out, ()))
        })?;
    let (c, ()) = client_thread.join().map_err(|_| FloorError::Thread)??;
    let (server_cpu, server_n) = server_thread.join().map_err(|_| FloorError::Thread)??;
    let secs = c.elapsed.as_secs_f64();
    let per = |d: Duration, n: u64| {
        if n == 0 {
            0.0
        } else {
            d.as_secs_f64() * 1e9 / n as f64
        }
    };
    Ok(FloorResult {
        protocol,
        request_bytes: req_len,
        response_bytes: resp_len,
        round_trips: c.round_trips,
        seconds: secs,
        round_trips_per_s: if secs > 0.0 {
            c.round_trips as f64 / secs
        } else {
            0.0
        },
        rtt_us: LatencyUs::of(&c.hist),
        client_cpu_ns_per_round_trip: per(c.cpu, c.round_trips),
        // The server's CPU covers warm-up too: divide by all its round trips.
        server_cpu_ns_per_round_trip: per(server_cpu, server_n),
    })
}

struct FloorClient {
    round_trips: u64,
    elapsed: Duration,
    cpu: Duration,
    hist: hdrhistogram::Histogram<u64>,
}

async fn client(
    std_stream: StdStream,
    req_len: usize,
    resp_len: usize,
    warmup: Duration,
    duration: Duration,
) -> std::io::Result<FloorClient> {
    let mut s = tokio::net::UnixStream::from_std(std_stream)?;
    let req = vec![0xa5u8; req_len];
    let mut buf = vec![0u8; 64 * 1024];
    let mut hist = stats::new_histogram();
    let t0 = Instant::now();
    let start = t0 + warmup;
    let end = start + duration;
    let mut measuring = false;
    let mut cpu0 = Duration::ZERO;
    let mut n = 0u64;
    loop {
        let now = Instant::now();
        if !measuring && now >= start {
            measuring = true;
            cpu0 = procstat::thread_cpu();
        }
        if now >= end {
            break;
        }
        s.write_all(&req).await?;
        let mut got = 0;
        while got < resp_len {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got += k;
        }
        if measuring {
            n += 1;
            stats::record(&mut hist, now.elapsed().as_nanos() as u64);
        }
    }
    let cpu = procstat::thread_cpu().saturating_sub(cpu0);
    let elapsed = Instant::now().saturating_duration_since(start);
    drop(s);
    Ok(FloorClient {
        round_trips: n,
        elapsed,
        cpu,
        hist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_sizes_match_the_encodings() {
        let (req, resp) = message_sizes(Protocol::MsgPack);
        assert!((30..=60).contains(&req), "{req}");
        assert!((60..=110).contains(&resp), "{resp}");
        // 4 + 3 bytes reply; (4 + 23) + (4 + 9) bytes for name + args.
        assert_eq!(message_sizes(Protocol::ProtoBuf), (7, 40));
    }

    #[test]
    fn a_short_floor_run_measures_round_trips() {
        let r = run(
            Protocol::MsgPack,
            Duration::from_millis(20),
            Duration::from_millis(150),
        )
        .unwrap();
        assert!(r.round_trips > 100, "{r:?}");
        assert!(r.round_trips_per_s > 1000.0, "{r:?}");
        assert!(r.rtt_us.p50 > 0.0 && r.rtt_us.p50 <= r.rtt_us.max);
        assert!(r.client_cpu_ns_per_round_trip > 0.0);
    }
}
