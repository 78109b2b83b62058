//! The semantic checks of `traffic.yaml`, one named function per section (as vector's
//! `validation.rs`), run in document order so that errors come out in the order a person
//! reads the file. Every check reports every error it finds with its path; a check that
//! resolves a reference (an upstream name, a rollout's two sides) also returns what it
//! resolved, which [`super::model`] assembles: nothing after this re-validates.
//!
//! A check returns `None` for what it resolves only after reporting why.
//!
//! Hostile documents (issue 16): the work and the error list stay linear in the input. At
//! most [`MAX_ERRORS`] errors are reported and the section loops stop there; an entry with
//! a bad name is reported once and not looked into (every error inside would repeat the
//! name in its path); a value quoted in a message is cut to a readable length; what is the
//! same for many routes (the keys a `["*"]` route injects) is checked once.

use std::collections::{BTreeMap, HashSet};

use http::{HeaderName, HeaderValue, Method};
use serde_json::Value;

use super::model::{
    CheckedRollout, CheckedRoute, CheckedUpstream, ListenerRef, Model, Target, UpstreamId,
};
use super::raw::{
    Analysis, ChangeClass, ContextSource, Hooks, Protocol, RequestMatch, Rollout, Route,
    RouteMatch, RouteTarget, Step, Sticky, Strategy, Upstream, ValueMatch,
};
use super::{CheckContext, MAX_INJECTED_KEY_BYTES, MAX_ROUTE_FLAGS, TrafficDoc};
use crate::config::{ConfigError, MAX_ERRORS, yaml};
use crate::flags::headers::{is_lowercase_token, is_tchar};
use crate::request_match::{Cond, RequestMatcher, Source, ValueTest};

/// Where errors go: each at its path, positioned through the document's spans.
pub(super) struct Report<'a> {
    spans: &'a yaml::Spans,
    errors: &'a mut Vec<ConfigError>,
    warnings: &'a mut Vec<ConfigError>,
}

/// Runs every check in document order; the checked model when nothing was wrong.
pub(super) fn check(
    doc: &TrafficDoc,
    ctx: &CheckContext,
    report: &mut Report<'_>,
) -> Option<Model> {
    check_header(doc, report);
    let upstreams = check_upstreams(doc, report);
    let routes = check_routes(doc, ctx, report);
    let rollouts = check_rollouts(doc, report);
    check_flag_context(doc, report);
    check_notifications(doc, report);
    check_flags(doc, report);
    Some(Model {
        upstreams: upstreams?,
        routes: routes?,
        rollouts: rollouts?,
    })
}

// === impl Report ===

impl<'a> Report<'a> {
    /// Reports into `errors` and `warnings`, positioned through `spans`.
    pub(super) fn new(
        spans: &'a yaml::Spans,
        errors: &'a mut Vec<ConfigError>,
        warnings: &'a mut Vec<ConfigError>,
    ) -> Self {
        Report {
            spans,
            errors,
            warnings,
        }
    }

    fn err(&mut self, path: &str, message: impl Into<String>) {
        if !self.full() {
            self.errors.push(ConfigError::at(self.spans, path, message));
        }
    }

    /// Something accepted but worth fixing.
    fn warn(&mut self, path: &str, message: impl Into<String>) {
        if self.warnings.len() < MAX_ERRORS {
            self.warnings
                .push(ConfigError::at(self.spans, path, message));
        }
    }

    /// Enough errors to act on: the checks stop looking.
    fn full(&self) -> bool {
        self.errors.len() >= MAX_ERRORS
    }
}

/// `version` and the `change` header.
fn check_header(doc: &TrafficDoc, r: &mut Report<'_>) {
    if doc.version == 0 {
        r.err("version", "must be at least 1");
    }
    if doc.change.id.trim().is_empty() {
        r.err("change.id", "must not be empty");
    }
    if doc.change.author.trim().is_empty() {
        r.err("change.author", "must not be empty");
    }
    if doc.change.class == ChangeClass::Unapproved {
        r.err("change.class", "must be standard, normal or emergency");
    }
}

/// Every upstream: name, endpoints, timeouts, protocol and TLS, health checks.
fn check_upstreams(doc: &TrafficDoc, r: &mut Report<'_>) -> Option<Vec<CheckedUpstream>> {
    let mut out = Some(Vec::with_capacity(doc.upstreams.len()));
    for (name, u) in &doc.upstreams {
        if r.full() {
            return None;
        }
        let checked = check_upstream(name, u, r);
        out = out.zip(checked).map(|(mut v, c)| {
            v.push(c);
            v
        });
    }
    out
}

