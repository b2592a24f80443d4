//! The results of a sweep: `results.json` (schema `loadgen/schema/results.schema.json`, version
//! [`SCHEMA_VERSION`]), the CSV, the markdown summary, and the machine fingerprint.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::driver::{Mode, RawCounters, TrialResult};
use crate::floor::FloorResult;
use crate::stats::{self, LatencyUs, LinearFit, Spread};

/// Version of the `results.json` layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Where and on what the numbers were measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// A short hash of the fields below: two result files with the same fingerprint come from
    /// the same kind of machine, so absolute numbers may be compared.
    pub fingerprint: String,
    pub cpu_model: String,
    /// Logical CPUs online.
    pub cpus: usize,
    pub mem_total_kib: u64,
    pub kernel: String,
    pub arch: String,
}

impl Machine {
    /// Reads `/proc/cpuinfo`, `/proc/meminfo` and `uname`.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let arch = std::env::consts::ARCH.to_owned();
        let mut m = Machine {
            fingerprint: String::new(),
            cpu_model,
            cpus,
            mem_total_kib,
            kernel,
            arch,
        };
        m.fingerprint = m.compute_fingerprint();
        m
    }

    /// FNV-1a of the CPU model, CPU count, memory (rounded to GiB), kernel and architecture.
    pub fn compute_fingerprint(&self) -> String {
        let text = format!(
            "{}|{}|{}|{}|{}",
            self.cpu_model,
            self.cpus,
            self.mem_total_kib >> 20,
            self.kernel,
            self.arch
        );
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// One trial of a point.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrialRecord {
    pub rps: f64,
    pub ok: u64,
    pub errors: u64,
    pub warmup_errors: u64,
    pub window_s: f64,
    pub latency_us: LatencyUs,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub service_us: Option<LatencyUs>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub saturated: Option<bool>,
    /// Open loop: requests of the window not started when it ended.
    #[serde(default)]
    pub unsent: u64,
    pub loadgen_cpu_s: f64,
    pub loadgen_cpu_ns_per_round_trip: f64,
    pub server_cpu_s: Option<f64>,
    pub server_rss_kib: Option<u64>,
    pub server_respawns: u32,
    /// Machine-independent counts per request (absent in files made before they existed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub counters: Option<CounterRecord>,
}

/// What one request costs in counts that do not depend on the machine's speed: the same server
/// and harness give the same figures on any machine, so they can be gated exactly (or within a
/// small tolerance, [`crate::gate::counters`]) against a baseline made anywhere.
///
/// Every figure is a count over a trial's window divided by the window's requests (`requests`;
/// a point holds the median over its trials). `None` where the kernel or the build cannot
/// tell (no `/proc/<pid>/io`, a server restarted in the window, no counting allocator).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CounterRecord {
    /// Requests the figures were divided by (the window's, successful or not).
    pub requests: u64,
    /// PDK callbacks per successful request, from the transcripts of every request.
    pub pdk_calls_per_request: f64,
    /// Messages the harness sent per request: the HandleEvent (RpcCall) and one answer per
    /// callback, i.e. IPC round trips.
    pub round_trips_per_request: f64,
    /// Bytes the harness wrote to the server's socket per request.
    pub bytes_out_per_request: f64,
    /// Bytes the harness read from the server's socket per request (what the server wrote).
    pub bytes_in_per_request: f64,
    /// How the system calls below were counted: `"tracepoints"` (every read/write/recv/send
    /// family call, exactly: [`crate::syscount`]) or `"proc-io"` (`/proc/<pid>/io`
    /// `syscr`/`syscw`: the read/write family only, which misses `recv`/`send` sockets).
    /// Figures of different sources are never compared.
    #[serde(default)]
    pub syscalls_source: String,
    /// The harness's read-family system calls per request.
    pub harness_reads_per_request: Option<f64>,
    /// The harness's write-family system calls per request.
    pub harness_writes_per_request: Option<f64>,
    /// The harness's heap allocations per request.
    pub harness_allocs_per_request: Option<f64>,
    /// The server's (its process tree's) read-family system calls per request.
    pub server_reads_per_request: Option<f64>,
    /// The server's write-family system calls per request.
    pub server_writes_per_request: Option<f64>,
    /// Bytes the server moved per request with read/write-family calls (`/proc/<pid>/io`
    /// `rchar`, `wchar`: files such as logs, and sockets unless it uses `recv`/`send`).
    pub server_bytes_read_per_request: Option<f64>,
    pub server_bytes_written_per_request: Option<f64>,
    /// Growth of the server's resident set per 10 000 requests, KiB (negative: it shrank).
    pub server_rss_growth_kib_per_10k: Option<f64>,
}

impl CounterRecord {
    /// Per-request figures of one window; `None` when nothing completed in it.
    pub fn of(raw: &RawCounters) -> Option<CounterRecord> {
        if raw.requests == 0 {
            return None;
        }
        let n = raw.requests as f64;
        let per = |v: u64| v as f64 / n;
        let exact = raw.harness_syscalls.is_some() && raw.server_syscalls.is_some();
        let (harness_reads, harness_writes, server_reads, server_writes) = if exact {
            (
                raw.harness_syscalls.map(|c| per(c.reads)),
                raw.harness_syscalls.map(|c| per(c.writes)),
                raw.server_syscalls.map(|c| per(c.reads)),
                raw.server_syscalls.map(|c| per(c.writes)),
            )
        } else {
            (
                raw.harness_io.map(|io| per(io.syscr)),
                raw.harness_io.map(|io| per(io.syscw)),
                raw.server_io.map(|io| per(io.syscr)),
                raw.server_io.map(|io| per(io.syscw)),
            )
        };
        Some(CounterRecord {
            requests: raw.requests,
            pdk_calls_per_request: if raw.ok_requests > 0 {
                raw.pdk_calls as f64 / raw.ok_requests as f64
            } else {
                0.0
            },
            round_trips_per_request: per(raw.socket.messages_out),
            bytes_out_per_request: per(raw.socket.bytes_out),
            bytes_in_per_request: per(raw.socket.bytes_in),
            syscalls_source: if exact { "tracepoints" } else { "proc-io" }.to_owned(),
            harness_reads_per_request: harness_reads,
            harness_writes_per_request: harness_writes,
            harness_allocs_per_request: raw.harness_allocs.map(per),
            server_reads_per_request: server_reads,
            server_writes_per_request: server_writes,
            server_bytes_read_per_request: raw.server_io.map(|io| per(io.rchar)),
            server_bytes_written_per_request: raw.server_io.map(|io| per(io.wchar)),
            server_rss_growth_kib_per_10k: raw
                .server_rss_growth_kib
                .map(|kib| kib as f64 * 10_000.0 / n),
        })
    }

