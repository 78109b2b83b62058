//! Leaf diff of two traffic documents as JSON Pointers (RFC 6901). `/version` and
//! `/change/...` are the envelope, not the change, and are ignored. Arrays compare by index;
//! an added or removed subtree yields every leaf under it, so path rules see what is inside.

use serde_json::Value;

/// Top-level keys that are not part of what a change changes.
const IGNORED: [&str; 2] = ["version", "change"];

/// Sorted, unique leaf paths where `old` and `new` differ (`old` = `None`: nothing active).
pub fn diff(old: Option<&Value>, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let empty = Value::Object(Default::default());
    let old = old.unwrap_or(&empty);
    let mut path = String::new();
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                if IGNORED.contains(&k.as_str()) {
                    continue;
                }
                with_key(&mut path, k, |p| match b.get(k) {
                    Some(vb) => walk(p, Some(va), Some(vb), &mut out),
                    None => walk(p, Some(va), None, &mut out),
                });
            }
            for (k, vb) in b {
                if IGNORED.contains(&k.as_str()) || a.contains_key(k) {
                    continue;
                }
                with_key(&mut path, k, |p| walk(p, None, Some(vb), &mut out));
            }
        }
        // Not documents: compare whole values, root path "".
        (a, b) => walk(&mut path, Some(a), Some(b), &mut out),
    }
    out.sort();
    out.dedup();
    out
}

/// Escapes one JSON Pointer reference token (`~` → `~0`, `/` → `~1`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Undoes [`escape`].
pub fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Splits an escaped pointer into its still-escaped segments (`""` → none).
pub fn segments(pointer: &str) -> Vec<&str> {
    match pointer.strip_prefix('/') {
        Some(rest) => rest.split('/').collect(),
        None => Vec::new(),
    }
}

/// Every leaf path under `value` (itself, when a scalar or an empty container).
pub fn leaves(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(&mut String::new(), None, Some(value), &mut out);
    out
}

fn with_key(path: &mut String, key: &str, f: impl FnOnce(&mut String)) {
    let len = path.len();
    path.push('/');
    path.push_str(&escape(key));
    f(path);
    path.truncate(len);
}

/// Records the leaves where `a` and `b` differ; a side that is `None` does not exist.
fn walk(path: &mut String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) if !(x.is_empty() && y.is_empty()) => {
            for (k, vx) in x {
                with_key(path, k, |p| walk(p, Some(vx), y.get(k), out));
            }
            for (k, vy) in y {
                if !x.contains_key(k) {
                    with_key(path, k, |p| walk(p, None, Some(vy), out));
                }
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if !(x.is_empty() && y.is_empty()) => {
            for i in 0..x.len().max(y.len()) {
                with_key(path, &i.to_string(), |p| walk(p, x.get(i), y.get(i), out));
            }
        }
        (Some(x), Some(y)) if x == y => {}
        (a, b) => {
            // Different kinds or values, or one side missing: every leaf of each side.
            for side in [a, b].into_iter().flatten() {
                push_leaves(path, side, out);
            }
        }
    }
}

fn push_leaves(path: &mut String, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                with_key(path, k, |p| push_leaves(p, c, out));
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, c) in items.iter().enumerate() {
                with_key(path, &i.to_string(), |p| push_leaves(p, c, out));
            }
        }
        _ => out.push(path.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ignores_envelope_and_reports_leaves() {
        let a = json!({"version": 1, "change": {"id": "A"}, "flags": {"f": {"state": "ENABLED"}}});
        let b = json!({"version": 2, "change": {"id": "B"}, "flags": {"f": {"state": "DISABLED"}}});
        assert_eq!(diff(Some(&a), &b), vec!["/flags/f/state"]);
        assert!(diff(Some(&a), &a).is_empty());
    }

    #[test]
    fn added_and_removed_subtrees_give_their_leaves() {
        let a = json!({"upstreams": {"x": {"endpoints": ["a:1"]}}});
        let b = json!({"upstreams": {"y": {"endpoints": ["b:1", "c:1"], "tls": {}}}});
        assert_eq!(
            diff(Some(&a), &b),
            vec![
                "/upstreams/x/endpoints/0",
                "/upstreams/y/endpoints/0",
                "/upstreams/y/endpoints/1",
                "/upstreams/y/tls",
            ]
        );
    }

    #[test]
    fn arrays_by_index_and_kind_changes() {
        let a = json!({"routes": [{"name": "a"}, {"name": "b"}], "k": {"x": 1}});
        let b = json!({"routes": [{"name": "a"}], "k": 5});
        assert_eq!(diff(Some(&a), &b), vec!["/k", "/k/x", "/routes/1/name"]);
    }

    #[test]
    fn escapes_keys() {
        let a = json!({"flags": {}});
        let b = json!({"flags": {"a/b~c": {"state": "ENABLED"}}});
        assert_eq!(diff(Some(&a), &b), vec!["/flags/a~1b~0c/state"]);
        assert_eq!(unescape("a~1b~0c"), "a/b~c");
        assert_eq!(unescape("~01"), "~1");
    }

    #[test]
    fn nothing_active_is_every_leaf() {
        let b = json!({"version": 1, "change": {"id": "A"}, "flags": {"f": {"state": "ENABLED"}}, "routes": []});
        assert_eq!(diff(None, &b), vec!["/flags/f/state", "/routes"]);
    }
}
