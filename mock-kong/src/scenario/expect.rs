//! Checking expectations against what happened, with readable expected-vs-actual diffs.

use regex::Regex;
use serde_json::Value as J;

use super::model::{CallExpect, Expect, LogExpect};
use super::runner::{CallLine, Observed};
use crate::lua::loose_eq;
use crate::pdk::{Headers, LogLine};
use crate::Value;

/// One failed expectation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Mismatch {
    /// What was checked, e.g. `response header x-hello`.
    pub what: String,
    pub expected: String,
    pub actual: String,
}

impl Mismatch {
    fn new(
        what: impl Into<String>,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Self {
        Mismatch {
            what: what.into(),
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    /// ```text
    ///   response header x-hello
    ///     expected: "Kong! example.org"
    ///     actual:   "Kong! example.com"
    /// ```
    pub fn render(&self) -> String {
        format!(
            "  {}\n    expected: {}\n    actual:   {}\n",
            self.what,
            self.expected.replace('\n', "\n              "),
            self.actual.replace('\n', "\n              ")
        )
    }
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

fn regex(pattern: &str, what: &str, out: &mut Vec<Mismatch>) -> Option<Regex> {
    match Regex::new(pattern) {
        Ok(r) => Some(r),
        Err(e) => {
            out.push(Mismatch::new(
                format!("{what}: invalid regex"),
                "a valid regular expression",
                format!("{pattern:?}: {e}"),
            ));
            None
        }
    }
}

/// A header expectation: a string, a list, `false` (absent), `true` (present), `{regex}`.
fn check_header(what: &str, name: &str, want: &J, headers: &Headers, out: &mut Vec<Mismatch>) {
    let actual = headers.get_all(name);
    let shown = match actual.as_slice() {
        [] => "(absent)".to_owned(),
        [one] => q(one),
        many => format!("{many:?}"),
    };
    let label = format!("{what} {name}");
    match want {
        J::Bool(false) => {
            if !actual.is_empty() {
                out.push(Mismatch::new(label, "(absent)", shown));
            }
        }
        J::Bool(true) => {
            if actual.is_empty() {
                out.push(Mismatch::new(label, "(present)", shown));
            }
        }
        J::Array(list) => {
            let want: Vec<String> = list.iter().map(json_text).collect();
            if actual != want {
                out.push(Mismatch::new(label, format!("{want:?}"), shown));
            }
        }
        J::Object(o) if o.contains_key("regex") => {
            let pattern = o.get("regex").map(json_text).unwrap_or_default();
            if let Some(re) = regex(&pattern, &label, out) {
                if !actual.first().is_some_and(|v| re.is_match(v)) {
                    out.push(Mismatch::new(label, format!("matching /{pattern}/"), shown));
                }
            }
        }
        other => {
            let want = json_text(other);
            if actual.first() != Some(&want.as_str()) {
                out.push(Mismatch::new(label, q(&want), shown));
            }
        }
    }
}

fn json_text(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn log_matches(want: &LogExpect, line: &LogLine, re: Option<&Regex>) -> bool {
    want.level.as_deref().map_or(true, |l| l == line.level)
        && want.phase.as_deref().map_or(true, |p| p == line.phase)
        && want.text.as_deref().map_or(true, |t| t == line.text)
        && re.map_or(true, |r| r.is_match(&line.text))
}

fn describe_log(l: &LogExpect) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &l.phase {
        parts.push(format!("phase {p}"));
    }
    if let Some(v) = &l.level {
        parts.push(format!("[{v}]"));
    }
    if let Some(t) = &l.text {
        parts.push(q(t));
    }
    if let Some(r) = &l.regex {
        parts.push(format!("/{r}/"));
    }
    parts.join(" ")
}

fn call_matches(want: &CallExpect, got: &CallLine) -> bool {
    match want {
        CallExpect::Method(m) => *m == got.method,
        CallExpect::Full(d) => {
            d.method == got.method
                && d.phase.as_deref().map_or(true, |p| p == got.phase)
                && d.args.as_ref().map_or(true, |args| {
                    args.iter().enumerate().all(|(i, a)| {
                        got.args
                            .get(i)
                            .is_some_and(|g| loose_eq(&Value::from_json(a), g))
                    })
                })
                && (!d.returns_nil || got.answer.as_ref().map_or(true, Value::is_nil))
                && d.returns.as_ref().map_or(true, |r| {
                    got.answer
                        .as_ref()
                        .is_some_and(|g| loose_eq(&Value::from_json(r), g))
                })
        }
    }
}

fn describe_call(c: &CallExpect) -> String {
    match c {
        CallExpect::Method(m) => m.clone(),
        CallExpect::Full(d) => {
            let mut s = String::new();
            if let Some(p) = &d.phase {
                s.push_str(&format!("{p}: "));
            }
            s.push_str(&d.method);
            if let Some(a) = &d.args {
                let a: Vec<String> = a.iter().map(|x| x.to_string()).collect();
                s.push_str(&format!("({}…)", a.join(", ")));
            }
            if let Some(r) = &d.returns {
                s.push_str(&format!(" -> {r}"));
            }
            if d.returns_nil {
                s.push_str(" -> nil");
            }
            s
        }
    }
}

fn render_calls(calls: &[CallLine]) -> String {
    if calls.is_empty() {
        return "(no calls)".into();
    }
    calls
        .iter()
        .map(|c| format!("{}: {}", c.phase, c.method))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every mismatch between `e` and `o`.
pub fn check(e: &Expect, o: &Observed) -> Vec<Mismatch> {
    let mut out = Vec::new();
    // Unexpected failures fail the scenario unless expected.
    match &e.raised {
        None => {
            for (phase, method, error) in &o.raised {
                out.push(Mismatch::new(
                    format!("{phase}: {method}"),
                    "no PDK error",
                    format!("raised: {error}"),
                ));
            }
        }
        Some(pattern) => {
            if let Some(re) = regex(pattern, "raised", &mut out) {
                if !o.raised.iter().any(|(_, _, err)| re.is_match(err)) {
                    let actual: Vec<String> = o.raised.iter().map(|r| r.2.clone()).collect();
                    out.push(Mismatch::new(
                        "a PDK call raised",
                        format!("an error matching /{pattern}/"),
                        if actual.is_empty() {
                            "nothing raised".into()
                        } else {
                            actual.join("; ")
                        },
                    ));
                }
            }
        }
    }
    match &e.errors {
        None => {
            for (phase, err) in &o.errors {
                out.push(Mismatch::new(
                    format!("{phase}: the event"),
                    "to complete",
                    format!("failed: {err}"),
                ));
            }
        }
        Some(pattern) => {
            if let Some(re) = regex(pattern, "errors", &mut out) {
                if !o.errors.iter().any(|(_, err)| re.is_match(err)) {
                    out.push(Mismatch::new(
                        "a host-side failure",
                        format!("an error matching /{pattern}/"),
                        "none".to_string(),
                    ));
                }
            }
        }
    }
    if let Some(x) = e.exit {
        if x != o.exited {
            out.push(Mismatch::new(
                "exit",
                if x { "the request exits" } else { "no exit" },
                if o.exited {
                    format!("exited with {}", o.status)
                } else {
                    "no exit".into()
                },
            ));
        }
    }
    if let Some(s) = e.status {
        if s != o.status {
            out.push(Mismatch::new(
                "response status",
                s.to_string(),
                o.status.to_string(),
            ));
        }
    }
    for (name, want) in &e.headers {
        check_header("response header", name, want, &o.headers, &mut out);
    }
    let body = String::from_utf8_lossy(&o.body).into_owned();
    if let Some(b) = &e.body {
        if *b != body {
            out.push(Mismatch::new("response body", q(b), q(&body)));
        }
    }
    if let Some(p) = &e.body_regex {
        if let Some(re) = regex(p, "response body", &mut out) {
            if !re.is_match(&body) {
                out.push(Mismatch::new(
                    "response body",
                    format!("matching /{p}/"),
                    q(&body),
                ));
            }
        }
    }
    if let Some(j) = &e.body_json {
        match serde_json::from_str::<J>(&body) {
            Ok(got) if got == *j => {}
            Ok(got) => out.push(Mismatch::new(
                "response body (JSON)",
                j.to_string(),
                got.to_string(),
            )),
            Err(_) => out.push(Mismatch::new(
                "response body (JSON)",
                j.to_string(),
                q(&body),
            )),
        }
    }
    if let Some(u) = &e.upstream {
        match &o.upstream {
            None => out.push(Mismatch::new(
                "upstream request",
                "a request to the upstream",
                "none (the request ended before proxying)",
            )),
            Some(up) => {
                let fields = [
                    ("method", &u.method, up.method.clone()),
                    ("path", &u.path, up.path.clone()),
                    ("query", &u.query, up.raw_query.clone()),
                    (
                        "body",
                        &u.body,
                        up.body
                            .as_ref()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_else(|| String::from_utf8_lossy(&[]).into_owned()),
                    ),
                    (
                        "upstream",
                        &u.upstream,
                        up.upstream.clone().unwrap_or_default(),
                    ),
                    (
                        "target",
                        &u.target,
                        up.target
                            .as_ref()
                            .map(|(h, p)| format!("{h}:{p}"))
                            .unwrap_or_default(),
                    ),
                ];
                for (field, want, got) in fields {
                    if let Some(w) = want {
                        if *w != got {
                            out.push(Mismatch::new(format!("upstream {field}"), q(w), q(&got)));
                        }
                    }
                }
                for (name, want) in &u.headers {
                    check_header("upstream header", name, want, &up.headers, &mut out);
                }
            }
        }
    }
    for (k, want) in &e.shared {
        let got = o.shared.get(k);
        let absent_wanted = want
            .as_object()
            .is_some_and(|m| m.get("absent") == Some(&J::Bool(true)));
        let ok = if absent_wanted {
            got.is_none()
        } else {
            got.is_some_and(|g| loose_eq(&Value::from_json(g), &Value::from_json(want)))
        };
        if !ok {
            out.push(Mismatch::new(
                format!("kong.ctx.shared.{k}"),
                if absent_wanted {
                    "(absent)".into()
                } else {
                    want.to_string()
                },
                got.map(J::to_string).unwrap_or_else(|| "(absent)".into()),
            ));
        }
    }
    // Log lines: an ordered subsequence.
    let mut from = 0;
    for want in &e.log {
        let re = match &want.regex {
            Some(p) => match regex(p, "log line", &mut out) {
                Some(r) => Some(r),
                None => continue,
            },
            None => None,
        };
        match o.log[from..]
            .iter()
            .position(|l| log_matches(want, l, re.as_ref()))
        {
            Some(i) => from += i + 1,
            None => {
                let lines: Vec<String> = o
                    .log
                    .iter()
                    .map(|l| format!("{} [{}] {}", l.phase, l.level, l.text))
                    .collect();
                out.push(Mismatch::new(
                    "log line",
                    describe_log(want),
                    if lines.is_empty() {
                        "(no log lines)".into()
                    } else {
                        lines.join("\n")
                    },
                ));
            }
        }
    }
    if let Some(seq) = &e.calls {
        let ok =
            seq.len() == o.calls.len() && seq.iter().zip(&o.calls).all(|(w, g)| call_matches(w, g));
        if !ok {
            let want: Vec<String> = seq.iter().map(describe_call).collect();
            out.push(Mismatch::new(
                "PDK calls (exact sequence)",
                want.join("\n"),
                render_calls(&o.calls),
            ));
        }
    }
    if let Some(seq) = &e.calls_include {
        let mut from = 0;
        for w in seq {
            match o.calls[from..].iter().position(|g| call_matches(w, g)) {
                Some(i) => from += i + 1,
                None => {
                    out.push(Mismatch::new(
                        "PDK calls (in this order, others allowed between)",
                        describe_call(w),
                        render_calls(&o.calls),
                    ));
                    break;
                }
            }
        }
    }
    if let Some(max) = e.max_calls {
        if o.calls.len() > max {
            out.push(Mismatch::new(
                "number of PDK calls",
                format!("at most {max}"),
                o.calls.len().to_string(),
            ));
        }
    }
    if let Some(sk) = &e.skipped {
        if *sk != o.skipped {
            out.push(Mismatch::new(
                "skipped phases",
                format!("{sk:?}"),
                format!("{:?}", o.skipped),
            ));
        }
    }
    out
}
