//! Driving load through the mock-kong host: one measured *trial* of one *point* (calls per
//! request, concurrency, mode) against an open [`Session`].
//!
//! # Kong workers and connections
//!
//! A point runs `concurrency` request loops spread round-robin over `kong_workers` emulated Kong
//! workers. Each Kong worker is its own [`Client`] + [`PluginRunner`], i.e. its own connection
//! pool and plugin-instance cache, exactly as each nginx worker process of Kong has its own
//! cosocket pool and `plugin_servers` instance table. All loops of one worker share that
//! worker's pool, as concurrent requests of one nginx worker do: with `MsgPack:1` every RPC call
//! checks a connection out of the pool (so C loops keep up to C connections busy), with
//! `ProtoBuf:1` each event holds one pooled connection for its whole conversation (docs/protocol.md §4.1,
//! §5.1). The default is one Kong worker (Kong's `nginx_worker_processes = 1`); the sweep's
//! multicore variant uses several.
//!
//! # Closed and open loops
//!
//! * Closed: each loop runs requests back to back. Throughput and latency count the requests
//!   that *complete* inside the measurement window (after the warm-up).
//! * Open: requests are scheduled at a constant total rate; request `i` is *intended* to start
//!   at `t0 + i / rate`. A loop claims the next index, sleeps until its intended start (if it
//!   is not already late) and runs it. Latency is measured from the intended start (no
//!   coordinated omission, as wrk2 and oha do); the uncorrected service time (from the actual
//!   start) and the scheduling lag are kept too. Every request whose intended start falls in the
//!   window and started before the window ended is counted, however late it completes; those
//!   not started by then are counted as `unsent` (the backlog). A trial is *saturated* when the
//!   achieved rate is below 95 % of the target, anything was left unsent, or the lag of the last
//!   request exceeds a tenth of the window.
//!
//! Errors are never dropped: a failed event (host error, or an event that did not end with the
//! server's "done") counts as an error of its kind, inside or outside the window, and the loop
//! pauses [`ERROR_BACKOFF`] before its next request so a dead server cannot turn the loop into
//! a busy spin.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use mock_kong::host::{
    io_totals, Client, EventEnd, HostError, IoTotals, PluginEntity, PluginRunner,
};
use mock_kong::pdk::{KongRequest, KongVersion, SimpleRequest};
use mock_kong::plugin_config::ConfigRejected;
use mock_kong::process::ServerProcess;
use mock_kong::scenario::model::RequestSpec;
use mock_kong::scenario::runner::build_request;
use mock_kong::scenario::Scenario;
use mock_kong::session::{kong_order, Session};
use tokio::time::Instant;

use crate::procstat::{self, IoSample};
use crate::stats;
use crate::syscount::{SyscallCounter, SyscallCounts};

/// Pause of a request loop after a failed request.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(5);

/// The phase the `bench` plugin runs in.
pub const PHASE: &str = "access";

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Mode {
    /// Back-to-back requests per loop.
    Closed,
    /// A constant total request rate (requests per second).
    Open { rate: f64 },
}

impl Mode {
    /// `"closed"` or `"open"`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open { .. } => "open",
        }
    }
}

/// How requests reach the plugin server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Via {
    /// One event per request through mock-kong's host loop (the plugin server alone).
    #[default]
    Ipc,
    /// Real HTTP requests through `mock-kong proxy` (client → proxy → plugin server and echo
    /// upstream → client), as Kong's users measure Kong.
    Http,
}

impl Via {
    /// `"ipc"` or `"http"`, as results record it.
    pub fn name(self) -> &'static str {
        match self {
            Via::Ipc => "ipc",
            Via::Http => "http",
        }
    }
}

/// Any plugin, measured through the emulated Kong request (the one `mock-kong run` plays):
/// every phase the plugin declares, its config as Kong builds it from the schema, the request
/// the options describe. The PDK calls per request are what the plugin's transcript shows.
#[derive(Debug, Clone, Default)]
pub struct CustomLoad {
    /// The plugin's config (`--config`).
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Send the config as given (`--raw-config`): no schema defaults, no check.
    pub raw_config: bool,
    /// The client request (`--http-method`, `--path`, `--query`, `--header`, `--body`).
    pub request: RequestSpec,
}

