//! The reference under `docs/` against the code: every metric family, audit event and reason
//! code the code knows is named in its page, and no page (nor the README) needs anything
//! outside the repository. A name added in code without its line of documentation fails here.

use std::path::{Path, PathBuf};

use crate::change::Reason;
use crate::change::audit::EventKind;
use crate::telemetry::FAMILIES;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The names of `names` that `page` does not mention as `` `name` ``.
fn missing<'a>(page: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let text = read(page);
    names
        .into_iter()
        .filter(|n| !text.contains(&format!("`{n}`")))
        .collect()
}

#[test]
fn every_metric_family_is_documented() {
    let gaps = missing("docs/metrics.md", FAMILIES.iter().map(|f| f.name));
    assert!(gaps.is_empty(), "docs/metrics.md lacks {gaps:?}");
}

#[test]
fn every_audit_event_is_documented() {
    let gaps = missing("docs/audit.md", EventKind::ALL.iter().map(|k| k.name()));
    assert!(gaps.is_empty(), "docs/audit.md lacks {gaps:?}");
}

#[test]
fn every_reason_code_is_documented() {
    let gaps = missing("docs/api.md", Reason::ALL.iter().map(|r| r.as_str()));
    assert!(gaps.is_empty(), "docs/api.md lacks {gaps:?}");
}

/// Relative links in the README and `docs/` resolve inside the repository, and nothing
/// points at the `../shared` folder a clone does not have.
#[test]
fn docs_are_self_contained() {
    let mut pages = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).expect("docs/ is readable") {
        let p = e.expect("an entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("readable");
        if text.contains("../shared") || text.contains("shared/SPEC") {
            broken.push(format!("{}: names ../shared", page.display()));
        }
        let dir = page.parent().expect("a folder");
        for target in links(&text) {
            let file = target.split('#').next().unwrap_or("");
            if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                continue;
            }
            let resolved = dir.join(file);
            if !resolved.exists() || !inside(&resolved) {
                broken.push(format!("{}: link {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Markdown link targets: `](target)`.
fn links(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

fn inside(p: &Path) -> bool {
    match (p.canonicalize(), root().canonicalize()) {
        (Ok(p), Ok(r)) => p.starts_with(r),
        _ => false,
    }
}

#[test]
fn the_link_reader_sees_links() {
    assert_eq!(
        links("see [a](docs/a.md#x) and [b](https://x.y/z)."),
        vec!["docs/a.md#x", "https://x.y/z"]
    );
}
