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
//!
//! The run is split into *forks*: both servers are started afresh (and every point prepared
//! again) a few times, so that a difference between two server processes that has nothing to do
//! with their code (one landed luckier in memory or on the CPU; seen here as 25 % between two
//! identical servers, steady for a whole process lifetime) varies between forks and shows in the
//! spread of the pairs instead of posing as a regression.

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
    /// How many times both servers are started afresh during the run (the pairs are spread
    /// over the forks).
    pub forks: usize,
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
            forks: Some(self.forks.clamp(1, self.pairs.max(1))),
            plugin: None,
            plugin_config: None,
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

/// The order of the two sides' trials in pair `round` of point `point`: each point alternates
/// from one round to the next (A B, B A, A B, ...), and neighbouring points start on opposite
/// sides. (A single alternation over the run would give each point one fixed order whenever
/// the number of points is even.)
pub fn first_side(round: usize, point: usize) -> [usize; 2] {
    if (round + point) % 2 == 0 {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// Opens both sides, the baseline first when `baseline_first`.
async fn open_both(plan: &AbPlan, baseline_first: bool) -> Result<[Session; 2], AbError> {
    let order: [(&AbSide, &'static str); 2] =
        [(&plan.baseline, "baseline"), (&plan.current, "current")];
    let (first, second) = if baseline_first { (0, 1) } else { (1, 0) };
    let s1 = open(order[first].0, order[first].1, &plan.session).await?;
    let s2 = match open(order[second].0, order[second].1, &plan.session).await {
        Ok(s) => s,
        Err(e) => {
            let _ = s1.close().await;
            return Err(e);
        }
    };
    Ok(if baseline_first { [s1, s2] } else { [s2, s1] })
}

/// Measures both sides, interleaved, in `plan.forks` forks: each fork starts both servers
/// afresh and prepares every point again (new connections, new instances), so that whatever
/// makes one server process (or one set of connections) luckier than another (where its memory
/// landed, which CPU it woke on) varies from fork to fork and shows in the spread of the pairs,
/// as JMH forks the JVM for the same reason. Points that cannot be prepared on a side are
/// recorded as that side's failures and measured on neither.
pub async fn run(plan: &AbPlan, progress: &dyn Progress) -> Result<AbRun, AbError> {
    let mut ra = Results::empty(&plan.command, plan.settings());
    let mut rb = Results::empty(&plan.command, plan.settings());
    let labels = [&plan.baseline.label, &plan.current.label];
    let specs: Vec<(String, PointSpec)> = plan
        .points()
        .into_iter()
        .map(|(mode, concurrency, calls)| {
            (
                format!("{} c={concurrency} calls={calls}", mode.name()),
                PointSpec {
                    calls,
                    method: plan.method.clone(),
                    concurrency,
                    kong_workers: plan.kong_workers,
                    mode,
                    warmup: plan.warmup,
                    duration: plan.duration,
                    custom: None,
                },
            )
        })
        .collect();
    let mut trials: Vec<[Vec<TrialResult>; 2]> = specs.iter().map(|_| [vec![], vec![]]).collect();
    let mut alive = vec![true; specs.len()];
    let mut verified = vec![[0usize; 2]; specs.len()];
    let mut protocols = [String::new(), String::new()];
    let forks = plan.forks.clamp(1, plan.pairs.max(1));
    let mut round = 0;
    for fork in 0..forks {
        let rounds_here = plan.pairs * (fork + 1) / forks - plan.pairs * fork / forks;
        let sessions = open_both(plan, fork % 2 == 0).await?;
        for (side, s) in sessions.iter().enumerate() {
            protocols[side] = s.protocol().as_str().to_owned();
        }
        // Prepare the points still measured on both sides.
        let mut prepared: Vec<Option<[PreparedPoint; 2]>> = Vec::with_capacity(specs.len());
        for (j, (label, spec)) in specs.iter().enumerate() {
            if !alive[j] {
                prepared.push(None);
                continue;
            }
            progress.point(&format!("fork {}/{forks}: preparing {label}", fork + 1));
            let pa = prepare(&sessions[0], spec.clone()).await;
            let pb = prepare(&sessions[1], spec.clone()).await;
            match (pa, pb) {
                (Ok(pa), Ok(pb)) => {
                    for (side, p) in [&pa, &pb].into_iter().enumerate() {
                        verified[j][side] = p.verified_calls;
                        if let (0, Some(w)) = (fork, p.call_count_warning()) {
                            progress.note(&format!("{} {label}: warning: {w}", labels[side]));
                        }
                    }
                    prepared.push(Some([pa, pb]));
                }
                (pa, pb) => {
                    for (side, (res, results)) in [pa.err(), pb.err()]
                        .into_iter()
                        .zip([&mut ra, &mut rb])
                        .enumerate()
                    {
                        if let Some(e) = res {
                            progress.note(&format!(
                                "{} {label}: cannot be measured: {e}",
                                labels[side]
                            ));
                            results.failures.push(FailureRecord {
                                peer: labels[side].clone(),
                                calls: Some(spec.calls),
                                concurrency: Some(spec.concurrency),
                                error: e.to_string(),
                            });
                        }
                    }
                    alive[j] = false;
                    let done = trials[j][0].len() + trials[j][1].len();
                    for _ in done..plan.pairs * 2 {
                        progress.trial_done();
                    }
                    prepared.push(None);
                }
            }
        }
        // Rounds: every point once per round, one trial per side, the order alternating.
        for _ in 0..rounds_here {
            for (j, p) in prepared.iter().enumerate() {
                let Some(p) = p else { continue };
                progress.point(&format!(
                    "fork {}/{forks}, pair {}/{}: {}",
                    fork + 1,
                    round + 1,
                    plan.pairs,
                    specs[j].0
                ));
                for side in first_side(round, j) {
                    let t = driver::run_trial(&sessions[side], &p[side], None).await;
                    trials[j][side].push(t);
                    progress.trial_done();
                }
            }
            round += 1;
        }
        drop(prepared);
        for s in sessions {
            let _ = s.close().await;
        }
    }

    for (j, (_, spec)) in specs.iter().enumerate() {
        if !alive[j] {
            continue;
        }
        for (side, results) in [&mut ra, &mut rb].into_iter().enumerate() {
            sweep::note_counting(results, &trials[j][side]);
            results.points.push(PointRecord::from_trials(
                labels[side],
                &protocols[side],
                spec.calls,
                spec.concurrency,
                spec.kong_workers,
                spec.mode,
                "single",
                verified[j][side],
                &trials[j][side],
            ));
        }
    }
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

    /// Regression test: with an even number of points, one alternation over the whole run gave
    /// every point the same order in every round.
    #[test]
    fn every_point_alternates_its_order_from_round_to_round() {
        for points in 1..=4 {
            for p in 0..points {
                let firsts: Vec<usize> = (0..6).map(|r| first_side(r, p)[0]).collect();
                assert_eq!(
                    firsts.iter().filter(|&&s| s == 0).count(),
                    3,
                    "{points} {p}"
                );
                assert!(firsts.windows(2).all(|w| w[0] != w[1]), "{firsts:?}");
            }
        }
    }

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
