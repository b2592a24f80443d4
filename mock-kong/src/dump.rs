//! The query command and its JSON dump (docs/protocol.md §2).
//!
//! Kong 3.9 runs `query_cmd` with `io.popen`, reads **all of stdout**, ignores the exit status and
//! does `cjson.decode` on the whole text, then `protocol = dump.Protocol or "MsgPack:1"` and
//! `info = (dump.Plugins or dump)[1]` (`kong/runloop/plugin_servers/process.lua`). The entry's
//! `Priority` and `Version` are checked when the plugin is loaded (`kong/db/dao/plugins.lua`,
//! `valid_priority` / `valid_version`) and the `Schema` must pass Kong's `MetaSubSchema`
//! (`kong/db/schema/metaschema.lua`).
//!
//! [`parse`] applies those rules and reports, with the exact JSON path, everything that would make
//! Kong refuse to start or fail later; things Kong accepts but a plugin author should know about
//! become [`Dump::warnings`]. The building blocks ([`decode_json`], [`from_json`],
//! [`check_plugin`], [`check_priority`], [`clean_version`], [`check_schema`]) are public so a
//! conformance suite can reuse them.
//!
//! Deliberate differences from Kong, all on the strict side: cjson also accepts `NaN`, `Infinity`
//! and hexadecimal numbers and does not insist on valid UTF-8, serde_json does not (no real PDK
//! prints those); a `Priority` beyond the `i64` range is rejected (Kong would accept `1e300`); and
//! entries after the first are validated too, but only produce warnings since Kong 3.9 ignores them.
//!
//! [`query`] runs the command like `io.popen` does (`/bin/sh -c`, inherited environment and working
//! directory) but with stdin closed and a time limit, and keeps stderr for diagnostics.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

use crate::Protocol;

/// The phase names the PDKs emit (go-pdk `methodNames`, the JS and Python servers; docs/protocol.md §6).
pub const KNOWN_PHASES: [&str; 6] = [
    "certificate",
    "rewrite",
    "access",
    "response",
    "preread",
    "log",
];

/// Phases Kong would call from a context where cosockets are disabled (docs/protocol.md §6).
pub const NON_YIELDING_PHASES: [&str; 2] = ["header_filter", "body_filter"];

/// Kong's `Schema.valid_types` (`kong/db/schema/init.lua`).
pub const FIELD_TYPES: [&str; 11] = [
    "string", "number", "integer", "boolean", "array", "set", "map", "record", "foreign", "json",
    "function",
];

/// The keys Kong reads from a plugin entry, case-sensitive (docs/protocol.md §2, §10.15).
pub const PLUGIN_KEYS: [&str; 5] = ["Name", "Priority", "Version", "Schema", "Phases"];

/// How much of a bad stdout is quoted in [`DumpError::NotJson`].
const HEAD_CHARS: usize = 300;
/// Stdout beyond this size is not a plugin dump; the command is killed.
const MAX_STDOUT: usize = 16 * 1024 * 1024;
/// Stderr kept for diagnostics; the rest is read and dropped.
const MAX_STDERR: usize = 1024 * 1024;
/// How long to wait for stderr to close once stdout is closed and the command has exited
/// (a background child may keep stderr open; Kong never reads stderr at all).
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// One plugin as a dump describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub priority: i64,
    /// The version as Kong stores it: the cleaned `x.y.z` form of the dump's `Version` (see
    /// [`clean_version`]); identical to the dump's string for `"0.1"` or `"0.1.0"`.
    pub version: String,
    pub phases: Vec<String>,
    pub schema: serde_json::Value,
}

/// The dump's top-level shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpShape {
    /// `[ {...}, ... ]` (Python, JS).
    Array,
    /// `{"Protocol": ..., "Plugins": [...]}` (Go).
    Object,
}

/// A validated dump.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Dump {
    pub shape: DumpShape,
    /// The protocol Kong selects (`MsgPack:1` when the dump names none).
    pub protocol: Protocol,
    /// Whether the dump named its protocol.
    pub protocol_explicit: bool,
    /// Every valid plugin listed, in order; Kong 3.9 uses only the first (see [`Dump::plugin`]).
    /// Invalid entries after the first are left out and reported in `warnings`.
    pub plugins: Vec<PluginInfo>,
    /// Things Kong would accept but a user should know (extra plugins ignored, unknown phases...).
    pub warnings: Vec<String>,
}

impl Dump {
    /// The plugin Kong 3.9 registers: the first entry.
    ///
    /// A `Dump` returned by [`parse`] / [`from_json`] always has at least one plugin.
    pub fn plugin(&self) -> &PluginInfo {
        &self.plugins[0]
    }
}

/// Why a dump was rejected. Messages say what Kong expected and what came instead.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("query command `{cmd}` could not be run: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("query command `{cmd}` did not finish within {timeout:?} and was killed (Kong waits until stdout is closed and the command has exited; a query command must print the dump and exit, not start the server)")]
    Timeout { cmd: String, timeout: Duration },
    #[error("failed decoding plugin info: stdout is not one JSON document ({reason}); stdout began with: {head:?}. Make the query command print only the JSON dump on stdout (logs belong on stderr)")]
    NotJson { reason: String, head: String },
    #[error("not a plugin info table: {0}")]
    Shape(String),
    #[error("invalid plugin info: {0}")]
    Invalid(String),
    /// The query command failed (a non-zero exit status or a signal) and printed no usable
    /// dump: its status and stderr say why, more than the dump's error does.
    #[error("query command `{cmd}` {status} and printed no usable dump ({cause}); {stderr}")]
    CommandFailed {
        cmd: String,
        /// `exited with status 1`, `was killed by a signal`.
        status: String,
        /// `its stderr ended with:\n...` or `it printed nothing on stderr`.
        stderr: String,
        cause: Box<DumpError>,
    },
}

/// How many of the last stderr lines of a failed query command an error quotes.
const STDERR_TAIL_LINES: usize = 20;

/// A failed query command's stderr, for [`DumpError::CommandFailed`]: its last lines.
fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "it printed nothing on stderr".into();
    }
    let skip = lines.len().saturating_sub(STDERR_TAIL_LINES);
    format!("its stderr ended with:\n{}", lines[skip..].join("\n"))
}

/// Errors and warnings found while checking part of a dump. Each message starts with the JSON
/// path it is about (`Plugins[0].Priority: ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Issues {
    /// Things that make Kong refuse the plugin (or crash).
    pub errors: Vec<String>,
    /// Things Kong accepts but that are probably mistakes.
    pub warnings: Vec<String>,
}

impl Issues {
    fn error(&mut self, at: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{at}: {msg}"));
    }

    fn warn(&mut self, at: &str, msg: impl std::fmt::Display) {
        self.warnings.push(format!("{at}: {msg}"));
    }

    /// No errors.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Parses and validates a dump (all of stdout).
pub fn parse(stdout: &[u8]) -> Result<Dump, DumpError> {
    from_json(&decode_json(stdout)?)
}

/// Decodes stdout as exactly one JSON document, surrounded by nothing but whitespace (as
/// `cjson.decode` of the whole output requires).
pub fn decode_json(stdout: &[u8]) -> Result<Value, DumpError> {
    let not_json = |reason: String| DumpError::NotJson {
        reason,
        head: head(stdout),
    };
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Err(not_json(
            "stdout is empty; Kong's cjson fails with \"Expected value but found T_END\"".into(),
        ));
    }
    let mut docs = serde_json::Deserializer::from_slice(stdout).into_iter::<Value>();
    match docs.next() {
        Some(Ok(doc)) => {
            let end = docs.byte_offset();
            let rest = &stdout[end..];
            if rest.iter().all(u8::is_ascii_whitespace) {
                Ok(doc)
            } else {
                let skip = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
                Err(not_json(format!(
                    "a JSON document ends at byte {end} but more output follows: {:?}; \
                     something printed after the dump",
                    head(&rest[skip..])
                )))
            }
        }
        Some(Err(e)) => {
            let mut reason = e.to_string();
            if let Some(line) = json_starts_on_later_line(stdout) {
                reason.push_str(&format!(
                    "; the text from line {line} on is valid JSON, so something printed {} line(s) before the dump",
                    line - 1
                ));
            }
            Err(not_json(reason))
        }
        None => Err(not_json("stdout is empty".into())),
    }
}