fn check_upstream(name: &str, u: &Upstream, r: &mut Report<'_>) -> Option<CheckedUpstream> {
    let Some(name_header) = name_header(name) else {
        r.err(
            &format!("upstreams.{}", shorten(name)),
            format!("upstream name `{}` {NAME_RULE}", shorten(name)),
        );
        return None;
    };
    let base = format!("upstreams.{name}");
    if u.endpoints.is_empty() {
        r.err(
            &format!("{base}.endpoints"),
            "at least one endpoint is needed",
        );
    }
    for (i, e) in u.endpoints.iter().enumerate() {
        if let Err(m) = check_endpoint(e) {
            r.err(&format!("{base}.endpoints[{i}]"), m);
        }
    }
    if u.connect_timeout.0.is_zero() {
        r.err(
            &format!("{base}.connect_timeout"),
            "must be greater than zero",
        );
    }
    if u.request_timeout.0.is_zero() {
        r.err(
            &format!("{base}.request_timeout"),
            "must be greater than zero",
        );
    }
    if u.protocol == Protocol::Auto && u.tls.is_none() {
        r.err(
            &format!("{base}.protocol"),
            "`auto` negotiates by ALPN and needs `tls`",
        );
    }
    if let Some(tls) = &u.tls
        && tls.client_cert.is_some() != tls.client_key.is_some()
    {
        r.err(
            &format!("{base}.tls"),
            "client_cert and client_key go together",
        );
    }
    if let Some(p) = &u.passive_health
        && p.consecutive_failures == 0
    {
        r.err(
            &format!("{base}.passive_health.consecutive_failures"),
            "must be at least 1",
        );
    }
    if let Some(a) = &u.active_health {
        if !a.path.starts_with('/') {
            r.err(&format!("{base}.active_health.path"), "must start with `/`");
        }
        if a.interval.0.is_zero() {
            r.err(
                &format!("{base}.active_health.interval"),
                "must be greater than zero",
            );
        }
    }
    Some(CheckedUpstream { name_header })
}

/// Every route: name, match, target, injected flags, retries.
fn check_routes(
    doc: &TrafficDoc,
    ctx: &CheckContext,
    r: &mut Report<'_>,
) -> Option<Vec<CheckedRoute>> {
    let mut names = HashSet::new();
    let mut out = Some(Vec::with_capacity(doc.routes.len()));
    // The keys `["*"]` routes inject are the same for all of them: checked once.
    let mut star_checked = false;
    for (i, route) in doc.routes.iter().enumerate() {
        if r.full() {
            return None;
        }
        let base = format!("routes[{i}]");
        let name_header = name_header(&route.name);
        if name_header.is_none() {
            r.err(
                &format!("{base}.name"),
                format!("route name `{}` {NAME_RULE}", shorten(&route.name)),
            );
        } else if !names.insert(route.name.as_str()) {
            r.err(
                &format!("{base}.name"),
                format!("duplicate route name `{}`", route.name),
            );
        }
        let matched = check_route_match(&base, &route.matches, ctx, r);
        let target = check_route_target(doc, &base, route, r);
        let mirror = check_route_mirror(doc, &base, route, r);
        check_route_flags(doc, &base, &route.flags, &mut star_checked, r);
        if let Some(rt) = &route.retries
            && rt.attempts > 5
        {
            r.err(&format!("{base}.retries.attempts"), "at most 5 extra tries");
        }
        out = match (out, name_header, matched, target, mirror) {
            (
                Some(mut v),
                Some(name_header),
                Some((listener, methods, request)),
                Some(target),
                Some(mirror),
            ) => {
                v.push(CheckedRoute {
                    name_header,
                    listener,
                    methods,
                    request,
                    target,
                    mirror,
                });
                Some(v)
            }
            _ => None,
        };
    }
    out
}

/// What a route's `match` resolves to: listener, methods, header/cookie/query conditions.
type CheckedMatch = (ListenerRef, Vec<Method>, RequestMatcher);

fn check_route_match(
    base: &str,
    m: &RouteMatch,
    ctx: &CheckContext,
    r: &mut Report<'_>,
) -> Option<CheckedMatch> {
    let listener = match (&m.listener, &ctx.listeners) {
        (None, _) => Some(ListenerRef::Any),
        (Some(_), None) => Some(ListenerRef::Unchecked),
        (Some(l), Some(known)) => match known.iter().position(|k| k == l) {
            Some(i) => Some(ListenerRef::At(i)),
            None => {
                r.err(
                    &format!("{base}.match.listener"),
                    format!("unknown listener `{l}`"),
                );
                None
            }
        },
    };
    if let Some(h) = &m.host
        && let Err(msg) = check_host_pattern(h)
    {
        r.err(&format!("{base}.match.host"), msg);
    }
    if let Some(p) = &m.path_prefix
        && !p.starts_with('/')
    {
        r.err(&format!("{base}.match.path_prefix"), "must start with `/`");
    }
    let request = request_matcher(
        &format!("{base}.match"),
        [&m.headers, &m.cookies, &m.query],
        r,
    );
    let mut methods = Some(Vec::with_capacity(m.methods.len()));
    for (j, meth) in m.methods.iter().enumerate() {
        match Method::from_bytes(meth.as_bytes()) {
            Ok(parsed) if meth.to_ascii_uppercase() == *meth => {
                if let Some(v) = &mut methods {
                    v.push(parsed);
                }
            }
            _ => {
                r.err(
                    &format!("{base}.match.methods[{j}]"),
                    format!("`{meth}` is not an upper-case method"),
                );
                methods = None;
            }
        }
    }
    Some((listener?, methods?, request?))
}

