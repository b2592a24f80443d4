//! Legal variations of the reference server: switches like the faults, but for behaviours Kong's
//! host accepts although the official kits never show them. The conformance suite must pass
//! on each one (issue 17: no false alarms); `mock-kong reference-server --variation NAME`
//! (repeatable) switches one on, and a test runs the whole suite against each.
//!
//! | variation | what the server does | why Kong accepts it (docs/conformance.md) |
//! |---|---|---|
//! | `no-step-event-id` | MsgPack: Step answers without `EventId` | Kong reads the EventId of the HandleEvent answer only |
//! | `scalar-args` | MsgPack: a one-argument callback sends `Args` as the bare value | Kong passes a non-table `Args` as the single argument |
//! | `extra-notifications` | MsgPack: `[2, "serverPid", pid]` (its own pid) and `[2, "log", ...]` before every response | Kong dispatches notifications and reads on; it ignores unknown labels; the pid never changes |
//! | `start-id-only` | StartInstance answers only `{Id}` (ProtoBuf: `instance_status` with only `instance_id`) | Kong reads the id only |
//! | `unknown-fields` | extra keys in every answer map (ProtoBuf: unknown fields in every `RpcReturn`) | Kong reads the keys it knows (lua-protobuf skips unknown fields) |
//! | `wide-numbers` | MsgPack: every integer in its widest encoding (`int64`/`uint64`), msgids included | Lua has one number type |
//! | `bin-strings` | MsgPack: every string of an answer as `bin` (method names, arguments, `"ret"`, error texts, keys) | Kong decodes `bin` and `str` to the same Lua string |

use std::collections::BTreeSet;

use crate::Protocol;

/// One legal variation. See [`Variation::describe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variation {
    NoStepEventId,
    ScalarArgs,
    ExtraNotifications,
    StartIdOnly,
    UnknownFields,
    WideNumbers,
    BinStrings,
}

impl Variation {
    /// Every variation.
    pub const ALL: [Variation; 7] = [
        Variation::NoStepEventId,
        Variation::ScalarArgs,
        Variation::ExtraNotifications,
        Variation::StartIdOnly,
        Variation::UnknownFields,
        Variation::WideNumbers,
        Variation::BinStrings,
    ];

    /// The name used with `--variation`.
    pub fn name(self) -> &'static str {
        match self {
            Variation::NoStepEventId => "no-step-event-id",
            Variation::ScalarArgs => "scalar-args",
            Variation::ExtraNotifications => "extra-notifications",
            Variation::StartIdOnly => "start-id-only",
            Variation::UnknownFields => "unknown-fields",
            Variation::WideNumbers => "wide-numbers",
            Variation::BinStrings => "bin-strings",
        }
    }

    /// What the server does differently, and why Kong accepts it.
    pub fn describe(self) -> &'static str {
        match self {
            Variation::NoStepEventId => {
                "MsgPack: Step answers carry no EventId (Kong reads the EventId of the \
                 HandleEvent answer only)"
            }
            Variation::ScalarArgs => {
                "MsgPack: a callback with one non-table argument sends Args as the bare value \
                 (Kong passes a non-table Args as the single argument)"
            }
            Variation::ExtraNotifications => {
                "MsgPack: every response is preceded by [2, \"serverPid\", <own pid>] and \
                 [2, \"log\", ...] (Kong dispatches notifications, ignores unknown labels, and \
                 the pid never changes)"
            }
            Variation::StartIdOnly => {
                "StartInstance answers only {Id} (ProtoBuf: instance_status with only \
                 instance_id): Kong reads the id only"
            }
            Variation::UnknownFields => {
                "extra keys in every answer map (ProtoBuf: unknown fields in every RpcReturn): \
                 Kong reads the keys it knows"
            }
            Variation::WideNumbers => {
                "MsgPack: every integer in its widest encoding (int64, uint64 msgids): Lua has \
                 one number type"
            }
            Variation::BinStrings => {
                "MsgPack: every string of an answer as bin (method names, arguments, \"ret\", \
                 error texts, keys): Kong decodes bin and str to the same Lua string"
            }
        }
    }

    /// Whether the variation changes anything in `protocol` (the others are MsgPack only).
    pub fn applies(self, protocol: Protocol) -> bool {
        match self {
            Variation::StartIdOnly | Variation::UnknownFields => true,
            _ => protocol == Protocol::MsgPack,
        }
    }

    /// The variation with this `--variation` name.
    pub fn from_name(name: &str) -> Option<Variation> {
        Variation::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Every name, comma-separated (for error messages).
    pub fn names() -> String {
        Variation::ALL
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Variation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of variations switched on (empty: the kits' usual shapes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variations {
    set: BTreeSet<Variation>,
}

impl Variations {
    /// Parses `--variation` names; an unknown name is an error that lists the known ones.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Variations, String> {
        let mut set = BTreeSet::new();
        for n in names {
            let n = n.as_ref();
            set.insert(Variation::from_name(n).ok_or_else(|| {
                format!(
                    "unknown variation {n:?}; the reference server knows {}",
                    Variation::names()
                )
            })?);
        }
        Ok(Variations { set })
    }

    /// Whether `v` is switched on.
    pub fn has(&self, v: Variation) -> bool {
        self.set.contains(&v)
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for v in Variation::ALL {
            assert_eq!(Variation::from_name(v.name()), Some(v));
            assert!(!v.describe().is_empty());
            assert!(v.applies(Protocol::MsgPack));
        }
        let e = Variations::parse(&["nope"]).unwrap_err();
        assert!(e.contains("scalar-args"), "{e}");
        assert!(Variations::parse(&["bin-strings"])
            .unwrap()
            .has(Variation::BinStrings));
    }
}
