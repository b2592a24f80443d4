//! The `MsgPack:1` event rules, tested once with bytes: what goes out is compared byte for byte
//! with the examples of docs/protocol.md, what comes in is written as the server's bytes.

use super::*;
use crate::event::{Limits, Reply};
use crate::msgpack::{encode_response, encode_to_vec};

fn s(x: &str) -> Value {
    Value::str(x)
}

/// Concatenates hex and text parts: `b(&[h("94 00"), t("plugin.Step")])`.
fn b(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}
fn h(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect()
}
fn t(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// The server's answer `[1, msgid, error, result]` as bytes.
fn answer(msgid: u64, error: Value, result: Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(msgid, &error, &result, &mut out);
    out
}

/// Reads one call's answer from `bytes` fed in pieces of `chunk` bytes.
fn read(msgid: u64, bytes: &[u8], chunk: usize) -> Result<Vec<Incoming>, HostError> {
    let mut dec = StreamDecoder::new(Limits::default().max_frame);
    let mut reader = CallReader::new(msgid, "plugin.HandleEvent", 2);
    let mut got = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        dec.feed(piece);
        while let Some(m) = reader.next(&mut dec)? {
            let done = matches!(m, Incoming::Response { .. });
            got.push(m);
            if done {
                return Ok(got);
            }
        }
    }
    Ok(got)
}

/// Feeds an answer given as bytes to the event.
fn feed(ev: &mut MpEvent, msgid: u64, bytes: &[u8]) -> Result<Next, HostError> {
    match read(msgid, bytes, 7)?.pop() {
        Some(Incoming::Response { result, .. }) => ev.on_answer(result),
        other => panic!("no response in the bytes: {other:?}"),
    }
}

fn callback(next: Next) -> Callback {
    match next {
        Next::Callback(cb) => cb,
        other => panic!("expected a callback, got {other:?}"),
    }
}

fn step(replied: Replied) -> (Call<'static>, Sent) {
    match replied {
        Replied::Call(c, s) => (c, s),
        other => panic!("expected a Step, got {other:?}"),
    }
}

fn encoded(call: &Call, msgid: u64) -> Vec<u8> {
    let mut out = Vec::new();
    call.encode(msgid, &mut out);
    out
}

fn event() -> MpEvent<'static> {
    MpEvent::new(0, "access", Limits::default().max_callbacks, false)
}

/// The exchange of docs/protocol.md §4.4 and Appendix A, byte for byte in both directions.
#[test]
fn the_hello_exchange_byte_for_byte() {
    let mut ev = event();
    assert_eq!(
        encoded(&ev.start(), 2),
        b(&[
            h("94 00 02 B2"),
            t("plugin.HandleEvent"),
            h("91 82 AA"),
            t("InstanceId"),
            h("00 A9"),
            t("EventName"),
            h("A6"),
            t("access"),
        ])
    );
    // [1, 2, nil, {EventId: 7, Data: {Method: "kong.request.get_header", Args: ["host"]}}]
    let first = b(&[
        h("94 01 02 C0 82 A7"),
        t("EventId"),
        h("07 A4"),
        t("Data"),
        h("82 A6"),
        t("Method"),
        h("B7"),
        t("kong.request.get_header"),
        h("A4"),
        t("Args"),
        h("91 A4"),
        t("host"),
    ]);
    let cb = callback(feed(&mut ev, 2, &first).unwrap());
    assert_eq!(cb.method, "kong.request.get_header");
    assert_eq!(cb.args, vec![s("host")]);
    assert_eq!(cb.args_not_array, None);
    assert_eq!(ev.event_id(), Some(7));
    let (call, sent) = step(ev.reply("kong.request.get_header", Reply::Value(s("example.com"))));
    assert_eq!(sent.kind, "plugin.Step");
    assert_eq!(
        encoded(&call, 3),
        b(&[
            h("94 00 03 AB"),
            t("plugin.Step"),
            h("91 82 A7"),
            t("EventId"),
            h("07 A4"),
            t("Data"),
            h("AB"),
            t("example.com"),
        ])
    );
    let second = answer(
        3,
        Value::Nil,
        Value::map([
            ("EventId", Value::Int(7)),
            (
                "Data",
                Value::map([
                    ("Method", s("kong.response.set_header")),
                    ("Args", Value::Array(vec![s("x-hello"), s("hi")])),
                ]),
            ),
        ]),
    );
    let cb = callback(feed(&mut ev, 3, &second).unwrap());
    assert_eq!(cb.args, vec![s("x-hello"), s("hi")]);
    // A nil answer: Data absent.
    let (call, _) = step(ev.reply("kong.response.set_header", Reply::Value(Value::Nil)));
    assert_eq!(
        encoded(&call, 4),
        b(&[
            h("94 00 04 AB"),
            t("plugin.Step"),
            h("91 81 A7"),
            t("EventId"),
            h("07")
        ])
    );
    // Server "done": [1, 4, nil, {Data: "ret", EventId: 7}]
    let done = b(&[
        h("94 01 04 C0 82 A4"),
        t("Data"),
        h("A3"),
        t("ret"),
        h("A7"),
        t("EventId"),
        h("07"),
    ]);
    assert_eq!(feed(&mut ev, 4, &done).unwrap(), Next::End(End::Done));
}