/// `to`: exactly one target, whose names exist; a flag target maps variants to upstreams.
fn check_route_target(
    doc: &TrafficDoc,
    base: &str,
    route: &Route,
    r: &mut Report<'_>,
) -> Option<Target> {
    let t = &route.to;
    let upstream = |n: &str| upstream_id(doc, n);
    let targets = [
        t.rollout.is_some(),
        t.upstream.is_some(),
        t.flag.is_some(),
        t.builtin.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if targets != 1 {
        r.err(
            &format!("{base}.to"),
            "exactly one of rollout, upstream, flag or builtin is needed",
        );
    }
    if let Some(u) = &t.upstream
        && upstream(u).is_none()
    {
        r.err(
            &format!("{base}.to.upstream"),
            format!("unknown upstream `{u}`"),
        );
    }
    if let Some(ro) = &t.rollout
        && !doc.rollouts.contains_key(ro)
    {
        r.err(
            &format!("{base}.to.rollout"),
            format!("unknown rollout `{ro}`"),
        );
    }
    if t.builtin.is_some() && !route.flags.is_empty() {
        r.err(
            &format!("{base}.flags"),
            "a builtin route sends nothing upstream, so it injects no flags",
        );
    }
    if t.flag.is_none() && !t.upstreams.is_empty() {
        r.err(&format!("{base}.to.upstreams"), "only allowed with `flag`");
    }
    let arms = t
        .flag
        .as_ref()
        .and_then(|f| check_flag_target(doc, base, f, t, r));
    if targets != 1 {
        return None;
    }
    match (&t.upstream, &t.rollout, &t.flag, t.builtin) {
        (Some(u), ..) => upstream(u).map(Target::Upstream),
        (_, Some(ro), ..) => doc
            .rollouts
            .keys()
            .position(|k| k == ro)
            .map(Target::Rollout),
        (_, _, Some(flag), _) => Some(Target::Flag {
            flag: flag.clone(),
            arms: arms?,
        }),
        (_, _, _, Some(b)) => Some(Target::Builtin(b)),
        // `targets != 1` was reported above.
        (None, None, None, None) => None,
    }
}

/// `to: { flag, upstreams }`: the flag exists, and its variants map to known upstreams.
fn check_flag_target(
    doc: &TrafficDoc,
    base: &str,
    f: &str,
    t: &RouteTarget,
    r: &mut Report<'_>,
) -> Option<BTreeMap<String, UpstreamId>> {
    let known = doc.flags.contains_key(f);
    if !known {
        r.err(&format!("{base}.to.flag"), format!("unknown flag `{f}`"));
    }
    if t.upstreams.is_empty() {
        r.err(
            &format!("{base}.to.upstreams"),
            "map each variant to an upstream",
        );
    }
    let mut arms = Some(BTreeMap::new());
    for (variant, u) in &t.upstreams {
        match upstream_id(doc, u) {
            Some(id) => {
                if let Some(a) = &mut arms {
                    a.insert(variant.clone(), id);
                }
            }
            None => {
                r.err(
                    &format!("{base}.to.upstreams.{variant}"),
                    format!("unknown upstream `{u}`"),
                );
                arms = None;
            }
        }
    }
    let mut mapped = true;
    if let Some(def) = doc.flags.get(f) {
        for (path, msg) in check_flag_route(f, def, &t.upstreams) {
            r.err(&format!("{base}.{path}"), msg);
            mapped = false;
        }
    }
    arms.filter(|a| known && mapped && !a.is_empty())
}

/// A route's `flags`: at most [`MAX_ROUTE_FLAGS`], known, and usable as header names.
fn check_route_flags(
    doc: &TrafficDoc,
    base: &str,
    flags: &[String],
    star_checked: &mut bool,
    r: &mut Report<'_>,
) {
    if flags.len() > MAX_ROUTE_FLAGS {
        r.err(
            &format!("{base}.flags"),
            format!("a route injects at most {MAX_ROUTE_FLAGS} flags"),
        );
    }
    let star = flags.iter().any(|f| f == "*");
    if star && flags.len() > 1 {
        r.err(&format!("{base}.flags"), "`*` stands alone");
    }
    if star && doc.flags.len() > MAX_ROUTE_FLAGS {
        r.err(
            &format!("{base}.flags"),
            format!(
                "`*` would inject {} flags; a route injects at most {MAX_ROUTE_FLAGS}",
                doc.flags.len()
            ),
        );
    }
    let injected: Vec<&String> = if !star {
        flags.iter().collect()
    } else if *star_checked || doc.flags.len() > MAX_ROUTE_FLAGS {
        Vec::new()
    } else {
        *star_checked = true;
        doc.flags.keys().collect()
    };
    for (j, f) in injected.iter().enumerate() {
        let path = if star {
            format!("{base}.flags[0]")
        } else {
            format!("{base}.flags[{j}]")
        };
        if !star && !doc.flags.contains_key(f.as_str()) {
            r.err(&path, format!("unknown flag `{f}`"));
        }
        if !is_lowercase_token(f) {
            r.err(
                &path,
                format!(
                    "flag key `{}` is injected as a header and must be a lowercase header token",
                    shorten(f)
                ),
            );
        } else if f.len() > MAX_INJECTED_KEY_BYTES {
            r.err(
                &path,
                format!(
                    "flag key `{}` is injected as a header name and must be at most {MAX_INJECTED_KEY_BYTES} bytes",
                    shorten(f)
                ),
            );
        }
    }
}

/// Every rollout: name, its two sides by strategy, steps, sticky key, matches, analysis.
fn check_rollouts(doc: &TrafficDoc, r: &mut Report<'_>) -> Option<Vec<CheckedRollout>> {
    let mut out = Some(Vec::with_capacity(doc.rollouts.len()));
    for (name, ro) in &doc.rollouts {
        if r.full() {
            return None;
        }
        if !is_name(name) {
            // As for upstreams: a bad name is reported once, its contents not at all.
            r.err(
                &format!("rollouts.{}", shorten(name)),
                format!("rollout name `{}` {NAME_RULE}", shorten(name)),
            );
            out = None;
            continue;
        }
        let base = format!("rollouts.{name}");
        let sides = check_rollout_sides(doc, &base, ro, r);
        check_strategy(&base, ro, r);
        check_steps(&base, &ro.steps, r);
        let sticky_header = check_sticky(&base, &ro.sticky, r);
        let canary_match = check_force_match(&base, "canary_match", ro.canary_match.as_ref(), r);
        let preview_match = check_force_match(&base, "preview_match", ro.preview_match.as_ref(), r);
        let error_statuses = match &ro.analysis {
            Some(a) => check_analysis(&format!("{base}.analysis"), a, r),
            None => Some(vec![(500, 599)]),
        };
        check_hooks(&format!("{base}.hooks"), &ro.hooks, r);
        let mirror = check_mirror(doc, &base, ro, r);
        let force_canary = match ro.strategy {
            Strategy::Canary => canary_match,
            Strategy::BlueGreen => preview_match,
        };
        let checked = (|| {
            let (stable, canary) = sides?;
            Some(CheckedRollout {
                stable,
                canary,
                sticky_header: sticky_header?,
                force_canary: force_canary?,
                error_statuses: error_statuses?,
                mirror: mirror.as_ref()?.0,
                step_mirrors: mirror?.1,
            })
        })();
        out = out.zip(checked).map(|(mut v, c)| {
            v.push(c);
            v
        });
    }
    out
}

/// The two upstreams of a rollout, as its strategy names them (`stable`/`canary` or
/// `active`/`preview`): present, known, different; returned as (stable, canary).
fn check_rollout_sides(
    doc: &TrafficDoc,
    base: &str,
    ro: &Rollout,
    r: &mut Report<'_>,
) -> Option<(UpstreamId, UpstreamId)> {
    let pools: [(&str, &Option<String>, bool); 4] = match ro.strategy {
        Strategy::Canary => [
            ("stable", &ro.stable, true),
            ("canary", &ro.canary, true),
            ("active", &ro.active, false),
            ("preview", &ro.preview, false),
        ],
        Strategy::BlueGreen => [
            ("active", &ro.active, true),
            ("preview", &ro.preview, true),
            ("stable", &ro.stable, false),
            ("canary", &ro.canary, false),
        ],
    };
    let mut ok = true;
    for (key, val, wanted) in pools {
        match (val, wanted) {
            (None, true) => {
                r.err(base, format!("missing field `{key}`"));
                ok = false;
            }
            (Some(_), false) => {
                r.err(
                    &format!("{base}.{key}"),
                    format!("`{key}` does not apply to strategy {:?}", ro.strategy).to_lowercase(),
                );
                ok = false;
            }
            (Some(u), true) if upstream_id(doc, u).is_none() => {
                r.err(&format!("{base}.{key}"), format!("unknown upstream `{u}`"));
                ok = false;
            }
            _ => {}
        }
    }
    let (stable, canary) = match ro.strategy {
        Strategy::Canary => (ro.stable.as_ref(), ro.canary.as_ref()),
        Strategy::BlueGreen => (ro.active.as_ref(), ro.preview.as_ref()),
    };
    if let (Some(a), Some(b)) = (
        ro.stable.as_ref().or(ro.active.as_ref()),
        ro.canary.as_ref().or(ro.preview.as_ref()),
    ) && a == b
    {
        r.err(
            base,
            "the two sides of a rollout must be different upstreams",
        );
        ok = false;
    }
    let sides = (upstream_id(doc, stable?)?, upstream_id(doc, canary?)?);
    ok.then_some(sides)
}

/// Settings that belong to one strategy only.
fn check_strategy(base: &str, ro: &Rollout, r: &mut Report<'_>) {
    match ro.strategy {
        Strategy::Canary => {
            if ro.steps.is_empty() {
                r.err(&format!("{base}.steps"), "a canary needs at least one step");
            }
            if ro.promote.is_some() {
                r.err(
                    &format!("{base}.promote"),
                    "only for blue_green (canaries use `gate: manual` steps)",
                );
            }
            if ro.post_promotion_window.is_some() {
                r.err(
                    &format!("{base}.post_promotion_window"),
                    "only for blue_green",
                );
            }
            if ro.preview_match.is_some() {
                r.err(
                    &format!("{base}.preview_match"),
                    "only for blue_green (canaries use canary_match)",
                );
            }
        }
        Strategy::BlueGreen => {
            if !ro.steps.is_empty() {
                r.err(
                    &format!("{base}.steps"),
                    "blue_green has no steps (it promotes from 0 to 100)",
                );
            }
            if ro.canary_match.is_some() {
                r.err(
                    &format!("{base}.canary_match"),
                    "only for canary (blue_green uses preview_match)",
                );
            }
            if let Some(p) = &ro.promote
                && p.after.is_some() == p.manual
            {
                r.err(
                    &format!("{base}.promote"),
                    "exactly one of `after` or `manual: true`",
                );
            }
        }
    }
}

/// Each step is a weight (with an optional hold) or a manual gate.
fn check_steps(base: &str, steps: &[Step], r: &mut Report<'_>) {
    for (j, s) in steps.iter().enumerate() {
        let sp = format!("{base}.steps[{j}]");
        match (&s.weight, &s.gate) {
            (Some(_), Some(_)) | (None, None) => r.err(
                &sp,
                "a step is either `weight` (with optional `hold`) or `gate: manual`",
            ),
            (None, Some(_)) if s.hold.is_some() => {
                r.err(&format!("{sp}.hold"), "a gate has no hold")
            }
            _ => {}
        }
    }
}

/// The sticky-key sources; the header name, parsed.
fn check_sticky(base: &str, sticky: &Sticky, r: &mut Report<'_>) -> Option<Option<HeaderName>> {
    let header = match &sticky.header {
        None => Some(None),
        Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(Some(name)),
            Err(_) => {
                r.err(
                    &format!("{base}.sticky.header"),
                    format!("`{h}` is not a valid header name"),
                );
                None
            }
        },
    };
    if let Some(c) = &sticky.cookie
        && (c.is_empty() || !c.bytes().all(is_tchar))
    {
        r.err(
            &format!("{base}.sticky.cookie"),
            format!("`{c}` is not a valid cookie name"),
        );
    }
    if sticky.set_cookie && sticky.cookie.is_none() {
        r.err(
            &format!("{base}.sticky.set_cookie"),
            "needs `sticky.cookie` to name the cookie",
        );
    }
    header
}

