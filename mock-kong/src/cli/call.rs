//! `mock-kong call`: one request through the server, one event per phase, with the PDK exchange
//! printed. The request is the same emulated Kong request `run` plays ([`KongRequest`]
//! through the scenario runner), so every PDK method answers as in a scenario, and
//! `--save-scenario` writes the exchange as a scenario that passes.
//!
//! [`KongRequest`]: crate::pdk::KongRequest

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::Value as J;

use super::{session_failure, setup, Failure, JsonArg, ServerArgs};
use crate::host::{Direction, EventEnd, EventReport};
use crate::pdk::KongVersion;
use crate::scenario::model::{CallDetail, CallExpect, Expect, RequestSpec};
use crate::scenario::runner::{Observed, Outcome};
use crate::scenario::{RunOptions, Scenario, ScenarioResult};
use crate::session::Session;

const EXAMPLES: &str = "\
Examples:
  mock-kong call                                          # the reference server's hello plugin
  mock-kong call --start-cmd 'python3 greet.py -p {prefix} --socket-name greet.socket' \\
      --query-cmd 'python3 greet.py --dump' --config '{\"tag\":\"hi\"}'
  mock-kong call --peer go --plugin bench --config '{\"calls\":3}' -v   # every frame, hex + decoded
  mock-kong call --method POST --path /orders --query 'a=1&b' --body '{}' --header content-type:application/json
  mock-kong call --kong-conf kong.conf --name greet --save-scenario tests/greet.toml
  mock-kong call --peer python --json transcript.json";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct CallArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The plugin's config record as JSON; schema defaults are filled in and the record is
    /// checked against the plugin's schema, as Kong does.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub config: String,
    /// Send --config exactly as given: no schema defaults, no schema check.
    #[arg(long)]
    pub raw_config: bool,
    /// Phase to run (repeatable; default: the phases the plugin declares, in Kong's order).
    #[arg(long = "phase", value_name = "PHASE")]
    pub phases: Vec<String>,
    /// The request's HTTP method.
    #[arg(long, value_name = "METHOD", default_value = "GET")]
    pub method: String,
    /// The request's path.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub path: String,
    /// The request's query string (without `?`).
    #[arg(long, value_name = "QUERY")]
    pub query: Option<String>,
    /// The request's body.
    #[arg(long, value_name = "BODY")]
    pub body: Option<String>,
    /// Request header NAME:VALUE (repeatable; `host` defaults to example.com).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// The Kong version to emulate (2.3 – 3.9).
    #[arg(long, value_name = "X.Y", default_value = "3.9")]
    pub kong_version: KongVersion,
    /// Show every frame on the wire.
    #[arg(short, long)]
    pub verbose: bool,
    /// Write the request and what happened as a scenario file (TOML) that `mock-kong run`
    /// passes: the calls made, the response status and the headers the plugin set.
    #[arg(long, value_name = "FILE")]
    pub save_scenario: Option<PathBuf>,
    #[command(flatten)]
    pub json: JsonArg,
}

fn parse_headers(raw: &[String]) -> anyhow::Result<serde_json::Map<String, J>> {
    let mut out = serde_json::Map::new();
    for h in raw {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("--header expects NAME:VALUE, got {h:?}"))?;
        let name = k.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(anyhow!("--header expects NAME:VALUE, got {h:?} (no name)"));
        }
        let value = J::String(v.trim().to_owned());
        // A repeated header becomes a list, as in a scenario.
        match out.get_mut(&name) {
            Some(J::Array(list)) => list.push(value),
            Some(first) => *first = J::Array(vec![first.clone(), value]),
            None => {
                out.insert(name, value);
            }
        }
    }
    Ok(out)
}

