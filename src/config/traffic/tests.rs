use super::*;
use crate::config::Weight;

const GOOD: &str = r#"
version: 7
change: { id: CHG-1, author: alice, class: normal, summary: "canary checkout v2" }
upstreams:
  v1: { endpoints: ["127.0.0.1:9101"] }
  v2: { endpoints: ["127.0.0.1:9102"], balance: least_request }
routes:
  - name: checkout
    match: { host: "shop.example.com", path_prefix: /checkout, methods: [GET, POST] }
    to: { rollout: checkout }
    flags: [new-checkout]
  - name: rest
    to: { upstream: v1 }
rollouts:
  checkout:
    strategy: canary
    stable: v1
    canary: v2
    sticky: { header: x-user-id, cookie: sluice_uid, set_cookie: true }
    steps:
      - { weight: 5.25, hold: 2m }
      - { gate: manual }
      - { weight: 100 }
    analysis: { interval: 1s, window: 30s, min_requests: 50, max_error_rate: 0.05 }
flags:
  new-checkout:
    state: ENABLED
    variants: { "on": true, "off": false }
    defaultVariant: "off"
"#;

#[test]
fn good_document_parses() {
    let p = TrafficDoc::parse(GOOD, &CheckContext::default()).unwrap();
    assert_eq!(p.doc.version, 7);
    let ro = &p.doc.rollouts["checkout"];
    assert_eq!(ro.steps[0].weight, Some(Weight(525)));
    assert_eq!(ro.steps[1].gate, Some(StepGate::Manual));
    assert_eq!(p.doc.upstreams["v2"].balance, Balance::LeastRequest);
    assert_eq!(p.json["routes"][0]["name"], "checkout");
}