    /// The figures of all `records` together: each count summed over the trials and divided
    /// by their requests together (a request-weighted mean of the trials' figures), so the
    /// window edges' error shrinks with every trial. Each figure over the records that have it;
    /// system calls of the most common source only.
    pub fn combine(records: &[CounterRecord]) -> Option<CounterRecord> {
        let records: Vec<&CounterRecord> = records.iter().filter(|r| r.requests > 0).collect();
        if records.is_empty() {
            return None;
        }
        let exact = records
            .iter()
            .filter(|r| r.syscalls_source == "tracepoints")
            .count();
        let source = if exact * 2 >= records.len() {
            "tracepoints"
        } else {
            "proc-io"
        };
        let weighted = |rs: &mut dyn Iterator<Item = (u64, f64)>| {
            let (mut n, mut sum) = (0u64, 0.0);
            for (w, v) in rs {
                n += w;
                sum += w as f64 * v;
            }
            (n > 0).then(|| sum / n as f64)
        };
        let all = |f: &dyn Fn(&CounterRecord) -> Option<f64>| {
            weighted(&mut records.iter().filter_map(|r| f(r).map(|v| (r.requests, v))))
        };
        let same = |f: &dyn Fn(&CounterRecord) -> Option<f64>| {
            weighted(
                &mut records
                    .iter()
                    .filter(|r| r.syscalls_source == source)
                    .filter_map(|r| f(r).map(|v| (r.requests, v))),
            )
        };
        Some(CounterRecord {
            requests: records.iter().map(|r| r.requests).sum(),
            pdk_calls_per_request: all(&|r| Some(r.pdk_calls_per_request)).unwrap_or(0.0),
            round_trips_per_request: all(&|r| Some(r.round_trips_per_request)).unwrap_or(0.0),
            bytes_out_per_request: all(&|r| Some(r.bytes_out_per_request)).unwrap_or(0.0),
            bytes_in_per_request: all(&|r| Some(r.bytes_in_per_request)).unwrap_or(0.0),
            syscalls_source: source.to_owned(),
            harness_reads_per_request: same(&|r| r.harness_reads_per_request),
            harness_writes_per_request: same(&|r| r.harness_writes_per_request),
            harness_allocs_per_request: all(&|r| r.harness_allocs_per_request),
            server_reads_per_request: same(&|r| r.server_reads_per_request),
            server_writes_per_request: same(&|r| r.server_writes_per_request),
            server_bytes_read_per_request: all(&|r| r.server_bytes_read_per_request),
            server_bytes_written_per_request: all(&|r| r.server_bytes_written_per_request),
            server_rss_growth_kib_per_10k: all(&|r| r.server_rss_growth_kib_per_10k),
        })
    }
}

/// Server resource use at a point (medians over trials).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ServerRecord {
    /// CPU seconds per second of window (1.0 = one core busy), median over trials.
    pub cpu_cores: Option<f64>,
    /// Server CPU per request, µs.
    pub cpu_us_per_request: Option<f64>,
    pub rss_kib_max: Option<u64>,
    pub hwm_kib_max: Option<u64>,
    /// Total respawns over the trials (a server killed mid-point is restarted as Kong does).
    pub respawns: u32,
}

/// loadgen's own cost at a point.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LoadgenRecord {
    /// CPU seconds per second of window, median over trials.
    pub cpu_cores: f64,
    /// CPU per PDK round trip (HandleEvent + each callback), ns, median over trials.
    pub cpu_ns_per_round_trip: f64,
    /// loadgen CPU ÷ server CPU (median over trials), when the server's CPU is known.
    pub cpu_ratio_to_server: Option<f64>,
}

fn via_ipc() -> String {
    "ipc".into()
}

/// One measured point.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PointRecord {
    /// Target label: a peer name, `reference` or the `--name` of a command pair.
    pub peer: String,
    pub protocol: String,
    pub calls: u32,
    pub concurrency: usize,
    pub kong_workers: usize,
    /// `"closed"` or `"open"`.
    pub mode: String,
    /// `"single"` or `"multicore"`.
    pub variant: String,
    /// How requests reached the server: `"ipc"` (one event each through the host loop) or
    /// `"http"` (HTTP requests through `mock-kong proxy`). Files made before HTTP existed
    /// read as `"ipc"`.
    #[serde(default = "via_ipc")]
    pub via: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target_rps: Option<f64>,
    /// Median successful requests/s over the trials.
    pub rps: f64,
    pub rps_spread: Spread,
    /// rps ÷ rps of the same series at 0 calls.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rps_normalised: Option<f64>,
    /// Percentiles of all trials' latencies together (histograms merged, never averaged).
    pub latency_us: LatencyUs,
    pub latency_p99_spread: Spread,
    /// Open loop: service time (from the actual start), all trials merged.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub service_us: Option<LatencyUs>,
    /// Open loop: any trial saturated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub saturated: Option<bool>,
    /// Errors in the measurement windows of all trials.
    pub errors: u64,
    /// Open loop: requests scheduled but not started by the end of the windows (all trials).
    #[serde(default)]
    pub unsent: u64,
    pub warmup_errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// PDK calls counted in the transcript of the point's sample request.
    pub verified_calls: usize,
    /// 10⁶ ÷ rps: the time per request the linear model fits, µs (0 when nothing succeeded).
    pub time_per_request_us: f64,
    /// The HdrHistogram percentile spectrum of the merged latencies (`loadgen run --hgrm`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hgrm: Option<String>,
    pub server: ServerRecord,
    pub loadgen: LoadgenRecord,
    /// Machine-independent counts per request over all trials together
    /// ([`CounterRecord::combine`]; absent in files made before they existed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub counters: Option<CounterRecord>,
    pub trials: Vec<TrialRecord>,
}

