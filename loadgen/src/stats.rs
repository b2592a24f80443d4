//! Statistics: HdrHistogram latency recording and summaries, median and spread over trials,
//! and the least-squares line `time per request = base + calls × per-call cost`.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram records exactly (larger values are clamped to it): 60 s in ns.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits (0.1 % resolution).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low 1, high ≥ 2 × low, sigfig 3).
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("sigfig 3 is always valid"))
    })
}

/// Records `ns`, clamping to the histogram's range instead of failing.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyUs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencyUs {
    /// The summary of `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> LatencyUs {
        if h.is_empty() {
            return LatencyUs::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencyUs {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The HdrHistogram "percentile distribution" text (`.hgrm`), values in microseconds, as
/// wrk2 prints with `--latency` and HdrHistogram's plotter reads.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if h.is_empty() {
        out.push_str("#[no samples]\n");
        return out;
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:12.3} {:14.12} {:10} {:>14}\n",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            v.count_since_last_iteration(),
            inv
        ));
    }
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n#[Buckets = {:12}, SubBuckets     = {:12}]\n",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len(),
        h.buckets(),
        h.distinct_values(),
    ));
    out
}

/// Median, minimum, maximum and relative spread of one figure over several trials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// `(max - min) / median × 100` (0 with fewer than two trials or a zero median).
    pub spread_pct: f64,
}

impl Spread {
    /// The spread of `values`; all zero for none.
    pub fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let (min, max) = (v[0], v[n - 1]);
        let spread_pct = if n > 1 && median != 0.0 {
            (max - min) / median * 100.0
        } else {
            0.0
        };
        Spread {
            median,
            min,
            max,
            spread_pct,
        }
    }
}

/// A least-squares line `y = base + slope × x` with its coefficient of determination.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearFit {
    /// Intercept (µs per request at 0 calls).
    pub base_us: f64,
    /// Slope (µs per PDK call).
    pub per_call_us: f64,
    /// R² of the fit (1 for a perfect line).
    pub r2: f64,
    /// Number of points fitted.
    pub points: usize,
}

impl LinearFit {
    /// Fits `(x, y)` points; `None` with fewer than two distinct x values.
    pub fn fit(points: &[(f64, f64)]) -> Option<LinearFit> {
        let pts: Vec<_> = points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let n = pts.len() as f64;
        if pts.len() < 2 {
            return None;
        }
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx == 0.0 {
            return None;
        }
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let slope = sxy / sxx;
        let base = my - slope * mx;
        let ss_tot: f64 = pts.iter().map(|p| (p.1 - my).powi(2)).sum();
        let ss_res: f64 = pts
            .iter()
            .map(|p| (p.1 - (base + slope * p.0)).powi(2))
            .sum();
        let r2 = if ss_tot == 0.0 {
            1.0
        } else {
            1.0 - ss_res / ss_tot
        };
        Some(LinearFit {
            base_us: base,
            per_call_us: slope,
            r2,
            points: pts.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_summary_in_microseconds() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            record(&mut h, us * 1000);
        }
        let s = LatencyUs::of(&h);
        assert!((s.p50 - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() < 2.0, "{s:?}");
        assert!((s.max - 1000.0).abs() < 1.0, "{s:?}");
        assert!(s.p90 < s.p99 && s.p99 <= s.p999 && s.p999 <= s.max);
        record(&mut h, u64::MAX);
        assert!(
            LatencyUs::of(&h).max >= 59_000_000.0,
            "clamped, not dropped"
        );
        assert_eq!(h.len(), 1001);
        let text = hgrm(&h);
        assert!(
            text.contains("Percentile") && text.contains("Total count"),
            "{text}"
        );
        assert_eq!(LatencyUs::of(&new_histogram()), LatencyUs::default());
    }

    #[test]
    fn spread_of_trials() {
        let s = Spread::of(&[100.0, 90.0, 110.0]);
        assert_eq!(s.median, 100.0);
        assert!((s.spread_pct - 20.0).abs() < 1e-9);
        assert_eq!(Spread::of(&[4.0, 2.0]).median, 3.0);
        assert_eq!(Spread::of(&[7.0]).spread_pct, 0.0);
        assert_eq!(Spread::of(&[]), Spread::default());
    }

    #[test]
    fn linear_fit_recovers_a_line() {
        let pts: Vec<_> = [0.0, 1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|&x| (x, 40.0 + 12.5 * x))
            .collect();
        let f = LinearFit::fit(&pts).unwrap();
        assert!((f.base_us - 40.0).abs() < 1e-9 && (f.per_call_us - 12.5).abs() < 1e-9);
        assert!((f.r2 - 1.0).abs() < 1e-12);
        let noisy = [(0.0, 10.0), (1.0, 30.0), (2.0, 20.0), (3.0, 40.0)];
        let g = LinearFit::fit(&noisy).unwrap();
        assert!(g.r2 < 0.9 && g.r2 > 0.0, "{g:?}");
        assert!(LinearFit::fit(&[(1.0, 2.0), (1.0, 3.0)]).is_none());
        assert!(LinearFit::fit(&[(1.0, 2.0)]).is_none());
    }
}
