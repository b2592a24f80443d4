//! Unit tests of the emulated request: the whole ProtoBuf table (docs/protocol.md §5.4), the MsgPack surface
//! (docs/protocol.md §4.4), Kong's phase checks and argument errors, the request flow and the log timer
//! (docs/protocol.md §4.5, §6).

use super::*;
use crate::protobuf::pdk_table::{self, Shape};
use mock_kong_codec::event::mp::{fix_multimap, step_method};
use std::time::Duration;

fn s(x: &str) -> Value {
    Value::str(x)
}

fn request() -> KongRequest {
    let mut req = KongRequest::new(ClientRequest {
        method: "POST".into(),
        path: "/orders".into(),
        raw_query: "a=1&a=2&debug".into(),
        headers: Headers(vec![
            ("Host".into(), "example.com".into()),
            ("Accept".into(), "*/*".into()),
            ("X-Multi".into(), "first".into()),
            ("X-Multi".into(), "second".into()),
            ("Content-Type".into(), "application/json".into()),
        ]),
        body: b"{\"k\":\"v\"}".to_vec(),
        unnamed_captures: vec!["orders".into()],
        ..ClientRequest::default()
    });
    req.route = Some(Value::map([
        ("id", s("5f1c2d3e-0000-4000-8000-000000000001")),
        ("name", s("orders")),
        ("paths", Value::Array(vec![s("/orders")])),
        ("strip_path", Value::Bool(false)),
    ]));
    req.service = Some(Value::map([
        ("id", s("5f1c2d3e-0000-4000-8000-000000000002")),
        ("name", s("backend")),
        ("host", s("backend.internal")),
        ("port", Value::Int(8080)),
        ("protocol", s("http")),
    ]));
    req.consumer = Some(Value::map([
        ("id", s("5f1c2d3e-0000-4000-8000-000000000003")),
        ("username", s("alice")),
    ]));
    req.credential = Some(Value::map([
        ("id", s("5f1c2d3e-0000-4000-8000-000000000004")),
        ("consumer_id", s("5f1c2d3e-0000-4000-8000-000000000003")),
    ]));
    req.upstreams = vec!["backend-upstream".into()];
    req.plugin_id = "5f1c2d3e-0000-4000-8000-000000000005".into();
    req.start();
    req
}

fn ret(o: PdkOutcome) -> Value {
    match o {
        PdkOutcome::Return(v) => v,
        other => panic!("expected a return, got {other:?}"),
    }
}

fn raised(o: PdkOutcome) -> String {
    match o {
        PdkOutcome::Raise(e) => e,
        other => panic!("expected a raise, got {other:?}"),
    }
}

/// The phase each table method is legal in (Kong's phase checks) and its arguments.
fn plan(name: &str, input: Shape) -> (&'static str, Vec<Value>) {
    let phase = if name.starts_with("kong.service.response.")
        || matches!(
            name,
            "kong.response.get_status"
                | "kong.response.get_header"
                | "kong.response.get_headers"
                | "kong.response.get_source"
        ) {
        "response"
    } else if name == "kong.log.serialize" {
        "log"
    } else {
        "access"
    };
    let args = match name {
        "kong.service.request.set_scheme" => vec![s("https")],
        "kong.service.request.set_path" => vec![s("/v2")],
        "kong.service.request.set_method" => vec![s("PUT")],
        "kong.service.set_upstream" => vec![s("backend-upstream")],
        "kong.client.load_consumer" => {
            vec![
                s("5f1c2d3e-0000-4000-8000-000000000003"),
                Value::Bool(false),
            ]
        }
        "kong.client.authenticate" => vec![Value::map([("id", s("c1"))]), Value::Nil],
        "kong.response.exit" => vec![Value::Int(403), s("no"), Value::Nil],
        "kong.request.get_query"
        | "kong.request.get_headers"
        | "kong.response.get_headers"
        | "kong.service.response.get_headers" => vec![Value::Int(100)],
        "kong.response.set_status" => vec![Value::Int(201)],
        "kong.service.set_target" => vec![s("10.0.0.1"), Value::Int(8000)],
        _ => match input {
            Shape::Empty => vec![],
            Shape::String => vec![s("x-multi")],
            Shape::Kv => vec![s("x-key"), s("value")],
            Shape::ListValue => vec![s("hello "), s("world")],
            Shape::Struct => vec![Value::map([("x-a", s("1"))])],
            Shape::Int => vec![Value::Int(1)],
            Shape::Bool => vec![Value::Bool(false)],
            Shape::ByteString => vec![s("raw")],
            other => panic!("no argument plan for {name} ({other:?})"),
        },
    };
    (phase, args)
}

