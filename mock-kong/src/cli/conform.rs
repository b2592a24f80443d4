//! `mock-kong conform`: the conformance suite (see [`crate::conform`]).
//!
//! Exit codes: 0 all is well; 1 a `must` check failed (any failure with `--strict`), or, with
//! `--expect-failures`, the results differ from the list in either direction; 2 usage or setup
//! error.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, ValueEnum};

use super::{setup, Failure, JsonArg, ServerArgs};
use crate::conform::report::{self, progress_line, Expectations};
use crate::conform::runner::RunOptions;
use crate::conform::{self, Server, TierSel};
use crate::process::{LogSink, ServerProcess, SpawnOptions};
use crate::target::TargetSpec;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TierArg {
    Fast,
    Slow,
    All,
}

const EXAMPLES: &str = "\
Examples:
  mock-kong conform --peer python                          # fast tier, human report
  mock-kong conform --start-cmd 'python3 greet.py -p {prefix} --socket-name greet.socket' \\
      --query-cmd 'python3 greet.py --dump'
  mock-kong conform --kong-conf kong.conf --json report.json --junit report.xml
  mock-kong conform --peer js --expect-failures conformance/expected/js.txt   # the CI gate
  mock-kong conform --list | grep event/

Exit codes: 0 ok, 1 a must check failed (any with --strict) or the results differ from
--expect-failures, or the server does not come up at all; 2 usage or setup error.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ConformArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Run only checks whose id starts with PREFIX (e.g. `event/` or `dump/shape`).
    #[arg(long, value_name = "PREFIX", num_args = 1..)]
    pub only: Vec<String>,
    /// Leave out checks whose id starts with PREFIX.
    #[arg(long, value_name = "PREFIX", num_args = 1..)]
    pub skip: Vec<String>,
    /// fast: under a minute per server; slow: idle instances past 60 s and resources over
    /// thousands of events.
    #[arg(long, value_enum, default_value = "fast")]
    pub tier: TierArg,
    /// Fail the run on any failure, not only on `must` checks.
    #[arg(long)]
    pub strict: bool,
    /// Expected failures (one check id per line): the run fails when the results differ from
    /// the list in either direction.
    #[arg(long, value_name = "FILE")]
    pub expect_failures: Option<PathBuf>,
    /// Rewrite the --expect-failures file from this run's failures.
    #[arg(long, requires = "expect_failures")]
    pub fix_expectations: bool,
    #[command(flatten)]
    pub json: JsonArg,
    /// Write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a markdown report to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// List the checks (id, level, tier, protocols, spec section, requirement) and exit.
    #[arg(long)]
    pub list: bool,
    /// Deadline of every connect, read and write in a check, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub io_timeout: f64,
    /// lifecycle/idle-instances: seconds instances sit idle (Kong's keepalive is 60 s).
    #[arg(long, value_name = "SECS", default_value_t = 65.0, hide = true)]
    pub idle_secs: f64,
    /// resources/*: events per kind (the memory slope is fitted over them).
    #[arg(long, value_name = "N", default_value_t = 20_000, hide = true)]
    pub resource_events: usize,
    /// The Kong release whose PDK (event/known-methods) and dump rules apply (2.3 – 3.9).
    #[arg(long, value_name = "X.Y", default_value = "3.9")]
    pub kong_version: crate::pdk::KongVersion,
    /// Run the reference server with these --fault switches (to see a check fail).
    #[arg(long = "reference-fault", value_name = "NAME", hide = true)]
    pub reference_faults: Vec<String>,
    /// Run the reference server with these legal --variation switches (the suite must pass).
    #[arg(long = "reference-variation", value_name = "NAME", hide = true)]
    pub reference_variations: Vec<String>,
    /// Build DIR/README.md (the server × group matrix) from DIR/*.json and exit.
    #[arg(long, value_name = "DIR", hide = true)]
    pub matrix: Option<PathBuf>,
}

fn secs(name: &str, v: f64) -> Result<Duration, Failure> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(setup(anyhow!(
            "{name} must be a positive number of seconds, got {v}"
        )))
    }
}

