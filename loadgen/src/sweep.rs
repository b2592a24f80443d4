//! A sweep: for every target server, every mode, concurrency and call count, several trials;
//! plus the transport floor of each protocol and an optional multicore variant. Produces
//! [`Results`].
//!
//! The server of a target is started once (dump → start → socket) and kept for all of its
//! points, as Kong keeps a plugin server for its lifetime; a new call count is a config change,
//! so Kong starts a new plugin instance for it (a new `__seq__`). If the server dies, its
//! supervisor restarts it as Kong does (at most once a second): the point in progress counts
//! the failed requests as errors and completes; a point that cannot even start is retried for a
//! few seconds and then recorded as a failure, and the sweep goes on.

use std::time::Duration;

use mock_kong::session::{Session, SessionOptions};
use mock_kong::target::{self, Placement, TargetSpec};
use mock_kong::Protocol;

use crate::driver::{self, Chaos, CustomLoad, DriverError, Mode, PointSpec, Via};
use crate::floor;
use crate::procstat;
use crate::results::{FailureRecord, PointRecord, Results, Settings};
use crate::stats;

/// The plugin measured unless `--plugin` names another.
pub const PLUGIN: &str = "bench";

/// One server to measure.
#[derive(Debug, Clone)]
pub struct TargetDef {
    /// The name in results: a peer name, `reference`, or the name of a command pair.
    pub label: String,
    pub spec: TargetSpec,
    /// Where its socket lies (`--socket`, `--prefix`; default: a private directory).
    pub placement: Placement,
}

impl TargetDef {
    /// The built-in reference server in `protocol`, started from `exe` (default: this
    /// executable, which has the hidden `reference-server` subcommand).
    pub fn reference(protocol: Protocol, exe: Option<std::path::PathBuf>) -> TargetDef {
        TargetDef {
            label: "reference".into(),
            spec: TargetSpec::Reference {
                protocol,
                exe,
                faults: Vec::new(),
            },
            placement: Placement::default(),
        }
    }
}

/// The multicore variant: more Kong workers at a few call counts.
#[derive(Debug, Clone)]
pub struct Multicore {
    /// Kong workers (each its own connection pool and instance cache).
    pub workers: usize,
    /// Call counts measured (the docs show 30 only).
    pub calls: Vec<u32>,
}

/// Killing the server during one point (chaos testing).
#[derive(Debug, Clone, Copy)]
pub struct ChaosPlan {
    /// Index of the point in sweep order (0-based, counting every measured point).
    pub point: usize,
    /// When, after the start of the first trial's window.
    pub after: Duration,
}

/// Everything a sweep needs.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    pub targets: Vec<TargetDef>,
    pub calls: Vec<u32>,
    pub concurrency: Vec<usize>,
    pub modes: Vec<Mode>,
    pub kong_workers: usize,
    pub multicore: Option<Multicore>,
    pub duration: Duration,
    pub warmup: Duration,
    pub trials: usize,
    pub method: String,
    /// The plugin measured ([`PLUGIN`] by default).
    pub plugin: String,
    /// Any plugin through the emulated Kong request instead of the bench plugin's fast path;
    /// `calls` then holds one placeholder value, and each point's PDK calls come from the
    /// plugin's transcript.
    pub custom: Option<CustomLoad>,
    pub session: SessionOptions,
    /// Measure the raw ping-pong floor for each protocol met.
    pub floor: bool,
    pub chaos: Option<ChaosPlan>,
    /// Keep the merged latency spectrum of each point (`.hgrm` text).
    pub keep_hgrm: bool,
    /// The command line, for the results.
    pub command: String,
    /// Threads of the runtime loadgen runs on (for the record).
    pub runtime_threads: usize,
    /// Through the host loop or over HTTP through `mock-kong proxy`.
    pub via: Via,
    /// Trials in rounds over the points of a series (all prepared at once) instead of each
    /// point's trials back to back: a slow spell of a shared machine then hits every call
    /// count of a curve alike, and trial i of every point is round i's.
    pub interleave: bool,
}

