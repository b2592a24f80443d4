//! The catalogue: every check, with its level, tier, the protocols and plugin it needs, the spec
//! section and requirement, what is expected, and the reference-server faults that prove it
//! can fail. This table is the single source for `--list`, the reports and the proof tests.

use std::time::Duration;

use super::checks::{dump, event, lifecycle, pdk, process, resources, transport};
use super::runner::{Ctx, RunOptions};
use super::{CheckFuture, Level, Tier};
use crate::reference::Fault;

/// Which servers a check applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    Both,
    MsgPack,
    ProtoBuf,
}

impl Applies {
    pub fn as_str(self) -> &'static str {
        match self {
            Applies::Both => "both",
            Applies::MsgPack => "MsgPack:1",
            Applies::ProtoBuf => "ProtoBuf:1",
        }
    }
}

/// The plugin a check drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plug {
    /// Whatever the server serves (`--plugin`, or the dump's first entry).
    Any,
    /// One of the project's fixture plugins (`plugins/README.md`); skipped if not hosted.
    Fixture(&'static str),
}

/// What the runner prepares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The query command's output only.
    Query,
    /// A fresh, running server process.
    Server(Plug),
    /// The check starts (and signals) the server itself.
    Manual(Plug),
}

/// One conformance check.
pub struct Check {
    /// `<group>/<name>`, stable.
    pub id: &'static str,
    pub level: Level,
    pub tier: Tier,
    pub applies: Applies,
    pub needs: Needs,
    /// Sections of `docs/protocol.md` (`§N`), or another document of `docs/` ([`cite`]).
    pub spec: &'static str,
    /// The rule, as Kong needs it.
    pub requirement: &'static str,
    /// The acceptable outcomes.
    pub expected: &'static str,
    /// What breaks in Kong when the rule is broken (for `info` checks: why Kong does not care).
    /// The level follows from it: `must` when Kong's own traffic fails, hangs, crashes or runs
    /// with the wrong values; `should` for robustness beyond Kong's traffic, or a cost Kong
    /// absorbs; `info` when no Kong behaviour depends on the rule.
    pub protects: &'static str,
    /// Reference-server faults that break the rule (each one makes the check fail).
    pub proven_by: &'static [Fault],
    /// The checks this one builds on: when one of them failed (or was blocked), this check is
    /// not run and is reported as blocked by the first failure up the chain. Checks that start
    /// a server also build on `dump/shape` (a usable dump).
    pub after: &'static [&'static str],
    /// Time limit in seconds (fast checks).
    pub limit_secs: u64,
    pub run: for<'a> fn(&'a mut Ctx) -> CheckFuture<'a>,
}

/// Where a check's rule is written: `docs/protocol.md §N` for sections, else the document named.
pub fn cite(spec: &str) -> String {
    if spec.starts_with('§') {
        format!("docs/protocol.md {spec}")
    } else {
        spec.to_owned()
    }
}

impl Check {
    /// The group (`dump`, `event`, ...).
    pub fn group(&self) -> &'static str {
        self.id.split('/').next().unwrap_or(self.id)
    }

    /// The checks this one builds on: [`Check::after`], and `dump/shape` for every check that
    /// starts a server (it needs a usable dump).
    pub fn prerequisites(&self) -> impl Iterator<Item = &'static str> {
        let dump =
            matches!(self.needs, Needs::Server(_) | Needs::Manual(_)).then_some("dump/shape");
        self.after.iter().copied().chain(dump)
    }

    /// This check's time limit under `opts`.
    pub fn limit(&self, opts: &RunOptions) -> Duration {
        let base = Duration::from_secs(self.limit_secs);
        match self.id {
            "lifecycle/idle-instances" | "lifecycle/close-after-idle" => {
                opts.idle + Duration::from_secs(30)
            }
            "transport/idle-connection" => opts.idle_connection + base,
            id if id.starts_with("resources/") => {
                base + Duration::from_millis(10 * opts.resource_events as u64)
            }
            _ => base,
        }
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("id", &self.id).finish()
    }
}

use Applies::{Both, MsgPack, ProtoBuf};
use Level::{Info, Must, Should};
use Needs::{Manual, Query, Server};
use Plug::{Any, Fixture};
use Tier::{Fast, Slow};

