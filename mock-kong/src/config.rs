//! Plugin-server definitions: from a `kong.conf` (plus `KONG_*` environment overrides) exactly as
//! Kong 3.9 resolves them (docs/protocol.md §1), or from command-line flags.
//!
//! # How Kong reads the file
//!
//! Kong's conf loader (`kong/conf_loader/init.lua`, `load_config`) reads kong.conf with Penlight's
//! `pl.config.read(s, { smart = false, list_delim = "_blank_" })` and then strips comments from
//! every value. [`parse_conf_text`] reproduces the parts that matter for plugin servers:
//!
//! * blank lines and lines whose first non-blank character is `#` or `;` are skipped;
//! * a line ending in `\` (optionally followed by blanks) continues on the next line;
//! * `key = value`: the first `=` splits the line; whitespace around key and value is trimmed;
//! * keys keep their case (Kong does **not** lower-case them, so `PluginServer_Names` is a
//!   different key from `pluginserver_names`), and every character that is not an ASCII letter
//!   or digit becomes `_` (Penlight's "variablilize": `pluginserver.x.socket` is read as
//!   `pluginserver_x_socket`);
//! * in values, a `#` not preceded by `\` starts a trailing comment (the blanks before it are
//!   dropped too), then every `\#` becomes `#`;
//! * a later duplicate key wins.
//!
//! Where Kong would silently misread a file, the mock is stricter and reports a
//! [`ConfigError::Syntax`] with the line number: a line without `=` (Penlight stores it as an
//! anonymous list item that Kong ignores), an empty key, an INI `[section]` header, and a file that
//! ends inside a `\` continuation (Penlight drops that last line). One Penlight quirk is *not*
//! reproduced: values that look like numbers are converted by Lua (`0123` becomes `123`), which
//! never matters for paths and commands.
//!
//! # How Kong resolves plugin servers
//!
//! [`resolve`] follows the "parse and validate pluginserver directives" block of Kong 3.9 (docs/protocol.md §1):
//! every key is looked up as the environment variable `KONG_<KEY IN UPPER CASE>` first, then in the
//! file; values are trimmed and an empty value counts as unset (Kong's `parse_value`). The
//! `prefix` (default `/usr/local/kong/`) is made absolute and normalised like Penlight's
//! `path.abspath`.
//!
//! Besides Kong's own warning (`start_command undefined for pluginserver <name>; assuming external
//! process management`, verbatim), [`KongConf::warnings`] may carry hints that start with
//! `mock-kong:` about settings Kong would silently ignore (a key written in the wrong case, a name
//! whose keys cannot be written in kong.conf, a name listed twice).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Kong's default prefix.
pub const DEFAULT_PREFIX: &str = "/usr/local/kong";
/// Kong 3.9's `DEFAULT_PLUGINSERVER_PATH`.
pub const DEFAULT_PLUGINSERVER_PATH: &str = "/usr/local/bin";

/// Prefix of Kong's hints that are not Kong's own log lines.
const HINT: &str = "mock-kong:";

/// One entry of `conf.pluginservers` (docs/protocol.md §1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerDef {
    /// The pluginserver name, lower-cased (dashes kept).
    pub name: String,
    /// The Unix socket Kong connects to: `pluginserver_<N>_socket` verbatim, or
    /// `<prefix>/<name>.socket`.
    pub socket: PathBuf,
    /// `None`: "assuming external process management".
    pub start_cmd: Option<String>,
    /// The command whose stdout is the JSON dump (docs/protocol.md §2).
    pub query_cmd: String,
}

/// What a configuration resolved to.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KongConf {
    /// The absolute, normalised prefix (`prefix` / `KONG_PREFIX`, default `/usr/local/kong`).
    pub prefix: PathBuf,
    /// `conf.pluginservers`, in the order of `pluginserver_names`.
    pub servers: Vec<ServerDef>,
    /// Kong's warnings, verbatim (e.g. `start_command undefined for pluginserver x; ...`),
    /// followed by the mock's own hints, which start with `mock-kong:`.
    pub warnings: Vec<String>,
}

