//! Deliberate misbehaviour of the reference server, one switch per rule of the conformance suite.
//!
//! `mock-kong conform` (see [`crate::conform`]) must be able to show that each of its checks
//! fails on a server that breaks the rule the check verifies. The reference server is correct by
//! default; `mock-kong reference-server --fault NAME` (repeatable) switches on one wrong
//! behaviour each, modelled on real bugs of the official servers where there is one (the JS
//! server exits when two requests arrive in one read, the Python server hangs every later event
//! after a handler raised, go-pdk's instance id truncation, ...).
//!
//! Every check of the catalogue names the faults that break it (`proven_by`); the conformance
//! tests run each check against the correct server (it passes) and against each of its faults
//! (it fails).
//!
//! Faults that affect the plugins themselves (how they render strings) are read from a
//! process-wide switch board ([`install`] / [`on`]), set once by [`super::serve`]: the reference
//! server runs one server per process, and the in-process test servers never set it.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::IdMap;

/// One deliberate misbehaviour. See [`Fault::describe`] for what each one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    // --- the query command (`--dump`) ---
    DumpHangs,
    DumpLogLine,
    DumpBareObject,
    DumpUnknownProtocol,
    DumpBadEntry,
    DumpBadSchema,
    DumpPluginLast,
    DumpReadsStdin,
    DumpExtraPhase,
    DumpDropsField,
    DumpSchemaName,
    // --- the process ---
    NoSocket,
    RefuseStaleSocket,
    IgnoreSigterm,
    IdsFromZero,
    OutliveParent,
    // --- instances ---
    StrictConfig,
    OneInstance,
    CloseAll,
    WrongErrorText,
    ExpireIdle,
    ExpireOnClose,
    StatusEmpty,
    // --- events ---
    NoEndFrame,
    BadCallback,
    MisspeltMethod,
    UndeclaredPhaseHangs,
    SerialEvents,
    RejectStepVariants,
    NilNeedsData,
    BindEvents,
    CrossTalk,
    ExitBlocks,
    BadSequence,
    // --- transport ---
    CrashOnSplit,
    CrashOnCoalesced,
    SmallFrames,
    CrashOnGarbage,
    CrashOnVanish,
    ConnLimit,
    IdleClose,
    TrustLength,
    // --- the plugins (PDK kit behaviour) ---
    RaiseHangs,
    RaiseIsSuccess,
    MangleStrings,
    NilAsText,
    // --- resources ---
    LeakPerEvent,
    LeakExit,
    LeakAbandoned,
    LeakEntry,
    // --- performance (the regression gates' A/B tests; no conformance rule) ---
    SlowPdk,
    VerySlowPdk,
    SplitWrites,
    ExtraCallback,
}

impl Fault {
    /// Faults that make the server slower or costlier, not wrong: the regression gates' A/B
    /// tests (`loadgen ab`, `loadgen gate`) use them. They prove no conformance check.
    /// `slow-pdk` and `very-slow-pdk` cost time (seen by the paired timing verdict);
    /// `split-writes` and `extra-callback` cost system calls and round trips (seen by the
    /// machine-independent counters).
    pub const PERFORMANCE: [Fault; 4] = [
        Fault::SlowPdk,
        Fault::VerySlowPdk,
        Fault::SplitWrites,
        Fault::ExtraCallback,
    ];