impl SweepPlan {
    /// Points per target (single + multicore variant).
    pub fn points_per_target(&self) -> usize {
        let single = self.modes.len() * self.concurrency.len() * self.calls.len();
        let multi = self
            .multicore
            .as_ref()
            .map_or(0, |m| m.calls.len() * self.concurrency.len());
        single + multi
    }

    /// Total trials, for the progress bar.
    pub fn total_trials(&self) -> u64 {
        (self.targets.len() * self.points_per_target() * self.trials) as u64
    }

    /// Planned wall time of the trials (warm-up + window each).
    pub fn planned_time(&self) -> Duration {
        (self.warmup + self.duration) * u32::try_from(self.total_trials()).unwrap_or(u32::MAX)
    }
}

/// Progress reporting (a progress bar on a terminal, nothing otherwise).
pub trait Progress {
    /// A new point starts.
    fn point(&self, label: &str);
    /// One trial finished.
    fn trial_done(&self);
    /// A line to show (warnings, failures).
    fn note(&self, line: &str);
    /// A point was measured (its figures, for a progress log when there is no progress bar).
    fn point_done(&self, _label: &str, _record: &PointRecord) {}
}

/// Progress that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn point(&self, _: &str) {}
    fn trial_done(&self) {}
    fn note(&self, _: &str) {}
}

/// One measured point's description, in sweep order.
struct PointPlan {
    mode: Mode,
    concurrency: usize,
    calls: u32,
    kong_workers: usize,
    variant: &'static str,
}

impl PointPlan {
    /// Everything but the call count alike: points of one curve.
    fn same_series(&self, other: &PointPlan) -> bool {
        self.mode.name() == other.mode.name()
            && self.concurrency == other.concurrency
            && self.kong_workers == other.kong_workers
            && self.variant == other.variant
    }
}

fn point_plans(plan: &SweepPlan) -> Vec<PointPlan> {
    let mut v = Vec::new();
    for &mode in &plan.modes {
        for &concurrency in &plan.concurrency {
            for &calls in &plan.calls {
                v.push(PointPlan {
                    mode,
                    concurrency,
                    calls,
                    kong_workers: plan.kong_workers,
                    variant: "single",
                });
            }
        }
    }
    if let Some(m) = &plan.multicore {
        for &concurrency in &plan.concurrency {
            for &calls in &m.calls {
                v.push(PointPlan {
                    mode: Mode::Closed,
                    // Each Kong worker gets the series' concurrency.
                    concurrency: concurrency * m.workers,
                    calls,
                    kong_workers: m.workers,
                    variant: "multicore",
                });
            }
        }
    }
    v
}