impl PointRecord {
    /// The spread of the trials' rps in percent, or why there is none (one trial has no spread;
    /// "0.0 %" would claim a perfectly steady measurement).
    pub fn spread_text(&self) -> String {
        if self.trials.len() < 2 {
            "n/a (1 trial)".into()
        } else {
            format!("{:.1} %", self.rps_spread.spread_pct)
        }
    }

    /// Aggregates the trials of a point.
    #[allow(clippy::too_many_arguments)]
    pub fn from_trials(
        peer: &str,
        protocol: &str,
        calls: u32,
        concurrency: usize,
        kong_workers: usize,
        mode: Mode,
        variant: &str,
        verified_calls: usize,
        trials: &[TrialResult],
    ) -> PointRecord {
        let mut latency = stats::new_histogram();
        let mut service: Option<hdrhistogram::Histogram<u64>> = None;
        let mut kinds = BTreeMap::new();
        for t in trials {
            let _ = latency.add(&t.latency);
            if let Some(s) = &t.service {
                match &mut service {
                    Some(acc) => {
                        let _ = acc.add(s);
                    }
                    None => service = Some(s.clone()),
                }
            }
            for (k, v) in &t.error_kinds {
                *kinds.entry(k.clone()).or_insert(0) += v;
            }
        }
        let records: Vec<TrialRecord> = trials
            .iter()
            .map(|t| TrialRecord {
                rps: t.rps,
                ok: t.ok,
                errors: t.errors,
                warmup_errors: t.warmup_errors,
                window_s: t.window_s,
                latency_us: LatencyUs::of(&t.latency),
                service_us: t.service.as_ref().map(LatencyUs::of),
                saturated: t.saturated,
                unsent: t.unsent,
                loadgen_cpu_s: t.loadgen_cpu_s,
                loadgen_cpu_ns_per_round_trip: t.loadgen_ns_per_round_trip(),
                server_cpu_s: t.server.and_then(|s| s.cpu_s),
                server_rss_kib: t.server.map(|s| s.rss_kib),
                server_respawns: t.server_respawns,
                counters: CounterRecord::of(&t.counters),
            })
            .collect();
        let counters = CounterRecord::combine(
            &records
                .iter()
                .filter_map(|r| r.counters.clone())
                .collect::<Vec<_>>(),
        );
        let rps = Spread::of(&records.iter().map(|r| r.rps).collect::<Vec<_>>());
        let p99 = Spread::of(&records.iter().map(|r| r.latency_us.p99).collect::<Vec<_>>());
        let server_cores: Vec<f64> = trials
            .iter()
            .filter_map(|t| {
                t.server
                    .and_then(|s| s.cpu_s)
                    .map(|c| c / t.window_s.max(1e-9))
            })
            .collect();
        let server_per_req: Vec<f64> = trials
            .iter()
            .filter_map(|t| {
                let c = t.server.and_then(|s| s.cpu_s)?;
                (t.ok > 0).then(|| c * 1e6 / t.ok as f64)
            })
            .collect();
        let ratios: Vec<f64> = trials
            .iter()
            .filter_map(|t| {
                let c = t.server.and_then(|s| s.cpu_s)?;
                (c > 0.0).then(|| t.loadgen_cpu_s / c)
            })
            .collect();
        let median_opt = |v: &[f64]| (!v.is_empty()).then(|| Spread::of(v).median);
        PointRecord {
            peer: peer.to_owned(),
            protocol: protocol.to_owned(),
            calls,
            concurrency,
            kong_workers,
            mode: mode.name().to_owned(),
            variant: variant.to_owned(),
            via: via_ipc(),
            target_rps: match mode {
                Mode::Open { rate } => Some(rate),
                Mode::Closed => None,
            },
            rps: rps.median,
            rps_spread: rps,
            rps_normalised: None,
            latency_us: LatencyUs::of(&latency),
            latency_p99_spread: p99,
            service_us: service.as_ref().map(LatencyUs::of),
            saturated: match mode {
                Mode::Open { .. } => Some(records.iter().any(|r| r.saturated == Some(true))),
                Mode::Closed => None,
            },
            errors: records.iter().map(|r| r.errors).sum(),
            unsent: records.iter().map(|r| r.unsent).sum(),
            warmup_errors: records.iter().map(|r| r.warmup_errors).sum(),
            error_kinds: kinds,
            verified_calls,
            time_per_request_us: if rps.median > 0.0 {
                1e6 / rps.median
            } else {
                0.0
            },
            server: ServerRecord {
                cpu_cores: median_opt(&server_cores),
                cpu_us_per_request: median_opt(&server_per_req),
                rss_kib_max: records.iter().filter_map(|r| r.server_rss_kib).max(),
                hwm_kib_max: trials
                    .iter()
                    .filter_map(|t| t.server.map(|s| s.hwm_kib))
                    .max(),
                respawns: records.iter().map(|r| r.server_respawns).sum(),
            },
            loadgen: LoadgenRecord {
                cpu_cores: Spread::of(
                    &trials
                        .iter()
                        .map(|t| t.loadgen_cpu_s / t.window_s.max(1e-9))
                        .collect::<Vec<_>>(),
                )
                .median,
                cpu_ns_per_round_trip: Spread::of(
                    &records
                        .iter()
                        .map(|r| r.loadgen_cpu_ns_per_round_trip)
                        .collect::<Vec<_>>(),
                )
                .median,
                cpu_ratio_to_server: median_opt(&ratios),
            },
            counters,
            trials: records,
            hgrm: None,
        }
    }

    /// The median of the trials' p50 latencies (the merged p50 without trials).
    pub fn median_p50_us(&self) -> f64 {
        if self.trials.is_empty() {
            return self.latency_us.p50;
        }
        Spread::of(
            &self
                .trials
                .iter()
                .map(|t| t.latency_us.p50)
                .collect::<Vec<_>>(),
        )
        .median
    }

    /// The series a point belongs to (everything but `calls`; ` http` ends the key of a point
    /// measured over HTTP, so IPC keys are what they always were).
    pub fn series_key(&self) -> String {
        let mut k = format!(
            "{} {} c{} {}",
            self.peer, self.protocol, self.concurrency, self.mode
        );
        if self.variant != "single" {
            let _ = write!(k, " {}x{}", self.variant, self.kong_workers);
        }
        if self.via != "ipc" {
            let _ = write!(k, " {}", self.via);
        }
        k
    }
}