    /// Every conformance fault, in catalogue order.
    pub const ALL: [Fault; 50] = [
        Fault::DumpHangs,
        Fault::DumpLogLine,
        Fault::DumpBareObject,
        Fault::DumpUnknownProtocol,
        Fault::DumpBadEntry,
        Fault::DumpBadSchema,
        Fault::DumpPluginLast,
        Fault::DumpReadsStdin,
        Fault::DumpExtraPhase,
        Fault::DumpDropsField,
        Fault::DumpSchemaName,
        Fault::NoSocket,
        Fault::RefuseStaleSocket,
        Fault::IgnoreSigterm,
        Fault::IdsFromZero,
        Fault::OutliveParent,
        Fault::StrictConfig,
        Fault::OneInstance,
        Fault::CloseAll,
        Fault::WrongErrorText,
        Fault::ExpireIdle,
        Fault::ExpireOnClose,
        Fault::StatusEmpty,
        Fault::NoEndFrame,
        Fault::BadCallback,
        Fault::MisspeltMethod,
        Fault::UndeclaredPhaseHangs,
        Fault::SerialEvents,
        Fault::RejectStepVariants,
        Fault::NilNeedsData,
        Fault::BindEvents,
        Fault::CrossTalk,
        Fault::ExitBlocks,
        Fault::BadSequence,
        Fault::CrashOnSplit,
        Fault::CrashOnCoalesced,
        Fault::SmallFrames,
        Fault::CrashOnGarbage,
        Fault::CrashOnVanish,
        Fault::ConnLimit,
        Fault::IdleClose,
        Fault::TrustLength,
        Fault::RaiseHangs,
        Fault::RaiseIsSuccess,
        Fault::MangleStrings,
        Fault::NilAsText,
        Fault::LeakPerEvent,
        Fault::LeakExit,
        Fault::LeakAbandoned,
        Fault::LeakEntry,
    ];

