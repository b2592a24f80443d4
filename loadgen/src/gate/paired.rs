//! The paired A/B verdict of `loadgen ab`: both sides measured in one run, trials interleaved,
//! judged on the per-pair ratios.
//!
//! # Why pairs
//!
//! A time measured on one machine says little about another (machines of one kind differ
//! several-fold in the cost of a socket round trip), and a shared machine drifts between slow
//! and fast phases that last seconds. `loadgen ab` therefore measures the baseline (A) and the
//! current (B) server in the same run, trial by trial in alternation (A B, then B A, ...), and
//! compares each trial of B with the trial of A next to it: a slow phase of the machine hits
//! both trials of a pair alike, and cancels in their ratio.
//!
//! # Forks
//!
//! Two server processes running the same code can differ by tens of percent for their whole
//! lifetime on a shared VM (where their memory landed, which CPU they wake on), so the pairs of
//! one process lifetime are not independent. `loadgen ab` starts both servers afresh several
//! times (*forks*, as JMH forks the JVM); the unit of the statistics is the fork: its ratio is
//! the geometric mean of its pairs' ratios. With one fork, every pair is a unit.
//!
//! # The rule
//!
//! For each point and metric, with `n` units, the ratios `r_i = B_i / A_i` (requests/s, or a
//! latency percentile) are summarised by their median, and by a distribution-free confidence
//! interval for that median from the order statistics (the sign test's interval:
//! `[r_(k), r_(n+1−k)]` with the largest `k` whose coverage `1 − 2·P(Bin(n, ½) < k)` is at
//! least [`CONFIDENCE`]). It assumes nothing about the shape of the noise, and a few units
//! spoiled by a burst of noise move it by a few places at most. With threshold `T`:
//!
//! * throughput: **regression** when the interval lies wholly below `1 − T`; **improvement**
//!   when it lies wholly above `1 + T`;
//! * latency: **regression** when the interval lies wholly above `1 + T`; **improvement** when
//!   wholly below `1 − T`;
//! * otherwise **within noise** when the median is beyond `1 ± T`, **within threshold** when
//!   not.
//!
//! At least [`MIN_PAIRS`] units are needed for a 95 % interval; with fewer the gate cannot
//! judge.

use crate::gate::compare::{point_key, Metric, Verdict};
use crate::gate::counters::{self, CountersOutcome};
use crate::results::{PointRecord, Results};

/// The confidence level of the interval for the median ratio.
pub const CONFIDENCE: f64 = 0.95;

/// The fewest units (forks, or pairs with one fork) that give a [`CONFIDENCE`] interval (6:
/// coverage 1 − 2/64 = 96.9 %).
pub const MIN_PAIRS: usize = 6;

/// `P(X < k)` for `X ~ Binomial(n, ½)`.
fn binomial_below(n: usize, k: usize) -> f64 {
    // Σ_{i<k} C(n, i) / 2^n, with C(n, i) built up as a float (n is small).
    let mut c = 1.0f64;
    let mut sum = 0.0;
    for i in 0..k.min(n + 1) {
        if i > 0 {
            c = c * (n + 1 - i) as f64 / i as f64;
        }
        sum += c;
    }
    sum / 2f64.powi(n as i32)
}

/// The median of `values` with a distribution-free interval at `level` or more:
/// `(median, low, high, coverage)`, or `None` when there are too few values for `level`.
pub fn median_interval(values: &[f64], level: f64) -> Option<(f64, f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    // The largest k (1-based) whose interval [v_(k), v_(n+1-k)] still covers `level`.
    let mut best = None;
    for k in 1..=n.div_ceil(2) {
        let coverage = 1.0 - 2.0 * binomial_below(n, k);
        if coverage >= level {
            best = Some((k, coverage));
        } else {
            break;
        }
    }
    let (k, coverage) = best?;
    Some((median, v[k - 1], v[n - k], coverage))
}