/// The scenario the flags describe (`plugin` filled in once the dump is known).
fn scenario_of(a: &CallArgs) -> Result<Scenario, Failure> {
    let config: J = serde_json::from_str(&a.config)
        .with_context(|| format!("--config is not valid JSON: {}", a.config))
        .map_err(setup)?;
    let J::Object(config) = config else {
        return Err(setup(anyhow!(
            "--config must be a JSON object, got {}",
            a.config
        )));
    };
    let mut headers = parse_headers(&a.headers).map_err(setup)?;
    if !headers.contains_key("host") {
        headers.insert("host".into(), J::String("example.com".into()));
    }
    Ok(Scenario {
        config,
        raw_config: a.raw_config,
        phases: (!a.phases.is_empty()).then(|| a.phases.clone()),
        request: RequestSpec {
            method: Some(a.method.clone()),
            path: Some(a.path.clone()),
            query: a.query.clone(),
            body: a.body.clone(),
            headers,
            ..RequestSpec::default()
        },
        ..Scenario::default()
    })
}

pub(crate) async fn run(a: CallArgs) -> Result<i32, Failure> {
    let mut scenario = scenario_of(&a)?;
    let opts = a
        .server
        .session_options(a.verbose || a.json.json.is_some())
        .map_err(setup)?;
    let (spec, target) = a.server.target().await?;
    let session = Session::open(target, &opts)
        .await
        .map_err(session_failure)?;
    let checked = a.server.check_plugin(&spec, &session.dump);
    let result = match checked {
        Ok(()) => {
            // The reference server and peers list the plugin asked for first; otherwise the
            // dump decides (Kong 3.9 registers its first plugin).
            scenario.plugin = session.dump.plugin().name.clone();
            let run_opts = RunOptions {
                kong_version: a.kong_version,
                server_key: None,
                raw_config: a.raw_config,
            };
            Ok(scenario.run(&session, &run_opts).await)
        }
        Err(f) => Err(f),
    };
    let frames = session.client().trace().take();
    let report = result.map(|r| {
        let human = render(&session, &r, &frames, a.verbose);
        let json = call_json(&session, &r, &frames);
        (r, human, json)
    });
    let stopped = session.close().await;
    let (r, human, mut json) = report?;
    match r.outcome {
        // A config the schema rejects, a phase the plugin does not declare: usage errors.
        Outcome::Invalid | Outcome::Error => {
            return Err(setup(anyhow!(
                "{}",
                r.reason
                    .as_deref()
                    .unwrap_or("the request could not be played")
            )))
        }
        _ => {}
    }
    let ok = !r.failed();
    if !a.json.to_stdout() {
        crate::out!("{human}")?;
    }
    json["ok"] = J::Bool(ok);
    json["server_stop"] = serde_json::json!(stopped);
    a.json.emit(&json).map_err(setup)?;
    if let Some(path) = &a.save_scenario {
        let text = saved_scenario(&scenario, &r)?;
        std::fs::write(path, text)
            .with_context(|| format!("writing {}", path.display()))
            .map_err(setup)?;
        crate::errln!(
            "wrote {} (check it with: mock-kong run {} and the same server options)",
            path.display(),
            path.display()
        );
    }
    Ok(if ok { 0 } else { 1 })
}