/// `canary_match` / `preview_match`: at least one condition, compiled.
fn check_force_match(
    base: &str,
    key: &str,
    m: Option<&RequestMatch>,
    r: &mut Report<'_>,
) -> Option<Option<RequestMatcher>> {
    let Some(m) = m else {
        return Some(None);
    };
    let path = format!("{base}.{key}");
    let empty = m.headers.is_empty() && m.cookies.is_empty() && m.query.is_empty();
    if empty {
        r.err(
            &path,
            "at least one condition is needed (headers, cookies or query)",
        );
    }
    let compiled = request_matcher(&path, [&m.headers, &m.cookies, &m.query], r);
    compiled.filter(|_| !empty).map(Some)
}

/// The analysis settings of a rollout; `error_statuses` as inclusive ranges.
fn check_analysis(ap: &str, a: &Analysis, r: &mut Report<'_>) -> Option<Vec<(u16, u16)>> {
    if a.interval.0.is_zero() {
        r.err(&format!("{ap}.interval"), "must be greater than zero");
    }
    if a.window < a.interval {
        r.err(&format!("{ap}.window"), "must be at least one interval");
    }
    if a.window.0.as_secs() > 3600 {
        r.err(&format!("{ap}.window"), "at most 1h");
    }
    for (k, v) in [
        ("max_error_rate", a.max_error_rate),
        ("max_error_rate_increase", a.max_error_rate_increase),
    ] {
        if let Some(v) = v
            && !(0.0..=1.0).contains(&v)
        {
            r.err(&format!("{ap}.{k}"), "must be between 0 and 1");
        }
    }
    if !(a.confidence > 0.5 && a.confidence < 1.0) {
        r.err(
            &format!("{ap}.confidence"),
            "must be between 0.5 and 1 (exclusive)",
        );
    }
    let mut statuses = Some(Vec::with_capacity(a.error_statuses.len()));
    for (j, s) in a.error_statuses.iter().enumerate() {
        match parse_status_class(s) {
            Some(range) => {
                if let Some(v) = &mut statuses {
                    v.push(range);
                }
            }
            None => {
                r.err(
                    &format!("{ap}.error_statuses[{j}]"),
                    format!("`{s}` is neither a status (503) nor a class (5xx)"),
                );
                statuses = None;
            }
        }
    }
    if a.failure_limit == 0 {
        r.err(&format!("{ap}.failure_limit"), "must be at least 1");
    }
    if a.inconclusive_limit == 0 {
        r.err(&format!("{ap}.inconclusive_limit"), "must be at least 1");
    }
    let mut names = std::collections::BTreeSet::new();
    for (j, m) in a.metrics.iter().enumerate() {
        let mp = format!("{ap}.metrics[{j}]");
        if let Err(e) = crate::metric_check::CompiledCheck::compile(m, a) {
            r.err(&format!("{mp}.{}", e.0), e.1);
        }
        if !names.insert(m.name.as_str()) {
            r.err(&format!("{mp}.name"), format!("`{}` is used twice", m.name));
        }
    }
    if a.max_error_rate.is_none()
        && a.max_error_rate_increase.is_none()
        && a.max_p99.is_none()
        && a.metrics.is_empty()
    {
        r.err(
            ap,
            "no criterion: set max_error_rate, max_error_rate_increase, max_p99 or metrics \
             (an analysis that judges nothing would pass any canary); \
             leave `analysis` out for steps that advance on `hold` alone",
        );
    }
    statuses
}

