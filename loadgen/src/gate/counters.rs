//! The counter gate: compares the machine-independent counts per request of two runs
//! ([`CounterRecord`]), point by point, each with its own tolerance.
//!
//! Counts do not depend on how fast the machine is, so they can be compared with a baseline made
//! on any machine, and a change is a change the first time it is seen: a server that writes
//! each frame in two system calls shows twice the writes per request; one that makes an extra
//! PDK callback per request shows one call and one round trip more. The tolerances absorb the
//! little that does depend on timing (the edges of a window, the width of growing ids on the
//! wire) and nothing else:
//!
//! | counter | gated | tolerance | why not exact |
//! |---|---|---|---|
//! | PDK calls per request | yes | 0.01 | transcripts are exact |
//! | round trips per request | yes | 1 % + 0.02 | a request in flight at each window edge |
//! | bytes out / in per request | yes | 8 % + 4 B | ids grow wider on the wire as a run goes on (MsgPack message and event ids past 2^16, ProtoBuf sequence numbers past 2^14): up to 2 B per id, a few ids per message |
//! | harness writes per request | yes | 2 % + 0.05 | window edges; a few writes of the harness's own |
//! | server writes per request | yes | 2 % + 0.05 | window edges |
//! | harness allocations per request | yes | 3 % + 1 | the runtime's timers and buffers grow now and then |
//! | server RSS growth per 10k requests | yes | 1024 KiB | allocators grow in steps |
//! | harness / server reads per request | reported | — | a read may come back empty (`EAGAIN`) or carry two frames, depending on timing |
//!
//! System-call counts are compared only when both runs counted them the same way
//! (`syscalls_source`).

use crate::results::CounterRecord;

/// One counted figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counter {
    PdkCalls,
    RoundTrips,
    BytesOut,
    BytesIn,
    HarnessWrites,
    ServerWrites,
    HarnessAllocs,
    ServerRssGrowth,
    HarnessReads,
    ServerReads,
}

impl Counter {
    /// Every counter, in report order.
    pub const ALL: [Counter; 10] = [
        Counter::PdkCalls,
        Counter::RoundTrips,
        Counter::BytesOut,
        Counter::BytesIn,
        Counter::HarnessWrites,
        Counter::ServerWrites,
        Counter::HarnessAllocs,
        Counter::ServerRssGrowth,
        Counter::HarnessReads,
        Counter::ServerReads,
    ];

    /// Name in reports (`results.json` field names without `_per_request`).
    pub fn name(self) -> &'static str {
        match self {
            Counter::PdkCalls => "pdk_calls",
            Counter::RoundTrips => "round_trips",
            Counter::BytesOut => "bytes_out",
            Counter::BytesIn => "bytes_in",
            Counter::HarnessWrites => "harness_writes",
            Counter::ServerWrites => "server_writes",
            Counter::HarnessAllocs => "harness_allocs",
            Counter::ServerRssGrowth => "server_rss_growth",
            Counter::HarnessReads => "harness_reads",
            Counter::ServerReads => "server_reads",
        }
    }

    /// The unit of the figure.
    pub fn unit(self) -> &'static str {
        match self {
            Counter::BytesOut | Counter::BytesIn => "B/request",
            Counter::ServerRssGrowth => "KiB/10k requests",
            _ => "/request",
        }
    }

    /// What the figure is, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Counter::PdkCalls => "PDK callbacks per request",
            Counter::RoundTrips => "IPC round trips per request",
            Counter::BytesOut => "bytes the harness sent per request",
            Counter::BytesIn => "bytes the server sent per request",
            Counter::HarnessWrites => "write system calls of the harness per request",
            Counter::ServerWrites => "write system calls of the server per request",
            Counter::HarnessAllocs => "heap allocations of the harness per request",
            Counter::ServerRssGrowth => "server memory growth per 10k requests",
            Counter::HarnessReads => "read system calls of the harness per request",
            Counter::ServerReads => "read system calls of the server per request",
        }
    }

    /// `(relative, absolute)` tolerance, or `None` for a figure that is reported, not gated.
    pub fn tolerance(self) -> Option<(f64, f64)> {
        match self {
            Counter::PdkCalls => Some((0.0, 0.01)),
            Counter::RoundTrips => Some((0.01, 0.02)),
            Counter::BytesOut | Counter::BytesIn => Some((0.08, 4.0)),
            Counter::HarnessWrites | Counter::ServerWrites => Some((0.02, 0.05)),
            Counter::HarnessAllocs => Some((0.03, 1.0)),
            Counter::ServerRssGrowth => Some((0.0, 1024.0)),
            Counter::HarnessReads | Counter::ServerReads => None,
        }
    }

    /// Whether the figure is a system-call count (compared only between like sources).
    fn is_syscall(self) -> bool {
        matches!(
            self,
            Counter::HarnessWrites
                | Counter::ServerWrites
                | Counter::HarnessReads
                | Counter::ServerReads
        )
    }

    /// The figure in `c`, if it was counted.
    pub fn of(self, c: &CounterRecord) -> Option<f64> {
        match self {
            Counter::PdkCalls => Some(c.pdk_calls_per_request),
            Counter::RoundTrips => Some(c.round_trips_per_request),
            Counter::BytesOut => Some(c.bytes_out_per_request),
            Counter::BytesIn => Some(c.bytes_in_per_request),
            Counter::HarnessWrites => c.harness_writes_per_request,
            Counter::ServerWrites => c.server_writes_per_request,
            Counter::HarnessAllocs => c.harness_allocs_per_request,
            Counter::ServerRssGrowth => c.server_rss_growth_kib_per_10k,
            Counter::HarnessReads => c.harness_reads_per_request,
            Counter::ServerReads => c.server_reads_per_request,
        }
        .filter(|v| v.is_finite())
    }
}

