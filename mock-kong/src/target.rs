//! Which plugin server to drive: the built-in reference server, a `kong.conf` entry, explicit
//! commands, or a named peer from `peers.toml`. Resolves to the three things Kong needs (query
//! command, start command, socket path, docs/protocol.md §1) and owns the private socket
//! directory.
//!
//! # Where the socket is (no guesswork)
//!
//! * `--socket PATH`: that path; a relative one lies in the prefix.
//! * otherwise Kong 3.9's default, `<prefix>/<name>.socket` (`name`: the pluginserver name; for
//!   commands without `--name`, the dump's first plugin, see [`name_from_dump`]).
//! * the prefix: `--prefix DIR`, else the directory of an absolute `--socket`, else (kong.conf)
//!   the conf's `prefix`, else a private (mode 0700) temporary directory removed afterwards.
//! * `{socket}`, `{prefix}` and `{name}` in `--start-cmd`/`--query-cmd` (and `{socket}`,
//!   `{prefix}`, `{plugin}`, `{root}` in peers.toml) become those paths, shell-quoted, so the
//!   server can be told where to listen. A kong.conf is taken as Kong takes it: verbatim.

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
    /// `--start-cmd` / `--query-cmd`. `name`: the pluginserver name (`--name`); `None` until
    /// [`name_from_dump`] names it after the dump's first plugin (a fallback taken from the
    /// command's first word is used if nobody does).
    Commands {
        name: Option<String>,
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
    /// `None`: the server is managed externally; mock-kong only connects (docs/protocol.md §1).
    pub start_cmd: Option<String>,
    pub socket: PathBuf,
    pub prefix: PathBuf,
    /// The protocol the registry or flags promise, checked against the dump.
    pub expected_protocol: Option<Protocol>,
    /// Kong's warnings about the configuration and mock-kong's hints (kong.conf targets).
    pub warnings: Vec<String>,
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
    /// `{name}`/`{socket}` in a query command whose server is named after its own dump.
    #[error("the query command `{cmd}` uses `{placeholder}`, which depends on the pluginserver name, and the name is taken from the query command's dump: give the name with --name, or leave `{placeholder}` out of the query command")]
    NameCycle { cmd: String, placeholder: String },
    #[error(transparent)]
    Dump(#[from] crate::dump::DumpError),
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

/// The plugin the reference server and the peers are asked for when none is named (`hello`).
pub const DEFAULT_PLUGIN: &str = "hello";

/// Resolves a target for `plugin` (used by the reference server and peer templates to pick
/// which plugin the dump lists first).
pub fn resolve(
    spec: &TargetSpec,
    placement: &Placement,
    plugin: &str,
) -> Result<ResolvedTarget, TargetError> {
    // A prefix named explicitly; otherwise the directory of an absolute socket named explicitly;
    // otherwise a private temporary directory. A relative socket lies in the prefix.
    let mut dir = None;
    let explicit_prefix = placement.prefix.clone().or_else(|| {
        placement
            .socket
            .as_ref()
            .filter(|s| s.is_absolute())
            .map(|s| {
                s.parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| "/".into())
            })
    });
    let prefix = match explicit_prefix {
        Some(p) => p,
        None => {
            let d = private_dir()?;
            let p = d.path().to_path_buf();
            dir = Some(d);
            p
        }
    };
    let socket_in = |prefix: &Path| placement.socket.as_ref().map(|s| prefix.join(s));
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
            let socket = socket_in(&prefix).unwrap_or_else(|| prefix.join("reference.socket"));
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
                warnings: Vec::new(),
                _dir: None,
            }
        }
        TargetSpec::KongConf { path, name } => {
            let conf = config::load(path.as_deref())?;
            let def = config::select(&conf, name.as_deref())?.clone();
            // A relative --socket lies in the conf's prefix unless --prefix names another.
            let base = placement.prefix.clone().unwrap_or(conf.prefix.clone());
            let socket = socket_in(&base).unwrap_or(def.socket);
            let warnings = conf
                .warnings
                .iter()
                .filter(|w| !w.contains("pluginserver ") || w.contains(&def.name))
                .cloned()
                .collect();
            ResolvedTarget {
                label: format!("pluginserver {}", def.name),
                name: def.name,
                query_cmd: def.query_cmd,
                start_cmd: def.start_cmd,
                socket,
                prefix: conf.prefix,
                expected_protocol: None,
                warnings,
                _dir: None,
            }
        }
        TargetSpec::Commands {
            name,
            start_cmd,
            query_cmd,
        } => {
            let name = name.clone().unwrap_or_else(|| name_of_command(query_cmd));
            // Kong 3.9's default socket: <prefix>/<name>.socket.
            let socket =
                socket_in(&prefix).unwrap_or_else(|| prefix.join(format!("{name}.socket")));
            // `{socket}`, `{prefix}` and `{name}` in the commands become the (shell-quoted)
            // paths and name, so a server can be told where to listen without guessing the
            // private directory.
            let expand = |c: &str| {
                c.replace("{socket}", &shell_quote(&socket.to_string_lossy()))
                    .replace("{prefix}", &shell_quote(&prefix.to_string_lossy()))
                    .replace("{name}", &shell_quote(&name))
            };
            ResolvedTarget {
                label: format!("pluginserver {name}"),
                name: name.clone(),
                query_cmd: expand(query_cmd),
                start_cmd: start_cmd.as_deref().map(expand),
                socket,
                prefix: prefix.clone(),
                expected_protocol: None,
                warnings: Vec::new(),
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
            let socket = socket_in(&prefix)
                .unwrap_or_else(|| PathBuf::from(expand(&entry.socket, false, None)));
            ResolvedTarget {
                label: format!("peer {name}"),
                name: format!("{name}-{plugin}"),
                query_cmd: expand(&entry.query_cmd, true, Some(&socket)),
                start_cmd: Some(expand(&entry.start_cmd, true, Some(&socket))),
                socket,
                prefix: prefix.clone(),
                expected_protocol: Protocol::from_dump(&entry.protocol),
                warnings: Vec::new(),
                _dir: None,
            }
        }
    };
    target._dir = dir;
    Ok(target)
}