impl CustomLoad {
    /// The config Kong would send for `plugin` on this server (defaults filled, checked).
    pub fn kong_config(
        &self,
        plugin: &mock_kong::dump::PluginInfo,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ConfigRejected> {
        if self.raw_config {
            Ok(self.config.clone())
        } else {
            mock_kong::plugin_config::kong_config(&plugin.name, &plugin.schema, &self.config)
        }
    }
}

/// What to measure at one point.
#[derive(Debug, Clone)]
pub struct PointSpec {
    /// PDK calls per request: the `bench` plugin's `calls`; for a [`CustomLoad`], what the
    /// sample request's transcript shows (set by [`prepare`]).
    pub calls: u32,
    /// The repeated PDK method (`bench`'s `method`).
    pub method: String,
    /// Request loops (requests in flight at most).
    pub concurrency: usize,
    /// Emulated Kong workers (each its own connection pool and instance cache).
    pub kong_workers: usize,
    pub mode: Mode,
    /// Excluded from the figures.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// Any plugin instead of the bench plugin's fast path (`None`: `bench` with `calls` and
    /// `method`, access phase only, the minimal request).
    pub custom: Option<CustomLoad>,
}

/// Why a point could not be measured at all.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the sample request of the point (calls = {calls}) failed: {error}. The server cannot run the bench plugin; check it with `mock-kong call --plugin bench`")]
    Sample { calls: u32, error: HostError },
    #[error("the sample request ended with {end:?} instead of the server's \"done\"")]
    SampleEnd { end: EventEnd },
    #[error("invalid point: {0}")]
    Invalid(String),
    #[error("the sample request through the proxy (calls = {calls}) failed: {kind}{}. Check the server with `mock-kong proxy --plugin bench` and curl", if detail.is_empty() { String::new() } else { format!(" (proxy error log: {detail})") })]
    HttpSample {
        calls: u32,
        kind: &'static str,
        detail: String,
    },
    #[error("the proxy could not be set up: {0}")]
    Proxy(String),
    #[error(
        "the plugin `{0}` is not in the server's dump (Kong 3.9 registers its first plugin, `{1}`)"
    )]
    NotServed(String, String),
    #[error(transparent)]
    Config(#[from] ConfigRejected),
}

/// What one IPC request does: the bench plugin's minimal request in the access phase, or the
/// emulated Kong request through every phase of the plugin.
#[derive(Clone)]
pub enum IpcRequest {
    Bench(SimpleRequest),
    Kong {
        template: Arc<KongRequest>,
        phases: Arc<[String]>,
    },
}

impl IpcRequest {
    /// Events per request (round trips beyond the PDK calls).
    fn events(&self) -> u32 {
        match self {
            IpcRequest::Bench(_) => 1,
            IpcRequest::Kong { phases, .. } => u32::try_from(phases.len()).unwrap_or(u32::MAX),
        }
    }
}

/// How a point's requests reach the plugin server.
pub enum Transport {
    /// Through the host loop: one event per request (the plugin entity and the Kong workers,
    /// instances started).
    Ipc {
        entity: Arc<PluginEntity>,
        workers: Vec<Arc<PluginRunner>>,
        request: IpcRequest,
    },
    /// Over HTTP through `mock-kong proxy` ([`crate::http`]).
    Http(crate::http::HttpPoint),
}

/// A point ready to run: the transport, call count verified.
pub struct PreparedPoint {
    pub spec: PointSpec,
    pub transport: Transport,
    /// PDK calls counted in the sample request's transcript (the `bench` plugin should make
    /// exactly `spec.calls`; a mismatch is reported by [`PreparedPoint::call_count_warning`]
    /// and measured as it is: the counters then show the calls really made).
    pub verified_calls: usize,
}

impl PreparedPoint {
    /// `"ipc"` or `"http"`.
    pub fn via(&self) -> &'static str {
        match self.transport {
            Transport::Ipc { .. } => "ipc",
            Transport::Http(_) => "http",
        }
    }

    /// Plugin-server events per request (round trips beyond the PDK calls).
    pub fn events_per_request(&self) -> u32 {
        match &self.transport {
            Transport::Ipc { request, .. } => request.events(),
            Transport::Http(h) => h.events(),
        }
    }

    /// Stops what the point started (the proxy of an HTTP point).
    pub async fn finish(self) {
        if let Transport::Http(h) = self.transport {
            h.stop().await;
        }
    }

    /// A warning when the sample request made another number of PDK calls than configured.
    pub fn call_count_warning(&self) -> Option<String> {
        if self.spec.custom.is_some() {
            return None;
        }
        (self.verified_calls != self.spec.calls as usize).then(|| {
            format!(
                "the bench plugin made {} PDK call(s) where {} were configured (transcript of the sample request); a bench plugin must make exactly `calls` calls (plugins/README.md). Measured as it is: the counters show the calls made",
                self.verified_calls, self.spec.calls
            )
        })
    }
}

