//! Full events through the host against the reference server over a real Unix socket: the
//! server on its own thread, the host on a current-thread runtime (as loadgen and mock-kong).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mock_kong::host::{Client, EventEnd, HostOptions, PluginEntity, PluginRunner};
use mock_kong::pdk::SimpleRequest;
use mock_kong::Protocol;
use mock_kong_benches::BackgroundServer;

fn roundtrip(c: &mut Criterion) {
    let mut g = c.benchmark_group("event roundtrip");
    let s = mock_kong_benches::criterion_config();
    g.warm_up_time(s.warm_up)
        .measurement_time(s.measurement)
        .sample_size(s.samples);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for protocol in [Protocol::MsgPack, Protocol::ProtoBuf] {
        let server = BackgroundServer::start(protocol).expect("reference server");
        for calls in [0u32, 10] {
            let mut cfg = serde_json::Map::new();
            cfg.insert("calls".into(), calls.into());
            let entity = PluginEntity::new("bench", cfg);
            let runner = PluginRunner::new(Arc::new(Client::new(HostOptions::new(
                server.socket.clone(),
                protocol,
            ))));
            let mut pdk = SimpleRequest::new("example.com");
            pdk.request_headers.push(("x-bench".into(), "1".into()));
            g.bench_with_input(
                BenchmarkId::new(protocol.as_str(), format!("{calls} calls")),
                &calls,
                |b, &calls| {
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let t = Instant::now();
                            for _ in 0..iters {
                                pdk.response_headers.clear();
                                let r = runner
                                    .run_event(&entity, "access", &mut pdk)
                                    .await
                                    .expect("event");
                                assert!(r.end == EventEnd::Done && r.calls.len() == calls as usize);
                            }
                            t.elapsed().max(Duration::from_nanos(1))
                        })
                    })
                },
            );
        }
        drop(server);
    }
    g.finish();
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