fn errors(text: &str) -> String {
    TrafficDoc::parse(text, &CheckContext::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn every_error_has_path_and_line() {
    let bad = GOOD
        .replace("{ weight: 100 }", "{ weight: 120 }")
        .replace("to: { upstream: v1 }", "to: { upstream: v9 }")
        .replace(
            "balance: least_request",
            "balance: least_request, colour: red",
        );
    let e = errors(&bad);
    assert!(
        e.contains("rollouts.checkout.steps[2].weight (line 23:"),
        "{e}"
    );
    assert!(e.contains("exceeds 100"), "{e}");
    assert!(e.contains("upstreams.v2.colour (line 6:"), "{e}");
    assert!(e.contains("unknown field `colour`"), "{e}");
}

#[test]
fn semantic_errors_are_all_collected() {
    let bad = GOOD
        .replace("to: { upstream: v1 }", "to: { upstream: v9 }")
        .replace("flags: [new-checkout]", "flags: [New]");
    let e = errors(&bad);
    assert!(e.contains("routes[1].to.upstream (line 13:"), "{e}");
    assert!(e.contains("unknown upstream `v9`"), "{e}");
    assert!(e.contains("routes[0].flags[0]"), "{e}");
}

#[test]
fn bad_yaml_has_a_line() {
    let e = errors("version: 1\nchange: {id: a, author: b\n");
    assert!(e.contains("line"), "{e}");
}

#[test]
fn weight_with_three_decimals_is_refused() {
    let e = errors(&GOOD.replace("weight: 5.25", "weight: 5.255"));
    assert!(e.contains("steps[0].weight"), "{e}");
}

#[test]
fn unknown_top_level_key() {
    let e = errors(&format!("{GOOD}\nextra: 1\n"));
    assert!(e.contains("extra (line"), "{e}");
}

#[test]
fn status_classes() {
    assert_eq!(parse_status_class("5xx"), Some((500, 599)));
    assert_eq!(parse_status_class("429"), Some((429, 429)));
    assert_eq!(parse_status_class("6xx"), None);
    assert_eq!(parse_status_class("50x"), None);
}

#[test]
fn flags_are_validated_strictly_with_their_paths() {
    let bad = GOOD.replace("defaultVariant: \"off\"", "defaultVariant: \"maybe\"");
    let line = bad.lines().position(|l| l.contains("maybe")).unwrap() + 1;
    let e = errors(&bad);
    assert!(
        e.contains(&format!(
            "flags.new-checkout.defaultVariant (line {line}:5)"
        )),
        "{e}"
    );
    let bad = GOOD.replace(
        "defaultVariant: \"off\"",
        "defaultVariant: \"off\"\n    targeting: { \"$ref\": \"nowhere\" }",
    );
    assert!(
        errors(&bad).contains("flags.new-checkout.targeting"),
        "{}",
        errors(&bad)
    );
}

#[test]
fn flag_routes_map_variants_and_their_default() {
    let route = |upstreams: &str| {
        GOOD.replace(
            "to: { upstream: v1 }",
            &format!("to: {{ flag: new-checkout, upstreams: {upstreams} }}"),
        )
    };
    assert!(
        TrafficDoc::parse(
            &route("{ \"on\": v2, \"off\": v1 }"),
            &CheckContext::default()
        )
        .is_ok()
    );
    // Unmapped variants are allowed: they go where the default variant goes.
    assert!(TrafficDoc::parse(&route("{ \"off\": v1 }"), &CheckContext::default()).is_ok());
    let e = errors(&route("{ \"off\": v1, \"of\": v2 }"));
    assert!(e.contains("routes[1].to.upstreams.of"), "{e}");
    assert!(e.contains("has no variant `of`"), "{e}");
    let e = errors(&route("{ \"on\": v2 }"));
    assert!(e.contains("routes[1].to.upstreams"), "{e}");
    assert!(e.contains("default variant `off`"), "{e}");
    let e =
        errors(&route("{ \"on\": v2 }").replace("defaultVariant: \"off\"", "defaultVariant: null"));
    assert!(e.contains("routes[1].to.flag"), "{e}");
    assert!(e.contains("needs a defaultVariant"), "{e}");
}

#[test]
fn builtin_routes_inject_no_flags() {
    let doc = GOOD.replace(
        "to: { upstream: v1 }",
        "to: { builtin: ofrep }\n    flags: [new-checkout]",
    );
    let e = errors(&doc);
    assert!(e.contains("routes[1].flags"), "{e}");
}

#[test]
fn analysis_without_a_criterion_is_refused_and_method_defaults_to_sequential() {
    let e = errors(&GOOD.replace(
        "analysis: { interval: 1s, window: 30s, min_requests: 50, max_error_rate: 0.05 }",
        "analysis: {}",
    ));
    assert!(e.contains("rollouts.checkout.analysis"), "{e}");
    assert!(e.contains("no criterion"), "{e}");
    let p = TrafficDoc::parse(GOOD, &CheckContext::default()).unwrap();
    let a = p.doc.rollouts["checkout"].analysis.as_ref().unwrap();
    assert_eq!(a.method, AnalysisMethod::Sequential);
    let z = TrafficDoc::parse(
        &GOOD.replace(
            "max_error_rate: 0.05 }",
            "max_error_rate: 0.05, method: z_test }",
        ),
        &CheckContext::default(),
    )
    .unwrap();
    let a = z.doc.rollouts["checkout"].analysis.as_ref().unwrap();
    assert_eq!(a.method, AnalysisMethod::ZTest);
    let e = errors(&GOOD.replace(
        "max_error_rate: 0.05 }",
        "max_error_rate: 0.05, method: bayes }",
    ));
    assert!(e.contains("method"), "{e}");
}

#[test]
fn matchers_accept_cookies_query_prefix_regex_present() {
    let doc = GOOD.replace(
        "    steps:\n      - { weight: 5.25",
        "    canary_match:\n      headers: { x-canary: always, x-team: { prefix: qa- } }\n      cookies: { beta: { regex: \"tester-[0-9]+\" } }\n      query: { canary: { present: true } }\n    steps:\n      - { weight: 5.25",
    );
    let doc = doc.replace(
        "match: { host: \"shop.example.com\", path_prefix: /checkout, methods: [GET, POST] }",
        "match: { host: \"shop.example.com\", path_prefix: /checkout, methods: [GET, POST], query: { v: \"2\" }, cookies: { env: { prefix: p } } }",
    );
    let p = TrafficDoc::parse(&doc, &CheckContext::default()).unwrap();
    assert!(p.model.rollouts[0].force_canary.is_some());
}

#[test]
fn bad_matchers_are_refused_at_their_path() {
    let with = |m: &str| {
        errors(&GOOD.replace(
            "    steps:\n      - { weight: 5.25",
            &format!("    canary_match: {m}\n    steps:\n      - {{ weight: 5.25"),
        ))
    };
    let e = with("{ cookies: { beta: { regex: \"(\" } } }");
    assert!(
        e.contains("rollouts.checkout.canary_match.cookies.beta") && e.contains("invalid regex"),
        "{e}"
    );
    let e = with("{ query: { q: { regex: \"a{1000}{1000}\" } } }");
    assert!(e.contains("canary_match.query.q"), "{e}");
    let e = with("{ headers: { x-a: { present: false } } }");
    assert!(e.contains("canary_match.headers.x-a"), "{e}");
    let e = with("{ headers: { x-a: { prefix: a, regex: b } } }");
    assert!(e.contains("exactly one of prefix, regex or present"), "{e}");
    let e = with("{ headers: { x-a: { suffix: a } } }");
    assert!(e.contains("suffix"), "{e}");
    let e = with("{ cookies: { \"a b\": \"1\" } }");
    assert!(e.contains("not a valid cookie name"), "{e}");
    let e = with("{}");
    assert!(e.contains("at least one condition is needed"), "{e}");
}

#[test]
fn metric_checks_are_criteria_and_refused_at_their_path() {
    let only_metrics = GOOD.replace(
        "analysis: { interval: 1s, window: 30s, min_requests: 50, max_error_rate: 0.05 }",
        "analysis:\n      metrics:\n        - { name: smoke, provider: web, url: \"http://127.0.0.1:1/ok\", json_path: $.ok, condition: \"result == true\" }",
    );
    TrafficDoc::parse(&only_metrics, &CheckContext::default()).unwrap();
    let e = errors(&only_metrics.replace("result == true", "result is true"));
    assert!(
        e.contains("rollouts.checkout.analysis.metrics[0].condition"),
        "{e}"
    );
    let e = errors(&only_metrics.replace("provider: web, url", "provider: prometheus, url"));
    assert!(e.contains("analysis.metrics[0].provider"), "{e}");
}

#[test]
fn notifications_are_checked_at_their_path() {
    let ok = format!(
        "{GOOD}notifications:\n  - {{ url: \"http://127.0.0.1:9/h\", events: [\"change.*\", \"rollout.aborted\", \"*\"], format: slack }}\n"
    );
    let p = TrafficDoc::parse(&ok, &CheckContext::default()).unwrap();
    assert_eq!(p.doc.notifications[0].format, NotifyFormat::Slack);
    let e = errors(&ok.replace("rollout.aborted", "rollout.exploded"));
    assert!(e.contains("notifications[0].events[1]"), "{e}");
    let e = errors(&ok.replace("http://127.0.0.1:9/h", "ftp://hooks.example/x"));
    assert!(e.contains("notifications[0].url"), "{e}");
    let https = ok.replace(
        "url: \"http://127.0.0.1:9/h\"",
        "url: \"https://hooks.example/x\", ca_file: ca.pem",
    );
    let p = TrafficDoc::parse(&https, &CheckContext::default()).unwrap();
    assert_eq!(p.doc.notifications[0].ca_file.as_deref(), Some("ca.pem"));
    let e = errors(&https.replace("https://hooks.example/x", "http://hooks.example/x"));
    assert!(
        e.contains("notifications[0].ca_file") && e.contains("https:// URLs only"),
        "{e}"
    );
    let e = errors(&ok.replace("format: slack", "format: xml"));
    assert!(e.contains("notifications[0]"), "{e}");
}

#[test]
fn mirrors_are_checked_at_their_path() {
    let a = "analysis: { interval: 1s, window: 30s, min_requests: 50, max_error_rate: 0.05 }";
    let ok = GOOD.replace(
        a,
        &format!("{a}\n    mirror: {{ upstream: v2, percent: 12.5, max_body: 1MiB }}"),
    );
    let p = TrafficDoc::parse(&ok, &CheckContext::default()).unwrap();
    let m = p.doc.rollouts["checkout"].mirror.as_ref().unwrap();
    assert_eq!(
        (m.percent, m.max_body.0, m.max_in_flight),
        (Weight(1250), 1 << 20, 64)
    );
    let e = errors(&ok.replace("upstream: v2, percent", "upstream: nowhere, percent"));
    assert!(e.contains("rollouts.checkout.mirror.upstream"), "{e}");
    let e = errors(&ok.replace("upstream: v2, percent", "upstream: v1, percent"));
    assert!(
        e.contains("mirror.upstream") && e.contains("the stable side"),
        "{e}"
    );
    let e = errors(&ok.replace("percent: 12.5", "percent: 0"));
    assert!(e.contains("rollouts.checkout.mirror.percent"), "{e}");
    let e = errors(&ok.replace("max_body: 1MiB", "max_body: 1TiB"));
    assert!(
        e.contains("mirror.max_body") && e.contains("unknown unit"),
        "{e}"
    );
    let e = errors(&ok.replace("max_body: 1MiB", "max_body: 64MiB"));
    assert!(e.contains("rollouts.checkout.mirror.max_body"), "{e}");
    let e = errors(&ok.replace("max_body: 1MiB", "max_in_flight: 0"));
    assert!(e.contains("rollouts.checkout.mirror.max_in_flight"), "{e}");
}

#[test]
fn hooks_are_checked_at_their_path() {
    let a = "analysis: { interval: 1s, window: 30s, min_requests: 50, max_error_rate: 0.05 }";
    let ok = GOOD.replace(
        a,
        &format!(
            "{a}\n    hooks:\n      pre_rollout: [{{ url: \"http://127.0.0.1:9/pre\", timeout: 2s, retries: 1, metadata: {{ suite: smoke }} }}]\n      confirm_promotion: [{{ url: \"http://127.0.0.1:9/ok\" }}]"
        ),
    );
    let p = TrafficDoc::parse(&ok, &CheckContext::default()).unwrap();
    let h = &p.doc.rollouts["checkout"].hooks;
    assert_eq!(
        (h.pre_rollout[0].retries, h.confirm_promotion[0].retries),
        (1, 2)
    );
    assert_eq!(
        h.confirm_promotion[0].timeout.0,
        std::time::Duration::from_secs(10)
    );
    let e = errors(&ok.replace("http://127.0.0.1:9/ok", "gate.example/ok"));
    assert!(
        e.contains("rollouts.checkout.hooks.confirm_promotion[0].url"),
        "{e}"
    );
    let https = ok.replace("\"http://127.0.0.1:9/ok\"", "\"https://gate.example/ok\"");
    TrafficDoc::parse(&https, &CheckContext::default()).unwrap();
    let e = errors(&https.replace("/ok\" }", "/ok\", ca_file: \"\" }"));
    assert!(
        e.contains("rollouts.checkout.hooks.confirm_promotion[0].ca_file"),
        "{e}"
    );
    let e = errors(&ok.replace("timeout: 2s", "timeout: 0s"));
    assert!(
        e.contains("rollouts.checkout.hooks.pre_rollout[0].timeout"),
        "{e}"
    );
    let e = errors(&ok.replace("retries: 1", "retries: 99"));
    assert!(e.contains("hooks.pre_rollout[0].retries"), "{e}");
    let e = errors(&ok.replace("confirm_promotion:", "confirm_rollback:"));
    assert!(e.contains("confirm_rollback"), "{e}");
}

#[test]
fn route_and_step_mirrors_are_checked_at_their_path_and_line() {
    let ok = GOOD
        .replace(
            "    to: { upstream: v1 }\n",
            "    to: { upstream: v1 }\n    mirror: { upstream: v2, percent: 5 }\n",
        )
        .replace(
            "      - { weight: 5.25, hold: 2m }",
            "      - { weight: 0, hold: 2m, mirror: { upstream: v2, percent: 100 } }",
        );
    let p = TrafficDoc::parse(&ok, &CheckContext::default()).unwrap();
    assert_eq!(
        p.doc.routes[1].mirror.as_ref().unwrap().percent,
        Weight(500)
    );
    assert_eq!(p.model.routes[1].mirror, Some(1));
    assert_eq!(p.model.rollouts[0].step_mirrors, [Some(1), None, None]);
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;

    // A route's mirror: a known upstream, not where the route sends already, not builtin.
    let bad = ok.replace(
        "mirror: { upstream: v2, percent: 5 }",
        "mirror: { upstream: v7, percent: 5 }",
    );
    let e = errors(&bad);
    let line = line_of(&bad, "upstream: v7");
    assert!(
        e.contains(&format!("routes[1].mirror.upstream (line {line}:")),
        "{e}"
    );
    assert!(e.contains("unknown upstream `v7`"), "{e}");
    let e = errors(&ok.replace(
        "mirror: { upstream: v2, percent: 5 }",
        "mirror: { upstream: v1, percent: 5 }",
    ));
    assert!(
        e.contains("routes[1].mirror.upstream") && e.contains("already sends"),
        "{e}"
    );
    let e = errors(&ok.replace(
        "mirror: { upstream: v2, percent: 5 }",
        "mirror: { upstream: v2, percent: 0 }",
    ));
    assert!(e.contains("routes[1].mirror.percent"), "{e}");
    let e = errors(&ok.replace("percent: 5 }", "percent: 5, max_in_flight: 0 }"));
    assert!(e.contains("routes[1].mirror.max_in_flight"), "{e}");
    let e = errors(&ok.replace(
        "    to: { rollout: checkout }\n",
        "    to: { rollout: checkout }\n    mirror: { upstream: v1, percent: 5 }\n",
    ));
    assert!(
        e.contains("routes[0].mirror.upstream") && e.contains("stable side"),
        "{e}"
    );
    let e = errors(&ok.replace("to: { upstream: v1 }", "to: { builtin: ofrep }"));
    assert!(
        e.contains("routes[1].mirror") && e.contains("builtin"),
        "{e}"
    );

    // A step's mirror: a known upstream other than the stable side.
    let bad = ok.replace(
        "mirror: { upstream: v2, percent: 100 }",
        "mirror: { upstream: nowhere, percent: 100 }",
    );
    let e = errors(&bad);
    let line = line_of(&bad, "upstream: nowhere");
    assert!(
        e.contains(&format!(
            "rollouts.checkout.steps[0].mirror.upstream (line {line}:"
        )),
        "{e}"
    );
    let e = errors(&ok.replace(
        "mirror: { upstream: v2, percent: 100 }",
        "mirror: { upstream: v1, percent: 100 }",
    ));
    assert!(
        e.contains("rollouts.checkout.steps[0].mirror.upstream") && e.contains("stable side"),
        "{e}"
    );
    let e = errors(&ok.replace(
        "mirror: { upstream: v2, percent: 100 }",
        "mirror: { upstream: v2, percent: 100, max_body: 64MiB }",
    ));
    assert!(
        e.contains("rollouts.checkout.steps[0].mirror.max_body"),
        "{e}"
    );
    let e = errors(&ok.replace(
        "mirror: { upstream: v2, percent: 100 }",
        "mirror: { upstream: v2, share: 100 }",
    ));
    assert!(
        e.contains("rollouts.checkout.steps[0]") && e.contains("share"),
        "{e}"
    );
}
