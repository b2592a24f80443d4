//! `kong.ctx.shared`: the table plugins share within a request (the saved table in the log
//! timer, spec §4.5).

use crate::pdk::args::*;
use crate::pdk::kong::KongRequest;
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(super) fn ctx_shared(&mut self, m: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        let a0 = arg(args, 0);
        let a1 = arg(args, 1);
        let v = match m {
            "kong.ctx.shared.get" => {
                let k = lua_text(a0).unwrap_or_default();
                let table = match (&self.saved, self.in_log()) {
                    (Some(s), true) => &s.ctx_shared,
                    _ => &self.shared,
                };
                lookup(table, &k)
            }
            "kong.ctx.shared.set" => {
                let k = lua_text(a0).ok_or_else(|| {
                    raise(format!(
                        "bad argument #1 to 'kong.ctx.shared.set' (string expected, got {})",
                        lua_type(a0)
                    ))
                })?;
                let in_log = self.in_log();
                let table = match (&mut self.saved, in_log) {
                    (Some(s), true) => &mut s.ctx_shared,
                    _ => &mut self.shared,
                };
                table.retain(|(key, _)| *key != k);
                if !a1.is_nil() {
                    table.push((k, a1.clone()));
                }
                Value::Nil
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