/// Whether `v` is what Kong's wrap step expects for `shape` (docs/protocol.md §5.4).
fn fits(shape: Shape, v: &Value) -> bool {
    match shape {
        Shape::Empty => v.is_nil(),
        Shape::String => matches!(v, Value::Nil | Value::Str(_)),
        Shape::ByteString => matches!(v, Value::Nil | Value::Str(_) | Value::Bin(_)),
        Shape::Int => matches!(v, Value::Nil | Value::Int(_)),
        Shape::Number => matches!(v, Value::Nil | Value::Float(_) | Value::Int(_)),
        Shape::Bool => matches!(v, Value::Nil | Value::Bool(_)),
        Shape::Struct => matches!(v, Value::Map(_)),
        Shape::Value => true,
        Shape::RawBodyResult => matches!(v, Value::Str(_) | Value::Bin(_) | Value::Map(_)),
        _ => matches!(v, Value::Nil | Value::Map(_)),
    }
}

/// Spec §5.4: every method of the ProtoBuf table is answered, with a value of the method's
/// output shape that Kong's wrap encodes without error.
#[test]
fn answers_every_protobuf_table_method() {
    assert_eq!(pdk_table::methods().len(), 74);
    for spec in pdk_table::methods() {
        let mut req = request();
        req.protocol = Protocol::ProtoBuf;
        let (phase, args) = plan(spec.name, spec.input);
        if phase != "access" {
            req.enter_phase("access");
        }
        req.enter_phase(phase);
        let outcome = req.call(phase, spec.name, &args);
        let value = match outcome {
            PdkOutcome::Return(v) => v,
            PdkOutcome::Exit { status, .. } if spec.name == "kong.response.exit" => {
                assert_eq!(status, 403);
                continue;
            }
            other => panic!(
                "{}: expected an answer in {phase}, got {other:?}",
                spec.name
            ),
        };
        assert!(
            fits(spec.output, &value),
            "{}: {value:?} does not fit {:?}",
            spec.name,
            spec.output
        );
        let bytes = pdk_table::wrap_result(spec, &value)
            .unwrap_or_else(|e| panic!("{}: wrap failed: {e}", spec.name));
        pdk_table::decode_result(spec, &bytes)
            .unwrap_or_else(|e| panic!("{}: the reply does not decode: {e}", spec.name));
    }
}

/// Spec §4.4: the MsgPack-only surface of the dynamic kits is answered too.
#[test]
fn answers_the_msgpack_surface() {
    let methods: &[(&str, Vec<Value>)] = &[
        ("kong.request.get_id", vec![]),
        ("kong.request.get_forwarded_path", vec![]),
        ("kong.request.get_forwarded_prefix", vec![]),
        ("kong.request.get_raw_path", vec![]),
        ("kong.request.get_start_time", vec![]),
        ("kong.request.get_body", vec![]),
        ("kong.service.request.enable_buffering", vec![]),
        ("kong.service.request.clear_query_arg", vec![s("a")]),
        (
            "kong.service.request.set_body",
            vec![Value::map([("a", s("1"))]), s("application/json")],
        ),
        ("kong.service.set_retries", vec![Value::Int(3)]),
        (
            "kong.service.set_timeouts",
            vec![Value::Int(1000), Value::Int(2000), Value::Int(3000)],
        ),
        ("kong.nginx.get_statistics", vec![]),
        ("kong.node.get_hostname", vec![]),
        ("kong.plugin.get_id", vec![]),
        ("kong.log.inspect", vec![s("a"), Value::Int(1)]),
    ];
    let mut req = request();
    req.enter_phase("access");
    for (m, args) in methods {
        match req.call("access", m, args) {
            PdkOutcome::Return(_) => {}
            other => panic!("{m}: {other:?}"),
        }
    }
    assert_eq!(
        ret(req.call("access", "kong.plugin.get_id", &[])),
        s("5f1c2d3e-0000-4000-8000-000000000005")
    );
    assert_eq!(
        req.upstream_request.raw_query,
        "a=2&debug".replace("a=2&", "")
    );
    assert_eq!(
        req.upstream_request.body.as_deref(),
        Some(&b"{\"a\":\"1\"}"[..])
    );
    assert!(matches!(
        req.call("access", "kong.no.such", &[]),
        PdkOutcome::NotFound
    ));
    assert!(req
        .logs
        .iter()
        .any(|l| l.source == "kong" && l.text == "could not find pdk method: kong.no.such"));
}

