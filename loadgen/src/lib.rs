//! # loadgen
//!
//! Measures Kong external plugin servers the way Kong's docs graphed them ("RPS / latency with
//! IPC count per request"), with numbers: it drives servers through the mock-kong host with the
//! `bench` plugin (exactly N PDK calls per request) and reports throughput, latency
//! percentiles, CPU and memory, against N.
//!
//! * [`driver`]: one trial of one point: closed loop (C request loops, Kong workers with their
//!   own connection pools) or open loop (constant rate, latency from the intended start).
//! * [`sweep`]: every target × mode × concurrency × calls × trials, the floor, the multicore
//!   variant, chaos (a server killed mid-point).
//! * [`http`]: load over HTTP through `mock-kong proxy` (`--via http`) and the HTTP floor.
//! * [`floor`]: a raw Unix-socket ping-pong with the same message sizes (the transport floor).
//! * [`results`]: `results.json` (schema `schema/results.schema.json`), CSV, markdown summary,
//!   machine fingerprint, linear fits and in-run references.
//! * [`plot`]: SVG and PNG plots with an embedded font.
//! * [`stats`], [`procstat`]: HdrHistogram summaries, spreads, fits; `/proc` and `getrusage`.
//! * [`syscount`], [`alloc`]: exact system-call counts (kernel tracepoints) and a counting
//!   allocator, for the machine-independent counters.
//! * [`gate`]: the CI regression gates (two files point by point, baselines, reports, CLI).
//! * [`cli`]: the `loadgen` command line (`main.rs` only calls [`cli::main`]).

pub mod ab;
pub mod alloc;
pub mod cli;
pub mod driver;
pub mod floor;
pub mod gate;
pub mod http;
pub mod plot;
pub mod procstat;
pub mod results;
pub mod stats;
pub mod sweep;
pub mod syscount;