/// The HandleEvent request written directly is the request of `handle_event_params`.
#[test]
fn handle_event_bytes_equal_the_params_encoding() {
    for (id, phase) in [
        (0, "access"),
        (-40, "log"),
        (1 << 40, &"p".repeat(40) as &str),
    ] {
        let mut want = Vec::new();
        msgpack::encode_request(
            7,
            "plugin.HandleEvent",
            &handle_event_params(id, phase),
            &mut want,
        );
        let call = Call::HandleEvent {
            instance_id: id,
            phase,
        };
        assert_eq!(encoded(&call, 7), want, "{id} {phase}");
    }
}

/// Kong takes the EventId from the HandleEvent answer and never reads it again (docs/protocol.md §4.4): a
/// Step answer without EventId (or with another one) is accepted, and Steps keep the first id.
#[test]
fn step_answers_need_no_event_id() {
    let mut ev = event();
    let cb = answer(
        1,
        Value::Nil,
        Value::map([
            ("EventId", Value::Int(5)),
            (
                "Data",
                Value::map([
                    ("Method", s("kong.log.info")),
                    ("Args", Value::Array(vec![])),
                ]),
            ),
        ]),
    );
    callback(feed(&mut ev, 1, &cb).unwrap());
    step(ev.reply("kong.log.info", Reply::Value(Value::Nil)));
    let no_id = answer(
        2,
        Value::Nil,
        Value::map([("Data", Value::map([("Method", s("kong.log.err"))]))]),
    );
    let next = callback(feed(&mut ev, 2, &no_id).unwrap());
    assert_eq!(next.args, Vec::<Value>::new());
    let (call, _) = step(ev.reply("kong.log.err", Reply::Value(Value::Nil)));
    assert!(
        matches!(
            &call,
            Call::Step {
                event_id: Value::Int(5),
                ..
            }
        ),
        "{call:?}"
    );
    assert!(ev.quirks().contains(Quirk::StepAnswerWithoutEventId));
    let other_id = answer(
        3,
        Value::Nil,
        Value::map([("EventId", Value::Int(99)), ("Data", s("ret"))]),
    );
    assert_eq!(feed(&mut ev, 3, &other_id).unwrap(), Next::End(End::Done));
}

