//! The `ProtoBuf:1` event rules, tested once with bytes.

use super::*;
use crate::protobuf::messages::{rpc_return, InstanceStatus};
use crate::protobuf::FrameDecoder;

fn s(x: &str) -> Value {
    Value::str(x)
}

fn h(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect()
}

/// The arguments frame a server sends for `method(args)`.
fn args(method: &str, args: &[Value]) -> Vec<u8> {
    pdk_table::encode_args(pdk_table::lookup(method).unwrap(), args).unwrap()
}

fn ret(sequence: i64) -> Vec<u8> {
    RpcReturn {
        sequence,
        r#return: None,
    }
    .encode_to_vec()
}

fn callback(next: Next) -> Callback {
    match next {
        Next::Callback(cb) => cb,
        other => panic!("expected a callback, got {other:?}"),
    }
}

/// A callback of `method` pending on a new event.
fn pending(method: &str, a: &[Value]) -> PbEvent<'static> {
    let mut ev = PbEvent::new(2, 0, "access", 10);
    assert_eq!(ev.on_frame(method.as_bytes()).unwrap(), Next::Frame);
    callback(ev.on_frame(&args(method, a)).unwrap());
    ev
}

/// The whole conversation in bytes: the call, a callback, its reply frame, the empty frame and
/// the RpcReturn.
#[test]
fn an_event_byte_for_byte() {
    let mut ev = PbEvent::new(2, 3, "access", 10);
    let mut out = Vec::new();
    encode_call(&ev.start(), &mut out);
    // len=15: sequence 2 (08 02), field 36 (A2 02) len 10: instance 3 (08 03), "access" (12 06 ..).
    let mut want = h("0F 00 00 00 08 02 A2 02 0A 08 03 12 06");
    want.extend(b"access");
    assert_eq!(out, want);
    assert_eq!(
        ev.on_frame(b"kong.request.get_header").unwrap(),
        Next::Frame
    );
    // String{v: "host"}: 0A 04 "host"
    let mut a = h("0A 04");
    a.extend(b"host");
    let cb = callback(ev.on_frame(&a).unwrap());
    assert_eq!(
        (cb.method.as_str(), cb.args.clone()),
        ("kong.request.get_header", vec![s("host")])
    );
    let mut out = Vec::new();
    match ev.reply(
        "kong.request.get_header",
        Reply::Value(s("example.com")),
        &mut out,
    ) {
        Replied::Sent(v, sent) => {
            assert_eq!(v, s("example.com"));
            assert_eq!(sent.kind, "String");
        }
        other => panic!("{other:?}"),
    }
    let mut want = h("0D 00 00 00 0A 0B");
    want.extend(b"example.com");
    assert_eq!(out, want);
    assert_eq!(ev.on_frame(b"").unwrap(), Next::Frame);
    assert_eq!(ev.on_frame(&ret(2)).unwrap(), Next::End(End::Done));
}

/// A nil result of a wrapper type is an empty message: an empty reply frame.
#[test]
fn nil_is_an_empty_frame() {
    let mut ev = pending("kong.request.get_header", &[s("x")]);
    let mut out = Vec::new();
    assert!(matches!(
        ev.reply(
            "kong.request.get_header",
            Reply::Value(Value::Nil),
            &mut out
        ),
        Replied::Sent(..)
    ));
    assert_eq!(out, h("00 00 00 00"));
    // Soft errors have no channel over ProtoBuf: nil too.
    let mut ev = pending("kong.request.get_header", &[s("x")]);
    let mut out = Vec::new();
    ev.reply(
        "kong.request.get_header",
        Reply::SoftError("no".into()),
        &mut out,
    );
    assert_eq!(out, h("00 00 00 00"));
}

