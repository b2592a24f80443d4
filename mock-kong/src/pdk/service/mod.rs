//! `kong.service`: the upstream a request goes to (upstream entity, target, retries,
//! timeouts); `kong.service.request` and `kong.service.response` are the submodules.

mod request;
mod response;

use crate::pdk::args::*;
use crate::pdk::kong::KongRequest;
use crate::pdk::phase::*;
use crate::pdk::PdkOutcome;
use crate::{Protocol, Value};

impl KongRequest {
    pub(super) fn service(&mut self, m: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        let a0 = arg(args, 0);
        let a1 = arg(args, 1);
        let v = match m {
            "kong.service.set_upstream" => {
                self.check(ACCESS)?;
                let Some(host) = string_arg(a0) else {
                    return Err(raise("host must be a string".into()));
                };
                if !self.upstreams.contains(&host) {
                    return Err(PdkOutcome::SoftError(format!(
                        "could not find an Upstream named '{host}'"
                    )));
                }
                self.upstream_request.upstream = Some(host);
                if self.protocol == Protocol::ProtoBuf && !self.version.set_upstream_returns_bool()
                {
                    // The pre-3.7 output type was Empty: pb.encode raised (docs/protocol.md §5.3).
                    return Err(raise(
                        "bad argument #2 to 'encode' (table expected, got boolean)".into(),
                    ));
                }
                Value::Bool(true)
            }
            "kong.service.set_target" => {
                self.check(REWRITE_ACCESS_BALANCER_PREREAD)?;
                let Some(host) = string_arg(a0) else {
                    return Err(raise("host must be a string".into()));
                };
                let Some(port) = number(a1).filter(|p| p.fract() == 0.0) else {
                    return Err(raise("port must be an integer".into()));
                };
                if !(0.0..=65535.0).contains(&port) {
                    return Err(raise(format!(
                        "port must be an integer between 0 and 65535: given {}",
                        lua_number(port)
                    )));
                }
                self.upstream_request.target = Some((host, port as i64));
                Value::Nil
            }
            "kong.service.set_retries" => {
                self.check(ACCESS)?;
                let Some(r) = number(a0).filter(|p| p.fract() == 0.0) else {
                    return Err(raise("retries must be an integer".into()));
                };
                if !(0.0..=32767.0).contains(&r) {
                    return Err(raise(format!(
                        "retries must be an integer between 0 and 32767: given {}",
                        lua_number(r)
                    )));
                }
                self.upstream_request.retries = Some(r as i64);
                Value::Nil
            }
            "kong.service.set_timeouts" => {
                self.check(ACCESS)?;
                let mut t = [0i64; 3];
                for (i, name) in ["connect_timeout", "write_timeout", "read_timeout"]
                    .iter()
                    .enumerate()
                {
                    let Some(n) = number(arg(args, i)).filter(|p| p.fract() == 0.0) else {
                        return Err(raise(format!("{name} must be an integer")));
                    };
                    if !(1.0..=2_147_483_646.0).contains(&n) {
                        return Err(raise(format!(
                            "{name} must be an integer between 1 and 2147483646: given {}",
                            lua_number(n)
                        )));
                    }
                    t[i] = n as i64;
                }
                self.upstream_request.timeouts = Some((t[0], t[1], t[2]));
                Value::Nil
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
