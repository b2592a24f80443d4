//! `kong.router`: the matched route and service.

use crate::pdk::kong::KongRequest;
use crate::pdk::phase::*;
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(super) fn router(&mut self, m: &str, _args: &[Value]) -> Result<Value, PdkOutcome> {
        let v = match m {
            "kong.router.get_route" => {
                self.check(AUTH_AND_LATER)?;
                self.route.clone().unwrap_or(Value::Nil)
            }
            "kong.router.get_service" => {
                self.check(AUTH_AND_LATER)?;
                self.service.clone().unwrap_or(Value::Nil)
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
