//! The module edges of the crate map (`lib.rs`), checked by reading the source: every
//! `crate::…` path a file names is an edge from its module to that module.
//!
//! - the control plane (`change`, `rollout`, `cluster`, `config`, `flags`) never reaches into
//!   the data plane (`proxy`, `flagsvc`) or the `admin` listener: it publishes snapshots and
//!   is called by admin;
//! - `proxy`, `flagsvc` and `snapshot` never name `admin`, `change`, `instance` or `cli`;
//! - `flags` is a leaf: nothing of the crate but `bucket`; `request_match` names nothing;
//! - nothing but `cli` names `cli`, and only `cli` names `instance`;
//! - the files of `change/` import one another without a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules a module must not name.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("change", &["proxy", "flagsvc", "admin", "instance", "cli"]),
    ("rollout", &["proxy", "flagsvc", "admin", "instance", "cli"]),
    ("cluster", &["proxy", "flagsvc", "admin", "instance", "cli"]),
    (
        "config",
        &[
            "proxy", "flagsvc", "admin", "snapshot", "change", "rollout", "instance", "cli",
        ],
    ),
    ("proxy", &["admin", "change", "instance", "cli"]),
    (
        "flagsvc",
        &["admin", "change", "rollout", "cluster", "instance", "cli"],
    ),
    ("snapshot", &["admin", "change", "instance", "cli"]),
    ("admin", &["instance", "cli"]),
    (
        "telemetry",
        &[
            "proxy", "flagsvc", "admin", "change", "rollout", "instance", "cli",
        ],
    ),
    (
        "shutdown",
        &["proxy", "admin", "change", "rollout", "instance", "cli"],
    ),
];

/// Every `.rs` file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("src is readable") {
            let p = e.expect("a directory entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file belongs to (`src/proxy/tls.rs` → `proxy`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// The top-level modules `text` names as `crate::name`, with the line of the first use.
fn named(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.entry(name).or_insert(n + 1);
            }
        }
        // `use crate::{a, b}` names several.
        if let Some(i) = code.find("crate::{") {
            let inner = &code[i + "crate::{".len()..];
            for part in inner.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.entry(name).or_insert(n + 1);
                }
            }
        }
    }
    out
}

#[test]
fn layers_do_not_reach_across() {
    let mut broken = Vec::new();
    for path in files(&src()) {
        let from = module_of(&path);
        let text = std::fs::read_to_string(&path).expect("readable");
        for (to, line) in named(&text) {
            if to == from {
                continue;
            }
            let forbidden = FORBIDDEN
                .iter()
                .find(|(m, _)| *m == from)
                .is_some_and(|(_, bad)| bad.contains(&to.as_str()));
            let leaf = (from == "flags" && to != "bucket") || from == "request_match";
            let private = (to == "cli" && from != "cli" && from != "main")
                || (to == "instance" && from != "cli");
            if forbidden || leaf || private {
                broken.push(format!("{}:{line}: {from} names {to}", path.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "edges that run the wrong way:\n{}",
        broken.join("\n")
    );
}

#[test]
fn change_has_no_import_cycle() {
    let dir = src().join("change");
    // Sibling files (and directories) of change/, by name.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let siblings: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("change/ is readable")
        .map(|e| e.expect("an entry").path())
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().to_string()))
        .filter(|s| s != "mod")
        .collect();
    for path in files(&dir) {
        let rel = path.strip_prefix(&dir).expect("under change/");
        let from = rel
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if from == "mod" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        // Inside a file, `super::x` is a sibling only at the top level of `change/`.
        let nested = rel.components().count() > 1;
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            if code.trim_start().starts_with("use super::*") {
                continue;
            }
            for prefix in ["crate::change::", "super::"] {
                if prefix == "super::" && nested {
                    continue;
                }
                let mut rest = code;
                while let Some(i) = rest.find(prefix) {
                    rest = &rest[i + prefix.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if siblings.contains(&name) && name != from {
                        edges.entry(from.clone()).or_default().insert(name);
                    }
                }
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(cycle) = visit(n, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle in change/: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_checker_sees_edges() {
    let text = "use crate::proxy::Shared;\nuse crate::{admin, flags::x};\n// crate::cli\n";
    let n = named(text);
    assert_eq!(n.get("proxy"), Some(&1));
    assert_eq!(n.get("admin"), Some(&2));
    assert_eq!(n.get("flags"), Some(&2));
    assert_eq!(n.get("cli"), None, "comments are not edges");
}
