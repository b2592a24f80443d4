//! `mock-kong call`: one event per phase through the server, with the PDK exchange printed.

use std::io::Write;

use anyhow::{anyhow, Context};
use clap::Args;

use super::{session_failure, setup, Failure, JsonArg, ServerArgs};
use crate::host::{EventEnd, PluginEntity};
use crate::pdk::SimpleRequest;
use crate::session::{kong_order, Session};
use crate::target;

#[derive(Debug, Args)]
pub struct CallArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The plugin's config record as JSON.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub config: String,
    /// Phase to run (repeatable; default: the phases the plugin declares, in Kong's order).
    #[arg(long = "phase", value_name = "PHASE")]
    pub phases: Vec<String>,
    /// Request header NAME:VALUE (repeatable; default host:example.com).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Show every frame on the wire.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

fn parse_headers(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    if raw.is_empty() {
        return Ok(vec![("host".into(), "example.com".into())]);
    }
    raw.iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| anyhow!("--header expects NAME:VALUE, got {h:?}"))?;
            Ok((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

pub(crate) async fn run(a: CallArgs) -> Result<i32, Failure> {
    let spec = a.server.spec().map_err(setup)?;
    let placement = a.server.placement();
    let headers = parse_headers(&a.headers).map_err(setup)?;
    let config: serde_json::Value = serde_json::from_str(&a.config)
        .with_context(|| format!("--config is not valid JSON: {}", a.config))
        .map_err(setup)?;
    let serde_json::Value::Object(config) = config else {
        return Err(setup(anyhow!(
            "--config must be a JSON object, got {}",
            a.config
        )));
    };
    let target = target::resolve(&spec, &placement, &a.server.plugin).map_err(setup)?;
    let opts = a
        .server
        .session_options(a.verbose || a.json.json.is_some())
        .map_err(setup)?;
    let session = Session::open(target, &opts)
        .await
        .map_err(session_failure)?;
    let result = drive(&session, &a, headers, config).await;
    let stopped = session.close().await;
    let (json, ok) = result.map_err(Failure::server)?;
    let mut json = json;
    json["server_stop"] = serde_json::json!(stopped);
    a.json.emit(&json).map_err(setup)?;
    Ok(if ok { 0 } else { 1 })
}

async fn drive(
    session: &Session,
    a: &CallArgs,
    headers: Vec<(String, String)>,
    config: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<(serde_json::Value, bool)> {
    let dump_plugin = session.dump.plugin();
    let plugin_name = if session
        .dump
        .plugins
        .iter()
        .any(|p| p.name == a.server.plugin)
    {
        a.server.plugin.clone()
    } else {
        dump_plugin.name.clone()
    };
    let info = session
        .dump
        .plugins
        .iter()
        .find(|p| p.name == plugin_name)
        .unwrap_or(dump_plugin);
    let phases = if a.phases.is_empty() {
        kong_order(&info.phases)
    } else {
        a.phases.clone()
    };
    let entity = PluginEntity::new(&plugin_name, config);
    let mut pdk = SimpleRequest {
        request_headers: headers,
        ..Default::default()
    };
    let report = session.run_request(&entity, &phases, &mut pdk).await;
    let frames = session.client().trace().take();
    let ok = report.errors.is_empty()
        && report
            .events
            .iter()
            .all(|e| matches!(e.end, EventEnd::Done | EventEnd::Exit { .. }));

    if !a.json.to_stdout() {
        let mut out = std::io::stdout().lock();
        let pid = session.process.as_ref().and_then(|p| p.pid());
        let _ = writeln!(
            out,
            "server:  {}{}{}",
            session.target.label,
            if session.target.label.contains(session.protocol().as_str()) {
                String::new()
            } else {
                format!(" ({})", session.protocol())
            },
            pid.map(|p| format!(", pid {p}")).unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "plugin:  {} {} phases [{}]",
            info.name,
            info.version,
            info.phases.join(", ")
        );
        for ev in &report.events {
            let _ = writeln!(
                out,
                "\nphase {}: instance {}{}{}",
                ev.phase,
                ev.instance_id,
                ev.event_id
                    .map(|e| format!(", event {e}"))
                    .unwrap_or_default(),
                if ev.retries > 0 {
                    format!(", retried {}x", ev.retries)
                } else {
                    String::new()
                }
            );
            for c in &ev.calls {
                let args: Vec<String> = c.args.iter().map(|v| format!("{v:?}")).collect();
                let answer = c
                    .answer
                    .as_ref()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_else(|| "—".into());
                let _ = writeln!(
                    out,
                    "  {}({}) -> {}   [{}, conn {}]{}",
                    c.method,
                    args.join(", "),
                    answer,
                    c.reply_kind,
                    c.conn,
                    c.note
                        .as_ref()
                        .map(|n| format!("  ({n})"))
                        .unwrap_or_default()
                );
            }
            let end = match &ev.end {
                EventEnd::Done => "done".to_owned(),
                EventEnd::Exit { status, body, .. } => format!(
                    "exit {status} {}",
                    body.as_ref()
                        .map(|b| format!("{:?}", String::from_utf8_lossy(b)))
                        .unwrap_or_default()
                ),
                EventEnd::Raised { method, error } => format!("FAILED: {method} raised: {error}"),
                EventEnd::MethodNotFound { method } => {
                    format!("FAILED: method \"{method}\" not found")
                }
            };
            let _ = writeln!(out, "  {end} ({} PDK call(s))", ev.calls.len());
            for f in &ev.findings {
                let _ = writeln!(out, "  note: {f}");
            }
        }
        for (phase, err) in &report.errors {
            let _ = writeln!(out, "\nphase {phase}: FAILED: {err}");
        }
        if !report.skipped.is_empty() {
            let _ = writeln!(out, "\nskipped after exit: {}", report.skipped.join(", "));
        }
        if !pdk.response_headers.is_empty() {
            let _ = writeln!(out, "\nresponse headers:");
            for (k, v) in &pdk.response_headers {
                let _ = writeln!(out, "  {k}: {v}");
            }
        }
        if a.verbose {
            let _ = writeln!(out, "\nframes:");
            for f in &frames {
                let arrow = match f.dir {
                    crate::host::Direction::Send => ">>",
                    crate::host::Direction::Recv => "<<",
                };
                let _ = writeln!(
                    out,
                    "  conn {} {arrow} {}\n      {}",
                    f.conn,
                    f.summary,
                    f.bytes_hex()
                );
            }
        }
    }
    let json = serde_json::json!({
        "server": {
            "label": session.target.label,
            "protocol": session.protocol(),
            "socket": session.target.socket,
            "pid": session.process.as_ref().and_then(|p| p.pid()),
        },
        "dump": session.dump,
        "plugin": plugin_name,
        "phases": phases,
        "events": report.events,
        "errors": report.errors,
        "skipped": report.skipped,
        "response_headers": pdk.response_headers,
        "log": pdk.log,
        "frames": frames,
        "ok": ok,
    });
    Ok((json, ok))
}
