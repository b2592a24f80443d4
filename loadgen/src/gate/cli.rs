//! The command-line side of the regression gate: `loadgen gate`, `loadgen baseline save`, and
//! the `--baseline` options of `loadgen sweep` (gate right after measuring).
//!
//! Exit codes of the gate: 0 no regression, 1 a regression (or errors the baseline did not
//! have), 2 the gate cannot judge (unreadable files, points missing or incomparable).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};

use super::baseline::{self, Loaded};
use super::compare::{self as gate, CompareMode, GateConfig, GateReport, Metric, RatioTo};
use super::report as gate_report;
use crate::results::Results;

/// `--compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompareArg {
    /// Absolute figures when the machine fingerprints match; across machines no time verdict
    /// (counters only; exit 2 unless one regressed; use `loadgen ab` instead).
    Auto,
    /// Absolute figures, even across machines.
    Absolute,
    /// Ratios to in-run references, even on the same machine.
    Ratio,
}

/// `--ratio-to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RatioToArg {
    /// The reference server at the same point for peers (when both runs measured it), the
    /// floor for the reference server itself.
    Auto,
    /// The transport floor's median round-trip time.
    Floor,
    /// The reference server measured at the same point in the same run.
    Reference,
}

/// How to judge and where to write the reports (shared by `gate` and `sweep --baseline`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Regression gate")]
pub struct GateOptions {
    /// A change counts only beyond this many percent (and beyond the noise between trials).
    #[arg(long, value_name = "PCT", default_value_t = gate::DEFAULT_MAX_REGRESSION_PCT)]
    pub max_regression: f64,
    /// Absolute figures or ratios to in-run references.
    #[arg(long, value_enum, default_value = "auto")]
    pub compare: CompareArg,
    /// The in-run reference of ratios.
    #[arg(long, value_enum, default_value = "auto")]
    pub ratio_to: RatioToArg,
    /// Metrics to gate on: rps, p50, p90, p99, p999.
    #[arg(long, value_delimiter = ',', default_value = "rps,p50,p99")]
    pub metrics: Vec<String>,
    /// Baseline points the current run did not measure are reported, not errors.
    #[arg(long)]
    pub allow_missing: bool,
    /// Gate only the machine-independent counters (round trips, bytes, system calls,
    /// allocations, memory growth per request): valid against a baseline from any machine.
    #[arg(long)]
    pub counters_only: bool,
    /// Write a JUnit XML report (a test case per point and metric).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the markdown summary (for a pull-request comment or $GITHUB_STEP_SUMMARY).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write the current run in Bencher Metric Format JSON (`bencher run --adapter json`).
    #[arg(long, value_name = "FILE")]
    pub bmf: Option<PathBuf>,
}

impl GateOptions {
    /// The gate configuration these options describe.
    pub fn config(&self) -> anyhow::Result<GateConfig> {
        let mut cfg = GateConfig::new(self.max_regression)?;
        cfg.mode = match self.compare {
            CompareArg::Auto => CompareMode::Auto,
            CompareArg::Absolute => CompareMode::Absolute,
            CompareArg::Ratio => CompareMode::Ratio,
        };
        cfg.ratio_to = match self.ratio_to {
            RatioToArg::Auto => RatioTo::Auto,
            RatioToArg::Floor => RatioTo::Floor,
            RatioToArg::Reference => RatioTo::Reference,
        };
        let mut metrics = Vec::new();
        for m in &self.metrics {
            let m = Metric::parse(m)?;
            if !metrics.contains(&m) {
                metrics.push(m);
            }
        }
        if metrics.is_empty() {
            bail!(gate::GateError::NoMetric);
        }
        cfg.metrics = metrics;
        cfg.allow_missing = self.allow_missing;
        cfg.counters_only = self.counters_only;
        Ok(cfg)
    }
}

const GATE_EXAMPLES: &str = "\
Examples:
  loadgen gate --baseline reports/baselines/reference-debug.json --current out/ --counters-only
  loadgen gate --baseline base/results.json --current head/results.json --markdown perf.md