/// The verdict on one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CounterVerdict {
    /// Within the tolerance.
    Same,
    /// Reported, not gated (reads).
    Reported,
    /// Lower beyond the tolerance.
    Fewer,
    /// Higher beyond the tolerance: a regression.
    More,
}

impl CounterVerdict {
    pub fn name(self) -> &'static str {
        match self {
            CounterVerdict::Same => "same",
            CounterVerdict::Reported => "not gated",
            CounterVerdict::Fewer => "fewer",
            CounterVerdict::More => "MORE",
        }
    }
}

/// One counter compared.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterComparison {
    pub counter: Counter,
    pub baseline: f64,
    pub current: f64,
    pub verdict: CounterVerdict,
}

impl CounterComparison {
    /// A sentence for a regression report: what grew, by how much.
    pub fn explain(&self) -> String {
        let delta = self.current - self.baseline;
        let rel = if self.baseline.abs() > f64::EPSILON {
            format!(" ({:+.1} %)", delta / self.baseline * 100.0)
        } else {
            String::new()
        };
        let hint = match self.counter {
            Counter::PdkCalls | Counter::RoundTrips => {
                ": the plugin makes more PDK calls per request, each one an IPC round trip"
            }
            Counter::ServerWrites => {
                ": the server writes its frames in more system calls (one write per frame is the norm)"
            }
            Counter::HarnessWrites => ": the harness writes its messages in more system calls",
            Counter::BytesOut | Counter::BytesIn => ": more bytes cross the socket per request",
            Counter::HarnessAllocs => ": the harness allocates more per request",
            Counter::ServerRssGrowth => ": the server keeps memory per request (a leak)",
            Counter::HarnessReads | Counter::ServerReads => "",
        };
        format!(
            "{} {:.2} → {:.2} {}{rel}{hint}",
            self.counter.describe(),
            self.baseline,
            self.current,
            self.counter.unit()
        )
    }
}

/// The comparison of two points' counters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CountersOutcome {
    pub compared: Vec<CounterComparison>,
    /// Counters left out and why (not counted on a side, different counting methods).
    pub skipped: Vec<String>,
}

impl CountersOutcome {
    /// Whether any gated counter grew beyond its tolerance.
    pub fn regressed(&self) -> bool {
        self.compared
            .iter()
            .any(|c| c.verdict == CounterVerdict::More)
    }

    /// The counters that grew beyond their tolerance.
    pub fn regressions(&self) -> impl Iterator<Item = &CounterComparison> {
        self.compared
            .iter()
            .filter(|c| c.verdict == CounterVerdict::More)
    }
}