macro_rules! check {
    ($id:literal, $level:expr, $tier:expr, $applies:expr, $needs:expr, $spec:literal,
     $req:literal, $exp:literal, $protects:literal, [$($f:expr),* $(,)?], $limit:literal,
     $run:path, after [$($after:literal),* $(,)?]) => {
        Check {
            id: $id,
            level: $level,
            tier: $tier,
            applies: $applies,
            needs: $needs,
            spec: $spec,
            requirement: $req,
            expected: $exp,
            protects: $protects,
            proven_by: &[$($f),*],
            after: &[$($after),*],
            limit_secs: $limit,
            run: $run,
        }
    };
}

static CATALOGUE: [Check; 55] = [
    // -------------------------------------------------------------------------------------- dump
    check!("dump/exits-in-time", Must, Fast, Both, Query, "§2",
        "The query command prints the dump and exits: Kong reads all of stdout and waits for the command to end before it can start.",
        "the command exits within 10 s",
        "Kong's start (and every kong command that loads plugins) waits in io.popen for the query command to end: a dump that hangs hangs Kong's start.",
        [Fault::DumpHangs], 15, dump::exits_in_time, after []),
    check!("dump/stdout-is-json", Must, Fast, Both, Query, "§2",
        "Stdout is exactly one JSON document (Kong cjson-decodes all of it; logs belong on stderr).",
        "stdout is one JSON document surrounded by whitespace only",
        "Kong cjson-decodes all of stdout: anything else stops Kong's start (\"failed decoding plugin info\").",
        [Fault::DumpLogLine], 15, dump::stdout_is_json, after ["dump/exits-in-time"]),
    check!("dump/shape", Must, Fast, Both, Query, "§2",
        "The dump is an array of plugin entries or an object with a Plugins array; Kong crashes on a bare plugin object.",
        "a non-empty array, or an object with a non-empty Plugins array",
        "Kong indexes (dump.Plugins or dump)[1]: a bare plugin object crashes Kong's start.",
        [Fault::DumpBareObject], 15, dump::shape, after ["dump/stdout-is-json"]),
    check!("dump/protocol", Must, Fast, Both, Query, "§2, §9",
        "Protocol is absent (MsgPack:1) or one of the two identifiers Kong knows.",
        "no Protocol, \"MsgPack:1\" or \"ProtoBuf:1\"",
        "Kong 3.9 registers the plugin without an RPC for an unknown Protocol, and its first request fails.",
        [Fault::DumpUnknownProtocol], 15, dump::protocol, after ["dump/shape"]),
    check!("dump/entry", Must, Fast, Both, Query, "§2, §6",
        "The first entry has the capitalised keys Kong reads, a non-empty Name, an integral Priority, a Version of at most three numeric parts, and Phases Kong can run (no header_filter or body_filter; other names the kits never emit are noted at info level).",
        "Name, Priority, Version and Phases valid",
        "Kong refuses to load a plugin whose Name, Priority or Version it cannot use; a header_filter or body_filter phase fails every request at runtime (no cosockets there).",
        [Fault::DumpBadEntry], 15, dump::entry, after ["dump/shape"]),
    check!("dump/schema", Must, Fast, Both, Query, "§2",
        "The Schema passes Kong's MetaSubSchema: the {name, fields: [{config: {type: record, ...}}]} envelope, known field types, type-correct defaults.",
        "a schema Kong accepts",
        "Kong validates the Schema with MetaSubSchema at start: a schema it rejects stops the plugin from loading.",
        [Fault::DumpBadSchema], 15, dump::schema, after ["dump/shape"]),
    check!("dump/config-fields", Must, Fast, Both, Query, "§2, §4.3",
        "The config record declares every field the plugin reads, with the type it reads (the project's fixture plugins), and no field Kong overwrites in every config it sends (route_id, service_id, consumer_id, plugin_instance_name, __plugin_id, __ws_id, __key__, __seq__).",
        "the fixture's fields with their types; no field named like a key Kong adds",
        "Kong validates every plugin config against the dump's schema: a field the schema lacks cannot be configured (\"unknown field\"), a wrong type stores values the plugin cannot read, and a field named like a key Kong adds is overwritten in every config Kong sends.",
        [Fault::DumpDropsField], 15, dump::config_fields, after ["dump/shape"]),
    check!("dump/schema-name", Should, Fast, Both, Query, "§2",
        "Schema.name equals the entry's Name.",
        "Schema.name is the plugin's Name",
        "Kong registers the config schema under Name but also caches every schema by its own name: another name can replace another plugin's schema, or a core entity's (routes, services, ...), which breaks the foreign keys to it.",
        [Fault::DumpSchemaName], 15, dump::schema_name, after ["dump/shape"]),
    check!("dump/first-plugin", Must, Fast, Both, Query, "§2, §10.5",
        "Kong 3.9 registers only the first entry of a dump: the plugin served must be that entry (other entries are reported).",
        "the plugin asked for is the first entry",
        "Kong 3.9 registers only the first entry of a dump: a plugin that is not first does not exist for Kong.",
        [Fault::DumpPluginLast], 15, dump::first_plugin, after ["dump/shape"]),
    check!("dump/standalone", Must, Fast, Both, Query, "§2, §3",
        "Dumping needs no socket and no prefix directory, does not create the socket file and does not read stdin (Kong's io.popen leaves the worker's stdin open); other files left behind are noted at info level.",
        "with stdin open and an empty working directory, the dump is printed and the socket path stays free",
        "Kong runs the query command with its own stdin open: a dump that reads stdin blocks Kong's start, and one that creates the socket file leaves the real server a file in its way.",
        [Fault::DumpReadsStdin], 20, dump::standalone, after ["dump/exits-in-time"]),
    // --------------------------------------------------------------------------------- lifecycle
    check!("lifecycle/start-instance", Must, Fast, Both, Server(Any), "§4.3, §5.2",
        "StartInstance accepts Kong's real config JSON: schema defaults, nulls, route/service ids, the instance name, __plugin_id, __ws_id, __key__, __seq__, escaped slashes.",
        "an instance id",
        "Kong raises (HTTP 500) when StartInstance fails: a server that rejects Kong's real config fails every request of the plugin.",
        [Fault::StrictConfig], 15, lifecycle::start_instance, after []),
    check!("lifecycle/first-event", Must, Fast, Both, Server(Any), "§4.4, §5.3",
        "An event runs to the end Kong waits for: MsgPack an answer with Data \"ret\" (or a terminal callback); ProtoBuf the empty frame, then the RpcReturn echoing the sequence.",
        "the event ends as Kong waits for it",
        "Kong waits for that end in every request: without it every request of the plugin hangs until Kong's 60 s socket timeout and fails (HTTP 500). Every check that runs an event is blocked by this one.",
        [Fault::NoEndFrame], 15, lifecycle::first_event, after ["lifecycle/start-instance"]),
    check!("lifecycle/distinct-instances", Must, Fast, Both, Server(Any), "§4.6",
        "Distinct plugin entities get distinct instance ids, each keeping its own config.",
        "two different ids; each instance's event uses its own config",
        "Kong keeps one instance per plugin entity: one id for two entities runs one route's plugin with another route's config.",
        [Fault::OneInstance], 15, lifecycle::distinct_instances, after ["lifecycle/first-event"]),
    check!("lifecycle/config-change", Must, Fast, Both, Server(Any), "§4.6, §10.8",
        "A config change (StartInstance(new) then CloseInstance(old)) takes effect.",
        "the new instance serves with the new config right after the old one is closed",
        "Kong applies every config change as StartInstance(new), CloseInstance(old): a new instance that does not serve breaks the plugin at the change.",
        [Fault::CloseAll], 15, lifecycle::config_change, after ["lifecycle/first-event"]),
    check!("lifecycle/unknown-instance", Must, Fast, Both, Server(Any), "§4.6, §5.2",
        "An unknown instance id is reported the way Kong recovers from: MsgPack an error containing \"no plugin instance\", ProtoBuf a closed connection; the server keeps serving.",
        "MsgPack: error with \"no plugin instance\"; ProtoBuf: connection closed without a reply; then a new instance serves",
        "Kong re-creates instances only on \"no plugin instance\" (MsgPack) or a closed connection (ProtoBuf): any other answer to a stale id fails the plugin's requests for good.",
        [Fault::WrongErrorText], 15, lifecycle::unknown_instance, after ["lifecycle/first-event"]),
    check!("lifecycle/close-keeps-others", Must, Fast, Both, Server(Any), "§4.3, §4.6",
        "Closing one instance leaves the others working.",
        "after CloseInstance(a), instance b serves with its own config",
        "Kong closes an instance on every config change of its entity: a server that closes the others too loses their state and makes every worker reset and re-create them.",
        [Fault::CloseAll], 15, lifecycle::close_keeps_others, after ["lifecycle/first-event"]),
    check!("lifecycle/get-status", Info, Fast, Both, Server(Any), "§4.3, §5.2",
        "After StartInstance the server's status lists the instance (MsgPack plugin.GetStatus, ProtoBuf cmd_get_instance_status).",
        "the new instance is listed with its id and plugin name",
        "Nothing in Kong: Kong never calls GetStatus or cmd_get_instance_status; tools that inspect a server do.",
        [Fault::StatusEmpty], 15, lifecycle::get_status, after ["lifecycle/start-instance"]),
    check!("lifecycle/idle-instances", Must, Slow, Both, Server(Any), "§4.6, §7",
        "Instances stay usable while idle for longer than Kong's 60 s keepalive, also after another instance was closed (Kong never re-announces them).",
        "after the idle time, events on the old instances work",
        "Kong never re-announces an instance it holds: one the server forgot loses its state and makes every worker reset and re-create the plugin's instances.",
        [Fault::ExpireIdle], 0, lifecycle::idle_instances, after ["lifecycle/first-event"]),
    check!("lifecycle/close-after-idle", Must, Slow, Both, Server(Any), "§4.6, §10.8",
        "Closing an instance (Kong does on every config change, at any age) leaves the other instances working, also those idle for longer than 60 s.",
        "after the idle time and a CloseInstance of another instance, the idle instance serves with its own config",
        "Kong closes instances on every config change, at any age: a server that sweeps old instances then makes every worker reset and re-create all instances of the plugin, losing their state.",
        [Fault::ExpireOnClose], 0, lifecycle::close_after_idle, after ["lifecycle/first-event"]),
    // ------------------------------------------------------------------------------------- event
    check!("event/phases", Must, Fast, Both, Server(Any), "§6",
        "Every phase the dump declares can be driven (Kong calls the server for each one).",
        "each declared phase runs to \"ret\" or to a terminal exit",
        "Kong calls the server for every phase the dump declares: a phase the server cannot run fails that phase of every request.",
        [Fault::DumpExtraPhase], 15, event::phases, after ["lifecycle/first-event"]),
    check!("event/callbacks-well-formed", Must, Fast, Both, Server(Any), "§4.4, §5.3, §5.4",
        "Callbacks name PDK methods Kong can find (MsgPack: dotted lower-case kong.* names; ProtoBuf: the methods of Kong's PDK table). Args in any shape Kong reads (an array; a bare value or a map, noted at info level).",
        "known method names",
        "Kong calls the PDK method the server names: a name Kong cannot find answers nil (MsgPack; the plugin's effect is lost) or fails the request (ProtoBuf, HTTP 500).",
        [Fault::BadCallback], 15, event::callbacks_well_formed, after ["lifecycle/first-event"]),
    check!("event/known-methods", Must, Fast, Both, Server(Any), "§4.4, §4.5, §5.4",
        "Callbacks name PDK functions the chosen Kong release has (--kong-version; kong_pdk.rs lists them per release from Kong's source).",
        "every callback resolves to a PDK function of that release",
        "Kong resolves the name in its PDK: a function the release lacks answers nil over MsgPack (\"could not find pdk method\"; the plugin's effect is lost) and fails the request over ProtoBuf (HTTP 500).",
        [Fault::MisspeltMethod], 15, event::known_methods, after ["lifecycle/first-event"]),
    check!("event/step-variants", Must, Fast, MsgPack, Server(Any), "§4.3, §4.4",
        "Every Step method Kong 3.x sends is accepted (Step, StepMultiMap, StepCredential, StepConsumer, StepRoute, StepService, StepMemoryStats).",
        "the event continues after each variant",
        "Kong answers these PDK calls with these Step methods: a server that refuses one fails every request that calls it.",
        [Fault::RejectStepVariants], 15, event::step_variants, after ["lifecycle/first-event"]),
    check!("event/nil-answer", Must, Fast, Both, Server(Any), "§4.4, §5.3, §10.4",
        "A nil PDK result is accepted: MsgPack a Step without Data (also how Kong 3.x delivers soft errors), ProtoBuf an empty frame.",
        "the event continues to its end",
        "Kong answers every PDK call that returns nothing (set_header, log, a missing header) with nil: a server that refuses it fails those requests.",
        [Fault::NilNeedsData], 15, event::nil_answer, after ["lifecycle/first-event"]),
    check!("event/steps-on-other-connections", Must, Fast, MsgPack, Server(Any), "§4.1, §10.1",
        "The Steps of one event may arrive on other connections than its HandleEvent (Kong takes any pooled connection per call).",
        "the same calls and end as on one connection",
        "Kong takes any pooled connection for each Step: a server that binds events to connections fails requests under concurrency.",
        [Fault::BindEvents], 15, event::steps_on_other_connections, after ["lifecycle/first-event"]),
    check!("event/concurrent", Must, Fast, Both, Server(Fixture("hello")), "§4.1, §6",
        "Many events in flight on many connections do not cross-talk: each gets and echoes its own values.",
        "32 concurrent events each set x-hello from their own config and host",
        "Kong runs many requests at once on many connections: cross-talk gives one request another's headers or config.",
        [Fault::CrossTalk], 20, event::concurrent, after ["lifecycle/first-event"]),
    check!("event/exit-terminal", Must, Fast, Both, Server(Fixture("exit")), "§4.4, §5.3, §10.7",
        "kong.response.exit is terminal: Kong never answers it, and the server keeps serving.",
        "three exit events in a row, each ending with the exit callback",
        "Kong never answers kong.response.exit: a server that waits for the answer stops serving.",
        [Fault::ExitBlocks], 15, event::exit_terminal, after ["lifecycle/first-event"]),
    check!("event/pb-sequence", Must, Fast, ProtoBuf, Server(Any), "§5.2, §5.3",
        "RpcReturn echoes the call's int64 sequence (Kong asserts it), and an event ends with an empty frame then RpcReturn.",
        "sequences 2, 2^40+3 and 2^33+7 echoed exactly",
        "Kong asserts that RpcReturn echoes the call's int64 sequence and waits for the empty frame before it: otherwise every request fails (HTTP 500) or hangs.",
        [Fault::BadSequence], 15, event::pb_sequence, after ["lifecycle/first-event"]),
    check!("event/undeclared-phase", Should, Fast, Both, Server(Any), "§6",
        "An event for a phase the plugin did not declare is refused (MsgPack an error, ProtoBuf a closed connection) or ended at once, and the server keeps serving.",
        "an error, a closed connection or an empty event, promptly; then a new event is served",
        "Kong calls only the phases the dump declares, so only robustness is at stake (a Kong still holding an older dump after the server was upgraded).",
        [Fault::UndeclaredPhaseHangs], 15, event::undeclared_phase, after ["lifecycle/first-event"]),
    check!("event/head-of-line", Must, Fast, Both, Server(Any), "§4.1, §6",
        "While one event waits for a slow PDK answer, StartInstance, other events and CloseInstance on other connections are served.",
        "all three complete before the slow event's answer is sent",
        "Kong's PDK answers can be slow (a worker busy, a PDK call doing I/O): a server that serves one event at a time makes every request wait for the slowest one, across all workers.",
        [Fault::SerialEvents], 20, event::head_of_line, after ["lifecycle/first-event"]),
    // ----------------------------------------------------------------------------------- process
    check!("process/socket-in-time", Must, Fast, Both, Manual(Any), "§3, §4.7",
        "The server creates its socket at the configured path soon after start (Kong has no readiness probe since 3.5: early requests fail).",
        "the socket accepts connections within 10 s",
        "Kong (3.5+) has no readiness probe: every request until the socket exists fails.",
        [Fault::NoSocket], 20, process::socket_in_time, after []),
    check!("process/stale-socket", Must, Fast, Both, Manual(Any), "§3",
        "The server starts over a stale socket file left by a crashed predecessor (Kong respawns it at the same path).",
        "the server replaces the file and serves",
        "Kong respawns a crashed server at the same path: a server that refuses the leftover socket file never comes back, and every request of its plugins fails.",
        [Fault::RefuseStaleSocket], 20, process::stale_socket_check, after ["lifecycle/first-event"]),
    check!("process/sigterm", Must, Fast, Both, Manual(Any), "§3",
        "The server exits on SIGTERM: Kong sends SIGTERM on shutdown and never SIGKILL.",
        "the process exits within 5 s of SIGTERM",
        "Kong stops servers with SIGTERM only: a server that ignores it keeps running after Kong stops, and a restarted Kong finds the old server on its socket.",
        [Fault::IgnoreSigterm], 20, process::sigterm, after []),
    check!("process/restart", Must, Fast, Both, Manual(Any), "§3, §4.6, §5.2",
        "After a crash the respawned server serves again, and Kong's cached instance ids make it re-create instances (\"no plugin instance\" / a closed connection).",
        "SIGKILL, restart over the leftover socket, then Kong's event with the old instance id recovers with the same calls",
        "Kong keeps its instance ids across a server crash and re-creates instances only when told (\"no plugin instance\", a closed connection): otherwise every request of the plugin fails after a restart.",
        [Fault::RefuseStaleSocket, Fault::WrongErrorText], 30, process::restart, after ["lifecycle/first-event"]),
    check!("process/restart-ids", Must, Fast, Both, Manual(Any), "§3, §4.6",
        "Instance ids handed out after a restart are not ids handed out before it (Kong's workers still hold those).",
        "no id of before the restart is handed out again for another config",
        "Kong's workers keep the instance ids of before a server restart until the server refuses them; an id handed out again silently runs another config's (or another plugin's) instance for those requests.",
        [Fault::IdsFromZero], 30, process::restart_ids, after ["lifecycle/start-instance"]),
    check!("process/orphan", Should, Fast, Both, Manual(Any), "§3",
        "The server exits when its parent (Kong's process) dies without stopping it.",
        "the server exits within 5 s of its parent's death",
        "Kong's crash (or a SIGKILL) leaves a server that never exits: a process and its memory per crash, holding the socket path the respawned server needs.",
        [Fault::OutliveParent], 30, process::orphan, after ["process/socket-in-time"]),
    // --------------------------------------------------------------------------------- transport
    check!("transport/byte-at-a-time", Should, Fast, Both, Server(Any), "§4.1, §5.1",
        "A request written one byte per write is understood (a stream has no message boundaries).",
        "StartInstance and HandleEvent answered normally",
        "Kong writes each request in one send, so only robustness is at stake: Kong's own split reads (large messages) are transport/large-frame's.",
        [Fault::CrashOnSplit], 20, transport::byte_at_a_time, after ["lifecycle/first-event"]),
    check!("transport/coalesced-requests", Should, Fast, Both, Server(Any), "§4.1, §5.1",
        "Two requests arriving in one read are both answered (Kong never pipelines, but a stream read may return any amount).",
        "both answered in order; the server stays up",
        "Kong never pipelines requests on a connection, so only robustness is at stake.",
        [Fault::CrashOnCoalesced], 15, transport::coalesced_requests, after ["lifecycle/first-event"]),
    check!("transport/large-frame", Must, Fast, Both, Server(Any), "§4.2, §5.1",
        "A 1 MiB message (a large config) is accepted in both directions.",
        "StartInstance with a 1 MiB config, and its event",
        "Kong sends configs of any size in one message: a server that drops large ones cannot run plugins configured with them.",
        [Fault::SmallFrames], 20, transport::large_frame, after ["lifecycle/first-event"]),
    check!("transport/garbage", Should, Fast, Both, Server(Any), "§4.1, §5.1",
        "Garbage bytes on one connection may drop that connection but must not crash the server.",
        "the server keeps serving other connections",
        "Kong never sends undecodable bytes, so only robustness is at stake (a server that dies on them takes every plugin down, but only on traffic that is not Kong's).",
        [Fault::CrashOnGarbage], 15, transport::garbage, after ["lifecycle/first-event"]),
    check!("transport/wrong-shape", Should, Fast, Both, Server(Any), "§4.1, §5.2",
        "Well-formed messages of the wrong shape may drop that connection but must not crash the server.",
        "the server keeps serving other connections",
        "Kong never sends misshapen messages, so only robustness is at stake.",
        [Fault::CrashOnGarbage], 20, transport::wrong_shape, after ["lifecycle/first-event"]),
    check!("transport/truncated-frame", Should, Fast, Both, Server(Any), "§4.7, §5.1",
        "Half a request followed by a close must not crash the server.",
        "the server keeps serving other connections",
        "Kong sends half a request only when a worker dies mid-write, so only robustness is at stake.",
        [Fault::CrashOnGarbage], 15, transport::truncated_frame, after ["lifecycle/first-event"]),
    check!("transport/huge-length", Should, Fast, ProtoBuf, Server(Any), "§5.1",
        "A frame length prefix of 2^31 or more is refused (the connection closed) without reserving that memory, and the server keeps serving.",
        "the connection is closed, the server's address space does not grow by the declared length, and a new event is served",
        "Kong never sends a frame near 2 GiB, so only robustness is at stake: a server that trusts the prefix reserves gigabytes (or dies) on one bad frame.",
        [Fault::TrustLength], 15, transport::huge_length, after ["lifecycle/first-event"]),
    check!("transport/vanishing-client", Must, Fast, Both, Server(Any), "§4.4, §5.6",
        "A client that vanishes in the middle of an event (a Kong worker killed, a timeout) must not crash the server.",
        "the server keeps serving other connections",
        "Kong leaves events mid-way in its own traffic (kong.response.exit over ProtoBuf closes the connection at the request's end; read timeouts): a server that crashes then takes every plugin down.",
        [Fault::CrashOnVanish], 15, transport::vanishing_client, after ["lifecycle/first-event"]),
    check!("transport/many-connections", Must, Fast, Both, Server(Any), "§4.1, §7",
        "256 connections at once (Kong's lua_socket_pool_size per worker) are all served.",
        "256 concurrent events, one per connection, all complete",
        "Kong holds up to lua_socket_pool_size (256) connections per worker: a server that serves fewer stalls or fails requests under load.",
        [Fault::ConnLimit], 30, transport::many_connections, after ["lifecycle/first-event"]),
    check!("transport/idle-connection", Should, Fast, Both, Server(Any), "§4.1, §7",
        "An idle pooled connection can be used again later (Kong keeps idle connections up to 60 s; a request on one the server closed fails).",
        "the same connection serves after the idle time",
        "Kong reuses pooled connections idle for up to 60 s; nginx drops a pooled connection the server closed, so Kong pays only on the rare race.",
        [Fault::IdleClose], 15, transport::idle_connection, after ["lifecycle/first-event"]),
    // --------------------------------------------------------------------------------------- pdk
    check!("pdk/raise-before", Must, Fast, Both, Server(Fixture("faults")), "§4.7, §5.6",
        "A handler that raises before its first PDK call neither hangs its event or the server nor is reported as success.",
        "MsgPack: an error response; ProtoBuf: connection closed; then later events are served",
        "A handler exception on Kong's own traffic must end that request only: a hang holds it (and, in some kits, every later one) for 60 s, a crash takes every plugin of the server down, and \"ret\" reports a failed plugin (an auth check) as a success.",
        [Fault::RaiseHangs, Fault::RaiseIsSuccess], 20, pdk::raise_before, after ["lifecycle/first-event"]),
    check!("pdk/raise-after", Must, Fast, Both, Server(Fixture("faults")), "§4.7, §5.6",
        "A handler that raises after a PDK call neither hangs its event or the server nor is reported as success.",
        "MsgPack: an error response; ProtoBuf: connection closed; then later events are served",
        "As pdk/raise-before, after a PDK call: the request must fail, not hang, crash the server or pass as a success.",
        [Fault::RaiseHangs, Fault::RaiseIsSuccess], 20, pdk::raise_after, after ["lifecycle/first-event"]),
    check!("pdk/strings-round-trip", Must, Fast, Both, Server(Fixture("hello")), "§4.2, §5.4",
        "Non-ASCII UTF-8, quotes and escaped slashes survive the trip into the plugin and back (config and PDK results).",
        "x-hello equals the message and host byte for byte",
        "Kong passes header values and config strings byte for byte: a kit that mangles them makes the plugin act on other values.",
        [Fault::MangleStrings], 15, pdk::strings_round_trip, after ["lifecycle/first-event"]),
    check!("pdk/nil-round-trip", Must, Fast, MsgPack, Server(Fixture("hello")), "§4.2, §10.10",
        "A nil PDK result reaches the plugin as nil (ProtoBuf cannot tell nil from \"\", so MsgPack only).",
        "x-hello is \"hi \" when the host header is missing",
        "Kong answers a missing value with nil: a kit that turns it into text makes the plugin act on a value that is not there.",
        [Fault::NilAsText], 15, pdk::nil_round_trip, after ["lifecycle/first-event"]),
    check!("pdk/exit-args", Must, Fast, Both, Server(Fixture("exit")), "§4.4, §5.4",
        "kong.response.exit carries the integer status, the body bytes and the headers as the plugin gave them.",
        "status 418, the UTF-8 body, x-exit \"1\"",
        "kong.response.exit sends the status, body and headers the plugin gave: a kit that mangles them sends the client another response.",
        [Fault::MangleStrings], 15, pdk::exit_args, after ["lifecycle/first-event"]),
    // --------------------------------------------------------------------------------- resources
    check!("resources/plain", Must, Slow, Both, Server(Fixture("hello")), "docs/conformance.md",
        "Memory, descriptors and threads stay bounded over 20 000 ordinary events (memory as a slope with a confidence interval).",
        "an RSS slope whose 95% interval reaches below 1 MiB per 10k events; at most 16 more descriptors and threads",
        "Kong's servers run for months: memory that grows with ordinary events ends in the server being killed, with every plugin it hosts.",
        [Fault::LeakPerEvent], 60, resources::plain, after ["lifecycle/first-event"]),
    check!("resources/zero-call", Must, Slow, Both, Server(Fixture("bench")), "docs/conformance.md",
        "Memory, descriptors and threads stay bounded over 20 000 events without PDK calls (memory as a slope with a confidence interval).",
        "an RSS slope whose 95% interval reaches below 1 MiB per 10k events; at most 16 more descriptors and threads",
        "As resources/plain, for events without PDK calls (the cheapest and most frequent).",
        [Fault::LeakPerEvent, Fault::LeakEntry], 60, resources::zero_call, after ["lifecycle/first-event"]),
    check!("resources/exit-first", Must, Slow, Both, Server(Fixture("exit")), "§4.4",
        "Memory, descriptors and threads stay bounded over 20 000 events that end with kong.response.exit, never answered (memory as a slope with a confidence interval).",
        "an RSS slope whose 95% interval reaches below 1 MiB per 10k events; at most 16 more descriptors and threads",
        "As resources/plain, for events ended by kong.response.exit, which Kong never answers.",
        [Fault::LeakExit, Fault::LeakEntry], 60, resources::exit_first, after ["lifecycle/first-event"]),
    check!("resources/abandoned", Must, Slow, Both, Server(Fixture("hello")), "§4.7",
        "Memory, descriptors and threads stay bounded over 20 000 events abandoned mid-way by their client (memory as a slope with a confidence interval).",
        "an RSS slope whose 95% interval reaches below 1 MiB per 10k events; at most 16 more descriptors and threads",
        "As resources/plain, for events whose client went away mid-way (Kong's exits over ProtoBuf, timeouts).",
        [Fault::LeakAbandoned], 60, resources::abandoned, after ["lifecycle/first-event"]),
];

