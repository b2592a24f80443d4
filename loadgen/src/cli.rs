//! The `loadgen` command line: `run` (one point), `sweep` (the curves, files in a directory),
//! `floor` (raw ping-pong) and the hidden `reference-server`.
//!
//! Exit codes: 0 every point measured without errors; 1 a server failed (errors counted,
//! points not measurable, or a server could not start); 2 usage or setup error.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mock_kong::cli::{CompletionsArgs, JsonArg, ProtocolArg, ReferenceArgs};
use mock_kong::host::Timeouts;
use mock_kong::process::LogSink;
use mock_kong::session::SessionOptions;
use mock_kong::target::{self, Placement, TargetSpec};
use mock_kong::Protocol;

use crate::driver::{CustomLoad, Mode};
use crate::floor;
use crate::results::Results;
use crate::sweep::{self, ChaosPlan, Multicore, Progress, SweepPlan, TargetDef};
use mock_kong::scenario::model::RequestSpec;

const EXAMPLES: &str = "\
Examples:
  loadgen run --reference --calls 10 --concurrency 4 --duration 5s
  loadgen run --peer go --calls 30 --rate 2000 --hgrm        # open loop, full percentile spectrum
  loadgen sweep --peer go --peer python --peer js --reference --protocol msgpack,protobuf \\
      --calls 0,1,2,3,5,8,10,15,20,30 --concurrency 1,4 --duration 5s --trials 3 --out reports/sweep
  loadgen floor --protocol msgpack,protobuf --duration 3s --json
  loadgen ab reference reference+slow-pdk --calls 0,10        # paired A/B in one run (exit 1: regression)
  loadgen ab go go --baseline-start-cmd './old/go-bench' --baseline-query-cmd './old/go-bench -dump' \\
      --current-start-cmd './go-bench' --current-query-cmd './go-bench -dump'
  loadgen gate --baseline reports/baselines/reference-debug.json --current out/ --counters-only

Exit codes: 0 ok, 1 a plugin server failed (errors counted or points not measured), 2 usage or setup error.";

/// The version line: which Kong releases' host side is driven.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (drives plugin servers as the host of Kong Gateway 3.9 does; mock-kong's host loop)"
);

/// RPS and latency of Kong external plugin servers against PDK calls per request.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version = VERSION, about, after_help = EXAMPLES)]
pub struct Cli {
    /// Threads of loadgen's async runtime (1: a current-thread runtime, like one nginx worker).
    #[arg(long, global = true, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure one point (calls, concurrency, mode) against each server.
    Run(RunArgs),
    /// Sweep calls × concurrency × modes over every server; write results, CSV, plots, summary.
    Sweep(SweepArgs),
    /// Raw Unix-socket ping-pong with the message sizes of one PDK round trip.
    Floor(FloorArgs),
    /// Redraw the plots, CSV and summary of a results.json (into its directory by default).
    Plot(PlotArgs),
    /// Paired A/B: two servers or builds measured in one run, trials interleaved (exit 0 ok,
    /// 1 regression, 2 cannot judge).
    Ab(AbArgs),
    /// Regression gate: compare a run with a baseline (exit 0 ok, 1 regression, 2 cannot judge).
    Gate(crate::gate::cli::GateArgs),
    /// Save a sweep's results as a named baseline (reports/baselines/NAME.json).
    Baseline(crate::gate::cli::BaselineArgs),
    /// Print a shell completion script (bash, zsh, fish).
    Completions(CompletionsArgs),
    /// The built-in Rust reference plugin server (started by loadgen itself).
    #[command(hide = true)]
    ReferenceServer(ReferenceArgs),
}

/// Which servers to measure. Repeatable; with none, the reference server.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Servers")]
pub struct TargetArgs {
    /// Measure the built-in reference server (once per --protocol).
    #[arg(long)]
    pub reference: bool,
    /// Protocols of the reference server (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "msgpack")]
    pub protocol: Vec<ProtocolArg>,
    /// Switch a fault on in the reference server (repeatable), e.g. `slow-pdk` (+20 µs of CPU
    /// per PDK call) to check that the regression gate notices.
    #[arg(long = "reference-fault", value_name = "NAME")]
    pub reference_faults: Vec<String>,
    /// A peer from the peers registry (repeatable, or comma-separated).
    #[arg(long = "peer", value_name = "NAME", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The peers registry (default: peers.toml in this directory or a parent).
    #[arg(long, value_name = "FILE")]
    pub peers_file: Option<PathBuf>,
    /// Command that starts a server of your own (run through /bin/sh with `exec`); `{socket}`,
    /// `{prefix}` and `{name}` are replaced by the socket path loadgen waits for, its directory
    /// and the pluginserver name.
    #[arg(long, value_name = "CMD", requires = "query_cmd")]
    pub start_cmd: Option<String>,
    /// Command that prints its JSON dump (its first plugin is measured: `bench`, or --plugin).
    #[arg(long, value_name = "CMD")]
    pub query_cmd: Option<String>,
    /// The pluginserver name of that server, also its name in the results (default: the
    /// dump's plugin name); the default socket is `<prefix>/<name>.socket`.
    #[arg(long)]
    pub name: Option<String>,
    /// That server's socket; a relative path lies in the prefix.
    #[arg(long, value_name = "PATH", requires = "query_cmd")]
    pub socket: Option<PathBuf>,
    /// That server's prefix directory (default: a private temporary directory).
    #[arg(long, value_name = "DIR", requires = "query_cmd")]
    pub prefix: Option<PathBuf>,
    /// Timeout of every connect, read and write, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// How long a started server may take to listen on its socket, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = mock_kong::cli::DEFAULT_SOCKET_TIMEOUT)]
    pub socket_timeout: f64,
    /// Show the servers' output lines (hidden by default: they would mix with the progress bar).
    #[arg(long)]
    pub server_log: bool,
}

impl TargetArgs {
    /// The targets in the order given: peers, then the command pair, then the reference server.
    pub fn targets(&self) -> Vec<TargetDef> {
        let mut out = Vec::new();
        let registry = self
            .peers_file
            .clone()
            .unwrap_or_else(target::default_registry);
        for p in &self.peers {
            out.push(TargetDef {
                label: p.clone(),
                spec: TargetSpec::Peer {
                    name: p.clone(),
                    registry: registry.clone(),
                },
                placement: Placement::default(),
            });
        }
        if let Some(q) = &self.query_cmd {
            out.push(TargetDef {
                label: self.name.clone().unwrap_or_else(|| "custom".into()),
                spec: TargetSpec::Commands {
                    name: self.name.clone(),
                    start_cmd: self.start_cmd.clone(),
                    query_cmd: q.clone(),
                },
                placement: Placement {
                    socket: self.socket.clone(),
                    prefix: self.prefix.clone(),
                },
            });
        }
        if self.reference || out.is_empty() {
            let mut seen = Vec::new();
            for &p in &self.protocol {
                let p: Protocol = p.into();
                if !seen.contains(&p) {
                    seen.push(p);
                    let mut t = TargetDef::reference(p, None);
                    if let TargetSpec::Reference { faults, .. } = &mut t.spec {
                        faults.clone_from(&self.reference_faults);
                    }
                    out.push(t);
                }
            }
        }
        out
    }

