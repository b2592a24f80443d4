//! `event/*`: HandleEvent and the callback loop (docs/protocol.md §4.4, §5.3).

use std::time::{Duration, Instant};

use serde_json::json;

use super::verdict;
use crate::conform::kong_pdk;
use crate::conform::runner::Ctx;
use crate::conform::wire::{answer_from, secs, End, EventRun, Refusal, Reply, StepConns};
use crate::conform::{join_all, CheckFuture, Outcome};
use crate::pdk::{Pdk, SimpleRequest};
use crate::protobuf::pdk_table;
use crate::{Protocol, Value};

/// Starts an instance of the driven plugin with its plain config.
async fn instance(c: &mut Ctx) -> Result<i64, String> {
    let e = c.entity(c.plain_config());
    c.start(&e).await
}

/// The event of `phase` on instance `id`, its callbacks answered for a plain request to
/// example.com; an error names the phase.
async fn example_event(c: &Ctx, id: i64, phase: &str) -> Result<EventRun, String> {
    let mut pdk = SimpleRequest::new("example.com");
    c.event(id, phase, &mut pdk)
        .await
        .map_err(|e| format!("phase {phase}: {e}"))
}

pub fn phases(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let id = instance(c).await?;
                let phases = crate::pdk::phase::kong_order(&c.plugin.phases);
                if phases.is_empty() {
                    return Err("the dump declares no phase".into());
                }
                let mut notes = Vec::new();
                for phase in &phases {
                    let run = example_event(c, id, phase).await?;
                    match run.end {
                        End::Done | End::Exit => {
                            notes.push(format!("{phase}: {} call(s)", run.callbacks.len()))
                        }
                        other => return Err(format!("the declared phase {phase} {other}")),
                    }
                }
                Ok(Outcome::Pass(notes.join(", ")))
            }
            .await,
        )
    })
}

/// A dotted lower-case PDK name (`kong.request.get_header`).
fn pdk_name(m: &str) -> bool {
    m.starts_with("kong.")
        && m.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

pub fn callbacks_well_formed(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let id = instance(c).await?;
                let mut seen = Vec::new();
                for phase in crate::pdk::phase::kong_order(&c.plugin.phases) {
                    let run = example_event(c, id, &phase).await?;
                    for cb in &run.callbacks {
                        let known = match c.protocol {
                            Protocol::ProtoBuf => pdk_table::lookup(&cb.method).is_some(),
                            Protocol::MsgPack => pdk_name(&cb.method),
                        };
                        if !known {
                            return Err(format!(
                                "phase {phase}: the callback names {:?}, which Kong cannot find \
                             (MsgPack: \"could not find pdk method\" and a nil answer; ProtoBuf: \
                             HTTP 500)",
                                cb.method
                            ));
                        }
                        // Args in another shape than an array is legal in Kong; the runner
                        // notes it at info level (the drivers report it as a quirk).
                        seen.push(cb.method.clone());
                    }
                    if let End::MethodNotFound(m) = run.end {
                        return Err(format!("phase {phase}: {m:?} is not in Kong's PDK table"));
                    }
                }
                seen.dedup();
                Ok(Outcome::Pass(if seen.is_empty() {
                    "no callbacks".into()
                } else {
                    seen.join(", ")
                }))
            }
            .await,
        )
    })
}

pub fn known_methods(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let version = c.opts.kong_version;
                let id = instance(c).await?;
                let mut seen: Vec<String> = Vec::new();
                let mut unknown = Vec::new();
                for phase in crate::pdk::phase::kong_order(&c.plugin.phases) {
                    let run = example_event(c, id, &phase).await?;
                    for cb in &run.callbacks {
                        if seen.contains(&cb.method) {
                            continue;
                        }
                        seen.push(cb.method.clone());
                        // Kong resolves the name by its \w+ segments (rpc/util.lua).
                        let name = kong_pdk::resolved(&cb.method);
                        if name != cb.method {
                            c.note(format!(
                                "{:?} is resolved by Kong as {name} (it walks the name's word \
                                 segments); the kits write the dotted name",
                                cb.method
                            ));
                        }
                        let module = kong_pdk::module(&name);
                        if !kong_pdk::is_pdk_module(module) {
                            c.note(format!(
                                "{name} is not a PDK function ({module} is not a PDK module): \
                                 Kong walks it from its kong global; not checked"
                            ));
                            continue;
                        }
                        if !kong_pdk::exists(&name, version) {
                            let later = match kong_pdk::since(&name) {
                                Some(v) if v > version => format!(" (it exists from Kong {v})"),
                                Some(_) => " (it existed in earlier releases)".into(),
                                None => String::new(),
                            };
                            unknown.push(format!("phase {phase}: {name}{later}"));
                        }
                    }
                }
                if !unknown.is_empty() {
                    return Err(format!(
                        "Kong {version}'s PDK has no {}: {}",
                        unknown.join(", "),
                        match c.protocol {
                            Protocol::MsgPack => {
                                "Kong logs \"could not find pdk method\" and answers nil, so \
                                 the plugin's call does nothing"
                            }
                            Protocol::ProtoBuf => "Kong fails the request (HTTP 500)",
                        }
                    ));
                }
                Ok(Outcome::Pass(if seen.is_empty() {
                    "no callbacks".into()
                } else {
                    format!("functions of Kong {version}'s PDK: {}", seen.join(", "))
                }))
            }
            .await,
        )
    })
}

