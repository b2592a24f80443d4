//! Kong's plugin-instance cache and the config JSON it sends (docs/protocol.md §4.3, §4.6).
//!
//! Kong keys instances by the plugin entity's UUID and reuses one while `__seq__` and
//! `__plugin_id` are unchanged. Otherwise it sends `StartInstance(new)` and, after it succeeds,
//! `CloseInstance(old)`. On "no plugin instance" (MsgPack) or a closed connection (ProtoBuf) it
//! drops every cached instance of the plugin and retries the whole event, without bound; here the
//! retries are bounded by [`HostOptions::max_retries`](super::HostOptions) and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Client, EventReport, FailedEvent, HostError};
use crate::pdk::{Pdk, DEFAULT_WS_ID};

/// A configured plugin, as Kong's plugins iterator sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginEntity {
    /// The plugin entity's UUID (`__plugin_id`, the instance-cache key).
    pub id: String,
    /// The plugin name (the dump's `Name`).
    pub name: String,
    /// The plugin's `config` record.
    pub config: serde_json::Map<String, serde_json::Value>,
    pub route_id: Option<String>,
    pub service_id: Option<String>,
    pub consumer_id: Option<String>,
    pub instance_name: Option<String>,
    pub ws_id: String,
    /// `__seq__`: regenerated whenever Kong rebuilds its plugins iterator (docs/protocol.md §4.3). Since
    /// Kong 3.6 it comes from a counter shared by all workers; go-pdk uses it as the instance id.
    pub seq: i64,
}

/// Kong's shared `__seq__` counter (docs/protocol.md §4.3: unique across workers, starts at 1).
static NEXT_SEQ: AtomicI64 = AtomicI64::new(1);

fn next_seq() -> i64 {
    NEXT_SEQ.fetch_add(1, Ordering::Relaxed)
}

impl PluginEntity {
    /// A global plugin with a UUID derived from its name (stable across runs).
    pub fn new(name: &str, config: serde_json::Map<String, serde_json::Value>) -> PluginEntity {
        PluginEntity {
            id: uuid_from(name),
            name: name.to_owned(),
            config,
            route_id: None,
            service_id: None,
            consumer_id: None,
            instance_name: None,
            ws_id: DEFAULT_WS_ID.to_owned(),
            seq: next_seq(),
        }
    }

    /// What a config change (any plugins-iterator rebuild) does: a fresh `__seq__`, so the next
    /// event starts a new instance and closes the old one (docs/protocol.md §4.6).
    pub fn rebuild(&mut self) {
        self.seq = next_seq();
    }

    /// Kong's cache key: `plugins:<name>:<route>:<service>:<consumer>::<ws_id>`.
    pub fn cache_key(&self) -> String {
        let o = |x: &Option<String>| x.clone().unwrap_or_default();
        format!(
            "plugins:{}:{}:{}:{}::{}",
            self.name,
            o(&self.route_id),
            o(&self.service_id),
            o(&self.consumer_id),
            self.ws_id
        )
    }

    /// The `Config` string Kong sends in StartInstance: `cjson.encode(conf)` of the config
    /// record plus the keys `get_plugin_config` adds (docs/protocol.md §4.3). lua-cjson escapes `/` as `\/`.
    pub fn kong_config_json(&self) -> String {
        use serde_json::Value as J;
        let mut conf = self.config.clone();
        for (k, v) in [
            ("route_id", &self.route_id),
            ("service_id", &self.service_id),
            ("consumer_id", &self.consumer_id),
            ("plugin_instance_name", &self.instance_name),
        ] {
            if let Some(v) = v {
                conf.insert(k.into(), J::String(v.clone()));
            }
        }
        conf.insert("__plugin_id".into(), J::String(self.id.clone()));
        conf.insert("__ws_id".into(), J::String(self.ws_id.clone()));
        conf.insert("__key__".into(), J::String(self.cache_key()));
        conf.insert("__seq__".into(), J::from(self.seq));
        crate::lua::cjson_escape(&J::Object(conf).to_string())
    }
}

/// A UUID-shaped id derived from `seed` (FNV-1a based; stable, not random).
pub fn uuid_from(seed: &str) -> String {
    let mut h1: u64 = 0xcbf29ce484222325;
    let mut h2: u64 = 0x84222325cbf29ce4;
    for b in seed.bytes() {
        h1 = (h1 ^ u64::from(b)).wrapping_mul(0x100000001b3);
        h2 = (h2 ^ u64::from(b)).wrapping_mul(0x1000193).rotate_left(7);
    }
    let x = (u128::from(h1) << 64) | u128::from(h2);
    let s = format!("{x:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &s[0..8],
        &s[8..12],
        &s[13..16],
        &s[17..20],
        &s[20..32]
    )
}

#[derive(Debug, Clone)]
struct CacheEntry {
    id: i64,
    seq: i64,
    plugin_name: String,
}

/// Counters of instance traffic, for reports and conformance checks.
#[derive(Debug, Default)]
pub struct InstanceStats {
    pub started: AtomicU64,
    pub closed: AtomicU64,
    pub resets: AtomicU64,
    pub retries: AtomicU64,
}

