//! Flags on the data plane (SPEC §4): a request becomes an OpenFeature evaluation context,
//! a route's flags become upstream headers, and a `to: { flag }` route picks its upstream
//! by the variant served.
//!
//! Everything that depends only on the document is compiled with the snapshot
//! ([`FlagRuntime::build`], [`FlagTarget::build`]). Per request, [`evaluate`] reads header,
//! cookie and request values where they are (the context borrows them; nothing is copied
//! or allocated unless `flag_context` has more than [`INLINE_ATTRS`] attributes), evaluates,
//! and returns plain variant indexes, so that the request can then be rewritten
//! ([`inject`]) without a borrow on it. An evaluation error never fails a request: that
//! flag's header is absent and `sluice_flag_evaluations_total{reason="ERROR"}` counts it.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, Method};
use metrics::Counter;

use super::split::{self, Assignment};
use crate::config::traffic::{ContextSource, RequestAttr, TrafficDoc};
use crate::flags::headers::{RouteHeaders, Selected};
use crate::flags::{Context, FlagId, FlagSet, Options, Resolution, ResolutionReason};
use crate::snapshot::{RolloutRt, Route, Target, VariantMetrics};
use crate::telemetry::{self, Registry};

/// Attributes kept on the stack while a context is built; more allocate one small vector.
pub const INLINE_ATTRS: usize = 16;

/// The flags of one activation, with what evaluating them on the data plane needs.
#[derive(Debug)]
pub struct FlagRuntime {
    /// The compiled flags.
    pub set: FlagSet,
    /// How a request becomes a context (`flag_context`).
    pub context: ContextPlan,
    /// `sluice_flag_evaluations_total` handles.
    pub metrics: FlagMetrics,
    /// The flags as a flagd file (`flags`, `$evaluators`, `metadata`): what in-process SDKs
    /// sync (flagd sync v1).
    pub flagd_json: std::sync::Arc<str>,
    /// A hash of everything an SDK's answers depend on (the flagd file, `fractional`,
    /// `flag_context`): equal across activations that change no flag.
    pub fingerprint: String,
    /// Per flag key, a hash of its definition (and of what it shares: evaluators, flag-set
    /// metadata, hashing), to name the flags an activation changed.
    pub definitions: std::collections::BTreeMap<String, u64>,
}

/// `flag_context`, compiled: header names parsed, sources in order.
#[derive(Debug, Default)]
pub struct ContextPlan {
    /// Sources of the targeting key; the first present and non-empty wins.
    targeting_key: Box<[Source]>,
    /// Attribute name and source.
    attributes: Box<[(Box<str>, Source)]>,
    /// Whether some source is the client IP (formatted only then).
    needs_ip: bool,
}

/// Where a context value comes from.
#[derive(Debug, Clone)]
enum Source {
    Header(HeaderName),
    Cookie(Box<str>),
    Request(RequestAttr),
}

/// `sluice_flag_evaluations_total{flag,variant,reason}` handles, one slot per flag and
/// outcome. Slots of the outcomes a flag can produce are resolved when the snapshot is
/// built for every flag a route injects or routes by; the rest (flags only OFREP asks
/// for) are resolved on first use and kept, so recording is an atomic add either way.
#[derive(Debug, Default)]
pub struct FlagMetrics {
    registry: Registry,
    /// Per flag, the index of its first slot; one more entry closes the last flag.
    base: Box<[u32]>,
    /// Per flag with `n` variants: `3v + {STATIC, TARGETING_MATCH, DEFAULT}` for variant
    /// `v`, then `3n + {DEFAULT, DISABLED, ERROR}` for outcomes without a variant.
    slots: Box<[OnceLock<Counter>]>,
}

/// What a request offers to `flag_context`.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'r> {
    /// Request headers (client `x-sluice-*` already removed).
    pub headers: &'r HeaderMap,
    /// Method.
    pub method: &'r Method,
    /// Host without port.
    pub host: &'r str,
    /// Path after dot-segment removal.
    pub path: &'r str,
    /// The client's address (the peer, or the client behind trusted proxies).
    pub client_ip: IpAddr,
    /// The verified client certificate (mTLS listeners).
    pub client_cert: Option<&'r crate::proxy::client::ClientCert>,
    /// `(cookie name, id)`: a sticky key drawn for this request that is being set as
    /// that cookie; it stands in for the absent cookie (SPEC §3).
    pub drawn: Option<(&'r str, &'r str)>,
}