/// A configuration Kong would refuse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Kong's own message: `query_command undefined for pluginserver <name>`.
    #[error("query_command undefined for pluginserver {0}")]
    NoQueryCommand(String),
    #[error("no plugin servers configured: `pluginserver_names` is empty (set it in the kong.conf or KONG_PLUGINSERVER_NAMES)")]
    NoServers,
    #[error("pluginserver `{wanted}` is not configured; configured: {available}")]
    UnknownServer { wanted: String, available: String },
}

/// Parses kong.conf text into `key -> value` (Kong's rules: `#` comments, `\#` escapes; see the
/// module documentation for every rule). `path` is only used in error messages.
///
/// Values are returned after comment stripping but otherwise verbatim; an empty value is kept as
/// `""` (it means "unset" to [`resolve`], as it does to Kong).
pub fn parse_conf_text(path: &Path, text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let syntax = |line: usize, message: String| ConfigError::Syntax {
        path: path.to_owned(),
        line,
        message,
    };
    let mut out = BTreeMap::new();
    // A logical line being assembled from `\` continuations: (first line number, text so far).
    let mut pending: Option<(usize, String)> = None;

    for (idx, raw) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        // Penlight skips blank lines and comment lines before looking at continuations, even in
        // the middle of a continued line.
        let trimmed_start = raw.trim_start();
        if trimmed_start.trim_end().is_empty()
            || trimmed_start.starts_with('#')
            || trimmed_start.starts_with(';')
        {
            continue;
        }
        if let Some(body) = continuation_body(raw) {
            match &mut pending {
                Some((_, acc)) => acc.push_str(body),
                None => pending = Some((lineno, body.to_owned())),
            }
            continue;
        }
        let (start_line, logical) = match pending.take() {
            Some((first, mut acc)) => {
                acc.push_str(raw);
                (first, acc)
            }
            None => (lineno, raw.to_owned()),
        };
        let (key, value) = parse_assignment(&logical).map_err(|m| syntax(start_line, m))?;
        out.insert(key, value);
    }

    if let Some((first, _)) = pending {
        return Err(syntax(
            first,
            "the file ends inside a line continued with `\\` (Kong would silently drop this setting); \
             remove the trailing backslash or add the continuation line"
                .to_owned(),
        ));
    }
    Ok(out)
}

/// If `line` ends with `\` followed only by blanks, the part before the backslash.
fn continuation_body(line: &str) -> Option<&str> {
    let body = line.trim_end();
    body.strip_suffix('\\')
}

/// Splits one logical line into a variablilized key and a comment-stripped value.
fn parse_assignment(line: &str) -> Result<(String, String), String> {
    if line.starts_with('[') {
        return Err(format!(
            "`{}` looks like an INI section header; kong.conf has no sections, write `key = value` lines",
            line.trim()
        ));
    }
    let line = line.trim_start();
    let Some(eq) = line.find('=') else {
        return Err(format!(
            "expected `key = value`, found `{}` (no `=`); Kong would silently ignore this line",
            line.trim()
        ));
    };
    let raw_key = line[..eq].trim_end();
    if raw_key.is_empty() {
        return Err(format!(
            "expected `key = value`, found `{}` (the key is empty)",
            line.trim()
        ));
    }
    let key = variablilize(raw_key);
    let value = strip_comment(line[eq + 1..].trim());
    Ok((key, value))
}

/// Penlight's key normalisation: every byte that is not an ASCII letter or digit becomes `_`.
fn variablilize(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}

/// Kong's `strip_comments`: drop `\s*#...` where the `#` is not escaped, then unescape `\#`.
fn strip_comment(value: &str) -> String {
    let bytes = value.as_bytes();
    let cut = bytes
        .iter()
        .enumerate()
        .find(|&(i, &b)| b == b'#' && (i == 0 || bytes[i - 1] != b'\\'))
        .map(|(i, _)| i);
    let kept = match cut {
        Some(i) => value[..i].trim_end(),
        None => value,
    };
    kept.replace("\\#", "#")
}

