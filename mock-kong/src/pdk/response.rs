//! `kong.response`: the client response (status, headers, body, source) and the terminal
//! `exit` / `error`.

use crate::pdk::args::*;
use crate::pdk::http::*;
use crate::pdk::kong::{KongRequest, Stage};
use crate::pdk::phase::*;
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(super) fn response(&mut self, m: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        let a0 = arg(args, 0);
        let a1 = arg(args, 1);
        let a2 = arg(args, 2);
        let getter = matches!(
            m,
            "kong.response.get_status"
                | "kong.response.get_header"
                | "kong.response.get_headers"
                | "kong.response.get_source"
        );
        if getter {
            self.check(HEADER_BODY_LOG)?;
            self.live()?;
        } else if matches!(
            m,
            "kong.response.get_raw_body" | "kong.response.set_raw_body"
        ) {
            self.check(BODY_FILTER)?;
        } else if m.starts_with("kong.response.") && m != "kong.response.get_body" {
            self.check(REWRITE_ACCESS_HEADER)?;
            if self.stage == Stage::Sent {
                return Err(raise("headers have already been sent".into()));
            }
        }
        let v = match m {
            "kong.response.get_status" => Value::Int(self.status()),
            "kong.response.get_header" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("header name must be a string".into()));
                };
                self.response_headers
                    .get(&name)
                    .map(Value::str)
                    .unwrap_or(Value::Nil)
            }
            "kong.response.get_headers" => {
                let max = max_arg(a0, "max_headers").map_err(PdkOutcome::Raise)?;
                self.response_headers.to_table(Some(max)).0
            }
            "kong.response.get_source" => Value::str(self.source.as_str()),
            "kong.response.set_status" => {
                let s = status_arg(a0, 100).map_err(PdkOutcome::Raise)?;
                self.response_status = Some(s);
                Value::Nil
            }
            "kong.response.set_header" | "kong.response.add_header" => {
                let name = header_name(a0).map_err(PdkOutcome::Raise)?;
                let vals = header_values(&name, a1).map_err(PdkOutcome::Raise)?;
                if m.ends_with("set_header") {
                    self.response_headers.set(&name, vals);
                } else {
                    for v in vals {
                        self.response_headers.add(&name, v);
                    }
                }
                Value::Nil
            }
            "kong.response.clear_header" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("header name must be a string".into()));
                };
                self.response_headers.clear(&name);
                Value::Nil
            }
            "kong.response.set_headers" => {
                let entries = header_table(a0, "headers").map_err(PdkOutcome::Raise)?;
                for (name, vals) in entries {
                    self.response_headers.set(&name, vals);
                }
                Value::Nil
            }
            "kong.response.exit" => {
                let status = status_arg(a0, 100).map_err(PdkOutcome::Raise)?;
                let mut headers = match a2 {
                    Value::Nil => Headers::new(),
                    h => Headers(
                        header_table(h, "headers")
                            .map_err(|e| {
                                PdkOutcome::Raise(if e == "headers must be a table" {
                                    "headers must be a nil or table".into()
                                } else {
                                    e
                                })
                            })?
                            .into_iter()
                            .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
                            .collect(),
                    ),
                };
                let body = match a1 {
                    Value::Nil => Vec::new(),
                    Value::Str(b) | Value::Bin(b) => b.clone(),
                    t @ (Value::Map(_) | Value::Array(_)) => {
                        if headers.get("content-type").is_none() {
                            headers.add("Content-Type", "application/json; charset=utf-8".into());
                        }
                        cjson_encode(t).into_bytes()
                    }
                    _ => return Err(raise("body must be a nil, string or table".into())),
                };
                self.source = Source::Exit;
                return Err(self.exit_outcome(status, body, headers));
            }
            "kong.response.error" => {
                let status = status_arg(a0, 400).map_err(PdkOutcome::Raise)?;
                let message = match a1 {
                    Value::Nil => http_error_message(status),
                    Value::Str(_) | Value::Bin(_) => string_arg(a1).unwrap_or_default(),
                    t @ (Value::Map(_) | Value::Array(_)) => cjson_encode(t),
                    _ => return Err(raise("message must be a nil, a string or a table".into())),
                };
                let mut headers = match a2 {
                    Value::Nil => Headers::new(),
                    h => Headers(
                        header_table(h, "headers")
                            .map_err(PdkOutcome::Raise)?
                            .into_iter()
                            .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
                            .collect(),
                    ),
                };
                let ct = match headers.get("content-type") {
                    Some(ct) => ct.to_owned(),
                    None => {
                        let ct = response_type(self.client.headers.get("accept"));
                        headers.add("Content-Type", ct.into());
                        ct.to_owned()
                    }
                };
                let body = error_body(&ct, &message, &self.client.id);
                self.source = Source::Error;
                return Err(self.exit_outcome(status, body.into_bytes(), headers));
            }
            "kong.response.get_raw_body" => Value::Str(self.response_body.clone()),
            "kong.response.set_raw_body" => {
                let Some(b) = a0.as_bytes() else {
                    return Err(raise("body must be a string".into()));
                };
                self.response_body = b.to_vec();
                Value::Nil
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
