//! Plugin-server definitions: from a `kong.conf` (plus `KONG_*` environment overrides) exactly as
//! Kong 3.9 resolves them (spec §1), or from command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Kong's default prefix.
pub const DEFAULT_PREFIX: &str = "/usr/local/kong";
/// Kong 3.9's `DEFAULT_PLUGINSERVER_PATH`.
pub const DEFAULT_PLUGINSERVER_PATH: &str = "/usr/local/bin";

/// One entry of `conf.pluginservers` (spec §1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerDef {
    /// The pluginserver name, lower-cased (dashes kept).
    pub name: String,
    pub socket: PathBuf,
    /// `None`: "assuming external process management".
    pub start_cmd: Option<String>,
    pub query_cmd: String,
}

/// What a configuration resolved to.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KongConf {
    pub prefix: PathBuf,
    pub servers: Vec<ServerDef>,
    /// Kong's warnings, verbatim (e.g. `start_command undefined for pluginserver x; ...`).
    pub warnings: Vec<String>,
}

/// A configuration Kong would refuse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Syntax { path: PathBuf, line: usize, message: String },
    /// Kong's own message: `query_command undefined for pluginserver <name>`.
    #[error("query_command undefined for pluginserver {0}")]
    NoQueryCommand(String),
    #[error("no plugin servers configured: `pluginserver_names` is empty (set it in the kong.conf or KONG_PLUGINSERVER_NAMES)")]
    NoServers,
    #[error("pluginserver `{wanted}` is not configured; configured: {available}")]
    UnknownServer { wanted: String, available: String },
}

/// Parses kong.conf text into `key -> value` (Kong's rules: `#` comments, `\#` escapes).
pub fn parse_conf_text(path: &Path, text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let _ = (path, text);
    todo!()
}

/// Resolves plugin servers from conf entries and the environment (`KONG_*` wins), with the given
/// default binary directory (Kong's `DEFAULT_PLUGINSERVER_PATH`, injectable for tests).
pub fn resolve(
    conf: &BTreeMap<String, String>,
    env: &[(String, String)],
    default_bin_dir: &Path,
) -> Result<KongConf, ConfigError> {
    let _ = (conf, env, default_bin_dir);
    todo!()
}

/// Reads `path` (if any) and the process environment, and resolves.
pub fn load(path: Option<&Path>) -> Result<KongConf, ConfigError> {
    let conf = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|source| ConfigError::Read { path: p.to_owned(), source })?;
            parse_conf_text(p, &text)?
        }
        None => BTreeMap::new(),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    resolve(&conf, &env, Path::new(DEFAULT_PLUGINSERVER_PATH))
}

/// Picks one server: by name, or the only/first one when `name` is `None`.
pub fn select<'a>(conf: &'a KongConf, name: Option<&str>) -> Result<&'a ServerDef, ConfigError> {
    let _ = (conf, name);
    todo!()
}