/// The bench plugin's config for `calls` and `method`.
pub fn bench_config(calls: u32, method: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("calls".into(), calls.into());
    m.insert("method".into(), method.into());
    m
}

fn request_template() -> SimpleRequest {
    SimpleRequest {
        request_headers: vec![
            ("host".into(), "example.com".into()),
            ("x-bench".into(), "1".into()),
        ],
        ..Default::default()
    }
}

/// Builds the Kong workers for `spec` on `session`'s socket, starts the instance on each and
/// checks on a sample request that the plugin makes exactly `spec.calls` PDK calls.
pub async fn prepare(
    session: &Session,
    plugin: &str,
    spec: PointSpec,
) -> Result<PreparedPoint, DriverError> {
    check(&spec)?;
    let (config, requester) = match &spec.custom {
        None => (
            bench_config(spec.calls, &spec.method),
            IpcRequest::Bench(request_template()),
        ),
        Some(custom) => {
            let info = session
                .dump
                .plugins
                .iter()
                .find(|p| p.name == plugin)
                .ok_or_else(|| {
                    DriverError::NotServed(plugin.to_owned(), session.dump.plugin().name.clone())
                })?;
            let config = custom.kong_config(info)?;
            let scenario = Scenario {
                plugin: plugin.to_owned(),
                request: custom.request.clone(),
                ..Scenario::default()
            };
            let template = build_request(&scenario, KongVersion::DEFAULT, session.protocol());
            let phases: Vec<String> = kong_order(&info.phases)
                .into_iter()
                .filter(|p| p != "preread")
                .collect();
            (
                config,
                IpcRequest::Kong {
                    template: Arc::new(template),
                    phases: phases.into(),
                },
            )
        }
    };
    let entity = Arc::new(PluginEntity::new(plugin, config));
    let opts = session.client().options().clone();
    let mut workers = Vec::with_capacity(spec.kong_workers);
    let mut verified = 0;
    for _ in 0..spec.kong_workers {
        let runner = Arc::new(PluginRunner::new(Arc::new(Client::new(opts.clone()))));
        let mut req = requester.clone();
        verified = sample(&runner, &entity, &mut req, spec.calls).await?;
        workers.push(runner);
    }
    let mut spec = spec;
    if spec.custom.is_some() {
        spec.calls = u32::try_from(verified).unwrap_or(u32::MAX);
    }
    Ok(PreparedPoint {
        spec,
        transport: Transport::Ipc {
            entity,
            workers,
            request: requester,
        },
        verified_calls: verified,
    })
}

/// Whether a point can be measured at all.
pub(crate) fn check(spec: &PointSpec) -> Result<(), DriverError> {
    if spec.concurrency == 0 || spec.kong_workers == 0 {
        return Err(DriverError::Invalid(
            "concurrency and kong workers must be at least 1".into(),
        ));
    }
    if let Mode::Open { rate } = spec.mode {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(DriverError::Invalid(format!(
                "an open-loop rate must be a positive number of requests per second, got {rate}"
            )));
        }
    }
    Ok(())
}

/// The sample request of a point: it must complete (an exit counts for a plugin of the user's
/// own, not for the bench plugin). Returns its PDK calls.
async fn sample(
    runner: &PluginRunner,
    entity: &PluginEntity,
    req: &mut IpcRequest,
    calls: u32,
) -> Result<usize, DriverError> {
    let sample_error = |error| DriverError::Sample { calls, error };
    match req {
        IpcRequest::Bench(pdk) => {
            let report = runner
                .run_event(entity, PHASE, pdk)
                .await
                .map_err(sample_error)?;
            if report.end != EventEnd::Done {
                return Err(DriverError::SampleEnd { end: report.end });
            }
            Ok(report.calls.len())
        }
        IpcRequest::Kong { template, phases } => {
            match kong_request(runner, entity, template, phases).await {
                Ok(made) => Ok(made),
                Err(KongFailure::Host(error)) => Err(sample_error(error)),
                Err(KongFailure::End(end)) => Err(DriverError::SampleEnd { end }),
            }
        }
    }
}

