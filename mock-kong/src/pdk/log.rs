//! `kong.log`: log lines (kept in the request's record) and the serializer's values.

use crate::pdk::args::*;
use crate::pdk::kong::KongRequest;
use crate::pdk::phase::*;
use crate::pdk::{serialize, PdkOutcome};
use crate::Value;

impl KongRequest {
    pub(super) fn log(&mut self, m: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        let a0 = arg(args, 0);
        let a1 = arg(args, 1);
        let v = match m {
            "kong.log.alert" | "kong.log.crit" | "kong.log.err" | "kong.log.warn"
            | "kong.log.notice" | "kong.log.info" | "kong.log.debug" => {
                let level = m.trim_start_matches("kong.log.");
                let text: String = args.iter().map(lua_tostring).collect();
                self.log_line(level, text);
                Value::Nil
            }
            "kong.log.inspect" => {
                let text: Vec<String> = args.iter().map(lua_tostring).collect();
                self.log_line("debug", text.join(" "));
                Value::Nil
            }
            "kong.log.set_serialize_value" => {
                self.check(WITH_CTX)?;
                let Some(k) = string_arg(a0) else {
                    return Err(raise("key must be a string".into()));
                };
                let mode = arg(args, 2)
                    .get("mode")
                    .and_then(Value::as_str)
                    .unwrap_or("set")
                    .to_owned();
                if !["set", "add", "replace"].contains(&mode.as_str()) {
                    return Err(raise("mode must be 'set', 'add' or 'replace'".into()));
                }
                if matches!(a1, Value::Ext(..)) {
                    return Err(raise("value must be nil, a number, string, boolean or a non-self-referencial table containing numbers, string and booleans".into()));
                }
                self.serialize_values.retain(|(key, _)| *key != k);
                self.serialize_values.push((k, a1.clone()));
                Value::Nil
            }
            "kong.log.serialize" => {
                self.check(LOG)?;
                // Only reached in log without a snapshot (not through the runner).
                Value::str(cjson_escape(&serialize::serialize(self).to_string()))
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
