//! `loadgen ab`: two servers (or two builds of one) measured in one run, trials interleaved,
//! for the paired verdict of [`crate::gate::paired`].
//!
//! Both servers are started once and kept for the whole run. Every point (calls, concurrency,
//! mode) is prepared on both sides, then the run goes in rounds: in each round every point gets
//! one trial per side, back to back, the side that goes first alternating from one pair to the
//! next (A B, B A, A B, ...) so that neither side always runs on a machine that has just warmed
//! up or just been disturbed. A round visits every point before the next round starts, so the
//! pairs of one point are spread over the whole run. The result is one [`Results`] per side
//! whose trials line up: trial `i` of a point on one side and trial `i` of the same point on the
//! other side form pair `i`.

use std::path::PathBuf;
use std::time::Duration;

use mock_kong::session::{Session, SessionOptions};
use mock_kong::target::{self, Placement, TargetSpec};
use mock_kong::Protocol;

use crate::driver::{self, DriverError, Mode, PointSpec, PreparedPoint, TrialResult};
use crate::results::{FailureRecord, PointRecord, Results, Settings};
use crate::sweep::{self, Progress, PLUGIN};

/// One side of an A/B run.
#[derive(Debug, Clone)]
pub struct AbSide {
    /// The label in reports and results (`reference+slow-pdk`, `go`, `baseline`, ...).
    pub label: String,
    pub spec: TargetSpec,
}

/// Why a side description cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SideError {
    #[error("unknown protocol {0:?} in {1:?}: use reference:msgpack or reference:protobuf")]
    Protocol(String, String),
    #[error("faults (`+NAME`) apply to the reference server only, not to {0:?}")]
    FaultOnPeer(String),
    #[error("an empty side: give `reference[:msgpack|:protobuf][+FAULT...]`, a peer name, or --baseline-start-cmd/--current-start-cmd")]
    Empty,
}

/// Parses `reference[:msgpack|:protobuf][+FAULT...]` or a peer name of `registry`. `exe` is the
/// binary that serves `reference` (another build's `loadgen` or `mock-kong`; default: this one).
pub fn parse_side(
    text: &str,
    exe: Option<PathBuf>,
    registry: &std::path::Path,
) -> Result<AbSide, SideError> {
    let text = text.trim();
    let mut parts = text.split('+');
    let base = parts.next().unwrap_or_default().trim();
    let faults: Vec<String> = parts.map(|f| f.trim().to_owned()).collect();
    if base.is_empty() {
        return Err(SideError::Empty);
    }
    let (name, protocol) = match base.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (base, None),
    };
    if name == "reference" {
        let protocol = match protocol {
            None | Some("msgpack") => Protocol::MsgPack,
            Some("protobuf") => Protocol::ProtoBuf,
            Some(other) => return Err(SideError::Protocol(other.to_owned(), text.to_owned())),
        };
        return Ok(AbSide {
            label: text.to_owned(),
            spec: TargetSpec::Reference {
                protocol,
                exe,
                faults,
            },
        });
    }
    if !faults.is_empty() {
        return Err(SideError::FaultOnPeer(text.to_owned()));
    }
    Ok(AbSide {
        label: base.to_owned(),
        spec: TargetSpec::Peer {
            name: base.to_owned(),
            registry: registry.to_owned(),
        },
    })
}

/// Everything an A/B run needs.
#[derive(Debug, Clone)]
pub struct AbPlan {
    pub baseline: AbSide,
    pub current: AbSide,
    pub calls: Vec<u32>,
    pub concurrency: Vec<usize>,
    pub modes: Vec<Mode>,
    pub kong_workers: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Trials per side and point (the pairs the verdict is taken on).
    pub pairs: usize,
    pub method: String,
    pub session: SessionOptions,
    pub command: String,
    pub runtime_threads: usize,
}

impl AbPlan {
    /// The points in run order: modes × concurrency × calls.
    pub fn points(&self) -> Vec<(Mode, usize, u32)> {
        let mut v = Vec::new();
        for &m in &self.modes {
            for &c in &self.concurrency {
                for &n in &self.calls {
                    v.push((m, c, n));
                }
            }
        }
        v
    }

    /// Trials in all (both sides), for the progress bar.
    pub fn total_trials(&self) -> u64 {
        (self.points().len() * self.pairs * 2) as u64
    }

    fn settings(&self) -> Settings {
        Settings {
            calls: self.calls.clone(),
            concurrency: self.concurrency.clone(),
            modes: self.modes.iter().map(|m| m.name().to_owned()).collect(),
            open_rate: self.modes.iter().find_map(|m| match m {
                Mode::Open { rate } => Some(*rate),
                Mode::Closed => None,
            }),
            duration_s: self.duration.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            trials: self.pairs,
            kong_workers: self.kong_workers,
            multicore_workers: None,
            method: self.method.clone(),
            runtime_threads: self.runtime_threads,
        }
    }
}

/// Why an A/B run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AbError {
    #[error("the {side} side ({label}) cannot be started: {error}")]
    Start {
        side: &'static str,
        label: String,
        error: String,
    },
}

/// Both sides' results; trial `i` of point `j` on one side pairs with trial `i` of point `j`
/// on the other.
#[derive(Debug, Clone)]
pub struct AbRun {
    pub baseline: Results,
    pub current: Results,
}

async fn open(
    side: &AbSide,
    which: &'static str,
    opts: &SessionOptions,
) -> Result<Session, AbError> {
    let err = |error: String| AbError::Start {
        side: which,
        label: side.label.clone(),
        error,
    };
    let resolved = target::resolve(&side.spec, &Placement::default(), PLUGIN)
        .map_err(|e| err(e.to_string()))?;
    Session::open(resolved, opts)
        .await
        .map_err(|e| err(e.to_string()))
}

