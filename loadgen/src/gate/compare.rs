//! The performance regression gate: compares a current sweep with a baseline, point by point,
//! and says whether the plugin server got slower, faster, or stayed within noise.
//!
//! # Points and metrics
//!
//! A point is identified by everything a sweep varies: peer, protocol, mode (and open-loop
//! rate), variant (and Kong workers), concurrency and PDK calls per request. For each point
//! present in both files the gate compares each [`Metric`] (throughput and latency percentiles)
//! using the *per-trial* values both files carry.
//!
//! # The rule ("whole interval beyond noise")
//!
//! Let `B` be the baseline's trial values of a metric at a point and `C` the current ones (after
//! normalisation, see below), and `T` the threshold (`--max-regression`, a fraction). The gate
//! computes
//!
//! * the change `Δ = median(C) / median(B) − 1`, and
//! * the interval of plausible changes `[min(C) / max(B) − 1, max(C) / min(B) − 1]`: every
//!   pairing of a current trial with a baseline trial falls inside it, so it is as wide as the
//!   noise seen between the trials of both runs.
//!
//! Then, as criterion does with its confidence interval and noise threshold, a change counts
//! only when the *whole* interval lies beyond the threshold:
//!
//! * throughput (higher is better): **regression** when `max(C)/min(B) − 1 < −T` (even the best
//!   current trial is more than `T` below the worst baseline trial); **improvement** when
//!   `min(C)/max(B) − 1 > T`;
//! * latency (lower is better): **regression** when `min(C)/max(B) − 1 > T`; **improvement**
//!   when `max(C)/min(B) − 1 < −T`;
//! * otherwise **within noise** when `|Δ| > T` (the medians moved, but the trials overlap too
//!   much to tell), and **unchanged** when `|Δ| ≤ T`.
//!
//! With a single trial on either side the interval collapses to `Δ` and the verdict rests on the
//! threshold alone; the report warns about it.
//!
//! # Machine independence ([`Basis`])
//!
//! Absolute figures are only comparable on the same kind of machine. When the machine
//! fingerprints differ (or when asked), the gate compares *ratios* to a reference measured in
//! the same run:
//!
//! * [`Basis::Reference`]: ÷ the built-in reference server measured at the same point (same
//!   protocol, mode, concurrency, calls) in the same run, median of its trials. Used for peers
//!   when both runs measured the reference server at that point.
//! * [`Basis::Floor`]: ÷ the transport floor of the point's protocol (a raw Unix-socket
//!   ping-pong with the same message sizes) measured in the same run. The floor's *median
//!   round-trip time* is used, not its round trips/s: descheduling stalls on a shared machine
//!   swing round trips/s several-fold while the median RTT moves by a few percent. Throughput
//!   becomes `rps × floor RTT` (requests per floor round trip) and latency `latency ÷ floor
//!   RTT`. Used for the reference server itself, and for peers when the reference was not
//!   measured.
//!
//! Absolute comparison happens only when the fingerprints match, unless forced with
//! [`CompareMode::Absolute`].
//!
//! # Across machines: counters, not times
//!
//! Ratios to in-run references cancel the transport but not the CPU: on a machine where the
//! floor is three times slower, a debug build's harness is not three times slower. So when the
//! fingerprints differ, [`CompareMode::Auto`] refuses a time verdict (the point's time metrics
//! are not compared, and the gate exits 2 unless a counter regressed) and names `loadgen ab`,
//! which measures both sides on one machine in one run. [`CompareMode::Ratio`] still forces the
//! ratio comparison for those who want it.
//!
//! The machine-independent counters ([`super::counters`]) are compared whenever both files
//! have them, whatever the machines; [`GateConfig::counters_only`] compares nothing else.

use std::collections::BTreeMap;

use super::counters::{self, CountersOutcome};
use crate::results::{PointRecord, Results, TrialRecord};
use crate::stats::Spread;

/// Default threshold: a change must exceed 20 % (and the noise) to count. Measured on a shared
/// 2-vCPU VM, whole pinned runs drift by up to 15 % between back-to-back sweeps.
pub const DEFAULT_MAX_REGRESSION_PCT: f64 = 20.0;

/// Why a gate could not run at all.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GateError {
    #[error("--max-regression must be a percentage between 0 and 1000, got {0}")]
    Threshold(f64),
    #[error("no metric to compare: give at least one of rps, p50, p90, p99, p999")]
    NoMetric,
    #[error("unknown metric {0:?}: expected one of rps, p50, p90, p99, p999")]
    UnknownMetric(String),
    #[error("the baseline has no measured point (was it made from a failed sweep?); make a new one with `loadgen baseline save`")]
    EmptyBaseline,
}

/// A figure the gate compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Successful requests per second (higher is better).
    Throughput,
    /// Latency percentiles of each trial, µs (lower is better).
    P50,
    P90,
    P99,
    P999,
}

impl Metric {
    /// The default set: throughput, median and p99 latency.
    pub const DEFAULT: [Metric; 3] = [Metric::Throughput, Metric::P50, Metric::P99];

    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Throughput => "rps",
            Metric::P50 => "p50",
            Metric::P90 => "p90",
            Metric::P99 => "p99",
            Metric::P999 => "p999",
        }
    }

    /// Parses a `--metrics` entry.
    pub fn parse(s: &str) -> Result<Metric, GateError> {
        match s.trim() {
            "rps" | "throughput" => Ok(Metric::Throughput),
            "p50" => Ok(Metric::P50),
            "p90" => Ok(Metric::P90),
            "p99" => Ok(Metric::P99),
            "p999" | "p99.9" => Ok(Metric::P999),
            other => Err(GateError::UnknownMetric(other.to_owned())),
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Throughput)
    }

    /// The metric's value in one trial.
    pub fn of_trial(self, t: &TrialRecord) -> f64 {
        match self {
            Metric::Throughput => t.rps,
            Metric::P50 => t.latency_us.p50,
            Metric::P90 => t.latency_us.p90,
            Metric::P99 => t.latency_us.p99,
            Metric::P999 => t.latency_us.p999,
        }
    }

    /// The unit of absolute values.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Throughput => "req/s",
            _ => "µs",
        }
    }
}

