//! `kong.ctx.shared`: the table plugins share within a request (the saved table in the log
//! timer, docs/protocol.md §4.5).

use crate::pdk::args::*;
use crate::pdk::kong::{CtxTable, KongRequest};
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
                lookup(self.ctx_table(CtxTable::Shared), &k)
            }
            "kong.ctx.shared.set" => {
                let k = lua_text(a0).ok_or_else(|| {
                    raise(format!(
                        "bad argument #1 to 'kong.ctx.shared.set' (string expected, got {})",
                        lua_type(a0)
                    ))
                })?;
                self.ctx_set(CtxTable::Shared, k, a1);
                Value::Nil
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
