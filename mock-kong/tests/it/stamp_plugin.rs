//! `stamp`, a plugin the project has never seen (it is not one of plugins/), written by the tests
//! themselves in Python and in JavaScript exactly as a newcomer writes it from the kits' docs:
//! it reads `config["tag"]` without a fallback (Kong fills the schema's default), tells the
//! upstream who passed in `access` and the client the upstream's status in `response`.
//! Shared by mock-kong's and loadgen's integration tests (`#[path]`), so both drive the same
//! plugin with nothing but its start and query commands.

use std::path::{Path, PathBuf};

pub const PYTHON: &str = r#""""stamp: tells the upstream and the client who passed through."""

Schema = [{"tag": {"type": "string", "default": "stamped"}}]
version = "1.0.0"
priority = 900


class Plugin(object):
    def __init__(self, config):
        self.tag = config["tag"]

    def access(self, kong):
        method, err = kong.request.get_method()
        path, err = kong.request.get_path()
        kong.service.request.set_header("x-stamp", "%s %s %s" % (self.tag, method, path))

    def response(self, kong):
        status, err = kong.service.response.get_status()
        kong.response.set_header("x-stamp", "%s %s" % (self.tag, status))


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("stamp", Plugin, version, priority, Schema)
"#;

pub const JAVASCRIPT: &str = r#"'use strict'

// stamp: tells the upstream and the client who passed through.
class StampPlugin {
  constructor(config) {
    this.tag = config.tag
  }

  async access(kong) {
    const method = await kong.request.getMethod()
    const path = await kong.request.getPath()
    await kong.service.request.setHeader('x-stamp', `${this.tag} ${method} ${path}`)
  }

  async response(kong) {
    const status = await kong.service.response.getStatus()
    await kong.response.setHeader('x-stamp', `${this.tag} ${status}`)
  }
}

module.exports = {
  Plugin: StampPlugin,
  Schema: [{ tag: { type: 'string', default: 'stamped' } }],
  Version: '1.0.0',
  Priority: 900,
}
"#;

/// A scenario a newcomer writes for it: the upstream gets the tag, method and path; the client
/// the tag and the upstream's status.
pub const SCENARIO: &str = r#"name = "stamp tags the upstream request and the response"
plugin = "stamp"

[request]
method = "POST"
path = "/orders"

[expect]
status = 200

[expect.upstream.headers]
x-stamp = "stamped POST /orders"

[expect.headers]
x-stamp = "stamped 200"
"#;

/// The plugin written in one kit, and the two commands that are all mock-kong is told.
pub struct Stamp {
    pub kit: &'static str,
    /// Holds the plugin's source (and nothing else a test did not put there).
    pub dir: tempfile::TempDir,
    pub start_cmd: String,
    pub query_cmd: String,
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The interpreter (Python) or plugin server (JS) of a kit, as installed by
/// scripts/install-peers.sh.
pub fn kit_program(root: &Path, kit: &str) -> PathBuf {
    match kit {
        "python" => root.join(".peers/python/venv/bin/python"),
        "js" => root.join("plugins/js/node_modules/.bin/kong-js-pluginserver"),
        other => panic!("unknown kit {other}"),
    }
}

/// Writes the plugin for `kit` ("python" or "js") into a fresh directory and returns the start
/// and query commands a newcomer would write (the socket in `{prefix}`, named after the plugin
/// as Kong 3.9 expects: `<prefix>/<name>.socket`).
pub fn write(root: &Path, kit: &'static str) -> Stamp {
    let dir = tempfile::tempdir().expect("a directory for the plugin");
    let program = quote(&kit_program(root, kit));
    let (start_cmd, query_cmd) = match kit {
        "python" => {
            let file = dir.path().join("stamp.py");
            std::fs::write(&file, PYTHON).unwrap();
            let file = quote(&file);
            (
                format!("{program} {file} -p {{prefix}} --socket-name stamp.socket"),
                format!("{program} {file} --dump"),
            )
        }
        "js" => {
            let plugins = dir.path().join("plugins");
            std::fs::create_dir(&plugins).unwrap();
            std::fs::write(plugins.join("stamp.js"), JAVASCRIPT).unwrap();
            let plugins = quote(&plugins);
            (
                format!("{program} -d {plugins} -p {{prefix}} --sock-name stamp.socket"),
                format!("{program} -d {plugins} --dump-all-plugins"),
            )
        }
        other => panic!("unknown kit {other}"),
    };
    Stamp {
        kit,
        dir,
        start_cmd,
        query_cmd,
    }
}