/// Every check, grouped, in run order.
pub fn catalogue() -> &'static [Check] {
    &CATALOGUE
}

/// The check with this id.
pub fn find(id: &str) -> Option<&'static Check> {
    CATALOGUE.iter().find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ids_are_unique_grouped_and_well_formed() {
        let mut seen = BTreeSet::new();
        let mut groups: Vec<&str> = Vec::new();
        for c in catalogue() {
            assert!(seen.insert(c.id), "duplicate id {}", c.id);
            let (g, n) = c.id.split_once('/').expect("group/name");
            assert!(!n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
            if groups.last() != Some(&g) {
                assert!(!groups.contains(&g), "group {g} is not contiguous");
                groups.push(g);
            }
            assert!(
                c.requirement.ends_with('.') || c.requirement.ends_with(')'),
                "{}",
                c.id
            );
        }
        assert_eq!(
            groups,
            [
                "dump",
                "lifecycle",
                "event",
                "process",
                "transport",
                "pdk",
                "resources"
            ]
        );
    }

    /// A check builds only on checks that exist and run before it, so the first failure of a
    /// report is the one the others are blocked by.
    #[test]
    fn prerequisites_exist_and_come_first() {
        for (i, c) in catalogue().iter().enumerate() {
            for p in c.prerequisites() {
                let j = catalogue()
                    .iter()
                    .position(|x| x.id == p)
                    .unwrap_or_else(|| panic!("{}: no check {p}", c.id));
                assert!(j < i, "{} builds on {p}, which runs after it", c.id);
            }
        }
    }

    /// Every check says what it protects in Kong; `info` checks say why Kong does not care.
    #[test]
    fn every_check_names_what_it_protects() {
        for c in catalogue() {
            assert!(c.protects.len() > 20, "{}", c.id);
            if c.level == Info {
                assert!(c.protects.starts_with("Nothing in Kong"), "{}", c.id);
            }
        }
    }

    /// Every check names at least one fault that breaks it (the proof tests run them all).
    #[test]
    fn every_check_is_proven_by_a_fault() {
        for c in catalogue() {
            assert!(!c.proven_by.is_empty(), "{} has no proving fault", c.id);
        }
    }

    /// Every fault proves at least one check (no fault switch without a purpose).
    #[test]
    fn every_fault_proves_a_check() {
        for f in Fault::ALL {
            assert!(
                catalogue().iter().any(|c| c.proven_by.contains(&f)),
                "fault {f} proves no check"
            );
        }
    }
}
