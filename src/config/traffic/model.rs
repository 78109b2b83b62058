//! The checked model: what validation resolved in a traffic document — route targets as
//! one enum, a rollout's two sides named by its strategy, upstreams and rollouts by index,
//! header names, values and methods parsed. The snapshot build compiles the raw document
//! together with this model and re-checks nothing.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue, Method};

use super::raw::Builtin;
use crate::request_match::RequestMatcher;

/// Index of an upstream in the document's `upstreams` (name order).
pub type UpstreamId = usize;

/// Index of a rollout in the document's `rollouts` (name order).
pub type RolloutId = usize;

/// What validation resolved, parallel to the document's routes and rollouts.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// One per upstream, in name order.
    pub upstreams: Vec<CheckedUpstream>,
    /// One per route, in document order.
    pub routes: Vec<CheckedRoute>,
    /// One per rollout, in name order.
    pub rollouts: Vec<CheckedRollout>,
}

/// An upstream's name as a header value (`x-sluice-variant` of the routes sending to it).
#[derive(Debug, Clone)]
pub struct CheckedUpstream {
    /// The name, as a header value.
    pub name_header: HeaderValue,
}

/// A route's match and target, resolved.
#[derive(Debug, Clone)]
pub struct CheckedRoute {
    /// The name as a header value (`x-sluice-route`).
    pub name_header: HeaderValue,
    /// `match.listener`.
    pub listener: ListenerRef,
    /// `match.methods`.
    pub methods: Vec<Method>,
    /// `match.headers`, `match.cookies` and `match.query`, compiled.
    pub request: RequestMatcher,
    /// `to`.
    pub target: Target,
    /// `mirror.upstream`.
    pub mirror: Option<UpstreamId>,
}

/// Where a route sends: exactly one target (validation refuses zero or several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `to: { upstream }`.
    Upstream(UpstreamId),
    /// `to: { rollout }`.
    Rollout(RolloutId),
    /// `to: { flag, upstreams }`: the flag's default variant is among `arms`.
    Flag {
        /// The routing flag's key.
        flag: String,
        /// Variant → upstream.
        arms: BTreeMap<String, UpstreamId>,
    },
    /// `to: { builtin }`.
    Builtin(Builtin),
}

/// `match.listener`, resolved against `sluice.yaml`'s listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerRef {
    /// No `listener`: every listener.
    Any,
    /// The listener at this index, in `sluice.yaml` order.
    At(usize),
    /// A listener named while checking without `sluice.yaml` (offline tools): it matches
    /// nothing if such a document is ever compiled.
    Unchecked,
}

/// A rollout's two sides and selectors, resolved by strategy: blue-green's `active` plays
/// stable and `preview` plays canary (SPEC §3).
#[derive(Debug, Clone)]
pub struct CheckedRollout {
    /// `stable` (canary) or `active` (blue-green).
    pub stable: UpstreamId,
    /// `canary` (canary) or `preview` (blue-green).
    pub canary: UpstreamId,
    /// `sticky.header`, parsed.
    pub sticky_header: Option<HeaderName>,
    /// `canary_match` (canary) or `preview_match` (blue-green), compiled: requests always
    /// sent to the canary side (none when absent).
    pub force_canary: Option<RequestMatcher>,
    /// `analysis.error_statuses` as inclusive ranges (`5xx` without analysis).
    pub error_statuses: Vec<(u16, u16)>,
    /// `mirror.upstream`.
    pub mirror: Option<UpstreamId>,
    /// `steps[i].mirror.upstream`, one per step (empty when no step mirrors).
    pub step_mirrors: Vec<Option<UpstreamId>>,
}
