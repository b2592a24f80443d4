//! `lifecycle/*`: plugin instances as Kong creates, replaces and closes them (docs/protocol.md §4.3, §4.6,
//! §5.2).

use std::time::Duration;

use serde_json::json;

use super::{verdict, Res};
use crate::conform::runner::Ctx;
use crate::conform::wire::{End, Refusal};
use crate::conform::{CheckFuture, Outcome};
use crate::host::HostError;
use crate::pdk::SimpleRequest;
use crate::Protocol;

/// Runs the default phase of instance `id`; checks it ends, and (for the hello fixture) that
/// `x-hello` carries `message`.
async fn run_and_expect(c: &Ctx, id: i64, message: Option<&str>, what: &str) -> Result<(), String> {
    let mut pdk = SimpleRequest::new("example.com");
    let run = c
        .event(id, &c.phase(), &mut pdk)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if !matches!(run.end, End::Done | End::Exit) {
        return Err(format!("{what}: the event {}", run.end));
    }
    if let (Some(m), true) = (message, c.plugin.name == "hello") {
        let want = format!("{m} example.com");
        let got = pdk.response_header("x-hello");
        if got != Some(want.as_str()) {
            return Err(format!(
                "{what}: x-hello is {got:?}, expected {want:?} (the instance does not use its own config)"
            ));
        }
    }
    Ok(())
}

/// A config for the driven plugin: hello gets `message`, the faults fixture mode `none`.
fn config(c: &Ctx, message: &str) -> serde_json::Value {
    match c.plugin.name.as_str() {
        "hello" => json!({ "message": message }),
        "faults" => json!({"mode": "none"}),
        _ => json!({}),
    }
}

pub fn start_instance(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                // What Kong really sends: schema defaults, nulls for unset fields, scoping ids, the
                // instance name and the internal keys, with every `/` escaped (docs/protocol.md §4.3).
                let mut e = c.entity(json!({}));
                e.config = c.kong_defaults();
                e.route_id = Some("6b1c3e2a-1d4f-4c2b-9a55-2a2e0d1c0f01".into());
                e.service_id = Some("0f3a2b1c-5d6e-4f70-8a9b-0c1d2e3f4a5b".into());
                e.instance_name = Some("conformance/instance".into());
                let json = e.kong_config_json();
                let id = c.start(&e).await?;
                Ok(Outcome::Pass(format!(
                    "instance {id} from a {}-byte Kong config",
                    json.len()
                )))
            }
            .await,
        )
    })
}

pub fn distinct_instances(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let a = c.entity(config(c, "alpha"));
                let b = c.entity(config(c, "beta"));
                let ia = c.start(&a).await?;
                let ib = c.start(&b).await?;
                if ia == ib {
                    return Err(format!("both instances got the id {ia}"));
                }
                run_and_expect(c, ia, Some("alpha"), "the first instance").await?;
                run_and_expect(c, ib, Some("beta"), "the second instance").await?;
                Ok(Outcome::Pass(format!("ids {ia} and {ib}")))
            }
            .await,
        )
    })
}

pub fn config_change(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let mut e = c.entity(config(c, "alpha"));
                let old = c.start(&e).await?;
                run_and_expect(c, old, Some("alpha"), "before the change").await?;
                // A plugins-iterator rebuild: new __seq__, StartInstance(new), then CloseInstance(old)
                // (docs/protocol.md §4.6, §10.8).
                e.rebuild();
                e.config = c.kong_config(config(c, "gamma"));
                let new = c.start(&e).await?;
                let _ = c.host.close(old).await;
                run_and_expect(
                    c,
                    new,
                    Some("gamma"),
                    "after StartInstance(new), CloseInstance(old)",
                )
                .await?;
                Ok(Outcome::Pass(format!("instance {old} replaced by {new}")))
            }
            .await,
        )
    })
}

pub fn unknown_instance(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move { verdict(unknown_instance_inner(c).await) })
}

async fn unknown_instance_inner(c: &mut Ctx) -> Res {
    let bogus = 987_654_321;
    let phase = c.phase();
    let mut w = c.host.connect().await.map_err(|e| e.to_string())?;
    let mut pdk = SimpleRequest::new("example.com");
    let mut answer = Ctx::kong_answer(&mut pdk);
    let run = c
        .host
        .drive(
            &mut w,
            bogus,
            &phase,
            crate::conform::wire::StepConns::Same,
            &mut answer,
        )
        .await;
    let note = match (c.protocol, run) {
        (Protocol::MsgPack, Ok(r)) => match r.end {
            End::Error(e) if e.to_lowercase().contains("no plugin instance") => {
                format!("error {e:?}")
            }
            End::Error(e) => {
                return Err(format!(
                    "the error {e:?} does not contain \"no plugin instance\", so Kong would not \
                     re-create its instances and every later request fails"
                ))
            }
            other => return Err(format!("the event on an unknown instance {other}")),
        },
        (Protocol::ProtoBuf, Ok(r)) => match r.end {
            End::Closed => "connection closed without a reply".into(),
            other => {
                return Err(format!(
                    "the event on an unknown instance {other}; Kong needs the connection closed \
                     to re-create its instances (docs/protocol.md §5.2)"
                ))
            }
        },
        (_, Err(e)) => return Err(format!("HandleEvent on an unknown instance: {e}")),
    };
    c.serves()
        .await
        .map_err(|e| format!("after an unknown instance: {e}"))?;
    Ok(Outcome::Pass(format!("{note}; the server kept serving")))
}

