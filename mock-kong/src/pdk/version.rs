//! The Kong release whose host behaviour is emulated (`--kong-version`, docs/protocol.md §9).
//!
//! mock-kong follows Kong 3.9 by default. Older releases differ in a few places a plugin can
//! observe; each is a method here so the rest of the code asks a question, not a version number.

use std::fmt;
use std::str::FromStr;

/// A Kong `major.minor` release, e.g. `3.9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KongVersion {
    pub major: u32,
    pub minor: u32,
}

/// A `--kong-version` value that is not a supported Kong release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported Kong version {given:?}: expected MAJOR.MINOR between 2.3 and 3.9 \
     (external plugin servers as configured today exist since 2.3, docs/protocol.md §9), e.g. 3.9 or 2.8"
)]
pub struct VersionError {
    pub given: String,
}

impl KongVersion {
    /// Kong 3.9, the default.
    pub const DEFAULT: KongVersion = KongVersion::new(3, 9);

    pub const fn new(major: u32, minor: u32) -> KongVersion {
        KongVersion { major, minor }
    }

    fn at_least(self, major: u32, minor: u32) -> bool {
        self >= KongVersion::new(major, minor)
    }

    /// 3.9+: only the first plugin of a dump is registered (docs/protocol.md §2, §10.5). Before, every
    /// entry of a multi-plugin dump was.
    pub fn first_dump_entry_only(self) -> bool {
        self.at_least(3, 9)
    }

    /// 2.x: a PDK `nil, err` result goes out as MsgPack `plugin.StepError` (docs/protocol.md §4.4, §10.4).
    pub fn sends_step_error(self) -> bool {
        !self.at_least(3, 0)
    }

    /// 3.8+: a failed ProtoBuf event (read timeout, unknown method) answers HTTP 500
    /// (`kong.response.error(500)`); before, it was only logged (docs/protocol.md §5.6).
    pub fn protobuf_errors_answer_500(self) -> bool {
        self.at_least(3, 8)
    }

    /// 3.0+: raw bodies travel as MsgPack `bin` (before: `str`, docs/protocol.md §9).
    pub fn raw_body_as_bin(self) -> bool {
        self.at_least(3, 0)
    }

    /// 3.7+: `kong.service.set_upstream` replies `Bool` over ProtoBuf; before, its output type
    /// was `Empty` and encoding `true` raised (docs/protocol.md §5.3).
    pub fn set_upstream_returns_bool(self) -> bool {
        self.at_least(3, 7)
    }

    /// 3.1+: `kong.request.get_uri_captures` exists in Kong's exposed API (docs/protocol.md §9).
    pub fn has_uri_captures(self) -> bool {
        self.at_least(3, 1)
    }

    /// 2.7+: the log phase sees the saved request headers (docs/protocol.md §9).
    pub fn saves_request_headers(self) -> bool {
        self.at_least(2, 7)
    }

    /// 2.5+: the log phase sees the saved response status and headers (docs/protocol.md §9).
    pub fn saves_response(self) -> bool {
        self.at_least(2, 5)
    }
}

impl Default for KongVersion {
    fn default() -> KongVersion {
        KongVersion::DEFAULT
    }
}

impl FromStr for KongVersion {
    type Err = VersionError;

    /// Accepts `3.9`, `3.9.1` (the patch is ignored) and `2.8.x`.
    fn from_str(s: &str) -> Result<KongVersion, VersionError> {
        let err = || VersionError {
            given: s.to_owned(),
        };
        let mut parts = s.trim().split('.');
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        if let Some(patch) = parts.next() {
            if patch != "x" && patch.parse::<u32>().is_err() {
                return Err(err());
            }
        }
        if parts.next().is_some() {
            return Err(err());
        }
        let v = KongVersion::new(major, minor);
        if v < KongVersion::new(2, 3) || v > KongVersion::new(3, 9) {
            return Err(err());
        }
        Ok(v)
    }
}

impl fmt::Display for KongVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl serde::Serialize for KongVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_versions() {
        assert_eq!("3.9".parse::<KongVersion>(), Ok(KongVersion::new(3, 9)));
        assert_eq!("2.8.x".parse::<KongVersion>(), Ok(KongVersion::new(2, 8)));
        assert_eq!("3.4.2".parse::<KongVersion>(), Ok(KongVersion::new(3, 4)));
        for bad in ["", "3", "3.x", "4.0", "2.2", "3.9.1.1", "a.b"] {
            let e = bad.parse::<KongVersion>().unwrap_err();
            assert!(e.to_string().contains("between 2.3 and 3.9"), "{bad}: {e}");
        }
        assert!(KongVersion::new(3, 10) > KongVersion::new(3, 9));
    }

    /// Spec §9: the switches flip exactly at the releases the history table names.
    #[test]
    fn behaviour_switches_follow_the_version_history() {
        let v = |s: &str| s.parse::<KongVersion>().unwrap();
        assert!(v("3.9").first_dump_entry_only() && !v("3.8").first_dump_entry_only());
        assert!(v("2.8").sends_step_error() && !v("3.0").sends_step_error());
        assert!(v("3.8").protobuf_errors_answer_500() && !v("3.7").protobuf_errors_answer_500());
        assert!(v("3.7").set_upstream_returns_bool() && !v("3.6").set_upstream_returns_bool());
        assert!(v("3.0").raw_body_as_bin() && !v("2.8").raw_body_as_bin());
        assert!(v("3.1").has_uri_captures() && !v("3.0").has_uri_captures());
    }
}
