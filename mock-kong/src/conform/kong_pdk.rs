//! The PDK functions Kong exposes to external plugins, per Kong release (`event/known-methods`).
//!
//! Facts taken from Kong's source at each `X.Y.0` tag from 2.3 to 3.9: the functions of the
//! PDK modules (`kong/pdk/**.lua`, the private ones left out; the log levels, which are built
//! in a loop), and the flat names of the plugin servers' `exposed_api` table (docs/protocol.md §4.5), which
//! Kong looks up before walking the dotted name from its `kong` global (docs/protocol.md §4.4). A name of a
//! PDK module missing here does not exist in that release: over MsgPack Kong logs "could not
//! find pdk method" and answers nil, over ProtoBuf the method is not in the table at all.

use crate::pdk::KongVersion;

/// `(name, first release, last release)`: `None` when still present in 3.9.
type Row = (&'static str, (u32, u32), Option<(u32, u32)>);

/// Every PDK function of Kong 2.3 – 3.9.
static FUNCTIONS: [Row; 134] = [
    ("kong.client.authenticate", (2, 3), None),
    ("kong.client.get_consumer", (2, 3), None),
    ("kong.client.get_credential", (2, 3), None),
    ("kong.client.get_forwarded_ip", (2, 3), None),
    ("kong.client.get_forwarded_port", (2, 3), None),
    ("kong.client.get_ip", (2, 3), None),
    ("kong.client.get_port", (2, 3), None),
    ("kong.client.get_protocol", (2, 3), None),
    ("kong.client.load_consumer", (2, 3), None),
    ("kong.client.tls.disable_http", (3, 9), None),
    ("kong.client.tls.disable_http2_alpn", (3, 9), None),
    ("kong.client.tls.disable_session_reuse", (2, 3), None),
    (
        "kong.client.tls.get_full_client_certificate_chain",
        (2, 3),
        None,
    ),
    ("kong.client.tls.request_client_certificate", (2, 3), None),
    ("kong.client.tls.set_client_verify", (2, 3), None),
    ("kong.cluster.get_id", (2, 3), None),
    ("kong.ctx.shared.get", (2, 3), None),
    ("kong.ctx.shared.set", (2, 3), None),
    ("kong.ip.is_trusted", (2, 3), None),
    ("kong.log.alert", (2, 3), None),
    ("kong.log.crit", (2, 3), None),
    ("kong.log.debug", (2, 3), None),
    ("kong.log.deprecation", (2, 6), None),
    ("kong.log.emerg", (2, 3), None),
    ("kong.log.err", (2, 3), None),
    ("kong.log.info", (2, 3), None),
    ("kong.log.inspect", (2, 3), None),
    ("kong.log.inspect.off", (2, 3), None),
    ("kong.log.inspect.on", (2, 3), None),
    ("kong.log.notice", (2, 3), None),
    ("kong.log.off", (2, 3), None),
    ("kong.log.on", (2, 3), None),
    ("kong.log.serialize", (2, 3), None),
    ("kong.log.set_format", (2, 3), None),
    ("kong.log.set_serialize_value", (2, 3), None),
    ("kong.log.warn", (2, 3), None),
    ("kong.nginx.get_ctx", (2, 3), None),
    ("kong.nginx.get_statistics", (3, 0), None),
    ("kong.nginx.get_subsystem", (2, 3), None),
    ("kong.nginx.get_tls1_version_str", (2, 3), None),
    ("kong.nginx.get_var", (2, 3), None),
    ("kong.nginx.req_start_time", (2, 3), None),
    ("kong.nginx.set_ctx", (2, 3), None),
    ("kong.node.get_hostname", (2, 3), None),
    ("kong.node.get_id", (2, 3), None),
    ("kong.node.get_memory_stats", (2, 3), None),
    ("kong.plugin.get_id", (3, 3), None),
    ("kong.request.get_body", (2, 3), None),
    ("kong.request.get_forwarded_host", (2, 3), None),
    ("kong.request.get_forwarded_path", (2, 3), None),
    ("kong.request.get_forwarded_port", (2, 3), None),
    ("kong.request.get_forwarded_prefix", (2, 3), None),
    ("kong.request.get_forwarded_scheme", (2, 3), None),
    ("kong.request.get_header", (2, 3), None),
    ("kong.request.get_headers", (2, 3), None),
    ("kong.request.get_host", (2, 3), None),
    ("kong.request.get_http_version", (2, 3), None),
    ("kong.request.get_method", (2, 3), None),
    ("kong.request.get_path", (2, 3), None),
    ("kong.request.get_path_with_query", (2, 3), None),
    ("kong.request.get_port", (2, 3), None),
    ("kong.request.get_query", (2, 3), None),
    ("kong.request.get_query_arg", (2, 3), None),
    ("kong.request.get_raw_body", (2, 3), None),
    ("kong.request.get_raw_path", (3, 0), None),
    ("kong.request.get_raw_query", (2, 3), None),
    ("kong.request.get_scheme", (2, 3), None),
    ("kong.request.get_start_time", (3, 0), None),
    ("kong.request.get_uri_captures", (3, 1), None),
    ("kong.response.add_header", (2, 3), None),
    ("kong.response.clear_header", (2, 3), None),
    ("kong.response.error", (2, 3), None),
    ("kong.response.exit", (2, 3), None),
    ("kong.response.get_header", (2, 3), None),
    ("kong.response.get_headers", (2, 3), None),
    ("kong.response.get_raw_body", (2, 7), None),
    ("kong.response.get_source", (2, 3), None),
    ("kong.response.get_status", (2, 3), None),
    ("kong.response.set_header", (2, 3), None),
    ("kong.response.set_headers", (2, 3), None),
    ("kong.response.set_raw_body", (2, 7), None),
    ("kong.response.set_status", (2, 3), None),
    ("kong.router.get_route", (2, 3), None),
    ("kong.router.get_service", (2, 3), None),
    ("kong.service.request.add_header", (2, 3), None),
    ("kong.service.request.clear_header", (2, 3), None),
    ("kong.service.request.clear_query_arg", (3, 9), None),
    ("kong.service.request.disable_tls", (2, 3), None),
    ("kong.service.request.enable_buffering", (2, 3), None),
    ("kong.service.request.set_body", (2, 3), None),
    ("kong.service.request.set_header", (2, 3), None),
    ("kong.service.request.set_headers", (2, 3), None),
    ("kong.service.request.set_method", (2, 3), None),
    ("kong.service.request.set_path", (2, 3), None),
    ("kong.service.request.set_query", (2, 3), None),
    ("kong.service.request.set_raw_body", (2, 3), None),
    ("kong.service.request.set_raw_query", (2, 3), None),
    ("kong.service.request.set_scheme", (2, 3), None),
    ("kong.service.response.get_body", (2, 3), None),
    ("kong.service.response.get_header", (2, 3), None),
    ("kong.service.response.get_headers", (2, 3), None),
    ("kong.service.response.get_raw_body", (2, 3), None),
    ("kong.service.response.get_status", (2, 3), None),
    ("kong.service.set_retries", (3, 8), None),
    ("kong.service.set_target", (2, 3), None),
    ("kong.service.set_target_retry_callback", (3, 8), None),
    ("kong.service.set_timeouts", (3, 8), None),
    ("kong.service.set_tls_cert_key", (2, 3), None),
    ("kong.service.set_tls_verify", (2, 3), None),
    ("kong.service.set_tls_verify_depth", (2, 3), None),
    ("kong.service.set_tls_verify_store", (2, 3), None),
    ("kong.service.set_upstream", (2, 3), None),
    ("kong.table.clear", (2, 3), None),
    ("kong.table.merge", (2, 4), None),
    ("kong.table.new", (2, 3), None),
    ("kong.telemetry.log", (3, 8), None),
    ("kong.tracing.active_span", (3, 0), None),
    ("kong.tracing.create_span", (3, 3), None),
    ("kong.tracing.get_root_span", (3, 9), None),
    ("kong.tracing.get_spans", (3, 9), None),
    ("kong.tracing.init_spans", (3, 9), None),
    ("kong.tracing.link_span", (3, 3), None),
    ("kong.tracing.new_span", (3, 0), Some((3, 2))),
    ("kong.tracing.process_span", (3, 0), None),
    ("kong.tracing.set_active_span", (3, 0), None),
    ("kong.tracing.start_span", (3, 0), None),
    ("kong.vault.flush", (3, 3), None),
    ("kong.vault.get", (2, 8), None),
    ("kong.vault.init_worker", (3, 3), None),
    ("kong.vault.is_reference", (2, 8), None),
    ("kong.vault.parse_reference", (2, 8), None),
    ("kong.vault.try", (3, 0), None),
    ("kong.vault.update", (3, 4), None),
    ("kong.vault.warmup", (3, 5), None),
];

/// The PDK modules (`kong.request`, `kong.service.request`, ...): a name under one of them is
/// judged; other names Kong can reach from its global (`kong.db`, `kong.cache`, ...) are not
/// PDK functions and are not.
pub fn is_pdk_module(module: &str) -> bool {
    FUNCTIONS
        .iter()
        .any(|(name, _, _)| name.rsplit_once('.').is_some_and(|(m, _)| m == module))
}

/// Whether `name` is a PDK function of Kong `version`.
pub fn exists(name: &str, version: KongVersion) -> bool {
    FUNCTIONS.iter().any(|&(n, since, until)| {
        n == name
            && version >= KongVersion::new(since.0, since.1)
            && until.map_or(true, |u| version <= KongVersion::new(u.0, u.1))
    })
}

/// The release that first had `name`, if any release did.
pub fn since(name: &str) -> Option<KongVersion> {
    FUNCTIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, s, _)| KongVersion::new(s.0, s.1))
}

