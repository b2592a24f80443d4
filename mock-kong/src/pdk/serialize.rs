//! `kong.log.serialize`, shaped like Kong's basic serializer (`kong/pdk/log.lua`, http
//! subsystem). Over the plugin-server bridge it reaches plugins as a JSON **string**:
//! `cjson.encode(saved.serialize_data)` (docs/protocol.md §4.5), with lua-cjson's `\/` escaping.
//!
//! Fields, as Kong 3.9 builds them: `request {id, uri, url, querystring, method, headers, size,
//! tls}`, `upstream_uri`, `upstream_status`, `response {status, headers, size}`, `latencies
//! {kong, proxy, request, receive}`, `tries`, `authenticated_entity`, `route`, `service`,
//! `consumer`, `client_ip`, `started_at`, `source`, `workspace`, `workspace_name`. Absent (nil)
//! values are left out as cjson does. `authorization` and `proxy-authorization` request headers
//! are `"REDACTED"`. Values set with `kong.log.set_serialize_value` are applied last (dotted
//! keys address nested fields).

use serde_json::{json, Map, Value as J};

use super::{query_table, KongRequest, Source};

/// `var.request_length`: request line + header lines + blank line + body.
pub fn request_size(req: &KongRequest) -> usize {
    let c = &req.client;
    let uri_len = c.path.len()
        + if c.raw_query.is_empty() {
            0
        } else {
            1 + c.raw_query.len()
        };
    let line = c.method.len() + 1 + uri_len + " HTTP/1.1\r\n".len();
    let headers: usize = c
        .headers
        .0
        .iter()
        .map(|(k, v)| k.len() + 2 + v.len() + 2)
        .sum();
    line + headers + 2 + c.body.len()
}

/// `var.bytes_sent`: status line + header lines + blank line + body.
pub fn response_size(req: &KongRequest) -> usize {
    let status = format!("HTTP/1.1 {} \r\n", req.status()).len();
    let headers: usize = req
        .response_headers
        .0
        .iter()
        .map(|(k, v)| k.len() + 2 + v.len() + 2)
        .sum();
    status + headers + 2 + req.response_body.len()
}

