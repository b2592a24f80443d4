//! `tour`: a scripted reference plugin for the per-module PDK scenarios.
//!
//! Its config says which PDK calls to make in each phase, with their arguments:
//!
//! ```toml
//! [config.calls]
//! access = [["kong.request.get_query_arg", "a"], ["kong.service.request.set_path", "/v2"]]
//! log = [["kong.log.serialize"]]
//! ```
//!
//! Each call is `[method, args...]`; answers are ignored (the scenario checks them in the PDK
//! transcript). `kong.response.exit` and `kong.response.error` end the event (terminal, spec
//! §4.4). It declares `rewrite`, `access`, `response` and `log`.

use std::sync::Arc;

use serde_json::{json, Value as Json};

use super::plugins::{Action, Args, Event, Instance, Method, Plugin};
use crate::Value;

/// The `tour` plugin.
pub struct Tour;

type Script = Arc<[(Method, Args)]>;

struct TourInstance {
    /// `(phase, calls)`.
    phases: Vec<(String, Script)>,
}

struct TourEvent {
    calls: Script,
    next: usize,
}

const PHASES: [&str; 4] = ["rewrite", "access", "response", "log"];

fn parse_calls(config: &Json) -> Result<Vec<(String, Script)>, String> {
    let calls = match config.get("calls") {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Object(m)) => m,
        Some(other) => {
            return Err(format!(
            "tour: config.calls must be an object {{phase: [[method, args...], ...]}}, got {other}"
        ))
        }
    };
    let mut out = Vec::new();
    for (phase, list) in calls {
        if !PHASES.contains(&phase.as_str()) {
            return Err(format!(
                "tour: config.calls.{phase}: unknown phase, expected one of {}",
                PHASES.join(", ")
            ));
        }
        let Json::Array(list) = list else {
            return Err(format!(
                "tour: config.calls.{phase} must be an array of calls"
            ));
        };
        let mut script = Vec::new();
        for (i, call) in list.iter().enumerate() {
            let parts = call.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                format!("tour: config.calls.{phase}[{i}] must be [method, args...], got {call}")
            })?;
            let method = parts[0].as_str().ok_or_else(|| {
                format!("tour: config.calls.{phase}[{i}][0] must be a method name")
            })?;
            let args = parts[1..].iter().map(Value::from_json).collect();
            script.push((Method::Shared(method.into()), Args::Owned(args)));
        }
        out.push((phase.clone(), script.into()));
    }
    Ok(out)
}

impl Plugin for Tour {
    fn name(&self) -> &'static str {
        "tour"
    }
    fn phases(&self) -> &'static [&'static str] {
        &PHASES
    }
    fn config_fields(&self) -> Json {
        // Per phase, a list of calls `[method, args...]`; the arguments are any JSON (strings,
        // numbers, tables), which Kong's schema types express only as `json`.
        json!([{"calls": {"type": "map", "keys": {"type": "string"}, "values": {"type": "array", "elements": {"type": "json", "json_schema": {"inline": {"type": "array"}}}}}}])
    }
    fn start(&self, config: &Json) -> Result<Box<dyn Instance>, String> {
        Ok(Box::new(TourInstance {
            phases: parse_calls(config)?,
        }))
    }
}

impl Instance for TourInstance {
    fn event(&self, phase: &str) -> Option<Box<dyn Event>> {
        if !PHASES.contains(&phase) {
            return None;
        }
        let calls = self
            .phases
            .iter()
            .find(|(p, _)| p == phase)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| Arc::from(Vec::new()));
        Some(Box::new(TourEvent { calls, next: 0 }))
    }
}

impl Event for TourEvent {
    fn step(&mut self, _reply: Option<Value>) -> Action {
        let Some((method, args)) = self.calls.get(self.next).cloned() else {
            return Action::Done;
        };
        self.next += 1;
        if matches!(
            method.as_str(),
            "kong.response.exit" | "kong.response.error"
        ) {
            Action::Exit { method, args }
        } else {
            Action::Call { method, args }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_the_configured_calls_per_phase() {
        let inst = Tour
            .start(&json!({"calls": {"access": [["kong.request.get_header", "host"], ["kong.response.exit", 403]]}}))
            .unwrap();
        let mut ev = inst.event("access").unwrap();
        match ev.step(None) {
            Action::Call { method, args } => {
                assert_eq!(method.as_str(), "kong.request.get_header");
                assert_eq!(&*args, &[Value::str("host")]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(ev.step(Some(Value::Nil)), Action::Exit { .. }));
        assert!(matches!(
            inst.event("log").unwrap().step(None),
            Action::Done
        ));
        assert!(inst.event("preread").is_none());
        let e = Tour
            .start(&json!({"calls": {"body_filter": []}}))
            .err()
            .unwrap();
        assert!(e.contains("unknown phase"), "{e}");
    }
}