/// A point's sample request is retried for a few seconds (a server being respawned).
async fn prepare(session: &Session, spec: PointSpec) -> Result<PreparedPoint, DriverError> {
    let mut attempt = 0;
    loop {
        match driver::prepare(session, PLUGIN, spec.clone()).await {
            Ok(p) => return Ok(p),
            Err(DriverError::Sample { .. }) if attempt < 6 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Measures both sides, interleaved. Points that cannot be prepared on a side are recorded as
/// that side's failures and measured on neither (there would be nothing to pair with).
pub async fn run(plan: &AbPlan, progress: &dyn Progress) -> Result<AbRun, AbError> {
    let a = open(&plan.baseline, "baseline", &plan.session).await?;
    let b = match open(&plan.current, "current", &plan.session).await {
        Ok(b) => b,
        Err(e) => {
            let _ = a.close().await;
            return Err(e);
        }
    };
    let mut ra = Results::empty(&plan.command, plan.settings());
    let mut rb = Results::empty(&plan.command, plan.settings());
    let sides = [(&a, &plan.baseline), (&b, &plan.current)];

    // Prepare every point on both sides.
    let mut points: Vec<(String, [PreparedPoint; 2])> = Vec::new();
    for (mode, concurrency, calls) in plan.points() {
        let spec = PointSpec {
            calls,
            method: plan.method.clone(),
            concurrency,
            kong_workers: plan.kong_workers,
            mode,
            warmup: plan.warmup,
            duration: plan.duration,
        };
        let label = format!("{} c={concurrency} calls={calls}", mode.name());
        progress.point(&format!("preparing {label}"));
        let pa = prepare(&a, spec.clone()).await;
        let pb = prepare(&b, spec).await;
        match (pa, pb) {
            (Ok(pa), Ok(pb)) => {
                for (p, (_, side)) in [&pa, &pb].into_iter().zip(sides) {
                    if let Some(w) = p.call_count_warning() {
                        progress.note(&format!("{} {label}: warning: {w}", side.label));
                    }
                }
                points.push((label, [pa, pb]));
            }
            (pa, pb) => {
                for (res, (results, (_, side))) in [pa.err(), pb.err()]
                    .into_iter()
                    .zip([&mut ra, &mut rb].into_iter().zip(sides))
                {
                    if let Some(e) = res {
                        progress.note(&format!("{} {label}: cannot be measured: {e}", side.label));
                        results.failures.push(FailureRecord {
                            peer: side.label.clone(),
                            calls: Some(calls),
                            concurrency: Some(concurrency),
                            error: e.to_string(),
                        });
                    }
                }
                for _ in 0..plan.pairs * 2 {
                    progress.trial_done();
                }
            }
        }
    }

    // Rounds: every point once per round, one trial per side, the first side alternating.
    let mut trials: Vec<[Vec<TrialResult>; 2]> = points.iter().map(|_| [vec![], vec![]]).collect();
    let mut flip = false;
    for round in 0..plan.pairs {
        for (i, (label, prepared)) in points.iter().enumerate() {
            progress.point(&format!("pair {}/{} {label}", round + 1, plan.pairs));
            let order = if flip { [1, 0] } else { [0, 1] };
            flip = !flip;
            for side in order {
                let session = sides[side].0;
                let t = driver::run_trial(session, &prepared[side], None).await;
                trials[i][side].push(t);
                progress.trial_done();
            }
        }
    }

    for ((_, prepared), per_side) in points.iter().zip(&trials) {
        for (side, results) in [&mut ra, &mut rb].into_iter().enumerate() {
            let session = sides[side].0;
            let p = &prepared[side];
            sweep::note_counting(results, &per_side[side]);
            results.points.push(PointRecord::from_trials(
                &sides[side].1.label,
                session.protocol().as_str(),
                p.spec.calls,
                p.spec.concurrency,
                p.spec.kong_workers,
                p.spec.mode,
                "single",
                p.verified_calls,
                &per_side[side],
            ));
        }
    }
    let _ = a.close().await;
    let _ = b.close().await;
    ra.close();
    rb.close();
    Ok(AbRun {
        baseline: ra,
        current: rb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_parse() {
        let reg = std::path::Path::new("peers.toml");
        let s = parse_side("reference", None, reg).unwrap();
        assert!(matches!(
            s.spec,
            TargetSpec::Reference { protocol: Protocol::MsgPack, ref faults, .. } if faults.is_empty()
        ));
        let s = parse_side("reference:protobuf+slow-pdk+split-writes", None, reg).unwrap();
        assert_eq!(s.label, "reference:protobuf+slow-pdk+split-writes");
        match s.spec {
            TargetSpec::Reference {
                protocol, faults, ..
            } => {
                assert_eq!(protocol, Protocol::ProtoBuf);
                assert_eq!(faults, ["slow-pdk", "split-writes"]);
            }
            other => panic!("{other:?}"),
        }
        let s = parse_side("go", None, reg).unwrap();
        assert!(matches!(s.spec, TargetSpec::Peer { ref name, .. } if name == "go"));
        assert_eq!(
            parse_side("reference:grpc", None, reg).unwrap_err(),
            SideError::Protocol("grpc".into(), "reference:grpc".into())
        );
        assert_eq!(
            parse_side("go+slow-pdk", None, reg).unwrap_err(),
            SideError::FaultOnPeer("go+slow-pdk".into())
        );
        assert_eq!(parse_side(" ", None, reg).unwrap_err(), SideError::Empty);
    }
}