pub fn close_keeps_others(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let a = c.entity(config(c, "alpha"));
                let b = c.entity(config(c, "beta"));
                let ia = c.start(&a).await?;
                let ib = c.start(&b).await?;
                match c.host.close(ia).await {
                    Ok(()) | Err(Refusal::Rejected(_)) => {}
                    Err(e) => return Err(format!("CloseInstance({ia}): {e}")),
                }
                run_and_expect(c, ib, Some("beta"), "the instance left open").await?;
                Ok(Outcome::Pass(format!("closed {ia}, {ib} still works")))
            }
            .await,
        )
    })
}

pub fn idle_instances(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let a = c.entity(config(c, "alpha"));
                let b = c.entity(config(c, "beta"));
                let x = c.entity(config(c, "gamma"));
                let ia = c.start(&a).await?;
                let ib = c.start(&b).await?;
                let ix = c.start(&x).await?;
                run_and_expect(c, ia, Some("alpha"), "first use").await?;
                let _ = c.host.close(ix).await;
                let idle: Duration = c.opts.idle;
                tokio::time::sleep(idle).await;
                run_and_expect(c, ia, Some("alpha"), "after the idle time").await?;
                run_and_expect(
                    c,
                    ib,
                    Some("beta"),
                    "the never-used instance after the idle time",
                )
                .await?;
                Ok(Outcome::Pass(format!(
                    "instances {ia} and {ib} served after {} s idle (another one closed)",
                    idle.as_secs()
                )))
            }
            .await,
        )
    })
}

pub fn first_event(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let e = c.entity(config(c, "hello"));
                let id = c.start(&e).await?;
                let phase = c.phase();
                let mut pdk = SimpleRequest::new("example.com");
                let run = c
                    .host
                    .event(id, &phase, &mut pdk)
                    .await
                    .map_err(|e| match e {
                        HostError::ReadTimeout { .. } | HostError::Deadline { .. } => format!(
                            "{e}: the event never ended (Kong waits for its end until its 60 s \
                         socket timeout, then fails the request)"
                        ),
                        other => other.to_string(),
                    })?;
                match run.end {
                    End::Done => Ok(Outcome::Pass(format!(
                        "phase {phase}: {} call(s), then the end Kong waits for",
                        run.callbacks.len()
                    ))),
                    End::Exit => Ok(Outcome::Pass(format!(
                        "phase {phase}: ended with kong.response.exit after {} call(s)",
                        run.callbacks.len()
                    ))),
                    other => Err(format!("phase {phase}: the event {other}")),
                }
            }
            .await,
        )
    })
}

pub fn close_after_idle(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let a = c.entity(config(c, "alpha"));
                let ia = c.start(&a).await?;
                run_and_expect(c, ia, Some("alpha"), "first use").await?;
                let idle: Duration = c.opts.idle;
                tokio::time::sleep(idle).await;
                // A config change elsewhere: a young instance replaced and closed.
                let b = c.entity(config(c, "beta"));
                let ib = c.start(&b).await?;
                match c.host.close(ib).await {
                    Ok(()) | Err(Refusal::Rejected(_)) => {}
                    Err(e) => return Err(format!("CloseInstance({ib}): {e}")),
                }
                run_and_expect(
                    c,
                    ia,
                    Some("alpha"),
                    &format!(
                        "the instance idle for {} s, right after CloseInstance({ib}) of another",
                        idle.as_secs()
                    ),
                )
                .await?;
                Ok(Outcome::Pass(format!(
                    "instance {ia} served after {} s idle and a CloseInstance of instance {ib}",
                    idle.as_secs()
                )))
            }
            .await,
        )
    })
}

pub fn get_status(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let e = c.entity(config(c, "hello"));
                let id = c.start(&e).await?;
                let name = c.plugin.name.clone();
                let listed = c
                    .host
                    .instance_listed(id, &name)
                    .await
                    .map_err(|m| format!("asking for the status of instance {id}: {m}"))?;
                match listed {
                    Ok(how) => Ok(Outcome::Pass(how)),
                    Err(missing) => Err(missing),
                }
            }
            .await,
        )
    })
}
