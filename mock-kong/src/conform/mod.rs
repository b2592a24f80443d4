//! `mock-kong conform`: a conformance suite for Kong external plugin servers.
//!
//! Point it at any plugin server (the reference server, a peer from `peers.toml`, a `kong.conf`
//! entry or explicit commands) and it runs a catalogue of named checks, each verifying one rule
//! of `docs/protocol.md` that Kong relies on. Modelled on h2spec (ids, requirement /
//! expected / actual, fresh connection and timeout per check, JUnit), Autobahn (octet-wise
//! chopping, garbage, a verdict per case) and the protobuf conformance suite (failure lists that
//! cannot go stale, `--fix-expectations`).
//!
//! * [`catalogue`]: every check: id `<group>/<name>`, [`Level`], [`Tier`], the protocols it
//!   applies to, the plugin it needs, the spec section, the requirement, what is expected, and
//!   the reference-server faults that prove it can fail ([`Check::proven_by`]).
//! * [`runner`]: runs a selection of checks, each against a fresh server process (and always
//!   fresh connections), each with its own time limit.
//! * [`wire`]: the raw client the checks use.
//! * [`report`]: human, JSON, JUnit and markdown output; expected-failure files; the matrix.
//!
//! # Levels and tiers
//!
//! Graded by what a Kong user pays (each check's [`Check::protects`] says it): `must`: Kong's
//! own traffic fails, hangs, crashes or runs with the wrong values (or the gateway fails to
//! start); a `must` failure makes the run exit 1. `should`: robustness beyond Kong's traffic, or
//! a cost Kong absorbs; fails the run only with `--strict`. `info`: Kong does not depend on
//! the rule; reported only. Legal but unusual choices of a server are info-level notes on the
//! results, never failures. The fast tier runs in well under a minute per server; the slow
//! tier holds instances idle past Kong's 60 s keepalive and fits memory slopes over 20 000
//! events per kind.
//!
//! # Blocked checks
//!
//! A check builds on others ([`Check::after`]; every server check on `dump/shape`). When one of
//! them failed, the check is not run and is reported as `blocked` by the first failure up the
//! chain, so a server whose every event hangs shows one failure that says why and the rest as
//! blocked, not a cascade of failures with causes of their own.
//!
//! # The JSON report (schema `mock-kong/conform/1`)
//!
//! ```text
//! {
//!   "schema": "mock-kong/conform/1",
//!   "server": "peer python",            // the target's label
//!   "protocol": "MsgPack:1",            // null when the dump could not be read
//!   "plugin": "hello",                  // the plugin driven by checks that take any plugin
//!   "tier": "fast" | "slow" | "all",
//!   "expectations": "conformance/expected/python.txt" | null,
//!   "interrupted": false,              // true: SIGINT/SIGTERM stopped the run; the checks
//!                                      // listed are those finished before it
//!   "checks": [ {
//!     "id": "event/concurrent", "group": "event",
//!     "level": "must" | "should" | "info", "tier": "fast" | "slow",
//!     "status": "pass" | "fail" | "skip" | "xfail" | "blocked",
//!     "spec": "§4.1", "requirement": "...", "expected": "...",
//!     "protects": "...",                // what breaks in Kong when the rule is broken
//!     "detail": "...",                  // pass: a note; fail/xfail: what happened; skip: why;
//!                                       // blocked: which failure blocked it
//!     "blocked_by": null | "lifecycle/first-event",
//!     "notes": ["..."],                 // info: legal but unusual choices met (never failures)
//!     "duration_ms": 12
//!   } ],
//!   "summary": {
//!     "passed": 30, "failed": 1, "skipped": 4, "xfailed": 2, "blocked": 0, "total": 37,
//!     "must_failed": 1, "should_failed": 0, "notes": 0, "duration_ms": 9120,
//!     "unexpected_failures": ["..."],   // failed but not listed in the expectations file
//!     "unexpected_passes": ["..."],     // listed, but passed (or was skipped)
//!     "ok": false                       // what the exit code says
//!   }
//! }
//! ```

pub mod catalogue;
mod checks;
pub(crate) mod kong_pdk;
pub mod report;
pub mod runner;
pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

pub use catalogue::{catalogue, Applies, Check, Needs, Plug};
pub use report::{CheckResult, Expectations, Report};
pub use runner::{run, RunOptions, Server};

/// How much Kong depends on a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Kong misbehaves otherwise.
    Must,
    /// Robustness and hygiene.
    Should,
    /// Reported only.
    Info,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Must => "must",
            Level::Should => "should",
            Level::Info => "info",
        }
    }
}

/// How long a check takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Seconds at most; the whole fast tier stays under a minute per server.
    Fast,
    /// Idles past 60 s or runs thousands of events.
    Slow,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Fast => "fast",
            Tier::Slow => "slow",
        }
    }
}

/// Which tiers to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierSel {
    Fast,
    Slow,
    All,
}

impl TierSel {
    pub fn includes(self, t: Tier) -> bool {
        matches!(
            (self, t),
            (TierSel::All, _) | (TierSel::Fast, Tier::Fast) | (TierSel::Slow, Tier::Slow)
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TierSel::Fast => "fast",
            TierSel::Slow => "slow",
            TierSel::All => "all",
        }
    }
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
    /// Failed, and listed in the expected-failures file.
    Xfail,
    /// Not run: a check it builds on ([`Check::after`]) failed first.
    Blocked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Xfail => "xfail",
            Status::Blocked => "blocked",
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The rule holds; the text is a note (may be empty).
    Pass(String),
    /// The rule is broken; the text says what happened instead of [`Check::expected`].
    Fail(String),
    /// The check does not apply; the text says why.
    Skip(String),
}

/// A check's future.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// Polls all futures concurrently on the current task and returns their outputs in order (the
/// checks run on a current-thread runtime and hold non-`Send` state, so no task is spawned).
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    // Every slot is filled once poll_fn is ready.
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn join_all_runs_concurrently_and_keeps_order() {
        let started = tokio::time::Instant::now();
        let futs: Vec<_> = (0..50u64)
            .map(|i| async move {
                tokio::time::sleep(std::time::Duration::from_millis(100 - i)).await;
                i
            })
            .collect();
        let out = join_all(futs).await;
        assert_eq!(out, (0..50).collect::<Vec<_>>());
        // On the paused clock: concurrently, the longest sleep; one after the other, ~5 s.
        assert_eq!(started.elapsed(), std::time::Duration::from_millis(100));
    }

    #[test]
    fn tier_selection() {
        assert!(TierSel::All.includes(Tier::Slow));
        assert!(TierSel::Fast.includes(Tier::Fast));
        assert!(!TierSel::Fast.includes(Tier::Slow));
        assert!(!TierSel::Slow.includes(Tier::Fast));
    }
}