/// The request's values, with the derived strings a context may borrow.
struct Facts<'a> {
    req: &'a RequestFacts<'a>,
    ip: &'a str,
    host: &'a str,
}

/// The outcome of a request's flag evaluation: indexes only, no borrows.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// Variants of the route's injected flags.
    selected: Selected,
    /// Variant of the routing flag (`to: { flag }`), if the route has one.
    routed: Option<u32>,
}

/// A `to: { flag, upstreams }` target, compiled.
#[derive(Debug)]
pub struct FlagTarget {
    /// The routing flag.
    flag: FlagId,
    /// Its position among the route's injected flags, when it is one (evaluated once).
    pos: Option<usize>,
    /// Per variant of the flag (in [`FlagSet::variants`] order): the arm serving it;
    /// unmapped variants hold `fallback`.
    by_variant: Box<[u16]>,
    /// The arm of the flag's default variant, for requests the flag serves no variant.
    fallback: u16,
    /// One arm per distinct upstream.
    arms: Box<[Arm]>,
}

/// One upstream a flag route can send to.
#[derive(Debug)]
pub struct Arm {
    /// Index into [`Snapshot::upstreams`](crate::snapshot::Snapshot::upstreams).
    pub upstream: usize,
    /// Metrics (and `x-sluice-variant`: the upstream's name).
    pub metrics: VariantMetrics,
}

// === impl FlagRuntime ===

impl FlagRuntime {
    /// Compiles the document's flags strictly (validation has already refused defects, so
    /// an error here means the document was not validated).
    pub fn build(doc: &TrafficDoc, registry: &Registry) -> Result<FlagRuntime, String> {
        let opts = Options {
            fractional: doc.fractional,
        };
        let set = FlagSet::compile_with_metadata(&doc.flags, &doc.evaluators, &doc.metadata, opts)
            .map_err(|errs| {
                let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
                lines.join("; ")
            })?;
        let context = ContextPlan::build(doc)?;
        let metrics = FlagMetrics::new(&set, registry);
        let (flagd_json, fingerprint, definitions) = describe(doc);
        Ok(FlagRuntime {
            set,
            context,
            metrics,
            flagd_json,
            fingerprint,
            definitions,
        })
    }

    /// The flags `route` injects, headers pre-built; their metric handles are resolved.
    pub fn route_headers(&self, name: &str, keys: &[String]) -> Result<RouteHeaders, String> {
        let h = RouteHeaders::new(&self.set, keys).map_err(|e| format!("route `{name}`: {e}"))?;
        for id in h.flags() {
            self.metrics.resolve(&self.set, id);
        }
        Ok(h)
    }

    /// Records one evaluation.
    #[inline]
    pub fn record(&self, id: FlagId, res: &Resolution<'_>) {
        self.metrics.record(&self.set, id, res);
    }
}

/// The flagd file of a document, its fingerprint and per-flag definition hashes.
fn describe(
    doc: &TrafficDoc,
) -> (
    std::sync::Arc<str>,
    String,
    std::collections::BTreeMap<String, u64>,
) {
    use sha2::{Digest, Sha256};
    let mut file = serde_json::Map::new();
    file.insert("flags".into(), doc.flags.clone().into());
    if !doc.evaluators.is_empty() {
        file.insert("$evaluators".into(), doc.evaluators.clone().into());
    }
    if !doc.metadata.is_empty() {
        file.insert("metadata".into(), doc.metadata.clone().into());
    }
    // Serializing JSON values and plain config types cannot fail.
    let text = serde_json::to_string(&file).unwrap_or_default();
    let shared = serde_json::to_vec(&(
        &doc.evaluators,
        &doc.metadata,
        doc.fractional,
        &doc.flag_context,
    ))
    .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update(&shared);
    let fingerprint = hex::encode(&h.finalize()[..16]);
    let definitions = doc
        .flags
        .iter()
        .map(|(k, v)| {
            let mut h = Sha256::new();
            h.update(&shared);
            h.update(serde_json::to_vec(v).unwrap_or_default());
            let d = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&d[..8]);
            (k.clone(), u64::from_le_bytes(first))
        })
        .collect();
    (text.into(), fingerprint, definitions)
}

