use std::collections::BTreeMap;

use http::HeaderValue;
use metrics::Histogram;
use serde_json::{Value, json};

use super::*;
use crate::config::traffic::CheckContext;

const DOC: &str = r#"
version: 1
change: { id: C1, author: alice }
flag_context:
  targeting_key: [{ header: x-user-id }, { cookie: sluice_uid }]
  attributes:
    email: { header: x-user-email }
    plan: { cookie: plan }
    path: { request: path }
    method: { request: method }
    host: { request: host }
    ip: { request: client_ip }
flags:
  beta:
    state: ENABLED
    variants: { "on": true, "off": false }
    defaultVariant: "off"
    targeting: { "if": [{ "==": [{ "var": "plan" }, "pro"] }, "on", null] }
  backend:
    state: ENABLED
    variants: { old: 1, new: 2, exp: 3 }
    defaultVariant: old
    targeting: { "if": [{ "var": "plan" }, { "var": "plan" }, null] }
"#;

fn runtime(doc: &str) -> (FlagRuntime, Registry) {
    let doc = TrafficDoc::parse(doc, &CheckContext::default())
        .unwrap()
        .doc;
    let registry = Registry::new();
    (FlagRuntime::build(&doc, &registry).unwrap(), registry)
}

fn facts<'r>(headers: &'r HeaderMap, drawn: Option<(&'r str, &'r str)>) -> RequestFacts<'r> {
    RequestFacts {
        headers,
        method: &Method::POST,
        host: "Shop.Example.COM",
        path: "/checkout/pay",
        client_ip: "2001:db8::1".parse().unwrap(),
        client_cert: None,
        drawn,
    }
}

fn context_json(rt: &FlagRuntime, req: &RequestFacts<'_>) -> Value {
    rt.context
        .with_context(req, |ctx| Value::Object(ctx.to_object()))
}

#[test]
fn context_reads_every_source() {
    let (rt, _) = runtime(DOC);
    let mut h = HeaderMap::new();
    h.insert("x-user-id", HeaderValue::from_static(""));
    h.insert("x-user-email", HeaderValue::from_static("ada@example.com"));
    h.insert(
        "cookie",
        HeaderValue::from_static("sluice_uid=u-7; plan=pro"),
    );
    let ctx = context_json(&rt, &facts(&h, None));
    assert_eq!(
        ctx,
        json!({
            // An empty header is not a key: the cookie is next in line.
            "targetingKey": "u-7",
            "email": "ada@example.com",
            "plan": "pro",
            "path": "/checkout/pay",
            "method": "POST",
            "host": "shop.example.com",
            "ip": "2001:db8::1",
        })
    );
}

#[test]
fn a_drawn_id_stands_in_for_its_cookie_only() {
    let (rt, _) = runtime(DOC);
    let h = HeaderMap::new();
    let ctx = context_json(&rt, &facts(&h, Some(("sluice_uid", "d1"))));
    assert_eq!(ctx["targetingKey"], "d1");
    assert!(ctx.get("plan").is_none());
    let ctx = context_json(&rt, &facts(&h, Some(("other", "d1"))));
    assert!(ctx.get("targetingKey").is_none());
    // A cookie the client sent wins over a drawn id (the split would not draw one).
    let mut h = HeaderMap::new();
    h.insert("cookie", HeaderValue::from_static("sluice_uid=c1"));
    let ctx = context_json(&rt, &facts(&h, Some(("sluice_uid", "d1"))));
    assert_eq!(ctx["targetingKey"], "c1");
}

#[test]
fn many_attributes_leave_the_stack_buffer() {
    let mut doc = String::from(
        "version: 1\nchange: { id: C1, author: alice }\nflag_context:\n  attributes:\n",
    );
    for i in 0..INLINE_ATTRS + 4 {
        doc.push_str(&format!("    a{i}: {{ header: x-a{i} }}\n"));
    }
    let (rt, _) = runtime(&doc);
    let mut h = HeaderMap::new();
    for i in 0..INLINE_ATTRS + 4 {
        h.insert(
            HeaderName::from_bytes(format!("x-a{i}").as_bytes()).unwrap(),
            HeaderValue::from_str(&i.to_string()).unwrap(),
        );
    }
    let ctx = context_json(&rt, &facts(&h, None));
    assert_eq!(ctx.as_object().unwrap().len(), INLINE_ATTRS + 4);
    assert_eq!(ctx["a19"], "19");
}

