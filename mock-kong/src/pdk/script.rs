//! Scripted PDK answers ([`Override`]): "this method (with these leading arguments, in this
//! phase) answers X", for scenarios that need a consumer lookup to fail or a call to be slow.

use std::time::Duration;

use super::args::arg;
use crate::lua::loose_eq;
use crate::Value;

/// What a scripted override answers.
#[derive(Debug, Clone, PartialEq)]
pub enum OverrideAnswer {
    /// The first return value.
    Return(Value),
    /// `nil, err` (see [`super::PdkOutcome::SoftError`]).
    SoftError(String),
    /// A Lua error.
    Raise(String),
    /// The emulated PDK answers as usual (with `delay`, only the timing changes).
    Emulate,
}

/// A scripted PDK answer: "this method (with these leading arguments, in this phase) answers X".
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub method: String,
    /// Leading positional arguments that must match (strings compare by bytes, numbers by value).
    pub args: Option<Vec<Value>>,
    pub phase: Option<String>,
    pub answer: OverrideAnswer,
    pub delay: Option<Duration>,
    /// How many calls it answers (`None`: all).
    pub times: Option<u32>,
    pub used: u32,
}

impl Override {
    pub(crate) fn matches(&self, phase: &str, method: &str, args: &[Value]) -> bool {
        if self.method != method {
            return false;
        }
        if self.phase.as_deref().is_some_and(|p| p != phase) {
            return false;
        }
        if self.times.is_some_and(|t| self.used >= t) {
            return false;
        }
        match &self.args {
            None => true,
            Some(want) => want
                .iter()
                .enumerate()
                .all(|(i, w)| loose_eq(w, arg(args, i))),
        }
    }
}