/// Runs events the way Kong's `plugin_servers/plugin.lua` does, for one server.
pub struct PluginRunner {
    client: Arc<Client>,
    cache: Mutex<HashMap<String, CacheEntry>>,
    creating: tokio::sync::Mutex<()>,
    pid_changes_seen: AtomicU64,
    pub stats: InstanceStats,
}

impl PluginRunner {
    pub fn new(client: Arc<Client>) -> PluginRunner {
        PluginRunner {
            client,
            cache: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            pid_changes_seen: AtomicU64::new(0),
            stats: InstanceStats::default(),
        }
    }

    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    fn cached(&self, entity: &PluginEntity) -> Option<i64> {
        self.check_server_pid();
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&entity.id)
            .filter(|e| e.seq == entity.seq)
            .map(|e| e.id)
    }

    /// MsgPack: a `serverPid` notification with a new pid drops the cached instances (docs/protocol.md §4.6).
    fn check_server_pid(&self) {
        if let Client::MsgPack(c) = &*self.client {
            let now = c.pid_changes();
            if self.pid_changes_seen.swap(now, Ordering::Relaxed) != now {
                self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
        }
    }

    /// The instance id for `entity`, starting (and replacing) instances as Kong does.
    pub async fn instance_for(&self, entity: &PluginEntity) -> Result<i64, HostError> {
        if let Some(id) = self.cached(entity) {
            return Ok(id);
        }
        let _claim = self.creating.lock().await;
        if let Some(id) = self.cached(entity) {
            return Ok(id);
        }
        let started = self
            .client
            .start_instance(&entity.name, &entity.kong_config_json())
            .await?;
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        let old = self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
            entity.id.clone(),
            CacheEntry {
                id: started.id,
                seq: entity.seq,
                plugin_name: entity.name.clone(),
            },
        );
        if let Some(old) = old {
            // StartInstance(new) then CloseInstance(old); Kong ignores the outcome.
            if self.client.close_instance(old.id).await.is_ok() {
                self.stats.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(started.id)
    }

    /// Drops every cached instance of `plugin_name` (Kong's `reset_instance`).
    pub fn reset(&self, plugin_name: &str) {
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.plugin_name != plugin_name);
    }

    /// Runs one phase of one request through the plugin, retrying after an instance reset as
    /// Kong does (bounded). The report's `retries` says how often that happened.
    pub async fn run_event(
        &self,
        entity: &PluginEntity,
        phase: &str,
        pdk: &mut dyn Pdk,
    ) -> Result<EventReport, HostError> {
        self.run_event_keeping(entity, phase, pdk)
            .await
            .map_err(|f| f.error)
    }

    /// [`PluginRunner::run_event`], keeping the transcript of a failed event: the PDK calls
    /// its last attempt answered before the failure.
    pub async fn run_event_keeping(
        &self,
        entity: &PluginEntity,
        phase: &str,
        pdk: &mut dyn Pdk,
    ) -> Result<EventReport, FailedEvent> {
        let protocol = self.client.protocol();
        let max = self.client.options().max_retries;
        let mut retries = 0;
        let mut notes = Vec::new();
        loop {
            let mut report = EventReport::new(phase, 0);
            let attempt = async {
                let id = self.instance_for(entity).await?;
                report.instance_id = id;
                self.client
                    .handle_event_into(id, phase, pdk, &mut report)
                    .await
            }
            .await;
            report.retries = retries;
            report.findings.splice(0..0, notes.iter().cloned());
            match attempt {
                Ok(()) => return Ok(report),
                Err(e) if e.triggers_reset(protocol) => {
                    self.reset(&entity.name);
                    if retries >= max {
                        return Err(FailedEvent::new(
                            HostError::RetriesExhausted {
                                retries,
                                last: Box::new(e),
                            },
                            report,
                        ));
                    }
                    notes.push(format!("instance reset and event retried after: {e}"));
                    retries += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => return Err(FailedEvent::new(error, report)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_carries_kong_keys_and_escapes_slashes() {
        let mut cfg = serde_json::Map::new();
        cfg.insert("message".into(), "a/b".into());
        let mut e = PluginEntity::new("go-hello", cfg);
        e.route_id = Some("r1".into());
        e.seq = 7;
        let mut other = PluginEntity::new("go-hello", serde_json::Map::new());
        let before = other.seq;
        other.rebuild();
        assert!(other.seq > before && other.seq != e.seq);
        let json = e.kong_config_json();
        assert!(json.contains(r#""message":"a\/b""#), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["__seq__"], 7);
        assert_eq!(back["route_id"], "r1");
        assert_eq!(back["__plugin_id"], e.id.as_str());
        assert_eq!(
            back["__key__"],
            format!("plugins:go-hello:r1::::{DEFAULT_WS_ID}")
        );
        assert!(back.get("service_id").is_none());
    }

    #[test]
    fn uuids_are_stable_and_shaped() {
        let a = uuid_from("hello");
        assert_eq!(a, uuid_from("hello"));
        assert_ne!(a, uuid_from("hellp"));
        let parts: Vec<_> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
    }
}