    /// The targets, a server of your own named after its dump when `--name` is not given
    /// (its query command runs once for that).
    pub async fn named_targets(&self) -> Result<Vec<TargetDef>, (i32, anyhow::Error)> {
        let mut out = self.targets();
        for t in &mut out {
            target::name_from_dump(&mut t.spec, &t.placement, Duration::from_secs(30))
                .await
                .map_err(|e| match e {
                    target::TargetError::Dump(d) => (1, anyhow!(d)),
                    other => (2, anyhow!(other)),
                })?;
            if let TargetSpec::Commands { name: Some(n), .. } = &t.spec {
                t.label.clone_from(n);
            }
        }
        Ok(out)
    }

    /// Session options: Kong's respawn on, server output kept quiet unless asked.
    pub fn session_options(&self) -> anyhow::Result<SessionOptions> {
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            bail!(
                "--timeout must be a positive number of seconds, got {}",
                self.timeout
            );
        }
        if !(self.socket_timeout > 0.0 && self.socket_timeout.is_finite()) {
            bail!(
                "--socket-timeout must be a positive number of seconds, got {}",
                self.socket_timeout
            );
        }
        Ok(SessionOptions {
            timeouts: Timeouts::uniform(Duration::from_secs_f64(self.timeout)),
            socket_timeout: Duration::from_secs_f64(self.socket_timeout),
            log: if self.server_log {
                LogSink::Stderr
            } else {
                LogSink::Quiet
            },
            respawn: true,
            ..SessionOptions::default()
        })
    }
}

/// What each request does: the bench plugin (default), or a plugin of your own with its config
/// and request.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Plugin and request")]
pub struct WorkloadArgs {
    /// The plugin to measure (default: bench, which makes exactly --calls PDK calls). Any other
    /// plugin runs through every phase it declares, with the emulated Kong request `mock-kong
    /// run` plays, and its PDK calls per request are read from its transcript.
    #[arg(long, value_name = "NAME")]
    pub plugin: Option<String>,
    /// The plugin's config as JSON (schema defaults filled in, checked as Kong checks it).
    #[arg(long, value_name = "JSON")]
    pub config: Option<String>,
    /// Send --config exactly as given: no schema defaults, no schema check.
    #[arg(long)]
    pub raw_config: bool,
    /// The request's HTTP method (default GET).
    #[arg(long, value_name = "METHOD")]
    pub http_method: Option<String>,
    /// The request's path (default /).
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// The request's query string (without `?`).
    #[arg(long, value_name = "QUERY")]
    pub query: Option<String>,
    /// A request header NAME:VALUE (repeatable; host defaults to example.com).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// The request's body.
    #[arg(long, value_name = "BODY")]
    pub body: Option<String>,
}

impl WorkloadArgs {
    /// `None`: the bench plugin's fast path; otherwise the plugin, its config and request.
    pub fn custom(&self, plugin: &str) -> anyhow::Result<Option<CustomLoad>> {
        let request_given = self.http_method.is_some()
            || self.path.is_some()
            || self.query.is_some()
            || !self.headers.is_empty()
            || self.body.is_some();
        if plugin == sweep::PLUGIN && self.config.is_none() && !request_given {
            return Ok(None);
        }
        let config = match &self.config {
            None => serde_json::Map::new(),
            Some(text) => match serde_json::from_str(text)
                .with_context(|| format!("--config is not valid JSON: {text}"))?
            {
                serde_json::Value::Object(m) => m,
                _ => bail!("--config must be a JSON object, got {text}"),
            },
        };
        let mut headers = serde_json::Map::new();
        for h in &self.headers {
            let (k, v) = h
                .split_once(':')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| anyhow!("--header expects NAME:VALUE, got {h:?}"))?;
            headers.insert(
                k.trim().to_ascii_lowercase(),
                serde_json::Value::String(v.trim().to_owned()),
            );
        }
        Ok(Some(CustomLoad {
            config,
            raw_config: self.raw_config,
            request: RequestSpec {
                method: self.http_method.clone(),
                path: self.path.clone(),
                query: self.query.clone(),
                body: self.body.clone(),
                headers,
                ..RequestSpec::default()
            },
        }))
    }
}

