//! Property tests for the diff, the globs, the classifier and token parsing.

mod change_support;

use change_support::*;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sluice::change::classify;
use sluice::change::diff::{diff, escape};
use sluice::change::glob::Glob;
use sluice::change::token::{Act, verify};
use sluice::config::traffic::ChangeClass;

/// Object keys that exercise RFC 6901 escaping.
fn object_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,2}",
        Just("a/b".to_string()),
        Just("~".to_string()),
        Just("~1".to_string()),
        Just(String::new())
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(|n| json!(n)),
        "[xy]{0,2}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(object_key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn document() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(object_key(), json_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

fn without_envelope(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("version");
        m.remove("change");
    }
    v
}

proptest! {
    #[test]
    fn diff_of_a_document_with_itself_is_empty(a in document()) {
        prop_assert!(diff(Some(&a), &a).is_empty());
    }

    #[test]
    fn diff_is_empty_exactly_when_equal(a in document(), b in document()) {
        let d = diff(Some(&a), &b);
        prop_assert_eq!(d.is_empty(), without_envelope(&a) == without_envelope(&b));
    }

    #[test]
    fn diff_is_symmetric_sorted_and_resolvable(a in document(), b in document()) {
        let ab = diff(Some(&a), &b);
        prop_assert_eq!(&ab, &diff(Some(&b), &a));
        prop_assert!(ab.windows(2).all(|w| w[0] < w[1]));
        for p in &ab {
            prop_assert!(p.starts_with('/'));
            // Every leaf path names a node of one side or the other.
            prop_assert!(a.pointer(p).is_some() || b.pointer(p).is_some(), "{} in neither", p);
        }
    }

    #[test]
    fn a_path_matches_itself_with_wildcards(segs in prop::collection::vec(object_key(), 1..6), star in any::<prop::sample::Index>(), dstar in any::<prop::sample::Index>()) {
        let escaped: Vec<String> = segs.iter().map(|s| escape(s)).collect();
        let path = format!("/{}", escaped.join("/"));
        let lit = Glob::parse(&path).unwrap();
        // A literal segment `*` or `**` is a wildcard, so only check literal globs without them.
        prop_assert!(lit.matches(&path));
        let mut one = escaped.clone();
        let at = star.index(one.len());
        one[at] = "*".into();
        let one_glob = Glob::parse(&format!("/{}", one.join("/"))).unwrap();
        prop_assert!(one_glob.matches(&path));
        let mut many = escaped.clone();
        let at = dstar.index(many.len() + 1);
        many.insert(at, "**".into());
        let many_glob = Glob::parse(&format!("/{}", many.join("/"))).unwrap();
        prop_assert!(many_glob.matches(&path));
        prop_assert!(Glob::parse("/**").unwrap().matches(&path));
        // `*` is exactly one segment: one more or one fewer never matches.
        let longer = format!("/{}/*", escaped.join("/"));
        prop_assert!(!Glob::parse(&longer).unwrap().matches(&path));
        let stars = vec!["*"; escaped.len() - 1].join("/");
        let fewer = Glob::parse(&format!("/{stars}")).unwrap();
        prop_assert!(escaped.len() == 1 || !fewer.matches(&path));
    }

    #[test]
    fn changes_confined_to_allowed_paths_are_standard(
        flags in prop::collection::btree_map("[a-z]{1,6}", (any::<bool>(), any::<bool>()), 1..5),
        paused in any::<bool>(),
        edit in prop::collection::vec(any::<bool>(), 4),
    ) {
        let (active, candidate) = standard_pair(&flags, paused, &edit);
        let c = classify(store().rules(), Some(&active), &candidate, ChangeClass::Standard);
        if c.no_op {
            prop_assert!(c.paths.is_empty());
        } else {
            prop_assert_eq!(c.class, ChangeClass::Standard, "{}", c.explain());
            prop_assert!(c.not_standard.is_empty());
        }
    }

    #[test]
    fn any_non_allowed_path_makes_it_non_standard(
        flags in prop::collection::btree_map("[a-z]{1,6}", (any::<bool>(), any::<bool>()), 1..5),
        paused in any::<bool>(),
        edit in prop::collection::vec(any::<bool>(), 4),
        extra in 0usize..7,
        claim_emergency in any::<bool>(),
    ) {
        let (active, mut candidate) = standard_pair(&flags, paused, &edit);
        let (path, value) = [
            ("/upstreams/v1/endpoints/0", json!("10.9.9.9:80")),
            ("/upstreams/v1/tls", json!({"server_name": "x"})),
            ("/routes/0/match/path_prefix", json!("/other")),
            ("/flags/backend/state", json!("DISABLED")),
            ("/flags/backend/defaultVariant", json!("v2")),
            ("/flags/zz-new", json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"})),
            ("/rollouts/checkout/steps/0/weight", json!(50)),
        ][extra].clone();
        set(&mut candidate, path, value);
        let claimed = if claim_emergency { ChangeClass::Emergency } else { ChangeClass::Standard };
        let c = classify(store().rules(), Some(&active), &candidate, claimed);
        let want = if claim_emergency { ChangeClass::Emergency } else { ChangeClass::Normal };
        prop_assert_eq!(c.class, want);
        prop_assert!(!c.not_standard.is_empty());
        prop_assert!(c.not_standard.iter().all(|n| !n.path.starts_with("/flags/") || n.path.starts_with("/flags/backend") || n.path.starts_with("/flags/zz-new")));
    }

    #[test]
    fn arbitrary_bytes_are_refused_without_panic(s in "\\PC{0,300}") {
        prop_assert!(verify(&s, &store(), T0).is_err());
    }

    #[test]
    fn any_single_byte_change_to_a_token_is_refused(i in any::<prop::sample::Index>(), c in prop::sample::select(b"AZaz09-_.=+/ ".to_vec())) {
        let t7 = doc(7, "alice", "normal");
        let good = token(&key("bob"), "bob", &t7, 7, Act::Approve);
        let mut bytes = good.clone().into_bytes();
        let at = i.index(bytes.len());
        bytes[at] = c;
        let bad = String::from_utf8(bytes).unwrap();
        let res = verify(&bad, &store(), T0);
        // The last base64 char may carry only padding bits that the decoder must refuse.
        prop_assert!(bad.trim() == good || res.is_err(), "accepted a modified token at byte {}", at);
    }
}

/// An active document with `flags` (state, default) and a routing flag, and a candidate that
/// flips allowed fields only, chosen by `edit`.
fn standard_pair(
    flags: &std::collections::BTreeMap<String, (bool, bool)>,
    paused: bool,
    edit: &[bool],
) -> (Value, Value) {
    let mut fl = Map::new();
    for (name, (on, default_on)) in flags {
        fl.insert(
            name.clone(),
            json!({"state": if *on { "ENABLED" } else { "DISABLED" }, "variants": {"on": true, "off": false},
                   "defaultVariant": if *default_on { "on" } else { "off" }}),
        );
    }
    fl.insert(
        "backend".into(),
        json!({"state": "ENABLED", "variants": {"v1": "v1", "v2": "v2"}, "defaultVariant": "v1"}),
    );
    let active = json!({
        "version": 1, "change": {"id": "A", "author": "alice"},
        "upstreams": {"v1": {"endpoints": ["10.0.0.1:80"]}, "v2": {"endpoints": ["10.0.0.2:80"]}},
        "routes": [{"name": "r", "match": {"path_prefix": "/"}, "to": {"flag": "backend", "upstreams": {"v1": "v1", "v2": "v2"}}}],
        "rollouts": {"checkout": {"strategy": "canary", "stable": "v1", "canary": "v2", "paused": paused, "steps": [{"weight": 5}]}},
        "flags": fl,
    });
    let mut cand = active.clone();
    cand["version"] = json!(2);
    cand["change"]["id"] = json!("B");
    for (i, (name, (on, default_on))) in flags.iter().enumerate() {
        let e = |k: usize| edit[(i + k) % edit.len()];
        if e(0) {
            cand["flags"][name]["state"] = json!(if *on { "DISABLED" } else { "ENABLED" });
        }
        if e(1) {
            cand["flags"][name]["defaultVariant"] = json!(if *default_on { "off" } else { "on" });
        }
    }
    if edit[3] {
        cand["rollouts"]["checkout"]["paused"] = json!(!paused);
    }
    (active, cand)
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let mut node = doc;
    for seg in parent.split('/').skip(1) {
        node = match node {
            Value::Array(items) => &mut items[seg.parse::<usize>().unwrap()],
            other => {
                let m = other.as_object_mut().unwrap();
                m.entry(seg.to_string()).or_insert_with(|| json!({}))
            }
        };
    }
    match node {
        Value::Array(items) => items[last.parse::<usize>().unwrap()] = value,
        other => {
            other
                .as_object_mut()
                .unwrap()
                .insert(last.to_string(), value);
        }
    }
}
