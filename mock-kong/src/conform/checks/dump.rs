//! `dump/*`: the query command and its JSON dump (docs/protocol.md §2).

use std::process::Stdio;
use std::time::Instant;

use serde_json::Value as Json;
use tokio::io::AsyncReadExt;

use super::{verdict, Res};
use crate::conform::runner::Ctx;
use crate::conform::{CheckFuture, Outcome};
use crate::dump::{self, KNOWN_PHASES, NON_YIELDING_PHASES};

/// The query output the runner read, or why there is none.
fn stdout(c: &Ctx) -> Result<&[u8], String> {
    match &c.query {
        Some(Ok(raw)) => Ok(&raw.stdout),
        Some(Err(e)) => Err(format!("the query command failed: {e}")),
        None => Err("the query command was not run".into()),
    }
}

/// The decoded dump document.
fn document(c: &Ctx) -> Result<Json, String> {
    dump::decode_json(stdout(c)?)
        .map_err(|e| format!("the dump is not JSON ({e}); see dump/stdout-is-json"))
}

/// The first plugin entry and its JSON path.
fn first_entry(doc: &Json) -> Result<(Json, &'static str), String> {
    let (list, at) = match doc {
        Json::Array(a) => (a, "[0]"),
        Json::Object(o) => match o.get("Plugins") {
            Some(Json::Array(a)) => (a, "Plugins[0]"),
            _ => return Err("the dump has no plugin list; see dump/shape".into()),
        },
        _ => return Err("the dump has no plugin list; see dump/shape".into()),
    };
    list.first()
        .cloned()
        .map(|e| (e, at))
        .ok_or_else(|| "the dump lists no plugin".into())
}

pub fn exits_in_time(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        let limit = c.opts.dump_timeout;
        match dump::run_query(&c.target.query_cmd, limit).await {
            Ok(raw) => Outcome::Pass(format!("finished in {:.2} s", raw.elapsed.as_secs_f64())),
            Err(e) => Outcome::Fail(e.to_string()),
        }
    })
}

pub fn stdout_is_json(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let out = stdout(c)?;
                dump::decode_json(out).map_err(|e| e.to_string())?;
                Ok(Outcome::Pass(format!("{} bytes of JSON", out.len())))
            }
            .await,
        )
    })
}

pub fn shape(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(async {
            let doc = document(c)?;
            match &doc {
                Json::Array(a) if !a.is_empty() => Ok(Outcome::Pass("an array of plugin entries".into())),
                Json::Object(o) => match o.get("Plugins") {
                    Some(Json::Array(a)) if !a.is_empty() => {
                        Ok(Outcome::Pass("an object with a Plugins array".into()))
                    }
                    _ if o.contains_key("Name") => Err(
                        "a bare plugin object: Kong reads (dump.Plugins or dump)[1], which is nil, \
                         and crashes while indexing it"
                            .into(),
                    ),
                    _ => Err("an object without a non-empty Plugins array".into()),
                },
                Json::Array(_) => Err("an empty array: Kong's dump[1] is nil".into()),
                other => Err(format!("a JSON {}", kind(other))),
            }
        }
        .await)
    })
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

pub fn protocol(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let doc = document(c)?;
                match doc.get("Protocol") {
                    None if doc.is_array() => Ok(Outcome::Pass(
                        "no Protocol (a bare array): Kong uses MsgPack:1".into(),
                    )),
                    None => Ok(Outcome::Pass("no Protocol: Kong uses MsgPack:1".into())),
                    Some(Json::String(p)) if p == "MsgPack:1" || p == "ProtoBuf:1" => {
                        Ok(Outcome::Pass(p.clone()))
                    }
                    Some(other) => Err(format!(
                        "Protocol is {other}; Kong 3.9 knows no RPC for it, registers the plugin \
                     without one and fails on first use"
                    )),
                }
            }
            .await,
        )
    })
}

