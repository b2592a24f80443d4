//! Baselines for the regression gate: a sweep's results saved with a name, the machine
//! fingerprint and every trial (`reports/baselines/NAME.json`), and the loading of either a
//! baseline or a plain `results.json` (file or `sweep --out` directory) for [`crate::gate`].
//!
//! A baseline file is
//!
//! ```json
//! {"format": "loadgen-baseline", "version": 1, "name": "reference", "saved_at": 1763770000,
//!  "fingerprint": "8461d6028a127c9d", "note": "...", "results": { ...results.json... }}
//! ```
//!
//! `results` is a results document (schema `schema/results.schema.json`, version 1) without the
//! per-point `.hgrm` spectra; its trials and in-run references (floor, reference server) are
//! what the gate compares against.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::results::{Results, SCHEMA_VERSION};

/// The `format` field of a baseline file.
pub const BASELINE_FORMAT: &str = "loadgen-baseline";

/// The layout version of baseline files.
pub const BASELINE_VERSION: u32 = 1;

/// Where `loadgen baseline save` writes by default (relative to the working directory).
pub const DEFAULT_DIR: &str = "reports/baselines";

/// A saved baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub format: String,
    pub version: u32,
    /// The file's stem: letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Unix seconds when the baseline was saved.
    pub saved_at: u64,
    /// The machine fingerprint of the results (repeated here so it can be seen at a glance).
    pub fingerprint: String,
    /// Free text: how it was made (build profile, commit, ...).
    #[serde(default)]
    pub note: String,
    pub results: Results,
}

/// Why a baseline or results file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read {path}: {source}. Give a results.json, a `sweep --out` directory or a baseline file")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a loadgen results.json (schema version {SCHEMA_VERSION}) nor a baseline file: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path} is a baseline of version {found}; this loadgen reads version {BASELINE_VERSION}. Save it again with `loadgen baseline save`")]
    Version { path: PathBuf, found: u64 },
    #[error("invalid baseline name {0:?}: use letters, digits, '.', '_' and '-' only (it becomes the file name)")]
    Name(String),
    #[error("refusing to save a baseline from a run that {0}; a baseline must be a clean run (rerun the sweep, or pass --force)")]
    Unclean(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A results document and, when it came from a baseline file, the baseline's name.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub results: Results,
    /// The baseline's name (`None` for a plain results.json).
    pub baseline_name: Option<String>,
    /// The file actually read.
    pub path: PathBuf,
}

