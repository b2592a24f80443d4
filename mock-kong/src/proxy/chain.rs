//! The plugins of the proxy, in the order Kong's plugins iterator runs them.

use crate::dump::PluginInfo;
use crate::host::{HostOptions, PluginEntity};
use crate::pdk::{KongVersion, Phase};
use crate::session::{Session, SessionError, SessionOptions};
use crate::target::{self, Placement, TargetError, TargetSpec};
use crate::Protocol;

/// The phases an HTTP request can run, in Kong's order (docs/protocol.md §6; `certificate` needs TLS and
/// `preread` is the stream subsystem's, so neither runs here).
pub const HTTP_PHASES: [Phase; 4] = [Phase::Rewrite, Phase::Access, Phase::Response, Phase::Log];

/// One configured plugin: the entity Kong would hold, what its server's dump declared, and how
/// to reach that server.
#[derive(Debug, Clone)]
pub struct ChainPlugin {
    pub entity: PluginEntity,
    pub info: PluginInfo,
    pub protocol: Protocol,
    /// How each proxy worker connects to the plugin's server (its own pool per worker).
    pub host: HostOptions,
    /// The server, for the banner: `peer go`, `reference (MsgPack:1)`, ...
    pub server: String,
    /// The server's pid when the proxy started (for the banner).
    pub pid: Option<u32>,
}

impl ChainPlugin {
    /// The plugin `info` of `session`'s server, configured with `config`.
    pub fn new(
        session: &Session,
        info: PluginInfo,
        config: serde_json::Map<String, serde_json::Value>,
    ) -> ChainPlugin {
        ChainPlugin {
            entity: PluginEntity::new(&info.name, config),
            protocol: session.protocol(),
            host: session.client().options().clone(),
            server: session.target.label.clone(),
            pid: session.process.as_ref().and_then(|p| p.pid()),
            info,
        }
    }

    /// The declared phases an HTTP request runs, in Kong's order.
    pub fn http_phases(&self) -> Vec<Phase> {
        HTTP_PHASES
            .into_iter()
            .filter(|p| self.info.phases.iter().any(|d| d == p.as_str()))
            .collect()
    }
}

/// The plugins in Kong's order: priority, highest first; equal priorities by name, descending
/// (`kong/runloop/plugins_iterator.lua`, `sort_by_handler_priority`).
#[derive(Debug, Clone, Default)]
pub struct PluginChain {
    plugins: Vec<ChainPlugin>,
}

impl PluginChain {
    pub fn new(mut plugins: Vec<ChainPlugin>) -> PluginChain {
        plugins.sort_by(|a, b| {
            let (pa, pb) = (a.info.priority, b.info.priority);
            if pa == pb && pa != 0 {
                b.info.name.cmp(&a.info.name)
            } else {
                pb.cmp(&pa)
            }
        });
        PluginChain { plugins }
    }

    pub fn plugins(&self) -> &[ChainPlugin] {
        &self.plugins
    }

    /// Whether a plugin has a `response` handler: Kong then buffers the upstream answer.
    pub fn buffers(&self) -> bool {
        self.plugins
            .iter()
            .any(|p| p.http_phases().contains(&Phase::Response))
    }
}

/// Why the plugins of a proxy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("plugin `{plugin}`: {reason}")]
    Plugin { plugin: String, reason: String },
}

/// Opens the server of each plugin named in `plugins` (`(name, config)`) as `spec` and
/// `placement` say, one session per server (plugins whose targets have the same query command
/// share it), and returns the sessions (the caller closes them) with the chain. On an error
/// the sessions opened so far are closed.
pub async fn open_chain(
    spec: &TargetSpec,
    placement: &Placement,
    plugins: &[(String, serde_json::Map<String, serde_json::Value>)],
    opts: &SessionOptions,
    version: KongVersion,
) -> Result<(Vec<Session>, PluginChain), ChainError> {
    let mut sessions: Vec<Session> = Vec::new();
    let mut chain = Vec::new();
    let mut failed = None;
    for (name, config) in plugins {
        let added = async {
            let resolved = target::resolve(spec, placement, name)?;
            let i = match sessions
                .iter()
                .position(|s| s.target.query_cmd == resolved.query_cmd)
            {
                Some(i) => i,
                None => {
                    sessions.push(Session::open(resolved, opts).await?);
                    sessions.len() - 1
                }
            };
            let session = &sessions[i];
            let info = session
                .registered_plugin(name, version)
                .map_err(|reason| ChainError::Plugin {
                    plugin: name.clone(),
                    reason,
                })?
                .clone();
            Ok::<_, ChainError>(ChainPlugin::new(session, info, config.clone()))
        }
        .await;
        match added {
            Ok(p) => chain.push(p),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    match failed {
        None => Ok((sessions, PluginChain::new(chain))),
        Some(e) => {
            for s in sessions {
                let _ = s.close().await;
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(name: &str, priority: i64, phases: &[&str]) -> ChainPlugin {
        ChainPlugin {
            entity: PluginEntity::new(name, serde_json::Map::new()),
            info: PluginInfo {
                name: name.into(),
                priority,
                version: "0.1.0".into(),
                phases: phases.iter().map(|p| (*p).to_owned()).collect(),
                schema: serde_json::Value::Null,
            },
            protocol: Protocol::MsgPack,
            host: HostOptions::new("/nonexistent.socket", Protocol::MsgPack),
            server: "test".into(),
            pid: None,
        }
    }

    #[test]
    fn plugins_run_by_priority_then_name_descending() {
        let chain = PluginChain::new(vec![
            plugin("a", 10, &["access"]),
            plugin("b", 1000, &["access"]),
            plugin("c", 10, &["access"]),
            plugin("z", 0, &["access"]),
            plugin("y", 0, &["access"]),
        ]);
        let names: Vec<_> = chain
            .plugins()
            .iter()
            .map(|p| p.info.name.as_str())
            .collect();
        // Equal non-zero priorities: by name, descending; zero priorities keep their order.
        assert_eq!(names, ["b", "c", "a", "z", "y"]);
    }

    #[test]
    fn only_http_phases_run_in_kong_order() {
        let p = plugin(
            "m",
            1,
            &["log", "access", "preread", "response", "certificate"],
        );
        assert_eq!(
            p.http_phases(),
            [Phase::Access, Phase::Response, Phase::Log]
        );
        assert!(PluginChain::new(vec![p]).buffers());
        assert!(!PluginChain::new(vec![plugin("h", 1, &["access"])]).buffers());
    }
}
