//! `mock-kong run`: plays scenario files through a plugin server and reports pass/fail.
//!
//! Scenarios are grouped by plugin; each group gets its own session (its own server process
//! for single-plugin servers such as go-pdk binaries), opened with that plugin listed first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{setup, Failure, JsonArg, ServerArgs};
use crate::pdk::KongVersion;
use crate::scenario::runner::{not_for_server, Outcome};
use crate::scenario::{self, report, RunOptions, Scenario, ScenarioResult};
use crate::session::Session;
use crate::target::{self, TargetSpec};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The Kong version to emulate (2.3 – 3.9): pre-3.9 multi-plugin dumps, 2.x StepError,
    /// ProtoBuf event errors answering 500 from 3.8, ...
    #[arg(long, value_name = "X.Y", default_value = "3.9")]
    pub kong_version: KongVersion,
    /// Write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    #[command(flatten)]
    pub json: JsonArg,
    /// Scenario files (.toml) or directories (searched recursively).
    #[arg(value_name = "FILE_OR_DIR", required = true)]
    pub paths: Vec<PathBuf>,
}

/// The key `servers = [...]` in a scenario is matched against.
fn server_key(spec: &TargetSpec, name: Option<&str>) -> String {
    match spec {
        TargetSpec::Reference { .. } => "reference".into(),
        TargetSpec::Peer { name, .. } => name.clone(),
        TargetSpec::KongConf { name: n, .. } => n.clone().unwrap_or_else(|| "kong-conf".into()),
        TargetSpec::Commands { name: n, .. } => name.map(str::to_owned).unwrap_or(n.clone()),
    }
}

pub(crate) async fn run(a: RunArgs) -> Result<i32, Failure> {
    let scenarios = scenario::load(&a.paths).map_err(setup)?;
    let spec = a.server.spec().map_err(setup)?;
    let placement = a.server.placement();
    let opts = a.server.session_options(false).map_err(setup)?;
    let key = server_key(&spec, a.server.name.as_deref());
    let run_opts = RunOptions {
        kong_version: a.kong_version,
        server_key: Some(key.clone()),
    };
    let expected_protocol = match &spec {
        TargetSpec::Reference { protocol, .. } => Some(*protocol),
        _ => None,
    };
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in scenarios.iter().enumerate() {
        groups.entry(s.plugin.clone()).or_default().push(i);
    }
    let mut results: Vec<Option<ScenarioResult>> = vec![None; scenarios.len()];
    for (plugin, idx) in groups {
        if crate::edge::stopping() {
            break;
        }
        // Skip without starting a server when `servers` rules every scenario out.
        let mut pending = Vec::new();
        for i in idx {
            let s = &scenarios[i];
            let skip = not_for_server(s, &key);
            match skip {
                Some(reason) => {
                    results[i] = Some(ScenarioResult::not_run(
                        s,
                        &key,
                        expected_protocol.unwrap_or(crate::Protocol::MsgPack),
                        a.kong_version,
                        Outcome::Skipped,
                        reason,
                    ))
                }
                None => pending.push(i),
            }
        }
        if pending.is_empty() {
            continue;
        }
        let opened = async {
            let target = target::resolve(&spec, &placement, &plugin)?;
            Ok::<_, anyhow::Error>(Session::open(target, &opts).await?)
        }
        .await
        .with_context(|| format!("cannot open a session for plugin `{plugin}`"));
        match opened {
            Ok(session) => {
                for i in pending {
                    // After SIGINT/SIGTERM the reports hold the scenarios finished so far.
                    tokio::select! {
                        biased;
                        () = crate::edge::until_stopped() => break,
                        r = scenarios[i].run(&session, &run_opts) => results[i] = Some(r),
                    }
                }
                session.close().await;
            }
            Err(e) => {
                // A peer that cannot host the plugin (peers.toml `plugins`): not applicable.
                let outcome = match e.downcast_ref::<target::TargetError>() {
                    Some(target::TargetError::PluginNotHosted { .. }) => Outcome::Skipped,
                    _ => Outcome::Error,
                };
                for i in pending {
                    results[i] = Some(not_opened(&scenarios[i], &key, a.kong_version, &e, outcome));
                }
            }
        }
    }
    let results: Vec<ScenarioResult> = results.into_iter().flatten().collect();
    if let Some(path) = &a.junit {
        std::fs::write(path, report::junit(&results))
            .with_context(|| format!("writing {}", path.display()))
            .map_err(setup)?;
    }
    if !a.json.to_stdout() {
        crate::out!("{}", report::human(&results))?;
    }
    a.json.emit(&report::json(&results)).map_err(setup)?;
    let (_, failed, _) = report::counts(&results);
    Ok(if failed > 0 { 1 } else { 0 })
}

fn not_opened(
    s: &Scenario,
    key: &str,
    v: KongVersion,
    e: &anyhow::Error,
    outcome: Outcome,
) -> ScenarioResult {
    ScenarioResult::not_run(
        s,
        key,
        crate::Protocol::MsgPack,
        v,
        outcome,
        format!("{e:#}"),
    )
}