/// Kong re-sends whatever EventId the HandleEvent answer carried, as its Lua writes it back
/// (`step_in.EventId`, docs/protocol.md §4.4): none at all (the Step then has no EventId), a string, a float.
#[test]
fn handle_event_answer_event_id_is_resent_as_kong_writes_it() {
    let mut ev = event();
    let bytes = answer(1, Value::Nil, Value::map([("Data", s("ret"))]));
    assert_eq!(feed(&mut ev, 1, &bytes).unwrap(), Next::End(End::Done));
    assert!(ev.quirks().contains(Quirk::EventIdNotInteger));
    for (id, resent) in [
        (None, Value::Nil),
        (Some(Value::Bin(b"ev-1".to_vec())), s("ev-1")),
        (Some(Value::Float(7.0)), Value::Int(7)),
        (Some(Value::UInt(9)), Value::Int(9)),
    ] {
        let mut ev = event();
        let mut result = vec![(
            s("Data"),
            Value::map([
                ("Method", s("kong.log.err")),
                ("Args", Value::Array(vec![])),
            ]),
        )];
        if let Some(id) = id.clone() {
            result.push((s("EventId"), id));
        }
        // Fed as decoded (the codec's encoder would write 7.0 as an integer, as Kong does).
        callback(ev.on_answer(Ok(Value::Map(result))).unwrap());
        let (call, _) = step(ev.reply("kong.log.err", Reply::Value(Value::Nil)));
        let mut want = Vec::new();
        let entries = if resent.is_nil() {
            vec![]
        } else {
            vec![(s("EventId"), resent.clone())]
        };
        msgpack::encode_request(2, "plugin.Step", &[Value::Map(entries)], &mut want);
        assert_eq!(encoded(&call, 2), want, "{id:?}");
        assert_eq!(
            ev.quirks().contains(Quirk::EventIdNotInteger),
            !matches!(id, Some(Value::UInt(_))),
            "{id:?}"
        );
    }
}

/// Envelopes as Kong's `Rpc:call` reads them: elements 1 to 4 of any table, numbers compared
/// as Lua numbers; a missing result (or a nil or false one, or a false error) ends the event
/// silently (`if not step_in then return step_in, err end`).
#[test]
fn envelopes_are_read_as_kong_reads_them() {
    let ret = Value::map([("EventId", Value::Int(0)), ("Data", s("ret"))]);
    let mut five = Vec::new();
    msgpack::encode(
        &Value::Array(vec![
            Value::Int(1),
            Value::Int(1),
            Value::Nil,
            ret.clone(),
            s("x"),
        ]),
        &mut five,
    );
    // [1.0, 1.0, nil, ret] with float64 numbers (0xCB), as a server may write them.
    let mut float = h("94 CB 3F F0 00 00 00 00 00 00 CB 3F F0 00 00 00 00 00 00 C0");
    msgpack::encode(&ret, &mut float);
    let mut as_map = Vec::new();
    msgpack::encode(
        &Value::Map(vec![
            (Value::Int(4), ret.clone()),
            (Value::Int(1), Value::Int(1)),
            (Value::Int(2), Value::Int(1)),
        ]),
        &mut as_map,
    );
    for (bytes, quirk) in [
        (five, Quirk::EnvelopeShape),
        (float, Quirk::OddNumber),
        (as_map, Quirk::EnvelopeShape),
    ] {
        let mut dec = StreamDecoder::new(1 << 20);
        dec.feed(&bytes);
        let mut reader = CallReader::new(1, "plugin.HandleEvent", 2);
        let Some(Incoming::Response { result, .. }) = reader.next(&mut dec).unwrap() else {
            panic!("no response")
        };
        assert!(reader.quirks().contains(quirk), "{quirk:?}");
        let mut ev = event();
        assert_eq!(ev.on_answer(result).unwrap(), Next::End(End::Done));
    }
    // [1, 1, nil]: no result, no error.
    let mut three = Vec::new();
    msgpack::encode(
        &Value::Array(vec![Value::Int(1), Value::Int(1), Value::Nil]),
        &mut three,
    );
    let mut ev = event();
    assert_eq!(feed(&mut ev, 1, &three).unwrap(), Next::End(End::Done));
    assert!(ev.quirks().contains(Quirk::SilentEnd));
    for silent in [
        answer(1, Value::Nil, Value::Bool(false)),
        answer(1, Value::Bool(false), Value::Nil),
    ] {
        let mut ev = event();
        assert_eq!(feed(&mut ev, 1, &silent).unwrap(), Next::End(End::Done));
    }
    // An error that is not a string: Kong's err:lower() raises.
    let mut ev = event();
    let err = feed(&mut ev, 1, &answer(1, Value::Int(5), Value::Nil)).unwrap_err();
    assert!(err.to_string().contains("err:lower()"), "{err}");
}