/// The human transcript: server, plugin, each event with its PDK calls, the response.
fn render(
    session: &Session,
    r: &ScenarioResult,
    frames: &[crate::host::WireFrame],
    verbose: bool,
) -> String {
    let mut out = String::new();
    let info = session.dump.plugin();
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
    for ev in &r.events {
        render_event(&mut out, ev);
    }
    if let Some(o) = &r.observed {
        if !o.skipped.is_empty() {
            let _ = writeln!(out, "\nskipped after exit: {}", o.skipped.join(", "));
        }
        render_response(&mut out, o);
    }
    if verbose {
        let _ = writeln!(out, "\nframes:");
        for f in frames {
            let arrow = match f.dir {
                Direction::Send => ">>",
                Direction::Recv => "<<",
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
    out
}

fn render_event(out: &mut String, ev: &EventReport) {
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
        EventEnd::MethodNotFound { method } => format!("FAILED: method \"{method}\" not found"),
        EventEnd::Failed { error } => format!("FAILED: {error}"),
    };
    let _ = writeln!(out, "  {end} ({} PDK call(s))", ev.calls.len());
    for f in &ev.findings {
        let _ = writeln!(out, "  note: {f}");
    }
}

fn render_response(out: &mut String, o: &Observed) {
    let _ = writeln!(out, "\nresponse: {}", o.status);
    for (k, v) in &o.headers.0 {
        let _ = writeln!(out, "  {k}: {v}");
    }
    if !o.body.is_empty() {
        let _ = writeln!(out, "  body: {:?}", String::from_utf8_lossy(&o.body));
    }
}

fn call_json(session: &Session, r: &ScenarioResult, frames: &[crate::host::WireFrame]) -> J {
    let o = r.observed.as_ref();
    serde_json::json!({
        "server": {
            "label": session.target.label,
            "protocol": session.protocol(),
            "socket": session.target.socket,
            "pid": session.process.as_ref().and_then(|p| p.pid()),
        },
        "dump": session.dump,
        "plugin": r.plugin,
        "phases": o.map(|o| o.phases.clone()).unwrap_or_default(),
        "events": r.events,
        "errors": o.map(|o| o.errors.clone()).unwrap_or_default(),
        "skipped": o.map(|o| o.skipped.clone()).unwrap_or_default(),
        "response": o.map(|o| serde_json::json!({
            "status": o.status,
            "headers": o.headers,
            "body": String::from_utf8_lossy(&o.body),
            "exited": o.exited,
        })),
        "log": o.map(|o| serde_json::to_value(&o.log).unwrap_or_default()),
        "frames": frames,
    })
}

/// JSON null cannot be written in TOML: leading arguments up to the first null are kept.
fn toml_safe_args(args: &[crate::Value]) -> Vec<J> {
    args.iter()
        .map(crate::Value::to_json)
        .take_while(|v| !contains_null(v))
        .collect()
}

fn contains_null(v: &J) -> bool {
    match v {
        J::Null => true,
        J::Array(a) => a.iter().any(contains_null),
        J::Object(o) => o.values().any(contains_null),
        _ => false,
    }
}

/// The call as a scenario that passes: the request as given, and as expectations the exact
/// PDK calls (method, phase, the arguments that can be written in TOML), whether the request
/// exited, the response status, and every response header.
fn saved_scenario(given: &Scenario, r: &ScenarioResult) -> Result<String, Failure> {
    let o = r.observed.as_ref().ok_or_else(|| {
        setup(anyhow!(
            "nothing was played, so there is no scenario to save"
        ))
    })?;
    let calls = o
        .calls
        .iter()
        .map(|c| {
            let args = toml_safe_args(&c.args);
            CallExpect::Full(CallDetail {
                method: c.method.clone(),
                phase: Some(c.phase.clone()),
                args: (!args.is_empty()).then_some(args),
                returns: None,
                returns_nil: false,
            })
        })
        .collect();
    let mut headers = serde_json::Map::new();
    for (k, v) in &o.headers.0 {
        let all = o.headers.get_all(k);
        if !headers.contains_key(k) {
            headers.insert(
                k.clone(),
                if all.len() > 1 {
                    J::Array(all.iter().map(|x| J::String((*x).to_owned())).collect())
                } else {
                    J::String(v.clone())
                },
            );
        }
    }
    let body = String::from_utf8_lossy(&o.body).into_owned();
    let mut s = given.clone();
    s.name = Some(format!("{}: recorded by mock-kong call", r.plugin));
    s.plugin.clone_from(&r.plugin);
    s.expect = Expect {
        exit: Some(o.exited),
        status: Some(o.status),
        headers,
        body: o.exited.then_some(body),
        calls: Some(calls),
        raised: (!o.raised.is_empty()).then(|| ".".to_owned()),
        errors: (!o.errors.is_empty()).then(|| ".".to_owned()),
        ..Expect::default()
    };
    let text = toml::to_string(&s)
        .map_err(|e| setup(anyhow!("the scenario cannot be written as TOML: {e}")))?;
    Ok(format!(
        "# Recorded by `mock-kong call`; docs/scenarios.md describes the format.\n{text}"
    ))
}
