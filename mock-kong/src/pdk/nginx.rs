//! `kong.nginx`: nginx variables, `ngx.ctx` (the saved clone in the log timer), timing and
//! statistics.

use crate::pdk::args::*;
use crate::pdk::kong::{CtxTable, KongRequest};
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(super) fn nginx(&mut self, m: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let a0 = arg(args, 0);
        let a1 = arg(args, 1);
        let v = match m {
            "kong.nginx.get_var" => {
                self.live()?;
                let name = lua_text(a0).unwrap_or_default();
                self.nginx_var(&name).map(Value::str).unwrap_or(Value::Nil)
            }
            "kong.nginx.get_tls1_version_str" => {
                self.live()?;
                if self.client.scheme == "https" {
                    Value::str("TLSv1.3")
                } else {
                    Value::Nil
                }
            }
            "kong.nginx.get_ctx" => {
                let k = lua_text(a0).unwrap_or_default();
                lookup(self.ctx_table(CtxTable::Ngx), &k)
            }
            "kong.nginx.set_ctx" => {
                let k = lua_text(a0).unwrap_or_default();
                self.ctx_set(CtxTable::Ngx, k, a1);
                Value::Nil
            }
            "kong.nginx.req_start_time" => {
                self.live()?;
                Value::Float(self.client.start_time)
            }
            "kong.nginx.get_subsystem" => Value::str("http"),
            "kong.nginx.get_statistics" => {
                self.live()?;
                Value::map([
                    ("connections_active", Value::Int(1)),
                    ("connections_reading", Value::Int(0)),
                    ("connections_writing", Value::Int(1)),
                    ("connections_waiting", Value::Int(0)),
                    ("connections_accepted", Value::Int(1)),
                    ("connections_handled", Value::Int(1)),
                    ("total_requests", Value::Int(1)),
                ])
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
