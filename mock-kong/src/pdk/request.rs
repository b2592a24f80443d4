//! `kong.request`: the client request as Kong read it (headers, query, body, forwarded
//! values from trusted proxies, captures).

use crate::pdk::args::*;
use crate::pdk::http::*;
use crate::pdk::kong::KongRequest;
use crate::pdk::phase::*;
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(super) fn request(&mut self, m: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let raise = |m: &str| PdkOutcome::Raise(m.to_owned());
        let a0 = arg(args, 0);
        let c = &self.client;
        let before_content = matches!(m, "kong.request.get_raw_body" | "kong.request.get_body");
        if before_content {
            self.check(BEFORE_CONTENT)?;
        } else if m != "kong.request.get_uri_captures" || self.version.has_uri_captures() {
            self.check(REQUEST)?;
        }
        // get_start_time and get_uri_captures read ngx.ctx (cloned into the timer).
        if !matches!(
            m,
            "kong.request.get_start_time" | "kong.request.get_uri_captures" | "kong.request.get_id"
        ) {
            self.live()?;
        }
        let v = match m {
            "kong.request.get_id" => Value::str(c.id.as_str()),
            "kong.request.get_scheme" => Value::str(c.scheme.as_str()),
            "kong.request.get_host" => Value::str(c.host.as_str()),
            "kong.request.get_port" => Value::Int(c.port),
            "kong.request.get_forwarded_scheme" => Value::str(
                self.forwarded("x-forwarded-proto")
                    .map(|s| s.to_ascii_lowercase())
                    .unwrap_or_else(|| c.scheme.clone()),
            ),
            "kong.request.get_forwarded_host" => Value::str(
                self.forwarded("x-forwarded-host")
                    .map(|h| h.split(':').next().unwrap_or("").to_ascii_lowercase())
                    .unwrap_or_else(|| c.host.clone()),
            ),
            "kong.request.get_forwarded_port" => Value::Int(
                self.forwarded("x-forwarded-port")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(c.port),
            ),
            "kong.request.get_forwarded_path" => Value::str(
                self.forwarded("x-forwarded-path")
                    .unwrap_or_else(|| c.path.clone()),
            ),
            "kong.request.get_forwarded_prefix" => self
                .forwarded("x-forwarded-prefix")
                .map(Value::str)
                .unwrap_or(Value::Nil),
            "kong.request.get_http_version" => Value::Float(c.http_version),
            "kong.request.get_method" => Value::str(c.method.as_str()),
            "kong.request.get_path" | "kong.request.get_raw_path" => Value::str(c.path.as_str()),
            "kong.request.get_path_with_query" => Value::str(self.request_uri()),
            "kong.request.get_raw_query" => Value::str(c.raw_query.as_str()),
            "kong.request.get_query_arg" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("query argument name must be a string"));
                };
                parse_query(&c.raw_query)
                    .into_iter()
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, v)| v.first().map(query_value))
                    .unwrap_or(Value::Nil)
            }
            "kong.request.get_query" => {
                let max = max_arg(a0, "max_args").map_err(PdkOutcome::Raise)?;
                query_table(&c.raw_query, max)
            }
            "kong.request.get_header" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("header name must be a string"));
                };
                c.headers.get(&name).map(Value::str).unwrap_or(Value::Nil)
            }
            "kong.request.get_headers" => {
                let max = max_arg(a0, "max_headers").map_err(PdkOutcome::Raise)?;
                c.headers.to_table(Some(max)).0
            }
            "kong.request.get_raw_body" => self.raw_body_value(&c.body),
            "kong.request.get_body" => {
                let mime =
                    string_arg(a0).or_else(|| c.headers.get("content-type").map(str::to_owned));
                let Some(mime) = mime else {
                    return Err(PdkOutcome::SoftError("missing content type".into()));
                };
                let base = mime
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                match base.as_str() {
                    "application/json" => {
                        match serde_json::from_slice::<serde_json::Value>(&c.body) {
                            Ok(j) if j.is_object() || j.is_array() => Value::from_json(&j),
                            _ => {
                                return Err(PdkOutcome::SoftError("invalid json body".into()));
                            }
                        }
                    }
                    "application/x-www-form-urlencoded" => {
                        query_table(&String::from_utf8_lossy(&c.body), 100)
                    }
                    _ => {
                        return Err(PdkOutcome::SoftError(format!(
                            "unsupported content type '{mime}'"
                        )))
                    }
                }
            }
            "kong.request.get_start_time" => Value::Int((c.start_time * 1000.0) as i64),
            "kong.request.get_uri_captures" => {
                if !self.version.has_uri_captures() {
                    return Err(PdkOutcome::NotFound);
                }
                let unnamed = Value::Array(c.unnamed_captures.iter().map(Value::str).collect());
                let named = if c.named_captures.is_empty() {
                    // An empty Lua table packs as an empty array (docs/protocol.md §4.5).
                    Value::Array(Vec::new())
                } else {
                    Value::Map(
                        c.named_captures
                            .iter()
                            .map(|(k, v)| (Value::str(k.as_str()), Value::str(v.as_str())))
                            .collect(),
                    )
                };
                Value::map([("unnamed", unnamed), ("named", named)])
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