/// A method name as bin or as a number is what Kong's Lua reads as a string.
#[test]
fn method_names_as_bin_or_number() {
    for (method, want, quirk) in [
        (
            Value::Bin(b"kong.log.err".to_vec()),
            "kong.log.err",
            Quirk::BinString,
        ),
        (Value::Int(5), "5", Quirk::OddNumber),
    ] {
        let mut ev = event();
        let bytes = answer(
            1,
            Value::Nil,
            Value::map([
                ("EventId", Value::Int(0)),
                ("Data", Value::map([("Method", method)])),
            ]),
        );
        let cb = callback(feed(&mut ev, 1, &bytes).unwrap());
        assert_eq!(cb.method, want);
        assert!(ev.quirks().contains(quirk));
    }
}

/// `Args` as Kong's `bridge_loop` reads it: a table is unpacked, anything else is the single
/// argument (docs/protocol.md §4.4); the shape is reported for the conformance suite to judge.
#[test]
fn args_are_unpacked_as_kong_does() {
    let cases = [
        (Some(s("host")), vec![s("host")], Some("string")),
        (Some(Value::Int(3)), vec![Value::Int(3)], Some("number")),
        (
            Some(Value::Map(vec![
                (Value::Int(1), s("a")),
                (Value::Int(2), s("b")),
            ])),
            vec![s("a"), s("b")],
            Some("table"),
        ),
        (
            Some(Value::Map(vec![(s("k"), s("v"))])),
            vec![],
            Some("table"),
        ),
        (None, vec![], None),
        (Some(Value::Array(vec![s("x")])), vec![s("x")], None),
    ];
    for (raw, want, shape) in cases {
        let mut ev = event();
        let mut data = vec![(s("Method"), s("kong.request.get_header"))];
        if let Some(a) = raw.clone() {
            data.push((s("Args"), a));
        }
        let bytes = answer(
            1,
            Value::Nil,
            Value::map([("EventId", Value::Int(0)), ("Data", Value::Map(data))]),
        );
        let cb = callback(feed(&mut ev, 1, &bytes).unwrap());
        assert_eq!(cb.args, want, "Args {raw:?}");
        assert_eq!(cb.args_not_array, shape, "Args {raw:?}");
    }
}

/// What is not a callback or "ret" is refused with what was expected.
#[test]
fn malformed_answers_are_refused() {
    for result in [
        Value::map([("EventId", Value::Int(0))]),
        Value::map([("EventId", Value::Int(0)), ("Data", s("done"))]),
        Value::map([
            ("EventId", Value::Int(0)),
            ("Data", Value::map([("Method", Value::Bool(true))])),
        ]),
        s("ret"),
        Value::Int(3),
    ] {
        let mut ev = event();
        let err = feed(&mut ev, 1, &answer(1, Value::Nil, result.clone())).unwrap_err();
        assert!(matches!(err, HostError::Shape { .. }), "{result:?}: {err}");
    }
}