/// Before measuring a plugin of your own: its config must fit the schema of each target's
/// dump (exit 2 naming the field, as `mock-kong call`), and the dump must serve the plugin.
async fn check_custom(
    targets: &[TargetDef],
    plugin: &str,
    custom: &CustomLoad,
) -> Result<(), (i32, anyhow::Error)> {
    for t in targets {
        let Ok(resolved) = target::resolve(&t.spec, &t.placement, plugin) else {
            // Reported as the target's failure by the sweep.
            continue;
        };
        let Ok(out) = mock_kong::dump::query(&resolved.query_cmd, Duration::from_secs(30)).await
        else {
            continue;
        };
        let Some(info) = out.dump.plugins.iter().find(|p| p.name == plugin) else {
            return Err((
                2,
                anyhow!(
                    "{}: the server's dump does not list plugin `{plugin}` (it lists {}); name the plugin it serves with --plugin",
                    t.label,
                    out.dump
                        .plugins
                        .iter()
                        .map(|p| format!("`{}`", p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        custom
            .kong_config(info)
            .map_err(|e| (2, anyhow!("{}: {e}", t.label)))?;
    }
    Ok(())
}

/// How long each trial runs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Measurement")]
pub struct TimingArgs {
    /// Measurement window of each trial (e.g. 5s, 500ms, 1m).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before each window (excluded from the figures).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Trials per point (medians and spread are reported).
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
    /// Emulated Kong workers (each its own connection pool and instance cache).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub kong_workers: usize,
    /// The PDK method the bench plugin repeats.
    #[arg(long, default_value = "kong.request.get_header")]
    pub method: String,
    /// How requests reach the server: `ipc`, one event each through mock-kong's host loop; or
    /// `http`, real HTTP requests through `mock-kong proxy` (in loadgen's process, its own
    /// threads, echo upstream) on keep-alive connections, one per loop.
    #[arg(long, value_enum, default_value = "ipc")]
    pub via: crate::driver::Via,
}

#[derive(Debug, Args)]
#[command(after_help = RUN_EXAMPLES)]
pub struct RunArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// PDK calls per request of the bench plugin (default 10).
    #[arg(long)]
    pub calls: Option<u32>,
    /// Request loops (requests in flight at most).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Open loop at this many requests/s (default: closed loop).
    #[arg(long, value_name = "RPS")]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Print the full latency percentile spectrum (.hgrm format).
    #[arg(long)]
    pub hgrm: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
#[command(after_help = SWEEP_EXAMPLES)]
pub struct SweepArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// PDK calls per request of the bench plugin to measure (default 0,1,2,3,5,8,10,15,20,30).
    #[arg(long, value_delimiter = ',')]
    pub calls: Option<Vec<u32>>,
    /// Concurrencies to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub concurrency: Vec<usize>,
    /// Open-loop rate: adds open-loop points at this many requests/s.
    #[arg(long, value_name = "RPS")]
    pub rate: Option<f64>,
    /// Only open-loop points (needs --rate).
    #[arg(long, requires = "rate")]
    pub open_only: bool,
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Multicore variant: also measure with this many Kong workers (off by default; the number
    /// of CPUs is the usual choice).
    #[arg(long, value_name = "N")]
    pub multicore: Option<usize>,
    /// Call counts of the multicore variant (the docs show 30).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "30",
        requires = "multicore"
    )]
    pub multicore_calls: Vec<u32>,
    /// Run the trials in rounds over the call counts of each curve (all its points prepared at
    /// once; one trial of each per round, every other round in reverse) instead of each point's
    /// trials back to back: on a shared machine a slow spell then hits every call count alike,
    /// and the normalised curve is compared trial by trial ("paired by trial" in summary.md).
    #[arg(long)]
    pub interleave: bool,
    /// Skip the raw ping-pong floor.
    #[arg(long)]
    pub no_floor: bool,
    /// Output directory (results.json, results.csv, *.svg, *.png, summary.md).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Chaos: SIGKILL the server during point N (0-based, in sweep order); Kong-style respawn
    /// follows and the errors are counted on that point.
    #[arg(long, value_name = "N")]
    pub chaos_kill_point: Option<usize>,
    /// When to kill, after the start of that point's first window.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub chaos_kill_after: Duration,
    #[command(flatten)]
    pub json: JsonArg,
    #[command(flatten)]
    pub gate: crate::gate::cli::SweepGateArgs,
}

/// The bench plugin's call counts a sweep measures by default.
const DEFAULT_SWEEP_CALLS: [u32; 10] = [0, 1, 2, 3, 5, 8, 10, 15, 20, 30];

const RUN_EXAMPLES: &str = "\
Examples:
  loadgen run --reference --calls 10 --concurrency 4 --duration 5s
  loadgen run --peer go --calls 30 --rate 2000 --hgrm        # open loop, full percentile spectrum
  loadgen run --start-cmd 'python3 greet.py -p {prefix} --socket-name greet.socket' \\
      --query-cmd 'python3 greet.py --dump' --plugin greet --config '{\"tag\":\"hi\"}' \\
      --http-method POST --path /orders --header x-user:alice
  loadgen run --peer python --json run.json

Without a terminal (CI), each point is logged to stderr when it is done. Ctrl-C (or SIGTERM)
ends the trial in progress and writes what was measured before (marked interrupted).";

const SWEEP_EXAMPLES: &str = "\
Examples:
  loadgen sweep --peer go --peer python --calls 0,1,10,30 --concurrency 1,4 --out reports/sweep
  loadgen sweep --reference --protocol msgpack,protobuf --multicore 2 --duration 1s --trials 1 --out out/
  loadgen sweep --start-cmd './my-plugin -kong-prefix {prefix}' --query-cmd './my-plugin -dump' \\
      --plugin my-plugin --concurrency 1,2,4,8 --out out/

Ctrl-C (or SIGTERM) ends the trial in progress; --out and --json then hold what was measured
before (results.json: \"interrupted\": true).";

const AB_EXAMPLES: &str = "\
Sides:
  reference[:msgpack|:protobuf][+FAULT...]   the built-in reference server (of this build, or of
                                             --baseline-exe/--current-exe), faults switched on
  NAME                                       a peer of the registry (peers.toml)
  (omitted)                                  with --baseline-start-cmd/--current-start-cmd: a
                                             server of your own; {socket} and {prefix} in the
                                             commands are replaced by the paths mock-kong uses

Examples:
  loadgen ab reference reference+slow-pdk --calls 0,10
  loadgen ab reference reference --baseline-exe old/target/debug/loadgen --markdown ab.md
  loadgen ab --baseline-start-cmd 'old/my-plugin -kong-prefix {prefix}' --baseline-query-cmd 'old/my-plugin -dump' \\
             --current-start-cmd 'new/my-plugin -kong-prefix {prefix}' --current-query-cmd 'new/my-plugin -dump'

Exit codes: 0 no regression, 1 a regression (time, counters or new errors), 2 cannot judge
(a side could not start, a point could not be measured, fewer than 6 pairs).";

/// `loadgen ab`.
#[derive(Debug, Args)]
#[command(after_help = AB_EXAMPLES)]
pub struct AbArgs {
    /// The baseline side (A): `reference[:PROTOCOL][+FAULT...]` or a peer name.
    #[arg(value_name = "BASELINE")]
    pub baseline: Option<String>,
    /// The current side (B): `reference[:PROTOCOL][+FAULT...]` or a peer name.
    #[arg(value_name = "CURRENT")]
    pub current: Option<String>,
    /// The baseline is a server of your own: the command that starts it.
    #[arg(
        long,
        value_name = "CMD",
        requires = "baseline_query_cmd",
        help_heading = "Sides"
    )]
    pub baseline_start_cmd: Option<String>,
    /// The command that prints the baseline server's dump (must list `bench` first).
    #[arg(long, value_name = "CMD", help_heading = "Sides")]
    pub baseline_query_cmd: Option<String>,
    /// The current side is a server of your own: the command that starts it.
    #[arg(
        long,
        value_name = "CMD",
        requires = "current_query_cmd",
        help_heading = "Sides"
    )]
    pub current_start_cmd: Option<String>,
    /// The command that prints the current server's dump.
    #[arg(long, value_name = "CMD", help_heading = "Sides")]
    pub current_query_cmd: Option<String>,
    /// The binary that serves `reference` on the baseline side (another build's `loadgen` or
    /// `mock-kong`; default: this one).
    #[arg(long, value_name = "PATH", help_heading = "Sides")]
    pub baseline_exe: Option<PathBuf>,
    /// The binary that serves `reference` on the current side.
    #[arg(long, value_name = "PATH", help_heading = "Sides")]
    pub current_exe: Option<PathBuf>,
    /// The peers registry (default: peers.toml in this directory or a parent).
    #[arg(long, value_name = "FILE", help_heading = "Sides")]
    pub peers_file: Option<PathBuf>,
    /// Timeout of every connect, read and write, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10.0,
        help_heading = "Sides"
    )]
    pub timeout: f64,
    /// Show the servers' output lines.
    #[arg(long, help_heading = "Sides")]
    pub server_log: bool,
    /// PDK calls per request to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,10",
        help_heading = "Measurement"
    )]
    pub calls: Vec<u32>,
    /// Concurrencies to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1",
        help_heading = "Measurement"
    )]
    pub concurrency: Vec<usize>,
    /// Open loop at this many requests/s (default: closed loop).
    #[arg(long, value_name = "RPS", help_heading = "Measurement")]
    pub rate: Option<f64>,
    /// Trials per side and point (pairs), spread over the forks.
    #[arg(long, default_value_t = 20, help_heading = "Measurement")]
    pub pairs: usize,
    /// Start both servers afresh this many times during the run: the forks are the units of
    /// the statistics (at least 6; 1: no restart, every pair a unit), so a lucky or unlucky
    /// server process does not pose as a difference of code.
    #[arg(long, default_value_t = 10, help_heading = "Measurement")]
    pub forks: usize,
    /// Measurement window of each trial.
    #[arg(long, value_name = "DUR", default_value = "200ms", value_parser = parse_duration, help_heading = "Measurement")]
    pub duration: Duration,
    /// Warm-up before each window.
    #[arg(long, value_name = "DUR", default_value = "50ms", value_parser = parse_duration, help_heading = "Measurement")]
    pub warmup: Duration,
    /// Emulated Kong workers.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        help_heading = "Measurement"
    )]
    pub kong_workers: usize,
    /// The PDK method the bench plugin repeats.
    #[arg(
        long,
        default_value = "kong.request.get_header",
        help_heading = "Measurement"
    )]
    pub method: String,
    /// A change counts only beyond this many percent (and beyond the 95 % interval).
    #[arg(long, value_name = "PCT", default_value_t = crate::gate::paired::DEFAULT_AB_THRESHOLD_PCT, help_heading = "Verdict")]
    pub max_regression: f64,
    /// Time metrics to judge: rps, p50, p90, p99, p999.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rps,p50",
        help_heading = "Verdict"
    )]
    pub metrics: Vec<String>,
    /// Judge the times only, not the machine-independent counters.
    #[arg(long, help_heading = "Verdict")]
    pub no_counters: bool,
    /// Write the markdown report (for $GITHUB_STEP_SUMMARY or a pull-request comment).
    #[arg(long, value_name = "FILE", help_heading = "Reports")]
    pub markdown: Option<PathBuf>,
    /// Write a JUnit XML report.
    #[arg(long, value_name = "FILE", help_heading = "Reports")]
    pub junit: Option<PathBuf>,
    /// Write the current side's figures in Bencher Metric Format JSON.
    #[arg(long, value_name = "FILE", help_heading = "Reports")]
    pub bmf: Option<PathBuf>,
    /// Write both sides' results (baseline.json, current.json: results.json documents) here.
    #[arg(long, value_name = "DIR", help_heading = "Reports")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub json: JsonArg,
}

