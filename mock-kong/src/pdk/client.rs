//! `kong.client`: the client's address (forwarded only from trusted proxies), the consumer
//! and credential, authentication.

use crate::pdk::args::*;
use crate::pdk::kong::KongRequest;
use crate::pdk::phase::*;
use crate::pdk::PdkOutcome;
use crate::Value;

impl KongRequest {
    pub(super) fn client(&mut self, m: &str, args: &[Value]) -> Result<Value, PdkOutcome> {
        let raise = |m: String| PdkOutcome::Raise(m);
        let a0 = arg(args, 0);
        let a1 = arg(args, 1);
        let v = match m {
            "kong.client.get_ip" => {
                self.live()?;
                Value::str(self.client.client_ip.as_str())
            }
            "kong.client.get_forwarded_ip" => {
                self.live()?;
                Value::str(
                    self.forwarded("x-forwarded-for")
                        .unwrap_or_else(|| self.client.client_ip.clone()),
                )
            }
            "kong.client.get_port" => {
                self.live()?;
                Value::Int(self.client.client_port)
            }
            "kong.client.get_forwarded_port" => {
                self.live()?;
                Value::Int(
                    self.forwarded("x-forwarded-port")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(self.client.client_port),
                )
            }
            "kong.client.get_credential" => {
                self.check(AUTH_AND_LATER)?;
                self.credential.clone().unwrap_or(Value::Nil)
            }
            "kong.client.get_consumer" => {
                self.check(AUTH_AND_LATER)?;
                self.consumer.clone().unwrap_or(Value::Nil)
            }
            "kong.client.load_consumer" => {
                self.check(AUTH_AND_LATER)?;
                let Some(id) = string_arg(a0) else {
                    return Err(raise("consumer_id must be a string".into()));
                };
                let by_username = a1.is_truthy();
                if !by_username && !is_uuid(&id) {
                    return Err(raise(
                        "cannot load a consumer with an id that is not a uuid".into(),
                    ));
                }
                self.find_consumer(&id, by_username).unwrap_or(Value::Nil)
            }
            "kong.client.authenticate" => {
                self.check(ACCESS)?;
                if !matches!(a0, Value::Nil | Value::Map(_) | Value::Array(_)) {
                    return Err(raise("consumer must be a table or nil".into()));
                }
                if !matches!(a1, Value::Nil | Value::Map(_) | Value::Array(_)) {
                    return Err(raise("credential must be a table or nil".into()));
                }
                if a0.is_nil() && a1.is_nil() {
                    return Err(raise(
                        "either credential or consumer must be provided".into(),
                    ));
                }
                self.consumer = (!a0.is_nil()).then(|| a0.clone());
                self.credential = (!a1.is_nil()).then(|| a1.clone());
                Value::Nil
            }
            "kong.client.get_protocol" => {
                self.check(AUTH_AND_LATER)?;
                self.live()?;
                let terminated = a0.is_truthy()
                    && self.trusted(&self.client.client_ip)
                    && self.client.headers.get("x-forwarded-proto").is_some();
                if terminated {
                    Value::str(
                        self.client
                            .headers
                            .get("x-forwarded-proto")
                            .unwrap_or("http")
                            .to_ascii_lowercase(),
                    )
                } else {
                    Value::str(self.client.scheme.as_str())
                }
            }
            _ => return Err(PdkOutcome::NotFound),
        };
        Ok(v)
    }
}