Exit codes: 0 no regression, 1 a regression, 2 cannot judge (a time verdict across machines, a
missing point, bad files). docs/ci-gates.md explains the rules.";

const BASELINE_EXAMPLES: &str = "\
Examples:
  loadgen baseline save out/ --name mine --note 'release build, commit abc123'
  loadgen baseline merge run1/ run2/ run3/ --out merged.json";

/// `loadgen gate`.
#[derive(Debug, Args)]
#[command(after_help = GATE_EXAMPLES)]
pub struct GateArgs {
    /// The baseline: a baseline file, a results.json, or a `sweep --out` directory.
    #[arg(long, value_name = "FILE")]
    pub baseline: PathBuf,
    /// The run to judge: a results.json or a `sweep --out` directory.
    #[arg(long, value_name = "FILE")]
    pub current: PathBuf,
    #[command(flatten)]
    pub options: GateOptions,
}

/// The `--baseline` of `loadgen sweep`.
#[derive(Debug, Clone, Args)]
pub struct SweepGateArgs {
    /// Gate the sweep's results against this baseline right after measuring.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub options: GateOptions,
}

/// `loadgen baseline`.
#[derive(Debug, Args)]
#[command(after_help = BASELINE_EXAMPLES)]
pub struct BaselineArgs {
    #[command(subcommand)]
    pub action: BaselineAction,
}