/// Largest `mirror.max_body`.
const MAX_MIRROR_BODY: u64 = 16 << 20;

/// Most `mirror.max_in_flight`.
const MAX_MIRROR_IN_FLIGHT: u32 = 10_000;

/// A rollout's `mirror` and its steps' (`steps[i].mirror`): a known upstream other than the
/// stable side, as [`check_mirror_spec`]. `None` when refused; the step list is empty when
/// no step mirrors.
#[allow(clippy::type_complexity)]
fn check_mirror(
    doc: &TrafficDoc,
    base: &str,
    ro: &Rollout,
    r: &mut Report<'_>,
) -> Option<(Option<UpstreamId>, Vec<Option<UpstreamId>>)> {
    let stable = match ro.strategy {
        Strategy::Canary => ro.stable.as_ref(),
        Strategy::BlueGreen => ro.active.as_ref(),
    };
    let stable_rule = |up: &str| {
        (stable.map(String::as_str) == Some(up)).then_some(
            "the stable side already serves every request it would mirror; name another upstream",
        )
    };
    let whole = match &ro.mirror {
        None => Some(None),
        Some(m) => check_mirror_spec(
            doc,
            &format!("{base}.mirror"),
            m,
            stable_rule(&m.upstream),
            r,
        )
        .map(Some),
    };
    let mut steps = Some(Vec::new());
    if ro.steps.iter().any(|s| s.mirror.is_some()) {
        if ro.strategy == Strategy::BlueGreen {
            // Blue-green has no steps; check_strategy refuses them.
            return None;
        }
        let mut v = Vec::with_capacity(ro.steps.len());
        for (j, st) in ro.steps.iter().enumerate() {
            v.push(match &st.mirror {
                None => Some(None),
                Some(m) => check_mirror_spec(
                    doc,
                    &format!("{base}.steps[{j}].mirror"),
                    m,
                    stable_rule(&m.upstream),
                    r,
                )
                .map(Some),
            });
        }
        steps = v.into_iter().collect();
    }
    Some((whole?, steps?))
}