/// Where a setting's value comes from: the environment (`KONG_<KEY>`) wins over the file.
struct Lookup<'a> {
    conf: &'a BTreeMap<String, String>,
    env: BTreeMap<&'a str, &'a str>,
}

impl<'a> Lookup<'a> {
    fn new(conf: &'a BTreeMap<String, String>, env: &'a [(String, String)]) -> Self {
        // Later duplicates of an environment variable win, as with `std::env::vars()` last-set.
        let env = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Lookup { conf, env }
    }

    /// Kong's `overrides()` + `parse_value()`: env `KONG_<KEY>` first, then the file; trimmed;
    /// empty means unset.
    fn get(&self, key: &str) -> Option<String> {
        let env_name = format!("KONG_{}", key.to_ascii_uppercase());
        let raw = match self.env.get(env_name.as_str()) {
            Some(v) => Some(*v),
            None => self.conf.get(key).map(String::as_str),
        }?;
        let v = raw.trim();
        (!v.is_empty()).then(|| v.to_owned())
    }
}

/// Resolves plugin servers from conf entries and the environment (`KONG_*` wins), with the given
/// default binary directory (Kong's `DEFAULT_PLUGINSERVER_PATH`, injectable for tests).
///
/// Per name in `pluginserver_names` (comma-separated; items trimmed, empty items dropped), Kong 3.9
/// (docs/protocol.md §1):
/// * lower-cases the name and reads the keys `pluginserver_<name with - as _>_{socket,start_cmd,query_cmd}`;
/// * socket default: `<prefix>/<name>.socket` (dashes kept);
/// * if `<default_bin_dir>/<name>` exists, start default `<dir>/<name>`, query default
///   `<dir>/<name> -dump`;
/// * no query command at all → [`ConfigError::NoQueryCommand`];
/// * no start command → the warning `start_command undefined for pluginserver <name>; assuming
///   external process management`.
///
/// An empty or missing `pluginserver_names` gives [`ConfigError::NoServers`] (Kong would simply run
/// without plugin servers, which leaves the mock nothing to do).
pub fn resolve(
    conf: &BTreeMap<String, String>,
    env: &[(String, String)],
    default_bin_dir: &Path,
) -> Result<KongConf, ConfigError> {
    let lookup = Lookup::new(conf, env);
    let mut kong_warnings = Vec::new();
    let mut hints = case_hints(conf, env);

    // Kong's default is `/usr/local/kong/`; `abspath` removes the trailing slash.
    let prefix_raw = lookup
        .get("prefix")
        .unwrap_or_else(|| format!("{DEFAULT_PREFIX}/"));
    let prefix = abspath(&prefix_raw);
    let prefix_str = prefix.to_string_lossy().into_owned();

    let names: Vec<String> = lookup
        .get("pluginserver_names")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(ConfigError::NoServers);
    }

    let mut servers: Vec<ServerDef> = Vec::with_capacity(names.len());
    for raw_name in &names {
        // Lua's `string.lower` only touches ASCII letters.
        let name = raw_name.to_ascii_lowercase();
        let key_prefix = server_key_prefix(&name);
        if servers.iter().any(|s| s.name == name) {
            hints.push(format!(
                "{HINT} pluginserver `{name}` is listed more than once in pluginserver_names; \
                 Kong creates one server per entry (same socket, same commands)"
            ));
        }
        if name
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            hints.push(format!(
                "{HINT} pluginserver name `{name}` contains characters other than letters, digits, `-` and `_`; \
                 its keys (`{key_prefix}_*`) can only be set through KONG_* environment variables, because \
                 kong.conf turns such characters into `_`"
            ));
        }

        let socket = lookup
            .get(&format!("{key_prefix}_socket"))
            .unwrap_or_else(|| format!("{prefix_str}/{name}.socket"));
        let mut start_cmd = lookup.get(&format!("{key_prefix}_start_cmd"));
        let mut query_cmd = lookup.get(&format!("{key_prefix}_query_cmd"));

        // Kong concatenates `DEFAULT_PLUGINSERVER_PATH .. "/" .. name` and checks `pl.path.exists`.
        let default_path = format!(
            "{}/{}",
            default_bin_dir.to_string_lossy().trim_end_matches('/'),
            name
        );
        if Path::new(&default_path).exists() {
            start_cmd.get_or_insert_with(|| default_path.clone());
            query_cmd.get_or_insert_with(|| format!("{default_path} -dump"));
        }

        let Some(query_cmd) = query_cmd else {
            return Err(ConfigError::NoQueryCommand(name));
        };
        if start_cmd.is_none() {
            kong_warnings.push(format!(
                "start_command undefined for pluginserver {name}; assuming external process management"
            ));
        }
        servers.push(ServerDef {
            name,
            socket: PathBuf::from(socket),
            start_cmd,
            query_cmd,
        });
    }

    kong_warnings.extend(hints);
    Ok(KongConf {
        prefix,
        servers,
        warnings: kong_warnings,
    })
}