const PLOT_EXAMPLES: &str = "\
Examples:
  loadgen plot reports/sweep/results.json                 # redraw next to the results
  loadgen plot out/results.json --out /tmp/plots
  loadgen plot out/results.json --concurrency 8 --out out/c8   # one concurrency of a sweep";

const FLOOR_EXAMPLES: &str = "\
Examples:
  loadgen floor                                          # both protocols' message sizes, 3 s each
  loadgen floor --protocol msgpack --duration 1s --json";

#[derive(Debug, Args)]
#[command(after_help = PLOT_EXAMPLES)]
pub struct PlotArgs {
    /// A results.json written by `loadgen sweep --out`.
    pub results: PathBuf,
    /// Output directory (default: the directory of the results file).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Draw only the points (and fits) of these concurrencies (comma-separated): a sweep of
    /// several concurrencies draws one line per server and concurrency otherwise.
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
}

#[derive(Debug, Args)]
#[command(after_help = FLOOR_EXAMPLES)]
pub struct FloorArgs {
    /// Protocols whose message sizes to use.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "msgpack,protobuf"
    )]
    pub protocol: Vec<ProtocolArg>,
    #[arg(long, value_name = "DUR", default_value = "3s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, value_name = "DUR", default_value = "500ms", value_parser = parse_duration)]
    pub warmup: Duration,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Parses `5s`, `500ms`, `2m`, `1.5s` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("expected a duration such as 5s, 500ms or 1m, got {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        "us" | "µs" => v / 1e6,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?}; use ms, s or m"
            ))
        }
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("a duration must be positive, got {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Whether stdout may be coloured (a terminal, and `NO_COLOR` unset).
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty())
}

fn paint(text: &str, code: &str) -> String {
    if colour() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// A progress bar with an ETA on a terminal; plain lines otherwise.
struct Bar(ProgressBar);

impl Bar {
    fn new(total: u64) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(ProgressBar::hidden());
        }
        let pb = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} trials, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        pb.set_style(style);
        pb.enable_steady_tick(Duration::from_millis(250));
        Bar(pb)
    }
}

impl Progress for Bar {
    fn point(&self, label: &str) {
        self.0.set_message(label.to_owned());
    }
    fn trial_done(&self) {
        self.0.inc(1);
    }
    fn note(&self, line: &str) {
        if self.0.is_hidden() {
            mock_kong::errln!("{line}");
        } else {
            self.0.println(line);
        }
    }
    /// Without a terminal (CI logs, a pipe) there is no bar: each point says when it is done,
    /// so a long run is not silent until the end.
    fn point_done(&self, label: &str, p: &crate::results::PointRecord) {
        if self.0.is_hidden() {
            mock_kong::errln!(
                "{label}: {:.0} req/s (spread {}), p50 {:.1} µs, p99 {:.1} µs, errors {}",
                p.rps,
                p.spread_text(),
                p.latency_us.p50,
                p.latency_us.p99,
                p.errors
            );
        }
    }
}

