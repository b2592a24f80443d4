//! Runs a selection of the catalogue against one server.
//!
//! For each check: the query command's dump is read (cached per plugin), the check is skipped if
//! it does not apply (protocol, a fixture plugin the server does not host, an externally managed
//! server for process checks), a **fresh server process** is started for checks that need one
//! (so a server broken by one check cannot fail the next), the check runs under its own time
//! limit ("no answer after N s" fails it, nothing hangs the suite), and the process is stopped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json};

use super::catalogue::{catalogue, Applies, Check, Needs, Plug};
use super::report::{CheckResult, Report};
use super::wire::{answer_from, End, EventRun, Quirks, RawHost, StepConns};
use super::{Outcome, Status, TierSel};
use crate::dump::{self, Dump, PluginInfo, RawQueryOutput};
use crate::host::instances::uuid_from;
use crate::host::PluginEntity;
use crate::pdk::{Pdk, SimpleRequest};
use crate::process::{LogSink, ServerProcess, SpawnOptions};
use crate::target::{self, Placement, ResolvedTarget, TargetError, TargetSpec};
use crate::{Protocol, Value};

/// The server under test.
#[derive(Debug, Clone)]
pub struct Server {
    pub spec: TargetSpec,
    pub placement: Placement,
}

impl Server {
    /// Whether the target takes the plugin as a parameter (the reference server and peers:
    /// they list the plugin asked for first), rather than serving a fixed plugin.
    pub fn parameterized(&self) -> bool {
        matches!(
            self.spec,
            TargetSpec::Reference { .. } | TargetSpec::Peer { .. }
        )
    }

    fn resolve(&self, plugin: &str) -> Result<ResolvedTarget, TargetError> {
        target::resolve(&self.spec, &self.placement, plugin)
    }
}

/// Knobs of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub tier: TierSel,
    /// Run only checks whose id starts with one of these (all when empty).
    pub only: Vec<String>,
    /// Leave out checks whose id starts with one of these.
    pub skip: Vec<String>,
    /// The plugin driven by checks that take any plugin.
    pub plugin: String,
    /// Deadline of every connect, read and write ("no answer after N s").
    pub io_timeout: Duration,
    /// How long the query command may run.
    pub dump_timeout: Duration,
    /// How long a server may take to create its socket.
    pub socket_timeout: Duration,
    /// `lifecycle/idle-instances`: how long instances sit idle (Kong's keepalive is 60 s).
    pub idle: Duration,
    /// `transport/idle-connection`: how long a connection sits idle before reuse.
    pub idle_connection: Duration,
    /// `resources/*`: events per kind (the memory slope is fitted over them; at least 20 000
    /// for the verdict the reports quote).
    pub resource_events: usize,
    /// SIGTERM → SIGKILL grace when a check's server is stopped.
    pub grace: Duration,
    /// The Kong release whose PDK and dump rules apply (`--kong-version`).
    pub kong_version: crate::pdk::KongVersion,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            tier: TierSel::Fast,
            only: Vec::new(),
            skip: Vec::new(),
            plugin: "hello".into(),
            io_timeout: Duration::from_secs(3),
            dump_timeout: Duration::from_secs(10),
            socket_timeout: Duration::from_secs(10),
            idle: Duration::from_secs(65),
            idle_connection: Duration::from_secs(3),
            resource_events: 20_000,
            grace: Duration::from_secs(2),
            kong_version: crate::pdk::KongVersion::DEFAULT,
        }
    }
}

impl RunOptions {
    /// Whether `check` is selected by tier, `only` and `skip`.
    pub fn selects(&self, check: &Check) -> bool {
        self.tier.includes(check.tier)
            && (self.only.is_empty() || self.only.iter().any(|p| check.id.starts_with(p.as_str())))
            && !self.skip.iter().any(|p| check.id.starts_with(p.as_str()))
    }

    /// The checks a run goes through, in catalogue order: the selected ones and, when a tier
    /// alone selects (no `only`), the checks they build on from the other tier, so a slow
    /// check whose subject cannot be reached is reported blocked by the fast check that failed
    /// (`lifecycle/first-event`, `dump/shape`), not failed for that reason again. `--skip`
    /// is obeyed.
    pub fn plan(&self) -> Vec<&'static Check> {
        let all = catalogue();
        let mut chosen: Vec<bool> = all.iter().map(|c| self.selects(c)).collect();
        if self.only.is_empty() {
            loop {
                let mut grew = false;
                for i in 0..all.len() {
                    if !chosen[i] {
                        continue;
                    }
                    for pre in all[i].prerequisites() {
                        let skipped = self.skip.iter().any(|p| pre.starts_with(p.as_str()));
                        if let Some(j) = all.iter().position(|c| c.id == pre) {
                            if !chosen[j] && !skipped {
                                chosen[j] = true;
                                grew = true;
                            }
                        }
                    }
                }
                if !grew {
                    break;
                }
            }
        }
        all.iter()
            .zip(chosen)
            .filter(|(_, c)| *c)
            .map(|(c, _)| c)
            .collect()
    }
}

