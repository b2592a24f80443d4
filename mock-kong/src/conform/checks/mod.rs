//! The check functions, one file per group. The table that names them, with levels, spec
//! sections and the faults that prove them, is [`super::catalogue`].

pub mod dump;
pub mod event;
pub mod lifecycle;
pub mod pdk;
pub mod process;
pub mod resources;
pub mod transport;

use super::Outcome;

/// A check body's result: `Err` is a failure with what happened.
pub type Res = Result<Outcome, String>;

/// `Err(actual)` becomes [`Outcome::Fail`].
pub fn verdict(r: Res) -> Outcome {
    r.unwrap_or_else(Outcome::Fail)
}