/// Parses the arguments, runs, and returns the process exit code.
pub fn main() -> i32 {
    let cli = match mock_kong::edge::parse::<Cli>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = if cli.threads > 1 && !matches!(cli.command, Command::ReferenceServer(_)) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let threads = cli.threads.max(1);
    // The shared edge (mock_kong::edge): 128 + signal on SIGINT/SIGTERM, a closed stdout is a
    // normal end; the reference server handles its signals itself. `run` and `sweep` end the
    // trial in progress and write what they measured before (marked `interrupted`).
    let signals = !matches!(cli.command, Command::ReferenceServer(_));
    let grace = match cli.command {
        Command::Run(_) | Command::Sweep(_) => mock_kong::edge::REPORT_GRACE,
        _ => Duration::ZERO,
    };
    mock_kong::edge::run(rt, signals, grace, async move {
        run(cli.command, threads)
            .await
            .map_err(|(code, e)| mock_kong::edge::Failure::new(code, e))
    })
}

type Outcome = Result<i32, (i32, anyhow::Error)>;

fn usage(e: anyhow::Error) -> (i32, anyhow::Error) {
    (2, e)
}

async fn run(command: Command, threads: usize) -> Outcome {
    match command {
        Command::ReferenceServer(a) => reference_server(a).await,
        Command::Floor(a) => floor_cmd(a).await,
        Command::Plot(a) => plot_cmd(a),
        Command::Run(a) => run_cmd(a, threads).await,
        Command::Sweep(a) => sweep_cmd(a, threads).await,
        Command::Ab(a) => ab_cmd(a, threads).await,
        Command::Gate(a) => crate::gate::cli::gate_cmd(&a).map_err(usage),
        Command::Baseline(a) => crate::gate::cli::baseline_cmd(&a).map_err(usage),
        Command::Completions(a) => mock_kong::cli::completions::write::<Cli>(a.shell, "loadgen")
            .map_err(|f| (f.code, f.error)),
    }
}

async fn reference_server(a: ReferenceArgs) -> Outcome {
    // The same code as `mock-kong reference-server`, faults included.
    Ok(mock_kong::cli::run_reference_server(a).await)
}