// === impl ContextPlan ===

impl ContextPlan {
    fn build(doc: &TrafficDoc) -> Result<ContextPlan, String> {
        let fc = &doc.flag_context;
        let targeting_key = fc
            .targeting_key
            .iter()
            .map(Source::build)
            .collect::<Result<Box<[_]>, _>>()?;
        let attributes = fc
            .attributes
            .iter()
            .map(|(k, s)| Ok((k.as_str().into(), Source::build(s)?)))
            .collect::<Result<Box<[_]>, String>>()?;
        let needs_ip = targeting_key
            .iter()
            .chain(attributes.iter().map(|(_, s)| s))
            .any(|s| matches!(s, Source::Request(RequestAttr::ClientIp)));
        Ok(ContextPlan {
            targeting_key,
            attributes,
            needs_ip,
        })
    }

    /// Builds the request's context and hands it to `f`. The context borrows the request
    /// and two stack buffers (the lower-cased host and the formatted client IP).
    pub fn with_context<R>(&self, req: &RequestFacts<'_>, f: impl FnOnce(&Context<'_>) -> R) -> R {
        let mut ip_buf = [0u8; 48];
        let ip = if self.needs_ip {
            format_ip(req.client_ip, &mut ip_buf)
        } else {
            ""
        };
        let mut host_buf = [0u8; 255];
        let host = lowercase(req.host, &mut host_buf);
        let facts = Facts { req, ip, host };
        let targeting_key = self
            .targeting_key
            .iter()
            .find_map(|s| facts.value(s).filter(|v| !v.is_empty()));
        if self.attributes.len() <= INLINE_ATTRS {
            let mut buf = [("", ""); INLINE_ATTRS];
            let mut n = 0;
            for (name, s) in self.attributes.iter() {
                if let Some(v) = facts.value(s) {
                    buf[n] = (&**name, v);
                    n += 1;
                }
            }
            f(&Context::from_strings(targeting_key, &buf[..n]))
        } else {
            let pairs: Vec<(&str, &str)> = self
                .attributes
                .iter()
                .filter_map(|(name, s)| Some((&**name, facts.value(s)?)))
                .collect();
            f(&Context::from_strings(targeting_key, &pairs))
        }
    }
}

// === impl Facts ===

impl<'a> Facts<'a> {
    fn value(&self, s: &'a Source) -> Option<&'a str> {
        match s {
            Source::Header(h) => self
                .req
                .headers
                .get(h)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()),
            Source::Cookie(name) => split::cookie(self.req.headers, name)
                .filter(|v| !v.is_empty())
                .and_then(|v| std::str::from_utf8(v).ok())
                .or_else(|| {
                    self.req
                        .drawn
                        .filter(|(cookie, _)| *cookie == &**name)
                        .map(|(_, id)| id)
                }),
            Source::Request(RequestAttr::Path) => Some(self.req.path),
            Source::Request(RequestAttr::Method) => Some(self.req.method.as_str()),
            Source::Request(RequestAttr::Host) => Some(self.host),
            Source::Request(RequestAttr::ClientIp) => Some(self.ip),
            Source::Request(RequestAttr::ClientSubject) => {
                self.req.client_cert.map(|c| &*c.subject)
            }
            Source::Request(RequestAttr::ClientSan) => {
                self.req.client_cert.and_then(|c| c.first_san())
            }
        }
    }
}

/// `ip` as text in `buf` (an IPv6 address is at most 45 characters).
fn format_ip(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    let len = {
        let mut w = &mut buf[..];
        let before = w.len();
        if write!(w, "{ip}").is_err() {
            return "";
        }
        before - w.len()
    };
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// `host` in lower case, copied into `buf` only when it has upper-case letters (hosts
/// compare case-insensitively; rules compare strings).
fn lowercase<'a>(host: &'a str, buf: &'a mut [u8; 255]) -> &'a str {
    if !host.bytes().any(|b| b.is_ascii_uppercase()) || host.len() > buf.len() {
        return host;
    }
    let out = &mut buf[..host.len()];
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).unwrap_or(host)
}