#[test]
fn metrics_count_by_flag_variant_and_reason() {
    let (rt, registry) = runtime(DOC);
    let id = rt.set.get("beta").unwrap();
    rt.metrics.resolve(&rt.set, id);
    let text = registry.render();
    assert!(
        text.contains(
            r#"sluice_flag_evaluations_total{flag="beta",variant="on",reason="TARGETING_MATCH"} 0"#
        ),
        "{text}"
    );
    let h = HeaderMap::new();
    let mut pro = HeaderMap::new();
    pro.insert("cookie", HeaderValue::from_static("plan=pro"));
    for headers in [&h, &pro, &pro] {
        rt.context.with_context(&facts(headers, None), |ctx| {
            let res = rt.set.evaluate(id, ctx, 0);
            rt.record(id, &res);
        });
    }
    let text = registry.render();
    for series in [
        r#"sluice_flag_evaluations_total{flag="beta",variant="on",reason="TARGETING_MATCH"} 2"#,
        r#"sluice_flag_evaluations_total{flag="beta",variant="off",reason="DEFAULT"} 1"#,
    ] {
        assert!(text.contains(series), "missing {series}:\n{text}");
    }
    // Every slot of one flag stays inside that flag's range.
    let backend = rt.set.get("backend").unwrap();
    assert!(
        rt.metrics
            .slot(backend, Some(3), ResolutionReason::Static)
            .is_none()
    );
    assert!(
        rt.metrics
            .slot(backend, Some(2), ResolutionReason::Default)
            .is_some()
    );
    assert!(
        rt.metrics
            .slot(backend, None, ResolutionReason::TargetingMatch)
            .is_none()
    );
}

fn arm(upstream: usize) -> Arm {
    Arm {
        upstream,
        metrics: VariantMetrics {
            variant_header: HeaderValue::from_static("x"),
            requests: std::array::from_fn(|_| Counter::noop()),
            duration: Histogram::noop(),
        },
    }
}

#[test]
fn flag_targets_map_variants_and_fall_back_to_the_default() {
    let (rt, _) = runtime(DOC);
    let names = ["u-old", "u-new"];
    let upstreams: BTreeMap<String, usize> = [("old", "u-old"), ("new", "u-new")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), names.iter().position(|n| *n == b).unwrap()))
        .collect();
    let none: [&str; 0] = [];
    let headers = RouteHeaders::new(&rt.set, &none).unwrap();
    let t = FlagTarget::build(&rt, "backend", &upstreams, &headers, arm).unwrap();
    assert_eq!(t.arms().len(), 2);
    let pick = |plan: Option<&'static str>| {
        let mut h = HeaderMap::new();
        if let Some(p) = plan {
            h.insert(
                "cookie",
                HeaderValue::from_str(&format!("plan={p}")).unwrap(),
            );
        }
        let routed = rt.context.with_context(&facts(&h, None), |ctx| {
            rt.set.evaluate(t.flag, ctx, 0).variant_index()
        });
        let ev = Evaluated {
            selected: Selected::default(),
            routed,
        };
        names[t.pick(Some(&ev)).upstream]
    };
    assert_eq!(pick(None), "u-old", "targeting null: the default variant");
    assert_eq!(pick(Some("new")), "u-new");
    assert_eq!(
        pick(Some("exp")),
        "u-old",
        "unmapped: the default's upstream"
    );
    assert_eq!(
        pick(Some("gone")),
        "u-old",
        "an error: the default's upstream"
    );
    assert_eq!(names[t.pick(None).upstream], "u-old");

    let unmapped_default: BTreeMap<String, usize> = [("new".to_string(), 1)].into();
    assert!(FlagTarget::build(&rt, "backend", &unmapped_default, &headers, |_| arm(0)).is_err());
}