/// The fitted line of one series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FitRecord {
    pub peer: String,
    pub protocol: String,
    pub concurrency: usize,
    pub kong_workers: usize,
    pub mode: String,
    pub variant: String,
    /// `"ipc"` or `"http"`, as the series' points.
    #[serde(default = "via_ipc")]
    pub via: String,
    #[serde(flatten)]
    pub fit: LinearFit,
    /// per_call_us ÷ base_us (the docs' curves: ~0.2 for Go, ~0.3 for Python/JS).
    pub per_call_share_of_base: f64,
}

impl FitRecord {
    /// R², or why it says nothing: a line through two points always fits exactly.
    pub fn r2_text(&self) -> String {
        if self.fit.points <= 2 {
            format!("n/a ({} points: any line fits)", self.fit.points)
        } else {
            format!("{:.4}", self.fit.r2)
        }
    }
}

/// A point that could not be measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureRecord {
    pub peer: String,
    pub calls: Option<u32>,
    pub concurrency: Option<usize>,
    pub error: String,
}

/// Measurements made in the same run that gates compare against (issue: CI gates).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct References {
    /// Raw ping-pong round trips/s, per protocol.
    pub floor_round_trips_per_s: BTreeMap<String, f64>,
    /// The reference server's closed-loop rps at concurrency 1, per protocol and call count
    /// (`"MsgPack:1/10" → rps`), when the sweep included `--reference`.
    pub reference_rps: BTreeMap<String, f64>,
    /// Harness efficiency: reference round trips/s at 1 connection and the largest call count,
    /// ÷ the floor's, per protocol (target ≥ 0.5).
    pub harness_efficiency: BTreeMap<String, f64>,
    /// loadgen CPU per round trip ÷ the floor client's, same point (target ≤ 2).
    pub harness_cpu_ratio: BTreeMap<String, f64>,
}

/// Settings of the sweep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub calls: Vec<u32>,
    pub concurrency: Vec<usize>,
    pub modes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub open_rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub trials: usize,
    pub kong_workers: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub multicore_workers: Option<usize>,
    pub method: String,
    pub runtime_threads: usize,
    /// `loadgen ab`: how many times the servers were started afresh; the trials of a point
    /// fall into that many contiguous forks.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub forks: Option<usize>,
    /// The plugin measured when it is not the bench plugin (`--plugin`), with the config as
    /// given (`--config`); its PDK calls per request come from its transcript.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plugin_config: Option<serde_json::Value>,
}

/// `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub schema_version: u32,
    pub tool: String,
    /// Seconds since the Unix epoch when the sweep finished.
    pub finished_at: u64,
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    pub floor: Vec<FloorResult>,
    /// `--via http`: the HTTP path's own cost, measured in the same run.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub http_floor: Option<crate::http::HttpFloor>,
    pub references: References,
    pub points: Vec<PointRecord>,
    pub fits: Vec<FitRecord>,
    pub failures: Vec<FailureRecord>,
    /// loadgen's peak resident set size during the sweep, KiB.
    pub loadgen_peak_rss_kib: u64,
    /// Why system calls were not counted exactly (`None`: they were, or nothing was measured);
    /// the counters then fall back to `/proc/<pid>/io` (`syscalls_source: "proc-io"`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub syscall_counting: Option<String>,
    /// SIGINT/SIGTERM ended the run early: the points and trials finished before it are here,
    /// the trial in progress was dropped.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub interrupted: bool,
}

#[cfg(test)]
impl Settings {
    /// The settings of a test document: a closed-loop sweep over `calls` at concurrency 1, one
    /// one-second trial without warm-up, one Kong worker and runtime thread, the bench plugin
    /// calling `kong.request.get_header`.
    pub(crate) fn for_tests(calls: Vec<u32>) -> Settings {
        Settings {
            calls,
            concurrency: vec![1],
            modes: vec!["closed".into()],
            open_rate: None,
            duration_s: 1.0,
            warmup_s: 0.0,
            trials: 1,
            kong_workers: 1,
            multicore_workers: None,
            method: "kong.request.get_header".into(),
            runtime_threads: 1,
            forks: None,
            plugin: None,
            plugin_config: None,
        }
    }
}

impl Results {
    /// A document with no points yet, for a run made now on this machine.
    pub fn empty(command: &str, settings: Settings) -> Results {
        Results {
            schema_version: SCHEMA_VERSION,
            tool: format!("loadgen {}", env!("CARGO_PKG_VERSION")),
            finished_at: 0,
            command: command.to_owned(),
            machine: Machine::detect(),
            settings,
            floor: Vec::new(),
            http_floor: None,
            references: References::default(),
            points: Vec::new(),
            fits: Vec::new(),
            failures: Vec::new(),
            loadgen_peak_rss_kib: 0,
            syscall_counting: None,
            interrupted: false,
        }
    }

    /// Stamps the end of the run (time, loadgen's peak memory) and computes the derived
    /// figures ([`finish`](Self::finish)).
    pub fn close(&mut self) {
        self.loadgen_peak_rss_kib = self
            .loadgen_peak_rss_kib
            .max(crate::procstat::self_rss_kib().1);
        self.finished_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.finish();
    }

