//! `kong.service.response`: the upstream's answer as Kong buffered it.

use crate::pdk::args::*;
use crate::pdk::kong::KongRequest;
use crate::pdk::phase::*;
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(in crate::pdk) fn service_response(
        &mut self,
        m: &str,
        args: &[Value],
    ) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        if !matches!(
            m,
            "kong.service.response.get_status"
                | "kong.service.response.get_header"
                | "kong.service.response.get_headers"
                | "kong.service.response.get_raw_body"
                | "kong.service.response.get_body"
        ) {
            return Err(PdkOutcome::NotFound);
        }
        self.check(SERVICE_RESPONSE)?;
        self.live()?;
        let a0 = arg(args, 0);
        let resp = self.service_response.as_ref();
        let v = match m {
            "kong.service.response.get_status" => {
                resp.map(|r| Value::Int(r.status)).unwrap_or(Value::Nil)
            }
            "kong.service.response.get_header" => {
                let Some(name) = string_arg(a0) else {
                    return Err(raise("name must be a string".into()));
                };
                resp.and_then(|r| r.headers.get(&name))
                    .map(Value::str)
                    .unwrap_or(Value::Nil)
            }
            "kong.service.response.get_headers" => {
                let max = max_arg(a0, "max_headers").map_err(PdkOutcome::Raise)?;
                resp.map(|r| r.headers.to_table(Some(max)).0)
                    .unwrap_or_else(|| Value::Map(Vec::new()))
            }
            _ => {
                if !self.upstream_request.buffering {
                    return Err(raise(
                        "service body is only available with buffered proxying (see: \
                         kong.service.request.enable_buffering function)"
                            .into(),
                    ));
                }
                let body = resp.map(|r| r.body.clone()).unwrap_or_default();
                if m.ends_with("get_raw_body") {
                    self.raw_body_value(&body)
                } else {
                    match serde_json::from_slice::<serde_json::Value>(&body) {
                        Ok(j) if j.is_object() || j.is_array() => Value::from_json(&j),
                        _ => return Err(PdkOutcome::SoftError("invalid json body".into())),
                    }
                }
            }
        };
        Ok(v)
    }
}