// === impl Source ===

impl Source {
    fn build(s: &ContextSource) -> Result<Source, String> {
        match (&s.header, &s.cookie, s.request) {
            (Some(h), None, None) => HeaderName::from_bytes(h.as_bytes())
                .map(Source::Header)
                .map_err(|e| format!("flag_context: header `{h}`: {e}")),
            (None, Some(c), None) => Ok(Source::Cookie(c.as_str().into())),
            (None, None, Some(r)) => Ok(Source::Request(r)),
            _ => Err("flag_context: a source is exactly one of header, cookie or request".into()),
        }
    }
}

// === impl FlagMetrics ===

/// Reasons with a variant, in slot order.
const WITH_VARIANT: [ResolutionReason; 3] = [
    ResolutionReason::Static,
    ResolutionReason::TargetingMatch,
    ResolutionReason::Default,
];
/// Reasons without a variant, in slot order.
const WITHOUT_VARIANT: [ResolutionReason; 3] = [
    ResolutionReason::Default,
    ResolutionReason::Disabled,
    ResolutionReason::Error,
];

impl FlagMetrics {
    fn new(set: &FlagSet, registry: &Registry) -> FlagMetrics {
        let mut base = Vec::with_capacity(set.len() + 1);
        let mut n = 0u32;
        for (id, _) in set.iter() {
            base.push(n);
            n += 3 * (set.variants(id).len() as u32 + 1);
        }
        base.push(n);
        FlagMetrics {
            registry: registry.clone(),
            base: base.into(),
            slots: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The slot of an outcome of flag `id`.
    #[inline]
    fn slot(
        &self,
        id: FlagId,
        variant: Option<u32>,
        reason: ResolutionReason,
    ) -> Option<&OnceLock<Counter>> {
        let i = id.index();
        let (base, end) = (*self.base.get(i)? as usize, *self.base.get(i + 1)? as usize);
        let variants = (end - base) / 3 - 1;
        let off = match variant {
            Some(v) if (v as usize) < variants => {
                3 * v as usize + WITH_VARIANT.iter().position(|r| *r == reason)?
            }
            Some(_) => return None,
            None => 3 * variants + WITHOUT_VARIANT.iter().position(|r| *r == reason)?,
        };
        self.slots.get(base + off)
    }

    /// Resolves the handles of every outcome flag `id` can produce.
    fn resolve(&self, set: &FlagSet, id: FlagId) {
        for (variant, reason) in set.outcomes(id) {
            if let Some(slot) = self.slot(id, variant, reason) {
                slot.get_or_init(|| self.register(set, id, variant, reason));
            }
        }
    }

    /// Counts one evaluation of flag `id`.
    #[inline]
    pub fn record(&self, set: &FlagSet, id: FlagId, res: &Resolution<'_>) {
        let variant = res.variant_index();
        match self.slot(id, variant, res.reason) {
            Some(slot) => slot
                .get_or_init(|| self.register(set, id, variant, res.reason))
                .increment(1),
            // Not an outcome flagd produces (a variant with DISABLED or ERROR); counted
            // all the same, through the registry.
            None => self.register(set, id, variant, res.reason).increment(1),
        }
    }

    fn register(
        &self,
        set: &FlagSet,
        id: FlagId,
        variant: Option<u32>,
        reason: ResolutionReason,
    ) -> Counter {
        let name = variant
            .and_then(|v| set.variants(id).nth(v as usize))
            .map_or("", |(name, _)| name);
        self.registry.counter(
            telemetry::FLAG_EVALUATIONS,
            &[
                ("flag", set.key(id)),
                ("variant", name),
                ("reason", reason.as_str()),
            ],
        )
    }
}

// === impl FlagTarget ===

impl FlagTarget {
    /// Compiles `to: { flag: key, upstreams }` for a route injecting `headers`: `upstreams`
    /// maps variants to upstream indexes (validation guarantees the default variant is
    /// mapped); `arm` builds the arm of an upstream.
    pub fn build(
        rt: &FlagRuntime,
        key: &str,
        upstreams: &std::collections::BTreeMap<String, usize>,
        headers: &RouteHeaders,
        mut arm: impl FnMut(usize) -> Arm,
    ) -> Result<FlagTarget, String> {
        let flag = rt
            .set
            .get(key)
            .ok_or_else(|| format!("unknown flag `{key}`"))?;
        rt.metrics.resolve(&rt.set, flag);
        let mut ids: Vec<usize> = Vec::new();
        let mut arms = Vec::new();
        let mut arm_of = |upstream: usize| -> Result<u16, String> {
            if let Some(i) = ids.iter().position(|n| *n == upstream) {
                return Ok(i as u16);
            }
            ids.push(upstream);
            arms.push(arm(upstream));
            u16::try_from(arms.len() - 1).map_err(|_| "too many upstreams".to_string())
        };
        // The default variant's arm first: validation guarantees it is mapped.
        let default = rt
            .set
            .default_variant(flag)
            .and_then(|v| rt.set.variants(flag).nth(v as usize))
            .map(|(name, _)| name);
        let fallback = match default.and_then(|d| upstreams.get(d)) {
            Some(u) => arm_of(*u)?,
            None => {
                return Err(format!(
                    "flag `{key}` routes requests but its default variant has no upstream"
                ));
            }
        };
        let by_variant = rt
            .set
            .variants(flag)
            .map(|(name, _)| match upstreams.get(name) {
                Some(u) => arm_of(*u),
                None => Ok(fallback),
            })
            .collect::<Result<Box<[u16]>, String>>()?;
        Ok(FlagTarget {
            flag,
            pos: headers.flags().position(|id| id == flag),
            by_variant,
            fallback,
            arms: arms.into(),
        })
    }

    /// The arm for an evaluation: the served variant's upstream, else the default
    /// variant's (the flag is disabled, failed, or served an unmapped variant).
    #[inline]
    pub fn pick(&self, ev: Option<&Evaluated>) -> &Arm {
        let i = ev
            .and_then(|e| e.routed)
            .and_then(|v| self.by_variant.get(v as usize))
            .copied()
            .unwrap_or(self.fallback);
        &self.arms[i as usize]
    }

    /// Every arm (for status and tests).
    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }
}

/// `(cookie, id)` when the split drew a sticky key that is being set as a cookie: that id
/// serves `flag_context` for this request too (SPEC §3), so the first request of a new
/// user sees the flags its following requests (which carry the cookie) will see.
pub fn drawn_cookie<'a>(ro: &'a RolloutRt, d: &'a Assignment) -> Option<(&'a str, &'a str)> {
    match (&d.drawn, ro.set_cookie, ro.sticky_cookie.as_deref()) {
        (Some(id), true, Some(cookie)) => Some((cookie, id.as_str())),
        _ => None,
    }
}

