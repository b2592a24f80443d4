//! `pdk/*` (kit tier, for PDK maintainers): how the kit behaves around the plugin's code, with
//! the project's fixture plugins (`plugins/README.md`): handler exceptions, and values that
//! must survive the trip between Kong and the plugin.

use serde_json::json;

use super::{verdict, Res};
use crate::conform::runner::Ctx;
use crate::conform::wire::{secs, End};
use crate::conform::{CheckFuture, Outcome};
use crate::host::HostError;
use crate::pdk::SimpleRequest;
use crate::{Protocol, Value};

pub fn raise_before(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move { verdict(raise(c, "raise-before").await) })
}

pub fn raise_after(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move { verdict(raise(c, "raise-after").await) })
}

/// A handler that raises: the event must end promptly, not as a success, and the server must
/// keep serving (docs/protocol.md §4.7: Kong logs an error response; §5.6: a closed connection).
async fn raise(c: &mut Ctx, mode: &str) -> Res {
    let e = c.entity(json!({ "mode": mode }));
    let id = c.start(&e).await?;
    let mut pdk = SimpleRequest::new("example.com");
    let note = match c.host.event(id, "access", &mut pdk).await {
        Ok(run) => match (&run.end, c.protocol) {
            (End::Error(e), Protocol::MsgPack) => format!("error response {e:?}"),
            (End::Closed, Protocol::ProtoBuf) => "connection closed without a reply".into(),
            (End::Done, _) => {
                return Err(format!(
                    "the handler raised ({mode}) but the event was reported as finished (\"ret\"), \
                     so Kong treats the failed plugin as a success"
                ))
            }
            (other, _) => format!("the event {other}"),
        },
        Err(HostError::ReadTimeout { after, .. } | HostError::Deadline { after, .. }) => {
            return Err(format!(
                "the handler raised ({mode}) and the event was never answered (no answer after \
                 {} s): Kong's request hangs until its 60 s socket timeout",
                secs(after)
            ))
        }
        Err(HostError::Closed { what }) => format!("the connection was closed while {what}"),
        Err(e) => return Err(format!("the handler raised ({mode}): {e}")),
    };
    c.serves()
        .await
        .map_err(|m| format!("after the handler raised ({mode}, {note}): {m}"))?;
    Ok(Outcome::Pass(format!("{note}; later events were served")))
}

pub fn strings_round_trip(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let message = "héllo \"wörld\" / ☕";
                let host = format!("exämple-{}.com/", "ü".repeat(150));
                let e = c.entity(json!({ "message": message }));
                let id = c.start(&e).await?;
                let mut pdk = SimpleRequest::new(&host);
                let run = c.event(id, "access", &mut pdk).await?;
                if run.end != End::Done {
                    return Err(format!("the event {}", run.end));
                }
                let want = format!("{message} {host}");
                match pdk.response_header("x-hello") {
                    Some(got) if got == want => Ok(Outcome::Pass(format!(
                    "{} bytes of UTF-8 (escaped slashes and quotes in the config) came back intact",
                    want.len()
                ))),
                    got => Err(format!("x-hello is {got:?}, expected {want:?}")),
                }
            }
            .await,
        )
    })
}

pub fn nil_round_trip(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let e = c.entity(json!({ "message": "hi" }));
                let id = c.start(&e).await?;
                // No host header: kong.request.get_header("host") returns nil.
                let mut pdk = SimpleRequest::default();
                let run = c.event(id, "access", &mut pdk).await?;
                if run.end != End::Done {
                    return Err(format!("after a nil result the event {}", run.end));
                }
                match pdk.response_header("x-hello") {
                    Some("hi ") => Ok(Outcome::Pass(
                        "a nil result reached the plugin as nil (rendered \"\")".into(),
                    )),
                    got => Err(format!(
                    "x-hello is {got:?}, expected \"hi \": the plugin did not receive nil as nil"
                )),
                }
            }
            .await,
        )
    })
}

pub fn exit_args(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let body = "tea ☕ / pot";
                let e = c.entity(json!({"status": 418, "message": body}));
                let id = c.start(&e).await?;
                let mut pdk = SimpleRequest::new("example.com");
                let run = c.event(id, "access", &mut pdk).await?;
                let Some(cb) = run
                    .callbacks
                    .last()
                    .filter(|cb| cb.method == "kong.response.exit")
                else {
                    return Err(format!(
                        "no kong.response.exit callback: {:?}",
                        run.methods()
                    ));
                };
                let status = cb.args.first();
                if !matches!(status, Some(Value::Int(418))) {
                    return Err(format!(
                        "the status arrived as {status:?}, expected the integer 418"
                    ));
                }
                let got_body = cb.args.get(1).and_then(Value::as_bytes);
                if got_body != Some(body.as_bytes()) {
                    return Err(format!(
                        "the body arrived as {:?}, expected {body:?}",
                        got_body.map(String::from_utf8_lossy)
                    ));
                }
                let header = cb.args.get(2).and_then(|h| h.get("x-exit")).cloned();
                // A Lua string either way: `str` or `bin` (Kong decodes both alike).
                let ok = match &header {
                    Some(Value::Array(a)) => a.len() == 1 && a[0].as_bytes() == Some(b"1"),
                    Some(v) => v.as_bytes() == Some(b"1"),
                    None => false,
                };
                if !ok {
                    return Err(format!(
                        "the x-exit header arrived as {header:?}, expected \"1\" or [\"1\"]"
                    ));
                }
                Ok(Outcome::Pass(
                    "status 418, the UTF-8 body and the headers arrived intact".into(),
                ))
            }
            .await,
        )
    })
}
