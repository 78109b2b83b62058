//! Change classification (SPEC §5): diff the candidate against the active document, then
//! decide standard, normal or emergency — and say which paths kept a change from being
//! standard.
//!
//! A path is standard only when it matches `standard.allow` and none of these hold:
//! - it lies under a flag named by some route's `to.flag` (in either document): that flag is
//!   routing, so its state, variants and targeting choose upstreams;
//! - it lies under an `$evaluators` entry such a flag reaches through `$ref`, or it is
//!   `/fractional` or under `/flag_context` while any routing flag exists — they decide that
//!   flag's variant just as much;
//! - it matches the `paths` of a path-scoped requirement: a path someone must sign off on is
//!   never pre-approved, even if `standard.allow` overlaps it.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::diff::{self, escape, segments, unescape};
use super::rules::Rules;
use crate::config::traffic::ChangeClass;

/// The class of a candidate and the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// How the change is handled (`standard`, `normal` or `emergency`).
    pub class: ChangeClass,
    /// What `change.class` says.
    pub claimed: ChangeClass,
    /// The diff is empty: nothing to activate.
    pub no_op: bool,
    /// Nothing is active, so every change is normal (or emergency).
    pub nothing_active: bool,
    /// Changed leaf paths (JSON Pointers), sorted.
    pub paths: Vec<String>,
    /// Changed paths that are not standard, with why.
    pub not_standard: Vec<NotStandard>,
}

/// A changed path that keeps a change from being standard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotStandard {
    /// The JSON Pointer.
    pub path: String,
    /// Why it is not standard.
    pub why: Why,
}

/// Why a path is not standard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Why {
    /// No `standard.allow` glob matches it.
    NotAllowed,
    /// It is under this flag, which a route uses to pick upstreams.
    RoutingFlag(String),
    /// It feeds the evaluation of a routing flag (`$evaluators`, `fractional`, `flag_context`).
    RoutingInput(String),
    /// A path-scoped requirement (named by its place in the policy) covers it.
    Guarded(String),
}

// === impl Classification ===

impl Classification {
    /// Changed paths matching any of `globs`.
    pub fn touched<'s, 'g>(
        &'s self,
        globs: &'g [super::glob::Glob],
    ) -> impl Iterator<Item = &'s str> + use<'s, 'g> {
        self.paths
            .iter()
            .filter(|p| globs.iter().any(|g| g.matches(p)))
            .map(String::as_str)
    }

    /// One sentence for status and `sluice validate`.
    pub fn explain(&self) -> String {
        let class = class_name(self.class);
        if self.no_op {
            return "no change: the document equals the active one (version and change header aside)".into();
        }
        let n = self.paths.len();
        let changed = format!("{n} path{} changed", if n == 1 { "" } else { "s" });
        if self.class == ChangeClass::Standard {
            return format!("standard: {changed}, all pre-approved by standard.allow");
        }
        let mut s = format!("{class}: {changed}");
        if self.nothing_active {
            s.push_str("; nothing is active yet, so no change can be standard");
        } else if !self.not_standard.is_empty() {
            let shown: Vec<String> = self
                .not_standard
                .iter()
                .take(5)
                .map(|n| n.to_string())
                .collect();
            let more = self.not_standard.len().saturating_sub(5);
            s.push_str(if self.claimed == ChangeClass::Standard {
                "; it claims standard, but "
            } else {
                "; not standard because "
            });
            s.push_str(&shown.join("; "));
            if more > 0 {
                s.push_str(&format!("; and {more} more"));
            }
        }
        s
    }
}

impl fmt::Display for NotStandard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.why {
            Why::NotAllowed => write!(f, "{} is not in standard.allow", self.path),
            Why::RoutingFlag(flag) => write!(
                f,
                "{} is under flag `{flag}`, which a route uses to pick upstreams",
                self.path
            ),
            Why::RoutingInput(what) => write!(
                f,
                "{} changes {what}, which decides a routing flag",
                self.path
            ),
            Why::Guarded(rule) => write!(f, "{} needs the sign-off of {rule}", self.path),
        }
    }
}

/// Classifies `candidate` against `active` (`None`: nothing active) under `rules`.
pub fn classify(
    rules: &Rules,
    active: Option<&Value>,
    candidate: &Value,
    claimed: ChangeClass,
) -> Classification {
    let paths = diff::diff(active, candidate);
    let fallback = if claimed == ChangeClass::Emergency {
        ChangeClass::Emergency
    } else {
        ChangeClass::Normal
    };
    let Some(active) = active else {
        return Classification {
            class: fallback,
            claimed,
            no_op: false,
            nothing_active: true,
            paths,
            not_standard: Vec::new(),
        };
    };
    if paths.is_empty() {
        return Classification {
            class: claimed,
            claimed,
            no_op: true,
            nothing_active: false,
            paths,
            not_standard: Vec::new(),
        };
    }
    let routing = Routing::of(&[active, candidate]);
    let not_standard: Vec<NotStandard> = paths
        .iter()
        .filter_map(|p| {
            why_not_standard(rules, &routing, p).map(|why| NotStandard {
                path: p.clone(),
                why,
            })
        })
        .collect();
    Classification {
        class: if not_standard.is_empty() {
            ChangeClass::Standard
        } else {
            fallback
        },
        claimed,
        no_op: false,
        nothing_active: false,
        paths,
        not_standard,
    }
}

