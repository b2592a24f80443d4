//! `mock-kong run`: plays scenario files through a plugin server and reports pass/fail.
//!
//! Scenarios are grouped by plugin; each group gets its own session (its own server process
//! for single-plugin servers such as go-pdk binaries), opened with that plugin listed first.
//! With a kong.conf of several pluginservers and no `--name`, each scenario goes to the server
//! whose dump registers its plugin, as Kong routes a plugin to its server.
//!
//! Exit codes: 0 every scenario passed (or was skipped); 1 a scenario failed or could not run;
//! 2 a scenario file or config could not be used (the others still ran), or bad flags.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;

use super::{setup, Failure, JsonArg, ServerArgs};
use crate::pdk::KongVersion;
use crate::scenario::runner::{not_for_server, Outcome};
use crate::scenario::{self, report, RunOptions, Scenario, ScenarioResult};
use crate::session::Session;
use crate::target::{self, TargetSpec};

const EXAMPLES: &str = "\
Examples:
  mock-kong run scenarios/kong-tests/ --peer go
  mock-kong run tests/ --start-cmd 'python3 greet.py -p {prefix} --socket-name greet.socket' \\
      --query-cmd 'python3 greet.py --dump'
  mock-kong run tests/ --kong-conf kong.conf -k 'header and not slow' -x -v
  mock-kong run tests/ --peer js --junit report.xml --json report.json

Exit codes: 0 all passed, 1 a scenario failed, 2 a scenario file or config is unusable (the others
still run) or bad flags, 130/143 interrupted (the reports hold what finished).";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RunArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The Kong version to emulate (2.3 – 3.9): pre-3.9 multi-plugin dumps, 2.x StepError,
    /// ProtoBuf event errors answering 500 from 3.8, ...
    #[arg(long, value_name = "X.Y", default_value = "3.9")]
    pub kong_version: KongVersion,
    /// Run only scenarios whose name, file or plugin matches EXPR: words matched as
    /// case-insensitive substrings, combined with `and`, `or`, `not` (as pytest's -k).
    #[arg(short = 'k', value_name = "EXPR")]
    pub keyword: Option<String>,
    /// Stop at the first scenario that does not pass.
    #[arg(short = 'x', long)]
    pub fail_fast: bool,
    /// Show the PDK transcript of passing scenarios too.
    #[arg(short, long)]
    pub verbose: bool,
    /// Send every scenario's config exactly as written: no schema defaults, no schema check.
    #[arg(long)]
    pub raw_config: bool,
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
fn server_key(spec: &TargetSpec) -> String {
    match spec {
        TargetSpec::Reference { .. } => "reference".into(),
        TargetSpec::Peer { name, .. } => name.clone(),
        TargetSpec::KongConf { name: n, .. } => n.clone().unwrap_or_else(|| "kong-conf".into()),
        TargetSpec::Commands { name: n, .. } => n.clone().unwrap_or_else(|| "custom".into()),
    }
}

/// `-k EXPR`: `and`/`or`/`not` over case-insensitive substrings (`or` binds loosest).
pub fn keyword_matches(expr: &str, haystack: &str) -> bool {
    let hay = haystack.to_lowercase();
    let words: Vec<String> = expr.split_whitespace().map(str::to_lowercase).collect();
    words.split(|w| w == "or").any(|alternative| {
        let mut negate = false;
        let mut all = true;
        let mut any_term = false;
        for w in alternative {
            match w.as_str() {
                "and" => {}
                "not" => negate = !negate,
                term => {
                    any_term = true;
                    all &= hay.contains(term) != negate;
                    negate = false;
                }
            }
        }
        any_term && all
    })
}

/// The pluginserver of a kong.conf serving each plugin (Kong 3.9: the first plugin of each
/// server's dump), and what was found, for messages.
async fn kong_conf_routes(
    path: Option<&std::path::Path>,
    opts: &crate::session::SessionOptions,
) -> anyhow::Result<(BTreeMap<String, String>, Vec<String>)> {
    let conf = crate::config::load(path)?;
    let mut routes = BTreeMap::new();
    let mut found = Vec::new();
    for def in &conf.servers {
        match crate::dump::query(&def.query_cmd, opts.dump_timeout).await {
            Ok(out) => {
                let plugin = out.dump.plugin().name.clone();
                found.push(format!("{} serves `{plugin}`", def.name));
                routes.entry(plugin).or_insert_with(|| def.name.clone());
            }
            Err(e) => found.push(format!("{}: {e}", def.name)),
        }
    }
    Ok((routes, found))
}