/// How the emulated Kong request of a plugin of the user's own failed.
enum KongFailure {
    /// An event failed in the host loop.
    Host(HostError),
    /// An event ended neither with the server's "done" nor with the plugin's exit.
    End(EventEnd),
}

/// Plays one emulated Kong request: a fresh copy of `template` through `phases` in order, each
/// an event (after an exit only `log` still runs, as in Kong). A plugin of the user's own may
/// end the request (an auth plugin saying no), so an exit counts as success. Returns the PDK
/// calls of all its events.
async fn kong_request(
    runner: &PluginRunner,
    entity: &PluginEntity,
    template: &KongRequest,
    phases: &[String],
) -> Result<usize, KongFailure> {
    let mut r = template.clone();
    let mut calls = 0;
    for phase in phases {
        if r.exited && phase != "log" {
            continue;
        }
        r.enter_phase(phase);
        let report = runner
            .run_event(entity, phase, &mut r)
            .await
            .map_err(KongFailure::Host)?;
        calls += report.calls.len();
        if !matches!(report.end, EventEnd::Done | EventEnd::Exit { .. }) {
            return Err(KongFailure::End(report.end));
        }
    }
    Ok(calls)
}

/// Server resource use over a trial's window.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerUsage {
    /// CPU seconds of the server's process tree in the window (`None` if it was restarted).
    pub cpu_s: Option<f64>,
    /// Resident set size of the server's process tree at the end of the window, KiB.
    pub rss_kib: u64,
    /// Peak resident set size of the server's main process, KiB.
    pub hwm_kib: u64,
}

/// The outcome of one trial.
#[derive(Debug, Clone)]
pub struct TrialResult {
    /// Successful requests counted.
    pub ok: u64,
    /// Failed requests counted (window only).
    pub errors: u64,
    /// Failed requests by kind, window and warm-up together.
    pub error_kinds: BTreeMap<String, u64>,
    /// Failed requests during the warm-up.
    pub warmup_errors: u64,
    /// The window length used for the rate, seconds.
    pub window_s: f64,
    /// Successful requests per second.
    pub rps: f64,
    /// Latency of successful requests (open loop: from the intended start), ns.
    pub latency: Histogram<u64>,
    /// Open loop: service time from the actual start, ns.
    pub service: Option<Histogram<u64>>,
    /// Open loop: how late requests started, ns.
    pub sched_lag: Option<Histogram<u64>>,
    /// Open loop: requests scheduled in the window that had not started when it ended.
    pub unsent: u64,
    /// Open loop: the target rate and whether it was not sustained.
    pub target_rps: Option<f64>,
    pub saturated: Option<bool>,
    /// loadgen's own CPU time in the window, seconds.
    pub loadgen_cpu_s: f64,
    pub server: Option<ServerUsage>,
    /// Server spawns during the trial (0 normally; > 0 after a crash and Kong-style respawn).
    pub server_respawns: u32,
    /// PDK round trips per request (`calls + 1`: the HandleEvent and each callback).
    pub round_trips_per_request: u32,
    /// What the window cost in counts that do not depend on the machine.
    pub counters: RawCounters,
}

/// Counts over one trial's window, before division by its requests (see
/// [`crate::results::CounterRecord`] for the per-request figures and what each one means).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawCounters {
    /// Requests that completed in the window, successful or not (the divisor).
    pub requests: u64,
    /// Successful requests of the window and the PDK calls their transcripts hold.
    pub ok_requests: u64,
    pub pdk_calls: u64,
    /// What the harness's sockets carried (bytes, messages) during the window.
    pub socket: IoTotals,
    /// The harness's own `/proc/self/io` growth during the window.
    pub harness_io: Option<IoSample>,
    /// The harness's read/write-family system calls, counted exactly ([`crate::syscount`]).
    pub harness_syscalls: Option<SyscallCounts>,
    /// The server's (its process tree's) read/write-family system calls, counted exactly.
    pub server_syscalls: Option<SyscallCounts>,
    /// Why the system calls could not be counted exactly, if they could not.
    pub syscalls_unavailable: Option<String>,
    /// Heap allocations of the harness during the window (counting allocator installed).
    pub harness_allocs: Option<u64>,
    /// The server's `/proc/<pid>/io` growth (its process tree), when it was not restarted.
    pub server_io: Option<IoSample>,
    /// The server's resident set growth over the window, KiB (may be negative).
    pub server_rss_growth_kib: Option<i64>,
}