/// How figures are compared across the two runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareMode {
    /// Absolute when the machine fingerprints match; across machines no time verdict (the
    /// counters only, and exit 2 unless they regressed).
    Auto,
    /// Absolute figures even when the fingerprints differ.
    Absolute,
    /// Ratios to an in-run reference even on the same machine.
    Ratio,
}

/// Which in-run reference ratios use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatioTo {
    /// The reference server at the same point when both runs measured it (and the point is not
    /// the reference server itself), the floor otherwise.
    Auto,
    /// Always the transport floor.
    Floor,
    /// Always the reference server (points without it cannot be compared).
    Reference,
}

/// What a point's figures were divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    Absolute,
    Floor,
    Reference,
}

impl Basis {
    /// A short description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Basis::Absolute => "absolute",
            Basis::Floor => "÷ floor RTT",
            Basis::Reference => "÷ reference server",
        }
    }
}

/// The gate's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GateConfig {
    /// Threshold as a fraction (0.10 = 10 %).
    pub max_regression: f64,
    pub mode: CompareMode,
    pub ratio_to: RatioTo,
    pub metrics: Vec<Metric>,
    /// Baseline points the current run did not measure are reported, not errors.
    pub allow_missing: bool,
    /// Compare only the machine-independent counters (no time metric).
    pub counters_only: bool,
}

impl GateConfig {
    /// A configuration from a threshold in percent; checks it.
    pub fn new(max_regression_pct: f64) -> Result<GateConfig, GateError> {
        if !(max_regression_pct.is_finite() && (0.0..=1000.0).contains(&max_regression_pct)) {
            return Err(GateError::Threshold(max_regression_pct));
        }
        Ok(GateConfig {
            max_regression: max_regression_pct / 100.0,
            mode: CompareMode::Auto,
            ratio_to: RatioTo::Auto,
            metrics: Metric::DEFAULT.to_vec(),
            allow_missing: false,
            counters_only: false,
        })
    }
}

/// The verdict on one metric at one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// `|Δ|` within the threshold.
    WithinThreshold,
    /// Better by more than the threshold and the noise.
    Improvement,
    /// The medians moved beyond the threshold, but the trials overlap too much to tell.
    WithinNoise,
    /// Worse by more than the threshold and the noise.
    Regression,
}

impl Verdict {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::WithinThreshold => "within threshold",
            Verdict::Improvement => "improvement",
            Verdict::WithinNoise => "within noise",
            Verdict::Regression => "regression",
        }
    }
}

/// Median, extremes and count of one metric's (normalised) trial values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub trials: usize,
    /// The median of the absolute values (before normalisation), for display.
    pub absolute_median: f64,
}

impl Sample {
    fn of(values: &[f64], scale: f64) -> Sample {
        let s = Spread::of(values);
        let n = values.iter().filter(|v| v.is_finite()).count();
        Sample {
            median: s.median * scale,
            min: s.min * scale,
            max: s.max * scale,
            trials: n,
            absolute_median: s.median,
        }
    }
}

/// One metric compared at one point.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricComparison {
    pub metric: Metric,
    pub baseline: Sample,
    pub current: Sample,
    /// `median(C) / median(B) − 1`.
    pub change: f64,
    /// `[min(C)/max(B) − 1, max(C)/min(B) − 1]`.
    pub interval: (f64, f64),
    pub verdict: Verdict,
}

/// The outcome at one point.
#[derive(Debug, Clone, PartialEq)]
pub enum PointOutcome {
    /// Both runs measured it; one entry per metric.
    Compared {
        basis: Basis,
        metrics: Vec<MetricComparison>,
        /// Errors counted in the current run's windows (the baseline had none).
        new_errors: u64,
        /// The counters compared (`None` when a file has none at this point).
        counters: Option<CountersOutcome>,
    },
    /// In the baseline, not measured by the current run.
    Missing { reason: String },
    /// Measured by both, but no common basis (a ratio without its reference).
    Incomparable { reason: String },
    /// Only in the current run (reported, not judged).
    New,
}

/// One point of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct PointReport {
    /// `peer protocol cN mode [variant] calls=N [@rate/s]`.
    pub key: String,
    /// The series (everything but calls), for grouping.
    pub series: String,
    pub calls: u32,
    pub outcome: PointOutcome,
}

impl PointReport {
    /// The worst verdict of the point's metrics (`None` when not compared).
    pub fn worst(&self) -> Option<Verdict> {
        match &self.outcome {
            PointOutcome::Compared { metrics, .. } => metrics.iter().map(|m| m.verdict).max(),
            _ => None,
        }
    }

    /// Whether the point fails the gate (a regression, new errors, or a counter beyond its
    /// tolerance).
    pub fn is_regression(&self) -> bool {
        match &self.outcome {
            PointOutcome::Compared {
                metrics,
                new_errors,
                counters,
                ..
            } => {
                *new_errors > 0
                    || metrics.iter().any(|m| m.verdict == Verdict::Regression)
                    || counters.as_ref().is_some_and(CountersOutcome::regressed)
            }
            _ => false,
        }
    }