/// Runs the sweep. Target set-up failures and unmeasurable points are recorded in
/// `failures`; the sweep always completes.
pub async fn run(plan: &SweepPlan, progress: &dyn Progress) -> Results {
    let mut results = Results::empty(
        &plan.command,
        Settings {
            calls: plan.calls.clone(),
            concurrency: plan.concurrency.clone(),
            modes: plan.modes.iter().map(|m| m.name().to_owned()).collect(),
            open_rate: plan.modes.iter().find_map(|m| match m {
                Mode::Open { rate } => Some(*rate),
                Mode::Closed => None,
            }),
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            trials: plan.trials,
            kong_workers: plan.kong_workers,
            multicore_workers: plan.multicore.as_ref().map(|m| m.workers),
            method: plan.method.clone(),
            runtime_threads: plan.runtime_threads,
            forks: None,
            plugin: plan.custom.as_ref().map(|_| plan.plugin.clone()),
            plugin_config: plan
                .custom
                .as_ref()
                .map(|c| serde_json::Value::Object(c.config.clone())),
        },
    );
    let plans = point_plans(plan);
    let mut point_index = 0usize;
    let mut floors_done: Vec<Protocol> = Vec::new();
    for target in &plan.targets {
        if mock_kong::edge::stopping() {
            results.interrupted = true;
            break;
        }
        let resolved = match target::resolve(&target.spec, &target.placement, &plan.plugin) {
            Ok(r) => r,
            Err(e) => {
                fail_target(
                    &mut results,
                    progress,
                    target,
                    e.to_string(),
                    plan,
                    &mut point_index,
                );
                continue;
            }
        };
        let session = match Session::open(resolved, &plan.session).await {
            Ok(s) => s,
            Err(e) => {
                fail_target(
                    &mut results,
                    progress,
                    target,
                    e.to_string(),
                    plan,
                    &mut point_index,
                );
                continue;
            }
        };
        let protocol = session.protocol();
        if plan.floor && !floors_done.contains(&protocol) {
            floors_done.push(protocol);
            progress.point(&format!("floor {protocol}"));
            let (w, d) = (plan.warmup.min(Duration::from_secs(1)), plan.duration);
            match tokio::task::spawn_blocking(move || floor::run(protocol, w, d)).await {
                Ok(Ok(f)) => results.floor.push(f),
                Ok(Err(e)) => progress.note(&format!("floor {protocol}: {e}")),
                Err(e) => progress.note(&format!("floor {protocol}: {e}")),
            }
        }
        if plan.floor && plan.via == Via::Http && results.http_floor.is_none() {
            progress.point("HTTP floor: the proxy with no phase vs a plain hyper server");
            let w = plan.warmup.min(Duration::from_secs(1));
            // The reference server of the sweep's own targets when it has one (its executable).
            let exe = plan.targets.iter().find_map(|t| match &t.spec {
                TargetSpec::Reference { exe, .. } => exe.clone(),
                _ => None,
            });
            let floor = crate::http::http_floor(exe, &plan.session, w, plan.duration, plan.trials);
            match floor.await {
                Ok(f) => results.http_floor = Some(f),
                Err(e) => progress.note(&format!("HTTP floor: {e}")),
            }
        }
        // A batch is one point, or with `interleave` every point of a series (all but the call
        // count alike): its points are prepared together and measured round by round.
        let mut rest = &plans[..];
        while !rest.is_empty() {
            if mock_kong::edge::stopping() {
                results.interrupted = true;
                break;
            }
            let n = if plan.interleave {
                rest.iter()
                    .take_while(|pp| pp.same_series(&rest[0]))
                    .count()
            } else {
                1
            };
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            let first_index = point_index;
            point_index += batch.len();
            measure_batch(
                plan,
                progress,
                &session,
                target,
                protocol,
                batch,
                first_index,
                &mut results,
            )
            .await;
        }
        if let Some(e) = session.close().await {
            let _ = e;
        }
    }
    results.close();
    results
}

/// Measures `batch` (points of one target, the first of them `first_index` in sweep order):
/// prepares them all, runs `plan.trials` rounds, each round one trial of every point (in reverse
/// order every other round, so that no point always follows the same one), and records them in
/// `results`. A batch of one point is its trials back to back.
#[allow(clippy::too_many_arguments)]
async fn measure_batch(
    plan: &SweepPlan,
    progress: &dyn Progress,
    session: &Session,
    target: &TargetDef,
    protocol: Protocol,
    batch: &[PointPlan],
    first_index: usize,
    results: &mut Results,
) {
    let mut prepared: Vec<Option<(String, driver::PreparedPoint)>> = Vec::new();
    for pp in batch {
        let label = point_label(plan, target, protocol, pp);
        progress.point(&label);
        let spec = PointSpec {
            calls: pp.calls,
            method: plan.method.clone(),
            concurrency: pp.concurrency,
            kong_workers: pp.kong_workers,
            mode: pp.mode,
            warmup: plan.warmup,
            duration: plan.duration,
            custom: plan.custom.clone(),
        };
        match prepare_with_retry(session, &plan.plugin, spec, plan.via).await {
            Ok(p) => {
                if let Some(w) = p.call_count_warning() {
                    progress.note(&format!("{label}: warning: {w}"));
                }
                prepared.push(Some((label, p)));
            }
            Err(e) => {
                progress.note(&format!("{label}: {e}"));
                results.failures.push(FailureRecord {
                    peer: target.label.clone(),
                    calls: Some(pp.calls),
                    concurrency: Some(pp.concurrency),
                    error: e.to_string(),
                });
                for _ in 0..plan.trials {
                    progress.trial_done();
                }
                prepared.push(None);
            }
        }
    }
    let mut trials: Vec<Vec<driver::TrialResult>> = batch.iter().map(|_| Vec::new()).collect();
    'rounds: for round in 0..plan.trials {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..batch.len()).collect()
        } else {
            (0..batch.len()).rev().collect()
        };
        for i in order {
            let Some((label, point)) = &prepared[i] else {
                continue;
            };
            if batch.len() > 1 {
                progress.point(label);
            }
            let chaos = plan
                .chaos
                .filter(|c| c.point == first_index + i && round == 0)
                .map(|c| Chaos {
                    kill_after: c.after,
                });
            let trial = driver::run_trial(session, point, chaos).await;
            if mock_kong::edge::stopping() {
                // Cut short by SIGINT/SIGTERM: not a measurement.
                results.interrupted = true;
                break 'rounds;
            }
            trials[i].push(trial);
            progress.trial_done();
        }
    }
    for ((pp, slot), trials) in batch.iter().zip(prepared).zip(trials) {
        let Some((label, prepared)) = slot else {
            continue;
        };
        if trials.is_empty() {
            prepared.finish().await;
            continue;
        }
        note_counting(results, &trials);
        let mut rec = PointRecord::from_trials(
            &target.label,
            protocol.as_str(),
            prepared.spec.calls,
            pp.concurrency,
            pp.kong_workers,
            pp.mode,
            pp.variant,
            prepared.verified_calls,
            &trials,
        );
        rec.via = prepared.via().to_owned();
        prepared.finish().await;
        if plan.keep_hgrm {
            let mut h = stats::new_histogram();
            for t in &trials {
                let _ = h.add(&t.latency);
            }
            rec.hgrm = Some(stats::hgrm(&h));
        }
        if rec.errors > 0 {
            progress.note(&format!(
                "{label}: {} error(s) {:?}, {} server respawn(s)",
                rec.errors, rec.error_kinds, rec.server.respawns
            ));
        }
        progress.point_done(&label, &rec);
        results.points.push(rec);
        results.loadgen_peak_rss_kib = results.loadgen_peak_rss_kib.max(procstat::self_rss_kib().1);
    }
}