    /// Fills `rps_normalised` (÷ the 0-call point of the same series), the linear fits
    /// (closed-loop series with at least two call counts) and the in-run references.
    pub fn finish(&mut self) {
        let mut zero: BTreeMap<String, f64> = BTreeMap::new();
        for p in &self.points {
            if p.calls == 0 && p.rps > 0.0 {
                zero.insert(p.series_key(), p.rps);
            }
        }
        for p in &mut self.points {
            p.rps_normalised = zero.get(&p.series_key()).map(|z| p.rps / z);
        }
        let mut series: BTreeMap<String, Vec<&PointRecord>> = BTreeMap::new();
        for p in self.points.iter().filter(|p| p.mode == "closed") {
            series.entry(p.series_key()).or_default().push(p);
        }
        self.fits = series
            .values()
            .filter_map(|pts| {
                let xy: Vec<(f64, f64)> = pts
                    .iter()
                    .filter(|p| p.rps > 0.0)
                    .map(|p| (f64::from(p.calls), p.time_per_request_us))
                    .collect();
                let fit = LinearFit::fit(&xy)?;
                let p = pts[0];
                Some(FitRecord {
                    peer: p.peer.clone(),
                    protocol: p.protocol.clone(),
                    concurrency: p.concurrency,
                    kong_workers: p.kong_workers,
                    mode: p.mode.clone(),
                    variant: p.variant.clone(),
                    via: p.via.clone(),
                    per_call_share_of_base: if fit.base_us != 0.0 {
                        fit.per_call_us / fit.base_us
                    } else {
                        0.0
                    },
                    fit,
                })
            })
            .collect();
        for f in &self.floor {
            self.references
                .floor_round_trips_per_s
                .insert(f.protocol.to_string(), f.round_trips_per_s);
        }
        for p in self.points.iter().filter(|p| {
            p.peer == "reference"
                && p.concurrency == 1
                && p.mode == "closed"
                && p.variant == "single"
        }) {
            self.references
                .reference_rps
                .insert(format!("{}/{}", p.protocol, p.calls), p.rps);
        }
        for f in &self.floor {
            let proto = f.protocol.to_string();
            let best = self
                .points
                .iter()
                .filter(|p| {
                    p.peer == "reference"
                        && p.protocol == proto
                        && p.concurrency == 1
                        && p.mode == "closed"
                        && p.variant == "single"
                })
                .max_by_key(|p| p.calls);
            if let Some(p) = best {
                let rt = p.rps * f64::from(p.calls + 1);
                if f.round_trips_per_s > 0.0 {
                    self.references
                        .harness_efficiency
                        .insert(proto.clone(), rt / f.round_trips_per_s);
                }
                if f.client_cpu_ns_per_round_trip > 0.0 {
                    self.references.harness_cpu_ratio.insert(
                        proto,
                        p.loadgen.cpu_ns_per_round_trip / f.client_cpu_ns_per_round_trip,
                    );
                }
            }
        }
    }