    /// Whether the point makes the gate unable to judge (exit code 2).
    pub fn is_error(&self, allow_missing: bool) -> bool {
        match &self.outcome {
            PointOutcome::Missing { .. } => !allow_missing,
            PointOutcome::Incomparable { .. } => true,
            _ => false,
        }
    }
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct GateReport {
    pub config: GateConfig,
    pub baseline_fingerprint: String,
    pub current_fingerprint: String,
    /// Whether figures were compared as ratios (fingerprints differ, or forced).
    pub ratios: bool,
    pub points: Vec<PointReport>,
    /// Things the reader should know (single trials, differing tools, forced modes).
    pub warnings: Vec<String>,
    /// Why no time metric was compared although some were asked for (machines differ).
    pub time_refused: Option<String>,
}

impl GateReport {
    /// 0: no regression; 1: a regression (or new errors); 2: the gate could not judge (points
    /// missing or incomparable, or nothing compared).
    pub fn exit_code(&self) -> i32 {
        let regression = self.points.iter().any(PointReport::is_regression);
        if self.time_refused.is_some() || self.config.counters_only {
            // Only the counters were judged: a regression among them is a verdict; otherwise
            // the gate could not judge the times it was asked about (or had no counters).
            return if regression {
                1
            } else if self.time_refused.is_some() || self.counters_compared() == 0 {
                2
            } else {
                0
            };
        }
        if self
            .points
            .iter()
            .any(|p| p.is_error(self.config.allow_missing))
            || self.compared() == 0
        {
            2
        } else if regression {
            1
        } else {
            0
        }
    }

    /// Points whose counters were compared.
    pub fn counters_compared(&self) -> usize {
        self.points
            .iter()
            .filter(|p| {
                matches!(&p.outcome, PointOutcome::Compared { counters: Some(c), .. } if !c.compared.is_empty())
            })
            .count()
    }

    /// Points whose counters grew beyond their tolerance.
    pub fn counter_regressions(&self) -> usize {
        self.points
            .iter()
            .filter(|p| {
                matches!(&p.outcome, PointOutcome::Compared { counters: Some(c), .. } if c.regressed())
            })
            .count()
    }

    /// Number of points compared.
    pub fn compared(&self) -> usize {
        self.points
            .iter()
            .filter(|p| matches!(p.outcome, PointOutcome::Compared { .. }))
            .count()
    }

    /// Count of metric comparisons with this verdict.
    pub fn count(&self, v: Verdict) -> usize {
        self.points
            .iter()
            .filter_map(|p| match &p.outcome {
                PointOutcome::Compared { metrics, .. } => Some(metrics),
                _ => None,
            })
            .flatten()
            .filter(|m| m.verdict == v)
            .count()
    }

    /// One line: "2 regression(s), 1 improvement(s), ... over N points".
    pub fn headline(&self) -> String {
        let code = self.exit_code();
        let state = match code {
            0 => "no regression",
            1 => "REGRESSION",
            _ => "cannot judge",
        };
        let missing = self
            .points
            .iter()
            .filter(|p| matches!(p.outcome, PointOutcome::Missing { .. }))
            .count();
        let incomparable = self
            .points
            .iter()
            .filter(|p| matches!(p.outcome, PointOutcome::Incomparable { .. }))
            .count();
        let errors = self
            .points
            .iter()
            .filter(|p| {
                matches!(p.outcome, PointOutcome::Compared { new_errors, .. } if new_errors > 0)
            })
            .count();
        if self.time_refused.is_some() || self.config.counters_only {
            return format!(
                "{state}: counters compared at {} point(s), beyond tolerance at {}{}{}",
                self.counters_compared(),
                self.counter_regressions(),
                if self.time_refused.is_some() {
                    "; no time verdict across machines"
                } else {
                    ""
                },
                if missing > 0 {
                    format!(", {missing} point(s) missing")
                } else {
                    String::new()
                }
            );
        }
        let mut s = format!(
            "{state}: {} point(s) compared ({}), threshold {:.0} %: {} regression(s), {} improvement(s), {} within noise, {} within threshold",
            self.compared(),
            if self.time_refused.is_some() || self.config.counters_only {
                "counters only"
            } else if self.ratios {
                "ratios to in-run references"
            } else {
                "absolute"
            },
            self.config.max_regression * 100.0,
            self.count(Verdict::Regression),
            self.count(Verdict::Improvement),
            self.count(Verdict::WithinNoise),
            self.count(Verdict::WithinThreshold),
        );
        if errors > 0 {
            s.push_str(&format!(", {errors} point(s) with new errors"));
        }
        s.push_str(&format!(
            "; counters compared at {} point(s), beyond tolerance at {}",
            self.counters_compared(),
            self.counter_regressions()
        ));
        if missing > 0 {
            s.push_str(&format!(", {missing} missing"));
        }
        if incomparable > 0 {
            s.push_str(&format!(", {incomparable} incomparable"));
        }
        s
    }
}

/// The identity of a point across runs.
pub fn point_key(p: &PointRecord) -> String {
    let mut k = format!("{} calls={}", p.series_key(), p.calls);
    if let Some(rate) = p.target_rps {
        k.push_str(&format!(" @{rate}/s"));
    }
    k
}

/// Whether `r` is the reference server's twin of point `p` (same point, any peer label).
fn same_point_shape(r: &PointRecord, p: &PointRecord) -> bool {
    r.protocol == p.protocol
        && r.mode == p.mode
        && r.variant == p.variant
        && r.kong_workers == p.kong_workers
        && r.concurrency == p.concurrency
        && r.calls == p.calls
        && r.target_rps == p.target_rps
}

fn reference_twin<'a>(run: &'a Results, p: &PointRecord) -> Option<&'a PointRecord> {
    run.points
        .iter()
        .find(|r| r.peer == "reference" && same_point_shape(r, p))
}