/// The progress label of a point.
fn point_label(plan: &SweepPlan, target: &TargetDef, protocol: Protocol, pp: &PointPlan) -> String {
    format!(
        "{}{} {} {} c={} {}{}",
        target.label,
        if plan.via == Via::Http {
            " via http"
        } else {
            ""
        },
        protocol,
        pp.mode.name(),
        pp.concurrency,
        match &plan.custom {
            None => format!("calls={}", pp.calls),
            Some(_) => format!("plugin {}", plan.plugin),
        },
        if pp.variant == "single" {
            String::new()
        } else {
            format!(" {}×{}", pp.variant, pp.kong_workers)
        }
    )
}

/// A point's sample request is retried for up to ~3 s: a server that was just killed is being
/// respawned (Kong waits at least a second between spawns).
async fn prepare_with_retry(
    session: &Session,
    plugin: &str,
    spec: PointSpec,
    via: Via,
) -> Result<driver::PreparedPoint, DriverError> {
    let mut attempt = 0;
    loop {
        let prepared = match via {
            Via::Ipc => driver::prepare(session, plugin, spec.clone()).await,
            Via::Http => crate::http::prepare(session, plugin, spec.clone()).await,
        };
        match prepared {
            Ok(p) => return Ok(p),
            Err(e @ (DriverError::Sample { .. } | DriverError::HttpSample { .. }))
                if attempt < 6 =>
            {
                let _ = e;
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn fail_target(
    results: &mut Results,
    progress: &dyn Progress,
    target: &TargetDef,
    error: String,
    plan: &SweepPlan,
    point_index: &mut usize,
) {
    progress.note(&format!("{}: cannot start: {error}", target.label));
    results.failures.push(FailureRecord {
        peer: target.label.clone(),
        calls: None,
        concurrency: None,
        error,
    });
    for _ in 0..plan.points_per_target() * plan.trials {
        progress.trial_done();
    }
    *point_index += plan.points_per_target();
}

/// Records, once, why system calls were not counted exactly in a trial.
pub fn note_counting(results: &mut Results, trials: &[driver::TrialResult]) {
    if results.syscall_counting.is_none() {
        results.syscall_counting = trials
            .iter()
            .find_map(|t| t.counters.syscalls_unavailable.clone());
    }
}