/// The phase an undeclared-phase event is sent for: the first of these the plugin lacks.
const UNDECLARED_CANDIDATES: [&str; 5] = ["log", "rewrite", "response", "certificate", "access"];

pub fn undeclared_phase(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let Some(phase) = UNDECLARED_CANDIDATES
                    .into_iter()
                    .find(|p| !c.plugin.phases.iter().any(|d| d == p))
                else {
                    return Ok(Outcome::Skip(
                        "the plugin declares every phase an event could be sent for".into(),
                    ));
                };
                let id = instance(c).await?;
                let mut pdk = SimpleRequest::new("example.com");
                let note = match c.event(id, phase, &mut pdk).await {
                    Ok(run) => match run.end.clone() {
                        End::Error(e) => format!("an error response {e:?}"),
                        End::Closed => "the connection was closed".into(),
                        End::Done if run.callbacks.is_empty() => "an empty event".into(),
                        other => {
                            return Err(format!(
                                "the event for the undeclared phase {phase} {other} after {:?}",
                                run.methods()
                            ))
                        }
                    },
                    Err(e) => {
                        return Err(format!(
                            "an event for the undeclared phase {phase} got no prompt answer: {e}"
                        ))
                    }
                };
                c.serves()
                    .await
                    .map_err(|m| format!("after an event for the undeclared phase {phase}: {m}"))?;
                Ok(Outcome::Pass(format!(
                    "phase {phase} (not declared): {note}; the server kept serving"
                )))
            }
            .await,
        )
    })
}

pub fn head_of_line(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move { verdict(head_of_line_inner(c).await) })
}