fn plot_cmd(a: PlotArgs) -> Outcome {
    let text = std::fs::read_to_string(&a.results)
        .with_context(|| format!("reading {}", a.results.display()))
        .map_err(usage)?;
    let mut results: Results = serde_json::from_str(&text)
        .with_context(|| {
            format!(
                "{} is not a loadgen results.json (schema version 1)",
                a.results.display()
            )
        })
        .map_err(usage)?;
    if !a.concurrency.is_empty() {
        let keep = |c: &usize| a.concurrency.contains(c);
        results.points.retain(|p| keep(&p.concurrency));
        results.fits.retain(|f| keep(&f.concurrency));
        if results.points.is_empty() {
            return Err(usage(anyhow!(
                "{} has no point at concurrency {:?}: pick concurrencies it measured",
                a.results.display(),
                a.concurrency
            )));
        }
    }
    let dir = a
        .out
        .or_else(|| a.results.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(usage)?;
    crate::plot::write_all(&results, &dir).map_err(|e| (2, e.into()))?;
    std::fs::write(dir.join("results.csv"), results.to_csv()).map_err(|e| (2, e.into()))?;
    std::fs::write(dir.join("summary.md"), results.summary_markdown())
        .map_err(|e| (2, e.into()))?;
    println!(
        "redrew the plots, results.csv and summary.md in {}",
        dir.display()
    );
    Ok(0)
}

async fn floor_cmd(a: FloorArgs) -> Outcome {
    let mut out = Vec::new();
    for p in &a.protocol {
        let p: Protocol = (*p).into();
        let (w, d) = (a.warmup, a.duration);
        let r = tokio::task::spawn_blocking(move || floor::run(p, w, d))
            .await
            .map_err(|e| (2, anyhow!(e)))?
            .map_err(|e| (2, anyhow!(e)))?;
        out.push(r);
    }
    if !a.json.to_stdout() {
        for f in &out {
            println!(
                "{}: {} B out / {} B in, {:.0} round trips/s, RTT p50 {:.1} µs p99 {:.1} µs, client CPU {:.0} ns/rt, server CPU {:.0} ns/rt",
                f.protocol,
                f.request_bytes,
                f.response_bytes,
                f.round_trips_per_s,
                f.rtt_us.p50,
                f.rtt_us.p99,
                f.client_cpu_ns_per_round_trip,
                f.server_cpu_ns_per_round_trip
            );
        }
    }
    a.json
        .emit(&serde_json::to_value(&out).map_err(|e| (2, e.into()))?)
        .map_err(usage)?;
    Ok(0)
}

fn command_line() -> String {
    let mut parts = vec!["loadgen".to_owned()];
    parts.extend(std::env::args().skip(1).map(|a| target::shell_quote(&a)));
    parts.join(" ")
}

fn check_common(t: &TimingArgs) -> anyhow::Result<()> {
    if t.trials == 0 {
        bail!("--trials must be at least 1");
    }
    if t.kong_workers == 0 {
        bail!("--kong-workers must be at least 1");
    }
    if t.duration.is_zero() {
        bail!("--duration must be longer than 0");
    }
    Ok(())
}

/// What a run measures: the plugin, the calls dimension and the workload.
struct Workload {
    plugin: String,
    calls: Vec<u32>,
    custom: Option<CustomLoad>,
}

/// The plugin (`--plugin`; for a server of your own alone, the plugin its dump serves; else
/// bench), the bench plugin's call counts or one placeholder when another plugin makes the
/// calls it makes (its config checked against its dump first).
async fn workload(
    w: &WorkloadArgs,
    calls: Option<Vec<u32>>,
    default_calls: &[u32],
    targets: &[TargetDef],
) -> Result<Workload, (i32, anyhow::Error)> {
    let plugin = match &w.plugin {
        Some(p) => p.clone(),
        None => served_plugin(targets)
            .await
            .unwrap_or_else(|| sweep::PLUGIN.to_owned()),
    };
    let custom = w.custom(&plugin).map_err(usage)?;
    let calls = match (&custom, calls) {
        (None, calls) => calls.unwrap_or_else(|| default_calls.to_vec()),
        (Some(_), Some(_)) => {
            return Err(usage(anyhow!(
                "--calls sets the bench plugin's PDK calls per request; plugin `{plugin}` makes the calls it makes (read from its transcript), so leave --calls out"
            )))
        }
        (Some(c), None) => {
            check_custom(targets, &plugin, c).await?;
            vec![0]
        }
    };
    Ok(Workload {
        plugin,
        calls,
        custom,
    })
}

/// When every target is a server of your own (`--start-cmd`), the plugin the first one's dump
/// serves (Kong 3.9 registers the first plugin of a dump).
async fn served_plugin(targets: &[TargetDef]) -> Option<String> {
    if targets.is_empty()
        || !targets
            .iter()
            .all(|t| matches!(t.spec, TargetSpec::Commands { .. }))
    {
        return None;
    }
    let t = &targets[0];
    let resolved = target::resolve(&t.spec, &t.placement, sweep::PLUGIN).ok()?;
    let out = mock_kong::dump::query(&resolved.query_cmd, Duration::from_secs(30))
        .await
        .ok()?;
    Some(out.dump.plugin().name.clone())
}

async fn run_cmd(a: RunArgs, threads: usize) -> Outcome {
    check_common(&a.timing).map_err(usage)?;
    if a.concurrency == 0 {
        return Err(usage(anyhow!("--concurrency must be at least 1")));
    }
    let targets = a.targets.named_targets().await?;
    let Workload {
        plugin,
        calls,
        custom,
    } = workload(&a.workload, a.calls.map(|c| vec![c]), &[10], &targets).await?;
    let mode = match a.rate {
        Some(rate) if rate > 0.0 && rate.is_finite() => Mode::Open { rate },
        Some(rate) => {
            return Err(usage(anyhow!(
                "--rate must be a positive number of requests/s, got {rate}"
            )))
        }
        None => Mode::Closed,
    };
    let plan = SweepPlan {
        targets,
        calls,
        concurrency: vec![a.concurrency],
        modes: vec![mode],
        kong_workers: a.timing.kong_workers,
        multicore: None,
        duration: a.timing.duration,
        warmup: a.timing.warmup,
        trials: a.timing.trials,
        method: a.timing.method.clone(),
        plugin,
        custom,
        session: a.targets.session_options().map_err(usage)?,
        floor: false,
        chaos: None,
        keep_hgrm: a.hgrm,
        command: command_line(),
        runtime_threads: threads,
        via: a.timing.via,
        interleave: false,
    };
    let bar = Bar::new(plan.total_trials());
    let results = sweep::run(&plan, &bar).await;
    bar.0.finish_and_clear();
    if !a.json.to_stdout() {
        print_points(&results, a.hgrm);
    }
    a.json
        .emit(&serde_json::to_value(&results).map_err(|e| (2, e.into()))?)
        .map_err(usage)?;
    Ok(exit_code(&results))
}

fn exit_code(r: &Results) -> i32 {
    if r.failures.is_empty() && r.points.iter().all(|p| p.errors == 0) {
        0
    } else {
        1
    }
}

fn print_points(r: &Results, hgrm: bool) {
    for p in &r.points {
        let sat = match p.saturated {
            Some(true) => format!(" {}", paint("SATURATED", "1;31")),
            Some(false) => " (rate sustained)".into(),
            None => String::new(),
        };
        println!(
            "{} {} {} c={} calls={}: {} req/s (spread {}), latency p50 {:.1} µs p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}, errors {}{}",
            paint(&p.peer, "1"),
            p.protocol,
            p.mode,
            p.concurrency,
            p.calls,
            paint(&format!("{:.0}", p.rps), "1;32"),
            p.spread_text(),
            p.latency_us.p50,
            p.latency_us.p90,
            p.latency_us.p99,
            p.latency_us.p999,
            p.latency_us.max,
            if p.errors > 0 { paint(&p.errors.to_string(), "1;31") } else { "0".into() },
            sat
        );
        if let Some(s) = &p.service_us {
            println!(
                "    service time (uncorrected): p50 {:.1} µs p99 {:.1} max {:.1}",
                s.p50, s.p99, s.max
            );
        }
        println!(
            "    server CPU {} cores, {} µs/request, RSS {} KiB; loadgen CPU {:.2} cores, {:.0} ns per PDK round trip{}",
            p.server.cpu_cores.map_or("?".into(), |v| format!("{v:.2}")),
            p.server.cpu_us_per_request.map_or("?".into(), |v| format!("{v:.1}")),
            p.server.rss_kib_max.map_or("?".into(), |v| v.to_string()),
            p.loadgen.cpu_cores,
            p.loadgen.cpu_ns_per_round_trip,
            p.loadgen
                .cpu_ratio_to_server
                .map_or(String::new(), |v| format!(", {:.1}% of the server's", v * 100.0))
        );
        if let Some(c) = &p.counters {
            println!("    counters per request: {}", counters_line(c));
        }
        if hgrm {
            if let Some(h) = &p.hgrm {
                println!("{h}");
            }
        }
    }
    for f in &r.failures {
        println!("{} {}: {}", paint("failed", "1;31"), f.peer, f.error);
    }
}

/// The machine-independent counters of a point on one line.
pub fn counters_line(c: &crate::results::CounterRecord) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("?".to_owned(), |x| format!("{x:.digits$}"));
    format!(
        "{:.2} PDK calls, {:.2} round trips, {:.1} B out / {:.1} B in; harness {} reads {} writes {} allocs; server {} reads {} writes, RSS {} KiB per 10k requests ({} requests)",
        c.pdk_calls_per_request,
        c.round_trips_per_request,
        c.bytes_out_per_request,
        c.bytes_in_per_request,
        opt(c.harness_reads_per_request, 2),
        opt(c.harness_writes_per_request, 2),
        opt(c.harness_allocs_per_request, 1),
        opt(c.server_reads_per_request, 2),
        opt(c.server_writes_per_request, 2),
        opt(c.server_rss_growth_kib_per_10k, 0),
        c.requests
    )
}