/// Evaluates `route`'s flags (injected and routing) for a request; `None` when the route
/// has none, without reading the clock.
pub fn evaluate(rt: &FlagRuntime, route: &Route, req: &RequestFacts<'_>) -> Option<Evaluated> {
    let target = match &route.target {
        Target::Flag(t) => Some(t),
        _ => None,
    };
    if route.flags.is_empty() && target.is_none() {
        return None;
    }
    let now = unix_now();
    Some(rt.context.with_context(req, |ctx| {
        let mut selected = Selected::default();
        route
            .flags
            .evaluate(&rt.set, ctx, now, &mut selected, |id, res| {
                rt.record(id, res)
            });
        let routed = target.and_then(|t| match t.pos {
            Some(p) => selected.variant(p),
            None => {
                let res = rt.set.evaluate(t.flag, ctx, now);
                rt.record(t.flag, &res);
                res.variant_index()
            }
        });
        Evaluated { selected, routed }
    }))
}

/// Sets the upstream flag headers of an evaluation (SPEC §4).
#[inline]
pub fn inject(route: &Route, ev: Option<Evaluated>, headers: &mut HeaderMap) {
    if let Some(ev) = ev {
        // One growth at most for the per-flag headers and the combined one.
        headers.reserve(route.flags.len() + 1);
        route.flags.insert(&ev.selected, headers);
    }
}

/// Seconds since the Unix epoch (`$flagd.timestamp`); a vDSO read, not a syscall.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
