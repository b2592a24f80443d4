//! `kong.nginx`: nginx variables, `ngx.ctx` (the saved clone in the log timer), timing and
//! statistics.

use crate::pdk::args::*;
use crate::pdk::kong::KongRequest;
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
                let table = match (&self.saved, self.in_log()) {
                    (Some(s), true) => &s.ngx_ctx,
                    _ => &self.ngx_ctx,
                };
                lookup(table, &k)
            }
            "kong.nginx.set_ctx" => {
                let k = lua_text(a0).unwrap_or_default();
                let in_log = self.in_log();
                let table = match (&mut self.saved, in_log) {
                    (Some(s), true) => &mut s.ngx_ctx,
                    _ => &mut self.ngx_ctx,
                };
                table.retain(|(key, _)| *key != k);
                if !a1.is_nil() {
                    table.push((k, a1.clone()));
                }
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