/// An error response ends the event, naming the call it answered.
#[test]
fn an_error_response_ends_the_event() {
    let mut ev = event();
    // [1, 1, "no plugin instance #0", nil] (Appendix A).
    let bytes = b(&[h("94 01 01 B5"), t("no plugin instance #0"), h("C0")]);
    assert_eq!(
        feed(&mut ev, 1, &bytes).unwrap(),
        Next::End(End::ServerError {
            method: "plugin.HandleEvent".into(),
            message: "no plugin instance #0".into()
        })
    );
    let mut ev = event();
    let cb = answer(
        1,
        Value::Nil,
        Value::map([
            ("EventId", Value::Int(0)),
            ("Data", Value::map([("Method", s("kong.router.get_route"))])),
        ]),
    );
    callback(feed(&mut ev, 1, &cb).unwrap());
    step(ev.reply("kong.router.get_route", Reply::Value(Value::Nil)));
    let err = answer(2, Value::Bin(b"boom".to_vec()), Value::Nil);
    assert_eq!(
        feed(&mut ev, 2, &err).unwrap(),
        Next::End(End::ServerError {
            method: "plugin.StepRoute".into(),
            message: "boom".into()
        })
    );
}

fn one_callback(method: &str, step_error: bool) -> MpEvent<'static> {
    let mut ev = MpEvent::new(0, "access", 10, step_error);
    let bytes = answer(
        1,
        Value::Nil,
        Value::map([
            ("EventId", Value::Int(0)),
            (
                "Data",
                Value::map([("Method", s(method)), ("Args", Value::Array(vec![]))]),
            ),
        ]),
    );
    callback(feed(&mut ev, 1, &bytes).unwrap());
    ev
}

/// Each reply kind: the Step method Kong picks (even for nil), `fix_mmap`, soft errors per Kong
/// version, unknown methods, and the two replies that send nothing.
#[test]
fn replies_as_kong_sends_them() {
    // StepMultiMap with fix_mmap: {host: "example.com"} → {host: ["example.com"]} (Appendix A).
    let mut ev = one_callback("kong.request.get_headers", false);
    let (call, sent) = step(ev.reply(
        "kong.request.get_headers",
        Reply::Value(Value::map([("host", s("example.com"))])),
    ));
    assert_eq!(sent.kind, "plugin.StepMultiMap");
    assert_eq!(
        encoded(&call, 4),
        b(&[
            h("94 00 04 B3"),
            t("plugin.StepMultiMap"),
            h("91 82 A7"),
            t("EventId"),
            h("00 A4"),
            t("Data"),
            h("81 A4"),
            t("host"),
            h("91 AB"),
            t("example.com"),
        ])
    );
    // An empty multi-map result is an empty map (0x80), not an array.
    let mut ev = one_callback("kong.request.get_query", false);
    let (call, _) = step(ev.reply("kong.request.get_query", Reply::Value(Value::Array(vec![]))));
    assert!(encoded(&call, 1).ends_with(&b(&[t("Data"), h("80")])));
    // The Step method is chosen by the PDK method even for nil.
    let mut ev = one_callback("kong.client.get_consumer", false);
    let (_, sent) = step(ev.reply("kong.client.get_consumer", Reply::Value(Value::Nil)));
    assert_eq!(sent.kind, "plugin.StepConsumer");
    // Soft errors: Kong 3.x nil, Kong 2.x StepError with the message.
    let mut ev = one_callback("kong.client.get_consumer", false);
    let (call, sent) = step(ev.reply("kong.client.get_consumer", Reply::SoftError("gone".into())));
    assert_eq!(
        (sent.kind.as_str(), call.into_data()),
        ("plugin.StepConsumer", Value::Nil)
    );
    let mut ev = one_callback("kong.client.get_consumer", true);
    let (call, sent) = step(ev.reply("kong.client.get_consumer", Reply::SoftError("gone".into())));
    assert_eq!(
        (sent.kind.as_str(), call.into_data()),
        ("plugin.StepError", s("gone"))
    );
    // Unknown method: a Step without Data, noted.
    let mut ev = one_callback("kong.nope", false);
    let (call, sent) = step(ev.reply("kong.nope", Reply::NotFound));
    assert_eq!(call.into_data(), Value::Nil);
    assert_eq!(
        sent.note.as_deref(),
        Some("could not find pdk method: kong.nope")
    );
    // A chosen variant.
    let mut ev = one_callback("kong.request.get_header", false);
    let (_, sent) = step(ev.reply(
        "kong.request.get_header",
        Reply::Variant("plugin.StepService", Value::Nil),
    ));
    assert_eq!(sent.kind, "plugin.StepService");
    // Terminal and raised callbacks get no Step.
    let mut ev = one_callback("kong.response.exit", false);
    assert_eq!(
        ev.reply("kong.response.exit", Reply::Terminal),
        Replied::End(End::Exit)
    );
    let mut ev = one_callback("kong.request.get_header", false);
    assert_eq!(
        ev.reply(
            "kong.request.get_header",
            Reply::Raise("bad argument".into())
        ),
        Replied::End(End::Raised {
            method: "kong.request.get_header".into(),
            error: "bad argument".into()
        })
    );
}

