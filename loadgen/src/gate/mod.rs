//! The regression gates (docs/ci-gates.md).
//!
//! * [`compare`]: two `results.json` files point by point (time figures, noise-aware).
//! * [`paired`]: the paired A/B verdict of `loadgen ab` (one run, interleaved trials).
//! * [`counters`]: machine-independent counts per request, gated with small tolerances.
//! * [`report`]: markdown, JUnit, Bencher Metric Format and GitHub annotations.
//! * [`baseline`]: named baselines (`loadgen baseline save|merge`).
//! * [`cli`]: `loadgen gate`, `loadgen baseline` and `sweep --baseline`.

pub mod baseline;
pub mod cli;
pub mod compare;
pub mod counters;
pub mod paired;
pub mod report;

pub use compare::*;
