//! `loadgen`: requests/s and latency against PDK calls per request for Kong plugin servers.
//!
//! This crate is a placeholder in the workspace; the load generator itself is built on top of
//! [`mock_kong`]'s host loop by a later issue (see `ARCHITECTURE.md`).