async fn sweep_cmd(a: SweepArgs, threads: usize) -> Outcome {
    check_common(&a.timing).map_err(usage)?;
    let targets = a.targets.named_targets().await?;
    let Workload {
        plugin,
        calls,
        custom,
    } = workload(&a.workload, a.calls.clone(), &DEFAULT_SWEEP_CALLS, &targets).await?;
    if calls.is_empty() || a.concurrency.is_empty() || a.concurrency.contains(&0) {
        return Err(usage(anyhow!(
            "--calls and --concurrency need at least one value each, and concurrency ≥ 1"
        )));
    }
    let mut modes = Vec::new();
    if !a.open_only {
        modes.push(Mode::Closed);
    }
    if let Some(rate) = a.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(usage(anyhow!(
                "--rate must be a positive number of requests/s, got {rate}"
            )));
        }
        modes.push(Mode::Open { rate });
    }
    let gate = crate::gate::cli::SweepGate::prepare(&a.gate).map_err(usage)?;
    let multicore = a
        .multicore
        .filter(|&mc| mc > 1 && !a.multicore_calls.is_empty())
        .map(|mc| Multicore {
            workers: mc,
            calls: if custom.is_some() {
                vec![0]
            } else {
                a.multicore_calls.clone()
            },
        });
    let plan = SweepPlan {
        targets,
        calls,
        concurrency: a.concurrency.clone(),
        modes,
        kong_workers: a.timing.kong_workers,
        multicore,
        duration: a.timing.duration,
        warmup: a.timing.warmup,
        trials: a.timing.trials,
        method: a.timing.method.clone(),
        plugin,
        custom,
        session: a.targets.session_options().map_err(usage)?,
        floor: !a.no_floor,
        chaos: a.chaos_kill_point.map(|point| ChaosPlan {
            point,
            after: a.chaos_kill_after,
        }),
        keep_hgrm: false,
        command: command_line(),
        runtime_threads: threads,
        via: a.timing.via,
        interleave: a.interleave,
    };
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the output directory {}", dir.display()))
            .map_err(usage)?;
    }
    let bar = Bar::new(plan.total_trials());
    if !bar.0.is_hidden() {
        bar.note(&format!(
            "{} target(s) × {} point(s) × {} trial(s): about {:.0} s",
            plan.targets.len(),
            plan.points_per_target(),
            plan.trials,
            plan.planned_time().as_secs_f64()
        ));
    }
    let results = sweep::run(&plan, &bar).await;
    bar.0.finish_and_clear();
    if let Some(dir) = &a.out {
        write_outputs(&results, dir).map_err(|e| (2, e))?;
    }
    if !a.json.to_stdout() {
        print_sweep(&results, a.out.as_deref());
    }
    a.json
        .emit(&serde_json::to_value(&results).map_err(|e| (2, e.into()))?)
        .map_err(usage)?;
    match gate {
        Some(g) => g
            .finish(&results, exit_code(&results), a.json.to_stdout())
            .map_err(usage),
        None => Ok(exit_code(&results)),
    }
}

/// One side of `loadgen ab` from its positional text or its command flags.
fn ab_side(
    which: &str,
    text: Option<&str>,
    start: Option<&String>,
    query: Option<&String>,
    exe: Option<PathBuf>,
    registry: &std::path::Path,
) -> anyhow::Result<crate::ab::AbSide> {
    match (text, query) {
        (_, Some(q)) => {
            let name = text.unwrap_or(which).to_owned();
            Ok(crate::ab::AbSide {
                label: name.clone(),
                spec: TargetSpec::Commands {
                    name: Some(name),
                    start_cmd: start.cloned(),
                    query_cmd: q.clone(),
                },
            })
        }
        (Some(t), None) => Ok(crate::ab::parse_side(t, exe, registry)?),
        (None, None) => bail!(
            "no {which} side: give it as an argument (`reference`, `reference:protobuf+slow-pdk`, a peer name) or with --{which}-start-cmd and --{which}-query-cmd"
        ),
    }
}

