//! The single integration-test binary of the mock-kong crate.