/// The lower-case name of a class, as in documents and audit records.
pub fn class_name(class: ChangeClass) -> &'static str {
    match class {
        ChangeClass::Standard => "standard",
        ChangeClass::Normal => "normal",
        ChangeClass::Emergency => "emergency",
        ChangeClass::Unapproved => "unapproved",
    }
}

fn why_not_standard(rules: &Rules, routing: &Routing, path: &str) -> Option<Why> {
    let segs = segments(path);
    match segs.as_slice() {
        ["flags", flag, ..] if routing.flags.contains(&unescape(flag)) => {
            return Some(Why::RoutingFlag(unescape(flag)));
        }
        ["$evaluators", name, ..] if routing.evaluators.contains(&unescape(name)) => {
            return Some(Why::RoutingInput(format!("evaluator `{}`", unescape(name))));
        }
        ["fractional", ..] if !routing.flags.is_empty() => {
            return Some(Why::RoutingInput("the fractional hashing".into()));
        }
        ["flag_context", ..] if !routing.flags.is_empty() => {
            return Some(Why::RoutingInput("the flag evaluation context".into()));
        }
        _ => {}
    }
    if let Some(rule) = rules.guarding(&segs) {
        return Some(Why::Guarded(rule.describe()));
    }
    if rules
        .standard_allow
        .iter()
        .any(|g| g.matches_segments(&segs))
    {
        None
    } else {
        Some(Why::NotAllowed)
    }
}

/// Flags that routes use to pick upstreams, and the evaluators they reach.
struct Routing {
    flags: BTreeSet<String>,
    evaluators: BTreeSet<String>,
}

// === impl Routing ===

impl Routing {
    fn of(docs: &[&Value]) -> Routing {
        let mut flags = BTreeSet::new();
        for doc in docs {
            let routes = doc
                .get("routes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for route in routes {
                if let Some(flag) = route.pointer("/to/flag").and_then(Value::as_str) {
                    flags.insert(flag.to_string());
                }
            }
        }
        // Evaluators reached from routing flags through `$ref`, transitively.
        let mut evaluators = BTreeSet::new();
        let mut todo: Vec<String> = Vec::new();
        for doc in docs {
            for flag in &flags {
                if let Some(def) = doc.pointer(&format!("/flags/{}", escape(flag))) {
                    collect_refs(def, &mut todo);
                }
            }
        }
        while let Some(name) = todo.pop() {
            if evaluators.insert(name.clone()) {
                for doc in docs {
                    if let Some(def) = doc.pointer(&format!("/$evaluators/{}", escape(&name))) {
                        collect_refs(def, &mut todo);
                    }
                }
            }
        }
        Routing { flags, evaluators }
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(name)) = m.get("$ref") {
                out.push(name.clone());
            }
            m.values().for_each(|c| collect_refs(c, out));
        }
        Value::Array(items) => items.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::settings::{Policy, Requirement};

    fn rules(allow: &[&str], guarded: &[&str]) -> Rules {
        let mut p = Policy::default();
        p.standard.allow = allow.iter().map(|s| s.to_string()).collect();
        p.normal.require = vec![Requirement {
            count: 1,
            roles: vec!["security".into()],
            paths: Some(guarded.iter().map(|s| s.to_string()).collect()),
        }];
        Rules::compile(&p).unwrap()
    }

    #[test]
    fn a_guarded_path_is_never_standard() {
        let r = rules(&["/upstreams/**"], &["/upstreams/*/tls/**"]);
        let a = json!({"upstreams": {"u": {"endpoints": ["a:1"]}}});
        let mut b = a.clone();
        b["upstreams"]["u"]["endpoints"][0] = json!("b:1");
        assert_eq!(
            classify(&r, Some(&a), &b, ChangeClass::Standard).class,
            ChangeClass::Standard
        );
        b["upstreams"]["u"]["tls"] = json!({"server_name": "x"});
        let c = classify(&r, Some(&a), &b, ChangeClass::Standard);
        assert_eq!(c.class, ChangeClass::Normal);
        assert_eq!(
            c.not_standard,
            [NotStandard {
                path: "/upstreams/u/tls/server_name".into(),
                why: Why::Guarded("normal.require[0] (role security)".into()),
            }]
        );
    }

    #[test]
    fn nothing_active_and_no_op() {
        let r = rules(&["/**"], &[]);
        let b = json!({"version": 2, "flags": {"f": {"state": "ENABLED"}}});
        let c = classify(&r, None, &b, ChangeClass::Standard);
        assert_eq!((c.class, c.nothing_active), (ChangeClass::Normal, true));
        assert!(
            c.explain().contains("nothing is active yet"),
            "{}",
            c.explain()
        );
        let c = classify(&r, None, &b, ChangeClass::Emergency);
        assert_eq!(c.class, ChangeClass::Emergency);
        let mut a = b.clone();
        a["version"] = json!(1);
        let c = classify(&r, Some(&a), &b, ChangeClass::Normal);
        assert!(c.no_op && c.paths.is_empty());
    }
}