/// If a later line starts a JSON array/object that runs to the end of stdout, its 1-based number.
fn json_starts_on_later_line(stdout: &[u8]) -> Option<usize> {
    let mut offset = 0;
    for (idx, line) in stdout.split(|&b| b == b'\n').enumerate() {
        let start = offset;
        offset += line.len() + 1;
        if idx == 0 {
            continue;
        }
        let trimmed = line
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|p| &line[p..]);
        if matches!(trimmed.and_then(|t| t.first()), Some(b'{') | Some(b'[')) {
            if let Some(tail) = stdout.get(start..) {
                if serde_json::from_slice::<Value>(tail).is_ok() {
                    return Some(idx + 1);
                }
            }
        }
    }
    None
}

/// The start of `bytes` as text, for error messages.
fn head(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(HEAD_CHARS * 4)];
    let text = String::from_utf8_lossy(cut);
    let mut out: String = text.chars().take(HEAD_CHARS).collect();
    if out.len() < text.len() || cut.len() < bytes.len() {
        out.push('…');
    }
    out
}

/// A short description of a JSON value's type and content, for messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(60).collect();
            let ell = if short.len() < s.len() { "…" } else { "" };
            format!("the string {:?}{ell}", short)
        }
        Value::Array(a) => format!("an array of {} element(s)", a.len()),
        Value::Object(o) => format!("an object with {} key(s)", o.len()),
    }
}

const ACCEPTED_SHAPES: &str = "Kong accepts a JSON array of plugin entries (`[{\"Name\": ...}]`, as the Python and \
     JavaScript servers print) or an object with a `Plugins` array (`{\"Protocol\": \"ProtoBuf:1\", \"Plugins\": \
     [{\"Name\": ...}]}`, as Go servers print)";

/// Validates an already-decoded dump document (docs/protocol.md §2).
pub fn from_json(doc: &Value) -> Result<Dump, DumpError> {
    let mut issues = Issues::default();
    let (shape, entries, protocol, protocol_explicit, list_path) = match doc {
        Value::Array(items) => (DumpShape::Array, items, Protocol::MsgPack, false, ""),
        Value::Object(map) => {
            let items = match map.get("Plugins") {
                Some(Value::Array(items)) => items,
                Some(other) => {
                    return Err(DumpError::Shape(format!(
                        "`Plugins` must be an array of plugin entries, got {}; Kong reads `Plugins[1]` and \
                         crashes otherwise. {ACCEPTED_SHAPES}",
                        describe(other)
                    )))
                }
                None => return Err(DumpError::Shape(object_without_plugins(map))),
            };
            let (protocol, explicit) = top_level_protocol(map, &mut issues);
            (DumpShape::Object, items, protocol, explicit, "Plugins")
        }
        other => {
            return Err(DumpError::Shape(format!(
                "the dump is {}. {ACCEPTED_SHAPES}",
                describe(other)
            )));
        }
    };

    if entries.is_empty() {
        issues.error(
            if list_path.is_empty() { "[]" } else { list_path },
            "the plugin list is empty; Kong takes the first entry and crashes on nil. List the plugin this server serves",
        );
    }

    let mut plugins = Vec::new();
    let mut ignored = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{list_path}[{i}]");
        let (info, found) = check_plugin(entry, &at);
        if i == 0 {
            issues.errors.extend(found.errors);
            issues.warnings.extend(found.warnings);
            if let Some(info) = info {
                plugins.push(info);
            }
            continue;
        }
        let label = entry_label(entry);
        ignored.push(label.clone());
        if let Some(info) = info {
            issues.warnings.extend(found.warnings);
            plugins.push(info);
        } else {
            issues.warnings.push(format!(
                "{at} ({label}) would be rejected by Kong versions that load every entry (3.8 and older): {}",
                found.errors.join("; ")
            ));
        }
    }

    if entries.len() > 1 {
        issues.warnings.push(format!(
            "the dump lists {} plugins but Kong 3.9 registers only the first ({}) and ignores {} \
             (docs/protocol.md §2, §10.5); serve each plugin from its own plugin server",
            entries.len(),
            entries.first().map(entry_label).unwrap_or_default(),
            ignored.join(", ")
        ));
        let mut seen = std::collections::BTreeSet::new();
        for p in &plugins {
            if !seen.insert(p.name.as_str()) {
                issues.warnings.push(format!(
                    "plugin name `{}` appears more than once; Kong 3.8 and older log an error for duplicates",
                    p.name
                ));
            }
        }
    }

    if !issues.is_ok() || plugins.is_empty() {
        return Err(DumpError::Invalid(issues.errors.join("; ")));
    }
    Ok(Dump {
        shape,
        protocol,
        protocol_explicit,
        plugins,
        warnings: issues.warnings,
    })
}

/// `Name` of an entry for messages, or a placeholder.
fn entry_label(entry: &Value) -> String {
    match entry.get("Name").and_then(Value::as_str) {
        Some(name) => format!("`{name}`"),
        None => "an entry without a `Name`".into(),
    }
}

/// The Shape message for an object that has no `Plugins` key.
fn object_without_plugins(map: &Map<String, Value>) -> String {
    if let Some(k) = map.keys().find(|k| k.eq_ignore_ascii_case("plugins")) {
        return format!(
            "the object has `{k}` but no `Plugins`: keys are case-sensitive and Kong reads the capitalised \
             `Plugins` (and `Protocol`), so it sees no plugin list and crashes. {ACCEPTED_SHAPES}"
        );
    }
    if map
        .keys()
        .any(|k| PLUGIN_KEYS.iter().any(|p| p.eq_ignore_ascii_case(k)))
    {
        return format!(
            "a bare plugin object is not accepted: Kong takes `(dump.Plugins or dump)[1]`, which is nil for \
             an object without `Plugins`, and crashes at start-up (docs/protocol.md §2). Wrap the entry: `[{{...}}]` or \
             `{{\"Plugins\": [{{...}}]}}`. {ACCEPTED_SHAPES}"
        );
    }
    let keys: Vec<&str> = map.keys().map(String::as_str).take(10).collect();
    format!(
        "the object has no `Plugins` array (keys: {}); Kong takes `(dump.Plugins or dump)[1]`, finds nothing \
         and crashes. {ACCEPTED_SHAPES}",
        if keys.is_empty() { "none".to_owned() } else { keys.join(", ") }
    )
}

/// `dump.Protocol or "MsgPack:1"`, with Kong 3.9's handling of unknown values as an error.
fn top_level_protocol(map: &Map<String, Value>, issues: &mut Issues) -> (Protocol, bool) {
    match map.get("Protocol") {
        None => {
            if let Some(k) = map.keys().find(|k| k.eq_ignore_ascii_case("protocol")) {
                issues.warnings.push(format!(
                    "`{k}` is ignored: keys are case-sensitive and Kong reads `Protocol`, so it assumes \
                     \"MsgPack:1\"; write `Protocol` if the server speaks another protocol"
                ));
            }
            (Protocol::MsgPack, false)
        }
        Some(Value::String(s)) if Protocol::from_dump(s).is_some() => {
            (Protocol::from_dump(s).unwrap_or(Protocol::MsgPack), true)
        }
        Some(other) => {
            issues.error(
                "Protocol",
                format!(
                    "expected \"MsgPack:1\" or \"ProtoBuf:1\" (exactly; or no `Protocol` for MsgPack:1), got {}; \
                     Kong 3.9 logs \"unknown protocol implementation\" but, because of a bug, still registers \
                     the plugin without an RPC, so it fails on first use (docs/protocol.md §2)",
                    describe(other)
                ),
            );
            (Protocol::MsgPack, true)
        }
    }
}