#[derive(Debug, Subcommand)]
pub enum BaselineAction {
    /// Save a sweep's results (file or `--out` directory) as a named baseline.
    Save(SaveArgs),
    /// Merge the trials of several runs of the same plan into one results.json (interleaved
    /// measurements: run base and head alternately, merge each side, gate one against the other).
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
#[command(after_help = BASELINE_EXAMPLES)]
pub struct MergeArgs {
    /// results.json files or `sweep --out` directories.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Where to write the merged results.json.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = BASELINE_EXAMPLES)]
pub struct SaveArgs {
    /// A results.json or a `sweep --out` directory (use 3 or more trials per point).
    pub results: PathBuf,
    /// The baseline's name (the file becomes DIR/NAME.json).
    #[arg(long)]
    pub name: String,
    /// Directory of baselines.
    #[arg(long, value_name = "DIR", default_value = baseline::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// A note stored in the baseline (how it was made: build profile, commit, ...).
    #[arg(long, default_value = "")]
    pub note: String,
    /// Save even a run with failures or errors.
    #[arg(long)]
    pub force: bool,
}

/// Whether workflow commands should be printed (`GITHUB_ACTIONS=true`, as set by GitHub).
pub fn on_github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// Writes the requested report files and prints the summary (to stderr when stdout carries
/// JSON) and, on GitHub Actions, the annotations. Returns the gate's exit code.
pub fn emit(
    report: &GateReport,
    options: &GateOptions,
    baseline: &Loaded,
    current: &Results,
    stdout_is_json: bool,
) -> anyhow::Result<i32> {
    let label = baseline
        .baseline_name
        .clone()
        .unwrap_or_else(|| baseline.path.display().to_string());
    let md = gate_report::markdown(report, &label);
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    if let Some(p) = &options.markdown {
        write(p, md.clone())?;
    }
    if let Some(p) = &options.junit {
        write(p, gate_report::junit(report))?;
    }
    if let Some(p) = &options.bmf {
        write(
            p,
            serde_json::to_string_pretty(&gate_report::bmf(current))? + "\n",
        )?;
    }
    if stdout_is_json {
        eprintln!("{md}");
    } else {
        println!("{md}");
    }
    if on_github_actions() {
        let file = baseline.path.display().to_string();
        for line in gate_report::github_annotations(report, &file) {
            if stdout_is_json {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
    }
    Ok(report.exit_code())
}

/// `loadgen gate`: 0 no regression, 1 regression, 2 cannot judge (errors are returned and map
/// to 2 too).
pub fn gate_cmd(a: &GateArgs) -> anyhow::Result<i32> {
    let cfg = a.options.config()?;
    let base = baseline::load(&a.baseline)?;
    let current = baseline::load(&a.current)?;
    let report = gate::compare(&base.results, &current.results, &cfg)?;
    emit(&report, &a.options, &base, &current.results, false)
}

/// The gate of `sweep --baseline`, prepared before the sweep runs (so a bad option or an
/// unreadable baseline fails before minutes of measuring).
pub struct SweepGate {
    baseline: Loaded,
    config: GateConfig,
    options: GateOptions,
}

impl SweepGate {
    /// `None` without `--baseline`.
    pub fn prepare(a: &SweepGateArgs) -> anyhow::Result<Option<SweepGate>> {
        let Some(path) = &a.baseline else {
            return Ok(None);
        };
        Ok(Some(SweepGate {
            config: a.options.config()?,
            baseline: baseline::load(path)?,
            options: a.options.clone(),
        }))
    }

    /// Gates `results`; combines with the sweep's own exit code (`sweep_code`, 1 when a server
    /// failed): 2 when the gate cannot judge, else 1 for a regression or a failed sweep.
    pub fn finish(
        &self,
        results: &Results,
        sweep_code: i32,
        stdout_is_json: bool,
    ) -> anyhow::Result<i32> {
        let report = gate::compare(&self.baseline.results, results, &self.config)?;
        let code = emit(
            &report,
            &self.options,
            &self.baseline,
            results,
            stdout_is_json,
        )?;
        Ok(if code == 2 { 2 } else { code.max(sweep_code) })
    }
}

/// `loadgen baseline ...`.
pub fn baseline_cmd(a: &BaselineArgs) -> anyhow::Result<i32> {
    match &a.action {
        BaselineAction::Save(s) => {
            let loaded = baseline::load(&s.results)?;
            if loaded.baseline_name.is_some() {
                bail!(
                    "{} is already a baseline; give the results.json of a sweep",
                    loaded.path.display()
                );
            }
            let (b, warnings) = baseline::make(loaded.results, &s.name, &s.note, s.force)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            let path = baseline::save(&b, &s.dir)?;
            println!(
                "saved baseline {:?} ({} point(s), machine {}) to {}",
                b.name,
                b.results.points.len(),
                b.fingerprint,
                path.display()
            );
            Ok(0)
        }
        BaselineAction::Merge(m) => {
            let mut runs = Vec::new();
            for path in &m.runs {
                runs.push(baseline::load(path)?.results);
            }
            let merged = baseline::merge(runs).context("no run to merge")?;
            let text = serde_json::to_string_pretty(&merged)? + "\n";
            std::fs::write(&m.out, text).with_context(|| format!("writing {}", m.out.display()))?;
            println!(
                "merged {} run(s): {} point(s), up to {} trial(s) each, into {}",
                m.runs.len(),
                merged.points.len(),
                merged.settings.trials,
                m.out.display()
            );
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct T {
        #[command(flatten)]
        o: GateOptions,
    }

    #[test]
    fn options_parse_into_a_config() {
        use clap::Parser;
        let t = T::try_parse_from([
            "t",
            "--max-regression",
            "25",
            "--compare",
            "ratio",
            "--ratio-to",
            "floor",
            "--metrics",
            "rps,p50,rps",
        ])
        .unwrap();
        let c = t.o.config().unwrap();
        assert!((c.max_regression - 0.25).abs() < 1e-12);
        assert_eq!(c.mode, CompareMode::Ratio);
        assert_eq!(c.ratio_to, RatioTo::Floor);
        assert_eq!(c.metrics, [Metric::Throughput, Metric::P50]);
        let t = T::try_parse_from(["t", "--metrics", "p77"]).unwrap();
        assert!(t.o.config().unwrap_err().to_string().contains("p77"));
        let t = T::try_parse_from(["t", "--max-regression=-5"]).unwrap();
        assert!(t.o.config().is_err());
        let d = T::try_parse_from(["t"]).unwrap().o.config().unwrap();
        assert_eq!(d.metrics, Metric::DEFAULT);
        assert_eq!(d.mode, CompareMode::Auto);
    }
}