/// The key prefix Kong reads a server's settings from: `pluginserver_<name with - as _>`.
pub fn server_key_prefix(name: &str) -> String {
    format!(
        "pluginserver_{}",
        name.to_ascii_lowercase().replace('-', "_")
    )
}

/// Hints about keys Kong would ignore because of their case.
fn case_hints(conf: &BTreeMap<String, String>, env: &[(String, String)]) -> Vec<String> {
    let relevant = |lower: &str| lower == "prefix" || lower.starts_with("pluginserver_");
    let mut hints = Vec::new();
    for key in conf.keys() {
        let lower = key.to_ascii_lowercase();
        if &lower != key && relevant(&lower) {
            hints.push(format!(
                "{HINT} kong.conf key `{key}` is ignored: Kong's keys are case-sensitive, write `{lower}`"
            ));
        }
    }
    for (var, _) in env {
        let Some(rest) = var
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("KONG_"))
            .map(|_| &var[5..])
        else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let wanted = format!("KONG_{}", rest.to_ascii_uppercase());
        if var != &wanted && relevant(&lower) {
            hints.push(format!(
                "{HINT} environment variable `{var}` is ignored: Kong reads `{wanted}` (upper case)"
            ));
        }
    }
    hints
}

/// Penlight's `path.abspath` on Unix: drop one trailing slash, make relative paths absolute
/// against the current directory, then normalise (`//`, `.`, `a/..`).
fn abspath(p: &str) -> PathBuf {
    let p = p.strip_suffix('/').filter(|s| !s.is_empty()).unwrap_or(p);
    let path = Path::new(p);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(path),
            Err(_) => path.to_path_buf(),
        }
    };
    normpath(&joined)
}

