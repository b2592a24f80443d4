//! `resources/*` (slow tier): the server's memory, descriptors and threads stay bounded over
//! events of each kind (`plugin-servers.md`: memory growth is the kits' most reported long-run
//! problem). A leak is a slope, not a threshold: RSS is sampled after each of 20 batches of
//! events (20 000 by default, after a warm-up of a tenth) and a line fitted through the points;
//! the run fails when even the low end of the slope's 95% confidence interval is above
//! 1 MiB per 10 000 events (and the fitted rise over the run above 2 MiB, allocator noise:
//! a shorter run needs a steeper slope to fail). Descriptors and threads keep a fixed allowance (they are counts).

use std::time::Duration;

use serde_json::json;

use super::{verdict, Res};
use crate::conform::runner::Ctx;
use crate::conform::wire::{End, RawHost, Reply};
use crate::conform::{join_all, CheckFuture, Outcome};
use crate::pdk::SimpleRequest;

/// Allowed growth of descriptors and threads between the warmed-up state and the end.
const MAX_FD_GROWTH: i64 = 16;
const MAX_THREAD_GROWTH: i64 = 16;
/// Connections driving events in parallel.
const LANES: usize = 8;

/// RSS (KiB), open descriptors and threads of `pid`, from /proc.
fn measure(pid: u32) -> Result<(u64, i64, i64), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    let rss = field("VmRSS:").ok_or("no VmRSS in /proc status")?;
    let threads = field("Threads:").ok_or("no Threads in /proc status")? as i64;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("cannot list /proc/{pid}/fd: {e}"))?
        .count() as i64;
    Ok((rss, fds, threads))
}

#[derive(Clone, Copy)]
enum Kind {
    /// A normal event with its callbacks.
    Plain,
    /// An event that makes no PDK call.
    ZeroCall,
    /// An event whose first callback is kong.response.exit.
    ExitFirst,
    /// An event whose client vanishes after the first callback.
    Abandoned,
}

/// Runs `n` events of `kind` on instance `id`, `LANES` at a time, each on a new connection.
async fn events(host: &RawHost, id: i64, kind: Kind, n: usize) -> Result<(), String> {
    let lanes: Vec<_> = (0..LANES)
        .map(|lane| {
            let host = host.clone();
            async move {
                let mut i = lane;
                while i < n {
                    one(&host, id, kind)
                        .await
                        .map_err(|e| format!("event {i}: {e}"))?;
                    i += LANES;
                }
                Ok::<(), String>(())
            }
        })
        .collect();
    for r in join_all(lanes).await {
        r?;
    }
    Ok(())
}

async fn one(host: &RawHost, id: i64, kind: Kind) -> Result<(), String> {
    let mut w = host.connect().await.map_err(|e| e.to_string())?;
    let mut pdk = SimpleRequest::new("example.com");
    let mut kong = Ctx::kong_answer(&mut pdk);
    // Abandoned: the client reads the first callback and vanishes without answering it.
    let mut abandon = |_: &str, _: &[crate::Value]| Reply::Terminal;
    let answer: &mut dyn FnMut(&str, &[crate::Value]) -> Reply = match kind {
        Kind::Abandoned => &mut abandon,
        _ => &mut kong,
    };
    let run = host
        .drive(
            &mut w,
            id,
            "access",
            crate::conform::wire::StepConns::Same,
            answer,
        )
        .await
        .map_err(|e| e.to_string())?;
    match run.end {
        End::Done | End::Exit => Ok(()),
        other => Err(format!("the event {other}")),
    }
}

/// Memory slope above which a run fails (when even the low end of its 95% interval is above):
/// 1 MiB per 10 000 events, about 100 bytes an event. The leak of one small map entry per event
/// is well above; allocator and garbage-collector noise over 20 000 events is below.
const LEAK_LIMIT_MIB_PER_10K: f64 = 1.0;
/// Points of the fitted line (RSS after each batch of events).
const SAMPLES: usize = 20;
/// A rise of the fitted line smaller than this over the whole run is allocator noise (buffers
/// and caches settling), not judged: over 20 000 events it equals the limit, over fewer events
/// it takes a steeper slope to fail (a short run cannot tell a leak from warm-up).
const NOISE_MIB: f64 = 2.0;

/// The slope (MiB per 10k events) a run over `events` events must exceed, at the low end of
/// its 95% interval, to fail.
pub fn leak_threshold(events: usize) -> f64 {
    LEAK_LIMIT_MIB_PER_10K.max(NOISE_MIB / (events as f64 / 10_000.0))
}