/// The median RTT of the floor of `protocol` in `run`, µs.
fn floor_rtt_us(run: &Results, protocol: &str) -> Option<f64> {
    run.floor
        .iter()
        .find(|f| f.protocol.as_str() == protocol)
        .map(|f| f.rtt_us.p50)
        .filter(|v| v.is_finite() && *v > 0.0)
}

/// The factor a metric's values of `p` in `run` are multiplied by under `basis`.
fn scale(run: &Results, p: &PointRecord, metric: Metric, basis: Basis) -> Result<f64, String> {
    match basis {
        Basis::Absolute => Ok(1.0),
        Basis::Floor => {
            let rtt = floor_rtt_us(run, &p.protocol).ok_or_else(|| {
                format!(
                    "the run has no transport floor for {} (was the sweep made with --no-floor?)",
                    p.protocol
                )
            })?;
            Ok(if metric.higher_is_better() {
                // requests/s × µs → requests per floor round trip (×1e-6 keeps it unitless).
                rtt * 1e-6
            } else {
                1.0 / rtt
            })
        }
        Basis::Reference => {
            let r = reference_twin(run, p).ok_or_else(|| {
                "the run did not measure the reference server at this point (add --reference \
                 with the same --protocol to the sweep)"
                    .to_owned()
            })?;
            let values: Vec<f64> = r.trials.iter().map(|t| metric.of_trial(t)).collect();
            let m = Spread::of(&values).median;
            if m.is_finite() && m > 0.0 {
                Ok(1.0 / m)
            } else {
                Err(format!(
                    "the reference server measured nothing at this point ({} = {m})",
                    metric.name()
                ))
            }
        }
    }
}

/// The basis of one point, or why it has none.
fn choose_basis(
    cfg: &GateConfig,
    ratios: bool,
    baseline: &Results,
    current: &Results,
    p: &PointRecord,
) -> Basis {
    if !ratios {
        return Basis::Absolute;
    }
    let both_have_reference = || {
        p.peer != "reference"
            && reference_twin(baseline, p).is_some()
            && reference_twin(current, p).is_some()
    };
    match cfg.ratio_to {
        RatioTo::Floor => Basis::Floor,
        RatioTo::Reference => Basis::Reference,
        RatioTo::Auto if both_have_reference() => Basis::Reference,
        RatioTo::Auto => Basis::Floor,
    }
}

/// Compares `metric` at one point; `Err` when a side has no usable value.
fn compare_metric(
    metric: Metric,
    t: f64,
    b: &PointRecord,
    b_scale: f64,
    c: &PointRecord,
    c_scale: f64,
) -> Result<MetricComparison, String> {
    let usable = |v: f64| v.is_finite() && v > 0.0;
    let bv: Vec<f64> = b.trials.iter().map(|x| metric.of_trial(x)).collect();
    if bv.is_empty() || !bv.iter().all(|v| usable(*v)) {
        return Err(format!(
            "the baseline has no usable {} at this point (trials: {bv:?})",
            metric.name()
        ));
    }
    // A current trial with 0 requests/s is a (very) slow trial; a latency of 0 means the
    // trial completed nothing and has no latency to compare.
    let cv: Vec<f64> = c
        .trials
        .iter()
        .map(|x| metric.of_trial(x))
        .filter(|v| v.is_finite() && (*v > 0.0 || (metric.higher_is_better() && *v >= 0.0)))
        .collect();
    if cv.is_empty() {
        return Err(format!(
            "the current run has no usable {} at this point",
            metric.name()
        ));
    }
    let bs = Sample::of(&bv, b_scale);
    let cs = Sample::of(&cv, c_scale);
    let change = cs.median / bs.median - 1.0;
    let lo = cs.min / bs.max - 1.0;
    let hi = cs.max / bs.min - 1.0;
    let verdict = if metric.higher_is_better() {
        if hi < -t {
            Verdict::Regression
        } else if lo > t {
            Verdict::Improvement
        } else if change.abs() > t {
            Verdict::WithinNoise
        } else {
            Verdict::WithinThreshold
        }
    } else if lo > t {
        Verdict::Regression
    } else if hi < -t {
        Verdict::Improvement
    } else if change.abs() > t {
        Verdict::WithinNoise
    } else {
        Verdict::WithinThreshold
    };
    Ok(MetricComparison {
        metric,
        baseline: bs,
        current: cs,
        change,
        interval: (lo, hi),
        verdict,
    })
}

