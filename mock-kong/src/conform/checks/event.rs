//! `event/*`: HandleEvent and the callback loop (docs/protocol.md §4.4, §5.3).

use serde_json::json;

use super::verdict;
use crate::conform::runner::Ctx;
use crate::conform::wire::{answer_from, End, Reply, StepConns};
use crate::conform::{join_all, CheckFuture, Outcome};
use crate::pdk::{Pdk, SimpleRequest};
use crate::protobuf::pdk_table;
use crate::{Protocol, Value};

/// A config that makes the driven fixture do its normal thing.
fn plain_config(c: &Ctx) -> serde_json::Value {
    if c.plugin.name == "faults" {
        json!({"mode": "none"})
    } else {
        json!({})
    }
}

/// Starts an instance of the driven plugin with its plain config.
async fn instance(c: &mut Ctx) -> Result<i64, String> {
    let e = c.entity(plain_config(c));
    c.start(&e).await
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
                    let mut pdk = SimpleRequest::new("example.com");
                    let run = c
                        .event(id, phase, &mut pdk)
                        .await
                        .map_err(|e| format!("phase {phase}: {e}"))?;
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
                    let mut pdk = SimpleRequest::new("example.com");
                    let run = c
                        .event(id, &phase, &mut pdk)
                        .await
                        .map_err(|e| format!("phase {phase}: {e}"))?;
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
            let e = c.entity(plain_config(c));
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