/// Compares the counters of a baseline point with a current one.
pub fn compare(baseline: &CounterRecord, current: &CounterRecord) -> CountersOutcome {
    let mut out = CountersOutcome::default();
    let same_source = baseline.syscalls_source == current.syscalls_source;
    for counter in Counter::ALL {
        if counter.is_syscall() && !same_source {
            out.skipped.push(format!(
                "{}: counted differently ({} vs {})",
                counter.name(),
                baseline.syscalls_source,
                current.syscalls_source
            ));
            continue;
        }
        let (Some(b), Some(c)) = (counter.of(baseline), counter.of(current)) else {
            if counter.of(baseline).is_some() != counter.of(current).is_some() {
                out.skipped.push(format!(
                    "{}: counted in the {} run only",
                    counter.name(),
                    if counter.of(baseline).is_some() {
                        "baseline"
                    } else {
                        "current"
                    }
                ));
            }
            continue;
        };
        let verdict = match counter.tolerance() {
            None => CounterVerdict::Reported,
            Some((rel, abs)) => {
                let slack = b.abs() * rel + abs;
                if c > b + slack {
                    CounterVerdict::More
                } else if c < b - slack {
                    CounterVerdict::Fewer
                } else {
                    CounterVerdict::Same
                }
            }
        };
        out.compared.push(CounterComparison {
            counter,
            baseline: b,
            current: c,
            verdict,
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(calls: f64, server_writes: f64) -> CounterRecord {
        CounterRecord {
            requests: 5000,
            pdk_calls_per_request: calls,
            round_trips_per_request: calls + 1.0,
            bytes_out_per_request: 40.0 * (calls + 1.0),
            bytes_in_per_request: 70.0 * (calls + 1.0),
            syscalls_source: "tracepoints".into(),
            harness_reads_per_request: Some(calls + 1.05),
            harness_writes_per_request: Some(calls + 1.0),
            harness_allocs_per_request: Some(20.0 * (calls + 1.0)),
            server_reads_per_request: Some(calls + 1.0),
            server_writes_per_request: Some(server_writes),
            server_bytes_read_per_request: Some(0.0),
            server_bytes_written_per_request: Some(0.0),
            server_rss_growth_kib_per_10k: Some(0.0),
        }
    }

    fn verdict(o: &CountersOutcome, c: Counter) -> CounterVerdict {
        o.compared
            .iter()
            .find(|x| x.counter == c)
            .map(|x| x.verdict)
            .expect("compared")
    }

    #[test]
    fn equal_counts_pass_and_noise_within_tolerance_passes() {
        let b = record(10.0, 11.0);
        let mut c = record(10.0, 11.0);
        assert!(!compare(&b, &c).regressed());
        c.bytes_in_per_request *= 1.02; // ids one byte wider
        c.round_trips_per_request += 0.01; // a request at the window's edge
        c.harness_allocs_per_request = Some(220.0 * 1.02);
        c.server_reads_per_request = Some(22.0); // reads are reported, not gated
        let o = compare(&b, &c);
        assert!(!o.regressed(), "{o:#?}");
        assert_eq!(verdict(&o, Counter::ServerReads), CounterVerdict::Reported);
    }

    #[test]
    fn split_writes_and_an_extra_callback_are_regressions() {
        let b = record(10.0, 11.0);
        let o = compare(&b, &record(10.0, 22.0));
        assert!(o.regressed());
        assert_eq!(verdict(&o, Counter::ServerWrites), CounterVerdict::More);
        let e = o.regressions().next().expect("one").explain();
        assert!(e.contains("11.00 → 22.00") && e.contains("+100.0 %"), "{e}");
        let o = compare(&b, &record(11.0, 12.0));
        let grew: Vec<Counter> = o.regressions().map(|c| c.counter).collect();
        assert!(
            grew.contains(&Counter::PdkCalls) && grew.contains(&Counter::RoundTrips),
            "{grew:?}"
        );
    }

    #[test]
    fn fewer_is_reported_not_failed_and_a_leak_fails() {
        let b = record(10.0, 22.0);
        let o = compare(&b, &record(10.0, 11.0));
        assert!(!o.regressed());
        assert_eq!(verdict(&o, Counter::ServerWrites), CounterVerdict::Fewer);
        let mut leaky = record(10.0, 22.0);
        leaky.server_rss_growth_kib_per_10k = Some(2048.0);
        assert!(compare(&b, &leaky).regressed());
    }

    #[test]
    fn syscalls_of_different_sources_are_not_compared() {
        let b = record(10.0, 11.0);
        let mut c = record(10.0, 0.0);
        c.syscalls_source = "proc-io".into();
        let o = compare(&b, &c);
        assert!(!o.regressed());
        assert!(
            o.skipped.iter().any(|s| s.contains("server_writes")),
            "{o:?}"
        );
        let mut c = record(10.0, 11.0);
        c.harness_allocs_per_request = None;
        let o = compare(&b, &c);
        assert!(o
            .skipped
            .iter()
            .any(|s| s.contains("harness_allocs: counted in the baseline run only")));
    }
}