/// The harness's counters at one instant (taken after the server's `/proc` walk at the
/// window's start and before it at the end, so the walk's reads are not the harness's).
#[derive(Debug, Clone, Copy)]
struct HarnessSnapshot {
    socket: IoTotals,
    io: Option<IoSample>,
    allocs: Option<u64>,
    harness_calls: Option<SyscallCounts>,
    server_calls: Option<SyscallCounts>,
}

impl HarnessSnapshot {
    fn take(counting: &Counting) -> HarnessSnapshot {
        HarnessSnapshot {
            allocs: crate::alloc::allocations(),
            socket: io_totals(),
            harness_calls: counting.harness.as_ref().map(SyscallCounter::read),
            server_calls: counting.server.as_ref().map(SyscallCounter::read),
            io: procstat::self_io(),
        }
    }
}

/// The exact system-call counters of a trial (opened during the warm-up).
struct Counting {
    harness: Option<SyscallCounter>,
    server: Option<SyscallCounter>,
    unavailable: Option<String>,
}

impl Counting {
    fn attach(server_pid: Option<u32>) -> Counting {
        let harness = SyscallCounter::attach(&[std::process::id()]);
        let server = server_pid.map(|pid| SyscallCounter::attach(&procstat::tree(pid)));
        let unavailable = match (&harness, &server) {
            (Err(e), _) | (_, Some(Err(e))) => Some(e.to_string()),
            _ => None,
        };
        Counting {
            harness: harness.ok(),
            server: server.and_then(Result::ok),
            unavailable,
        }
    }
}

impl TrialResult {
    /// loadgen CPU per PDK round trip, nanoseconds.
    pub fn loadgen_ns_per_round_trip(&self) -> f64 {
        let rt = self.ok as f64 * f64::from(self.round_trips_per_request);
        if rt == 0.0 {
            0.0
        } else {
            self.loadgen_cpu_s * 1e9 / rt
        }
    }
}

/// Something to do to the server in the middle of a trial (chaos testing).
#[derive(Debug, Clone, Copy)]
pub struct Chaos {
    /// Time after the start of the window at which the server gets SIGKILL.
    pub kill_after: Duration,
}

#[derive(Default)]
struct LoopOut {
    ok: u64,
    errors: u64,
    warmup_errors: u64,
    kinds: BTreeMap<String, u64>,
    latency: Option<Histogram<u64>>,
    service: Option<Histogram<u64>>,
    lag: Option<Histogram<u64>>,
    last_end: Option<Instant>,
    max_final_lag: Duration,
    unsent: u64,
    /// PDK calls of the successful requests counted.
    pdk_calls: u64,
}

/// A short name of a failure, for the error table.
pub fn error_kind(e: &HostError) -> &'static str {
    e.kind()
}

fn end_kind(end: &EventEnd) -> Option<&'static str> {
    match end {
        EventEnd::Done => None,
        EventEnd::Exit { .. } => Some("plugin_exit"),
        EventEnd::Raised { .. } => Some("pdk_raised"),
        EventEnd::MethodNotFound { .. } => Some("method_not_found"),
        EventEnd::Failed { .. } => Some("failed"),
    }
}

/// What a request loop sends, one request at a time: an event through the host loop, or an
/// HTTP request through the proxy.
pub trait Requester: Send + 'static {
    /// Runs one request: the PDK calls it made, or the kind of its failure.
    fn request(&mut self) -> impl std::future::Future<Output = Result<u64, &'static str>> + Send;
}

/// One event per request through a Kong worker's host loop.
struct IpcRequester {
    runner: Arc<PluginRunner>,
    entity: Arc<PluginEntity>,
    request: IpcRequest,
}

impl Requester for IpcRequester {
    async fn request(&mut self) -> Result<u64, &'static str> {
        one_request(&self.runner, &self.entity, &mut self.request).await
    }
}