/// An ordinary least-squares line through `(x, y)`: the slope, and the half-width of its 95%
/// confidence interval (Student's t with n - 2 degrees of freedom).
pub fn slope_with_interval(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let nf = n as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let se = (sse / (nf - 2.0) / sxx).sqrt();
    Some((slope, t95(n - 2) * se))
}

/// The two-sided 95% quantile of Student's t with `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        d if d <= T.len() => T[d - 1],
        _ => 1.96,
    }
}

async fn bounded(c: &mut Ctx, kind: Kind, config: serde_json::Value) -> Res {
    let Some(pid) = c.process.as_ref().and_then(|p| p.pid()) else {
        return Ok(Outcome::Skip(
            "the server is managed externally, so its process cannot be measured".into(),
        ));
    };
    let e = c.entity(config);
    let id = c.start(&e).await?;
    let n = c.opts.resource_events.max(LANES * SAMPLES);
    let warm = (n / 10).max(500);
    events(&c.host, id, kind, warm)
        .await
        .map_err(|e| format!("warming up: {e}"))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss0, fd0, th0) = measure(pid)?;
    let batch = n / SAMPLES;
    let mut points = vec![(0.0, rss0 as f64 / 1024.0)];
    let mut last = (rss0, fd0, th0);
    for i in 1..=SAMPLES {
        events(&c.host, id, kind, batch)
            .await
            .map_err(|e| format!("after {} events: {e}", (i - 1) * batch))?;
        last = measure(pid)?;
        // x in units of 10 000 events, y in MiB: the slope is MiB per 10k events.
        points.push(((i * batch) as f64 / 10_000.0, last.0 as f64 / 1024.0));
    }
    c.alive()?;
    let (rss1, fd1, th1) = last;
    let done = batch * SAMPLES;
    let (slope, half) = slope_with_interval(&points).unwrap_or((0.0, f64::INFINITY));
    let summary = format!(
        "RSS slope {slope:.2} ± {half:.2} MiB per 10k events (95%) over {done} events, RSS {} → \
         {} MiB; descriptors {fd0} → {fd1}, threads {th0} → {th1}",
        rss0 / 1024,
        rss1 / 1024
    );
    let threshold = leak_threshold(done);
    if slope - half > threshold {
        return Err(format!(
            "{summary}: memory grows with every event (even the low end of the interval is \
             above {threshold:.2} MiB per 10k events); at Kong's rates the server is killed \
             for memory, with every plugin it hosts"
        ));
    }
    if fd1 - fd0 > MAX_FD_GROWTH || th1 - th0 > MAX_THREAD_GROWTH {
        return Err(format!(
            "{summary} (allowed growth: {MAX_FD_GROWTH} descriptors, {MAX_THREAD_GROWTH} threads)"
        ));
    }
    Ok(Outcome::Pass(summary))
}

pub fn plain(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move { verdict(bounded(c, Kind::Plain, json!({})).await) })
}

pub fn zero_call(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move { verdict(bounded(c, Kind::ZeroCall, json!({"calls": 0})).await) })
}

pub fn exit_first(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move { verdict(bounded(c, Kind::ExitFirst, json!({})).await) })
}

pub fn abandoned(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move { verdict(bounded(c, Kind::Abandoned, json!({})).await) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_and_its_interval() {
        // y = 2x + 1 exactly: slope 2, no spread.
        let exact: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        let (s, h) = slope_with_interval(&exact).unwrap();
        assert!((s - 2.0).abs() < 1e-9 && h < 1e-9, "{s} {h}");
        // Flat with noise: the interval covers 0.
        let noisy: Vec<(f64, f64)> = (0..21)
            .map(|i| (i as f64, 10.0 + if i % 2 == 0 { 0.3 } else { -0.3 }))
            .collect();
        let (s, h) = slope_with_interval(&noisy).unwrap();
        assert!(s - h < 0.0 && s + h > 0.0, "{s} ± {h}");
        assert!(slope_with_interval(&exact[..2]).is_none());
        assert_eq!(t95(19), 2.093);
        assert_eq!(t95(100), 1.96);
        // 20 000 events: the limit; fewer: the noise floor spread over the run.
        assert_eq!(leak_threshold(20_000), LEAK_LIMIT_MIB_PER_10K);
        assert!((leak_threshold(1000) - 20.0).abs() < 1e-9);
    }
}