/// A route's `mirror`: as [`check_mirror_spec`], and not the upstream the route already
/// sends to (each request would reach it twice), nor on a `builtin` route (nothing upstream).
fn check_route_mirror(
    doc: &TrafficDoc,
    base: &str,
    route: &Route,
    r: &mut Report<'_>,
) -> Option<Option<UpstreamId>> {
    let Some(m) = &route.mirror else {
        return Some(None);
    };
    let mp = format!("{base}.mirror");
    if route.to.builtin.is_some() {
        r.err(
            &mp,
            "a builtin route is answered by sluice itself: there is no upstream request to mirror",
        );
        return None;
    }
    let same = if route.to.upstream.as_deref() == Some(m.upstream.as_str()) {
        Some("the route already sends every request there; name another upstream")
    } else {
        route
            .to
            .rollout
            .as_ref()
            .and_then(|ro| doc.rollouts.get(ro))
            .and_then(|ro| match ro.strategy {
                Strategy::Canary => ro.stable.as_ref(),
                Strategy::BlueGreen => ro.active.as_ref(),
            })
            .filter(|s| **s == m.upstream)
            .map(|_| {
                "the rollout's stable side already serves every request it would mirror; name another upstream"
            })
    };
    check_mirror_spec(doc, &mp, m, same, r).map(Some)
}

/// One `mirror` at `mp`: a known upstream (`refuse_upstream`: why this one may not be used),
/// a percent above 0, `max_body` at most 16 MiB, `max_in_flight` in 1..=10000. `None` when
/// refused.
fn check_mirror_spec(
    doc: &TrafficDoc,
    mp: &str,
    m: &super::raw::Mirror,
    refuse_upstream: Option<&str>,
    r: &mut Report<'_>,
) -> Option<UpstreamId> {
    let mut ok = true;
    let id = upstream_id(doc, &m.upstream);
    if id.is_none() {
        r.err(
            &format!("{mp}.upstream"),
            format!("unknown upstream `{}`", m.upstream),
        );
        ok = false;
    }
    if let Some(why) = refuse_upstream {
        r.err(&format!("{mp}.upstream"), why);
        ok = false;
    }
    if m.percent.0 == 0 {
        r.err(&format!("{mp}.percent"), "must be greater than zero");
        ok = false;
    }
    if m.max_body.0 > MAX_MIRROR_BODY {
        r.err(&format!("{mp}.max_body"), "at most 16MiB");
        ok = false;
    }
    if m.max_in_flight == 0 || m.max_in_flight > MAX_MIRROR_IN_FLIGHT {
        r.err(
            &format!("{mp}.max_in_flight"),
            format!("must be between 1 and {MAX_MIRROR_IN_FLIGHT}"),
        );
        ok = false;
    }
    if ok { id } else { None }
}

/// Most hooks of one kind.
const MAX_HOOKS: usize = 8;

/// Longest deadline of one hook try.
const MAX_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Most extra tries of one hook.
const MAX_HOOK_RETRIES: u32 = 10;

/// `hooks`: per kind at most [`MAX_HOOKS`], each an http(s) URL, a timeout in (0, 5m], at most
/// [`MAX_HOOK_RETRIES`] retries.
fn check_hooks(base: &str, h: &Hooks, r: &mut Report<'_>) {
    for (kind, list) in [
        ("confirm_rollout", &h.confirm_rollout),
        ("pre_rollout", &h.pre_rollout),
        ("rollout", &h.rollout),
        ("confirm_promotion", &h.confirm_promotion),
        ("post_rollout", &h.post_rollout),
        ("rollback", &h.rollback),
    ] {
        let kp = format!("{base}.{kind}");
        if list.len() > MAX_HOOKS {
            r.err(&kp, format!("at most {MAX_HOOKS} hooks"));
        }
        for (i, hook) in list.iter().enumerate() {
            let hp = format!("{kp}[{i}]");
            check_http_url(&format!("{hp}.url"), &hook.url, hook.ca_file.as_deref(), r);
            if hook.timeout.0.is_zero() || hook.timeout.0 > MAX_HOOK_TIMEOUT {
                r.err(
                    &format!("{hp}.timeout"),
                    "must be greater than zero and at most 5m",
                );
            }
            if hook.retries > MAX_HOOK_RETRIES {
                r.err(
                    &format!("{hp}.retries"),
                    format!("at most {MAX_HOOK_RETRIES}"),
                );
            }
        }
    }
}