/// Runs one request; its PDK calls, or `Err(kind)` on failure.
async fn one_request(
    runner: &PluginRunner,
    entity: &PluginEntity,
    req: &mut IpcRequest,
) -> Result<u64, &'static str> {
    match req {
        IpcRequest::Bench(pdk) => {
            pdk.response_headers.clear();
            match runner.run_event(entity, PHASE, pdk).await {
                Ok(report) => match end_kind(&report.end) {
                    None => Ok(report.calls.len() as u64),
                    Some(k) => Err(k),
                },
                Err(e) => Err(error_kind(&e)),
            }
        }
        IpcRequest::Kong { template, phases } => {
            match kong_request(runner, entity, template, phases).await {
                Ok(calls) => Ok(calls as u64),
                Err(KongFailure::Host(e)) => Err(error_kind(&e)),
                Err(KongFailure::End(end)) => Err(end_kind(&end).unwrap_or("failed")),
            }
        }
    }
}

struct Window {
    start: Instant,
    end: Instant,
}

async fn closed_loop<R: Requester>(mut requester: R, w: Arc<Window>) -> LoopOut {
    let mut out = LoopOut {
        latency: Some(stats::new_histogram()),
        ..Default::default()
    };
    let Some(hist) = out.latency.as_mut() else {
        return out;
    };
    loop {
        let start = Instant::now();
        // After SIGINT/SIGTERM the trial ends early; the sweep drops it.
        if start >= w.end || mock_kong::edge::stopping() {
            break;
        }
        let res = requester.request().await;
        let end = Instant::now();
        let in_window = end >= w.start && end < w.end;
        match res {
            Ok(calls) if in_window => {
                out.ok += 1;
                out.pdk_calls += calls;
                stats::record(hist, (end - start).as_nanos() as u64);
            }
            Ok(_) => {}
            Err(kind) => {
                *out.kinds.entry(kind.to_owned()).or_default() += 1;
                if end < w.start {
                    out.warmup_errors += 1;
                } else {
                    out.errors += 1;
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    out
}

/// Tokio's timer has a 1 ms granularity (and rounds up), which would add up to a millisecond of
/// fake latency to every open-loop request. So: sleep with the timer until [`SPIN_BELOW`] before
/// the intended start, then yield to the runtime until it is reached (other loops and I/O keep
/// running; the cost is CPU time below saturation, never above it, when requests are late).
pub const SPIN_BELOW: Duration = Duration::from_micros(1500);

async fn wait_until(t: Instant) {
    let now = Instant::now();
    if t <= now {
        return;
    }
    if t - now > SPIN_BELOW {
        tokio::time::sleep_until(t - SPIN_BELOW).await;
    }
    while Instant::now() < t {
        tokio::task::yield_now().await;
    }
}

async fn open_loop<R: Requester>(
    mut requester: R,
    w: Arc<Window>,
    t0: Instant,
    interval: Duration,
    next: Arc<AtomicU64>,
) -> LoopOut {
    let mut latency = stats::new_histogram();
    let mut service = stats::new_histogram();
    let mut lag = stats::new_histogram();
    let mut out = LoopOut::default();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(offset) = interval.checked_mul(u32::try_from(i).unwrap_or(u32::MAX)) else {
            break;
        };
        let intended = t0 + offset;
        if intended >= w.end || mock_kong::edge::stopping() {
            break;
        }
        let now = Instant::now();
        if intended < w.start && now >= w.start {
            // Warm-up backlog: dropped at the start of the window so the window measures its
            // own schedule (counted as warm-up work, never measured).
            continue;
        }
        if now >= w.end {
            // The window is over and this request has not started: the backlog is counted,
            // not run (a far-too-high rate would otherwise run for ever).
            if intended >= w.start {
                out.unsent += 1;
            }
            continue;
        }
        wait_until(intended).await;
        let actual = Instant::now();
        let res = requester.request().await;
        let end = Instant::now();
        let counted = intended >= w.start;
        match res {
            Ok(calls) if counted => {
                out.ok += 1;
                out.pdk_calls += calls;
                stats::record(&mut latency, (end - intended).as_nanos() as u64);
                stats::record(&mut service, (end - actual).as_nanos() as u64);
                stats::record(&mut lag, (actual - intended).as_nanos() as u64);
                out.last_end = Some(out.last_end.map_or(end, |l| l.max(end)));
                out.max_final_lag = actual - intended;
            }
            Ok(_) => {}
            Err(kind) => {
                *out.kinds.entry(kind.to_owned()).or_default() += 1;
                if counted {
                    out.errors += 1;
                    out.last_end = Some(out.last_end.map_or(end, |l| l.max(end)));
                } else {
                    out.warmup_errors += 1;
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    out.latency = Some(latency);
    out.service = Some(service);
    out.lag = Some(lag);
    out
}

/// Sleeps until `t`, or until SIGINT/SIGTERM asks loadgen to stop (then the trial in progress
/// ends early and the caller drops it).
async fn until_or_stopped(t: Instant) {
    tokio::select! {
        () = tokio::time::sleep_until(t) => {}
        () = mock_kong::edge::until_stopped() => {}
    }
}

/// Runs one trial of `point` (warm-up, then the window), optionally killing the server in the
/// middle of the window.
pub async fn run_trial(
    session: &Session,
    point: &PreparedPoint,
    chaos: Option<Chaos>,
) -> TrialResult {
    run_trial_on(session.process.as_ref(), point, chaos).await
}

fn spawn_loop<R: Requester>(
    set: &mut tokio::task::JoinSet<LoopOut>,
    requester: R,
    mode: Mode,
    w: Arc<Window>,
    t0: Instant,
    next: &Arc<AtomicU64>,
) {
    match mode {
        Mode::Closed => {
            set.spawn(closed_loop(requester, w));
        }
        Mode::Open { rate } => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            set.spawn(open_loop(requester, w, t0, interval, next.clone()));
        }
    }
}

/// [`run_trial`] against the server `process` (its CPU, memory and system calls are measured;
/// `None`: a server loadgen does not manage, such as the HTTP floor's).
pub async fn run_trial_on(
    process: Option<&ServerProcess>,
    point: &PreparedPoint,
    chaos: Option<Chaos>,
) -> TrialResult {
    let spec = &point.spec;
    let t0 = Instant::now();
    let window = Arc::new(Window {
        start: t0 + spec.warmup,
        end: t0 + spec.warmup + spec.duration,
    });
    let spawns_before = process.map(|p| p.spawn_count());
    let mut set = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicU64::new(0));
    for i in 0..spec.concurrency {
        let w = window.clone();
        match &point.transport {
            Transport::Ipc {
                entity,
                workers,
                request,
            } => {
                let requester = IpcRequester {
                    runner: workers[i % workers.len()].clone(),
                    entity: entity.clone(),
                    request: request.clone(),
                };
                spawn_loop(&mut set, requester, spec.mode, w, t0, &next);
            }
            Transport::Http(h) => {
                spawn_loop(&mut set, h.requester(), spec.mode, w, t0, &next);
            }
        }
    }
    // Samples at the window edges; the exact counters are opened during the warm-up.
    let counting = Counting::attach(process.and_then(|p| p.pid()));
    until_or_stopped(window.start).await;
    let server_pid = process.and_then(|p| p.pid());
    let server_before = server_pid.and_then(procstat::sample);
    let harness_before = HarnessSnapshot::take(&counting);
    let cpu_before = procstat::self_cpu();
    if let Some(chaos) = chaos {
        until_or_stopped(window.start + chaos.kill_after).await;
        if let Some(p) = process {
            p.signal(libc::SIGKILL);
        }
    }
    until_or_stopped(window.end).await;
    let harness_after = HarnessSnapshot::take(&counting);
    let cpu_after = procstat::self_cpu();
    let server_after = process.and_then(|p| p.pid()).and_then(procstat::sample);

    let mut total = LoopOut::default();
    let mut latency = stats::new_histogram();
    let mut service: Option<Histogram<u64>> = None;
    let mut lag: Option<Histogram<u64>> = None;
    let mut final_lag = Duration::ZERO;
    while let Some(joined) = set.join_next().await {
        let Ok(o) = joined else { continue };
        total.ok += o.ok;
        total.errors += o.errors;
        total.warmup_errors += o.warmup_errors;
        for (k, v) in o.kinds {
            *total.kinds.entry(k).or_default() += v;
        }
        if let Some(h) = &o.latency {
            let _ = latency.add(h);
        }
        merge(&mut service, o.service.as_ref());
        merge(&mut lag, o.lag.as_ref());
        if let Some(e) = o.last_end {
            total.last_end = Some(total.last_end.map_or(e, |l| l.max(e)));
        }
        final_lag = final_lag.max(o.max_final_lag);
        total.unsent += o.unsent;
        total.pdk_calls += o.pdk_calls;
    }
    // Open loop: requests of the window may complete after it; CPU is taken up to then.
    let (cpu_after, server_after, harness_after) = match spec.mode {
        Mode::Closed => (cpu_after, server_after, harness_after),
        Mode::Open { .. } => {
            let harness = HarnessSnapshot::take(&counting);
            let cpu = procstat::self_cpu();
            let server = process.and_then(|p| p.pid()).and_then(procstat::sample);
            (cpu, server, harness)
        }
    };
    let window_s = match spec.mode {
        Mode::Closed => spec.duration.as_secs_f64(),
        Mode::Open { .. } => total
            .last_end
            .map(|e| e.max(window.end) - window.start)
            .unwrap_or(spec.duration)
            .as_secs_f64(),
    };
    let rps = if window_s > 0.0 {
        total.ok as f64 / window_s
    } else {
        0.0
    };
    let (target_rps, saturated) = match spec.mode {
        Mode::Closed => (None, None),
        Mode::Open { rate } => {
            let sat = rps < 0.95 * rate || total.unsent > 0 || final_lag > spec.duration / 10;
            (Some(rate), Some(sat))
        }
    };
    let server = match (server_before, server_after) {
        (Some(b), Some(a)) => Some(ServerUsage {
            cpu_s: (a.pid == b.pid && a.cpu >= b.cpu).then(|| (a.cpu - b.cpu).as_secs_f64()),
            rss_kib: a.rss_kib,
            hwm_kib: a.hwm_kib,
        }),
        (None, Some(a)) | (Some(a), None) => Some(ServerUsage {
            cpu_s: None,
            rss_kib: a.rss_kib,
            hwm_kib: a.hwm_kib,
        }),
        (None, None) => None,
    };
    let spawns_after = process.map(|p| p.spawn_count());
    let same_server = matches!((&server_before, &server_after), (Some(b), Some(a)) if a.pid == b.pid)
        && spawns_before == spawns_after;
    let counters = RawCounters {
        requests: total.ok + total.errors,
        ok_requests: total.ok,
        pdk_calls: total.pdk_calls,
        socket: harness_after.socket.since(&harness_before.socket),
        harness_io: match (harness_before.io, harness_after.io) {
            (Some(b), Some(a)) => Some(a.since(&b)),
            _ => None,
        },
        harness_allocs: match (harness_before.allocs, harness_after.allocs) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        },
        harness_syscalls: match (harness_before.harness_calls, harness_after.harness_calls) {
            (Some(b), Some(a)) => Some(a.since(&b)),
            _ => None,
        },
        server_syscalls: match (harness_before.server_calls, harness_after.server_calls) {
            (Some(b), Some(a)) if same_server => Some(a.since(&b)),
            _ => None,
        },
        syscalls_unavailable: counting.unavailable.clone(),
        server_io: match (&server_before, &server_after) {
            (Some(b), Some(a)) if same_server => match (b.io, a.io) {
                (Some(bi), Some(ai)) => Some(ai.since(&bi)),
                _ => None,
            },
            _ => None,
        },
        server_rss_growth_kib: match (&server_before, &server_after) {
            (Some(b), Some(a)) if same_server => Some(a.rss_kib as i64 - b.rss_kib as i64),
            _ => None,
        },
    };
    TrialResult {
        ok: total.ok,
        errors: total.errors,
        error_kinds: total.kinds,
        warmup_errors: total.warmup_errors,
        window_s,
        rps,
        latency,
        service,
        sched_lag: lag,
        unsent: total.unsent,
        target_rps,
        saturated,
        loadgen_cpu_s: cpu_after.saturating_sub(cpu_before).as_secs_f64(),
        server,
        server_respawns: match (spawns_before, spawns_after) {
            (Some(b), Some(a)) => a.saturating_sub(b),
            _ => 0,
        },
        round_trips_per_request: spec.calls + point.events_per_request(),
        counters,
    }
}

fn merge(into: &mut Option<Histogram<u64>>, h: Option<&Histogram<u64>>) {
    if let Some(h) = h {
        match into {
            Some(i) => {
                let _ = i.add(h);
            }
            None => *into = Some(h.clone()),
        }
    }
}