/// Validates one plugin entry; `at` is its JSON path for messages (`Plugins[0]`, `[0]`, ...).
/// Returns the plugin and its warnings, or every error found as [`DumpError::Invalid`].
pub fn validate_plugin(v: &Value, at: &str) -> Result<(PluginInfo, Vec<String>), DumpError> {
    let (info, issues) = check_plugin(v, at);
    match info {
        Some(info) if issues.is_ok() => Ok((info, issues.warnings)),
        _ => Err(DumpError::Invalid(issues.errors.join("; "))),
    }
}

/// Checks one plugin entry with capitalised keys (docs/protocol.md §2). The plugin is returned only when there
/// are no errors.
pub fn check_plugin(v: &Value, at: &str) -> (Option<PluginInfo>, Issues) {
    let mut iss = Issues::default();
    let Some(obj) = v.as_object() else {
        iss.error(
            at,
            format!(
                "expected a plugin object with {}, got {}",
                PLUGIN_KEYS.join(", "),
                describe(v)
            ),
        );
        return (None, iss);
    };

    let mut present = true;
    for key in PLUGIN_KEYS {
        if obj.contains_key(key) {
            continue;
        }
        present = false;
        match obj.keys().find(|k| k.eq_ignore_ascii_case(key)) {
            Some(found) => iss.error(
                &format!("{at}.{key}"),
                format!(
                    "missing; found `{found}` instead, but keys are case-sensitive and Kong reads the capitalised \
                     keys {} (older docs show lower-case keys; the code does not, docs/protocol.md §10.15)",
                    PLUGIN_KEYS.join(", ")
                ),
            ),
            None => iss.error(&format!("{at}.{key}"), "missing (Kong requires Name, Priority, Version, Schema, Phases)"),
        }
    }

    let name = obj
        .get("Name")
        .and_then(|n| check_name(n, &format!("{at}.Name"), &mut iss));
    let priority = obj.get("Priority").and_then(|p| match check_priority(p) {
        Ok(p) => Some(p),
        Err(msg) => {
            iss.error(&format!("{at}.Priority"), msg);
            None
        }
    });
    let version = obj
        .get("Version")
        .and_then(|v| check_version(v, &format!("{at}.Version"), &mut iss));
    let phases = obj
        .get("Phases")
        .and_then(|p| check_phases(p, &format!("{at}.Phases"), &mut iss));
    if let Some(schema) = obj.get("Schema") {
        check_schema(schema, &format!("{at}.Schema"), &mut iss);
    }

    let info = match (
        present && iss.is_ok(),
        name,
        priority,
        version,
        phases,
        obj.get("Schema"),
    ) {
        (true, Some(name), Some(priority), Some(version), Some(phases), Some(schema)) => {
            Some(PluginInfo {
                name,
                priority,
                version,
                phases,
                schema: schema.clone(),
            })
        }
        _ => None,
    };
    (info, iss)
}

fn check_name(v: &Value, at: &str, iss: &mut Issues) -> Option<String> {
    let Some(name) = v.as_str() else {
        iss.error(
            at,
            format!("expected the plugin name as a string, got {}", describe(v)),
        );
        return None;
    };
    if name.is_empty() {
        iss.error(
            at,
            "the plugin name is empty; it is the name used in `plugins = bundled,<name>`",
        );
        return None;
    }
    if name.contains(',') || name.trim() != name {
        iss.warn(
            at,
            format!("{name:?} contains a comma or surrounding blanks, so it cannot be listed in `plugins = bundled,<name>`"),
        );
    }
    Some(name.to_owned())
}

/// Kong's `valid_priority`: a number that is finite and integral (`1.0` is fine, `1.5` is not).
/// The mock additionally needs it to fit an `i64`.
pub fn check_priority(v: &Value) -> Result<i64, String> {
    let Value::Number(n) = v else {
        return Err(format!("expected an integer number, got {}", describe(v)));
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    if n.as_u64().is_some() {
        return Err(format!(
            "{n} is larger than the mock supports (at most {})",
            i64::MAX
        ));
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 => {
            // The cast is exact in range; the range check keeps it so.
            if f >= i64::MIN as f64 && f < i64::MAX as f64 {
                Ok(f as i64)
            } else {
                Err(format!(
                    "{n} is outside the range the mock supports (an i64)"
                ))
            }
        }
        _ => Err(format!("expected an integer, got {n}")),
    }
}

fn check_version(v: &Value, at: &str, iss: &mut Issues) -> Option<String> {
    let Some(s) = v.as_str() else {
        iss.error(
            at,
            format!(
                "expected a version string like \"0.1.0\", got {}",
                describe(v)
            ),
        );
        return None;
    };
    match clean_version(s) {
        Some(clean) => {
            if clean != s {
                iss.warn(at, format!("Kong uses the cleaned form {clean:?} of {s:?}"));
            }
            Some(clean)
        }
        None => {
            iss.error(
                at,
                format!(
                    "expected a version with at most 3 numeric dot-separated parts like \"0.1\" or \"0.1.0\", \
                     got {s:?}; Kong refuses to load the plugin (its VERSION field does not follow the \"x.y.z\" format)"
                ),
            );
            None
        }
    }
}

/// Kong's `valid_version` with the `version` library 1.0.1 (non-strict): the first run of digits
/// and dots that starts with a digit is split on `.` (one trailing dot is ignored, an empty part is
/// an error), at most 3 parts are allowed, and the cleaned form joins the parts as Lua numbers
/// (`"v1.02-beta"` → `"1.2"`). `None` when Kong would reject the version.
pub fn clean_version(s: &str) -> Option<String> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let run_len = s[start..]
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len() - start);
    let run = &s[start..start + run_len];
    let run = run.strip_suffix('.').unwrap_or(run);
    let parts: Vec<&str> = run.split('.').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let numbers: Option<Vec<String>> = parts
        .iter()
        .map(|p| p.parse::<f64>().ok().map(crate::lua::lua_number))
        .collect();
    Some(numbers?.join("."))
}

