//! The host against hand-made misbehaving servers: every wait is bounded and every error names
//! what was expected (spec §4.7, §5.6, §7).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mock_kong::host::{Client, HostError, HostOptions, Timeouts};
use mock_kong::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// What the fake server does with each connection after reading the first bytes of a request.
#[derive(Clone)]
enum Behaviour {
    /// Accept, read, never answer.
    Silent,
    /// Write these bytes, then stay silent.
    Answer(Vec<u8>),
    /// Write these bytes, then close.
    AnswerAndClose(Vec<u8>),
}

struct Fake {
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

fn fake(behaviour: Behaviour) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fake.socket");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let b = behaviour.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                match b {
                    Behaviour::Silent => {}
                    Behaviour::Answer(bytes) => {
                        let _ = s.write_all(&bytes).await;
                    }
                    Behaviour::AnswerAndClose(bytes) => {
                        let _ = s.write_all(&bytes).await;
                        return;
                    }
                }
                // Hold the connection open without answering.
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(s);
            });
        }
    });
    Fake { _dir: dir, socket }
}

fn client(socket: &std::path::Path, protocol: Protocol, timeout: Duration) -> Client {
    let mut o = HostOptions::new(socket, protocol);
    o.timeouts = Timeouts::uniform(timeout);
    Client::new(o)
}

/// A server that accepts and never answers fails the call within the read timeout.
#[tokio::test(flavor = "current_thread")]
async fn silent_server_times_out_in_both_protocols() {
    for protocol in [Protocol::MsgPack, Protocol::ProtoBuf] {
        let f = fake(Behaviour::Silent);
        let c = client(&f.socket, protocol, Duration::from_millis(300));
        let t = Instant::now();
        let err = c
            .start_instance("hello", "{}")
            .await
            .expect_err("must time out");
        assert!(
            matches!(err, HostError::ReadTimeout { .. }),
            "{protocol}: {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{protocol}: took {:?}",
            t.elapsed()
        );
        assert!(err.to_string().contains("no answer to"), "{err}");
    }
}

/// Half a message then silence: a timeout, not a hang; half a message then close: "closed".
#[tokio::test(flavor = "current_thread")]
async fn half_frames_time_out_or_report_closed() {
    // MsgPack: `94 01 01 c0` is the first 4 bytes of a 5-byte response.
    let mp_half = vec![0x94, 0x01, 0x01, 0xc0];
    // ProtoBuf: a frame announcing 10 bytes with only 3 present.
    let pb_half = vec![10, 0, 0, 0, 0x08, 0x02, 0x8a];
    for (protocol, half) in [(Protocol::MsgPack, mp_half), (Protocol::ProtoBuf, pb_half)] {
        let f = fake(Behaviour::Answer(half.clone()));
        let c = client(&f.socket, protocol, Duration::from_millis(300));
        let err = c
            .start_instance("hello", "{}")
            .await
            .expect_err("must time out");
        assert!(
            matches!(err, HostError::ReadTimeout { .. }),
            "{protocol}: {err}"
        );

        let f = fake(Behaviour::AnswerAndClose(half));
        let c = client(&f.socket, protocol, Duration::from_secs(5));
        let t = Instant::now();
        let err = c
            .start_instance("hello", "{}")
            .await
            .expect_err("must fail");
        assert!(matches!(err, HostError::Closed { .. }), "{protocol}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{protocol}: took {:?}",
            t.elapsed()
        );
    }
}

/// Spec §4.1: a response whose msgid is not the request's is an error.
#[tokio::test(flavor = "current_thread")]
async fn msgpack_wrong_msgid_is_reported() {
    // [1, 99, nil, {"Id": 0}]
    let f = fake(Behaviour::Answer(vec![
        0x94, 0x01, 0x63, 0xc0, 0x81, 0xa2, b'I', b'd', 0x00,
    ]));
    let c = client(&f.socket, Protocol::MsgPack, Duration::from_secs(2));
    let err = c
        .start_instance("hello", "{}")
        .await
        .expect_err("wrong msgid");
    let text = err.to_string();
    assert!(text.contains("expected msgid 1, got 99"), "{text}");
}

/// Spec §4.1: a notification before the response is dispatched and the response still read.
#[tokio::test(flavor = "current_thread")]
async fn msgpack_server_pid_notification_before_the_response() {
    // [2, "serverPid", 4242] then [1, 1, nil, {"Id": 7}]
    let mut bytes = vec![0x93, 0x02, 0xa9];
    bytes.extend_from_slice(b"serverPid");
    bytes.extend_from_slice(&[0xcd, 0x10, 0x92]);
    bytes.extend_from_slice(&[0x94, 0x01, 0x01, 0xc0, 0x81, 0xa2, b'I', b'd', 0x07]);
    let f = fake(Behaviour::Answer(bytes));
    let c = client(&f.socket, Protocol::MsgPack, Duration::from_secs(2));
    let started = c.start_instance("hello", "{}").await.expect("start");
    assert_eq!(started.id, 7);
    let Client::MsgPack(mp) = &c else {
        unreachable!()
    };
    assert_eq!(mp.server_pid(), Some(4242));
}

/// Spec §5.2: the RpcReturn must echo the sequence (2 for the first call).
#[tokio::test(flavor = "current_thread")]
async fn protobuf_sequence_mismatch_is_reported() {
    // RpcReturn{sequence: 9}
    let f = fake(Behaviour::Answer(vec![2, 0, 0, 0, 0x08, 0x09]));
    let c = client(&f.socket, Protocol::ProtoBuf, Duration::from_secs(2));
    let err = c
        .start_instance("hello", "{}")
        .await
        .expect_err("sequence mismatch");
    assert!(err.to_string().contains("sent 2, got 9"), "{err}");
}

/// Spec §5.2: StartInstance's reply must carry instance_status.
#[tokio::test(flavor = "current_thread")]
async fn protobuf_start_instance_without_status_is_reported() {
    let f = fake(Behaviour::Answer(vec![2, 0, 0, 0, 0x08, 0x02]));
    let c = client(&f.socket, Protocol::ProtoBuf, Duration::from_secs(2));
    let err = c
        .start_instance("hello", "{}")
        .await
        .expect_err("no instance_status");
    assert!(err.to_string().contains("instance_status"), "{err}");
}

/// No server at all: a connect error naming the socket, immediately.
#[tokio::test(flavor = "current_thread")]
async fn missing_socket_is_a_clear_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.socket");
    for protocol in [Protocol::MsgPack, Protocol::ProtoBuf] {
        let c = client(&socket, protocol, Duration::from_secs(2));
        let err = c
            .start_instance("hello", "{}")
            .await
            .expect_err("no server");
        assert!(matches!(err, HostError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("nobody.socket"), "{err}");
    }
}