/// An `http://` or `https://` URL with a host, and its `ca_file`: only beside an https URL
/// (it would do nothing), never empty. The file itself is read at each call, so a broken one
/// is the call's error (status, audit), never a refused document.
fn check_http_url(path: &str, url: &str, ca_file: Option<&str>, r: &mut Report<'_>) {
    let https = match url.parse::<http::Uri>() {
        Ok(u) if u.authority().is_some() && u.scheme_str() == Some("http") => false,
        Ok(u) if u.authority().is_some() && u.scheme_str() == Some("https") => true,
        _ => {
            r.err(
                path,
                format!("`{url}` is not an http:// or https:// URL with a host"),
            );
            return;
        }
    };
    check_ca_file(path, https, ca_file, r);
}

/// `ca_file` beside the URL at `url_path`: non-empty, and only for https.
fn check_ca_file(url_path: &str, https: bool, ca_file: Option<&str>, r: &mut Report<'_>) {
    let Some(ca) = ca_file else { return };
    let at = match url_path.rsplit_once('.') {
        Some((base, _)) => format!("{base}.ca_file"),
        None => "ca_file".to_string(),
    };
    if ca.is_empty() {
        r.err(&at, "must not be empty");
    } else if !https {
        r.err(&at, "applies to https:// URLs only (the URL is http://)");
    }
}

/// `notifications`: an http(s) URL, known event names or patterns, a positive timeout.
fn check_notifications(doc: &TrafficDoc, r: &mut Report<'_>) {
    for (i, n) in doc.notifications.iter().enumerate() {
        let base = format!("notifications[{i}]");
        check_http_url(&format!("{base}.url"), &n.url, n.ca_file.as_deref(), r);
        if n.events.is_empty() {
            r.err(
                &format!("{base}.events"),
                "at least one event or pattern (`change.*`, `rollout.*`, `*`)",
            );
        }
        for (j, p) in n.events.iter().enumerate() {
            if !crate::notify::matches_some_event(p) {
                r.err(
                    &format!("{base}.events[{j}]"),
                    format!("`{p}` matches no audit event (see SPEC §11; patterns end in `.*`)"),
                );
            }
        }
        if n.timeout.0.is_zero() {
            r.err(&format!("{base}.timeout"), "must be greater than zero");
        }
        if n.secret_file.as_deref() == Some("") {
            r.err(&format!("{base}.secret_file"), "must not be empty");
        }
    }
}

/// `flag_context`: each source is exactly one of header, cookie or request.
fn check_flag_context(doc: &TrafficDoc, r: &mut Report<'_>) {
    for (i, s) in doc.flag_context.targeting_key.iter().enumerate() {
        if let Err(m) = check_source(s) {
            r.err(&format!("flag_context.targeting_key[{i}]"), m);
        }
    }
    for (k, s) in &doc.flag_context.attributes {
        if let Err(m) = check_source(s) {
            r.err(&format!("flag_context.attributes.{k}"), m);
        }
    }
}

/// The flags themselves (SPEC §4): what flagd could not load, unknown operators, undefined
/// `$ref`s and default variants refuse; departures from the flagd schema warn. Each at its
/// flag's own path so that its line can be shown.
fn check_flags(doc: &TrafficDoc, r: &mut Report<'_>) {
    let opts = crate::flags::Options {
        fractional: doc.fractional,
    };
    match crate::flags::FlagSet::compile_with_metadata(
        &doc.flags,
        &doc.evaluators,
        &doc.metadata,
        opts,
    ) {
        Ok(set) => {
            for w in set.warnings() {
                r.warn(&w.path, w.message.clone());
            }
        }
        Err(flag_errors) => {
            for e in flag_errors {
                r.err(&e.path, e.message);
            }
        }
    }
}

/// Checks a `to: { flag, upstreams }` route against its flag's definition: every mapped
/// key must be a variant (a typo would otherwise never match), and the flag must have a
/// default variant with an upstream, which is where requests go whenever the flag serves
/// no mapped variant (disabled, an evaluation error, or a variant left unmapped). Returns
/// `(path below the route, message)` pairs.
fn check_flag_route(
    key: &str,
    def: &Value,
    upstreams: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // A malformed definition is reported at `flags.<key>` by the flag compiler.
    let Some(variants) = def.get("variants").and_then(Value::as_object) else {
        return out;
    };
    // The variants are named once, and only a few of them: the message repeats for every
    // unknown mapping.
    let mut names = String::new();
    for v in upstreams.keys() {
        if out.len() >= MAX_ERRORS {
            break;
        }
        if !variants.contains_key(v) {
            if names.is_empty() {
                let shown: Vec<_> = variants.keys().take(8).map(|n| shorten(n)).collect();
                names = shown.join(", ");
                if variants.len() > shown.len() {
                    names.push_str(&format!(", … ({} in all)", variants.len()));
                }
            }
            out.push((
                format!("to.upstreams.{v}"),
                format!(
                    "flag `{}` has no variant `{}` (variants: {names})",
                    shorten(key),
                    shorten(v)
                ),
            ));
        }
    }
    let default = match def.get("defaultVariant") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    };
    match default {
        None => out.push((
            "to.flag".into(),
            format!(
                "flag `{key}` routes requests, so it needs a defaultVariant: requests go to its upstream when the flag serves no mapped variant"
            ),
        )),
        Some(d) if variants.contains_key(&d) && !upstreams.contains_key(&d) => out.push((
            "to.upstreams".into(),
            format!(
                "the default variant `{d}` of flag `{key}` needs an upstream: requests go there when the flag serves no mapped variant"
            ),
        )),
        // Not a variant at all: the flag compiler reports it.
        Some(_) => {}
    }
    out
}