/// kong.request: first value of a multi-valued header, case-insensitive names, multimaps, raw
/// body as bin (docs/protocol.md §4.4, §8 item 5), URI captures (docs/protocol.md §4.5).
#[test]
fn request_module() {
    let mut req = request();
    req.enter_phase("access");
    let c = |r: &mut KongRequest, m: &str, a: &[Value]| ret(r.call("access", m, a));
    assert_eq!(
        c(&mut req, "kong.request.get_header", &[s("X_MULTI")]),
        s("first")
    );
    assert_eq!(
        c(&mut req, "kong.request.get_header", &[s("absent")]),
        Value::Nil
    );
    let headers = c(&mut req, "kong.request.get_headers", &[]);
    assert_eq!(
        headers.get("x-multi"),
        Some(&Value::Array(vec![s("first"), s("second")]))
    );
    assert_eq!(headers.get("host"), Some(&s("example.com")));
    // StepMultiMap fix-up: every value an array (docs/protocol.md §4.4).
    assert_eq!(
        step_method("kong.request.get_headers"),
        "plugin.StepMultiMap"
    );
    let fixed = fix_multimap(headers);
    assert_eq!(
        fixed.get("host"),
        Some(&Value::Array(vec![s("example.com")]))
    );
    let q = c(&mut req, "kong.request.get_query", &[]);
    assert_eq!(q.get("a"), Some(&Value::Array(vec![s("1"), s("2")])));
    assert_eq!(q.get("debug"), Some(&Value::Bool(true)));
    assert_eq!(c(&mut req, "kong.request.get_query_arg", &[s("a")]), s("1"));
    assert_eq!(
        c(&mut req, "kong.request.get_path_with_query", &[]),
        s("/orders?a=1&a=2&debug")
    );
    assert_eq!(c(&mut req, "kong.request.get_method", &[]), s("POST"));
    assert_eq!(c(&mut req, "kong.request.get_port", &[]), Value::Int(80));
    assert_eq!(
        c(&mut req, "kong.request.get_http_version", &[]),
        Value::Float(1.1)
    );
    assert_eq!(
        c(&mut req, "kong.request.get_raw_body", &[]),
        Value::Bin(b"{\"k\":\"v\"}".to_vec())
    );
    let body = c(&mut req, "kong.request.get_body", &[]);
    assert_eq!(body.get("k"), Some(&s("v")));
    let caps = c(&mut req, "kong.request.get_uri_captures", &[]);
    assert_eq!(caps.get("unnamed"), Some(&Value::Array(vec![s("orders")])));
    assert_eq!(caps.get("named"), Some(&Value::Array(vec![])));
    // Kong's argument errors.
    for (m, a, e) in [
        (
            "kong.request.get_headers",
            Value::Int(0),
            "max_headers must be >= 1",
        ),
        (
            "kong.request.get_headers",
            Value::Int(1001),
            "max_headers must be <= 1000",
        ),
        (
            "kong.request.get_headers",
            s("x"),
            "max_headers must be a number",
        ),
        (
            "kong.request.get_query",
            Value::Int(0),
            "max_args must be >= 1",
        ),
        (
            "kong.request.get_header",
            Value::Int(1),
            "header name must be a string",
        ),
        (
            "kong.request.get_query_arg",
            Value::Nil,
            "query argument name must be a string",
        ),
    ] {
        assert_eq!(raised(req.call("access", m, &[a])), e, "{m}");
    }
    // Before 3.0 raw bodies are str; over ProtoBuf they are plain strings.
    req.version = KongVersion::new(2, 8);
    assert_eq!(
        c(&mut req, "kong.request.get_raw_body", &[]),
        Value::Str(b"{\"k\":\"v\"}".to_vec())
    );
}