/// Compares `current` with `baseline` point by point.
pub fn compare(
    baseline: &Results,
    current: &Results,
    cfg: &GateConfig,
) -> Result<GateReport, GateError> {
    if cfg.metrics.is_empty() {
        return Err(GateError::NoMetric);
    }
    if !cfg.max_regression.is_finite() || cfg.max_regression < 0.0 {
        return Err(GateError::Threshold(cfg.max_regression * 100.0));
    }
    if baseline.points.is_empty() {
        return Err(GateError::EmptyBaseline);
    }
    let same_machine = baseline.machine.fingerprint == current.machine.fingerprint;
    let ratios = match cfg.mode {
        CompareMode::Auto => !same_machine,
        CompareMode::Absolute => false,
        CompareMode::Ratio => true,
    };
    let time_refused = (cfg.mode == CompareMode::Auto && !same_machine && !cfg.counters_only)
        .then(|| {
            format!(
                "the runs come from different machines (baseline `{}`: {} × {}, current `{}`: {} × {}); a time measured on one says little about the other, so no time verdict is given. Measure both versions in one run on one machine with `loadgen ab BASELINE CURRENT` (docs/ci-gates.md), or force ratios to in-run references with `--compare ratio`. The machine-independent counters were compared",
                baseline.machine.fingerprint,
                baseline.machine.cpus,
                baseline.machine.cpu_model,
                current.machine.fingerprint,
                current.machine.cpus,
                current.machine.cpu_model
            )
        });
    let time_metrics: &[Metric] = if time_refused.is_some() || cfg.counters_only {
        &[]
    } else {
        &cfg.metrics
    };
    let mut warnings = Vec::new();
    if cfg.mode == CompareMode::Absolute && !same_machine {
        warnings.push(format!(
            "absolute comparison forced although the machines differ (baseline `{}`: {} × {}, current `{}`: {} × {}); expect differences that are the machines', not the server's",
            baseline.machine.fingerprint,
            baseline.machine.cpus,
            baseline.machine.cpu_model,
            current.machine.fingerprint,
            current.machine.cpus,
            current.machine.cpu_model
        ));
    }
    if baseline.tool != current.tool {
        warnings.push(format!(
            "the runs were made by different loadgen builds ({:?} and {:?})",
            baseline.tool, current.tool
        ));
    }
    let (bs, cs) = (&baseline.settings, &current.settings);
    let mut differ = Vec::new();
    if bs.duration_s != cs.duration_s {
        differ.push(format!("window {} s vs {} s", bs.duration_s, cs.duration_s));
    }
    if bs.warmup_s != cs.warmup_s {
        differ.push(format!("warm-up {} s vs {} s", bs.warmup_s, cs.warmup_s));
    }
    if bs.method != cs.method {
        differ.push(format!("method {} vs {}", bs.method, cs.method));
    }
    // Counters are per request: window and warm-up lengths do not change them.
    if !differ.is_empty() && time_refused.is_none() && !cfg.counters_only {
        warnings.push(format!(
            "the runs used different settings ({}); figures may differ for that reason",
            differ.join(", ")
        ));
    }
    let t = cfg.max_regression;
    let current_by_key: BTreeMap<String, &PointRecord> =
        current.points.iter().map(|p| (point_key(p), p)).collect();
    let baseline_keys: Vec<String> = baseline.points.iter().map(point_key).collect();
    let mut points = Vec::new();
    let mut single_trial = false;
    for (b, key) in baseline.points.iter().zip(&baseline_keys) {
        let series = b.series_key();
        let outcome = match current_by_key.get(key) {
            None => {
                let failure = current
                    .failures
                    .iter()
                    .find(|f| f.peer == b.peer && f.calls.map_or(true, |c| c == b.calls));
                PointOutcome::Missing {
                    reason: match failure {
                        Some(f) => format!("the current run could not measure it: {}", f.error),
                        None => "the current run did not measure this point".to_owned(),
                    },
                }
            }
            Some(c) => {
                let basis = choose_basis(cfg, ratios, baseline, current, b);
                let mut metrics = Vec::new();
                let mut problem = None;
                for &m in time_metrics {
                    let scales = scale(baseline, b, m, basis)
                        .map_err(|e| format!("baseline: {e}"))
                        .and_then(|bs| {
                            scale(current, c, m, basis)
                                .map(|cs| (bs, cs))
                                .map_err(|e| format!("current run: {e}"))
                        });
                    match scales.and_then(|(bs, cs)| compare_metric(m, t, b, bs, c, cs)) {
                        Ok(mc) => {
                            single_trial |= mc.baseline.trials < 2 || mc.current.trials < 2;
                            metrics.push(mc);
                        }
                        Err(e) => {
                            problem = Some(e);
                            break;
                        }
                    }
                }
                let counters = match (&b.counters, &c.counters) {
                    (Some(bc), Some(cc)) => Some(counters::compare(bc, cc)),
                    _ => None,
                };
                match problem {
                    Some(reason) => PointOutcome::Incomparable { reason },
                    None => PointOutcome::Compared {
                        basis,
                        metrics,
                        new_errors: if b.errors == 0 { c.errors } else { 0 },
                        counters,
                    },
                }
            }
        };
        points.push(PointReport {
            key: key.clone(),
            series,
            calls: b.calls,
            outcome,
        });
    }
    for c in &current.points {
        let key = point_key(c);
        if !baseline_keys.contains(&key) {
            points.push(PointReport {
                key,
                series: c.series_key(),
                calls: c.calls,
                outcome: PointOutcome::New,
            });
        }
    }
    if single_trial {
        warnings.push(
            "some points have a single trial on one side: the noise between trials is unknown there, so their verdicts rest on the threshold alone (sweep with --trials 3 or more)"
                .to_owned(),
        );
    }
    if baseline.points.iter().all(|p| p.counters.is_none()) {
        warnings.push(
            "the baseline has no machine-independent counters (made before loadgen recorded them); remake it to gate on them".to_owned(),
        );
    }
    Ok(GateReport {
        config: cfg.clone(),
        baseline_fingerprint: baseline.machine.fingerprint.clone(),
        current_fingerprint: current.machine.fingerprint.clone(),
        ratios: ratios && time_refused.is_none() && !cfg.counters_only,
        points,
        warnings,
        time_refused,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::floor::FloorResult;
    use crate::results::{FailureRecord, LoadgenRecord, Machine, ServerRecord, Settings};
    use crate::stats::LatencyUs;

    /// A trial with `rps` and a p50/p99 latency.
    pub(crate) fn trial(rps: f64, p50: f64, p99: f64) -> TrialRecord {
        TrialRecord {
            rps,
            ok: rps as u64,
            errors: 0,
            warmup_errors: 0,
            window_s: 1.0,
            latency_us: LatencyUs {
                p50,
                p90: p50 * 1.2,
                p99,
                p999: p99 * 1.5,
                max: p99 * 2.0,
                mean: p50,
            },
            service_us: None,
            saturated: None,
            unsent: 0,
            loadgen_cpu_s: 0.5,
            loadgen_cpu_ns_per_round_trip: 3000.0,
            server_cpu_s: Some(0.5),
            server_rss_kib: Some(4096),
            server_respawns: 0,
            counters: None,
        }
    }

    /// A closed-loop c1 point with these trials.
    pub(crate) fn point(peer: &str, calls: u32, trials: Vec<TrialRecord>) -> PointRecord {
        let rps = Spread::of(&trials.iter().map(|t| t.rps).collect::<Vec<_>>());
        PointRecord {
            peer: peer.into(),
            protocol: "MsgPack:1".into(),
            calls,
            concurrency: 1,
            kong_workers: 1,
            mode: "closed".into(),
            variant: "single".into(),
            via: "ipc".into(),
            target_rps: None,
            rps: rps.median,
            rps_spread: rps,
            rps_normalised: None,
            latency_us: trials.first().map(|t| t.latency_us).unwrap_or_default(),
            latency_p99_spread: Spread::default(),
            service_us: None,
            saturated: None,
            errors: 0,
            unsent: 0,
            warmup_errors: 0,
            error_kinds: BTreeMap::new(),
            verified_calls: calls as usize,
            time_per_request_us: 1e6 / rps.median.max(1e-9),
            hgrm: None,
            server: ServerRecord::default(),
            loadgen: LoadgenRecord::default(),
            counters: None,
            trials,
        }
    }

    /// A run on machine `fingerprint` with a floor RTT of `floor_rtt_us`.
    pub(crate) fn run(fingerprint: &str, floor_rtt_us: f64, points: Vec<PointRecord>) -> Results {
        let settings = Settings {
            warmup_s: 0.2,
            trials: 3,
            ..Settings::for_tests(vec![0, 10])
        };
        Results {
            tool: "loadgen test".into(),
            machine: Machine {
                fingerprint: fingerprint.into(),
                cpu_model: "test cpu".into(),
                cpus: 2,
                mem_total_kib: 1 << 20,
                kernel: "6.0".into(),
                arch: "x86_64".into(),
            },
            floor: vec![FloorResult {
                protocol: mock_kong::Protocol::MsgPack,
                request_bytes: 35,
                response_bytes: 67,
                round_trips: 1000,
                seconds: 1.0,
                round_trips_per_s: 1e6 / floor_rtt_us,
                rtt_us: LatencyUs {
                    p50: floor_rtt_us,
                    ..LatencyUs::default()
                },
                client_cpu_ns_per_round_trip: 2000.0,
                server_cpu_ns_per_round_trip: 2000.0,
            }],
            points,
            ..Results::empty("test", settings)
        }
    }

    /// Three trials around `rps` (± `spread` fraction), latency = 10⁶ / rps.
    pub(crate) fn trials(rps: f64, spread: f64) -> Vec<TrialRecord> {
        [1.0 - spread, 1.0, 1.0 + spread]
            .iter()
            .map(|f| {
                let r = rps * f;
                trial(r, 1e6 / r, 3e6 / r)
            })
            .collect()
    }

    fn verdict(r: &GateReport, key_part: &str, m: Metric) -> Verdict {
        let p = r
            .points
            .iter()
            .find(|p| p.key.contains(key_part))
            .unwrap_or_else(|| panic!("no point {key_part}"));
        match &p.outcome {
            PointOutcome::Compared { metrics, .. } => {
                metrics.iter().find(|x| x.metric == m).unwrap().verdict
            }
            o => panic!("{key_part}: {o:?}"),
        }
    }

    #[test]
    fn identical_runs_are_within_threshold_and_pass() {
        let b = run("m", 5.0, vec![point("reference", 0, trials(20000.0, 0.05))]);
        let r = compare(&b, &b.clone(), &GateConfig::new(10.0).unwrap()).unwrap();
        assert!(!r.ratios, "same fingerprint: absolute");
        assert_eq!(
            verdict(&r, "calls=0", Metric::Throughput),
            Verdict::WithinThreshold
        );
        assert_eq!(r.exit_code(), 0, "{}", r.headline());
    }

    #[test]
    fn a_clear_slowdown_is_a_regression_and_a_speedup_an_improvement() {
        let b = run(
            "m",
            5.0,
            vec![
                point("reference", 0, trials(20000.0, 0.05)),
                point("reference", 10, trials(8000.0, 0.05)),
            ],
        );
        let c = run(
            "m",
            5.0,
            vec![
                point("reference", 0, trials(20000.0, 0.05)),
                point("reference", 10, trials(4000.0, 0.05)),
            ],
        );
        let cfg = GateConfig::new(10.0).unwrap();
        let r = compare(&b, &c, &cfg).unwrap();
        assert_eq!(
            verdict(&r, "calls=10", Metric::Throughput),
            Verdict::Regression
        );
        assert_eq!(verdict(&r, "calls=10", Metric::P50), Verdict::Regression);
        assert_eq!(
            verdict(&r, "calls=0", Metric::Throughput),
            Verdict::WithinThreshold
        );
        assert_eq!(r.exit_code(), 1);
        // −50 %: the interval is [3800/8400, 4200/7600] − 1.
        let PointOutcome::Compared { metrics, .. } = &r.points[1].outcome else {
            panic!()
        };
        assert!((metrics[0].change + 0.5).abs() < 1e-9);
        assert!((metrics[0].interval.0 - (3800.0 / 8400.0 - 1.0)).abs() < 1e-9);
        assert!((metrics[0].interval.1 - (4200.0 / 7600.0 - 1.0)).abs() < 1e-9);
        // The other way round it is an improvement, not a failure.
        let r = compare(&c, &b, &cfg).unwrap();
        assert_eq!(
            verdict(&r, "calls=10", Metric::Throughput),
            Verdict::Improvement
        );
        assert_eq!(verdict(&r, "calls=10", Metric::P99), Verdict::Improvement);
        assert_eq!(r.exit_code(), 0);
    }

    #[test]
    fn a_change_beyond_the_threshold_but_not_the_noise_is_within_noise() {
        // Medians 15 % apart, but trials spread ±20 %: the intervals overlap.
        let b = run("m", 5.0, vec![point("go", 5, trials(10000.0, 0.2))]);
        let c = run("m", 5.0, vec![point("go", 5, trials(8500.0, 0.2))]);
        let r = compare(&b, &c, &GateConfig::new(10.0).unwrap()).unwrap();
        assert_eq!(
            verdict(&r, "calls=5", Metric::Throughput),
            Verdict::WithinNoise
        );
        assert_eq!(r.exit_code(), 0);
        // With tight trials the same medians are a regression.
        let b = run("m", 5.0, vec![point("go", 5, trials(10000.0, 0.01))]);
        let c = run("m", 5.0, vec![point("go", 5, trials(8500.0, 0.01))]);
        let r = compare(&b, &c, &GateConfig::new(10.0).unwrap()).unwrap();
        assert_eq!(
            verdict(&r, "calls=5", Metric::Throughput),
            Verdict::Regression
        );
        // And below the threshold it is within threshold, however tight.
        let r = compare(&b, &c, &GateConfig::new(20.0).unwrap()).unwrap();
        assert_eq!(
            verdict(&r, "calls=5", Metric::Throughput),
            Verdict::WithinThreshold
        );
    }

    /// The regression test of the perf gate that failed on another machine: times from two
    /// machines are not compared unless ratios are forced; the counters are.
    #[test]
    fn other_machines_get_no_time_verdict_but_their_counters_are_compared() {
        use crate::gate::counters::tests::record;
        let with_counters = |rps: f64, writes: f64| {
            let mut p = point("reference", 10, trials(rps, 0.03));
            p.counters = Some(record(10.0, writes));
            p
        };
        // Half the speed on the other machine: no verdict on time, the counters agree.
        let b = run("fast", 5.0, vec![with_counters(10000.0, 11.0)]);
        let c = run("slow", 19.0, vec![with_counters(5000.0, 11.0)]);
        let cfg = GateConfig::new(10.0).unwrap();
        let r = compare(&b, &c, &cfg).unwrap();
        let why = r.time_refused.as_deref().expect("time refused");
        assert!(
            why.contains("loadgen ab") && why.contains("--compare ratio"),
            "{why}"
        );
        assert_eq!(r.exit_code(), 2, "{}", r.headline());
        assert!(
            matches!(&r.points[0].outcome, PointOutcome::Compared { metrics, counters: Some(_), .. } if metrics.is_empty())
        );
        // A counter that grew is a verdict, whatever the machines.
        let c = run("slow", 19.0, vec![with_counters(5000.0, 22.0)]);
        let r = compare(&b, &c, &cfg).unwrap();
        assert_eq!(r.exit_code(), 1, "{}", r.headline());
        // --counters-only: a clean pass across machines.
        let mut only = cfg.clone();
        only.counters_only = true;
        let c = run("slow", 19.0, vec![with_counters(5000.0, 11.0)]);
        let r = compare(&b, &c, &only).unwrap();
        assert_eq!((r.exit_code(), r.time_refused.is_none()), (0, true));
        // --counters-only without counters in the baseline cannot judge.
        let old = run("fast", 5.0, vec![point("reference", 10, trials(1.0, 0.0))]);
        let r = compare(&old, &c, &only).unwrap();
        assert_eq!(r.exit_code(), 2);
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("no machine-independent counters")));
    }

    #[test]
    fn other_machines_are_compared_as_ratios_to_the_floor() {
        // The current machine is twice as fast in everything, floor included: no change.
        let b = run(
            "slow",
            10.0,
            vec![point("reference", 10, trials(5000.0, 0.03))],
        );
        let c = run(
            "fast",
            5.0,
            vec![point("reference", 10, trials(10000.0, 0.03))],
        );
        let mut cfg = GateConfig::new(10.0).unwrap();
        cfg.mode = CompareMode::Ratio;
        let r = compare(&b, &c, &cfg).unwrap();
        assert!(r.ratios);
        assert_eq!(
            verdict(&r, "calls=10", Metric::Throughput),
            Verdict::WithinThreshold
        );
        assert_eq!(
            verdict(&r, "calls=10", Metric::P50),
            Verdict::WithinThreshold
        );
        assert_eq!(r.exit_code(), 0);
        // Forced absolute, the same files show a (false) improvement, with a warning.
        let mut abs = cfg.clone();
        abs.mode = CompareMode::Absolute;
        let r = compare(&b, &c, &abs).unwrap();
        assert_eq!(
            verdict(&r, "calls=10", Metric::Throughput),
            Verdict::Improvement
        );
        assert!(r.warnings.iter().any(|w| w.contains("forced")));
        // On the fast machine the server got no faster: a regression relative to the floor.
        let c = run(
            "fast",
            5.0,
            vec![point("reference", 10, trials(5000.0, 0.03))],
        );
        let r = compare(&b, &c, &cfg).unwrap();
        assert_eq!(
            verdict(&r, "calls=10", Metric::Throughput),
            Verdict::Regression
        );
    }

    #[test]
    fn peers_are_compared_to_the_reference_server_of_the_same_run() {
        let pts = |go: f64, reference: f64| {
            vec![
                point("go", 10, trials(go, 0.02)),
                point("reference", 10, trials(reference, 0.02)),
            ]
        };
        // Everything 40 % slower on the other machine, floor unchanged: the floor alone would
        // call it a regression; the reference server of the same run says it is the machine.
        let b = run("a", 5.0, pts(6000.0, 8000.0));
        let c = run("b", 5.0, pts(3600.0, 4800.0));
        let mut cfg = GateConfig::new(10.0).unwrap();
        cfg.mode = CompareMode::Ratio;
        let r = compare(&b, &c, &cfg).unwrap();
        let go = r.points.iter().find(|p| p.key.starts_with("go")).unwrap();
        assert!(matches!(
            go.outcome,
            PointOutcome::Compared {
                basis: Basis::Reference,
                ..
            }
        ));
        assert_eq!(
            verdict(&r, "go ", Metric::Throughput),
            Verdict::WithinThreshold
        );
        assert_eq!(
            verdict(&r, "reference ", Metric::Throughput),
            Verdict::Regression
        );
        // Forcing the reference basis on the reference server itself compares it to itself.
        let mut only_ref = cfg.clone();
        only_ref.ratio_to = RatioTo::Reference;
        let r = compare(&b, &c, &only_ref).unwrap();
        assert_eq!(
            verdict(&r, "reference ", Metric::Throughput),
            Verdict::WithinThreshold
        );
        // Without the reference in the current run, a forced reference basis cannot compare.
        let c2 = run("b", 5.0, vec![point("go", 10, trials(3600.0, 0.02))]);
        let r = compare(&b, &c2, &only_ref).unwrap();
        assert!(matches!(
            r.points[0].outcome,
            PointOutcome::Incomparable { .. }
        ));
        assert_eq!(r.exit_code(), 2);
    }

    #[test]
    fn missing_new_failed_and_erroring_points() {
        let b = run(
            "m",
            5.0,
            vec![
                point("reference", 0, trials(20000.0, 0.05)),
                point("reference", 10, trials(8000.0, 0.05)),
            ],
        );
        let mut c = run(
            "m",
            5.0,
            vec![
                point("reference", 0, trials(20000.0, 0.05)),
                point("reference", 20, trials(4000.0, 0.05)),
            ],
        );
        c.failures.push(FailureRecord {
            peer: "reference".into(),
            calls: Some(10),
            concurrency: Some(1),
            error: "the sample request failed".into(),
        });
        let mut cfg = GateConfig::new(10.0).unwrap();
        let r = compare(&b, &c, &cfg).unwrap();
        let missing = &r.points[1];
        assert!(
            matches!(&missing.outcome, PointOutcome::Missing { reason } if reason.contains("sample request")),
            "{missing:?}"
        );
        assert!(matches!(r.points[2].outcome, PointOutcome::New));
        assert_eq!(r.exit_code(), 2, "a missing point is an error");
        cfg.allow_missing = true;
        let r = compare(&b, &c, &cfg).unwrap();
        assert_eq!(r.exit_code(), 0);
        // Errors in the current windows fail the point even when the figures look fine.
        let mut c = b.clone();
        c.points[0].errors = 3;
        let r = compare(&b, &c, &cfg).unwrap();
        assert!(r.points[0].is_regression());
        assert_eq!(r.exit_code(), 1);
        assert!(r.headline().contains("new errors"), "{}", r.headline());
    }

    #[test]
    fn single_trials_warn_and_bad_settings_are_refused() {
        let one = |rps: f64| vec![trial(rps, 1e6 / rps, 3e6 / rps)];
        let b = run("m", 5.0, vec![point("reference", 1, one(10000.0))]);
        let c = run("m", 5.0, vec![point("reference", 1, one(9500.0))]);
        let r = compare(&b, &c, &GateConfig::new(10.0).unwrap()).unwrap();
        assert!(r.warnings.iter().any(|w| w.contains("single trial")));
        assert_eq!(r.exit_code(), 0);
        let mut longer = c.clone();
        longer.settings.duration_s = 5.0;
        let r = compare(&b, &longer, &GateConfig::new(10.0).unwrap()).unwrap();
        let w = r.warnings.iter().find(|w| w.contains("different settings"));
        assert!(
            w.is_some_and(|w| w.contains("window 1 s vs 5 s") && !w.contains("method")),
            "{:?}",
            r.warnings
        );
        assert_eq!(GateConfig::new(-1.0), Err(GateError::Threshold(-1.0)));
        assert!(GateConfig::new(f64::NAN).is_err());
        let mut cfg = GateConfig::new(10.0).unwrap();
        cfg.metrics.clear();
        assert_eq!(compare(&b, &c, &cfg), Err(GateError::NoMetric));
        let empty = run("m", 5.0, Vec::new());
        assert_eq!(
            compare(&empty, &c, &GateConfig::new(10.0).unwrap()),
            Err(GateError::EmptyBaseline)
        );
        assert_eq!(Metric::parse("p99.9"), Ok(Metric::P999));
        assert!(matches!(
            Metric::parse("p42"),
            Err(GateError::UnknownMetric(_))
        ));
    }

    #[test]
    fn a_stalled_current_trial_counts_as_slow_and_a_bad_baseline_is_incomparable() {
        let b = run("m", 5.0, vec![point("reference", 1, trials(10000.0, 0.02))]);
        let mut c = b.clone();
        for t in &mut c.points[0].trials {
            t.rps = 0.0;
            t.latency_us = LatencyUs::default();
        }
        let mut cfg = GateConfig::new(10.0).unwrap();
        cfg.metrics = vec![Metric::Throughput];
        let r = compare(&b, &c, &cfg).unwrap();
        assert_eq!(
            verdict(&r, "calls=1", Metric::Throughput),
            Verdict::Regression
        );
        cfg.metrics = vec![Metric::P50];
        let r = compare(&b, &c, &cfg).unwrap();
        assert!(matches!(
            r.points[0].outcome,
            PointOutcome::Incomparable { .. }
        ));
        let r = compare(&c, &b, &cfg).unwrap();
        assert!(
            matches!(&r.points[0].outcome, PointOutcome::Incomparable { reason } if reason.contains("baseline")),
        );
    }
}