/// One metric judged on its pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedComparison {
    pub metric: Metric,
    /// Pairs with a usable value on both sides.
    pub pairs: usize,
    /// Units the interval rests on (forks, or pairs with one fork).
    pub units: usize,
    /// Median of the units' B/A.
    pub ratio: f64,
    /// The interval for the median ratio.
    pub interval: (f64, f64),
    /// Its coverage (≥ [`CONFIDENCE`]).
    pub coverage: f64,
    /// Medians of the absolute values, A and B (for display).
    pub baseline_median: f64,
    pub current_median: f64,
    pub verdict: Verdict,
}

impl PairedComparison {
    /// `ratio − 1`.
    pub fn change(&self) -> f64 {
        self.ratio - 1.0
    }
}

/// Why a metric could not be judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Unjudged {
    pub metric: Metric,
    pub reason: String,
}

/// Judges `metric` from the paired values `(a_i, b_i)` grouped into units (one `Vec` per fork;
/// a unit's ratio is the geometric mean of its usable pairs' ratios), with threshold `t`.
pub fn judge(
    metric: Metric,
    units: &[Vec<(f64, f64)>],
    t: f64,
) -> Result<PairedComparison, Unjudged> {
    let usable_pair = |(a, b): &(f64, f64)| {
        a.is_finite()
            && b.is_finite()
            && *a > 0.0
            && (*b > 0.0 || (metric.higher_is_better() && *b == 0.0))
    };
    let usable: Vec<(f64, f64)> = units
        .iter()
        .flatten()
        .copied()
        .filter(usable_pair)
        .collect();
    // A current throughput of 0 is a (very) slow trial: floor its ratio at 1e-6 so the
    // geometric mean stays finite.
    let ratios: Vec<f64> = units
        .iter()
        .filter_map(|u| {
            let logs: Vec<f64> = u
                .iter()
                .filter(|p| usable_pair(p))
                .map(|(a, b)| (b / a).max(1e-6).ln())
                .collect();
            (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
        })
        .collect();
    let Some((ratio, lo, hi, coverage)) = median_interval(&ratios, CONFIDENCE) else {
        return Err(Unjudged {
            metric,
            reason: format!(
                "{} usable unit(s) of {} ({} pair(s)); a {:.0} % interval for the median ratio needs at least {MIN_PAIRS} (more --forks, or --pairs with --forks 1)",
                ratios.len(),
                metric.name(),
                usable.len(),
                CONFIDENCE * 100.0
            ),
        });
    };
    let (worse, better) = if metric.higher_is_better() {
        (hi < 1.0 - t, lo > 1.0 + t)
    } else {
        (lo > 1.0 + t, hi < 1.0 - t)
    };
    let verdict = if worse {
        Verdict::Regression
    } else if better {
        Verdict::Improvement
    } else if (ratio - 1.0).abs() > t {
        Verdict::WithinNoise
    } else {
        Verdict::WithinThreshold
    };
    let med = |f: &dyn Fn(&(f64, f64)) -> f64| {
        crate::stats::Spread::of(&usable.iter().map(f).collect::<Vec<_>>()).median
    };
    Ok(PairedComparison {
        metric,
        pairs: usable.len(),
        units: ratios.len(),
        ratio,
        interval: (lo, hi),
        coverage,
        baseline_median: med(&|p| p.0),
        current_median: med(&|p| p.1),
        verdict,
    })
}

/// Splits `n` pairs into `forks` contiguous units (as `loadgen ab` runs them).
pub fn fork_bounds(n: usize, forks: usize) -> Vec<std::ops::Range<usize>> {
    let f = forks.clamp(1, n.max(1));
    (0..f).map(|k| n * k / f..n * (k + 1) / f).collect()
}

/// How `loadgen ab` judges.
#[derive(Debug, Clone, PartialEq)]
pub struct AbConfig {
    /// Threshold as a fraction (0.10 = 10 %).
    pub max_regression: f64,
    pub metrics: Vec<Metric>,
    /// Whether the counters are compared too.
    pub counters: bool,
}

/// Default threshold of `loadgen ab`: pairing cancels the machine's drift, so a smaller change
/// than a two-run comparison's can be told from noise.
pub const DEFAULT_AB_THRESHOLD_PCT: f64 = 10.0;

/// One point of an A/B run, judged.
#[derive(Debug, Clone, PartialEq)]
pub struct AbPoint {
    /// `protocol cN mode calls=N` (the sides' labels are the report's).
    pub key: String,
    pub calls: u32,
    pub metrics: Vec<PairedComparison>,
    pub unjudged: Vec<Unjudged>,
    /// `None` when a side has no counters.
    pub counters: Option<CountersOutcome>,
    /// Errors in the windows of each side.
    pub baseline_errors: u64,
    pub current_errors: u64,
    /// Server CPU per request, µs, medians of each side (for the explanation).
    pub server_cpu_us: (Option<f64>, Option<f64>),
}

impl AbPoint {
    /// Errors on the current side where the baseline had none.
    pub fn new_errors(&self) -> u64 {
        if self.baseline_errors == 0 {
            self.current_errors
        } else {
            0
        }
    }

    /// Whether the point fails the gate: a time regression, a counter beyond its tolerance, or
    /// new errors.
    pub fn is_regression(&self) -> bool {
        self.new_errors() > 0
            || self
                .metrics
                .iter()
                .any(|m| m.verdict == Verdict::Regression)
            || self
                .counters
                .as_ref()
                .is_some_and(CountersOutcome::regressed)
    }

    /// Why the point regressed, in sentences (empty when it did not).
    pub fn explanation(&self) -> Vec<String> {
        if !self.is_regression() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let grew: Vec<String> = self
            .counters
            .iter()
            .flat_map(CountersOutcome::regressions)
            .map(|c| c.explain())
            .collect();
        let slower = self
            .metrics
            .iter()
            .any(|m| m.verdict == Verdict::Regression);
        if slower && grew.is_empty() {
            let cpu = match self.server_cpu_us {
                (Some(a), Some(b)) if a > 0.0 => format!(
                    " The server's CPU per request went from {a:.1} to {b:.1} µs ({:+.0} %).",
                    (b / a - 1.0) * 100.0
                ),
                _ => String::new(),
            };
            out.push(format!(
                "slower with the same work per request: every counter (PDK calls, round trips, bytes, system calls) is unchanged, so each request takes longer to do the same things.{cpu}"
            ));
        }
        out.extend(grew);
        if self.new_errors() > 0 {
            out.push(format!(
                "{} failed request(s) in the current side's windows; the baseline had none",
                self.new_errors()
            ));
        }
        out
    }
}

/// The whole A/B verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct AbReport {
    pub config: AbConfig,
    pub baseline_label: String,
    pub current_label: String,
    pub fingerprint: String,
    pub points: Vec<AbPoint>,
    /// Points measured on neither side (a side could not prepare them), with the reason.
    pub missing: Vec<String>,
    pub warnings: Vec<String>,
}

