//! `kong.node`: the node's id, hostname and memory statistics.

use crate::pdk::kong::KongRequest;
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(super) fn node(&mut self, m: &str, _args: &[Value]) -> Result<Value, PdkOutcome> {
        let v = match m {
            "kong.node.get_id" => Value::str(self.node_id.as_str()),
            "kong.node.get_hostname" => Value::str(self.hostname.as_str()),
            "kong.node.get_memory_stats" => {
                let dict = |cap: i64| {
                    Value::map([
                        ("allocated_slabs", Value::Int(cap / 8)),
                        ("capacity", Value::Int(cap)),
                    ])
                };
                Value::map([
                    (
                        "lua_shared_dicts",
                        Value::map([
                            ("kong", dict(5_242_880)),
                            ("kong_db_cache", dict(134_217_728)),
                        ]),
                    ),
                    (
                        "workers_lua_vms",
                        Value::Array(vec![Value::map([
                            ("http_allocated_gc", Value::Int(1_048_576)),
                            ("pid", Value::Int(i64::from(std::process::id()))),
                        ])]),
                    ),
                ])
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