/// One event waits `slow` for its first PDK answer; meanwhile StartInstance, another event and
/// CloseInstance go on other connections and must all finish before the slow answer is sent.
async fn head_of_line_inner(c: &mut Ctx) -> super::Res {
    use std::sync::atomic::{AtomicBool, Ordering};
    let slow = c.opts.io_timeout + Duration::from_secs(1);
    let phase = c.phase();
    let a = instance(c).await?;
    let b = instance(c).await?;
    let fresh = c.entity(c.plain_config());
    let paused = AtomicBool::new(false);
    let host = c.host.clone();
    let slow_event = async {
        let mut w = host.connect().await.map_err(|e| e.to_string())?;
        let mut pdk = SimpleRequest::new("example.com");
        let run = host
            .drive_paused(
                &mut w,
                a,
                &phase,
                slow,
                &paused,
                &mut Ctx::kong_answer(&mut pdk),
            )
            .await
            .map_err(|e| format!("the slow event: {e}"))?;
        Ok::<_, String>((run, Instant::now()))
    };
    let others = async {
        // Started once the slow event waits for its answer (or gave up without a callback).
        let t0 = Instant::now();
        while !paused.load(Ordering::SeqCst) && t0.elapsed() < slow {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !paused.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let mut done = Vec::new();
        let id = host
            .start(&fresh.name, &fresh.kong_config_json())
            .await
            .map_err(|r| format!("StartInstance: {r}"))?;
        done.push(("StartInstance", t0.elapsed()));
        let mut pdk = SimpleRequest::new("example.com");
        let run = host
            .event(b, &phase, &mut pdk)
            .await
            .map_err(|e| format!("an event of another instance: {e}"))?;
        if !matches!(run.end, End::Done | End::Exit) {
            return Err(format!("an event of another instance {}", run.end));
        }
        done.push(("an event", t0.elapsed()));
        match host.close(id).await {
            Ok(()) | Err(Refusal::Rejected(_)) => {}
            Err(e) => return Err(format!("CloseInstance: {e}")),
        }
        done.push(("CloseInstance", t0.elapsed()));
        Ok(Some((done, Instant::now())))
    };
    let (slow_run, others) = tokio::join!(slow_event, others);
    let others = others.map_err(|m| {
        format!(
            "while an event waited {} s for a PDK answer, {m}: the server serves one event at a \
             time (head-of-line blocking)",
            secs(slow)
        )
    })?;
    let (run, resumed) = slow_run?;
    let Some((done, finished)) = others else {
        return Ok(Outcome::Skip(format!(
            "the plugin makes no PDK call in {phase}, so no event waits for an answer"
        )));
    };
    if !matches!(run.end, End::Done | End::Exit) {
        return Err(format!("the slow event {}", run.end));
    }
    if finished > resumed {
        return Err(format!(
            "StartInstance, an event and CloseInstance on other connections finished only after \
             the slow event's answer ({} s later): the server holds every request while one \
             event waits (head-of-line blocking)",
            secs(slow)
        ));
    }
    let took: Vec<String> = done
        .iter()
        .map(|(what, t)| format!("{what} after {:.0} ms", t.as_secs_f64() * 1000.0))
        .collect();
    Ok(Outcome::Pass(format!(
        "while one event waited {} s for a PDK answer: {}",
        secs(slow),
        took.join(", ")
    )))
}

/// Every Step method Kong 3.x may send (docs/protocol.md §4.3, §4.4).
const STEP_VARIANTS: [&str; 7] = [
    "plugin.Step",
    "plugin.StepMultiMap",
    "plugin.StepCredential",
    "plugin.StepConsumer",
    "plugin.StepRoute",
    "plugin.StepService",
    "plugin.StepMemoryStats",
];

pub fn step_variants(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let id = instance(c).await?;
                let phase = c.phase();
                for variant in STEP_VARIANTS {
                    let mut pdk = SimpleRequest::new("example.com");
                    let mut first = true;
                    let run = c
                        .drive(id, &phase, StepConns::Same, &mut |m, a| {
                            let ans = answer_from(pdk.call(&phase, m, a));
                            match (first, ans) {
                                (true, Reply::Value(v)) => {
                                    first = false;
                                    Reply::Variant(variant, v)
                                }
                                (_, other) => other,
                            }
                        })
                        .await?;
                    if run.callbacks.is_empty() {
                        return Ok(Outcome::Skip(format!(
                            "the plugin makes no PDK call in {phase}, so no Step can be sent"
                        )));
                    }
                    if !matches!(run.end, End::Done | End::Exit) {
                        return Err(format!(
                            "answering {} with {variant}: the event {}",
                            run.callbacks[0].method, run.end
                        ));
                    }
                }
                Ok(Outcome::Pass(STEP_VARIANTS.join(", ")))
            }
            .await,
        )
    })
}

pub fn nil_answer(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let id = instance(c).await?;
                let phase = c.phase();
                let mut pdk = SimpleRequest::new("example.com");
                let mut first = true;
                let run = c
                    .drive(id, &phase, StepConns::Same, &mut |m, a| {
                        let ans = answer_from(pdk.call(&phase, m, a));
                        match (first, ans) {
                            (true, Reply::Value(_)) => {
                                first = false;
                                Reply::Value(Value::Nil)
                            }
                            (_, other) => other,
                        }
                    })
                    .await?;
                let Some(cb) = run.callbacks.first() else {
                    return Ok(Outcome::Skip(format!(
                        "the plugin makes no PDK call in {phase}"
                    )));
                };
                match run.end {
                    End::Done | End::Exit => Ok(Outcome::Pass(format!(
                        "{} answered with nil ({})",
                        cb.method,
                        match c.protocol {
                            Protocol::MsgPack => "a Step without Data",
                            Protocol::ProtoBuf => "an empty frame",
                        }
                    ))),
                    other => Err(format!(
                        "after a nil answer to {}, the event {other}",
                        cb.method
                    )),
                }
            }
            .await,
        )
    })
}

pub fn steps_on_other_connections(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let id = instance(c).await?;
                let phase = c.phase();
                let mut pdk = SimpleRequest::new("example.com");
                let same = c
                    .drive(id, &phase, StepConns::Same, &mut Ctx::kong_answer(&mut pdk))
                    .await?;
                let mut pdk = SimpleRequest::new("example.com");
                let fresh = c
                    .drive(
                        id,
                        &phase,
                        StepConns::Fresh,
                        &mut Ctx::kong_answer(&mut pdk),
                    )
                    .await
                    .map_err(|e| format!("with each Step on a new connection: {e}"))?;
                if same.callbacks.is_empty() {
                    return Ok(Outcome::Skip(format!(
                        "the plugin makes no PDK call in {phase}"
                    )));
                }
                if fresh.end != same.end || fresh.methods() != same.methods() {
                    return Err(format!(
                        "with each Step on a new connection the event {} after {:?}; on one \
                     connection it {} after {:?}",
                        fresh.end,
                        fresh.methods(),
                        same.end,
                        same.methods()
                    ));
                }
                Ok(Outcome::Pass(format!(
                    "{} Step(s), each on its own connection",
                    fresh.callbacks.len()
                )))
            }
            .await,
        )
    })
}