async fn ab_cmd(a: AbArgs, threads: usize) -> Outcome {
    use crate::gate::paired::{self, AbConfig};
    let registry = a
        .peers_file
        .clone()
        .unwrap_or_else(target::default_registry);
    let setup = || -> anyhow::Result<(crate::ab::AbPlan, AbConfig)> {
        let baseline = ab_side(
            "baseline",
            a.baseline.as_deref(),
            a.baseline_start_cmd.as_ref(),
            a.baseline_query_cmd.as_ref(),
            a.baseline_exe.clone(),
            &registry,
        )?;
        let current = ab_side(
            "current",
            a.current.as_deref(),
            a.current_start_cmd.as_ref(),
            a.current_query_cmd.as_ref(),
            a.current_exe.clone(),
            &registry,
        )?;
        let units = if a.forks <= 1 {
            a.pairs
        } else {
            a.forks.min(a.pairs)
        };
        if units < paired::MIN_PAIRS {
            bail!(
                "a 95 % interval for the median ratio needs at least {} units: --forks {} or more (each a unit) and at least as many --pairs, or --forks 1 and --pairs {} or more; got --forks {} --pairs {}",
                paired::MIN_PAIRS,
                paired::MIN_PAIRS,
                paired::MIN_PAIRS,
                a.forks,
                a.pairs
            );
        }
        if a.calls.is_empty() || a.concurrency.is_empty() || a.concurrency.contains(&0) {
            bail!("--calls and --concurrency need at least one value each, and concurrency ≥ 1");
        }
        if a.duration.is_zero() || a.kong_workers == 0 {
            bail!("--duration must be longer than 0 and --kong-workers at least 1");
        }
        let mode = match a.rate {
            Some(rate) if rate > 0.0 && rate.is_finite() => Mode::Open { rate },
            Some(rate) => bail!("--rate must be a positive number of requests/s, got {rate}"),
            None => Mode::Closed,
        };
        if !(a.timeout > 0.0 && a.timeout.is_finite()) {
            bail!(
                "--timeout must be a positive number of seconds, got {}",
                a.timeout
            );
        }
        let gate = crate::gate::GateConfig::new(a.max_regression)?;
        let mut metrics = Vec::new();
        for m in &a.metrics {
            let m = crate::gate::Metric::parse(m)?;
            if !metrics.contains(&m) {
                metrics.push(m);
            }
        }
        if metrics.is_empty() {
            bail!(crate::gate::GateError::NoMetric);
        }
        let plan = crate::ab::AbPlan {
            baseline,
            current,
            calls: a.calls.clone(),
            concurrency: a.concurrency.clone(),
            modes: vec![mode],
            kong_workers: a.kong_workers,
            duration: a.duration,
            warmup: a.warmup,
            pairs: a.pairs,
            forks: a.forks.max(1),
            method: a.method.clone(),
            session: SessionOptions {
                timeouts: Timeouts::uniform(Duration::from_secs_f64(a.timeout)),
                log: if a.server_log {
                    LogSink::Stderr
                } else {
                    LogSink::Quiet
                },
                respawn: true,
                ..SessionOptions::default()
            },
            command: command_line(),
            runtime_threads: threads,
        };
        let cfg = AbConfig {
            max_regression: gate.max_regression,
            metrics,
            counters: !a.no_counters,
        };
        Ok((plan, cfg))
    };
    let (plan, cfg) = setup().map_err(usage)?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the output directory {}", dir.display()))
            .map_err(usage)?;
    }
    let bar = Bar::new(plan.total_trials());
    bar.note(&format!(
        "{} vs {}: {} point(s) × {} pair(s) in {} fork(s): about {:.0} s",
        plan.current.label,
        plan.baseline.label,
        plan.points().len(),
        plan.pairs,
        plan.forks.clamp(1, plan.pairs),
        ((plan.warmup + plan.duration) * u32::try_from(plan.total_trials()).unwrap_or(u32::MAX))
            .as_secs_f64()
    ));
    let run = crate::ab::run(&plan, &bar).await;
    bar.0.finish_and_clear();
    let run = run.map_err(|e| (2, anyhow!(e)))?;
    let mut report = paired::compare_runs(&run.baseline, &run.current, &cfg);
    report.baseline_label.clone_from(&plan.baseline.label);
    report.current_label.clone_from(&plan.current.label);
    let md = crate::gate::report::ab_markdown(&report);
    let write = |path: &std::path::Path, text: String| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    let outputs = || -> anyhow::Result<()> {
        if let Some(p) = &a.markdown {
            write(p, md.clone())?;
        }
        if let Some(p) = &a.junit {
            write(p, crate::gate::report::ab_junit(&report))?;
        }
        if let Some(p) = &a.bmf {
            write(
                p,
                serde_json::to_string_pretty(&crate::gate::report::bmf(&run.current))? + "\n",
            )?;
        }
        if let Some(dir) = &a.out {
            write(
                &dir.join("baseline.json"),
                serde_json::to_string_pretty(&run.baseline)? + "\n",
            )?;
            write(
                &dir.join("current.json"),
                serde_json::to_string_pretty(&run.current)? + "\n",
            )?;
            write(&dir.join("ab.md"), md.clone())?;
        }
        Ok(())
    };
    outputs().map_err(usage)?;
    let to_stdout = a.json.to_stdout();
    let say = |line: &str| {
        if to_stdout {
            mock_kong::errln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(&md);
    if crate::gate::cli::on_github_actions() {
        for line in crate::gate::report::ab_annotations(&report) {
            say(&line);
        }
    }
    a.json
        .emit(&serde_json::json!({
            "schema": "loadgen/ab/1",
            "exit_code": report.exit_code(),
            "headline": report.headline(),
            "baseline": run.baseline,
            "current": run.current,
        }))
        .map_err(usage)?;
    Ok(report.exit_code())
}

/// Writes results.json, results.csv, summary.md and the plots into `dir`.
pub fn write_outputs(results: &Results, dir: &std::path::Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(dir.join("results.json"), json + "\n")
        .with_context(|| format!("writing {}", dir.join("results.json").display()))?;
    std::fs::write(dir.join("results.csv"), results.to_csv())
        .with_context(|| format!("writing {}", dir.join("results.csv").display()))?;
    std::fs::write(dir.join("summary.md"), results.summary_markdown())
        .with_context(|| format!("writing {}", dir.join("summary.md").display()))?;
    crate::plot::write_all(results, dir)?;
    Ok(())
}

fn print_sweep(r: &Results, out: Option<&std::path::Path>) {
    for f in &r.floor {
        println!(
            "floor {}: {:.0} round trips/s (RTT p50 {:.1} µs), client CPU {:.0} ns/rt",
            f.protocol, f.round_trips_per_s, f.rtt_us.p50, f.client_cpu_ns_per_round_trip
        );
    }
    if let Some(h) = &r.http_floor {
        println!(
            "HTTP floor: plain hyper hello {:.0} req/s (p50 {:.1} µs), proxy with no phase {:.0} req/s (p50 {:.1} µs): {:.2} × hello, p50 overhead {:.1} µs",
            h.hello_rps,
            h.hello_latency_us.p50,
            h.proxy_rps,
            h.proxy_latency_us.p50,
            h.proxy_share_of_hello,
            h.proxy_p50_overhead_us
        );
    }
    for (proto, eff) in &r.references.harness_efficiency {
        let cpu = r
            .references
            .harness_cpu_ratio
            .get(proto)
            .copied()
            .unwrap_or(f64::NAN);
        let ok = |good: bool| {
            if good {
                paint("met", "32")
            } else {
                paint("missed", "1;31")
            }
        };
        println!(
            "harness {proto}: {eff:.2} × floor round trips/s (target ≥ 0.5: {}), {cpu:.2} × floor CPU per round trip (target ≤ 2: {})",
            ok(*eff >= 0.5),
            ok(cpu <= 2.0)
        );
    }
    println!("time per request = base + calls × per-call cost (closed loop, 10⁶/rps):");
    for f in &r.fits {
        println!(
            "  {:<10} {:<10} c{:<3} {:<9} base {:>9.1} µs  per call {:>8.2} µs  ({:.2} of base)  R² {}",
            f.peer, f.protocol, f.concurrency, if f.variant == "single" { "" } else { "multicore" },
            f.fit.base_us, f.fit.per_call_us, f.per_call_share_of_base, f.r2_text()
        );
    }
    let errors: u64 = r.points.iter().map(|p| p.errors).sum();
    println!(
        "{} point(s), {} error(s), {} failure(s); loadgen peak RSS {:.1} MiB",
        r.points.len(),
        errors,
        r.failures.len(),
        r.loadgen_peak_rss_kib as f64 / 1024.0
    );
    for f in &r.failures {
        println!("{} {}: {}", paint("failed", "1;31"), f.peer, f.error);
    }
    if let Some(dir) = out {
        println!("wrote results.json, results.csv, summary.md, rps/latency/rps_normalised .svg/.png in {}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs")
            .unwrap_err()
            .contains("unknown duration unit"));
        assert!(parse_duration("fast").is_err());
    }

    /// Regression (issue 13): subcommands' --help had no examples.
    #[test]
    fn every_subcommand_help_has_examples() {
        assert_eq!(
            mock_kong::cli::subcommands_without_examples(&mut Cli::command()),
            Vec::<String>::new()
        );
        let v = Cli::command().render_version().to_string();
        assert!(v.contains("Kong Gateway 3.9"), "{v}");
    }

    #[test]
    fn cli_definition_is_consistent_and_targets_resolve() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "loadgen",
            "sweep",
            "--peer",
            "go,python",
            "--peer",
            "js",
            "--reference",
            "--protocol",
            "msgpack,protobuf",
            "--calls",
            "0,10",
            "--duration",
            "1s",
        ])
        .unwrap();
        let Command::Sweep(a) = cli.command else {
            panic!("sweep expected")
        };
        let labels: Vec<_> = a
            .targets
            .targets()
            .iter()
            .map(|t| t.label.clone())
            .collect();
        assert_eq!(labels, ["go", "python", "js", "reference", "reference"]);
        assert_eq!(a.calls, Some(vec![0, 10]));
        let cli = Cli::try_parse_from(["loadgen", "run"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!("run expected")
        };
        let t = r.targets.targets();
        assert_eq!(t.len(), 1, "the reference server by default");
        assert!(matches!(
            t[0].spec,
            TargetSpec::Reference {
                protocol: Protocol::MsgPack,
                ..
            }
        ));
        assert!(
            Cli::try_parse_from(["loadgen", "sweep", "--open-only"]).is_err(),
            "--open-only needs --rate"
        );
    }
}