    /// The name used with `--fault`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::DumpHangs => "dump-hangs",
            Fault::DumpLogLine => "dump-log-line",
            Fault::DumpBareObject => "dump-bare-object",
            Fault::DumpUnknownProtocol => "dump-unknown-protocol",
            Fault::DumpBadEntry => "dump-bad-entry",
            Fault::DumpBadSchema => "dump-bad-schema",
            Fault::DumpPluginLast => "dump-plugin-last",
            Fault::DumpReadsStdin => "dump-reads-stdin",
            Fault::DumpExtraPhase => "dump-extra-phase",
            Fault::DumpDropsField => "dump-drops-field",
            Fault::DumpSchemaName => "dump-schema-name",
            Fault::IdsFromZero => "ids-from-zero",
            Fault::OutliveParent => "outlive-parent",
            Fault::ExpireOnClose => "expire-on-close",
            Fault::StatusEmpty => "status-empty",
            Fault::NoEndFrame => "no-end-frame",
            Fault::MisspeltMethod => "misspelt-method",
            Fault::UndeclaredPhaseHangs => "undeclared-phase-hangs",
            Fault::SerialEvents => "serial-events",
            Fault::TrustLength => "trust-length",
            Fault::LeakEntry => "leak-entry",
            Fault::NoSocket => "no-socket",
            Fault::RefuseStaleSocket => "refuse-stale-socket",
            Fault::IgnoreSigterm => "ignore-sigterm",
            Fault::StrictConfig => "strict-config",
            Fault::OneInstance => "one-instance",
            Fault::CloseAll => "close-all",
            Fault::WrongErrorText => "wrong-error-text",
            Fault::ExpireIdle => "expire-idle",
            Fault::BadCallback => "bad-callback",
            Fault::RejectStepVariants => "reject-step-variants",
            Fault::NilNeedsData => "nil-needs-data",
            Fault::BindEvents => "bind-events",
            Fault::CrossTalk => "cross-talk",
            Fault::ExitBlocks => "exit-blocks",
            Fault::BadSequence => "bad-sequence",
            Fault::CrashOnSplit => "crash-on-split",
            Fault::CrashOnCoalesced => "crash-on-coalesced",
            Fault::SmallFrames => "small-frames",
            Fault::CrashOnGarbage => "crash-on-garbage",
            Fault::CrashOnVanish => "crash-on-vanish",
            Fault::ConnLimit => "conn-limit",
            Fault::IdleClose => "idle-close",
            Fault::RaiseHangs => "raise-hangs",
            Fault::RaiseIsSuccess => "raise-is-success",
            Fault::MangleStrings => "mangle-strings",
            Fault::NilAsText => "nil-as-text",
            Fault::LeakPerEvent => "leak-per-event",
            Fault::LeakExit => "leak-exit",
            Fault::LeakAbandoned => "leak-abandoned",
            Fault::SlowPdk => "slow-pdk",
            Fault::VerySlowPdk => "very-slow-pdk",
            Fault::SplitWrites => "split-writes",
            Fault::ExtraCallback => "extra-callback",
        }
    }

    /// What the server does wrong with this fault on.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::DumpHangs => "the query command never exits",
            Fault::DumpLogLine => "the query command prints a log line before the JSON dump",
            Fault::DumpBareObject => "the dump is the bare plugin object, not an array",
            Fault::DumpUnknownProtocol => "the dump names the protocol \"MsgPack:2\"",
            Fault::DumpBadEntry => "the dump's Version has four parts and Priority is 1.5",
            Fault::DumpBadSchema => "a schema default has the wrong type",
            Fault::DumpPluginLast => "the plugin asked for is listed last, not first",
            Fault::DumpReadsStdin => "the query command reads stdin to its end before printing",
            Fault::DumpExtraPhase => {
                "the dump lists a phase (rewrite) the plugin has no handler for"
            }
            Fault::DumpDropsField => {
                "the dump's schema leaves out the first config field the plugin reads"
            }
            Fault::DumpSchemaName => "the dump's Schema.name is not its Name (\"<name>-plugin\")",
            Fault::IdsFromZero => {
                "instance ids count from 0 in every process (ProtoBuf: __seq__ ignored), so a \
                 restarted server hands out the ids of before again"
            }
            Fault::OutliveParent => "the server keeps running when its parent process dies",
            Fault::ExpireOnClose => {
                "every CloseInstance also deletes the instances older than 2 s (a stand-in for \
                 a 60 s expiry sweep)"
            }
            Fault::StatusEmpty => {
                "GetStatus lists no instance (ProtoBuf: cmd_get_instance_status closes the \
                 connection)"
            }
            Fault::NoEndFrame => {
                "no event ends as Kong waits for: ProtoBuf sends the RpcReturn without the empty \
                 frame before it (as kong_rs 0.2.0 does), MsgPack never answers the event's last \
                 call"
            }
            Fault::MisspeltMethod => {
                "plugins call PDK methods with the last letter missing (kong.request.get_heade)"
            }
            Fault::UndeclaredPhaseHangs => {
                "an event for a phase the plugin does not declare is never answered"
            }
            Fault::SerialEvents => {
                "one event at a time: while an event waits for a PDK answer, every other request \
                 waits"
            }
            Fault::TrustLength => {
                "ProtoBuf: a frame's declared length is reserved before its bytes arrive, however \
                 large, and the server waits for them"
            }
            Fault::LeakEntry => {
                "every event that ends without a PDK answer (no call, or kong.response.exit) \
                 leaks one 512-byte entry"
            }
            Fault::NoSocket => "the server never creates its socket",
            Fault::RefuseStaleSocket => "the server refuses to start when a socket file exists",
            Fault::IgnoreSigterm => "the server ignores SIGTERM",
            Fault::StrictConfig => "StartInstance rejects config keys the schema does not list",
            Fault::OneInstance => "every StartInstance gets the same instance id",
            Fault::CloseAll => "CloseInstance closes every instance of the plugin",
            Fault::WrongErrorText => {
                "an unknown instance is reported without \"no plugin instance\" (MsgPack) or \
                 answered as a finished event (ProtoBuf)"
            }
            Fault::ExpireIdle => "instances unused for 2 s are forgotten",
            Fault::BadCallback => {
                "callbacks name PDK methods in camelCase (kong.request.getHeader)"
            }
            Fault::RejectStepVariants => "only plugin.Step is accepted, not its variants",
            Fault::NilNeedsData => "a Step without Data (or an empty reply frame) is an error",
            Fault::BindEvents => "Steps are only accepted on the connection of their HandleEvent",
            Fault::CrossTalk => "a PDK reply may be delivered to another event in flight",
            Fault::ExitBlocks => "after kong.response.exit no further event is answered",
            Fault::BadSequence => "RpcReturn.sequence is truncated to 32 bits",
            Fault::CrashOnSplit => "the process exits when a request is split across reads",
            Fault::CrashOnCoalesced => "the process exits when two requests arrive in one read",
            Fault::SmallFrames => "messages above 256 KiB drop the connection",
            Fault::CrashOnGarbage => "the process exits on undecodable or misshaped input",
            Fault::CrashOnVanish => {
                "the process exits when a client vanishes in the middle of an event"
            }
            Fault::ConnLimit => "at most 64 connections are served at a time",
            Fault::IdleClose => "connections idle for 1 s are closed",
            Fault::RaiseHangs => {
                "a handler that raises leaves its event, and every later one, unanswered"
            }
            Fault::RaiseIsSuccess => "a handler that raises is reported as finished (\"ret\")",
            Fault::MangleStrings => "plugins replace non-ASCII bytes of PDK strings with '?'",
            Fault::NilAsText => "plugins render a nil PDK result as the text \"nil\"",
            Fault::LeakPerEvent => "every event leaks 4 KiB",
            Fault::LeakExit => "every kong.response.exit leaks 4 KiB",
            Fault::LeakAbandoned => "every event left unfinished by its client leaks 4 KiB",
            Fault::SlowPdk => "the bench plugin spends 20 µs of CPU before each PDK call",
            Fault::VerySlowPdk => "the bench plugin spends 200 µs of CPU before each PDK call",
            Fault::SplitWrites => {
                "every frame the server sends is written in two write() calls instead of one"
            }
            Fault::ExtraCallback => {
                "the bench plugin makes one PDK call more per request than its config says"
            }
        }
    }

    /// The fault with this `--fault` name.
    pub fn from_name(name: &str) -> Option<Fault> {
        Fault::ALL
            .iter()
            .chain(&Fault::PERFORMANCE)
            .copied()
            .find(|f| f.name() == name)
    }

    /// Every fault name, comma-separated (for error messages).
    pub fn names() -> String {
        Fault::ALL
            .iter()
            .chain(&Fault::PERFORMANCE)
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The server's switch board: the faults switched on (empty: the correct server), and the legal
/// variations ([`super::variations`]) it shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    set: BTreeSet<Fault>,
    variations: super::Variations,
}

