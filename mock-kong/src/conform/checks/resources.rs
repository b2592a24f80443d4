//! `resources/*` (slow tier): the server's memory, descriptors and threads stay bounded over
//! thousands of events of each kind (`plugin-servers.md`: memory growth is the kits' most
//! reported long-run problem).

use std::time::Duration;

use serde_json::json;

use super::{verdict, Res};
use crate::conform::runner::Ctx;
use crate::conform::wire::{End, RawHost, Reply};
use crate::conform::{join_all, CheckFuture, Outcome};
use crate::pdk::SimpleRequest;

/// Allowed growth between the warmed-up state and the end of the run.
const MAX_RSS_GROWTH_KB: u64 = 24 * 1024;
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

async fn bounded(c: &mut Ctx, kind: Kind, config: serde_json::Value) -> Res {
    let Some(pid) = c.process.as_ref().and_then(|p| p.pid()) else {
        return Ok(Outcome::Skip(
            "the server is managed externally, so its process cannot be measured".into(),
        ));
    };
    let e = c.entity(config);
    let id = c.start(&e).await?;
    let n = c.opts.resource_events.max(LANES);
    let warm = (n / 10).max(100);
    events(&c.host, id, kind, warm)
        .await
        .map_err(|e| format!("warming up: {e}"))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss0, fd0, th0) = measure(pid)?;
    events(&c.host, id, kind, n).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss1, fd1, th1) = measure(pid)?;
    c.alive()?;
    let growth = rss1.saturating_sub(rss0);
    let summary = format!(
        "over {n} events: RSS {} → {} MiB, descriptors {fd0} → {fd1}, threads {th0} → {th1}",
        rss0 / 1024,
        rss1 / 1024
    );
    if growth > MAX_RSS_GROWTH_KB || fd1 - fd0 > MAX_FD_GROWTH || th1 - th0 > MAX_THREAD_GROWTH {
        return Err(format!(
            "{summary} (allowed growth: {} MiB, {MAX_FD_GROWTH} descriptors, \
             {MAX_THREAD_GROWTH} threads)",
            MAX_RSS_GROWTH_KB / 1024
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