pub(crate) async fn run(a: ConformArgs) -> Result<i32, Failure> {
    if a.list {
        crate::out!("{}", list())?;
        return Ok(0);
    }
    if let Some(dir) = &a.matrix {
        return write_matrix(dir).map(|()| 0).map_err(setup);
    }
    if a.fix_expectations && (!a.only.is_empty() || !a.skip.is_empty()) {
        return Err(setup(anyhow!(
            "--fix-expectations rewrites the whole list, so it cannot be combined with --only or \
             --skip (the filtered-out checks would be dropped from the file)"
        )));
    }
    let mut spec = a.server.named_spec().await?;
    if !a.reference_faults.is_empty() || !a.reference_variations.is_empty() {
        for v in &a.reference_variations {
            if crate::reference::Variation::from_name(v).is_none() {
                return Err(setup(anyhow!(
                    "unknown variation {v:?}; the reference server knows {}",
                    crate::reference::Variation::names()
                )));
            }
        }
        match &mut spec {
            TargetSpec::Reference { faults, .. } => {
                faults.clone_from(&a.reference_faults);
                faults.extend(a.reference_variations.iter().cloned());
            }
            _ => {
                return Err(setup(anyhow!(
                    "--reference-fault and --reference-variation need the reference server"
                )))
            }
        }
    }
    let opts = RunOptions {
        tier: match a.tier {
            TierArg::Fast => TierSel::Fast,
            TierArg::Slow => TierSel::Slow,
            TierArg::All => TierSel::All,
        },
        only: a.only.clone(),
        skip: a.skip.clone(),
        plugin: a.server.plugin().to_owned(),
        io_timeout: secs("--io-timeout", a.io_timeout)?,
        socket_timeout: secs("--socket-timeout", a.server.socket_timeout)?,
        idle: secs("--idle-secs", a.idle_secs)?,
        resource_events: a.resource_events.max(1),
        kong_version: a.kong_version,
        ..RunOptions::default()
    };
    let expectations = match &a.expect_failures {
        Some(p) => Some(
            Expectations::load(p)
                .with_context(|| format!("reading {}", p.display()))
                .map_err(setup)?,
        ),
        None => None,
    };
    let server = Server {
        spec,
        placement: a.server.placement(),
    };
    preflight(&server, &opts).await?;
    let human = !a.json.to_stdout();
    let mut group = "";
    if human {
        crate::outln!("mock-kong conform ({} tier)", opts.tier.as_str())?;
    }
    let mut report = conform::run(&server, &opts, &mut |r| {
        if !human {
            return;
        }
        if r.group != group {
            group = r.group;
            let _ = crate::outln!("\n{group}");
        }
        let _ = crate::outln!("{}", progress_line(r));
    })
    .await
    .map_err(setup)?;
    if let (Some(exp), Some(path)) = (&expectations, &a.expect_failures) {
        report.apply(exp, &path.to_string_lossy(), &|c| opts.selects(c));
    }
    if a.fix_expectations {
        if let Some(path) = &a.expect_failures {
            std::fs::write(path, Expectations::render(&report))
                .with_context(|| format!("writing {}", path.display()))
                .map_err(setup)?;
            crate::errln!("wrote {}", path.display());
        }
    }
    let ok = a.fix_expectations || report.ok(a.strict);
    if human {
        let text = report.human();
        // The per-check lines were printed as the run went; print the header, the failure
        // recap and the summary.
        crate::outln!("\n{}", report.header())?;
        if let Some(i) = text.find("\nFailures:") {
            crate::out!("{}", &text[i..])?;
        } else if let Some(i) = text.find("\nDifferences from") {
            crate::out!("{}", &text[i..])?;
        } else if let Some(i) = text.rfind("\nin ") {
            crate::out!("{}", &text[i..])?;
        }
    }
    a.json.emit(&report.to_json(a.strict)).map_err(setup)?;
    if let Some(p) = &a.junit {
        std::fs::write(p, report.junit())
            .with_context(|| format!("writing {}", p.display()))
            .map_err(setup)?;
    }
    if let Some(p) = &a.markdown {
        std::fs::write(p, report.markdown())
            .with_context(|| format!("writing {}", p.display()))
            .map_err(setup)?;
    }
    Ok(if ok { 0 } else { 1 })
}

/// Before the checks: a server mock-kong starts must come up on its socket, or every check
/// that needs it would wait out its timeout (minutes in all) to report the same setup mistake.
/// Fails at once with why (the process exited, crash-looped, listens elsewhere, or never
/// listened), exit 1.
async fn preflight(server: &Server, opts: &RunOptions) -> Result<(), Failure> {
    let target = crate::target::resolve(&server.spec, &server.placement, &opts.plugin)
        .map_err(super::server::target_failure)?;
    for w in &target.warnings {
        crate::errln!("warning: {w}");
    }
    let Some(cmd) = target.start_cmd.clone() else {
        return Ok(());
    };
    let process = ServerProcess::start(SpawnOptions {
        name: target.name.clone(),
        start_cmd: cmd,
        socket: target.socket.clone(),
        respawn: false,
        grace: opts.grace,
        log: LogSink::Quiet,
        env: Vec::new(),
    })
    .await
    .map_err(|e| Failure::usage(anyhow!(e)))?;
    let waited = process.wait_socket(opts.socket_timeout).await;
    process.stop().await;
    waited.map_err(|e| {
        Failure::server(anyhow!(
            "no check can run: the server does not come up on its socket: {e}"
        ))
    })
}

/// `--list`.
fn list() -> String {
    let mut out = String::new();
    let mut group = "";
    for c in conform::catalogue() {
        if c.group() != group {
            group = c.group();
            out.push_str(&format!("\n{group}\n"));
        }
        out.push_str(&format!(
            "  {:<36} {:<6} {:<4} {:<10} {}\n      {}\n      why {}: {}\n",
            c.id,
            c.level.as_str(),
            c.tier.as_str(),
            c.applies.as_str(),
            conform::catalogue::cite(c.spec),
            c.requirement,
            c.level.as_str(),
            c.protects
        ));
    }
    out.push_str(&format!("\n{} checks\n", conform::catalogue().len()));
    out
}

/// `--matrix DIR`: DIR/README.md from DIR/*.json.
fn write_matrix(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for p in entries {
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        reports.push((name, v));
    }
    let out = dir.join("README.md");
    std::fs::write(&out, report::matrix(&reports))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