/// Header, cookie and query conditions under `base` (a route's `match`, a rollout's
/// `canary_match`), compiled; every error at its own path.
fn request_matcher(
    base: &str,
    [headers, cookies, query]: [&BTreeMap<String, ValueMatch>; 3],
    r: &mut Report<'_>,
) -> Option<RequestMatcher> {
    let mut conds = Some(Vec::new());
    for (kind, map) in [("headers", headers), ("cookies", cookies), ("query", query)] {
        for (name, want) in map {
            let path = format!("{base}.{kind}.{name}");
            let source = match kind {
                "headers" => HeaderName::from_bytes(name.as_bytes())
                    .map(Source::Header)
                    .map_err(|_| format!("`{name}` is not a valid header name")),
                "cookies" if !name.is_empty() && name.bytes().all(is_tchar) => {
                    Ok(Source::Cookie(name.as_str().into()))
                }
                "cookies" => Err(format!("`{name}` is not a valid cookie name")),
                _ if name.is_empty() => Err("a query parameter needs a name".to_string()),
                _ => Ok(Source::Query(name.as_str().into())),
            };
            let header_value = |v: &str| {
                if kind == "headers" && HeaderValue::from_str(v).is_err() {
                    Err(format!("`{v}` is not a valid header value"))
                } else {
                    Ok(v.as_bytes().into())
                }
            };
            let test = match want {
                ValueMatch::Exact(v) => header_value(v).map(ValueTest::Exact),
                ValueMatch::Prefix { prefix } => header_value(prefix).map(ValueTest::Prefix),
                ValueMatch::Regex { regex } => {
                    ValueTest::regex(regex).map_err(|e| format!("invalid regex: {e}"))
                }
                ValueMatch::Present { present: true } => Ok(ValueTest::Present),
                ValueMatch::Present { present: false } => {
                    Err("`present: false` is not supported; leave the condition out".to_string())
                }
            };
            match (source, test) {
                (Ok(source), Ok(test)) => {
                    if let Some(c) = &mut conds {
                        c.push(Cond::new(source, test));
                    }
                }
                (Err(msg), _) | (_, Err(msg)) => {
                    r.err(&path, msg);
                    conds = None;
                }
            }
        }
    }
    conds.map(RequestMatcher::new)
}

/// The index of upstream `name` in the document's (name-ordered) upstreams.
fn upstream_id(doc: &TrafficDoc, name: &str) -> Option<UpstreamId> {
    doc.upstreams.keys().position(|k| k == name)
}

/// Parses `5xx` into (500, 599) or `503` into (503, 503).
pub fn parse_status_class(s: &str) -> Option<(u16, u16)> {
    let b = s.as_bytes();
    if b.len() != 3 || !(b'1'..=b'5').contains(&b[0]) {
        return None;
    }
    if &s[1..] == "xx" {
        let base = (b[0] - b'0') as u16 * 100;
        return Some((base, base + 99));
    }
    let n: u16 = s.parse().ok()?;
    Some((n, n))
}

fn check_source(s: &ContextSource) -> Result<(), String> {
    let n = [s.header.is_some(), s.cookie.is_some(), s.request.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if n != 1 {
        return Err("exactly one of header, cookie or request is needed".into());
    }
    if let Some(h) = &s.header
        && HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        return Err(format!("`{h}` is not a valid header name"));
    }
    Ok(())
}

fn check_endpoint(e: &str) -> Result<(), String> {
    let Some((host, port)) = e.rsplit_once(':') else {
        return Err(format!("endpoint `{e}` must be host:port"));
    };
    if port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(format!("endpoint `{e}` has an invalid port"));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || !(host.parse::<std::net::IpAddr>().is_ok() || is_hostname(host)) {
        return Err(format!("endpoint `{e}` has an invalid host"));
    }
    Ok(())
}

fn is_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn check_host_pattern(h: &str) -> Result<(), String> {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    if bare.contains(':') {
        return Err(format!(
            "host `{h}` must not carry a port (ports are ignored when matching)"
        ));
    }
    if !is_hostname(bare) {
        return Err(format!("host `{h}` is not a hostname (or `*.suffix`)"));
    }
    Ok(())
}

/// What a name (upstream, route, rollout) must be.
const NAME_RULE: &str = "must be 1 to 128 letters, digits, `-`, `_` or `.`";

/// A value quoted in an error, cut to a readable length: a message never repeats a long
/// input (which could make the error list much larger than the document).
fn shorten(s: &str) -> std::borrow::Cow<'_, str> {
    const KEEP: usize = 64;
    if s.len() <= KEEP {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut cut = KEEP;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &s[..cut], s.len()))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A valid upstream, route or rollout name, as a header value (names appear in headers).
fn name_header(s: &str) -> Option<HeaderValue> {
    is_name(s).then(|| HeaderValue::from_str(s).ok()).flatten()
}