/// More callbacks than `max_callbacks` in one event stop it, naming the limit.
#[test]
fn callbacks_are_capped() {
    let mut ev = MpEvent::new(0, "access", 2, false);
    let cb = |id: u64| {
        answer(
            id,
            Value::Nil,
            Value::map([
                ("EventId", Value::Int(0)),
                ("Data", Value::map([("Method", s("kong.log.info"))])),
            ]),
        )
    };
    for id in 1..=2 {
        callback(feed(&mut ev, id, &cb(id)).unwrap());
        step(ev.reply("kong.log.info", Reply::Value(Value::Nil)));
    }
    let err = feed(&mut ev, 3, &cb(3)).unwrap_err();
    assert!(
        matches!(err, HostError::TooManyCallbacks { limit: 2, .. }),
        "{err}"
    );
}

/// A call's answer, read from bytes split anywhere: notifications first, then the response;
/// the msgid is checked; bytes after the response are counted.
#[test]
fn a_call_reads_notifications_then_its_response() {
    let mut bytes = encode_to_vec(&Value::Array(vec![
        Value::Int(2),
        s("serverPid"),
        Value::Int(42),
    ]));
    bytes.extend(answer(9, Value::Nil, s("ok")));
    bytes.extend(h("c0 c0"));
    for chunk in [1, 2, 5, 100] {
        let got = read(9, &bytes, chunk).unwrap();
        assert_eq!(
            got[0],
            Incoming::Notification {
                label: "serverPid".into(),
                args: Value::Int(42)
            }
        );
        match &got[1] {
            Incoming::Response { result, trailing } => {
                assert_eq!(result, &Ok(s("ok")));
                // Only what arrived with the response's last read counts as trailing.
                assert!(*trailing <= 2, "chunk {chunk}: {trailing}");
            }
            other => panic!("{other:?}"),
        }
    }
    let err = read(8, &answer(9, Value::Nil, s("ok")), 3).unwrap_err();
    assert!(err.to_string().contains("expected msgid 8, got 9"), "{err}");
    // A request where a response belongs.
    let mut req = Vec::new();
    msgpack::encode_request(1, "plugin.Step", &[], &mut req);
    let err = read(1, &req, 64).unwrap_err();
    assert!(
        err.to_string().contains("got a request for plugin.Step"),
        "{err}"
    );
    // Undecodable bytes.
    let err = read(1, &h("c1"), 1).unwrap_err();
    assert!(matches!(err, HostError::Decode { .. }), "{err}");
}

/// More notifications than `max_notifications` before the response is a flood.
#[test]
fn notifications_are_capped() {
    let note = encode_to_vec(&Value::Array(vec![Value::Int(2), s("x"), Value::Nil]));
    let bytes = [note.clone(), note.clone(), note].concat();
    let err = read(1, &bytes, 64).unwrap_err();
    assert!(
        matches!(err, HostError::TooManyNotifications { limit: 2, .. }),
        "{err}"
    );
}
