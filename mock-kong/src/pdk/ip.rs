//! `kong.ip`: trusted addresses.

use crate::pdk::args::*;
use crate::pdk::kong::KongRequest;
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(super) fn ip(&mut self, m: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let a0 = arg(args, 0);
        let v = match m {
            "kong.ip.is_trusted" => {
                let ip = lua_text(a0).unwrap_or_default();
                Value::Bool(self.trusted(&ip))
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
