//! Scripted scenarios: a request played through a real plugin server exactly as Kong would,
//! with expectations on what happens (client response, upstream request, `ctx.shared`, log
//! lines, the PDK calls).
//!
//! * [`model`]: the TOML format ([`Scenario`]).
//! * [`runner`]: plays a scenario over a [`Session`] with a [`KongRequest`](crate::pdk::KongRequest).
//! * [`expect`]: checks expectations, producing readable expected-vs-actual diffs.
//! * [`report`]: the human summary, JSON and JUnit XML.
//!
//! From Rust (e.g. in `cargo test`):
//!
//! ```no_run
//! # async fn demo(session: &mock_kong::session::Session) -> Result<(), Box<dyn std::error::Error>> {
//! use mock_kong::scenario::{RunOptions, Scenario};
//! let scenario = Scenario::from_toml_str(r#"
//!     plugin = "hello"
//!     config = { message = "Kong!" }
//!     [request.headers]
//!     host = "example.com"
//!     [expect.headers]
//!     x-hello = "Kong! example.com"
//! "#)?;
//! let result = scenario.run(session, &RunOptions::default()).await;
//! assert!(result.passed(), "{}", result.explain());
//! # Ok(()) }
//! ```

pub mod expect;
pub mod model;
pub mod report;
pub mod runner;

use std::path::{Path, PathBuf};

pub use model::Scenario;
pub use runner::{Outcome, RunOptions, ScenarioResult};

use crate::session::Session;

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: not a valid scenario: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: neither a .toml file nor a directory")]
    NotScenario { path: PathBuf },
    #[error("no scenario files (*.toml) found in {0}")]
    Empty(String),
}

impl Scenario {
    /// Parses a scenario from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("<string>"))
    }

    fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })?;
        if s.plugin.trim().is_empty() {
            return Err(ScenarioError::Parse {
                path: path.to_owned(),
                reason: "`plugin` must name the plugin to run".into(),
            });
        }
        if path != Path::new("<string>") {
            s.file = Some(path.to_owned());
        }
        Ok(s)
    }

    /// Reads one scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Scenario::parse(&text, path)
    }

    /// The display name: `name`, else the file stem, else the plugin.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        self.file
            .as_ref()
            .and_then(|f| f.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.plugin.clone())
    }

    /// Plays the scenario over `session` and checks its expectations.
    pub async fn run(&self, session: &Session, opts: &RunOptions) -> ScenarioResult {
        runner::run(self, session, opts).await
    }
}

/// Every scenario named by `paths`: files as given, directories recursively (`*.toml`, sorted).
/// Fails at the first file that cannot be used; [`load_each`] keeps going.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Scenario>, ScenarioError> {
    load_each(paths)?.into_iter().collect()
}

/// Every scenario file named by `paths`, each read on its own: one bad file does not keep the
/// others from running. Fails only when a path given does not exist or names no scenario file.
pub fn load_each(paths: &[PathBuf]) -> Result<Vec<Result<Scenario, ScenarioError>>, ScenarioError> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(ScenarioError::Empty(named.join(", ")));
    }
    Ok(files.iter().map(|f| Scenario::from_file(f)).collect())
}

impl ScenarioError {
    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ScenarioError::Read { path, .. }
            | ScenarioError::Parse { path, .. }
            | ScenarioError::NotScenario { path } => Some(path),
            ScenarioError::Empty(_) => None,
        }
    }
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ScenarioError> {
    let meta = std::fs::metadata(path).map_err(|e| ScenarioError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| ScenarioError::Read {
                path: path.to_owned(),
                reason: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "toml") {
                collect(&e, out)?;
            }
        }
        Ok(())
    } else if path.extension().is_some_and(|x| x == "toml") {
        out.push(path.to_owned());
        Ok(())
    } else {
        Err(ScenarioError::NotScenario {
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_scenario() {
        let s = Scenario::from_toml_str(
            r#"
            name = "n"
            plugin = "multiphase"
            config = { message = "Kong!" }
            phases = ["log", "access"]
            servers = ["reference"]
            [request]
            method = "POST"
            query = "a=1"
            body = "x"
            [request.headers]
            x-loose-data = "this"
            accept = ["a", "b"]
            [upstream]
            status = 201
            [[pdk]]
            method = "kong.request.get_header"
            args = ["host"]
            returns = "h"
            delay_ms = 5
            [expect]
            status = 201
            calls_include = ["kong.request.get_header", { method = "kong.log.notice", phase = "log" }]
            [expect.headers]
            x-multi-access = "example.com"
            x-absent = false
            [[expect.log]]
            level = "notice"
            regex = "^shared_msg: "
            "#,
        )
        .unwrap();
        assert_eq!(s.display_name(), "n");
        assert_eq!(s.request.headers["accept"], serde_json::json!(["a", "b"]));
        assert_eq!(s.pdk[0].delay_ms, Some(5));
        assert_eq!(
            s.expect.calls_include.as_ref().unwrap()[1].method(),
            "kong.log.notice"
        );
    }

    #[test]
    fn rejects_unknown_keys_with_the_location() {
        let e = Scenario::from_toml_str("plugin = \"hello\"\n[expect]\nstatuss = 200\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `statuss`"), "{e}");
        let e = Scenario::from_toml_str("config = {}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `plugin`"), "{e}");
    }
}