/// A pluginserver name from a command line, when nothing better is known: the file name of its
/// first word.
fn name_of_command(cmd: &str) -> String {
    let first = cmd.split_whitespace().next().unwrap_or("custom");
    match first.rsplit('/').next() {
        Some(base) if !base.is_empty() && !base.contains('{') => base.to_owned(),
        _ => "custom".into(),
    }
}

/// Names a [`TargetSpec::Commands`] without a name after its dump's first plugin (the name a
/// user gives the pluginserver in kong.conf, and so Kong's default socket
/// `<prefix>/<plugin>.socket`), by running its query command once. Other specs are left alone.
pub async fn name_from_dump(
    spec: &mut TargetSpec,
    placement: &Placement,
    timeout: std::time::Duration,
) -> Result<(), TargetError> {
    let TargetSpec::Commands {
        name: name @ None,
        query_cmd,
        ..
    } = spec
    else {
        return Ok(());
    };
    for placeholder in ["{name}", "{socket}"] {
        if query_cmd.contains(placeholder) {
            return Err(TargetError::NameCycle {
                cmd: query_cmd.clone(),
                placeholder: placeholder.into(),
            });
        }
    }
    let probe = TargetSpec::Commands {
        name: Some("unnamed".into()),
        start_cmd: None,
        query_cmd: query_cmd.clone(),
    };
    let resolved = resolve(&probe, placement, "")?;
    let out = crate::dump::query(&resolved.query_cmd, timeout).await?;
    *name = Some(out.dump.plugin().name.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_and_prefix_placeholders_expand_in_commands() {
        let spec = TargetSpec::Commands {
            name: Some("my plugin".into()),
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

    /// A relative --socket lies in the prefix (the private directory, --prefix, or a kong.conf's
    /// prefix); `{name}` is the pluginserver name.
    #[test]
    fn a_relative_socket_lies_in_the_prefix_and_name_expands() {
        let spec = TargetSpec::Commands {
            name: Some("greet".into()),
            start_cmd: Some("srv -p {prefix} --socket-name {name}.sock".into()),
            query_cmd: "srv --dump".into(),
        };
        let placement = Placement {
            socket: Some(PathBuf::from("greet.sock")),
            prefix: None,
        };
        let t = resolve(&spec, &placement, "").expect("resolve");
        assert_eq!(t.socket, t.prefix.join("greet.sock"));
        assert!(t.prefix.starts_with(std::env::temp_dir()), "{:?}", t.prefix);
        assert_eq!(
            t.start_cmd.as_deref(),
            Some(
                format!(
                    "srv -p {} --socket-name greet.sock",
                    shell_quote(&t.prefix.to_string_lossy())
                )
                .as_str()
            )
        );
        let placement = Placement {
            socket: Some(PathBuf::from("sub/g.sock")),
            prefix: Some(PathBuf::from("/run/kong")),
        };
        let t = resolve(&spec, &placement, "").expect("resolve");
        assert_eq!(t.socket, PathBuf::from("/run/kong/sub/g.sock"));

        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("kong.conf");
        std::fs::write(
            &conf,
            format!(
                "prefix = {}\npluginserver_names = a\npluginserver_a_query_cmd = a -dump\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let spec = TargetSpec::KongConf {
            path: Some(conf),
            name: None,
        };
        let placement = Placement {
            socket: Some(PathBuf::from("x.sock")),
            prefix: None,
        };
        let t = resolve(&spec, &placement, "").expect("resolve");
        assert_eq!(t.socket, dir.path().join("x.sock"));
        // Kong's warning about the missing start command reaches the target.
        assert!(
            t.warnings
                .iter()
                .any(|w| w.starts_with("start_command undefined for pluginserver a")),
            "{:?}",
            t.warnings
        );
    }

    /// Commands without --name are named after the dump's first plugin, so Kong's default
    /// socket is `<prefix>/<plugin>.socket`; a query command that needs the name cannot be
    /// run to find it.
    #[tokio::test]
    async fn commands_without_a_name_are_named_after_their_dump() {
        let dump = r#"[{"Name":"greet","Phases":["access"],"Priority":1,"Version":"1.0.0","Schema":{"name":"greet","fields":[{"config":{"type":"record","fields":[]}}]}}]"#;
        let mut spec = TargetSpec::Commands {
            name: None,
            start_cmd: Some("srv {socket}".into()),
            query_cmd: format!("echo '{dump}'"),
        };
        let timeout = std::time::Duration::from_secs(20);
        name_from_dump(&mut spec, &Placement::default(), timeout)
            .await
            .expect("named");
        let t = resolve(&spec, &Placement::default(), "").unwrap();
        assert_eq!(t.name, "greet");
        assert!(t.socket.ends_with("greet.socket"), "{:?}", t.socket);
        let mut spec = TargetSpec::Commands {
            name: None,
            start_cmd: None,
            query_cmd: "srv --dump --socket {socket}".into(),
        };
        let e = name_from_dump(&mut spec, &Placement::default(), timeout)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("give the name with --name"), "{e}");
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