/// Errors of the first entry, split into schema errors and the others; phase names Kong runs
/// but the kits never emit are noted on `c` (info).
fn entry_errors(c: &mut Ctx) -> Result<(Vec<String>, Vec<String>, String), String> {
    let doc = document(c)?;
    let (entry, at) = first_entry(&doc)?;
    let (_, issues) = dump::check_plugin(&entry, at);
    let schema_at = format!("{at}.Schema");
    let (schema, mut other): (Vec<String>, Vec<String>) = issues
        .errors
        .into_iter()
        .partition(|e| e.starts_with(&schema_at));
    if let Some(phases) = entry.get("Phases").and_then(Json::as_array) {
        for p in phases {
            match p.as_str() {
                Some(name) if KNOWN_PHASES.contains(&name) => {}
                // Kong would call the server where cosockets are disabled: every request fails.
                Some(name) if NON_YIELDING_PHASES.contains(&name) => other.push(format!(
                    "{at}.Phases: {name} makes Kong call the plugin server from a context without \
                     cosockets, which fails every request at runtime (use response instead)"
                )),
                Some(name) => c.note(format!(
                    "{at}.Phases: {name:?} is not a phase the kits emit ({}): Kong creates a \
                     handler for any name and simply never calls this one",
                    KNOWN_PHASES.join(", ")
                )),
                None => other.push(format!("{at}.Phases: {p} is not a phase name string")),
            }
        }
    }
    let name = entry
        .get("Name")
        .and_then(Json::as_str)
        .unwrap_or("?")
        .to_owned();
    Ok((schema, other, name))
}

pub fn entry(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let (_, errors, name) = entry_errors(c)?;
                if errors.is_empty() {
                    Ok(Outcome::Pass(format!("plugin {name}")))
                } else {
                    Err(errors.join("; "))
                }
            }
            .await,
        )
    })
}

pub fn schema(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let (errors, _, name) = entry_errors(c)?;
                if errors.is_empty() {
                    Ok(Outcome::Pass(format!("schema of {name}")))
                } else {
                    Err(errors.join("; "))
                }
            }
            .await,
        )
    })
}

/// The config fields of the project's fixture plugins (`plugins/README.md`), as the plugins
/// read them.
fn fixture_fields(plugin: &str) -> Option<&'static [(&'static str, &'static str)]> {
    match plugin {
        "hello" | "multiphase" => Some(&[("message", "string")]),
        "bench" => Some(&[("calls", "integer"), ("method", "string")]),
        "exit" => Some(&[("status", "integer"), ("message", "string")]),
        "faults" => Some(&[("mode", "string")]),
        _ => None,
    }
}

/// The keys Kong adds to every plugin config it sends (docs/protocol.md §4.3, `get_plugin_config`).
const KONG_CONFIG_KEYS: [&str; 8] = [
    "route_id",
    "service_id",
    "consumer_id",
    "plugin_instance_name",
    "__plugin_id",
    "__ws_id",
    "__key__",
    "__seq__",
];

/// `(name, type)` of each field of the first entry's config record.
fn config_record(entry: &Json) -> Vec<(String, String)> {
    entry["Schema"]["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("config"))
        .filter_map(|cfg| cfg["fields"].as_array())
        .flatten()
        .filter_map(|f| f.as_object().and_then(|o| o.iter().next()))
        .map(|(name, def)| {
            let ty = def["type"].as_str().unwrap_or("(no type)").to_owned();
            (name.clone(), ty)
        })
        .collect()
}

pub fn config_fields(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let doc = document(c)?;
                let (entry, at) = first_entry(&doc)?;
                let name = entry["Name"].as_str().unwrap_or("?").to_owned();
                let fields = config_record(&entry);
                let mut errors = Vec::new();
                for (f, _) in &fields {
                    if KONG_CONFIG_KEYS.contains(&f.as_str()) {
                        errors.push(format!(
                            "{at}.Schema config field {f:?} is a key Kong adds to every config it \
                             sends, so the value configured is overwritten (docs/protocol.md §4.3)"
                        ));
                    }
                }
                // The fixtures' fields are known only for the servers that host the project's
                // fixture plugins (the reference server and the peers).
                let fixture = if c.parameterized {
                    fixture_fields(&name)
                } else {
                    None
                };
                for (want, ty) in fixture.unwrap_or_default() {
                    match fields.iter().find(|(f, _)| f == want) {
                        None => errors.push(format!(
                            "the {name} plugin reads config.{want} ({ty}), but the schema does not \
                             declare it: Kong rejects a config that sets it (unknown field), so \
                             the plugin only ever sees its default"
                        )),
                        Some((_, got)) if got != ty => errors.push(format!(
                            "config.{want} is declared as {got}; the {name} plugin reads a {ty} \
                             (Kong validates and stores it as {got})"
                        )),
                        Some(_) => {}
                    }
                }
                if !errors.is_empty() {
                    return Err(errors.join("; "));
                }
                let list: Vec<String> = fields.iter().map(|(f, t)| format!("{f}: {t}")).collect();
                Ok(Outcome::Pass(format!(
                    "{} config field(s) [{}]{}",
                    fields.len(),
                    list.join(", "),
                    if fixture.is_some() {
                        ", each one the fixture reads"
                    } else {
                        ""
                    }
                )))
            }
            .await,
        )
    })
}