    /// One line per point.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "peer,protocol,variant,mode,kong_workers,concurrency,calls,target_rps,rps,rps_min,rps_max,rps_spread_pct,rps_normalised,p50_us,p90_us,p99_us,p999_us,max_us,errors,warmup_errors,saturated,server_cpu_cores,server_cpu_us_per_request,server_rss_kib,loadgen_cpu_cores,loadgen_cpu_ns_per_round_trip,trials\n",
        );
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
        for p in &self.points {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{:.1},{:.1},{:.1},{:.2},{},{:.1},{:.1},{:.1},{:.1},{:.1},{},{},{},{},{},{},{:.4},{:.0},{}",
                csv_field(&p.peer),
                p.protocol,
                p.variant,
                p.mode,
                p.kong_workers,
                p.concurrency,
                p.calls,
                opt(p.target_rps),
                p.rps,
                p.rps_spread.min,
                p.rps_spread.max,
                p.rps_spread.spread_pct,
                opt(p.rps_normalised),
                p.latency_us.p50,
                p.latency_us.p90,
                p.latency_us.p99,
                p.latency_us.p999,
                p.latency_us.max,
                p.errors,
                p.warmup_errors,
                p.saturated.map(|s| s.to_string()).unwrap_or_default(),
                opt(p.server.cpu_cores),
                opt(p.server.cpu_us_per_request),
                p.server.rss_kib_max.map(|v| v.to_string()).unwrap_or_default(),
                p.loadgen.cpu_cores,
                p.loadgen.cpu_ns_per_round_trip,
                p.trials.len()
            );
        }
        out
    }

    /// Closed-loop series of a Go, JavaScript or Python server (by its label: `go…`, `js…`,
    /// `python…`) against Kong's documented normalised curve at 1, 5, 10 and 30 calls.
    pub fn kong_docs_comparison(&self) -> Vec<DocsComparison> {
        let mut series: BTreeMap<String, Vec<&PointRecord>> = BTreeMap::new();
        for p in self.points.iter().filter(|p| p.mode == "closed") {
            series.entry(p.series_key()).or_default().push(p);
        }
        series
            .into_iter()
            .filter_map(|(key, pts)| {
                let language = DocsLanguage::of(&pts[0].peer)?;
                let zero = pts.iter().find(|p| p.calls == 0);
                let p50_zero = zero.map(|p| p.median_p50_us());
                let rows: Vec<DocsRow> = DOCS_CALLS
                    .iter()
                    .filter_map(|&calls| {
                        let p = pts.iter().find(|p| p.calls == calls)?;
                        let measured = p.rps_normalised?;
                        let docs = language.docs(calls)?;
                        let from_p50 = p50_zero
                            .filter(|z| *z > 0.0)
                            .map(|z| z / p.median_p50_us())
                            .filter(|v| v.is_finite());
                        Some(DocsRow {
                            calls,
                            docs,
                            measured,
                            abs_error: (measured - docs).abs(),
                            from_p50,
                            paired: zero.and_then(|z| paired_ratio(z, p)),
                        })
                    })
                    .collect();
                if rows.is_empty() {
                    return None;
                }
                let n = rows.len() as f64;
                let mae = rows.iter().map(|r| r.abs_error).sum::<f64>() / n;
                let p50_errors: Option<Vec<f64>> = rows
                    .iter()
                    .map(|r| r.from_p50.map(|v| (v - r.docs).abs()))
                    .collect();
                let paired_errors: Option<Vec<f64>> = rows
                    .iter()
                    .map(|r| r.paired.map(|v| (v - r.docs).abs()))
                    .collect();
                Some(DocsComparison {
                    series: key,
                    language: language.name().to_owned(),
                    rows,
                    mean_abs_error: mae,
                    mean_abs_error_p50: p50_errors.map(|e| e.iter().sum::<f64>() / n),
                    mean_abs_error_paired: paired_errors.map(|e| e.iter().sum::<f64>() / n),
                })
            })
            .collect()
    }

    /// `p`'s requests/s ÷ its series' 0-call value, paired by trial where the two points can be
    /// paired (the same number of trials, at least 2: interleaved rounds or merged runs), the
    /// ratio of the medians ([`PointRecord::rps_normalised`]) otherwise.
    pub fn normalised_paired(&self, p: &PointRecord) -> Option<f64> {
        let key = p.series_key();
        let zero = self
            .points
            .iter()
            .find(|z| z.calls == 0 && z.series_key() == key);
        zero.and_then(|z| paired_ratio(z, p)).or(p.rps_normalised)
    }

    fn kong_docs_markdown(&self) -> String {
        let mut s = String::new();
        let cmp = self.kong_docs_comparison();
        if cmp.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "## Against Kong's documentation (requests/s ÷ the 0-call value, closed loop)\n"
        );
        for c in &cmp {
            let _ = writeln!(s, "### {} ({})\n", c.series, c.language);
            let _ = writeln!(
                s,
                "| calls | Kong docs | measured (requests/s) | absolute error | from p50 latency | its error | paired by trial | its error |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
            let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
            for r in &c.rows {
                let _ = writeln!(
                    s,
                    "| {} | {:.2} | {:.3} | {:.3} | {} | {} | {} | {} |",
                    r.calls,
                    r.docs,
                    r.measured,
                    r.abs_error,
                    opt(r.from_p50),
                    opt(r.from_p50.map(|v| (v - r.docs).abs())),
                    opt(r.paired),
                    opt(r.paired.map(|v| (v - r.docs).abs()))
                );
            }
            let _ = writeln!(
                s,
                "\nMean absolute error: **{:.3}** (requests/s); {} from the p50 latency (p50 at 0 calls ÷ p50, medians of the trials: less sensitive to a busy machine's stalls); {} paired by trial (median over i of trial i's requests/s ÷ the 0-call point's trial i: with runs merged by `loadgen baseline merge`, trial i of every point is repetition i's, measured seconds apart, so a slow spell of the machine cancels out).\n",
                c.mean_abs_error,
                opt(c.mean_abs_error_p50),
                opt(c.mean_abs_error_paired)
            );
        }
        s
    }

    /// The markdown summary: machine, floor, fits, a table per series, targets.
    pub fn summary_markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "# loadgen sweep\n");
        let _ = writeln!(s, "Command: `{}`\n", self.command);
        let _ = writeln!(
            s,
            "Machine: {} × {} ({} GiB RAM, Linux {}, {}), fingerprint `{}`.\n",
            m.cpus,
            m.cpu_model,
            m.mem_total_kib >> 20,
            m.kernel,
            m.arch,
            m.fingerprint
        );
        let st = &self.settings;
        let _ = writeln!(
            s,
            "Settings: {} s window after {} s warm-up, {} trial(s) per point (medians shown; latency percentiles from all trials' histograms merged), {} Kong worker(s), loadgen runtime threads: {}.\n",
            st.duration_s, st.warmup_s, st.trials, st.kong_workers, st.runtime_threads
        );
        if !self.floor.is_empty() {
            let _ = writeln!(
                s,
                "## Transport floor (raw Unix-socket ping-pong, same sizes)\n"
            );
            let _ = writeln!(s, "| protocol | bytes out/in | round trips/s | RTT p50 µs | RTT p99 µs | client CPU ns/rt |");
            let _ = writeln!(s, "|---|---|---|---|---|---|");
            for f in &self.floor {
                let _ = writeln!(
                    s,
                    "| {} | {}/{} | {:.0} | {:.1} | {:.1} | {:.0} |",
                    f.protocol,
                    f.request_bytes,
                    f.response_bytes,
                    f.round_trips_per_s,
                    f.rtt_us.p50,
                    f.rtt_us.p99,
                    f.client_cpu_ns_per_round_trip
                );
            }
            s.push('\n');
        }
        if let Some(h) = &self.http_floor {
            let _ = writeln!(
                s,
                "## HTTP floor (1 connection, closed loop, {} trial(s) each, alternated)\n",
                h.trials
            );
            let _ = writeln!(s, "| server | requests/s | p50 µs | p99 µs |");
            let _ = writeln!(s, "|---|---|---|---|");
            let _ = writeln!(
                s,
                "| plain hyper `hello` | {:.0} | {:.1} | {:.1} |",
                h.hello_rps, h.hello_latency_us.p50, h.hello_latency_us.p99
            );
            let _ = writeln!(
                s,
                "| mock-kong proxy, plugin with no phase, echo upstream | {:.0} | {:.1} | {:.1} |",
                h.proxy_rps, h.proxy_latency_us.p50, h.proxy_latency_us.p99
            );
            let _ = writeln!(
                s,
                "\nThe proxy serves {:.2} × the plain server's requests/s; its p50 overhead is {:.1} µs.\n",
                h.proxy_share_of_hello, h.proxy_p50_overhead_us
            );
        }
        let r = &self.references;
        if !r.harness_efficiency.is_empty() {
            let _ = writeln!(
                s,
                "## Harness targets (reference server, 1 connection, largest call count)\n"
            );
            let _ = writeln!(s, "| protocol | harness ÷ floor round trips/s (≥ 0.5) | harness ÷ floor CPU per round trip (≤ 2) |");
            let _ = writeln!(s, "|---|---|---|");
            for (proto, eff) in &r.harness_efficiency {
                let cpu = r.harness_cpu_ratio.get(proto).copied().unwrap_or(f64::NAN);
                let _ = writeln!(
                    s,
                    "| {proto} | {eff:.2} {} | {cpu:.2} {} |",
                    if *eff >= 0.5 { "met" } else { "**missed**" },
                    if cpu <= 2.0 { "met" } else { "**missed**" }
                );
            }
            s.push('\n');
        }
        if !self.fits.is_empty() {
            let _ = writeln!(s, "## Linear fit: time per request = base + calls × per-call cost (closed loop, 10⁶/rps)\n");
            let _ = writeln!(
                s,
                "| series | base µs | per call µs | per call ÷ base | R² |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|");
            for f in &self.fits {
                let _ = writeln!(
                    s,
                    "| {} {} c{}{}{} | {:.1} | {:.2} | {:.2} | {} |",
                    f.peer,
                    f.protocol,
                    f.concurrency,
                    if f.variant == "single" {
                        String::new()
                    } else {
                        format!(" {}×{}", f.variant, f.kong_workers)
                    },
                    if f.via == "ipc" {
                        String::new()
                    } else {
                        format!(" via {}", f.via)
                    },
                    f.fit.base_us,
                    f.fit.per_call_us,
                    f.per_call_share_of_base,
                    f.r2_text()
                );
            }
            s.push('\n');
        }
        s.push_str(&self.kong_docs_markdown());
        let _ = writeln!(s, "## Points\n");
        let _ = writeln!(s, "| series | calls | rps (median) | spread | norm. | p50 µs | p99 µs | max µs | errors | server CPU cores | loadgen CPU ÷ server |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for p in &self.points {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} | {} | {:.1} | {:.1} | {:.1} | {}{} | {} | {} |",
                p.series_key(),
                p.calls,
                p.rps,
                p.spread_text(),
                p.rps_normalised
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_default(),
                p.latency_us.p50,
                p.latency_us.p99,
                p.latency_us.max,
                p.errors,
                if p.server.respawns > 0 {
                    format!(" ({} respawn)", p.server.respawns)
                } else {
                    String::new()
                },
                p.server
                    .cpu_cores
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_default(),
                p.loadgen
                    .cpu_ratio_to_server
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_default(),
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(s, "\n## Points that could not be measured\n");
            for f in &self.failures {
                let _ = writeln!(
                    s,
                    "* {} calls={:?} c={:?}: {}",
                    f.peer, f.calls, f.concurrency, f.error
                );
            }
        }
        let _ = writeln!(
            s,
            "\nloadgen peak RSS: {:.1} MiB.",
            self.loadgen_peak_rss_kib as f64 / 1024.0
        );
        s
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The call counts Kong's documentation states figures for (`DOCS_SHAPES` has more points,
/// read off its graph; these four are the ones its text and this project's issue quote).
pub const DOCS_CALLS: [u32; 4] = [1, 5, 10, 30];

