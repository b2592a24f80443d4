//! Which plugin server to drive: the built-in reference server, a `kong.conf` entry, explicit
//! commands, or a named peer from `peers.toml`. Resolves to the three things Kong needs (query
//! command, start command, socket path, spec §1) and owns the private socket directory.

use std::path::{Path, PathBuf};

use crate::config::{self, ConfigError};
use crate::Protocol;

/// How the user named the server.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// `<exe> reference-server`: by default this very executable (every binary of the project
    /// has the hidden `reference-server` subcommand); tests name the `mock-kong` binary.
    Reference {
        protocol: Protocol,
        exe: Option<PathBuf>,
        /// `--fault` (and `--variation`) names passed to the reference server (conformance
        /// tests; empty normally).
        faults: Vec<String>,
    },
    /// A pluginserver from a `kong.conf` (and the `KONG_*` environment).
    KongConf {
        path: Option<PathBuf>,
        name: Option<String>,
    },
    /// `--start-cmd` / `--query-cmd`.
    Commands {
        name: String,
        start_cmd: Option<String>,
        query_cmd: String,
    },
    /// An entry of a peers registry (`peers.toml`).
    Peer { name: String, registry: PathBuf },
}

/// Where to put the socket (flags `--socket`, `--prefix`).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub socket: Option<PathBuf>,
    pub prefix: Option<PathBuf>,
}

/// A server ready to be queried and started.
#[derive(Debug)]
pub struct ResolvedTarget {
    /// A short description for reports: `reference (MsgPack:1)`, `peer go`, ...
    pub label: String,
    /// The pluginserver name (used in `[name:pid]` log prefixes).
    pub name: String,
    pub query_cmd: String,
    /// `None`: the server is managed externally; mock-kong only connects (spec §1).
    pub start_cmd: Option<String>,
    pub socket: PathBuf,
    pub prefix: PathBuf,
    /// The protocol the registry or flags promise, checked against the dump.
    pub expected_protocol: Option<Protocol>,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create a private socket directory: {0}")]
    TempDir(std::io::Error),
    #[error("cannot locate the mock-kong executable to start the reference server: {0}")]
    CurrentExe(std::io::Error),
    #[error("cannot read the peers registry {path}: {reason}")]
    Registry { path: PathBuf, reason: String },
    #[error("peer `{name}` is not in {path}; known peers: {known}")]
    UnknownPeer {
        name: String,
        path: PathBuf,
        known: String,
    },
    /// The registry lists the plugins of this peer (`plugins = [...]`), and not this one.
    #[error("peer `{name}` does not host plugin `{plugin}` (its `plugins` in {path}: {hosted})")]
    PluginNotHosted {
        name: String,
        plugin: String,
        path: PathBuf,
        hosted: String,
    },
}

/// Quotes `s` for `/bin/sh`.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A private (mode 0700) directory for sockets, removed when the target is dropped.
fn private_dir() -> Result<tempfile::TempDir, TargetError> {
    let dir = tempfile::Builder::new()
        .prefix("mock-kong-")
        .tempdir()
        .map_err(TargetError::TempDir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(TargetError::TempDir)?;
    }
    Ok(dir)
}

/// One peer entry of the registry; `{root}`, `{prefix}`, `{plugin}`, `{socket}` are expanded.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct PeerEntry {
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub kit: String,
    #[serde(default)]
    pub kit_version: String,
    #[serde(default)]
    pub protocol: String,
    pub start_cmd: String,
    pub query_cmd: String,
    pub socket: String,
    #[serde(default)]
    pub description: String,
    /// The plugins this peer hosts, when not every fixture (a kit that cannot express one);
    /// resolving another plugin fails with [`TargetError::PluginNotHosted`].
    #[serde(default)]
    pub plugins: Option<Vec<String>>,
}

