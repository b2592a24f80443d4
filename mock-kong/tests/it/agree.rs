//! The host and the conformance client drive events through the same drivers, so what one
//! accepts the other accepts: here a MsgPack server that answers in ways Kong's host takes (a
//! callback's `Args` as the bare value, Step answers without `EventId`) runs to the end in both.
//! Before the drivers were shared, the conformance client refused both (issue 17's false
//! alarms).

use std::time::Duration;

use mock_kong::conform::wire::{End, RawHost};
use mock_kong::host::{Client, EventEnd, HostOptions, Timeouts};
use mock_kong::msgpack::{encode_response, RpcMessage, StreamDecoder};
use mock_kong::pdk::SimpleRequest;
use mock_kong::{Protocol, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// Answers HandleEvent with one `kong.request.get_header` callback whose `Args` is the bare
/// string `"host"`, and every Step with `{Data: "ret"}` (no EventId).
fn lenient_server() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lenient.socket");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut dec = StreamDecoder::new(1 << 20);
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    dec.feed(&buf[..n]);
                    while let Ok(Some(v)) = dec.next_value() {
                        let Ok(RpcMessage::Request { msgid, method, .. }) =
                            RpcMessage::from_value(v)
                        else {
                            return;
                        };
                        let result = match method.as_str() {
                            "plugin.HandleEvent" => Value::map([
                                ("EventId", Value::Int(3)),
                                (
                                    "Data",
                                    Value::map([
                                        ("Method", Value::str("kong.request.get_header")),
                                        ("Args", Value::str("host")),
                                    ]),
                                ),
                            ]),
                            _ => Value::map([("Data", Value::str("ret"))]),
                        };
                        let mut out = Vec::new();
                        encode_response(msgid, &Value::Nil, &result, &mut out);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (dir, socket)
}

#[tokio::test(flavor = "current_thread")]
async fn host_and_conformance_client_accept_the_same_lenient_answers() {
    let (_dir, socket) = lenient_server();

    let mut o = HostOptions::new(&socket, Protocol::MsgPack);
    o.timeouts = Timeouts::uniform(Duration::from_secs(5));
    let host = Client::new(o);
    let mut pdk = SimpleRequest::new("example.com");
    let report = host
        .handle_event(0, "access", &mut pdk)
        .await
        .expect("the host accepts it");
    assert_eq!(report.end, EventEnd::Done);
    assert_eq!(report.calls.len(), 1);
    assert_eq!(report.calls[0].args, vec![Value::str("host")]);

    let conform = RawHost::new(Protocol::MsgPack, socket.clone(), Duration::from_secs(5));
    let mut pdk = SimpleRequest::new("example.com");
    let run = conform
        .event(0, "access", &mut pdk)
        .await
        .expect("the conformance client accepts it");
    assert_eq!(run.end, End::Done);
    assert_eq!(run.methods(), ["kong.request.get_header"]);
    assert_eq!(run.callbacks[0].args, vec![Value::str("host")]);
    // The shape is still reported, for the suite to judge (it is legal in Kong).
    assert_eq!(run.callbacks[0].args_not_array, Some("string"));
}