/// Events in flight at once, each on its own connection and instance.
const CONCURRENT: usize = 32;

pub fn concurrent(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let mut ids = Vec::new();
                for i in 0..CONCURRENT {
                    let e = c.entity(json!({ "message": format!("m{i}") }));
                    ids.push(c.start(&e).await?);
                }
                let futs: Vec<_> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        let host = c.host.clone();
                        let id = *id;
                        async move {
                            let mut pdk = SimpleRequest::new(&format!("h{i}.example.com"));
                            let run = host.event(id, "access", &mut pdk).await;
                            (i, run, pdk)
                        }
                    })
                    .collect();
                let mut wrong = Vec::new();
                for (i, run, pdk) in join_all(futs).await {
                    let run = run.map_err(|e| format!("event {i}: {e}"))?;
                    let want = format!("m{i} h{i}.example.com");
                    let got = pdk.response_header("x-hello").map(str::to_owned);
                    if run.end != End::Done || got.as_deref() != Some(want.as_str()) {
                        wrong.push(format!(
                            "event {i}: {} with x-hello {got:?}, expected {want:?}",
                            run.end
                        ));
                    }
                }
                if wrong.is_empty() {
                    Ok(Outcome::Pass(format!(
                        "{CONCURRENT} events in flight, each echoed its own config and host"
                    )))
                } else {
                    Err(format!(
                    "{} of {CONCURRENT} concurrent events got another event's values or failed: {}",
                    wrong.len(),
                    wrong.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                ))
                }
            }
            .await,
        )
    })
}

pub fn exit_terminal(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(async {
            let e = c.entity(json!({}));
            let id = c.start(&e).await?;
            for round in 1..=3 {
                let mut pdk = SimpleRequest::new("example.com");
                let run = c.event(id, "access", &mut pdk).await.map_err(|e| {
                    format!("event {round} (after {} exit(s) Kong never answered): {e}", round - 1)
                })?;
                if run.end != End::Exit
                    || run.callbacks.last().map(|c| c.method.as_str()) != Some("kong.response.exit")
                {
                    return Err(format!(
                        "event {round} {} after {:?}; expected kong.response.exit",
                        run.end,
                        run.methods()
                    ));
                }
            }
            Ok(Outcome::Pass(
                "three events ended with kong.response.exit, never answered; the server kept serving"
                    .into(),
            ))
        }
        .await)
    })
}

pub fn pb_sequence(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(async {
            let e = c.entity(c.plain_config());
            let mut w = c.host.connect().await.map_err(|e| e.to_string())?;
            c.host.set_sequence(2);
            let id = c
                .host
                .start_instance(&mut w, &e.name, &e.kong_config_json())
                .await
                .map_err(|r| format!("StartInstance with sequence 2: {r}"))?;
            // Kong's counter is an int64 that keeps growing (docs/protocol.md §5.2).
            let big = (1i64 << 40) + 3;
            c.host.set_sequence(big);
            let mut pdk = SimpleRequest::new("example.com");
            let run = c
                .host
                .drive(&mut w, id, &c.phase(), StepConns::Same, &mut Ctx::kong_answer(&mut pdk))
                .await
                .map_err(|e| format!("HandleEvent with sequence {big}: {e}"))?;
            if run.end == End::Exit {
                return Ok(Outcome::Pass(
                    "sequences echoed (the event ended with exit, so no RpcReturn)".into(),
                ));
            }
            if run.end != End::Done {
                return Err(format!("HandleEvent with sequence {big}: the event {}", run.end));
            }
            c.host.set_sequence((1i64 << 33) + 7);
            c.host
                .close_instance(&mut w, id)
                .await
                .map_err(|r| format!("CloseInstance with sequence 2^33+7 on the same connection: {r}"))?;
            Ok(Outcome::Pass(
                "sequences 2, 2^40+3 and 2^33+7 echoed; the event ended with an empty frame and RpcReturn"
                    .into(),
            ))
        }
        .await)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdk_names() {
        assert!(pdk_name("kong.request.get_header"));
        assert!(pdk_name("kong.log.err"));
        assert!(!pdk_name("kong.request.getHeader"));
        assert!(!pdk_name("request.get_header"));
        assert!(!pdk_name("kong..x"));
    }
}