/// A language of Kong's documented curves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocsLanguage {
    Go,
    JavaScript,
    Python,
}

impl DocsLanguage {
    /// The language of a server by its label (`go`, `js`/`javascript`, `python`, optionally
    /// followed by `-…`).
    pub fn of(label: &str) -> Option<DocsLanguage> {
        let head = label
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()?
            .to_ascii_lowercase();
        match head.as_str() {
            "go" => Some(DocsLanguage::Go),
            "js" | "javascript" | "node" => Some(DocsLanguage::JavaScript),
            "python" | "py" => Some(DocsLanguage::Python),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DocsLanguage::Go => "Go",
            DocsLanguage::JavaScript => "JavaScript",
            DocsLanguage::Python => "Python",
        }
    }

    /// Kong's documented normalised requests/s at `calls`.
    pub fn docs(self, calls: u32) -> Option<f64> {
        let row = crate::plot::DOCS_SHAPES.iter().find(|r| r.0 == calls)?;
        match self {
            DocsLanguage::Go => Some(row.1),
            DocsLanguage::JavaScript => row.2,
            DocsLanguage::Python => Some(row.3),
        }
    }
}

/// One call count of a [`DocsComparison`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocsRow {
    pub calls: u32,
    pub docs: f64,
    pub measured: f64,
    pub abs_error: f64,
    /// The same ratio from latency: the 0-call point's p50 ÷ this point's p50 (medians of the
    /// trials' p50s).
    pub from_p50: Option<f64>,
    /// The same ratio paired by trial: the median over i of trial i's requests/s ÷ the 0-call
    /// point's trial i (both points need the same number of trials, at least 2).
    pub paired: Option<f64>,
}

/// The median over trial index i of `p`'s trial i requests/s ÷ `zero`'s trial i requests/s;
/// `None` unless both have the same number of trials, at least 2, with requests/s above 0.
fn paired_ratio(zero: &PointRecord, p: &PointRecord) -> Option<f64> {
    if zero.trials.len() < 2 || zero.trials.len() != p.trials.len() {
        return None;
    }
    let ratios: Option<Vec<f64>> = zero
        .trials
        .iter()
        .zip(&p.trials)
        .map(|(z, t)| (z.rps > 0.0).then(|| t.rps / z.rps))
        .collect();
    Some(Spread::of(&ratios?).median)
}