pub(crate) async fn run(a: RunArgs) -> Result<i32, Failure> {
    if a.server.plugin.is_some() {
        return Err(setup(anyhow!(
            "--plugin is not used by `run`: each scenario names its plugin (`plugin = \"...\"`); \
             to run some scenarios only, use -k"
        )));
    }
    let loaded = scenario::load_each(&a.paths).map_err(setup)?;
    let opts = a.server.session_options(false).map_err(setup)?;
    let spec = a.server.named_spec().await?;
    let placement = a.server.placement();
    let mut results: Vec<Option<ScenarioResult>> = Vec::new();
    let mut scenarios: Vec<(usize, Scenario)> = Vec::new();
    for item in loaded {
        match item {
            Ok(s) => {
                let hay = format!(
                    "{} {} {}",
                    s.display_name(),
                    s.file
                        .as_ref()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default(),
                    s.plugin
                );
                if a.keyword
                    .as_deref()
                    .is_some_and(|k| !keyword_matches(k, &hay))
                {
                    continue;
                }
                scenarios.push((results.len(), s));
                results.push(None);
            }
            Err(e) => {
                let path = e.path().map(PathBuf::from).unwrap_or_default();
                results.push(Some(ScenarioResult::invalid_file(
                    &path,
                    e.to_string(),
                    a.kong_version,
                )));
            }
        }
    }
    if results.is_empty() {
        return Err(setup(anyhow!(
            "no scenario matches -k {:?}",
            a.keyword.as_deref().unwrap_or("")
        )));
    }
    let expected_protocol = match &spec {
        TargetSpec::Reference { protocol, .. } => Some(*protocol),
        _ => None,
    };
    // A kong.conf without --name: each plugin to the server that registers it.
    let routes = match &spec {
        TargetSpec::KongConf { path, name: None } => Some(
            kong_conf_routes(path.as_deref(), &opts)
                .await
                .map_err(setup)?,
        ),
        _ => None,
    };
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (_, s)) in scenarios.iter().enumerate() {
        groups.entry(s.plugin.clone()).or_default().push(i);
    }
    let invalid_before_run = results.iter().flatten().any(|r| r.failed());
    let mut stop = a.fail_fast && invalid_before_run;
    for (plugin, idx) in groups {
        if crate::edge::stopping() || stop {
            break;
        }
        let mut group_spec = spec.clone();
        if let (Some((routes, found)), TargetSpec::KongConf { name, .. }) =
            (&routes, &mut group_spec)
        {
            match routes.get(&plugin) {
                Some(server) => *name = Some(server.clone()),
                None => {
                    let why = format!(
                        "no pluginserver of the kong.conf serves plugin `{plugin}` ({})",
                        found.join("; ")
                    );
                    for i in idx {
                        let (slot, s) = &scenarios[i];
                        results[*slot] = Some(ScenarioResult::not_run(
                            s,
                            "kong-conf",
                            crate::Protocol::MsgPack,
                            a.kong_version,
                            Outcome::Error,
                            why.clone(),
                        ));
                    }
                    stop = a.fail_fast;
                    continue;
                }
            }
        }
        let key = server_key(&group_spec);
        let run_opts = RunOptions {
            kong_version: a.kong_version,
            server_key: Some(key.clone()),
            raw_config: a.raw_config,
        };
        // Skip without starting a server when `servers` rules every scenario out.
        let mut pending = Vec::new();
        for i in idx {
            let (slot, s) = &scenarios[i];
            match not_for_server(s, &key) {
                Some(reason) => {
                    results[*slot] = Some(ScenarioResult::not_run(
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
            let target = target::resolve(&group_spec, &placement, &plugin)?;
            for w in &target.warnings {
                crate::errln!("warning: {w}");
            }
            Ok::<_, anyhow::Error>(Session::open(target, &opts).await?)
        }
        .await
        .with_context(|| format!("cannot open a session for plugin `{plugin}`"));
        match opened {
            Ok(session) => {
                for i in pending {
                    let (slot, s) = &scenarios[i];
                    // After SIGINT/SIGTERM the reports hold the scenarios finished so far.
                    let r = tokio::select! {
                        biased;
                        () = crate::edge::until_stopped() => break,
                        r = s.run(&session, &run_opts) => r,
                    };
                    let failed = r.failed();
                    results[*slot] = Some(r);
                    if failed && a.fail_fast {
                        stop = true;
                        break;
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
                    let (slot, s) = &scenarios[i];
                    results[*slot] = Some(ScenarioResult::not_run(
                        s,
                        &key,
                        crate::Protocol::MsgPack,
                        a.kong_version,
                        outcome,
                        format!("{e:#}"),
                    ));
                }
                stop = a.fail_fast && outcome == Outcome::Error;
            }
        }
    }
    let not_run = results.iter().filter(|r| r.is_none()).count();
    let results: Vec<ScenarioResult> = results.into_iter().flatten().collect();
    if let Some(path) = &a.junit {
        std::fs::write(path, report::junit(&results))
            .with_context(|| format!("writing {}", path.display()))
            .map_err(setup)?;
    }
    if !a.json.to_stdout() {
        let mut text = String::new();
        for r in &results {
            text.push_str(&report::human_line(r, a.verbose));
        }
        if let Some(signal) = crate::edge::interrupted() {
            text.push_str(&format!(
                "interrupted by {}: {not_run} scenario(s) not run\n",
                crate::edge::signal_name(signal)
            ));
        } else if stop && not_run > 0 {
            text.push_str(&format!(
                "stopped at the first failure (--fail-fast): {not_run} scenario(s) not run\n"
            ));
        }
        text.push_str(&report::summary(&results));
        crate::out!("{text}")?;
    }
    // What an interrupted run finished, marked as such (as `conform --json` and loadgen do).
    let mut json = report::json(&results);
    json["interrupted"] = crate::edge::interrupted().is_some().into();
    json["not_run"] = not_run.into();
    a.json.emit(&json).map_err(setup)?;
    let (_, failed, _) = report::counts(&results);
    Ok(if results.iter().any(|r| r.outcome == Outcome::Invalid) {
        2
    } else if failed > 0 {
        1
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::keyword_matches;

    #[test]
    fn keyword_expressions_read_like_pytests() {
        let hay = "hello: header from config scenarios/hello.toml hello";
        assert!(keyword_matches("hello", hay));
        assert!(keyword_matches("HEADER", hay));
        assert!(!keyword_matches("exit", hay));
        assert!(keyword_matches("exit or header", hay));
        assert!(keyword_matches("header and not slow", hay));
        assert!(!keyword_matches("header and not config", hay));
        assert!(keyword_matches("not exit", hay));
        assert!(!keyword_matches("", hay));
    }
}