/// A result that cannot be wrapped for the method's output type raises, as Kong's `pb.encode`
/// does (the pre-3.7 set_upstream crash): nothing is sent and the event is over.
#[test]
fn an_unwrappable_result_raises() {
    let mut ev = pending("kong.response.set_header", &[s("a"), s("b")]);
    let mut out = Vec::new();
    match ev.reply(
        "kong.response.set_header",
        Reply::Value(s("not a table")),
        &mut out,
    ) {
        Replied::End(End::Raised { method, error }) => {
            assert_eq!(method, "kong.response.set_header");
            assert!(error.contains("table expected, got string"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(out.is_empty());
}

/// A method Kong's table lacks ends the event (Kong: `method not found`, HTTP 500).
#[test]
fn an_unknown_method_ends_the_event() {
    let mut ev = PbEvent::new(2, 0, "access", 10);
    ev.on_frame(b"kong.nope").unwrap();
    assert_eq!(
        ev.on_frame(b"").unwrap(),
        Next::End(End::MethodNotFound("kong.nope".into()))
    );
}

/// The other replies: terminal, raised, and a method the emulated PDK lacks.
#[test]
fn replies_that_send_nothing() {
    let mut out = Vec::new();
    let mut ev = pending("kong.response.exit", &[Value::Int(403)]);
    assert_eq!(
        ev.reply("kong.response.exit", Reply::Terminal, &mut out),
        Replied::End(End::Exit)
    );
    let mut ev = pending("kong.request.get_header", &[s("x")]);
    assert!(matches!(
        ev.reply(
            "kong.request.get_header",
            Reply::Raise("bad".into()),
            &mut out
        ),
        Replied::End(End::Raised { .. })
    ));
    let mut ev = pending("kong.request.get_header", &[s("x")]);
    match ev.reply("kong.request.get_header", Reply::NotFound, &mut out) {
        Replied::End(End::Raised { error, .. }) => {
            assert!(
                error.contains("not implemented by the emulated PDK"),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(out.is_empty());
}

/// The RpcReturn must echo the sequence and decode.
#[test]
fn the_return_is_checked() {
    let mut ev = PbEvent::new(1 << 40, 0, "access", 10);
    ev.on_frame(b"").unwrap();
    let err = ev.on_frame(&ret(2)).unwrap_err();
    assert!(err.to_string().contains("sequence mismatch"), "{err}");
    let mut ev = PbEvent::new(2, 0, "access", 10);
    ev.on_frame(b"").unwrap();
    let err = ev.on_frame(&h("ff ff")).unwrap_err();
    assert!(matches!(err, HostError::Decode { .. }), "{err}");
    let ok = RpcReturn {
        sequence: 5,
        r#return: Some(rpc_return::Return::InstanceStatus(InstanceStatus::default())),
    };
    assert!(decode_return(&ok.encode_to_vec(), "cmd_start_instance", 5).is_ok());
}

/// Undecodable arguments and frames out of turn are errors, not panics.
#[test]
fn bad_frames_are_errors() {
    let mut ev = PbEvent::new(2, 0, "access", 10);
    ev.on_frame(b"kong.request.get_header").unwrap();
    let err = ev.on_frame(&h("08 01")).unwrap_err();
    assert!(matches!(err, HostError::Decode { .. }), "{err}");
    let mut ev = pending("kong.request.get_header", &[s("x")]);
    let err = ev.on_frame(b"kong.log.err").unwrap_err();
    assert!(err.to_string().contains("before the reply"), "{err}");
}

/// This event's `RpcReturn` sent where a method name belongs (a server that forgot the empty
/// end-of-event frame) fails the event at once, saying so: Kong would read it as a method name
/// and wait 60 s for its arguments. Another sequence's frame is only named as an RpcReturn.
#[test]
fn an_rpc_return_in_place_of_the_end_frame_is_diagnosed() {
    let mut ev = PbEvent::new(2, 0, "access", 10);
    let ret = RpcReturn {
        sequence: 2,
        r#return: Some(rpc_return::Return::InstanceStatus(InstanceStatus::default())),
    }
    .encode_to_vec();
    let err = ev.on_frame(&ret).unwrap_err().to_string();
    assert!(
        err.contains("RpcReturn (sequence 2) came without the empty end frame Kong waits for"),
        "{err}"
    );
    let mut ev = PbEvent::new(3, 0, "access", 10);
    assert_eq!(ev.on_frame(&ret).unwrap(), Next::Frame);
    assert!(
        ev.awaiting().contains("which is an RpcReturn (sequence 2)"),
        "{}",
        ev.awaiting()
    );
}

/// More callbacks than `max_callbacks` stop the event.
#[test]
fn callbacks_are_capped() {
    let mut ev = PbEvent::new(2, 0, "access", 1);
    ev.on_frame(b"kong.request.get_header").unwrap();
    callback(
        ev.on_frame(&args("kong.request.get_header", &[s("x")]))
            .unwrap(),
    );
    ev.reply(
        "kong.request.get_header",
        Reply::Value(Value::Nil),
        &mut Vec::new(),
    );
    let err = ev.on_frame(b"kong.request.get_header").unwrap_err();
    assert!(
        matches!(err, HostError::TooManyCallbacks { limit: 1, .. }),
        "{err}"
    );
}

/// Frames reach the driver through the frame decoder, whatever the split.
#[test]
fn frames_split_anywhere() {
    let mut wire = Vec::new();
    encode_frame(b"kong.request.get_header", &mut wire);
    encode_frame(&args("kong.request.get_header", &[s("host")]), &mut wire);
    for chunk in [1, 3, 64] {
        let mut dec = FrameDecoder::new(1 << 20);
        let mut ev = PbEvent::new(2, 0, "access", 10);
        let mut got = None;
        for piece in wire.chunks(chunk) {
            dec.feed(piece);
            while let Some(f) = dec.next_frame().unwrap() {
                if let Next::Callback(cb) = ev.on_frame(&f).unwrap() {
                    got = Some(cb);
                }
            }
        }
        assert_eq!(got.map(|c| c.args), Some(vec![s("host")]), "chunk {chunk}");
    }
}
