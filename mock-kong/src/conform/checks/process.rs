//! `process/*`: the server process as Kong manages it (docs/protocol.md §3): socket creation, a stale socket
//! file, SIGTERM, and a restart after a crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{verdict, Res};
use crate::conform::runner::Ctx;
use crate::conform::{CheckFuture, Outcome};
use crate::host::{Client, EventEnd, HostOptions, PluginRunner, Timeouts};
use crate::pdk::SimpleRequest;
use crate::process::ServerProcess;

/// Starts the server and waits for its socket; the error says what happened.
async fn start(c: &Ctx) -> Result<(ServerProcess, Duration), String> {
    let t0 = Instant::now();
    let p = c.spawn().await?;
    match p.wait_socket(c.opts.socket_timeout).await {
        Ok(()) => Ok((p, t0.elapsed())),
        Err(e) => {
            let _ = p.stop().await;
            Err(e.to_string())
        }
    }
}

pub fn socket_in_time(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let (p, took) = start(c).await?;
                let _ = p.stop().await;
                Ok(Outcome::Pass(format!(
                    "the socket accepted connections after {:.2} s",
                    took.as_secs_f64()
                )))
            }
            .await,
        )
    })
}

/// Leaves a socket file nobody listens on at `path` (what a killed server leaves behind).
fn stale_socket(path: &std::path::Path) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot create a stale socket at {}: {e}", path.display()))?;
    drop(l);
    Ok(())
}

pub fn stale_socket_check(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                stale_socket(&c.target.socket)?;
                let (p, took) = start(c)
                    .await
                    .map_err(|e| format!("with a stale socket file at the path: {e}"))?;
                c.process = Some(p);
                c.serves().await?;
                Ok(Outcome::Pass(format!(
                    "replaced the stale socket file and served after {:.2} s",
                    took.as_secs_f64()
                )))
            }
            .await,
        )
    })
}

pub fn sigterm(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let (p, _) = start(c).await?;
                let Some(pid) = p.pid().and_then(|p| i32::try_from(p).ok()) else {
                    return Err("the server exited right after creating its socket".into());
                };
                let t0 = Instant::now();
                // Kong signals the pid only (`proc:kill(15)`), not the process group.
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
                let grace = Duration::from_secs(5);
                while t0.elapsed() < grace {
                    if let Some(exit) = p.last_exit() {
                        let _ = p.stop().await;
                        return Ok(Outcome::Pass(format!(
                            "{} {:.2} s after SIGTERM",
                            exit.reason,
                            t0.elapsed().as_secs_f64()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = p.stop().await;
                Err(format!(
                "still running {} s after SIGTERM (Kong never sends SIGKILL, so the old server \
                 would keep its socket and the new one could not start)",
                grace.as_secs()
            ))
            }
            .await,
        )
    })
}

pub fn restart(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move { verdict(restart_inner(c).await) })
}

async fn restart_inner(c: &mut Ctx) -> Res {
    let (p, _) = start(c).await?;
    c.process = Some(p);
    let mut host = HostOptions::new(c.target.socket.clone(), c.protocol);
    host.timeouts = Timeouts::uniform(c.opts.io_timeout);
    host.max_retries = 3;
    let runner = PluginRunner::new(Arc::new(Client::new(host)));
    let entity = c.entity(if c.plugin.name == "faults" {
        serde_json::json!({"mode": "none"})
    } else {
        serde_json::json!({})
    });
    let phase = c.phase();
    let mut pdk = SimpleRequest::new("example.com");
    let before = runner
        .run_event(&entity, &phase, &mut pdk)
        .await
        .map_err(|e| format!("before the restart: {e}"))?;
    if let Some(p) = c.process.take() {
        p.signal(libc::SIGKILL);
        let t0 = Instant::now();
        while p.last_exit().is_none() && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = p.stop().await;
    }
    // What SIGKILL leaves behind (stop() tidied it away).
    if !c.target.socket.exists() {
        stale_socket(&c.target.socket)?;
    }
    runner.client().clear_pool();
    let (p, took) = start(c).await.map_err(|e| {
        format!("after SIGKILL (the socket file is left behind), the new server: {e}")
    })?;
    c.process = Some(p);
    let mut pdk = SimpleRequest::new("example.com");
    let after = runner
        .run_event(&entity, &phase, &mut pdk)
        .await
        .map_err(|e| {
            format!(
                "after the restart, Kong's event with the old instance id did not recover: {e} \
             (Kong re-creates instances only on \"no plugin instance\" (MsgPack) or a closed \
             connection (ProtoBuf), docs/protocol.md §4.6)"
            )
        })?;
    let methods =
        |r: &crate::host::EventReport| r.calls.iter().map(|x| x.method.clone()).collect::<Vec<_>>();
    if methods(&before) != methods(&after) || after.end != before.end {
        return Err(format!(
            "after the restart the event made the calls {:?} and ended {:?}; before, {:?} and {:?}",
            methods(&after),
            after.end,
            methods(&before),
            before.end
        ));
    }
    if matches!(
        after.end,
        EventEnd::Raised { .. } | EventEnd::MethodNotFound { .. }
    ) {
        return Err(format!("the event ended with {:?}", after.end));
    }
    Ok(Outcome::Pass(format!(
        "restarted in {:.2} s; the event recovered after {} retr{}",
        took.as_secs_f64(),
        after.retries,
        if after.retries == 1 { "y" } else { "ies" }
    )))
}