impl AbReport {
    /// 1: a regression somewhere; 2: nothing regressed but something could not be judged (or
    /// nothing was compared); 0: no regression.
    pub fn exit_code(&self) -> i32 {
        if self.points.iter().any(AbPoint::is_regression) {
            1
        } else if self.points.is_empty()
            || !self.missing.is_empty()
            || self.points.iter().any(|p| !p.unjudged.is_empty())
        {
            2
        } else {
            0
        }
    }

    /// One line: the state and the counts.
    pub fn headline(&self) -> String {
        let state = match self.exit_code() {
            0 => "no regression",
            1 => "REGRESSION",
            _ => "cannot judge",
        };
        let count = |v: Verdict| {
            self.points
                .iter()
                .flat_map(|p| &p.metrics)
                .filter(|m| m.verdict == v)
                .count()
        };
        let counter_regressions = self
            .points
            .iter()
            .filter(|p| p.counters.as_ref().is_some_and(CountersOutcome::regressed))
            .count();
        format!(
            "{state}: {} point(s), {} vs {} paired, threshold {:.0} %: {} regression(s), {} improvement(s), {} within noise, {} within threshold; counters beyond tolerance at {counter_regressions} point(s)",
            self.points.len(),
            self.current_label,
            self.baseline_label,
            self.config.max_regression * 100.0,
            count(Verdict::Regression),
            count(Verdict::Improvement),
            count(Verdict::WithinNoise),
            count(Verdict::WithinThreshold),
        )
    }
}