/// kong.response: phase checks, setters, exit and error bodies.
#[test]
fn response_module() {
    let mut req = request();
    req.enter_phase("access");
    assert_eq!(
        raised(req.call("access", "kong.response.get_status", &[])),
        "function cannot be called in access phase (only in: response, header_filter, \
         body_filter, log, error, admin_api)"
    );
    assert_eq!(
        raised(req.call("access", "kong.response.get_raw_body", &[])),
        "function cannot be called in access phase (only in: body_filter)"
    );
    ret(req.call(
        "access",
        "kong.response.set_header",
        &[s("X-A"), Value::Int(1)],
    ));
    ret(req.call("access", "kong.response.add_header", &[s("x-a"), s("2")]));
    assert_eq!(
        raised(req.call(
            "access",
            "kong.response.set_header",
            &[s("x-b"), Value::Nil]
        )),
        "invalid header value for \"x-b\": got nil, expected array of string, string, number \
         or boolean"
    );
    assert_eq!(
        raised(req.call("access", "kong.response.set_status", &[Value::Int(99)])),
        "code must be a number between 100 and 599"
    );
    req.enter_phase("response");
    let c = |r: &mut KongRequest, m: &str, a: &[Value]| ret(r.call("response", m, a));
    assert_eq!(
        c(&mut req, "kong.response.get_status", &[]),
        Value::Int(200)
    );
    assert_eq!(
        c(&mut req, "kong.response.get_headers", &[]).get("x-a"),
        Some(&Value::Array(vec![s("1"), s("2")]))
    );
    assert_eq!(
        c(&mut req, "kong.response.get_header", &[s("server")]),
        s("mock-upstream/1.0.0")
    );
    assert_eq!(c(&mut req, "kong.response.get_source", &[]), s("service"));
    // error(): Kong's default JSON body with the request id.
    match req.call("response", "kong.response.error", &[Value::Int(404)]) {
        PdkOutcome::Exit {
            status,
            body,
            headers,
        } => {
            assert_eq!(status, 404);
            let body = String::from_utf8(body.unwrap()).unwrap();
            assert_eq!(
                body,
                format!(
                    "{{\n  \"message\":\"Not found\",\n  \"request_id\":\"{}\"\n}}",
                    req.client.id
                )
            );
            assert_eq!(
                headers,
                vec![(
                    "Content-Type".to_string(),
                    vec!["application/json; charset=utf-8".to_string()]
                )]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(req.exited);
    assert_eq!(req.source, Source::Error);
    assert_eq!(
        raised(req.call("response", "kong.response.error", &[Value::Int(302)])),
        "code must be a number between 400 and 599"
    );
}

/// kong.response.exit: terminal; a table body becomes JSON.
#[test]
fn exit_with_table_body() {
    let mut req = request();
    req.enter_phase("access");
    let out = req.call(
        "access",
        "kong.response.exit",
        &[
            Value::Int(401),
            Value::map([("message", s("a/b"))]),
            Value::map([("x-exit", Value::Array(vec![s("1")]))]),
        ],
    );
    match out {
        PdkOutcome::Exit {
            status,
            body,
            headers,
        } => {
            assert_eq!(status, 401);
            assert_eq!(body.as_deref(), Some(&b"{\"message\":\"a\\/b\"}"[..]));
            assert!(headers.contains(&("x-exit".into(), vec!["1".into()])));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        raised(req.call("access", "kong.response.exit", &[s("x")])),
        "code must be a number"
    );
}

/// kong.service.request: setters change the upstream request; only in rewrite/access.
#[test]
fn service_request_module() {
    let mut req = request();
    assert_eq!(
        req.upstream_request.headers.get("host"),
        Some("backend.internal:8080")
    );
    req.enter_phase("access");
    let c = |r: &mut KongRequest, m: &str, a: &[Value]| ret(r.call("access", m, a));
    c(
        &mut req,
        "kong.service.request.set_header",
        &[s("X-Up"), s("1")],
    );
    c(
        &mut req,
        "kong.service.request.add_header",
        &[s("x-up"), s("2")],
    );
    c(
        &mut req,
        "kong.service.request.clear_header",
        &[s("accept")],
    );
    c(
        &mut req,
        "kong.service.request.set_path",
        &[s("/v2/orders")],
    );
    c(&mut req, "kong.service.request.set_method", &[s("PATCH")]);
    c(
        &mut req,
        "kong.service.request.set_query",
        &[Value::map([("z", s("a b")), ("b", Value::Bool(true))])],
    );
    c(&mut req, "kong.service.request.set_raw_body", &[s("raw")]);
    let up = &req.upstream_request;
    assert_eq!(up.headers.get_all("X-UP"), ["1", "2"]);
    assert_eq!(up.headers.get("accept"), None);
    assert_eq!(
        (up.method.as_str(), up.path.as_str()),
        ("PATCH", "/v2/orders")
    );
    assert_eq!(up.raw_query, "b&z=a%20b");
    assert_eq!(up.body.as_deref(), Some(&b"raw"[..]));
    assert_eq!(
        raised(req.call("access", "kong.service.request.set_path", &[s("v2")])),
        "path must start with /"
    );
    assert_eq!(
        raised(req.call("access", "kong.service.request.set_method", &[s("FOO")])),
        "invalid method: FOO"
    );
    assert_eq!(
        raised(req.call("access", "kong.service.request.set_scheme", &[s("ftp")])),
        "invalid scheme: ftp"
    );
    req.enter_phase("response");
    assert_eq!(
        raised(req.call(
            "response",
            "kong.service.request.set_header",
            &[s("a"), s("b")]
        )),
        "function cannot be called in response phase (only in: rewrite, access, balancer)"
    );
    assert_eq!(
        raised(req.call(
            "response",
            "kong.service.request.add_header",
            &[s("a"), s("b")]
        )),
        "function cannot be called in response phase (only in: rewrite, access)"
    );
}

/// kong.service / kong.service.response: set_upstream's soft error, the buffered response.
#[test]
fn service_and_service_response() {
    let mut req = request();
    req.enter_phase("access");
    assert_eq!(
        req.call("access", "kong.service.set_upstream", &[s("nope")]),
        PdkOutcome::SoftError("could not find an Upstream named 'nope'".into())
    );
    assert_eq!(
        ret(req.call(
            "access",
            "kong.service.set_upstream",
            &[s("backend-upstream")]
        )),
        Value::Bool(true)
    );
    // Before 3.7, the ProtoBuf output type was Empty and encoding `true` raised.
    req.protocol = Protocol::ProtoBuf;
    req.version = KongVersion::new(3, 6);
    assert!(raised(req.call(
        "access",
        "kong.service.set_upstream",
        &[s("backend-upstream")]
    ))
    .contains("table expected, got boolean"));
    req.protocol = Protocol::MsgPack;
    req.version = KongVersion::DEFAULT;
    assert_eq!(
        raised(req.call(
            "access",
            "kong.service.set_target",
            &[s("h"), Value::Int(70000)]
        )),
        "port must be an integer between 0 and 65535: given 70000"
    );
    assert_eq!(
        raised(req.call("access", "kong.service.response.get_status", &[])),
        "function cannot be called in access phase (only in: response, header_filter, \
         body_filter, log)"
    );
    req.enter_phase("response");
    let c = |r: &mut KongRequest, m: &str, a: &[Value]| ret(r.call("response", m, a));
    assert_eq!(
        c(&mut req, "kong.service.response.get_status", &[]),
        Value::Int(200)
    );
    assert_eq!(
        c(&mut req, "kong.service.response.get_header", &[s("SERVER")]),
        s("mock-upstream/1.0.0")
    );
    assert_eq!(
        c(&mut req, "kong.service.response.get_raw_body", &[]),
        Value::Bin(b"ok".to_vec())
    );
}

/// The log timer (docs/protocol.md §4.5, §6): saved data only, other request-bound calls raise.
#[test]
fn log_phase_sees_saved_data_only() {
    let mut req = request();
    req.enter_phase("access");
    ret(req.call("access", "kong.ctx.shared.set", &[s("k"), s("v")]));
    ret(req.call("access", "kong.response.set_header", &[s("x-a"), s("1")]));
    ret(req.call("access", "kong.nginx.set_ctx", &[s("c"), Value::Int(5)]));
    req.enter_phase("log");
    let c = |r: &mut KongRequest, m: &str, a: &[Value]| ret(r.call("log", m, a));
    assert_eq!(c(&mut req, "kong.ctx.shared.get", &[s("k")]), s("v"));
    assert_eq!(c(&mut req, "kong.nginx.get_ctx", &[s("c")]), Value::Int(5));
    assert!(c(&mut req, "kong.nginx.get_ctx", &[s("KONG_ACCESS_START")])
        .as_i64()
        .is_some_and(|n| n > 10));
    assert_eq!(
        c(&mut req, "kong.request.get_header", &[s("x-multi")]),
        s("first")
    );
    // The saved headers ignore max (no max check in the override).
    assert!(matches!(
        c(&mut req, "kong.request.get_headers", &[Value::Int(0)]),
        Value::Map(_)
    ));
    assert_eq!(c(&mut req, "kong.response.get_header", &[s("x-a")]), s("1"));
    assert_eq!(
        c(&mut req, "kong.response.get_status", &[]),
        Value::Int(200)
    );
    let ser = c(&mut req, "kong.log.serialize", &[]);
    let text = ser.as_str().unwrap();
    assert!(
        text.contains("\"url\":\"http:\\/\\/example.com:80\\/orders"),
        "{text}"
    );
    let j: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(j["response"]["headers"]["x-a"], "1");
    for m in [
        "kong.request.get_path",
        "kong.client.get_ip",
        "kong.nginx.get_var",
        "kong.service.response.get_status",
    ] {
        assert_eq!(raised(req.call("log", m, &[s("x")])), NO_REQUEST, "{m}");
    }
    assert!(
        raised(req.call("log", "kong.response.set_header", &[s("a"), s("b")]))
            .starts_with("function cannot be called in log phase")
    );
    assert_eq!(
        raised(req.call("access", "kong.log.serialize", &[])),
        "function cannot be called in access phase (only in: log)"
    );
    // Kong 2.6 did not save request headers yet.
    let mut old = request();
    old.version = KongVersion::new(2, 6);
    old.enter_phase("log");
    assert_eq!(
        raised(old.call("log", "kong.request.get_header", &[s("host")])),
        NO_REQUEST
    );
}

/// Overrides: args match, soft errors, raises, times, delays.
#[test]
fn overrides_answer_first() {
    let mut req = request();
    req.overrides = vec![
        Override {
            method: "kong.request.get_header".into(),
            args: Some(vec![s("host")]),
            phase: None,
            answer: OverrideAnswer::Return(s("override.test")),
            delay: None,
            times: Some(1),
            used: 0,
        },
        Override {
            method: "kong.client.get_ip".into(),
            args: None,
            phase: Some("access".into()),
            answer: OverrideAnswer::SoftError("nope".into()),
            delay: Some(Duration::from_millis(5)),
            times: None,
            used: 0,
        },
    ];
    req.enter_phase("access");
    assert_eq!(
        ret(req.call("access", "kong.request.get_header", &[s("host")])),
        s("override.test")
    );
    assert_eq!(
        ret(req.call("access", "kong.request.get_header", &[s("host")])),
        s("example.com")
    );
    assert_eq!(
        ret(req.call("access", "kong.request.get_header", &[s("accept")])),
        s("*/*")
    );
    match req.call("access", "kong.client.get_ip", &[]) {
        PdkOutcome::Delayed { after, then } => {
            assert_eq!(after, Duration::from_millis(5));
            assert_eq!(*then, PdkOutcome::SoftError("nope".into()));
        }
        other => panic!("{other:?}"),
    }
    assert!(!req.sends_step_error());
    req.version = KongVersion::new(2, 8);
    assert!(req.sends_step_error());
}

#[test]
fn helpers() {
    assert_eq!(url_decode("a%20b+c%zz"), "a b c%zz");
    assert_eq!(
        phase_error("log", REWRITE_ACCESS_HEADER),
        "function cannot be called in log phase (only in: rewrite, access, balancer, response, \
         header_filter, error, admin_api)"
    );
    assert_eq!(
        response_type(Some("text/html;q=0.9, text/plain")),
        "text/plain; charset=utf-8"
    );
}