/// Everything a check works with.
pub struct Ctx {
    pub protocol: Protocol,
    /// The plugin driven (from the dump).
    pub plugin: PluginInfo,
    /// The plugin name asked for (the fixture, or `--plugin`).
    pub asked: String,
    /// Whether the target lists the plugin asked for first (reference server, peers).
    pub parameterized: bool,
    pub target: ResolvedTarget,
    /// The server started for this check (`None`: externally managed, or a process check).
    pub process: Option<ServerProcess>,
    pub host: RawHost,
    pub opts: RunOptions,
    /// The query command's output (dump checks).
    pub query: Option<Result<RawQueryOutput, String>>,
    /// The whole dump.
    pub dump: Option<Dump>,
    /// Info-level notes: legal but unusual choices the check noticed (never a failure).
    pub notes: Vec<String>,
    next_entity: u64,
}

impl Ctx {
    /// Notes a legal but unusual choice of the server (reported at `info` level, never failed).
    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }

    /// The config under which the driven plugin does its normal thing: the faults fixture's
    /// mode `none`, an empty config for any other plugin.
    pub fn plain_config(&self) -> Json {
        if self.plugin.name == "faults" {
            serde_json::json!({"mode": "none"})
        } else {
            serde_json::json!({})
        }
    }

    /// A plugin entity for the driven plugin with its own UUID and `__seq__`, its config built
    /// as Kong builds it ([`Ctx::kong_config`]).
    pub fn entity(&mut self, config: Json) -> PluginEntity {
        self.next_entity += 1;
        let mut e = PluginEntity::new(&self.plugin.name, self.kong_config(config));
        e.id = uuid_from(&format!("{}#{}", self.plugin.name, self.next_entity));
        e
    }

    /// `config` as Kong builds it from the dump's schema: defaults filled in, so a plugin
    /// reading a field it declares with a default gets it (docs/protocol.md §4.3). A config the
    /// schema rejects (a check driving a fixture beyond its schema) is sent as given, with the
    /// defaults of the fields it leaves out.
    pub fn kong_config(&self, config: Json) -> Map<String, Json> {
        let given = match config {
            Json::Object(m) => m,
            _ => Map::new(),
        };
        crate::plugin_config::kong_config(&self.plugin.name, &self.plugin.schema, &given)
            .unwrap_or_else(|_| {
                let mut m = self.kong_defaults();
                m.extend(given);
                m
            })
    }

    /// StartInstance for `e` on a new connection; refusals become text.
    pub async fn start(&self, e: &PluginEntity) -> Result<i64, String> {
        self.host
            .start(&e.name, &e.kong_config_json())
            .await
            .map_err(|r| format!("StartInstance failed: {r}"))
    }

    /// The phase checks drive by default: `access` if declared, else the first declared.
    pub fn phase(&self) -> String {
        if self.plugin.phases.iter().any(|p| p == "access") {
            "access".into()
        } else {
            self.plugin
                .phases
                .first()
                .cloned()
                .unwrap_or_else(|| "access".into())
        }
    }

    /// Runs one event on a new connection, answered like Kong with `pdk`.
    pub async fn event(&self, id: i64, phase: &str, pdk: &mut dyn Pdk) -> Result<EventRun, String> {
        self.host
            .event(id, phase, pdk)
            .await
            .map_err(|e| e.to_string())
    }

    /// Whether the server process (if mock-kong started it) is still running.
    pub fn alive(&self) -> Result<(), String> {
        match &self.process {
            Some(p) if p.pid().is_none() || p.last_exit().is_some() => Err(format!(
                "the server process exited ({})",
                p.last_exit()
                    .map(|e| e.reason.to_string())
                    .unwrap_or_else(|| "unknown status".into())
            )),
            _ => Ok(()),
        }
    }

    /// Whether the server still serves: alive, and a new instance's event on a new connection
    /// runs to its end.
    pub async fn serves(&mut self) -> Result<(), String> {
        self.alive()?;
        let e = self.entity(self.plain_config());
        let id = self
            .start(&e)
            .await
            .map_err(|m| format!("a new instance could not be started afterwards: {m}"))?;
        let phase = self.phase();
        let mut pdk = SimpleRequest::new("example.com");
        let run = self
            .event(id, &phase, &mut pdk)
            .await
            .map_err(|m| format!("a new event afterwards did not complete: {m}"))?;
        match run.end {
            End::Done | End::Exit => self.alive(),
            other => Err(format!("a new event afterwards ended with {other}")),
        }
    }

    /// Drives an event with every callback answered by `answer`.
    pub async fn drive(
        &self,
        id: i64,
        phase: &str,
        steps: StepConns,
        answer: &mut dyn FnMut(&str, &[Value]) -> super::wire::Reply,
    ) -> Result<EventRun, String> {
        let mut w = self.host.connect().await.map_err(|e| e.to_string())?;
        self.host
            .drive(&mut w, id, phase, steps, answer)
            .await
            .map_err(|e| e.to_string())
    }

    /// The config Kong would send for the plugin: every schema field with its default, `null`
    /// for fields without one (docs/protocol.md §4.3).
    pub fn kong_defaults(&self) -> Map<String, Json> {
        let mut m = Map::new();
        if let Some(fields) = self.plugin.schema["fields"][0]["config"]["fields"].as_array() {
            for f in fields {
                if let Some((name, def)) = f.as_object().and_then(|o| o.iter().next()) {
                    m.insert(
                        name.clone(),
                        def.get("default").cloned().unwrap_or(Json::Null),
                    );
                }
            }
        }
        m
    }

    /// Spawns the server (process checks), without waiting for its socket.
    pub async fn spawn(&self) -> Result<ServerProcess, String> {
        let Some(cmd) = &self.target.start_cmd else {
            return Err("the server is managed externally (no start command)".into());
        };
        ServerProcess::start(SpawnOptions {
            name: self.target.name.clone(),
            start_cmd: cmd.clone(),
            socket: self.target.socket.clone(),
            respawn: false,
            grace: self.opts.grace,
            log: LogSink::Quiet,
            env: Vec::new(),
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// Kong-like answers for the default request (host `example.com`).
    pub fn kong_answer(
        pdk: &mut SimpleRequest,
    ) -> impl FnMut(&str, &[Value]) -> super::wire::Reply + '_ {
        move |m, a| answer_from(pdk.call("access", m, a))
    }
}

/// Cached dump per plugin.
type DumpCache = HashMap<String, Result<(RawQueryOutput, Result<Dump, String>), String>>;

async fn query(
    server: &Server,
    plugin: &str,
    opts: &RunOptions,
    cache: &mut DumpCache,
) -> Result<(RawQueryOutput, Result<Dump, String>), String> {
    if let Some(r) = cache.get(plugin) {
        return r.clone();
    }
    let r = match server.resolve(plugin) {
        Err(e) => Err(e.to_string()),
        Ok(t) => match dump::run_query(&t.query_cmd, opts.dump_timeout).await {
            Err(e) => Err(e.to_string()),
            Ok(raw) => {
                let d = dump::parse(&raw.stdout).map_err(|e| e.to_string());
                Ok((raw, d))
            }
        },
    };
    cache.insert(plugin.to_owned(), r.clone());
    r
}

/// Runs the selected checks; `progress` sees each result as it is ready.
///
/// Fails only when the target cannot be resolved at all (a setup error: unknown peer, unreadable
/// kong.conf); everything the server does wrong is a check result.
pub async fn run(
    server: &Server,
    opts: &RunOptions,
    progress: &mut dyn FnMut(&CheckResult),
) -> Result<Report, TargetError> {
    let started = Instant::now();
    let main_target = server.resolve(&opts.plugin)?;
    let mut cache = DumpCache::new();
    let main = query(server, &opts.plugin, opts, &mut cache).await;
    let protocol = match &main {
        Ok((_, Ok(d))) => Some(d.protocol),
        _ => main_target.expected_protocol,
    };
    let main_plugin = match &main {
        Ok((_, Ok(d))) => d
            .plugins
            .iter()
            .find(|p| p.name == opts.plugin)
            .unwrap_or_else(|| d.plugin())
            .name
            .clone(),
        _ => opts.plugin.clone(),
    };
    let mut report = Report::new(&main_target.label, protocol, &main_plugin, opts.tier);
    drop(main_target);
    // Each legal but unusual choice is noted once, with the first check that met it.
    let mut noted = Quirks::default();
    for check in opts.plan() {
        if let Some((root, why)) = blocker(check, &report.results) {
            let result = CheckResult::blocked(check, root, &why);
            progress(&result);
            report.results.push(result);
            continue;
        }
        let t0 = Instant::now();
        // After SIGINT/SIGTERM (or once stdout is gone) the report holds the checks finished so
        // far: the running check is dropped, which stops any server it started.
        let (outcome, mut notes, quirks) = tokio::select! {
            biased;
            () = crate::edge::until_stopped() => {
                report.interrupted = true;
                break;
            }
            o = run_one(server, check, opts, &mut cache) => o,
        };
        for q in quirks.iter().filter(|q| !noted.contains(*q)) {
            notes.push(format!(
                "legal but unusual (Kong accepts it): {}",
                q.reason()
            ));
        }
        noted.extend(quirks);
        let result = CheckResult::new(check, outcome, t0.elapsed()).with_notes(notes);
        progress(&result);
        report.results.push(result);
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// The failure that blocks `check`: the first of its prerequisites (run before it) that failed,
/// or the failure that blocked that one; with what it said.
fn blocker(check: &Check, done: &[CheckResult]) -> Option<(&'static str, String)> {
    check.prerequisites().find_map(|p| {
        let r = done.iter().find(|r| r.id == p)?;
        match r.status {
            Status::Fail | Status::Xfail => Some((r.id, r.detail.clone())),
            Status::Blocked => {
                let root = r.blocked_by?;
                let why = done.iter().find(|x| x.id == root)?.detail.clone();
                Some((root, why))
            }
            Status::Pass | Status::Skip => None,
        }
    })
}

/// Runs one check; its texts are scrubbed of this machine's paths (reports are kept in the
/// repository): the socket directory becomes `<prefix>`, the mock-kong executable `mock-kong`,
/// the working directory `.`.
async fn run_one(
    server: &Server,
    check: &Check,
    opts: &RunOptions,
    cache: &mut DumpCache,
) -> (Outcome, Vec<String>, Quirks) {
    let mut prefix = None;
    let mut notes = Vec::new();
    let mut quirks = Quirks::default();
    let outcome = run_one_inner(
        server,
        check,
        opts,
        cache,
        &mut prefix,
        &mut notes,
        &mut quirks,
    )
    .await;
    let mut paths: Vec<(String, &str)> = Vec::new();
    if let Some(p) = prefix {
        paths.push((p, "<prefix>"));
    }
    if let Ok(exe) = std::env::current_exe() {
        paths.push((exe.to_string_lossy().into_owned(), "mock-kong"));
    }
    if let TargetSpec::Reference { exe: Some(exe), .. } = &server.spec {
        paths.push((exe.to_string_lossy().into_owned(), "mock-kong"));
    }
    if let Ok(cwd) = std::env::current_dir() {
        paths.push((format!("{}/", cwd.to_string_lossy()), "./"));
    }
    let scrub = |mut m: String| {
        for (from, to) in &paths {
            if from.len() > 1 {
                m = m.replace(from.as_str(), to);
            }
        }
        m
    };
    let outcome = match outcome {
        Outcome::Pass(m) => Outcome::Pass(scrub(m)),
        Outcome::Fail(m) => Outcome::Fail(scrub(m)),
        Outcome::Skip(m) => Outcome::Skip(scrub(m)),
    };
    (outcome, notes.into_iter().map(scrub).collect(), quirks)
}

async fn run_one_inner(
    server: &Server,
    check: &Check,
    opts: &RunOptions,
    cache: &mut DumpCache,
    prefix: &mut Option<String>,
    notes: &mut Vec<String>,
    quirks: &mut Quirks,
) -> Outcome {
    let asked = match check.needs {
        Needs::Query | Needs::Server(Plug::Any) | Needs::Manual(Plug::Any) => opts.plugin.clone(),
        Needs::Server(Plug::Fixture(p)) | Needs::Manual(Plug::Fixture(p)) => p.to_owned(),
    };
    let q = query(server, &asked, opts, cache).await;
    let target = match server.resolve(&asked) {
        Ok(t) => t,
        Err(e) => return Outcome::Skip(format!("the server cannot be resolved: {e}")),
    };
    *prefix = Some(target.prefix.to_string_lossy().into_owned());
    let mut ctx_query = None;
    let (protocol, plugin, dump) = match (&check.needs, q) {
        (Needs::Query, q) => {
            let (raw, d) = match q {
                Ok((raw, d)) => (Ok(raw), d.ok()),
                Err(e) => (Err(e), None),
            };
            ctx_query = Some(raw);
            let protocol = d
                .as_ref()
                .map(|d| d.protocol)
                .or(target.expected_protocol)
                .unwrap_or(Protocol::MsgPack);
            let plugin = d
                .as_ref()
                .map(|d| d.plugin().clone())
                .unwrap_or(PluginInfo {
                    name: asked.clone(),
                    priority: 0,
                    version: String::new(),
                    phases: Vec::new(),
                    schema: Json::Null,
                });
            (protocol, plugin, d)
        }
        (_, Err(e)) => {
            return Outcome::Skip(format!(
                "the query command could not be run ({e}); see the dump/* checks"
            ))
        }
        (_, Ok((_, Err(e)))) => {
            return Outcome::Skip(format!(
                "the dump is not usable ({e}); see the dump/* checks"
            ))
        }
        (needs, Ok((_, Ok(d)))) => {
            let found = d.plugins.iter().find(|p| p.name == asked).cloned();
            let plugin = match (needs, found) {
                (_, Some(p)) => p,
                (Needs::Server(Plug::Fixture(p)) | Needs::Manual(Plug::Fixture(p)), None) => {
                    return Outcome::Skip(format!(
                        "needs the fixture plugin `{p}` (plugins/README.md), which this server \
                         does not host"
                    ))
                }
                (_, None) => d.plugin().clone(),
            };
            (d.protocol, plugin, Some(d))
        }
    };
    match (check.applies, protocol) {
        (Applies::MsgPack, Protocol::ProtoBuf) => {
            return Outcome::Skip("applies to MsgPack:1 servers only".into())
        }
        (Applies::ProtoBuf, Protocol::MsgPack) => {
            return Outcome::Skip("applies to ProtoBuf:1 servers only".into())
        }
        _ => {}
    }
    if matches!(check.needs, Needs::Manual(_)) && target.start_cmd.is_none() {
        return Outcome::Skip(
            "the server is managed externally (no start command), so mock-kong cannot start, \
             signal or restart it"
                .into(),
        );
    }
    let host = RawHost::new(protocol, target.socket.clone(), opts.io_timeout);
    let mut ctx = Ctx {
        protocol,
        plugin,
        asked,
        parameterized: server.parameterized(),
        target,
        process: None,
        host,
        opts: opts.clone(),
        query: ctx_query,
        dump,
        notes: Vec::new(),
        next_entity: 0,
    };
    if matches!(check.needs, Needs::Server(_)) {
        if let Some(cmd) = ctx.target.start_cmd.clone() {
            let started = ServerProcess::start(SpawnOptions {
                name: ctx.target.name.clone(),
                start_cmd: cmd,
                socket: ctx.target.socket.clone(),
                respawn: false,
                grace: opts.grace,
                log: LogSink::Quiet,
                env: Vec::new(),
            })
            .await;
            let p = match started {
                Ok(p) => p,
                Err(e) => return Outcome::Fail(format!("the server did not start: {e}")),
            };
            if let Err(e) = p.wait_socket(opts.socket_timeout).await {
                let _ = p.stop().await;
                return Outcome::Fail(format!("the server did not start: {e}"));
            }
            ctx.process = Some(p);
        }
    }
    let limit = check.limit(opts);
    let outcome = match tokio::time::timeout(limit, (check.run)(&mut ctx)).await {
        Ok(o) => o,
        Err(_) => Outcome::Fail(format!(
            "no answer after {} s (the check's time limit)",
            limit.as_secs_f64().round()
        )),
    };
    let outcome = match outcome {
        Outcome::Fail(m) if ctx.process.is_some() && !m.contains("process exited") => {
            // Say so when the server died on the way (the symptom is often just a closed pipe).
            tokio::time::sleep(Duration::from_millis(200)).await;
            match ctx.alive() {
                Err(dead) => Outcome::Fail(format!("{m}; {dead}")),
                Ok(()) => Outcome::Fail(m),
            }
        }
        other => other,
    };
    if let Some(p) = ctx.process.take() {
        let _ = p.stop().await;
    }
    *notes = std::mem::take(&mut ctx.notes);
    *quirks = ctx.host.quirks();
    outcome
}