/// The key of a point without its peer label (the sides have different labels).
fn shape_key(p: &PointRecord) -> String {
    let key = point_key(p);
    key.strip_prefix(&p.peer)
        .map(|k| k.trim_start().to_owned())
        .unwrap_or(key)
}

/// Judges an A/B run: point `j` of `baseline` against point `j` of `current`, trial `i`
/// against trial `i`.
pub fn compare_runs(baseline: &Results, current: &Results, cfg: &AbConfig) -> AbReport {
    let t = cfg.max_regression;
    let mut points = Vec::new();
    let mut warnings = Vec::new();
    for (a, b) in baseline.points.iter().zip(&current.points) {
        let key = shape_key(b);
        if (a.calls, a.concurrency, &a.mode) != (b.calls, b.concurrency, &b.mode) {
            warnings.push(format!(
                "point {key}: the sides measured different points ({} / {}); not compared",
                shape_key(a),
                key
            ));
            continue;
        }
        let mut metrics = Vec::new();
        let mut unjudged = Vec::new();
        let forks = current.settings.forks.unwrap_or(1);
        for &m in &cfg.metrics {
            let pairs: Vec<(f64, f64)> = a
                .trials
                .iter()
                .zip(&b.trials)
                .map(|(x, y)| (m.of_trial(x), m.of_trial(y)))
                .collect();
            let units: Vec<Vec<(f64, f64)>> = fork_bounds(pairs.len(), forks)
                .into_iter()
                .map(|r| pairs[r].to_vec())
                .collect();
            match judge(m, &units, t) {
                Ok(c) => metrics.push(c),
                Err(u) => unjudged.push(u),
            }
        }
        let counters = if cfg.counters {
            match (&a.counters, &b.counters) {
                (Some(ca), Some(cb)) => Some(counters::compare(ca, cb)),
                _ => None,
            }
        } else {
            None
        };
        points.push(AbPoint {
            key,
            calls: b.calls,
            metrics,
            unjudged,
            counters,
            baseline_errors: a.errors,
            current_errors: b.errors,
            server_cpu_us: (a.server.cpu_us_per_request, b.server.cpu_us_per_request),
        });
    }
    let mut missing: Vec<String> = baseline
        .failures
        .iter()
        .chain(&current.failures)
        .map(|f| {
            format!(
                "{} calls={}: {}",
                f.peer,
                f.calls.map_or("?".into(), |c| c.to_string()),
                f.error
            )
        })
        .collect();
    if baseline.points.len() != current.points.len() {
        missing.push(format!(
            "the sides measured {} and {} points",
            baseline.points.len(),
            current.points.len()
        ));
    }
    if let Some(why) = baseline
        .syscall_counting
        .as_ref()
        .or(current.syscall_counting.as_ref())
    {
        warnings.push(format!(
            "system calls were not counted exactly ({why}); the syscall counters come from /proc/<pid>/io, which misses recv/send"
        ));
    }
    AbReport {
        config: cfg.clone(),
        baseline_label: baseline
            .points
            .first()
            .map_or("baseline".into(), |p| p.peer.clone()),
        current_label: current
            .points
            .first()
            .map_or("current".into(), |p| p.peer.clone()),
        fingerprint: current.machine.fingerprint.clone(),
        points,
        missing,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_the_sign_tests() {
        assert!((binomial_below(10, 2) - 11.0 / 1024.0).abs() < 1e-12);
        assert_eq!(binomial_below(6, 0), 0.0);
        // n = 5 cannot reach 95 % ([min, max] covers 93.75 %); n = 6 can.
        assert!(median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95).is_none());
        let (m, lo, hi, cov) = median_interval(&[3.0, 1.0, 2.0, 6.0, 5.0, 4.0], 0.95).unwrap();
        assert_eq!((m, lo, hi), (3.5, 1.0, 6.0));
        assert!((cov - (1.0 - 2.0 / 64.0)).abs() < 1e-12);
        // n = 10: [x_(2), x_(9)], coverage 1 − 2·11/1024.
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        let (_, lo, hi, cov) = median_interval(&v, 0.95).unwrap();
        assert_eq!((lo, hi), (2.0, 9.0));
        assert!((cov - (1.0 - 22.0 / 1024.0)).abs() < 1e-12);
        // n = 20: [x_(6), x_(15)] (P(X < 6) = 0.0207).
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let (_, lo, hi, _) = median_interval(&v, 0.95).unwrap();
        assert_eq!((lo, hi), (6.0, 15.0));
    }

    /// One unit per pair.
    fn pairs(a: f64, factors: &[f64]) -> Vec<Vec<(f64, f64)>> {
        factors.iter().map(|f| vec![(a, a * f)]).collect()
    }

    #[test]
    fn a_clear_slowdown_is_a_regression_and_noise_is_not() {
        let slow = pairs(1000.0, &[0.55, 0.6, 0.58, 0.57, 0.62, 0.59, 0.6, 0.56]);
        let c = judge(Metric::Throughput, &slow, 0.10).unwrap();
        assert_eq!(c.verdict, Verdict::Regression);
        assert!(c.interval.1 < 0.9 && c.pairs == 8 && c.units == 8);
        // The same ratios as latencies (B/A < 1: faster) are an improvement.
        assert_eq!(
            judge(Metric::P50, &slow, 0.10).unwrap().verdict,
            Verdict::Improvement
        );
        // A/A: ratios scattered around 1, two wild pairs: nothing.
        let aa = pairs(1000.0, &[1.02, 0.97, 1.01, 0.6, 1.0, 0.99, 1.6, 1.03]);
        let c = judge(Metric::Throughput, &aa, 0.10).unwrap();
        assert_eq!(c.verdict, Verdict::WithinThreshold, "{c:?}");
        // Moved beyond the threshold but with an interval that crosses it: within noise.
        let mixed = pairs(1000.0, &[0.7, 0.75, 1.1, 0.8, 0.72, 1.05, 0.85, 0.78]);
        assert_eq!(
            judge(Metric::Throughput, &mixed, 0.10).unwrap().verdict,
            Verdict::WithinNoise
        );
    }

    /// A lucky server process shifts every pair of its fork: with forks as units it counts
    /// once, not once per pair.
    #[test]
    fn a_fork_counts_as_one_unit() {
        // 6 forks of 3 pairs; one fork 40 % off in every pair.
        let mut units: Vec<Vec<(f64, f64)>> = (0..6)
            .map(|k| vec![(100.0, 100.0 * (1.0 + 0.01 * k as f64)); 3])
            .collect();
        units[2] = vec![(100.0, 60.0); 3];
        let c = judge(Metric::Throughput, &units, 0.1).unwrap();
        assert_eq!((c.units, c.pairs), (6, 18));
        assert_eq!(c.verdict, Verdict::WithinThreshold, "{c:?}");
        // The geometric mean within a unit: ratios 0.5 and 2 make 1.
        let u = vec![vec![(10.0, 5.0), (10.0, 20.0)]; 6];
        let c = judge(Metric::Throughput, &u, 0.1).unwrap();
        assert!((c.ratio - 1.0).abs() < 1e-12, "{c:?}");
        assert_eq!(fork_bounds(20, 10)[3], 6..8);
        assert_eq!(fork_bounds(5, 10).len(), 5);
        assert_eq!(fork_bounds(7, 3), vec![0..2, 2..4, 4..7]);
    }

    #[test]
    fn too_few_pairs_cannot_be_judged() {
        let e = judge(Metric::Throughput, &pairs(10.0, &[0.5; 5]), 0.1).unwrap_err();
        assert!(
            e.reason.contains("5 usable unit(s)") && e.reason.contains("--forks"),
            "{e:?}"
        );
        // A trial with no requests on the baseline side is unusable; zero current throughput
        // is a (very) slow trial.
        let mut p = pairs(10.0, &[0.5; 6]);
        p[0][0] = (0.0, 5.0);
        assert!(judge(Metric::Throughput, &p, 0.1).is_err());
        let mut p = pairs(10.0, &[0.5; 6]);
        p[0][0].1 = 0.0;
        assert_eq!(
            judge(Metric::Throughput, &p, 0.1).unwrap().verdict,
            Verdict::Regression
        );
    }
}
