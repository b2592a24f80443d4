//! Codec benchmarks: encode and decode of each message kind of both protocols.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use mock_kong::msgpack::{self, RpcMessage, StreamDecoder};
use mock_kong::protobuf::messages::{
    rpc_call, rpc_return, CmdHandleEvent, CmdStartInstance, InstanceStatus, RpcCall, RpcReturn,
};
use mock_kong::protobuf::{encode_frame, pdk_table, FrameDecoder};
use mock_kong::Value;
use prost::Message;

const CONFIG: &str = r#"{"calls":10,"method":"kong.request.get_header","__plugin_id":"5b0e6a4c-6c43-4b7e-8e3a-3f0e2f0c9d11","__ws_id":"0dc6f45b-8f8d-40d2-a504-473544ee190b","__key__":"plugins:bench::::0dc6f45b-8f8d-40d2-a504-473544ee190b","__seq__":7}"#;

fn msgpack_messages() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let start = Value::map([
        ("Name", Value::str("bench")),
        ("Config", Value::str(CONFIG)),
    ]);
    msgpack::encode_request(1, "plugin.StartInstance", &[start], &mut buf);
    out.push(("StartInstance request", std::mem::take(&mut buf)));
    let he = Value::map([
        ("InstanceId", Value::Int(0)),
        ("EventName", Value::str("access")),
    ]);
    msgpack::encode_request(2, "plugin.HandleEvent", &[he], &mut buf);
    out.push(("HandleEvent request", std::mem::take(&mut buf)));
    let step = Value::map([("EventId", Value::Int(0)), ("Data", Value::str("1"))]);
    msgpack::encode_request(3, "plugin.Step", &[step], &mut buf);
    out.push(("Step request", std::mem::take(&mut buf)));
    let cb = Value::map([
        (
            "Data",
            Value::map([
                ("Method", Value::str("kong.request.get_header")),
                ("Args", Value::Array(vec![Value::str("x-bench")])),
            ]),
        ),
        ("EventId", Value::Int(0)),
    ]);
    msgpack::encode_response(3, &Value::Nil, &cb, &mut buf);
    out.push(("callback response", std::mem::take(&mut buf)));
    let ret = Value::map([("Data", Value::str("ret")), ("EventId", Value::Int(0))]);
    msgpack::encode_response(4, &Value::Nil, &ret, &mut buf);
    out.push(("ret response", std::mem::take(&mut buf)));
    out
}

fn msgpack_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("msgpack");
    let s = mock_kong_benches::criterion_config();
    g.warm_up_time(s.warm_up)
        .measurement_time(s.measurement)
        .sample_size(s.samples);
    let step = Value::map([("EventId", Value::Int(0)), ("Data", Value::str("1"))]);
    g.bench_function("encode/Step request", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            msgpack::encode_request(
                black_box(3),
                "plugin.Step",
                std::slice::from_ref(&step),
                &mut out,
            );
            black_box(out.len())
        })
    });
    let start = Value::map([
        ("Name", Value::str("bench")),
        ("Config", Value::str(CONFIG)),
    ]);
    g.bench_function("encode/StartInstance request", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            msgpack::encode_request(
                1,
                "plugin.StartInstance",
                std::slice::from_ref(&start),
                &mut out,
            );
            black_box(out.len())
        })
    });
    for (name, bytes) in msgpack_messages() {
        g.bench_with_input(BenchmarkId::new("decode", name), &bytes, |b, bytes| {
            b.iter(|| {
                let (v, _) = msgpack::decode(black_box(bytes)).expect("valid");
                black_box(RpcMessage::from_value(v).is_ok())
            })
        });
    }
    let cb = msgpack_messages().remove(3).1;
    g.bench_function("stream/callback response in 2 reads", |b| {
        b.iter(|| {
            let mut d = StreamDecoder::new(1 << 20);
            let (a, z) = cb.split_at(cb.len() / 2);
            d.feed(a);
            assert!(d.next_value().expect("partial ok").is_none());
            d.feed(z);
            black_box(d.next_value().expect("valid").is_some())
        })
    });
    g.finish();
}

fn protobuf_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("protobuf");
    let s = mock_kong_benches::criterion_config();
    g.warm_up_time(s.warm_up)
        .measurement_time(s.measurement)
        .sample_size(s.samples);
    let he = RpcCall {
        sequence: 3,
        call: Some(rpc_call::Call::CmdHandleEvent(CmdHandleEvent {
            instance_id: 7,
            event_name: "access".into(),
        })),
    };
    let start = RpcCall {
        sequence: 2,
        call: Some(rpc_call::Call::CmdStartInstance(CmdStartInstance {
            name: "bench".into(),
            config: CONFIG.as_bytes().to_vec(),
        })),
    };
    let status = RpcReturn {
        sequence: 2,
        r#return: Some(rpc_return::Return::InstanceStatus(InstanceStatus {
            name: "bench".into(),
            instance_id: 7,
            config: None,
            started_at: 1_700_000_000,
        })),
    };
    for (name, msg) in [
        ("RpcCall HandleEvent", &he),
        ("RpcCall StartInstance", &start),
    ] {
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| black_box(msg.encode_to_vec()))
        });
        let bytes = msg.encode_to_vec();
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| black_box(RpcCall::decode(black_box(&bytes[..])).is_ok()))
        });
    }
    let bytes = status.encode_to_vec();
    g.bench_function("decode/RpcReturn InstanceStatus", |b| {
        b.iter(|| black_box(RpcReturn::decode(black_box(&bytes[..])).is_ok()))
    });
    let spec = pdk_table::lookup("kong.request.get_header").expect("in the table");
    let args = pdk_table::encode_args(spec, &[Value::str("x-bench")]).expect("encodable");
    g.bench_function("decode/PDK args (String)", |b| {
        b.iter(|| black_box(pdk_table::unwrap_args(spec, black_box(&args)).map(|v| v.len())))
    });
    g.bench_function("encode/PDK result (String)", |b| {
        let v = Value::str("example.com");
        b.iter(|| black_box(pdk_table::wrap_result(spec, black_box(&v)).map(|v| v.len())))
    });
    let mut framed = Vec::new();
    encode_frame(b"kong.request.get_header", &mut framed);
    encode_frame(&args, &mut framed);
    g.bench_function("frame/encode name + args", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            encode_frame(black_box(b"kong.request.get_header"), &mut out);
            encode_frame(black_box(&args), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("frame/decode name + args", |b| {
        b.iter(|| {
            let mut d = FrameDecoder::new(1 << 20);
            d.feed(black_box(&framed));
            let a = d.next_frame().expect("valid").map(|f| f.len());
            let z = d.next_frame().expect("valid").map(|f| f.len());
            black_box((a, z))
        })
    });
    g.finish();
}

criterion_group!(benches, msgpack_benches, protobuf_benches);
criterion_main!(benches);