/// How Kong resolves a method name (`rpc/util.lua index_table`): an exact key of `exposed_api`
/// first, else the `\w+` segments walked from `kong`; the dotted name of those segments.
pub fn resolved(name: &str) -> String {
    name.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// The module of a resolved name (`kong.service.request` for `kong.service.request.set_header`).
pub fn module(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(m, _)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_functions() {
        let v = KongVersion::new;
        assert!(exists("kong.request.get_header", v(3, 9)));
        assert!(exists("kong.request.get_header", v(2, 3)));
        assert!(exists("kong.request.get_uri_captures", v(3, 1)));
        assert!(!exists("kong.request.get_uri_captures", v(3, 0)));
        assert!(
            exists("kong.ctx.shared.get", v(3, 9)),
            "an exposed_api override"
        );
        assert!(exists("kong.log.err", v(2, 8)), "a log level");
        assert!(!exists("kong.request.get_headr", v(3, 9)));
        assert!(
            exists("kong.tracing.new_span", v(3, 1)) && !exists("kong.tracing.new_span", v(3, 9))
        );
        assert_eq!(since("kong.service.set_timeouts"), Some(v(3, 8)));
        assert!(is_pdk_module("kong.service.request") && is_pdk_module("kong.log"));
        assert!(!is_pdk_module("kong.db") && !is_pdk_module("kong.cache"));
        assert_eq!(
            resolved("kong..request/get_header "),
            "kong.request.get_header"
        );
        assert_eq!(
            module("kong.service.request.set_header"),
            "kong.service.request"
        );
    }
}