/// A measured series against Kong's documented curve of its language.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocsComparison {
    pub series: String,
    pub language: String,
    pub rows: Vec<DocsRow>,
    pub mean_abs_error: f64,
    /// The mean absolute error of [`DocsRow::from_p50`].
    pub mean_abs_error_p50: Option<f64>,
    /// The mean absolute error of [`DocsRow::paired`].
    pub mean_abs_error_paired: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(peer: &str, calls: u32, rps: f64) -> PointRecord {
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
            rps,
            rps_spread: Spread::of(&[rps]),
            rps_normalised: None,
            latency_us: LatencyUs::default(),
            latency_p99_spread: Spread::default(),
            service_us: None,
            saturated: None,
            errors: 0,
            unsent: 0,
            warmup_errors: 0,
            error_kinds: BTreeMap::new(),
            verified_calls: calls as usize,
            time_per_request_us: 1e6 / rps,
            server: ServerRecord::default(),
            loadgen: LoadgenRecord {
                cpu_cores: 0.5,
                cpu_ns_per_round_trip: 3000.0,
                cpu_ratio_to_server: None,
            },
            counters: None,
            trials: Vec::new(),
            hgrm: None,
        }
    }

    fn trials(rps: &[f64]) -> Vec<TrialRecord> {
        rps.iter()
            .map(|&x| {
                serde_json::from_value(serde_json::json!({
                    "rps": x, "ok": 1000, "errors": 0, "warmup_errors": 0, "window_s": 1.0,
                    "latency_us": {"p50": 1e6 / x, "p90": 1e6 / x, "p99": 1e6 / x, "p999": 1e6 / x, "max": 1e6 / x, "mean": 1e6 / x},
                    "loadgen_cpu_s": 0.5, "loadgen_cpu_ns_per_round_trip": 1.0,
                    "server_cpu_s": null, "server_rss_kib": null, "server_respawns": 0
                }))
                .unwrap()
            })
            .collect()
    }

    /// Paired by trial, a slow spell that hits one repetition's 0-call trial and the same
    /// repetition's n-call trial alike cancels out; the ratio of the points' medians mixes
    /// repetitions and does not.
    #[test]
    fn the_docs_ratio_paired_by_trial_cancels_a_slow_repetition() {
        let mut zero = point("go", 0, 2000.0);
        zero.trials = trials(&[1000.0, 2000.0, 3000.0]);
        let mut ten = point("go", 10, 600.0);
        ten.trials = trials(&[1500.0, 400.0, 600.0]);
        // Trial ratios 1.5, 0.2, 0.2: median 0.2; the medians' ratio is 600 / 2000 = 0.3.
        let paired = paired_ratio(&zero, &ten).unwrap();
        assert!((paired - 0.2).abs() < 1e-12, "{paired}");
        // The plot's normalised curve takes the paired ratio; rps_normalised stays the medians'.
        let mut r = Results::empty("test", Settings::for_tests(vec![0, 10]));
        r.points = vec![zero.clone(), ten.clone()];
        r.finish();
        assert!((r.points[1].rps_normalised.unwrap() - 0.3).abs() < 1e-12);
        let plotted = r.normalised_paired(&r.points[1]).unwrap();
        assert!((plotted - 0.2).abs() < 1e-12, "{plotted}");
        // Unequal trial counts, or a single trial, cannot be paired.
        ten.trials.pop();
        assert_eq!(paired_ratio(&zero, &ten), None);
        zero.trials.truncate(1);
        ten.trials.truncate(1);
        assert_eq!(paired_ratio(&zero, &ten), None);
    }

    #[test]
    fn kong_docs_comparison_per_language_with_mean_absolute_error() {
        let mut r = Results::empty("test", Settings::for_tests(vec![0, 1, 5, 10, 30]));
        // go exactly on Kong's curve; python 0.1 above it everywhere; the reference has no
        // documented curve.
        for (calls, go, py) in [
            (0, 1.0, 1.0),
            (1, 0.83, 0.93),
            (5, 0.47, 0.47),
            (10, 0.32, 0.32),
            (30, 0.14, 0.19),
        ] {
            let mut g = point("go", calls, 1000.0 * go);
            g.via = "http".into();
            r.points.push(g);
            r.points.push(point("python", calls, 1000.0 * py));
            r.points.push(point("reference", calls, 1000.0));
        }
        r.finish();
        let cmp = r.kong_docs_comparison();
        assert_eq!(cmp.len(), 2, "{cmp:?}");
        let go = cmp.iter().find(|c| c.language == "Go").unwrap();
        assert!(go.series.ends_with(" http"), "{}", go.series);
        assert_eq!(go.rows.len(), 4);
        assert!(go.mean_abs_error < 1e-9, "{go:?}");
        let py = cmp.iter().find(|c| c.language == "Python").unwrap();
        // Python's curve is 0.83 / 0.37 / 0.22 / 0.09: 0.1 off at each call count.
        assert!((py.mean_abs_error - 0.1).abs() < 1e-9, "{py:?}");
        let md = r.summary_markdown();
        assert!(md.contains("Against Kong's documentation"), "{md}");
        assert!(md.contains("Mean absolute error: **0.100**"), "{md}");
        // No latency in these points: the p50 column says so rather than dividing by zero.
        assert!(md.contains("n/a from the p50 latency"), "{md}");
        assert!(md.contains("n/a paired by trial"), "{md}");
        assert_eq!(DocsLanguage::of("js-v2"), Some(DocsLanguage::JavaScript));
        assert_eq!(DocsLanguage::of("golang"), None);
        assert_eq!(r.fits.iter().filter(|f| f.via == "http").count(), 1);
    }

    #[test]
    fn finish_normalises_fits_and_references() {
        // time per request = 50 + 10 × calls µs.
        let points = [0u32, 1, 2, 5, 10]
            .iter()
            .map(|&c| point("reference", c, 1e6 / (50.0 + 10.0 * f64::from(c))))
            .collect();
        let mut r = Results {
            tool: "loadgen test".into(),
            floor: vec![FloorResult {
                protocol: mock_kong::Protocol::MsgPack,
                request_bytes: 40,
                response_bytes: 90,
                round_trips: 1000,
                seconds: 1.0,
                round_trips_per_s: 100_000.0,
                rtt_us: LatencyUs::default(),
                client_cpu_ns_per_round_trip: 2000.0,
                server_cpu_ns_per_round_trip: 2000.0,
            }],
            points,
            loadgen_peak_rss_kib: 10_000,
            ..Results::empty("test", Settings::for_tests(vec![0, 1, 2, 5, 10]))
        };
        r.finish();
        assert_eq!(r.fits.len(), 1);
        let f = &r.fits[0];
        assert!((f.fit.base_us - 50.0).abs() < 1e-6 && (f.fit.per_call_us - 10.0).abs() < 1e-6);
        assert!((f.per_call_share_of_base - 0.2).abs() < 1e-9);
        assert_eq!(r.points[0].rps_normalised, Some(1.0));
        assert!((r.points[4].rps_normalised.unwrap() - 50.0 / 150.0).abs() < 1e-9);
        // 10 calls: 1e6/150 rps × 11 round trips = 73,333 rt/s vs 100,000.
        let eff = r.references.harness_efficiency["MsgPack:1"];
        assert!((eff - 0.7333).abs() < 1e-3, "{eff}");
        assert!((r.references.harness_cpu_ratio["MsgPack:1"] - 1.5).abs() < 1e-9);
        let csv = r.to_csv();
        assert_eq!(csv.lines().count(), 6);
        assert!(csv
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("reference,MsgPack:1,single,closed,1,1,0,"));
        let md = r.summary_markdown();
        assert!(
            md.contains("per call µs") && md.contains("0.73 met"),
            "{md}"
        );
        let json = serde_json::to_string(&r).unwrap();
        let back: Results = serde_json::from_str(&json).unwrap();
        assert_eq!(back.points.len(), 5);
        assert_eq!(back.schema_version, SCHEMA_VERSION);
    }

    #[test]
    fn fingerprint_depends_on_the_machine_fields() {
        let m = Machine::detect();
        assert_eq!(m.fingerprint, m.compute_fingerprint());
        let mut other = m.clone();
        other.cpus += 1;
        assert_ne!(other.compute_fingerprint(), m.fingerprint);
    }
}