impl Faults {
    /// Parses `--fault` names; an unknown name is an error that lists the known ones.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Faults, String> {
        let mut set = BTreeSet::new();
        for n in names {
            let n = n.as_ref();
            let f = Fault::from_name(n).ok_or_else(|| {
                format!(
                    "unknown fault {n:?}; the reference server knows {}",
                    Fault::names()
                )
            })?;
            set.insert(f);
        }
        Ok(Faults {
            set,
            variations: super::Variations::default(),
        })
    }

    /// A set holding exactly these faults.
    pub fn of(faults: &[Fault]) -> Faults {
        Faults {
            set: faults.iter().copied().collect(),
            variations: super::Variations::default(),
        }
    }

    /// The same faults, with these legal variations.
    pub fn with_variations(mut self, variations: super::Variations) -> Faults {
        self.variations = variations;
        self
    }

    /// Whether the legal variation `v` is switched on.
    pub fn varies(&self, v: super::Variation) -> bool {
        self.variations.has(v)
    }

    /// Whether any legal variation is switched on.
    pub fn any_variation(&self) -> bool {
        !self.variations.is_empty()
    }

    /// Whether `f` is switched on.
    pub fn has(&self, f: Fault) -> bool {
        self.set.contains(&f)
    }

    /// Whether no fault is switched on.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