/// Reads a peers registry: a TOML table `[peer.<name>]` (or top-level `[<name>]` tables).
pub fn load_registry(path: &Path) -> Result<Vec<(String, PeerEntry)>, TargetError> {
    let err = |reason: String| TargetError::Registry {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let table = match doc.get("peer").or_else(|| doc.get("peers")) {
        Some(toml::Value::Table(t)) => t.clone(),
        _ => doc,
    };
    let mut out = Vec::new();
    for (name, v) in table {
        if let toml::Value::Table(_) = v {
            let entry: PeerEntry = v
                .try_into()
                .map_err(|e: toml::de::Error| err(format!("peer `{name}`: {e}")))?;
            out.push((name, entry));
        }
    }
    Ok(out)
}

/// The default registry: `peers.toml` in the current directory or one of its parents.
pub fn default_registry() -> PathBuf {
    let mut dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    loop {
        let candidate = dir.join("peers.toml");
        if candidate.is_file() {
            return candidate;
        }
        if !dir.pop() {
            return PathBuf::from("peers.toml");
        }
    }
}

/// Resolves a target for `plugin` (used by the reference server and peer templates to pick
/// which plugin the dump lists first).
pub fn resolve(
    spec: &TargetSpec,
    placement: &Placement,
    plugin: &str,
) -> Result<ResolvedTarget, TargetError> {
    // A socket named explicitly decides the prefix; otherwise a prefix named explicitly; otherwise
    // a private temporary directory.
    let mut dir = None;
    let prefix = match (&placement.prefix, &placement.socket) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => s
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        (None, None) => {
            let d = private_dir()?;
            let p = d.path().to_path_buf();
            dir = Some(d);
            p
        }
    };
    let mut target = match spec {
        TargetSpec::Reference {
            protocol,
            exe,
            faults,
        } => {
            let exe = match exe {
                Some(e) => e.clone(),
                None => std::env::current_exe().map_err(TargetError::CurrentExe)?,
            };
            let exe = shell_quote(&exe.to_string_lossy());
            let proto = match protocol {
                Protocol::MsgPack => "msgpack",
                Protocol::ProtoBuf => "protobuf",
            };
            let socket = placement
                .socket
                .clone()
                .unwrap_or_else(|| prefix.join("reference.socket"));
            // A legal variation's name goes to --variation, anything else to --fault.
            let fault_args: String = faults
                .iter()
                .map(|f| {
                    let flag = match crate::reference::Variation::from_name(f) {
                        Some(_) => "--variation",
                        None => "--fault",
                    };
                    format!(" {flag} {}", shell_quote(f))
                })
                .collect();
            let (varied, broken): (Vec<&String>, Vec<&String>) = faults
                .iter()
                .partition(|f| crate::reference::Variation::from_name(f).is_some());
            let mut label = format!("reference ({protocol}");
            for (what, names) in [("faults", broken), ("variations", varied)] {
                if !names.is_empty() {
                    let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
                    label.push_str(&format!("; {what}: {}", names.join(", ")));
                }
            }
            label.push(')');
            ResolvedTarget {
                label,
                name: "reference".into(),
                query_cmd: format!(
                    "{exe} reference-server --protocol {proto} --plugin {}{fault_args} --dump",
                    shell_quote(plugin)
                ),
                start_cmd: Some(format!(
                    "{exe} reference-server --protocol {proto} --plugin {}{fault_args} --socket {}",
                    shell_quote(plugin),
                    shell_quote(&socket.to_string_lossy())
                )),
                socket,
                prefix: prefix.clone(),
                expected_protocol: Some(*protocol),
                _dir: None,
            }
        }
        TargetSpec::KongConf { path, name } => {
            let conf = config::load(path.as_deref())?;
            let def = config::select(&conf, name.as_deref())?.clone();
            let socket = placement.socket.clone().unwrap_or(def.socket);
            ResolvedTarget {
                label: format!("pluginserver {}", def.name),
                name: def.name,
                query_cmd: def.query_cmd,
                start_cmd: def.start_cmd,
                socket,
                prefix: conf.prefix,
                expected_protocol: None,
                _dir: None,
            }
        }
        TargetSpec::Commands {
            name,
            start_cmd,
            query_cmd,
        } => {
            let socket = placement
                .socket
                .clone()
                .unwrap_or_else(|| prefix.join(format!("{name}.socket")));
            // `{socket}` and `{prefix}` in the commands become the (shell-quoted) paths, so a
            // server can be told where to listen without guessing the private directory.
            let expand = |c: &str| {
                c.replace("{socket}", &shell_quote(&socket.to_string_lossy()))
                    .replace("{prefix}", &shell_quote(&prefix.to_string_lossy()))
            };
            ResolvedTarget {
                label: format!("pluginserver {name}"),
                name: name.clone(),
                query_cmd: expand(query_cmd),
                start_cmd: start_cmd.as_deref().map(expand),
                socket,
                prefix: prefix.clone(),
                expected_protocol: None,
                _dir: None,
            }
        }
        TargetSpec::Peer { name, registry } => {
            let peers = load_registry(registry)?;
            let Some((_, entry)) = peers.iter().find(|(n, _)| n == name) else {
                let known = peers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(TargetError::UnknownPeer {
                    name: name.clone(),
                    path: registry.clone(),
                    known,
                });
            };
            if let Some(hosted) = entry
                .plugins
                .as_ref()
                .filter(|l| !l.iter().any(|p| p == plugin))
            {
                return Err(TargetError::PluginNotHosted {
                    name: name.clone(),
                    plugin: plugin.to_owned(),
                    path: registry.clone(),
                    hosted: hosted.join(", "),
                });
            }
            let root = registry
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("."));
            // Commands go through /bin/sh, so substituted values are shell-quoted there; the
            // socket template is a plain path.
            let expand = |t: &str, quote: bool, socket: Option<&Path>| {
                let q = |s: &str| if quote { shell_quote(s) } else { s.to_owned() };
                let mut s = t
                    .replace("{root}", &q(&root.to_string_lossy()))
                    .replace("{prefix}", &q(&prefix.to_string_lossy()))
                    .replace("{plugin}", &q(plugin));
                if let Some(sock) = socket {
                    s = s.replace("{socket}", &q(&sock.to_string_lossy()));
                }
                s
            };
            let socket = placement
                .socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(expand(&entry.socket, false, None)));
            ResolvedTarget {
                label: format!("peer {name}"),
                name: format!("{name}-{plugin}"),
                query_cmd: expand(&entry.query_cmd, true, Some(&socket)),
                start_cmd: Some(expand(&entry.start_cmd, true, Some(&socket))),
                socket,
                prefix: prefix.clone(),
                expected_protocol: Protocol::from_dump(&entry.protocol),
                _dir: None,
            }
        }
    };
    target._dir = dir;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_and_prefix_placeholders_expand_in_commands() {
        let spec = TargetSpec::Commands {
            name: "my plugin".into(),
            start_cmd: Some("./server --socket {socket} --kong-prefix {prefix}".into()),
            query_cmd: "./server --dump --kong-prefix {prefix}".into(),
        };
        let t = resolve(&spec, &Placement::default(), "p").expect("resolve");
        let socket = t.socket.to_string_lossy().into_owned();
        assert!(socket.ends_with("/my plugin.socket"), "{socket}");
        let start = t.start_cmd.as_deref().expect("start");
        assert_eq!(
            start,
            format!(
                "./server --socket {} --kong-prefix {}",
                shell_quote(&socket),
                shell_quote(&t.prefix.to_string_lossy())
            )
        );
        assert!(!t.query_cmd.contains('{'), "{}", t.query_cmd);
        // An explicit socket is what {socket} names.
        let placement = Placement {
            socket: Some(PathBuf::from("/run/k/s.sock")),
            prefix: None,
        };
        let t = resolve(&spec, &placement, "p").expect("resolve");
        assert!(t
            .start_cmd
            .unwrap()
            .contains("--socket /run/k/s.sock --kong-prefix /run/k"));
    }

    /// A peer whose kit cannot express every fixture lists what it hosts (peers.toml
    /// `plugins`); the others fail to resolve with an error naming the list.
    #[test]
    fn a_peer_with_a_plugin_list_resolves_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("peers.toml");
        std::fs::write(
            &registry,
            "[peers.k]\nstart_cmd = \"srv {plugin}\"\nquery_cmd = \"srv {plugin} -dump\"\n\
             socket = \"{prefix}/kong/{plugin}.socket\"\nplugins = [\"hello\", \"exit\"]\n\
             [peers.all]\nstart_cmd = \"a\"\nquery_cmd = \"a -dump\"\nsocket = \"{prefix}/a\"\n",
        )
        .unwrap();
        let spec = |name: &str| TargetSpec::Peer {
            name: name.into(),
            registry: registry.clone(),
        };
        let t = resolve(&spec("k"), &Placement::default(), "exit").expect("exit is hosted");
        assert_eq!(t.query_cmd, "srv exit -dump");
        assert!(t.socket.ends_with("kong/exit.socket"), "{:?}", t.socket);
        let e = resolve(&spec("k"), &Placement::default(), "multiphase").unwrap_err();
        assert!(matches!(e, TargetError::PluginNotHosted { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("peer `k` does not host plugin `multiphase` (its `plugins` in "),
            "{e}"
        );
        assert!(e.to_string().ends_with(": hello, exit)"), "{e}");
        // Without a list every plugin resolves.
        assert!(resolve(&spec("all"), &Placement::default(), "multiphase").is_ok());
    }
}
