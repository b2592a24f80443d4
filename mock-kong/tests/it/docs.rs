//! The protocol reference is in the repository (docs/protocol.md), and everything that cites a
//! section of it cites one that exists.

use std::path::{Path, PathBuf};

use crate::util::root;

/// Text files of the repository (not build output, installed peers or dependencies).
fn text_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !matches!(
                name.as_str(),
                "target" | ".git" | ".peers" | "node_modules" | "corpus" | "artifacts"
            ) {
                text_files(&p, out);
            }
        } else if [
            ".rs", ".md", ".toml", ".sh", ".py", ".js", ".go", ".json", ".xml", ".yml",
        ]
        .iter()
        .any(|x| name.ends_with(x))
        {
            out.push(p);
        }
    }
}

/// The sections docs/protocol.md has: `N`, `N.M` from its headings, and `N.K` for the numbered
/// items of sections 8 and 10.
fn sections(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(h) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
        {
            if let Some(num) = h.split_whitespace().next() {
                let num = num.trim_end_matches('.');
                if num.chars().all(|c| c.is_ascii_digit() || c == '.') && !num.is_empty() {
                    out.push(num.to_owned());
                    current = num.to_owned();
                }
            }
        } else if let Some((n, _)) = line.split_once(". ") {
            if (current == "8" || current == "10") && n.chars().all(|c| c.is_ascii_digit()) {
                out.push(format!("{current}.{n}"));
            }
        }
    }
    out
}

/// Regression (issue 13, item 12): code, messages and docs cited sections of a specification
/// file that is not in the repository ("spec" and a section sign). Now they cite docs/protocol.md, and every cited section exists.
#[test]
fn every_protocol_citation_points_to_a_section_of_docs_protocol_md() {
    let root = root();
    let reference =
        std::fs::read_to_string(root.join("docs/protocol.md")).expect("docs/protocol.md");
    let known = sections(&reference);
    assert!(
        known.contains(&"4.4".to_owned()) && known.contains(&"10.15".to_owned()),
        "{known:?}"
    );
    let mut files = Vec::new();
    text_files(&root, &mut files);
    let cite = regex::Regex::new(r"docs/protocol\.md §(\d+(?:\.\d+)?)(?: item (\d+))?").unwrap();
    let mut bad = Vec::new();
    let mut cited = 0;
    let outside = ["spec", "§"].join(" ");
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let shown = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        if text.contains(&outside) && shown != "docs/protocol.md" {
            bad.push(format!(
                "{shown}: cites \"{outside}\" (a file outside the repository)"
            ));
        }
        for c in cite.captures_iter(&text) {
            cited += 1;
            let section = match c.get(2) {
                Some(item) => format!("{}.{}", &c[1], item.as_str()),
                None => c[1].to_owned(),
            };
            if !known.contains(&section) {
                bad.push(format!(
                    "{shown}: cites §{section}, which docs/protocol.md does not have"
                ));
            }
        }
    }
    assert!(
        cited > 100,
        "only {cited} citations found: is the walk right?"
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