static ACTIVE: OnceLock<Faults> = OnceLock::new();

/// Installs the process-wide faults (first call wins; [`super::serve`] calls it once).
pub fn install(faults: &Faults) {
    let _ = ACTIVE.set(faults.clone());
}

/// Whether `f` is switched on process-wide (plugin-level faults).
pub fn on(f: Fault) -> bool {
    ACTIVE.get().is_some_and(|a| a.has(f))
}

/// Exits the process the way a crashing server would (status 3), saying why on stderr.
pub fn crash(f: Fault, why: &str) -> ! {
    eprintln!("reference server: fault {f}: exiting: {why}");
    std::process::exit(3)
}

/// The CPU time `slow-pdk` adds before each PDK call of the bench plugin.
pub const SLOW_PDK_DELAY: Duration = Duration::from_micros(20);

/// The CPU time `very-slow-pdk` adds (an unambiguous regression for tests).
pub const VERY_SLOW_PDK_DELAY: Duration = Duration::from_micros(200);

/// The delay the performance faults switched on add before each PDK call of the bench plugin.
pub fn pdk_delay() -> Option<Duration> {
    if on(Fault::VerySlowPdk) {
        Some(VERY_SLOW_PDK_DELAY)
    } else if on(Fault::SlowPdk) {
        Some(SLOW_PDK_DELAY)
    } else {
        None
    }
}

/// Spins for `d` (a timer would sleep a millisecond or more; this is CPU work, as a slower
/// plugin or PDK kit would do).
pub fn busy_wait(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// How much memory each leak fault keeps (`leak-entry`: [`ENTRY_BYTES`]).
pub const LEAK_BYTES: usize = 4 * 1024;

/// What `leak-entry` keeps per event: one small map entry's worth.
pub const ENTRY_BYTES: usize = 512;

fn leaked() -> &'static Mutex<Vec<Vec<u8>>> {
    static LEAKED: OnceLock<Mutex<Vec<Vec<u8>>>> = OnceLock::new();
    LEAKED.get_or_init(Default::default)
}

/// Keeps [`LEAK_BYTES`] of touched memory forever.
pub fn leak() {
    super::lock(leaked()).push(vec![0x5A; LEAK_BYTES]);
}

/// `leak-entry`: keeps [`ENTRY_BYTES`] forever.
pub fn leak_entry() {
    super::lock(leaked()).push(vec![0x5A; ENTRY_BYTES]);
}

fn ballast() -> &'static Mutex<IdMap<u64, Vec<u8>>> {
    static BALLAST: OnceLock<Mutex<IdMap<u64, Vec<u8>>>> = OnceLock::new();
    BALLAST.get_or_init(Default::default)
}

/// `leak-abandoned`: an open event carries [`LEAK_BYTES`] until [`release`] (never, if its
/// client vanishes).
pub fn hold(event: u64) {
    super::lock(ballast()).insert(event, vec![0x5A; LEAK_BYTES]);
}

/// Frees what [`hold`] kept for `event`.
pub fn release(event: u64) {
    super::lock(ballast()).remove(&event);
}

/// How long an unused instance lives with `expire-idle`.
pub const EXPIRE_AFTER: Duration = Duration::from_secs(2);

fn last_used() -> &'static Mutex<IdMap<i64, Instant>> {
    static USED: OnceLock<Mutex<IdMap<i64, Instant>>> = OnceLock::new();
    USED.get_or_init(Default::default)
}

/// `expire-idle`: records a use of instance `id`; returns whether it had already expired.
pub fn touch_expired(id: i64) -> bool {
    let now = Instant::now();
    let mut used = super::lock(last_used());
    let expired = used
        .get(&id)
        .is_some_and(|t| now.duration_since(*t) > EXPIRE_AFTER);
    used.insert(id, now);
    expired
}