/// Lexical normalisation (no symlink resolution), like `pl.path.normpath`.
fn normpath(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped =
                    matches!(out.components().next_back(), Some(Component::Normal(_))) && out.pop();
                if !popped && !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Picks the server to drive.
///
/// * `None`: the first server in `pluginserver_names` order (the only one in the common case).
///   With several servers this is a documented, deterministic choice, not an error: pass a name
///   to pick another one.
/// * `Some(name)`: the server with that name, compared after lower-casing (as Kong lower-cases
///   names); otherwise [`ConfigError::UnknownServer`] listing the configured names.
pub fn select<'a>(conf: &'a KongConf, name: Option<&str>) -> Result<&'a ServerDef, ConfigError> {
    let Some(wanted) = name else {
        return conf.servers.first().ok_or(ConfigError::NoServers);
    };
    let wanted_lower = wanted.trim().to_ascii_lowercase();
    conf.servers
        .iter()
        .find(|s| s.name == wanted_lower)
        .ok_or_else(|| ConfigError::UnknownServer {
            wanted: wanted.to_owned(),
            available: if conf.servers.is_empty() {
                "(none)".to_owned()
            } else {
                conf.servers
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// Reads `path` (if any) and the process environment, and resolves.
pub fn load(path: Option<&Path>) -> Result<KongConf, ConfigError> {
    let conf = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?;
            parse_conf_text(p, &text)?
        }
        None => BTreeMap::new(),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut conf = resolve(&conf, &env, Path::new(DEFAULT_PLUGINSERVER_PATH))?;
    // `kong start` creates the prefix; mock-kong does not. Without it, servers told to listen
    // there fail in ways that do not name it (the kits: "path ... doesn't exist", EACCES).
    let started_here = conf.servers.iter().any(|s| s.start_cmd.is_some());
    if started_here && !conf.prefix.is_dir() {
        conf.warnings.push(format!(
            "the prefix {p} does not exist: Kong creates it at `kong start`, mock-kong does not, \
             and servers told to listen there will fail; create it (mkdir -p {p}) or set \
             `prefix` in the kong.conf (KONG_PREFIX)",
            p = conf.prefix.display()
        ));
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START_WARNING_GOPHER: &str =
        "start_command undefined for pluginserver gopher; assuming external process management";

    fn conf(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        parse_conf_text(Path::new("kong.conf"), text)
    }

    /// A directory standing in for `/usr/local/bin`, with an executable `name` in it.
    fn bin_dir_with(name: &str) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join(name);
        std::fs::write(&exe, "#!/bin/sh\necho '[]'\n").expect("write fake server");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    }

    fn empty_bin_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    // ---- docs/protocol.md §8 items 1-4: Kong's own conf-loader spec cases ----------------------------------

    #[test]
    fn kong_spec_1_no_query_command_and_no_default_binary_fails() {
        let bin = empty_bin_dir();
        let err = resolve(&conf(&[("pluginserver_names", "gopher")]), &[], bin.path()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::NoQueryCommand(n) if n == "gopher"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "query_command undefined for pluginserver gopher"
        );
    }

    #[test]
    fn kong_spec_2_no_start_command_warns_exactly_once() {
        let bin = empty_bin_dir();
        let c = conf(&[
            ("pluginserver_names", "gopher"),
            ("pluginserver_gopher_query_cmd", "gopher -dump"),
        ]);
        let kc = resolve(&c, &[], bin.path()).expect("valid");
        assert_eq!(kc.warnings, vec![START_WARNING_GOPHER.to_owned()]);
        assert_eq!(kc.servers[0].start_cmd, None);
        assert_eq!(kc.servers[0].query_cmd, "gopher -dump");
    }

    #[test]
    fn kong_spec_3_defaults_from_the_default_binary_directory() {
        let bin = bin_dir_with("go-hello");
        let dir = bin.path().to_string_lossy().into_owned();
        let c = conf(&[
            ("pluginserver_names", "go-hello"),
            ("prefix", "/srv/kong-test"),
        ]);
        let kc = resolve(&c, &[], bin.path()).expect("valid");
        assert_eq!(kc.warnings, Vec::<String>::new());
        let s = &kc.servers[0];
        assert_eq!(s.name, "go-hello");
        assert_eq!(s.query_cmd, format!("{dir}/go-hello -dump"));
        assert_eq!(
            s.start_cmd.as_deref(),
            Some(format!("{dir}/go-hello").as_str())
        );
        assert_eq!(s.socket, PathBuf::from("/srv/kong-test/go-hello.socket"));
        assert_eq!(kc.prefix, PathBuf::from("/srv/kong-test"));
    }

    #[test]
    fn kong_spec_3_default_prefix_has_no_double_slash() {
        let bin = bin_dir_with("go-hello");
        let kc = resolve(
            &conf(&[("pluginserver_names", "go-hello")]),
            &[],
            bin.path(),
        )
        .expect("valid");
        assert_eq!(kc.prefix, PathBuf::from("/usr/local/kong"));
        assert_eq!(
            kc.servers[0].socket,
            PathBuf::from("/usr/local/kong/go-hello.socket")
        );
    }

    #[test]
    fn kong_spec_4_custom_settings_are_kept_verbatim() {
        let bin = bin_dir_with("gopher"); // explicit values must win over the defaults
        let c = conf(&[
            ("pluginserver_names", "gopher"),
            ("pluginserver_gopher_query_cmd", "gopher -dump"),
            ("pluginserver_gopher_start_cmd", "gopher -p $KONG_PREFIX"),
            ("pluginserver_gopher_socket", "/foo/bar/gopher.socket"),
        ]);
        let kc = resolve(&c, &[], bin.path()).expect("valid");
        let s = &kc.servers[0];
        assert_eq!(s.name, "gopher");
        assert_eq!(s.query_cmd, "gopher -dump");
        assert_eq!(s.start_cmd.as_deref(), Some("gopher -p $KONG_PREFIX"));
        assert_eq!(s.socket, PathBuf::from("/foo/bar/gopher.socket"));
        assert!(kc.warnings.is_empty(), "{:?}", kc.warnings);
    }

    // ---- names, env, prefix ---------------------------------------------------------------------

    #[test]
    fn names_are_lower_cased_and_dashes_become_underscores_in_keys_only() {
        let bin = empty_bin_dir();
        let c = conf(&[
            ("prefix", "/p"),
            ("pluginserver_names", " Test-Go , ,other,"),
            ("pluginserver_test_go_query_cmd", "tg -dump"),
            ("pluginserver_test_go_start_cmd", "tg"),
            ("pluginserver_other_query_cmd", "o -dump"),
            // The dashed spelling is not what Kong reads:
            ("pluginserver_test-go_query_cmd", "wrong"),
        ]);
        let kc = resolve(&c, &[], bin.path()).expect("valid");
        assert_eq!(kc.servers.len(), 2, "empty items are dropped");
        let tg = &kc.servers[0];
        assert_eq!(tg.name, "test-go");
        assert_eq!(tg.query_cmd, "tg -dump");
        assert_eq!(tg.start_cmd.as_deref(), Some("tg"));
        assert_eq!(tg.socket, PathBuf::from("/p/test-go.socket"));
        assert_eq!(kc.servers[1].name, "other");
        assert_eq!(server_key_prefix("Test-Go"), "pluginserver_test_go");
    }

    #[test]
    fn default_binary_lookup_uses_the_lower_cased_name() {
        let bin = bin_dir_with("test-go");
        let kc =
            resolve(&conf(&[("pluginserver_names", "TEST-GO")]), &[], bin.path()).expect("valid");
        assert_eq!(
            kc.servers[0].query_cmd,
            format!("{}/test-go -dump", bin.path().display())
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let bin = empty_bin_dir();
        let c = conf(&[
            ("prefix", "/from-file"),
            ("pluginserver_names", "filename"),
            ("pluginserver_test_go_query_cmd", "file -dump"),
        ]);
        let e = env(&[
            ("KONG_PREFIX", "/from-env/"),
            ("KONG_PLUGINSERVER_NAMES", "test-go"),
            ("KONG_PLUGINSERVER_TEST_GO_QUERY_CMD", "env -dump"),
            ("KONG_PLUGINSERVER_TEST_GO_START_CMD", "env-start"),
            ("UNRELATED", "x"),
        ]);
        let kc = resolve(&c, &e, bin.path()).expect("valid");
        assert_eq!(kc.prefix, PathBuf::from("/from-env"));
        assert_eq!(kc.servers.len(), 1);
        let s = &kc.servers[0];
        assert_eq!(s.name, "test-go");
        assert_eq!(s.query_cmd, "env -dump");
        assert_eq!(s.start_cmd.as_deref(), Some("env-start"));
        assert_eq!(s.socket, PathBuf::from("/from-env/test-go.socket"));
    }

    #[test]
    fn empty_values_count_as_unset_even_from_the_environment() {
        let bin = bin_dir_with("gopher");
        // An empty env value overrides the file but is then "unset", so the default applies.
        let c = conf(&[
            ("pluginserver_names", "gopher"),
            ("pluginserver_gopher_start_cmd", "from-file"),
        ]);
        let e = env(&[("KONG_PLUGINSERVER_GOPHER_START_CMD", "  ")]);
        let kc = resolve(&c, &e, bin.path()).expect("valid");
        assert_eq!(
            kc.servers[0].start_cmd,
            Some(format!("{}/gopher", bin.path().display()))
        );

        let bin = empty_bin_dir();
        let c = conf(&[
            ("pluginserver_names", "gopher"),
            ("pluginserver_gopher_query_cmd", "q"),
            ("pluginserver_gopher_start_cmd", ""),
        ]);
        let kc = resolve(&c, &[], bin.path()).expect("valid");
        assert_eq!(kc.servers[0].start_cmd, None);
        assert_eq!(kc.warnings, vec![START_WARNING_GOPHER.to_owned()]);
    }

    #[test]
    fn no_names_is_an_error() {
        let bin = empty_bin_dir();
        for c in [
            conf(&[]),
            conf(&[("pluginserver_names", "")]),
            conf(&[("pluginserver_names", " , ,")]),
        ] {
            let err = resolve(&c, &[], bin.path()).unwrap_err();
            assert!(matches!(err, ConfigError::NoServers), "{err:?}");
        }
    }

    #[test]
    fn relative_prefix_is_made_absolute_and_normalised() {
        let bin = empty_bin_dir();
        let c = conf(&[
            ("prefix", "run/./kong/../k/"),
            ("pluginserver_names", "a"),
            ("pluginserver_a_query_cmd", "q"),
        ]);
        let kc = resolve(&c, &[], bin.path()).expect("valid");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(kc.prefix, cwd.join("run/k"));
        assert_eq!(kc.servers[0].socket, cwd.join("run/k/a.socket"));
        assert_eq!(normpath(Path::new("/a/../../b")), PathBuf::from("/b"));
    }

    #[test]
    fn wrong_case_keys_are_ignored_with_a_hint() {
        let bin = empty_bin_dir();
        let c = conf(&[
            ("pluginserver_names", "gopher"),
            ("pluginserver_gopher_query_cmd", "q"),
            ("PluginServer_Gopher_Start_Cmd", "ignored"),
        ]);
        let e = env(&[("KONG_pluginserver_gopher_socket", "/ignored")]);
        let kc = resolve(&c, &e, bin.path()).expect("valid");
        assert_eq!(kc.servers[0].start_cmd, None);
        assert_eq!(
            kc.servers[0].socket,
            PathBuf::from("/usr/local/kong/gopher.socket")
        );
        assert_eq!(kc.warnings[0], START_WARNING_GOPHER);
        assert_eq!(kc.warnings.len(), 3, "{:?}", kc.warnings);
        assert!(kc.warnings[1..].iter().all(|w| w.starts_with("mock-kong:")));
        assert!(kc
            .warnings
            .iter()
            .any(|w| w.contains("`PluginServer_Gopher_Start_Cmd`")));
        assert!(kc
            .warnings
            .iter()
            .any(|w| w.contains("KONG_PLUGINSERVER_GOPHER_SOCKET")));
    }

    #[test]
    fn select_picks_by_name_or_the_first() {
        let bin = empty_bin_dir();
        let c = conf(&[
            ("pluginserver_names", "a,b"),
            ("pluginserver_a_query_cmd", "qa"),
            ("pluginserver_b_query_cmd", "qb"),
        ]);
        let kc = resolve(&c, &[], bin.path()).expect("valid");
        assert_eq!(select(&kc, None).expect("first").name, "a");
        assert_eq!(select(&kc, Some("B")).expect("b").query_cmd, "qb");
        let err = select(&kc, Some("c")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pluginserver `c` is not configured; configured: a, b"
        );

        let empty = KongConf {
            prefix: PathBuf::from("/"),
            servers: vec![],
            warnings: vec![],
        };
        assert!(matches!(select(&empty, None), Err(ConfigError::NoServers)));
        assert!(matches!(
            select(&empty, Some("x")),
            Err(ConfigError::UnknownServer { .. })
        ));
    }

    // ---- the file syntax ------------------------------------------------------------------------

    #[test]
    fn parses_keys_values_comments_and_escapes() {
        let text = "\
# a comment line
   ; an ini-style comment line

pluginserver_names = a, b   # trailing comment
prefix=/srv/kong
pluginserver_a_start_cmd = run \\#1 --flag   \r
pluginserver_a_query_cmd =   a -dump#no space before the hash
  indented_key   =   spaced value  \t
empty =
only_comment = # nothing
dotted.key-name = x
";
        let m = parse(text).expect("valid");
        assert_eq!(m["pluginserver_names"], "a, b");
        assert_eq!(m["prefix"], "/srv/kong");
        assert_eq!(m["pluginserver_a_start_cmd"], "run #1 --flag");
        assert_eq!(m["pluginserver_a_query_cmd"], "a -dump");
        assert_eq!(m["indented_key"], "spaced value");
        assert_eq!(m["empty"], "");
        assert_eq!(m["only_comment"], "");
        assert_eq!(m["dotted_key_name"], "x");
        assert_eq!(m.len(), 8);
    }

    #[test]
    fn keys_keep_their_case_and_later_duplicates_win() {
        let m = parse("Key = 1\nkey = 2\nkey = 3\nvalue_with_eq = a=b\n").expect("valid");
        assert_eq!(m["Key"], "1");
        assert_eq!(m["key"], "3");
        assert_eq!(m["value_with_eq"], "a=b");
    }

    #[test]
    fn backslash_continues_a_line() {
        let m = parse("cmd = run \\\n  --flag \\  \n# comment in between\n  --other\nnext = 1\n")
            .expect("valid");
        assert_eq!(m["cmd"], "run   --flag   --other");
        assert_eq!(m["next"], "1");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("a = 1\n\n# c\nthis line has no equals sign\n").unwrap_err();
        match &err {
            ConfigError::Syntax { line, message, .. } => {
                assert_eq!(*line, 4);
                assert!(message.contains("no `=`"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert!(err.to_string().starts_with("kong.conf:4: "), "{err}");

        assert!(matches!(
            parse("a = 1\n = 2\n"),
            Err(ConfigError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            parse("[section]\na = 1\n"),
            Err(ConfigError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            parse("a = 1\nb = 2 \\\n"),
            Err(ConfigError::Syntax { line: 2, .. })
        ));
        // A continued line reports the line where it started.
        assert!(matches!(
            parse("a = 1\nno equals \\\nstill none\n"),
            Err(ConfigError::Syntax { line: 2, .. })
        ));
    }

    #[test]
    fn parse_then_resolve_end_to_end() {
        let bin = empty_bin_dir();
        let m = parse(
            "prefix = /k/ # the prefix\npluginserver_names = Test-Go\n\
             pluginserver_test_go_query_cmd = /opt/tg -dump \\# not a comment\n",
        )
        .expect("valid");
        let kc = resolve(&m, &[], bin.path()).expect("valid");
        assert_eq!(kc.servers[0].query_cmd, "/opt/tg -dump # not a comment");
        assert_eq!(kc.servers[0].socket, PathBuf::from("/k/test-go.socket"));
        assert_eq!(
            kc.warnings,
            vec!["start_command undefined for pluginserver test-go; assuming external process management".to_owned()]
        );
    }

    #[test]
    fn load_reports_unreadable_files() {
        let dir = empty_bin_dir();
        let err = load(Some(&dir.path().join("missing.conf"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    }
}