fn check_phases(v: &Value, at: &str, iss: &mut Issues) -> Option<Vec<String>> {
    let Some(items) = v.as_array() else {
        iss.error(
            at,
            format!(
                "expected an array of phase names like [\"access\"], got {}",
                describe(v)
            ),
        );
        return None;
    };
    let mut phases = Vec::with_capacity(items.len());
    let mut ok = true;
    for (j, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(p) => phases.push(p.to_owned()),
            None => {
                iss.error(
                    &format!("{at}[{j}]"),
                    format!("expected a phase name string, got {}", describe(item)),
                );
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    if phases.is_empty() {
        iss.warn(
            at,
            "no phases: Kong registers the plugin but never calls it",
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &phases {
        if !seen.insert(p.as_str()) {
            iss.warn(at, format!("phase `{p}` is listed more than once"));
        } else if NON_YIELDING_PHASES.contains(&p.as_str()) {
            iss.warn(
                at,
                format!(
                    "`{p}`: Kong would call the plugin server from a context where cosockets are disabled, \
                     which fails at runtime (docs/protocol.md §6); use `response` instead"
                ),
            );
        } else if !KNOWN_PHASES.contains(&p.as_str()) {
            iss.warn(
                at,
                format!(
                    "unknown phase `{p}`: Kong creates a handler for any name without checking it, but the \
                     PDKs only know {} (docs/protocol.md §6)",
                    KNOWN_PHASES.join(", ")
                ),
            );
        }
    }
    if seen.contains("response") && NON_YIELDING_PHASES.iter().any(|p| seen.contains(p)) {
        iss.error(
            at,
            "declares `response` together with `header_filter`/`body_filter`; Kong refuses to load such a plugin (docs/protocol.md §6)",
        );
        return None;
    }
    Some(phases)
}

/// Checks a plugin `Schema` the way Kong's `MetaSubSchema` would, for the parts plugin servers
/// produce: a string `name`, a `fields` array of single-key objects, a
/// `{"config": {"type": "record", "fields": [...]}}` entry, known field types with their required
/// attributes (`elements`, `keys`/`values`, `fields`, `json_schema`), and defaults of the right type.
pub fn check_schema(v: &Value, at: &str, iss: &mut Issues) {
    let Some(obj) = v.as_object() else {
        iss.error(
            at,
            format!(
                "expected a schema object {{\"name\": ..., \"fields\": [...]}}, got {}",
                describe(v)
            ),
        );
        return;
    };
    match obj.get("name") {
        Some(Value::String(_)) => {}
        Some(other) => iss.error(
            &format!("{at}.name"),
            format!("expected a string, got {}", describe(other)),
        ),
        None => iss.error(
            &format!("{at}.name"),
            "missing; Kong's MetaSubSchema requires the schema's `name` (the plugin name)",
        ),
    }
    let Some(fields) = obj.get("fields") else {
        iss.error(
            &format!("{at}.fields"),
            "missing; expected [{\"config\": {\"type\": \"record\", \"fields\": [...]}}]",
        );
        return;
    };
    let fields_at = format!("{at}.fields");
    let Some(entries) = fields.as_array() else {
        iss.error(
            &fields_at,
            format!(
                "expected an array of single-key field objects, got {}",
                describe(fields)
            ),
        );
        return;
    };
    let mut config_seen = false;
    for (i, entry) in entries.iter().enumerate() {
        let Some((name, def)) = single_key(entry, &format!("{fields_at}[{i}]"), iss) else {
            continue;
        };
        let field_at = format!("{fields_at}[{i}].{name}");
        if name == "config" {
            config_seen = true;
            match def.get("type") {
                Some(Value::String(t)) if t == "record" => {}
                other => {
                    iss.error(
                        &format!("{field_at}.type"),
                        format!(
                            "the config field must be a record ({{\"type\": \"record\", \"fields\": [...]}}), got {}",
                            other.map(describe).unwrap_or_else(|| "no type".into())
                        ),
                    );
                    continue;
                }
            }
        }
        check_field(def, &field_at, iss);
    }
    if !config_seen {
        iss.error(
            &fields_at,
            "no `config` entry; Kong needs {\"config\": {\"type\": \"record\", \"fields\": [...]}} among the schema's fields",
        );
    }
}

/// A field list entry must be `{"<name>": {definition}}`.
fn single_key<'v>(entry: &'v Value, at: &str, iss: &mut Issues) -> Option<(&'v str, &'v Value)> {
    let Some(obj) = entry.as_object() else {
        iss.error(
            at,
            format!(
                "expected a single-key object {{\"<field name>\": {{\"type\": ...}}}}, got {}",
                describe(entry)
            ),
        );
        return None;
    };
    let mut keys = obj.iter();
    match (keys.next(), keys.next()) {
        (Some((name, def)), None) => Some((name.as_str(), def)),
        (None, _) => {
            iss.error(
                at,
                "field entry is empty; expected {\"<field name>\": {\"type\": ...}}",
            );
            None
        }
        (Some(_), Some(_)) => {
            let names: Vec<&str> = obj.keys().map(String::as_str).collect();
            iss.error(
                at,
                format!(
                    "expected one field per entry, got {} keys ({}); write each field as its own {{\"<name>\": {{...}}}} entry",
                    names.len(),
                    names.join(", ")
                ),
            );
            None
        }
    }
}

/// Checks a field definition (`{"type": ..., ...}`), recursively.
fn check_field(def: &Value, at: &str, iss: &mut Issues) {
    let Some(obj) = def.as_object() else {
        iss.error(
            at,
            format!(
                "expected a field definition object {{\"type\": ...}}, got {}",
                describe(def)
            ),
        );
        return;
    };
    let typ = match obj.get("type") {
        Some(Value::String(t)) if FIELD_TYPES.contains(&t.as_str()) => t.as_str(),
        Some(Value::String(t)) => {
            iss.error(
                &format!("{at}.type"),
                format!(
                    "unknown type {t:?}; Kong's types are {}",
                    FIELD_TYPES.join(", ")
                ),
            );
            return;
        }
        Some(other) => {
            iss.error(
                &format!("{at}.type"),
                format!("expected a type name string, got {}", describe(other)),
            );
            return;
        }
        None => {
            iss.error(at, "missing type declaration (`type`)");
            return;
        }
    };
    let abstract_record = typ == "record" && obj.get("abstract") == Some(&Value::Bool(true));
    let required: &[&str] = match typ {
        "array" | "set" => &["elements"],
        "map" => &["keys", "values"],
        "record" if !abstract_record => &["fields"],
        "json" => &["json_schema"],
        _ => &[],
    };
    for attr in required {
        if !obj.contains_key(*attr) {
            iss.error(at, format!("field of type '{typ}' must declare '{attr}'"));
        }
    }
    for attr in ["elements", "keys", "values"] {
        if let Some(nested) = obj.get(attr) {
            check_field(nested, &format!("{at}.{attr}"), iss);
        }
    }
    if let Some(fields) = obj.get("fields") {
        match fields.as_array() {
            Some(entries) => {
                for (i, entry) in entries.iter().enumerate() {
                    let entry_at = format!("{at}.fields[{i}]");
                    if let Some((name, nested)) = single_key(entry, &entry_at, iss) {
                        check_field(nested, &format!("{entry_at}.{name}"), iss);
                    }
                }
            }
            None => iss.error(
                &format!("{at}.fields"),
                format!(
                    "expected an array of field entries, got {}",
                    describe(fields)
                ),
            ),
        }
    }
    if let Some(default) = obj.get("default") {
        if let Err(msg) = value_matches(def, default) {
            iss.error(&format!("{at}.default"), msg);
        }
    }
}

/// Whether `v` is a valid value for the field definition `def` (Kong validates `default` against
/// the field itself). JSON null is accepted for every type (it is Kong's `ngx.null` default). An
/// empty object and an empty array are the same Lua table, so each is accepted where the other is.
fn value_matches(def: &Value, v: &Value) -> Result<(), String> {
    let typ = def.get("type").and_then(Value::as_str).unwrap_or("");
    if v.is_null() {
        return Ok(());
    }
    let empty_table = matches!(v, Value::Array(a) if a.is_empty())
        || matches!(v, Value::Object(o) if o.is_empty());
    let expected = |what: &str| {
        Err(format!(
            "expected {what} (the field's type is {typ}), got {}",
            describe(v)
        ))
    };
    match typ {
        "string" => {
            if v.is_string() {
                Ok(())
            } else {
                expected("a string")
            }
        }
        "number" => {
            if v.is_number() {
                Ok(())
            } else {
                expected("a number")
            }
        }
        "integer" => match v {
            Value::Number(n)
                if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) =>
            {
                Ok(())
            }
            _ => expected("an integer"),
        },
        "boolean" => {
            if v.is_boolean() {
                Ok(())
            } else {
                expected("a boolean")
            }
        }
        "array" | "set" => match v {
            Value::Array(items) => {
                if let Some(elements) = def.get("elements") {
                    for (i, item) in items.iter().enumerate() {
                        value_matches(elements, item).map_err(|e| format!("[{i}]: {e}"))?;
                    }
                }
                Ok(())
            }
            _ if empty_table => Ok(()),
            _ => expected("an array"),
        },
        "map" => match v {
            Value::Object(entries) => {
                if let Some(values) = def.get("values") {
                    for (k, item) in entries {
                        value_matches(values, item).map_err(|e| format!("[{k:?}]: {e}"))?;
                    }
                }
                Ok(())
            }
            _ if empty_table => Ok(()),
            _ => expected("an object"),
        },
        "record" => match v {
            Value::Object(entries) => {
                let fields = def.get("fields").and_then(Value::as_array);
                for (k, item) in entries {
                    let field_def = fields.and_then(|fs| fs.iter().find_map(|f| f.get(k.as_str())));
                    match (fields, field_def) {
                        (Some(_), Some(fd)) => {
                            value_matches(fd, item).map_err(|e| format!(".{k}: {e}"))?
                        }
                        (Some(_), None) => {
                            return Err(format!(".{k}: unknown field (not in the record's fields)"))
                        }
                        (None, _) => {}
                    }
                }
                Ok(())
            }
            _ if empty_table => Ok(()),
            _ => expected("an object"),
        },
        "function" => {
            Err("a field of type function cannot have a default that comes from JSON".into())
        }
        // json and foreign: anything.
        _ => Ok(()),
    }
}

/// What a query command printed, before parsing.
#[derive(Debug, Clone)]
pub struct RawQueryOutput {
    pub stdout: Vec<u8>,
    /// Lossy UTF-8, at most about 1 MiB.
    pub stderr: String,
    /// `None` when the shell was killed by a signal.
    pub exit_code: Option<i32>,
    pub elapsed: Duration,
}

/// The result of running a query command.
#[derive(Debug)]
pub struct QueryOutput {
    pub dump: Dump,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub elapsed: Duration,
}

/// Runs `cmd` through `/bin/sh -c` (stdin closed), reads all of stdout within `timeout`, parses.
///
/// The exit status is ignored when the dump is good, as Kong ignores it (it is returned); when
/// the dump is not, a failed command's status and stderr are the error
/// ([`DumpError::CommandFailed`]). See [`run_query`] for the process handling.
pub async fn query(cmd: &str, timeout: Duration) -> Result<QueryOutput, DumpError> {
    let raw = run_query(cmd, timeout).await?;
    let dump = parse(&raw.stdout).map_err(|cause| match raw.exit_code {
        Some(0) => cause,
        code => DumpError::CommandFailed {
            cmd: cmd.to_owned(),
            status: match code {
                Some(c) => format!("exited with status {c}"),
                None => "was killed by a signal".into(),
            },
            stderr: stderr_tail(&raw.stderr),
            cause: Box::new(cause),
        },
    })?;
    Ok(QueryOutput {
        dump,
        stderr: raw.stderr,
        exit_code: raw.exit_code,
        elapsed: raw.elapsed,
    })
}

/// Runs `cmd` like Kong's `io.popen(cmd)`: `/bin/sh -c cmd` with the inherited environment and
/// working directory, but with stdin connected to `/dev/null` (a command that reads stdin gets EOF
/// at once) and stderr captured.
///
/// Finishes when stdout is closed and the shell has exited (what `read("*a")` + `close()` wait
/// for). If that takes longer than `timeout`, the whole process group (the shell and everything it
/// started) gets SIGKILL and [`DumpError::Timeout`] is returned promptly. Stdout larger than
/// 16 MiB is rejected the same way, as [`DumpError::NotJson`].
pub async fn run_query(cmd: &str, timeout: Duration) -> Result<RawQueryOutput, DumpError> {
    let started = Instant::now();
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = command.spawn().map_err(|source| DumpError::Spawn {
        cmd: cmd.to_owned(),
        source,
    })?;
    let pgid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    // Stderr is collected on the side into a shared buffer, so whatever arrived is kept even if
    // the reader is abandoned.
    let stderr_buf = Arc::new(Mutex::new(Vec::new()));
    let stderr_task = stderr.map(|mut pipe| {
        let buf = Arc::clone(&stderr_buf);
        tokio::spawn(async move {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                        let room = MAX_STDERR.saturating_sub(b.len());
                        b.extend_from_slice(&chunk[..n.min(room)]);
                    }
                }
            }
        })
    });

    let work = async {
        let mut out = Vec::new();
        if let Some(mut pipe) = stdout {
            let mut chunk = [0u8; 8192];
            loop {
                let n = pipe.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                if out.len() + n > MAX_STDOUT {
                    return Ok(Err(out));
                }
                out.extend_from_slice(&chunk[..n]);
            }
        }
        let status = child.wait().await?;
        Ok::<_, std::io::Error>(Ok((out, status)))
    };
    let outcome = tokio::time::timeout(timeout, work).await;

    let kill_group = |child: &mut tokio::process::Child| {
        if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a negative pid signals the process group we created with
            // process_group(0); it has no memory-safety preconditions.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = child.start_kill();
    };

    let result = match outcome {
        Err(_elapsed) => {
            kill_group(&mut child);
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            if let Some(t) = stderr_task {
                t.abort();
            }
            return Err(DumpError::Timeout {
                cmd: cmd.to_owned(),
                timeout,
            });
        }
        Ok(Err(io)) => {
            kill_group(&mut child);
            return Err(DumpError::Spawn {
                cmd: cmd.to_owned(),
                source: io,
            });
        }
        Ok(Ok(Err(partial))) => {
            kill_group(&mut child);
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            if let Some(t) = stderr_task {
                t.abort();
            }
            return Err(DumpError::NotJson {
                reason: format!("stdout exceeded {MAX_STDOUT} bytes; the command was killed"),
                head: head(&partial),
            });
        }
        Ok(Ok(Ok(r))) => r,
    };
    let (stdout, status) = result;

    if let Some(mut t) = stderr_task {
        if tokio::time::timeout(STDERR_GRACE, &mut t).await.is_err() {
            t.abort();
        }
    }
    let stderr = {
        let b = stderr_buf.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&b).into_owned()
    };
    Ok(RawQueryOutput {
        stdout,
        stderr,
        exit_code: status.code(),
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// spec-companion "Dumps, exactly as printed": Go.
    const GO_DUMP: &str = "{\"Protocol\":\"ProtoBuf:1\",\"SocketPath\":\"/usr/local/kong/go-hello.socket\",\"Plugins\":[{\"Name\":\"go-hello\",\"Phases\":[\"access\"],\"Version\":\"0.2\",\"Priority\":1,\"Schema\":{\"name\":\"go-hello\",\"fields\":[{\"config\":{\"type\":\"record\",\"fields\":[{\"message\":{\"type\":\"string\"}}]}}]}}]}\n";
    /// Python `--dump-all-plugins` (no trailing newline).
    const PY_DUMP: &str = "[{\"Name\": \"py-hello\", \"Phases\": [\"access\"], \"Priority\": 100, \"Version\": \"0.1.0\", \"Schema\": {\"name\": \"py-hello\", \"fields\": [{\"config\": {\"type\": \"record\", \"fields\": [{\"greeting\": {\"type\": \"string\", \"default\": \"hello\"}}]}}]}}]";
    /// JS `--dump-all-plugins`.
    const JS_DUMP: &str = "[{\"Name\":\"js-hello\",\"Version\":\"0.1.0\",\"Phases\":[\"access\"],\"Priority\":100,\"Schema\":{\"name\":\"js-hello\",\"fields\":[{\"config\":{\"type\":\"record\",\"fields\":[{\"greeting\":{\"type\":\"string\",\"default\":\"hello\"}}]}}]}}]\n";
    /// docs/protocol.md §2 example: Kong's go-hello fixture (three phases).
    const SPEC_GO_DUMP: &str = r#"{"Protocol":"ProtoBuf:1","SocketPath":"/usr/local/kong/go-hello.socket",
 "Plugins":[{"Name":"go-hello","Phases":["access","response","log"],"Version":"0.1","Priority":1,
             "Schema":{"name":"go-hello","fields":[{"config":{"type":"record","fields":[{"message":{"type":"string"}}]}}]}}]}"#;
    /// docs/protocol.md §2 example: Python dedicated server.
    const SPEC_PY_DUMP: &str = r#"[{"Name":"py-hello","Phases":["access"],"Priority":100,"Version":"0.1.0",
  "Schema":{"name":"py-hello","fields":[{"config":{"type":"record","fields":[{"message":{"type":"string"}}]}}]}}]"#;

    /// A valid entry to mutate in tests.
    fn entry() -> Value {
        json!({"Name": "p", "Priority": 10, "Version": "1.0.0", "Phases": ["access"],
               "Schema": {"name": "p", "fields": [{"config": {"type": "record", "fields": [
                   {"message": {"type": "string"}}]}}]}})
    }

    fn invalid(doc: &Value) -> String {
        match from_json(doc) {
            Err(DumpError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn shape_err(doc: &Value) -> String {
        match from_json(doc) {
            Err(DumpError::Shape(m)) => m,
            other => panic!("expected Shape, got {other:?}"),
        }
    }

    fn with(mut e: Value, key: &str, v: Value) -> Value {
        e[key] = v;
        json!([e])
    }

    // ---- the real dumps and the spec examples ---------------------------------------------------

    #[test]
    fn real_go_dump() {
        let d = parse(GO_DUMP.as_bytes()).expect("valid");
        assert_eq!(d.shape, DumpShape::Object);
        assert_eq!(d.protocol, Protocol::ProtoBuf);
        assert!(d.protocol_explicit);
        assert_eq!(d.plugin().name, "go-hello");
        assert_eq!(d.plugin().version, "0.2");
        assert_eq!(d.plugin().priority, 1);
        assert_eq!(d.plugin().phases, vec!["access"]);
        assert_eq!(d.plugin().schema["name"], "go-hello");
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn real_python_and_js_dumps() {
        for (text, name) in [(PY_DUMP, "py-hello"), (JS_DUMP, "js-hello")] {
            let d = parse(text.as_bytes()).expect("valid");
            assert_eq!(d.shape, DumpShape::Array);
            assert_eq!(d.protocol, Protocol::MsgPack);
            assert!(!d.protocol_explicit);
            assert_eq!(d.plugins.len(), 1);
            assert_eq!(d.plugin().name, name);
            assert_eq!(d.plugin().priority, 100);
            assert_eq!(d.plugin().version, "0.1.0");
            assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        }
    }

    /// docs/protocol.md §8 item 8: Kong's `load_external_plugins_info` expectations.
    #[test]
    fn kong_spec_8_load_external_plugins_info() {
        let go = parse(SPEC_GO_DUMP.as_bytes()).expect("go-hello");
        assert_eq!(go.protocol, Protocol::ProtoBuf);
        assert_eq!(go.plugin().name, "go-hello");
        assert_eq!(go.plugin().priority, 1);
        assert_eq!(go.plugin().version, "0.1");
        assert_eq!(go.plugin().phases, vec!["access", "response", "log"]);

        let py = parse(SPEC_PY_DUMP.as_bytes()).expect("py-hello");
        assert_eq!(py.protocol, Protocol::MsgPack);
        assert!(!py.protocol_explicit);
        assert_eq!(py.plugin().name, "py-hello");
        assert_eq!(py.plugin().priority, 100);
        assert_eq!(py.plugin().version, "0.1.0");
        assert_eq!(py.plugin().phases, vec!["access"]);
    }

    #[test]
    fn object_without_protocol_defaults_to_msgpack() {
        let d = from_json(&json!({"Plugins": [entry()]})).expect("valid");
        assert_eq!(
            (d.shape, d.protocol, d.protocol_explicit),
            (DumpShape::Object, Protocol::MsgPack, false)
        );
        let d = from_json(&json!({"Protocol": "MsgPack:1", "Plugins": [entry()]})).expect("valid");
        assert_eq!((d.protocol, d.protocol_explicit), (Protocol::MsgPack, true));
    }

    // ---- stdout that is not one JSON document ---------------------------------------------------

    #[test]
    fn log_line_before_the_json_is_not_json() {
        let out = format!("2024/01/01 starting plugin server\n{PY_DUMP}\n");
        match parse(out.as_bytes()) {
            Err(DumpError::NotJson { reason, head }) => {
                assert!(head.starts_with("2024/01/01 starting"), "{head}");
                assert!(reason.contains("from line 2 on is valid JSON"), "{reason}");
            }
            other => panic!("expected NotJson, got {other:?}"),
        }
    }

    #[test]
    fn output_after_the_json_is_not_json() {
        let out = format!("{PY_DUMP}\nbye\n");
        match parse(out.as_bytes()) {
            Err(DumpError::NotJson { reason, .. }) => assert!(reason.contains("\"bye"), "{reason}"),
            other => panic!("expected NotJson, got {other:?}"),
        }
        // Two JSON documents are not one either.
        assert!(matches!(parse(b"[] []"), Err(DumpError::NotJson { .. })));
    }

    #[test]
    fn empty_or_broken_stdout_is_not_json() {
        for out in [&b""[..], b"  \n", b"{\"Plugins\": [", b"\xff\xfe"] {
            assert!(
                matches!(parse(out), Err(DumpError::NotJson { .. })),
                "{out:?}"
            );
        }
        // Surrounding whitespace is fine.
        assert!(parse(format!("\n  {PY_DUMP}  \n\n").as_bytes()).is_ok());
    }

    // ---- shapes ---------------------------------------------------------------------------------

    #[test]
    fn bare_object_is_a_shape_error_explaining_the_crash() {
        let m = shape_err(&entry());
        assert!(m.contains("bare plugin object"), "{m}");
        assert!(m.contains("crashes"), "{m}");
        assert!(m.contains("Plugins"), "{m}");
    }

    #[test]
    fn non_tables_and_bad_plugins_values_are_shape_errors() {
        for doc in [json!("x"), json!(1), json!(null), json!(true)] {
            let m = shape_err(&doc);
            assert!(m.contains("array of plugin entries"), "{m}");
        }
        assert!(shape_err(&json!({})).contains("no `Plugins`"));
        assert!(shape_err(&json!({"Plugins": {"a": 1}})).contains("`Plugins` must be an array"));
        assert!(shape_err(&json!({"Plugins": null})).contains("`Plugins` must be an array"));
        assert!(shape_err(&json!({"plugins": [entry()]})).contains("case-sensitive"));
    }

    #[test]
    fn bad_protocols_are_invalid() {
        for p in [
            json!("MsgPack:2"),
            json!("protobuf:1"),
            json!("ProtoBuf"),
            json!(null),
            json!(1),
        ] {
            let m = invalid(&json!({"Protocol": p, "Plugins": [entry()]}));
            assert!(m.starts_with("Protocol: "), "{m}");
            assert!(m.contains("unknown protocol implementation"), "{m}");
        }
    }

    #[test]
    fn lower_case_protocol_key_is_ignored_with_a_warning() {
        let d = from_json(&json!({"protocol": "ProtoBuf:1", "Plugins": [entry()]})).expect("valid");
        assert_eq!(d.protocol, Protocol::MsgPack);
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("`protocol` is ignored")),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn empty_plugin_list_is_invalid() {
        assert!(invalid(&json!([])).contains("empty"));
        assert!(invalid(&json!({"Plugins": []})).starts_with("Plugins: "));
    }

    #[test]
    fn several_plugins_are_kept_with_a_warning_naming_the_dropped_ones() {
        let mut second = entry();
        second["Name"] = json!("second");
        let mut third = entry();
        third["Name"] = json!("third");
        let d = from_json(&json!([entry(), second, third])).expect("valid");
        let names: Vec<&str> = d.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["p", "second", "third"]);
        assert_eq!(d.plugin().name, "p");
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert!(
            d.warnings[0].contains("only the first (`p`)"),
            "{}",
            d.warnings[0]
        );
        assert!(
            d.warnings[0].contains("`second`, `third`"),
            "{}",
            d.warnings[0]
        );
    }

    #[test]
    fn an_invalid_extra_plugin_is_a_warning_only() {
        let mut bad = entry();
        bad["Name"] = json!("bad");
        bad["Priority"] = json!("high");
        let d =
            from_json(&json!({"Plugins": [entry(), bad]})).expect("Kong 3.9 ignores the second");
        assert_eq!(d.plugins.len(), 1);
        assert!(
            d.warnings
                .iter()
                .any(|w| w.starts_with("Plugins[1] (`bad`)") && w.contains("Priority")),
            "{:?}",
            d.warnings
        );
        // But an invalid first entry fails even if a later one is fine.
        let mut bad_first = entry();
        bad_first["Priority"] = json!(1.5);
        assert!(invalid(&json!([bad_first, entry()])).starts_with("[0].Priority"));
    }

    #[test]
    fn socket_path_is_ignored() {
        let d = from_json(&json!({"SocketPath": 42, "Plugins": [entry()]})).expect("valid");
        assert!(d.warnings.is_empty());
    }

    // ---- plugin entries -------------------------------------------------------------------------

    #[test]
    fn lower_case_keys_are_invalid_with_a_case_sensitivity_message() {
        let doc = json!({"Plugins": [{"name": "p", "priority": 1, "version": "1.0", "phases": ["access"],
            "schema": entry()["Schema"].clone()}]});
        let m = invalid(&doc);
        assert!(
            m.contains("Plugins[0].Name: missing; found `name` instead"),
            "{m}"
        );
        assert!(m.contains("case-sensitive"), "{m}");
        assert!(
            m.contains("Plugins[0].Priority: missing; found `priority`"),
            "{m}"
        );
    }

    #[test]
    fn missing_keys_are_invalid() {
        let mut e = entry();
        e.as_object_mut().expect("object").remove("Phases");
        assert!(invalid(&json!([e])).contains("[0].Phases: missing"));
        assert!(invalid(&json!([42])).starts_with("[0]: expected a plugin object"));
    }

    #[test]
    fn names_must_be_non_empty_strings() {
        assert!(invalid(&with(entry(), "Name", json!("")))
            .contains("[0].Name: the plugin name is empty"));
        assert!(invalid(&with(entry(), "Name", json!(7)))
            .contains("[0].Name: expected the plugin name as a string"));
    }

    #[test]
    fn priorities_must_be_integral_numbers() {
        let m = invalid(&json!({"Plugins": [with(entry(), "Priority", json!(1.5))[0].clone()]}));
        assert_eq!(m, "Plugins[0].Priority: expected an integer, got 1.5");
        assert!(invalid(&with(entry(), "Priority", json!("1")))
            .contains("expected an integer number, got the string \"1\""));
        assert!(invalid(&with(entry(), "Priority", json!(u64::MAX)))
            .contains("larger than the mock supports"));
        for (v, want) in [
            (json!(1.0), 1),
            (json!(-1000), -1000),
            (json!(0), 0),
            (json!(1e3), 1000),
        ] {
            let d = from_json(&with(entry(), "Priority", v)).expect("integral");
            assert_eq!(d.plugin().priority, want);
        }
    }

    #[test]
    fn versions_follow_the_version_library() {
        assert_eq!(clean_version("0.1").as_deref(), Some("0.1"));
        assert_eq!(clean_version("0.1.0").as_deref(), Some("0.1.0"));
        assert_eq!(clean_version("3").as_deref(), Some("3"));
        assert_eq!(clean_version("1.2.").as_deref(), Some("1.2"));
        assert_eq!(clean_version("v1.02-beta").as_deref(), Some("1.2"));
        assert_eq!(clean_version("1.2.3 build 4").as_deref(), Some("1.2.3"));
        assert_eq!(
            clean_version("123456789012345678").as_deref(),
            Some("1.2345678901235e+17")
        );
        for bad in ["1.2.3.4", "", "abc", "1..2", "1.2..", "v."] {
            assert_eq!(clean_version(bad), None, "{bad:?}");
        }

        let m = invalid(&with(entry(), "Version", json!("1.2.3.4")));
        assert!(
            m.starts_with("[0].Version: expected a version with at most 3 numeric"),
            "{m}"
        );
        assert!(invalid(&with(entry(), "Version", json!(1.0)))
            .contains("[0].Version: expected a version string"));
        assert!(invalid(&with(entry(), "Version", json!("latest"))).contains("\"latest\""));

        let d = from_json(&with(entry(), "Version", json!("v0.3-rc1"))).expect("cleaned");
        assert_eq!(d.plugin().version, "0.3");
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("cleaned form \"0.3\"")),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn phases_checks() {
        let d = from_json(&with(entry(), "Phases", json!(["access", "init_worker"])))
            .expect("unknown is a warning");
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("unknown phase `init_worker`")),
            "{:?}",
            d.warnings
        );

        let d =
            from_json(&with(entry(), "Phases", json!(["header_filter"]))).expect("warning only");
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("cosockets are disabled")),
            "{:?}",
            d.warnings
        );

        let m = invalid(&with(entry(), "Phases", json!(["response", "body_filter"])));
        assert!(
            m.contains("[0].Phases: declares `response` together with"),
            "{m}"
        );

        assert!(invalid(&with(entry(), "Phases", json!("access")))
            .contains("[0].Phases: expected an array"));
        assert!(invalid(&with(entry(), "Phases", json!(["access", 3])))
            .contains("[0].Phases[1]: expected a phase name"));

        let d = from_json(&with(entry(), "Phases", json!([]))).expect("empty is a warning");
        assert!(d.warnings.iter().any(|w| w.contains("never calls it")));

        let all = json!([
            "certificate",
            "rewrite",
            "access",
            "response",
            "preread",
            "log"
        ]);
        let d = from_json(&with(entry(), "Phases", all)).expect("all known");
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    fn schema_with_config_fields(fields: Value) -> Value {
        json!({"name": "p", "fields": [{"config": {"type": "record", "fields": fields}}]})
    }

    #[test]
    fn schema_needs_a_config_record() {
        let m = invalid(&with(entry(), "Schema", json!({"name": "p", "fields": []})));
        assert!(m.contains("[0].Schema.fields: no `config` entry"), "{m}");
        let m = invalid(&with(
            entry(),
            "Schema",
            json!({"name": "p", "fields": [{"config": {"type": "string"}}]}),
        ));
        assert!(
            m.contains("[0].Schema.fields[0].config.type: the config field must be a record"),
            "{m}"
        );
        let m = invalid(&with(
            entry(),
            "Schema",
            json!({"name": "p", "fields": [{"config": {"type": "record"}}]}),
        ));
        assert!(
            m.contains("field of type 'record' must declare 'fields'"),
            "{m}"
        );
        assert!(invalid(&with(entry(), "Schema", json!({"fields": []})))
            .contains("[0].Schema.name: missing"));
        assert!(invalid(&with(entry(), "Schema", json!("p")))
            .contains("[0].Schema: expected a schema object"));
        assert!(invalid(&with(entry(), "Schema", json!({"name": "p"})))
            .contains("[0].Schema.fields: missing"));
        // Other top-level fields are fine.
        let s = json!({"name": "p", "fields": [{"protocols": {"type": "set", "elements": {"type": "string"}}},
                                               {"config": {"type": "record", "fields": []}}]});
        assert!(from_json(&with(entry(), "Schema", s)).is_ok());
    }

    #[test]
    fn schema_fields_need_known_types_and_single_keys() {
        let m = invalid(&with(
            entry(),
            "Schema",
            schema_with_config_fields(json!([{"a": {"type": "text"}}])),
        ));
        assert!(
            m.contains("[0].Schema.fields[0].config.fields[0].a.type: unknown type \"text\""),
            "{m}"
        );
        let m = invalid(&with(
            entry(),
            "Schema",
            schema_with_config_fields(json!([{"a": {"type": "string"}, "b": {"type": "string"}}])),
        ));
        assert!(
            m.contains("expected one field per entry, got 2 keys (a, b)"),
            "{m}"
        );
        let m = invalid(&with(
            entry(),
            "Schema",
            schema_with_config_fields(json!([{"a": {}}])),
        ));
        assert!(m.contains("missing type declaration"), "{m}");
        let m = invalid(&with(
            entry(),
            "Schema",
            schema_with_config_fields(json!([{"a": {"type": "array"}}])),
        ));
        assert!(
            m.contains("field of type 'array' must declare 'elements'"),
            "{m}"
        );
        let m = invalid(&with(
            entry(),
            "Schema",
            schema_with_config_fields(json!([{"a": {"type": "map", "keys": {"type": "string"}}}])),
        ));
        assert!(m.contains("must declare 'values'"), "{m}");
        let nested_bad = json!([{"r": {"type": "record", "fields": [{"x": {"type": "nope"}}]}}]);
        let m = invalid(&with(
            entry(),
            "Schema",
            schema_with_config_fields(nested_bad),
        ));
        assert!(
            m.contains("config.fields[0].r.fields[0].x.type: unknown type"),
            "{m}"
        );
    }

    #[test]
    fn defaults_must_match_their_type() {
        let good = json!([
            {"s": {"type": "string", "default": "hello"}},
            {"n": {"type": "number", "default": 1.5}},
            {"i": {"type": "integer", "default": 2.0}},
            {"b": {"type": "boolean", "default": false}},
            {"a": {"type": "array", "elements": {"type": "string"}, "default": ["x"]}},
            {"e": {"type": "array", "elements": {"type": "string"}, "default": {}}},
            {"m": {"type": "map", "keys": {"type": "string"}, "values": {"type": "integer"}, "default": {"k": 1}}},
            {"r": {"type": "record", "fields": [{"x": {"type": "string"}}], "default": {"x": "y"}}},
            {"z": {"type": "string", "default": null}},
            {"j": {"type": "json", "json_schema": {}, "default": [1, "two"]}}
        ]);
        let d = from_json(&with(entry(), "Schema", schema_with_config_fields(good)))
            .expect("all defaults fine");
        assert!(d.warnings.is_empty());

        let cases = [
            (
                json!({"type": "string", "default": 5}),
                "expected a string (the field's type is string), got the number 5",
            ),
            (
                json!({"type": "integer", "default": 1.5}),
                "expected an integer",
            ),
            (
                json!({"type": "number", "default": "1"}),
                "expected a number",
            ),
            (
                json!({"type": "boolean", "default": "true"}),
                "expected a boolean",
            ),
            (
                json!({"type": "array", "elements": {"type": "integer"}, "default": [1, "x"]}),
                "[1]: expected an integer",
            ),
            (
                json!({"type": "record", "fields": [{"x": {"type": "string"}}], "default": {"y": "1"}}),
                ".y: unknown field",
            ),
            (
                json!({"type": "map", "keys": {"type": "string"}, "values": {"type": "string"}, "default": "k"}),
                "expected an object",
            ),
        ];
        for (def, want) in cases {
            let m = invalid(&with(
                entry(),
                "Schema",
                schema_with_config_fields(json!([{"f": def}])),
            ));
            assert!(m.contains("config.fields[0].f.default: "), "{m}");
            assert!(m.contains(want), "{m} / {want}");
        }
    }

    #[test]
    fn validate_plugin_reports_every_error() {
        let mut e = entry();
        e["Priority"] = json!(1.5);
        e["Version"] = json!("x");
        match validate_plugin(&e, "Plugins[0]") {
            Err(DumpError::Invalid(m)) => {
                assert!(
                    m.contains("Plugins[0].Priority: expected an integer, got 1.5"),
                    "{m}"
                );
                assert!(m.contains("Plugins[0].Version"), "{m}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        let (info, warnings) = validate_plugin(&entry(), "x").expect("valid");
        assert_eq!(info.name, "p");
        assert!(warnings.is_empty());
    }

    // ---- running the query command --------------------------------------------------------------

    const T: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn query_echo() {
        let cmd = format!("printf '%s\\n' '{}'", PY_DUMP.replace('\'', "'\\''"));
        let out = query(&cmd, T).await.expect("valid");
        assert_eq!(out.dump.plugin().name, "py-hello");
        assert_eq!(out.exit_code, Some(0));
    }

    #[tokio::test]
    async fn query_times_out_promptly_and_kills_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("survived");
        // The shell starts a child that would create the marker after the timeout.
        let cmd = format!("(sleep 1; touch '{}') & sleep 60", marker.display());
        let started = Instant::now();
        let err = query(&cmd, Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(err, DumpError::Timeout { .. }), "{err:?}");
        // Not waiting for the shell's `sleep 60` to end.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "took {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "a child of the timed-out shell survived");
    }

    #[tokio::test]
    async fn query_stdin_is_at_eof() {
        // `cat` echoes stdin: with stdin closed it exits at once and prints nothing, so the dump
        // is what follows.
        let cmd = format!("cat; printf '%s' '{}'", PY_DUMP.replace('\'', "'\\''"));
        // With stdin open, `cat` would wait for it until the query's timeout: an error.
        let out = query(&cmd, T).await.expect("valid");
        assert_eq!(out.dump.plugin().name, "py-hello");
    }

    #[tokio::test]
    async fn query_ignores_stderr_and_exit_status_but_returns_them() {
        let cmd = format!(
            "echo 'loading plugins...' >&2; printf '%s' '{}'; exit 3",
            PY_DUMP.replace('\'', "'\\''")
        );
        let out = query(&cmd, T).await.expect("valid");
        assert_eq!(out.stderr, "loading plugins...\n");
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.dump.plugin().name, "py-hello");
    }

    #[tokio::test]
    async fn query_with_a_log_line_on_stdout_fails() {
        let cmd = format!(
            "echo 'INFO starting'; printf '%s' '{}'",
            PY_DUMP.replace('\'', "'\\''")
        );
        let err = query(&cmd, T).await.unwrap_err();
        match err {
            DumpError::NotJson { head, .. } => assert!(head.starts_with("INFO starting"), "{head}"),
            other => panic!("expected NotJson, got {other:?}"),
        }
    }

    /// Regression (issue 13, item 10): a failing query command's exit status and stderr were
    /// hidden behind "stdout is empty".
    #[tokio::test]
    async fn a_failing_query_command_is_reported_with_its_status_and_stderr() {
        let cmd = "echo 'Traceback (most recent call last):' >&2; \
                   echo 'ModuleNotFoundError: No module named kong_pdk' >&2; exit 1";
        let err = query(cmd, T).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DumpError::CommandFailed { .. }), "{text}");
        assert!(text.contains("exited with status 1"), "{text}");
        assert!(
            text.contains("its stderr ended with:\nTraceback (most recent call last):\nModuleNotFoundError: No module named kong_pdk"),
            "{text}"
        );
        assert!(text.contains("stdout is empty"), "{text}");
        // Nothing on stderr either.
        let text = query("exit 2", T).await.unwrap_err().to_string();
        assert!(text.contains("exited with status 2"), "{text}");
        assert!(text.contains("it printed nothing on stderr"), "{text}");
    }

    #[tokio::test]
    async fn run_query_keeps_output_of_failing_commands() {
        let raw = run_query("echo oops; echo 'not found' >&2; exit 127", T)
            .await
            .expect("ran");
        assert_eq!(raw.stdout, b"oops\n");
        assert_eq!(raw.stderr, "not found\n");
        assert_eq!(raw.exit_code, Some(127));
    }

    #[tokio::test]
    async fn background_child_holding_stderr_does_not_block() {
        // The shell exits at once, but a background child keeps stderr (not stdout) open.
        let cmd = format!(
            "sleep 60 >/dev/null 2>&2 & printf '%s' '{}'",
            PY_DUMP.replace('\'', "'\\''")
        );
        // Waiting for stderr to close would outlast the query's 10 s timeout: an error.
        let out = query(&cmd, T).await.expect("valid");
        assert_eq!(out.dump.plugin().name, "py-hello");
    }
}