/// The serializer's table as JSON (before cjson's escaping).
pub fn serialize(req: &KongRequest) -> J {
    let c = &req.client;
    let request_uri = if c.raw_query.is_empty() {
        c.path.clone()
    } else {
        format!("{}?{}", c.path, c.raw_query)
    };
    let mut headers = c.headers.to_json();
    if let Some(h) = headers.as_object_mut() {
        for k in ["authorization", "proxy-authorization"] {
            if h.contains_key(k) {
                h.insert(k.into(), J::String("REDACTED".into()));
            }
        }
    }
    let proxied = req.service_response.is_some();
    let up = &req.upstream_request;
    let upstream_uri = if up.raw_query.is_empty() {
        up.path.clone()
    } else {
        format!("{}?{}", up.path, up.raw_query)
    };
    let mut request = Map::new();
    request.insert("id".into(), json!(c.id));
    request.insert("uri".into(), json!(request_uri));
    request.insert(
        "url".into(),
        json!(format!(
            "{}://{}:{}{}",
            c.scheme, c.host, c.port, request_uri
        )),
    );
    request.insert(
        "querystring".into(),
        query_table(&c.raw_query, 100).to_json(),
    );
    request.insert("method".into(), json!(c.method));
    request.insert("headers".into(), headers);
    request.insert("size".into(), json!(request_size(req)));
    if c.scheme == "https" {
        request.insert(
            "tls".into(),
            json!({"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "client_verify": "NONE"}),
        );
    }
    let mut root = Map::new();
    root.insert("request".into(), J::Object(request));
    root.insert("upstream_uri".into(), json!(upstream_uri));
    root.insert(
        "upstream_status".into(),
        json!(req
            .service_response
            .as_ref()
            .map(|r| r.status.to_string())
            .unwrap_or_default()),
    );
    root.insert(
        "response".into(),
        json!({
            "status": req.status(),
            "headers": req.response_headers.to_json(),
            "size": response_size(req),
        }),
    );
    root.insert(
        "latencies".into(),
        json!({
            "kong": 0,
            "proxy": if proxied { 0 } else { -1 },
            "request": 0,
            "receive": 0,
        }),
    );
    if proxied {
        let (ip, port) = up
            .target
            .clone()
            .unwrap_or_else(|| (up.host.clone(), up.port));
        root.insert(
            "tries".into(),
            json!([{"ip": ip, "port": port, "balancer_latency": 0,
                    "balancer_start": (c.start_time * 1000.0) as i64}]),
        );
    }
    if let Some(cred) = &req.credential {
        let mut e = Map::new();
        for k in ["id", "consumer_id"] {
            if let Some(v) = cred.get(k) {
                e.insert(k.into(), v.to_json());
            }
        }
        root.insert("authenticated_entity".into(), J::Object(e));
    }
    for (k, v) in [
        ("route", &req.route),
        ("service", &req.service),
        ("consumer", &req.consumer),
    ] {
        if let Some(v) = v {
            root.insert(k.into(), v.to_json());
        }
    }
    root.insert("client_ip".into(), json!(c.client_ip));
    root.insert("started_at".into(), json!((c.start_time * 1000.0) as i64));
    root.insert(
        "source".into(),
        json!(match req.source {
            Source::Service => "upstream",
            Source::Exit => "kong",
            Source::Error => "kong",
        }),
    );
    root.insert("workspace".into(), json!(req.workspace_id));
    root.insert("workspace_name".into(), json!("default"));
    let mut root = J::Object(root);
    for (key, value) in &req.serialize_values {
        set_path(&mut root, key, value.to_json());
    }
    root
}

/// `set_serialize_value("a.b.c", v)`: creates intermediate objects; `null` removes the field.
fn set_path(root: &mut J, key: &str, value: J) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = root;
    for p in parts {
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        let next = obj
            .entry(p.to_owned())
            .or_insert_with(|| J::Object(Map::new()));
        if !next.is_object() {
            *next = J::Object(Map::new());
        }
        cur = next;
    }
    if let Some(obj) = cur.as_object_mut() {
        if value.is_null() {
            obj.remove(last);
        } else {
            obj.insert(last.to_owned(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdk::{ClientRequest, Headers};
    use crate::Value;

    fn request() -> KongRequest {
        let mut req = KongRequest::new(ClientRequest {
            raw_query: "a=1&a=2&debug".into(),
            path: "/orders".into(),
            headers: Headers(vec![
                ("Host".into(), "example.com".into()),
                ("Authorization".into(), "Bearer secret".into()),
                ("X-Multi".into(), "1".into()),
                ("X-Multi".into(), "2".into()),
            ]),
            ..ClientRequest::default()
        });
        req.route = Some(Value::map([("name", Value::str("r1"))]));
        req.start();
        req
    }

    /// Kong's basic serializer shape (kong/pdk/log.lua): the top-level and nested keys.
    #[test]
    fn has_the_basic_serializer_shape() {
        let mut req = request();
        req.proxy();
        let j = serialize(&req);
        for k in [
            "request",
            "upstream_uri",
            "upstream_status",
            "response",
            "latencies",
            "tries",
            "route",
            "client_ip",
            "started_at",
            "source",
            "workspace",
            "workspace_name",
        ] {
            assert!(j.get(k).is_some(), "missing {k}: {j}");
        }
        assert!(j.get("service").is_none() && j.get("consumer").is_none());
        let r = &j["request"];
        assert_eq!(r["uri"], "/orders?a=1&a=2&debug");
        assert_eq!(r["url"], "http://example.com:80/orders?a=1&a=2&debug");
        assert_eq!(r["querystring"], json!({"a": ["1", "2"], "debug": true}));
        assert_eq!(r["headers"]["authorization"], "REDACTED");
        assert_eq!(r["headers"]["x-multi"], json!(["1", "2"]));
        assert_eq!(r["method"], "GET");
        assert!(r["size"].as_u64().unwrap() > 20);
        assert_eq!(j["response"]["status"], 200);
        assert_eq!(j["response"]["headers"]["server"], "mock-upstream/1.0.0");
        assert_eq!(j["upstream_status"], "200");
        assert_eq!(j["source"], "upstream");
        assert_eq!(j["started_at"], 1_767_225_600_123i64);
    }

    #[test]
    fn serialize_values_edit_nested_fields() {
        let mut req = request();
        req.serialize_values
            .push(("request.headers.x-extra".into(), Value::str("1")));
        req.serialize_values.push(("custom".into(), Value::Int(7)));
        req.serialize_values
            .push(("workspace_name".into(), Value::Nil));
        let j = serialize(&req);
        assert_eq!(j["request"]["headers"]["x-extra"], "1");
        assert_eq!(j["custom"], 7);
        assert!(j.get("workspace_name").is_none());
        // Not proxied: no tries, proxy latency -1, no upstream status.
        assert!(j.get("tries").is_none());
        assert_eq!(j["latencies"]["proxy"], -1);
        assert_eq!(j["upstream_status"], "");
    }
}