/// `strict-config`: the first config key that is neither a schema field of `plugin` nor absent.
pub fn unknown_config_key(
    fields: &serde_json::Value,
    config: &serde_json::Value,
) -> Option<String> {
    let known: Vec<String> = fields
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_object().and_then(|o| o.keys().next().cloned()))
                .collect()
        })
        .unwrap_or_default();
    config
        .as_object()?
        .keys()
        .find(|k| !known.iter().any(|n| n == *k))
        .cloned()
}

/// Writes `bytes` in one `write()` as a correct server does, or, with `split-writes` in
/// `faults`, in two (the first half, then the rest): the same bytes at twice the system calls.
pub async fn write_out(
    stream: &mut tokio::net::UnixStream,
    bytes: &[u8],
    faults: &Faults,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if faults.has(Fault::SplitWrites) && bytes.len() > 1 {
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        stream.write_all(first).await?;
        stream.write_all(rest).await
    } else {
        stream.write_all(bytes).await
    }
}

/// PDK calls the `extra-callback` fault adds to each event of the bench plugin.
pub fn extra_calls() -> u64 {
    u64::from(on(Fault::ExtraCallback))
}

/// The name a plugin calls `method` by: camelCase with `bad-callback`, the last letter missing
/// with `misspelt-method`, else as it is.
pub fn method_name<'a>(method: &'a str, faults: &Faults) -> std::borrow::Cow<'a, str> {
    if faults.has(Fault::BadCallback) {
        camel_case(method).into()
    } else if faults.has(Fault::MisspeltMethod) {
        method[..method.len().saturating_sub(1)].into()
    } else {
        method.into()
    }
}

/// The first instance id of a server process: a counter from 0 with `ids-from-zero` (as the
/// Python and JS kits count), otherwise a base drawn per process, so a restarted server does
/// not hand out the ids Kong still holds from before the restart. Positive and below 2^30, so
/// any id stays a valid ProtoBuf int32.
pub fn first_instance_id(faults: &Faults) -> i64 {
    if faults.has(Fault::IdsFromZero) {
        return 0;
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    // 2^20 .. 2^30: room for a million instances before the int32 limit.
    (1 << 20) + (h.finish() % (1 << 29)) as i64
}

/// `bad-callback`: a dotted snake_case PDK name in camelCase (`kong.request.getHeader`).
pub fn camel_case(method: &str) -> String {
    let mut out = String::with_capacity(method.len());
    let mut upper = false;
    for c in method.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = BTreeSet::new();
        for f in Fault::ALL.into_iter().chain(Fault::PERFORMANCE) {
            assert_eq!(Fault::from_name(f.name()), Some(f));
            assert!(seen.insert(f.name()), "duplicate {f}");
            assert!(!f.describe().is_empty());
        }
        let e = Faults::parse(&["nope"]).unwrap_err();
        assert!(e.contains("nope") && e.contains("dump-hangs"), "{e}");
        let fs = Faults::parse(&["cross-talk", "idle-close"]).unwrap();
        assert!(fs.has(Fault::CrossTalk) && fs.has(Fault::IdleClose));
        assert!(!fs.has(Fault::ConnLimit));
    }

    #[test]
    fn strict_config_finds_kong_keys() {
        let fields = serde_json::json!([{"message": {"type": "string"}}]);
        let ok = serde_json::json!({"message": "x"});
        assert_eq!(unknown_config_key(&fields, &ok), None);
        let kong = serde_json::json!({"message": "x", "__seq__": 3});
        assert_eq!(
            unknown_config_key(&fields, &kong).as_deref(),
            Some("__seq__")
        );
    }

    #[test]
    fn camel_case_names() {
        assert_eq!(
            camel_case("kong.request.get_header"),
            "kong.request.getHeader"
        );
        assert_eq!(camel_case("kong.log.err"), "kong.log.err");
    }
}
