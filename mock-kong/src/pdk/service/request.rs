//! `kong.service.request`: the request Kong sends upstream, as plugins modify it.

use crate::pdk::args::*;
use crate::pdk::http::*;
use crate::pdk::kong::KongRequest;
use crate::pdk::phase::*;
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(in crate::pdk) fn service_request(
        &mut self,
        m: &str,
        args: &[Value],
    ) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        let a0 = arg(args, 0);
        let a1 = arg(args, 1);
        let allowed = match m {
            "kong.service.request.enable_buffering"
            | "kong.service.request.set_scheme"
            | "kong.service.request.set_path"
            | "kong.service.request.set_header"
            | "kong.service.request.set_raw_body" => ACCESS_REWRITE_BALANCER,
            "kong.service.request.set_raw_query"
            | "kong.service.request.set_method"
            | "kong.service.request.set_query"
            | "kong.service.request.clear_query_arg"
            | "kong.service.request.add_header"
            | "kong.service.request.clear_header"
            | "kong.service.request.set_headers"
            | "kong.service.request.set_body" => ACCESS_AND_REWRITE,
            _ => return Err(PdkOutcome::NotFound),
        };
        self.check(allowed)?;
        let up = &mut self.upstream_request;
        match m {
            "kong.service.request.enable_buffering" => up.buffering = true,
            "kong.service.request.set_scheme" => {
                let Some(s) = string_arg(a0) else {
                    return Err(raise("scheme must be a string".into()));
                };
                if s != "http" && s != "https" {
                    return Err(raise(format!("invalid scheme: {s}")));
                }
                up.scheme = s;
            }
            "kong.service.request.set_path" => {
                let Some(p) = string_arg(a0) else {
                    return Err(raise("path must be a string".into()));
                };
                if !p.starts_with('/') {
                    return Err(raise("path must start with /".into()));
                }
                up.path = p;
            }
            "kong.service.request.set_raw_query" => {
                let Some(q) = string_arg(a0) else {
                    return Err(raise("query must be a string".into()));
                };
                up.raw_query = q;
            }
            "kong.service.request.set_method" => {
                let Some(meth) = string_arg(a0) else {
                    return Err(raise("method must be a string".into()));
                };
                const METHODS: [&str; 16] = [
                    "GET",
                    "HEAD",
                    "PUT",
                    "POST",
                    "DELETE",
                    "OPTIONS",
                    "MKCOL",
                    "COPY",
                    "MOVE",
                    "PROPFIND",
                    "PROPPATCH",
                    "LOCK",
                    "UNLOCK",
                    "PATCH",
                    "TRACE",
                    "CONNECT",
                ];
                if !METHODS.contains(&meth.as_str()) {
                    return Err(raise(format!("invalid method: {meth}")));
                }
                up.method = meth;
            }
            "kong.service.request.set_query" => {
                if !matches!(a0, Value::Map(_) | Value::Array(_)) {
                    return Err(raise("args must be a table".into()));
                }
                up.raw_query = encode_args(a0).map_err(PdkOutcome::Raise)?;
            }
            "kong.service.request.clear_query_arg" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("query argument name must be a string".into()));
                };
                let kept: Vec<&str> = up
                    .raw_query
                    .split('&')
                    .filter(|p| {
                        !p.is_empty() && url_decode(p.split('=').next().unwrap_or("")) != name
                    })
                    .collect();
                up.raw_query = kept.join("&");
            }
            "kong.service.request.set_header" | "kong.service.request.add_header" => {
                let name = header_name(a0).map_err(PdkOutcome::Raise)?;
                let vals = header_values(&name, a1).map_err(PdkOutcome::Raise)?;
                if m.ends_with("set_header") {
                    up.headers.set(&name, vals);
                } else {
                    for v in vals {
                        up.headers.add(&name, v);
                    }
                }
            }
            "kong.service.request.clear_header" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("header must be a string".into()));
                };
                up.headers.clear(&name);
            }
            "kong.service.request.set_headers" => {
                if !matches!(a0, Value::Map(_) | Value::Array(_)) {
                    return Err(raise("headers must be a table".into()));
                }
                let entries = header_table(a0, "headers").map_err(PdkOutcome::Raise)?;
                for (name, vals) in entries {
                    up.headers.set(&name, vals);
                }
            }
            "kong.service.request.set_raw_body" => {
                let Some(b) = a0.as_bytes() else {
                    return Err(raise("body must be a string".into()));
                };
                up.headers.set("content-length", vec![b.len().to_string()]);
                up.body = Some(b.to_vec());
            }
            "kong.service.request.set_body" => {
                if !matches!(a0, Value::Map(_) | Value::Array(_)) {
                    return Err(raise("args must be a table".into()));
                }
                if !matches!(a1, Value::Nil | Value::Str(_) | Value::Bin(_)) {
                    return Err(raise("mime must be a string".into()));
                }
                let mime = match string_arg(a1) {
                    Some(m) => m,
                    None => match self.client.headers.get("content-type") {
                        Some(m) => m.to_owned(),
                        None => {
                            return Err(PdkOutcome::SoftError(
                                "content type was neither explicitly given as an argument or \
                                 received as a header"
                                    .into(),
                            ))
                        }
                    },
                };
                let base = mime.split(';').next().unwrap_or("").trim().to_owned();
                let body = match base.as_str() {
                    "application/json" => cjson_encode(a0),
                    "application/x-www-form-urlencoded" => {
                        encode_args(a0).map_err(PdkOutcome::Raise)?
                    }
                    _ => return Err(raise(format!("unsupported content type {mime}"))),
                };
                let up = &mut self.upstream_request;
                up.headers.set("content-type", vec![mime.clone()]);
                up.headers
                    .set("content-length", vec![body.len().to_string()]);
                up.body = Some(body.into_bytes());
                return Ok(Value::Bool(true));
            }
            _ => return Err(PdkOutcome::NotFound),
        }
        Ok(Value::Nil)
    }
}