/// Reads a baseline file, a results.json, or the results.json of a `sweep --out` directory.
pub fn load(path: &Path) -> Result<Loaded, BaselineError> {
    let file = if path.is_dir() {
        path.join("results.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|source| BaselineError::Read {
        path: file.clone(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| BaselineError::Parse {
            path: file.clone(),
            detail: e.to_string(),
        })?;
    let parse_err = |e: serde_json::Error| BaselineError::Parse {
        path: file.clone(),
        detail: e.to_string(),
    };
    if value.get("format").and_then(|f| f.as_str()) == Some(BASELINE_FORMAT) {
        let found = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if found != u64::from(BASELINE_VERSION) {
            return Err(BaselineError::Version { path: file, found });
        }
        let b: Baseline = serde_json::from_value(value).map_err(parse_err)?;
        check_schema(&b.results, &file)?;
        return Ok(Loaded {
            results: b.results,
            baseline_name: Some(b.name),
            path: file,
        });
    }
    let results: Results = serde_json::from_value(value).map_err(parse_err)?;
    check_schema(&results, &file)?;
    Ok(Loaded {
        results,
        baseline_name: None,
        path: file,
    })
}

fn check_schema(r: &Results, path: &Path) -> Result<(), BaselineError> {
    if r.schema_version == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(BaselineError::Parse {
            path: path.to_path_buf(),
            detail: format!(
                "schema_version is {}, expected {SCHEMA_VERSION}",
                r.schema_version
            ),
        })
    }
}

/// Whether `name` can be a baseline's file stem.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Makes a baseline of `results`. Unless `force`, a run with failures or errors is refused.
/// Returns the baseline and warnings (points with fewer than 3 trials).
pub fn make(
    mut results: Results,
    name: &str,
    note: &str,
    force: bool,
) -> Result<(Baseline, Vec<String>), BaselineError> {
    if !valid_name(name) {
        return Err(BaselineError::Name(name.to_owned()));
    }
    if !force {
        if results.points.is_empty() {
            return Err(BaselineError::Unclean("measured no point".into()));
        }
        if let Some(f) = results.failures.first() {
            return Err(BaselineError::Unclean(format!(
                "could not measure {} ({})",
                f.peer, f.error
            )));
        }
        if let Some(p) = results.points.iter().find(|p| p.errors > 0) {
            return Err(BaselineError::Unclean(format!(
                "counted {} error(s) at {} calls={}",
                p.errors,
                p.series_key(),
                p.calls
            )));
        }
    }
    let mut warnings = Vec::new();
    let few = results.points.iter().filter(|p| p.trials.len() < 3).count();
    if few > 0 {
        warnings.push(format!(
            "{few} point(s) have fewer than 3 trials: the gate sees little of the noise there (sweep with --trials 3 or more)"
        ));
    }
    if results.floor.is_empty() {
        warnings.push(
            "the run has no transport floor (--no-floor): other machines can only compare against it with the reference server as the basis"
                .into(),
        );
    }
    for p in &mut results.points {
        p.hgrm = None;
    }
    let saved_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok((
        Baseline {
            format: BASELINE_FORMAT.into(),
            version: BASELINE_VERSION,
            name: name.to_owned(),
            saved_at,
            fingerprint: results.machine.fingerprint.clone(),
            note: note.to_owned(),
            results,
        },
        warnings,
    ))
}

/// Writes `dir/NAME.json` (creating `dir`) and returns its path.
pub fn save(b: &Baseline, dir: &Path) -> Result<PathBuf, BaselineError> {
    let path = dir.join(format!("{}.json", b.name));
    let write_err = |source| BaselineError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let text = serde_json::to_string_pretty(b).map_err(|e| BaselineError::Write {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&path, text + "\n").map_err(write_err)?;
    Ok(path)
}

/// Merges several runs of the same plan into one: the trials of equal points are concatenated
/// (and the point's median throughput, spreads and error counts recomputed), points found in
/// only some runs are kept, and of each protocol's floors the quietest one (smallest median
/// RTT) is kept. Merged percentiles of the point as a whole (`latency_us`) are those of the
/// first run; the gate uses the trials.
///
/// This is how to *interleave* measurements: run base and head alternately, a few trials at a
/// time, and merge each side's runs, so a slow phase of a shared machine hits both sides
/// alike. `None` for no runs.
pub fn merge(runs: Vec<Results>) -> Option<Results> {
    use crate::stats::Spread;
    let mut it = runs.into_iter();
    let mut out = it.next()?;
    for run in it {
        for p in run.points {
            let key = crate::gate::point_key(&p);
            match out
                .points
                .iter_mut()
                .find(|q| crate::gate::point_key(q) == key)
            {
                Some(q) => {
                    q.errors += p.errors;
                    q.warmup_errors += p.warmup_errors;
                    q.unsent += p.unsent;
                    for (k, v) in p.error_kinds {
                        *q.error_kinds.entry(k).or_insert(0) += v;
                    }
                    q.trials.extend(p.trials);
                }
                None => out.points.push(p),
            }
        }
        for f in run.floor {
            match out.floor.iter_mut().find(|g| g.protocol == f.protocol) {
                Some(g) if f.rtt_us.p50 < g.rtt_us.p50 => *g = f,
                Some(_) => {}
                None => out.floor.push(f),
            }
        }
        if out.http_floor.is_none() {
            out.http_floor = run.http_floor;
        }
        out.failures.extend(run.failures);
        out.loadgen_peak_rss_kib = out.loadgen_peak_rss_kib.max(run.loadgen_peak_rss_kib);
        out.finished_at = out.finished_at.max(run.finished_at);
    }
    for q in &mut out.points {
        q.rps_spread = Spread::of(&q.trials.iter().map(|t| t.rps).collect::<Vec<_>>());
        q.rps = q.rps_spread.median;
        q.time_per_request_us = if q.rps > 0.0 { 1e6 / q.rps } else { 0.0 };
        q.counters = crate::results::CounterRecord::combine(
            &q.trials
                .iter()
                .filter_map(|t| t.counters.clone())
                .collect::<Vec<_>>(),
        );
        q.latency_p99_spread = Spread::of(
            &q.trials
                .iter()
                .map(|t| t.latency_us.p99)
                .collect::<Vec<_>>(),
        );
    }
    out.settings.trials = out
        .points
        .iter()
        .map(|p| p.trials.len())
        .max()
        .unwrap_or(out.settings.trials);
    out.references = Default::default();
    out.finish();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::compare::tests::{point, run, trials};

    #[test]
    fn a_baseline_round_trips_and_plain_results_load_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = run("m", 5.0, vec![point("reference", 10, trials(8000.0, 0.05))]);
        r.points[0].hgrm = Some("spectrum".into());
        let (b, warnings) = make(r.clone(), "reference-debug", "debug build", false).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let path = save(&b, &dir.path().join("baselines")).unwrap();
        assert!(path.ends_with("baselines/reference-debug.json"));
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.baseline_name.as_deref(), Some("reference-debug"));
        assert_eq!(loaded.results.points[0].trials.len(), 3);
        assert_eq!(loaded.results.points[0].hgrm, None, "spectra are dropped");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"format\": \"loadgen-baseline\"")
                && text.contains("\"fingerprint\": \"m\"")
        );

        // A sweep --out directory (its results.json) loads as a plain results document.
        let out = dir.path().join("sweep");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("results.json"), serde_json::to_string(&r).unwrap()).unwrap();
        let loaded = load(&out).unwrap();
        assert_eq!(loaded.baseline_name, None);
        assert!(loaded.path.ends_with("sweep/results.json"));
    }

    #[test]
    fn merging_concatenates_trials_and_keeps_the_quietest_floor() {
        let a = run("m", 6.0, vec![point("reference", 10, trials(8000.0, 0.05))]);
        let mut b = run(
            "m",
            50.0,
            vec![point("reference", 10, trials(4000.0, 0.05))],
        );
        b.points.push(point("reference", 20, trials(3000.0, 0.05)));
        b.points[0].errors = 1;
        let m = merge(vec![a, b]).unwrap();
        assert_eq!(m.points.len(), 2);
        assert_eq!(m.points[0].trials.len(), 6);
        assert_eq!(m.points[0].errors, 1);
        assert_eq!(m.points[0].rps_spread.min, 3800.0);
        assert_eq!(m.points[0].rps_spread.max, 8400.0);
        assert_eq!(m.floor[0].rtt_us.p50, 6.0, "the quietest floor");
        assert_eq!(m.settings.trials, 6);
        assert!(merge(Vec::new()).is_none());
    }

    #[test]
    fn unclean_runs_bad_names_and_bad_files_are_refused() {
        let mut r = run("m", 5.0, vec![point("reference", 10, trials(8000.0, 0.05))]);
        assert!(matches!(
            make(r.clone(), "../x", "", false),
            Err(BaselineError::Name(_))
        ));
        assert!(matches!(
            make(r.clone(), "", "", false),
            Err(BaselineError::Name(_))
        ));
        r.points[0].errors = 2;
        let e = make(r.clone(), "x", "", false).unwrap_err();
        assert!(e.to_string().contains("2 error(s)"), "{e}");
        assert!(
            make(r.clone(), "x", "", true).is_ok(),
            "--force saves anyway"
        );
        r.points[0].trials.truncate(1);
        let (_, w) = make(r, "x", "", true).unwrap();
        assert!(w[0].contains("fewer than 3 trials"), "{w:?}");

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.json");
        std::fs::write(&f, "{\"format\": \"loadgen-baseline\", \"version\": 7}").unwrap();
        assert!(matches!(
            load(&f),
            Err(BaselineError::Version { found: 7, .. })
        ));
        std::fs::write(&f, "{\"points\": []}").unwrap();
        let e = load(&f).unwrap_err();
        assert!(e.to_string().contains("not a loadgen results.json"), "{e}");
        assert!(matches!(
            load(&dir.path().join("absent.json")),
            Err(BaselineError::Read { .. })
        ));
    }
}
