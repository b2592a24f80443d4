//! `kong.plugin`: the plugin entity id.

use crate::pdk::kong::KongRequest;
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(super) fn plugin(&mut self, m: &str, _args: &[Value]) -> Result<Value, PdkOutcome> {
        let v = match m {
            "kong.plugin.get_id" => Value::str(self.plugin_id.as_str()),
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