/// Names of Kong's core entities (their schemas live in the same schema cache as plugins').
const CORE_ENTITIES: [&str; 14] = [
    "consumers",
    "routes",
    "services",
    "plugins",
    "upstreams",
    "targets",
    "certificates",
    "ca_certificates",
    "snis",
    "keys",
    "key_sets",
    "vaults",
    "workspaces",
    "tags",
];

pub fn schema_name(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let doc = document(c)?;
                let (entry, at) = first_entry(&doc)?;
                let name = entry["Name"].as_str().unwrap_or("?");
                match entry["Schema"]["name"].as_str() {
                    Some(s) if s == name => Ok(Outcome::Pass(format!("Schema.name is {s:?}"))),
                    Some(s) => Err(format!(
                        "{at}.Schema.name is {s:?}, {at}.Name is {name:?}: Kong registers the \
                         config schema under {name:?} but caches it under {s:?}{}",
                        if CORE_ENTITIES.contains(&s) {
                            ", replacing the core entity's schema: foreign keys to it break"
                        } else {
                            ", replacing any other schema of that name"
                        }
                    )),
                    None => Err(format!("{at}.Schema has no string name; see dump/schema")),
                }
            }
            .await,
        )
    })
}

pub fn first_plugin(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move {
        verdict(
            async {
                let doc = document(c)?;
                let list: Vec<Json> = match &doc {
                    Json::Array(a) => a.clone(),
                    Json::Object(o) => o
                        .get("Plugins")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                let names: Vec<String> = list
                    .iter()
                    .map(|e| {
                        e.get("Name")
                            .and_then(Json::as_str)
                            .unwrap_or("?")
                            .to_owned()
                    })
                    .collect();
                let Some(first) = names.first() else {
                    return Err("the dump lists no plugin".into());
                };
                let extra = if names.len() > 1 {
                    format!(
                        "; also listed, and ignored by Kong 3.9: {}",
                        names[1..].join(", ")
                    )
                } else {
                    String::new()
                };
                let v = c.opts.kong_version;
                if !v.first_dump_entry_only() {
                    return Ok(Outcome::Pass(format!(
                        "Kong {v} registers every entry: {}",
                        names.join(", ")
                    )));
                }
                if c.parameterized && *first != c.asked {
                    return Err(format!(
                        "the first entry is {first:?}, so Kong {v} would register {first:?} \
                         instead of {:?} (it keeps only the first entry){extra}",
                        c.asked
                    ));
                }
                if names.len() > 1 {
                    // Which entry comes first is the kit's choice (JS sorts by file name,
                    // Python lists the directory in file-system order), so a multi-plugin dump
                    // works for one plugin only, and which one can differ between machines.
                    c.note(format!(
                        "the dump lists {} plugins; Kong {v} registers only the first ({first:?}) \
                         and ignores {}: a server that should offer several plugins needs one \
                         pluginserver entry per plugin",
                        names.len(),
                        names[1..].join(", ")
                    ));
                }
                Ok(Outcome::Pass(format!("Kong registers {first:?}")))
            }
            .await,
        )
    })
}

pub fn standalone(c: &mut Ctx) -> CheckFuture<'_> {
    Box::pin(async move { verdict(standalone_inner(c).await) })
}

/// Runs the query command from an empty directory with stdin left open (Kong's `io.popen`
/// gives it the worker's stdin); it must finish without reading stdin and leave no file behind.
async fn standalone_inner(c: &mut Ctx) -> Res {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&c.target.query_cmd)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run the query command: {e}"))?;
    // Held open, never written.
    let _stdin = child.stdin.take();
    let mut out = child.stdout.take();
    let started = Instant::now();
    let limit = c.opts.dump_timeout;
    let work = async {
        let mut buf = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut buf).await;
        }
        child.wait().await.ok();
        buf
    };
    let result = tokio::time::timeout(limit, work).await;
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on the process group created above; no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let stdout = result.map_err(|_| {
        format!(
            "with stdin open (never written) the query command did not finish within {} s: it \
             reads stdin (or waits for something else)",
            limit.as_secs()
        )
    })?;
    dump::decode_json(&stdout).map_err(|e| {
        format!("run from an empty directory with stdin open, the dump is not JSON: {e}")
    })?;
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if !left.is_empty() {
        c.note(format!(
            "the query command created {} in its working directory (Kong does not mind; it is \
             left behind wherever Kong runs the command)",
            left.join(", ")
        ));
    }
    if c.target.socket.exists() {
        return Err(format!(
            "the query command created {} (a dump must not need a socket)",
            c.target.socket.display()
        ));
    }
    Ok(Outcome::Pass(format!(
        "finished in {:.2} s without stdin or a prefix directory",
        started.elapsed().as_secs_f64()
    )))
}
