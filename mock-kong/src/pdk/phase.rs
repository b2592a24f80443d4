//! Kong's PDK phases (`kong/pdk/private/phases.lua`) and the phase sets each PDK function is
//! allowed in.
//!
//! The wire carries phases as event names (strings a dump declares, possibly ones Kong does not
//! know); inside the emulated PDK they are a [`Phase`], and a function's allowed phases a
//! [`Phases`] set. A call in a phase outside the set raises Kong's text ([`phase_error`]).

use std::fmt;

/// One of Kong's PDK phases, declared in the order of their bit values (phase-check errors
/// list the accepted phases in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    InitWorker,
    Certificate,
    ClientHello,
    Rewrite,
    Access,
    Balancer,
    Response,
    ClusterListener,
    HeaderFilter,
    BodyFilter,
    Log,
    Preread,
    Error,
    AdminApi,
}

impl Phase {
    /// Every phase, in bit order.
    pub const ALL: [Phase; 14] = [
        Phase::InitWorker,
        Phase::Certificate,
        Phase::ClientHello,
        Phase::Rewrite,
        Phase::Access,
        Phase::Balancer,
        Phase::Response,
        Phase::ClusterListener,
        Phase::HeaderFilter,
        Phase::BodyFilter,
        Phase::Log,
        Phase::Preread,
        Phase::Error,
        Phase::AdminApi,
    ];

    /// The phases an external plugin can handle, in the order Kong runs them for one request
    /// (docs/protocol.md §6): `certificate` first, `log` last.
    pub const EVENT_ORDER: [Phase; 6] = [
        Phase::Certificate,
        Phase::Rewrite,
        Phase::Access,
        Phase::Response,
        Phase::Preread,
        Phase::Log,
    ];

    /// Kong's name of the phase (the event name on the wire).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::InitWorker => "init_worker",
            Phase::Certificate => "certificate",
            Phase::ClientHello => "client_hello",
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::Balancer => "balancer",
            Phase::Response => "response",
            Phase::ClusterListener => "cluster_listener",
            Phase::HeaderFilter => "header_filter",
            Phase::BodyFilter => "body_filter",
            Phase::Log => "log",
            Phase::Preread => "preread",
            Phase::Error => "error",
            Phase::AdminApi => "admin_api",
        }
    }

    /// The phase of that name; `None` for a name Kong does not know.
    pub fn parse(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == name)
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of phases (Kong's bit mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases(u16);

impl Phases {
    /// The set of `phases`.
    pub const fn of(phases: &[Phase]) -> Phases {
        let mut bits = 0;
        let mut i = 0;
        while i < phases.len() {
            bits |= phases[i].bit();
            i += 1;
        }
        Phases(bits)
    }

    /// Whether `phase` (`None`: a phase Kong does not know) is in the set.
    pub fn contains(self, phase: Option<Phase>) -> bool {
        phase.is_some_and(|p| self.0 & p.bit() != 0)
    }

    /// The members, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Phase> {
        Phase::ALL
            .into_iter()
            .filter(move |p| self.contains(Some(*p)))
    }
}

use Phase as P;

/// `PHASES.request`.
pub const REQUEST: Phases = Phases::of(&[
    P::Rewrite,
    P::Access,
    P::Balancer,
    P::Response,
    P::ClusterListener,
    P::HeaderFilter,
    P::BodyFilter,
    P::Log,
    P::Error,
    P::AdminApi,
]);
/// `kong.request.get_raw_body` / `get_body`.
pub const BEFORE_CONTENT: Phases =
    Phases::of(&[P::Rewrite, P::Access, P::Response, P::Error, P::AdminApi]);
/// `kong.response` getters.
pub const HEADER_BODY_LOG: Phases = Phases::of(&[
    P::Response,
    P::HeaderFilter,
    P::BodyFilter,
    P::Log,
    P::Error,
    P::AdminApi,
]);
/// `kong.response` setters, `exit`, `error`.
pub const REWRITE_ACCESS_HEADER: Phases = Phases::of(&[
    P::Rewrite,
    P::Access,
    P::Balancer,
    P::Response,
    P::HeaderFilter,
    P::Error,
    P::AdminApi,
]);
/// `kong.client` consumer/credential functions, `kong.router`.
pub const AUTH_AND_LATER: Phases = Phases::of(&[
    P::Access,
    P::Response,
    P::HeaderFilter,
    P::BodyFilter,
    P::Log,
]);
pub const ACCESS: Phases = Phases::of(&[P::Access]);
pub const REWRITE_ACCESS_BALANCER_PREREAD: Phases =
    Phases::of(&[P::Rewrite, P::Access, P::Balancer, P::Preread]);
pub const ACCESS_REWRITE_BALANCER: Phases = Phases::of(&[P::Rewrite, P::Access, P::Balancer]);
pub const ACCESS_AND_REWRITE: Phases = Phases::of(&[P::Rewrite, P::Access]);
/// `kong.service.response` getters.
pub const SERVICE_RESPONSE: Phases =
    Phases::of(&[P::Response, P::HeaderFilter, P::BodyFilter, P::Log]);
/// `kong.log.set_serialize_value`.
pub const WITH_CTX: Phases = Phases::of(&[
    P::Rewrite,
    P::Access,
    P::Response,
    P::HeaderFilter,
    P::BodyFilter,
    P::Log,
]);
pub const LOG: Phases = Phases::of(&[P::Log]);
pub const BODY_FILTER: Phases = Phases::of(&[P::BodyFilter]);

/// Kong's phase-check error for a call in `phase` of a function allowed in `allowed`.
pub fn phase_error(phase: &str, allowed: Phases) -> String {
    let names: Vec<&str> = allowed.iter().map(Phase::as_str).collect();
    format!(
        "function cannot be called in {phase} phase (only in: {})",
        names.join(", ")
    )
}

/// What raising request-bound functions say in the log timer (lua-resty-core's
/// `get_request()` guard).
pub const NO_REQUEST: &str = "no request found";

/// Sorts event names into Kong's order ([`Phase::EVENT_ORDER`]); names Kong does not run keep
/// their relative order at the end.
pub fn kong_order(phases: &[String]) -> Vec<String> {
    let mut v = phases.to_vec();
    v.sort_by_key(|p| {
        Phase::EVENT_ORDER
            .iter()
            .position(|k| k.as_str() == p)
            .unwrap_or(Phase::EVENT_ORDER.len())
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sets_list_in_bit_order() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
        assert_eq!(Phase::parse("foo"), None);
        assert!(ACCESS.contains(Some(Phase::Access)));
        assert!(!ACCESS.contains(Some(Phase::Log)));
        assert!(!REQUEST.contains(None));
        assert_eq!(
            phase_error("log", REWRITE_ACCESS_HEADER),
            "function cannot be called in log phase (only in: rewrite, access, balancer, \
             response, header_filter, error, admin_api)"
        );
        assert_eq!(
            kong_order(&[
                "log".into(),
                "foo".into(),
                "access".into(),
                "certificate".into()
            ]),
            vec!["certificate", "access", "log", "foo"]
        );
    }
}
