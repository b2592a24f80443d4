//! Emulated-PDK dispatch: what the host does between reading a callback and writing its answer.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mock_kong::host::mp::{fix_multimap, step_method};
use mock_kong::pdk::{Pdk, SimpleRequest};
use mock_kong::protobuf::pdk_table;
use mock_kong::Value;

fn request() -> SimpleRequest {
    SimpleRequest {
        request_headers: vec![
            ("host".into(), "example.com".into()),
            ("x-bench".into(), "1".into()),
        ],
        ..Default::default()
    }
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    let s = mock_kong_benches::criterion_config();
    g.warm_up_time(s.warm_up)
        .measurement_time(s.measurement)
        .sample_size(s.samples);
    let args = [Value::str("x-bench")];
    g.bench_function("SimpleRequest get_header", |b| {
        let mut pdk = request();
        b.iter(|| black_box(pdk.call("access", black_box("kong.request.get_header"), &args)))
    });
    let set = [Value::str("x-bench-calls"), Value::str("10")];
    g.bench_function("SimpleRequest set_header", |b| {
        let mut pdk = request();
        b.iter(|| black_box(pdk.call("access", black_box("kong.response.set_header"), &set)))
    });
    g.bench_function("msgpack step_method + answer", |b| {
        let mut pdk = request();
        b.iter(|| {
            let m = black_box("kong.request.get_header");
            let step = step_method(m);
            (black_box(step), black_box(pdk.call("access", m, &args)))
        })
    });
    g.bench_function("msgpack fix_multimap (3 headers)", |b| {
        let v = Value::map([
            ("a", Value::str("1")),
            ("b", Value::Array(vec![Value::str("2"), Value::str("3")])),
            ("c", Value::Bool(true)),
        ]);
        b.iter(|| black_box(fix_multimap(v.clone())))
    });
    let spec = pdk_table::lookup("kong.request.get_header").expect("in the table");
    let frame = pdk_table::encode_args(spec, &args).expect("encodable");
    g.bench_function("protobuf lookup + unwrap + answer + wrap", |b| {
        let mut pdk = request();
        b.iter(|| {
            let spec = pdk_table::lookup(black_box("kong.request.get_header")).expect("known");
            let a = pdk_table::unwrap_args(spec, &frame).expect("valid");
            let out = match pdk.call("access", spec.name, &a) {
                mock_kong::pdk::PdkOutcome::Return(v) => v,
                _ => Value::Nil,
            };
            black_box(pdk_table::wrap_result(spec, &out).map(|v| v.len()))
        })
    });
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
