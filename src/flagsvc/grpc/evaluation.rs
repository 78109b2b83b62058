//! `flagd.evaluation.v1.Service` and `flagd.evaluation.v2.Service`: one evaluation core,
//! two wire shapes. v2 leaves `value` and `variant` out for a code default or a disabled
//! flag; v1 (no optional fields) sends zero values with an empty variant, which providers
//! read the same way (reason `DEFAULT` or `DISABLED` without a variant: the caller's default).

use std::pin::Pin;
use std::sync::Arc;

use prost_types::Struct;
use serde_json::{Map, Value, json};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::pb::{evaluation_v1 as v1, evaluation_v2 as v2};
use super::value::{json_to_struct, struct_to_json};
use crate::flags::{Context, ErrorCode, ValueType};
use crate::flagsvc::feed::FlagChange;
use crate::proxy::Shared;

/// Both evaluation services, over the active snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Evaluation {
    shared: Arc<Shared>,
}

/// An evaluation's outcome, owned (the snapshot is released before answering).
struct Resolved {
    value: Option<Value>,
    variant: Option<String>,
    reason: &'static str,
    metadata: Struct,
}

/// A server stream of the evaluation services.
type Events<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

// === impl Evaluation ===

impl Evaluation {
    pub(crate) fn new(shared: Arc<Shared>) -> Evaluation {
        Evaluation { shared }
    }

    /// Evaluates `key` as `ty` against `ctx`.
    fn resolve(&self, key: &str, ctx: Option<&Struct>, ty: ValueType) -> Result<Resolved, Status> {
        let snap = self
            .shared
            .snapshot
            .load_full()
            .ok_or_else(|| Status::unavailable("no configuration is active"))?;
        let ctx = ctx.map(struct_to_json).unwrap_or_default();
        let c = Context::from_json(&ctx).map_err(|e| {
            Status::invalid_argument(format!("{}: {e}", ErrorCode::InvalidContext.as_str()))
        })?;
        let rt = &snap.flags;
        let Some(id) = rt.set.get(key) else {
            return Err(Status::not_found(format!(
                "{}: flag `{key}` not found",
                ErrorCode::FlagNotFound.as_str()
            )));
        };
        let res = rt.set.evaluate(id, &c, now());
        rt.record(id, &res);
        let res = res.check_type(ty);
        if let Some(code) = res.error_code {
            let msg = format!(
                "{}: {}",
                code.as_str(),
                res.error_message.as_deref().unwrap_or("")
            );
            return Err(match code {
                ErrorCode::FlagNotFound => Status::not_found(msg),
                ErrorCode::TypeMismatch
                | ErrorCode::InvalidContext
                | ErrorCode::TargetingKeyMissing => Status::invalid_argument(msg),
                ErrorCode::ParseError => Status::data_loss(msg),
                ErrorCode::General => Status::unknown(msg),
            });
        }
        Ok(Resolved {
            value: res.value.cloned(),
            variant: res.variant.map(str::to_string),
            reason: res.reason.as_str(),
            metadata: json_to_struct(res.metadata),
        })
    }

    /// v1 `ResolveAll`: every flag that resolves to a value, with the flag-set metadata.
    fn resolve_all(&self, ctx: Option<&Struct>) -> Result<v1::ResolveAllResponse, Status> {
        let snap = self
            .shared
            .snapshot
            .load_full()
            .ok_or_else(|| Status::unavailable("no configuration is active"))?;
        let ctx = ctx.map(struct_to_json).unwrap_or_default();
        let c = Context::from_json(&ctx).map_err(|e| {
            Status::invalid_argument(format!("{}: {e}", ErrorCode::InvalidContext.as_str()))
        })?;
        let rt = &snap.flags;
        let now = now();
        let mut flags = std::collections::HashMap::new();
        for (id, key) in rt.set.iter() {
            let res = rt.set.evaluate(id, &c, now);
            rt.record(id, &res);
            // As flagd: errors, disabled flags and code defaults are left out.
            let Some(v) = res.value.filter(|_| res.error_code.is_none()) else {
                continue;
            };
            use v1::any_flag::Value as V;
            let value = match v {
                Value::Bool(b) => V::BoolValue(*b),
                Value::String(s) => V::StringValue(s.clone()),
                Value::Number(n) => V::DoubleValue(n.as_f64().unwrap_or(0.0)),
                Value::Object(m) => V::ObjectValue(json_to_struct(m)),
                Value::Null | Value::Array(_) => continue,
            };
            flags.insert(
                key.to_string(),
                v1::AnyFlag {
                    reason: res.reason.as_str().to_string(),
                    variant: res.variant.unwrap_or("").to_string(),
                    value: Some(value),
                    metadata: Some(json_to_struct(res.metadata)),
                },
            );
        }
        Ok(v1::ResolveAllResponse {
            flags,
            metadata: Some(json_to_struct(rt.set.metadata())),
        })
    }

    /// `provider_ready`, then one `configuration_change` per change of the flags.
    fn events(&self) -> impl Stream<Item = (&'static str, Struct)> + Send + 'static {
        let ready = tokio_stream::once(("provider_ready", Struct::default()));
        let changes = WatchStream::from_changes(self.shared.flag_services.feed.subscribe())
            .filter_map(|c| c.map(|c| ("configuration_change", change_data(&c))));
        ready.chain(changes)
    }
}

/// flagd's `configuration_change` data: `{"flags": {key: {"type", "source", "flagKey"}}}`.
fn change_data(c: &FlagChange) -> Struct {
    let flags: Map<String, Value> = c
        .changed
        .iter()
        .map(|(k, kind)| {
            (
                k.clone(),
                json!({"type": kind.as_str(), "source": "sluice", "flagKey": k}),
            )
        })
        .collect();
    let mut m = Map::new();
    m.insert("flags".into(), Value::Object(flags));
    json_to_struct(&m)
}

fn now() -> i64 {
    crate::clock::unix_secs(std::time::SystemTime::now()) as i64
}

/// The value as a Struct, when it is an object.
fn object(v: Option<Value>) -> Option<Struct> {
    match v {
        Some(Value::Object(m)) => Some(json_to_struct(&m)),
        _ => None,
    }
}

fn as_f64(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

fn as_i64(v: Option<&Value>) -> Option<i64> {
    v.and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
}

// === v1 ===

#[tonic::async_trait]
impl v1::service_server::Service for Evaluation {
    async fn resolve_all(
        &self,
        req: Request<v1::ResolveAllRequest>,
    ) -> Result<Response<v1::ResolveAllResponse>, Status> {
        self.resolve_all(req.get_ref().context.as_ref())
            .map(Response::new)
    }

    async fn resolve_boolean(
        &self,
        req: Request<v1::ResolveBooleanRequest>,
    ) -> Result<Response<v1::ResolveBooleanResponse>, Status> {
        let r = req.get_ref();
        let o = self.resolve(&r.flag_key, r.context.as_ref(), ValueType::Boolean)?;
        Ok(Response::new(v1::ResolveBooleanResponse {
            value: o
                .value
                .as_ref()
                .and_then(Value::as_bool)
                .unwrap_or_default(),
            reason: o.reason.into(),
            variant: o.variant.unwrap_or_default(),
            metadata: Some(o.metadata),
        }))
    }

    async fn resolve_string(
        &self,
        req: Request<v1::ResolveStringRequest>,
    ) -> Result<Response<v1::ResolveStringResponse>, Status> {
        let r = req.get_ref();
        let o = self.resolve(&r.flag_key, r.context.as_ref(), ValueType::String)?;
        Ok(Response::new(v1::ResolveStringResponse {
            value: o
                .value
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            reason: o.reason.into(),
            variant: o.variant.unwrap_or_default(),
            metadata: Some(o.metadata),
        }))
    }

    async fn resolve_float(
        &self,
        req: Request<v1::ResolveFloatRequest>,
    ) -> Result<Response<v1::ResolveFloatResponse>, Status> {
        let r = req.get_ref();
        let o = self.resolve(&r.flag_key, r.context.as_ref(), ValueType::Float)?;
        Ok(Response::new(v1::ResolveFloatResponse {
            value: as_f64(o.value.as_ref()).unwrap_or_default(),
            reason: o.reason.into(),
            variant: o.variant.unwrap_or_default(),
            metadata: Some(o.metadata),
        }))
    }

    async fn resolve_int(
        &self,
        req: Request<v1::ResolveIntRequest>,
    ) -> Result<Response<v1::ResolveIntResponse>, Status> {
        let r = req.get_ref();
        let o = self.resolve(&r.flag_key, r.context.as_ref(), ValueType::Integer)?;
        Ok(Response::new(v1::ResolveIntResponse {
            value: as_i64(o.value.as_ref()).unwrap_or_default(),
            reason: o.reason.into(),
            variant: o.variant.unwrap_or_default(),
            metadata: Some(o.metadata),
        }))
    }

    async fn resolve_object(
        &self,
        req: Request<v1::ResolveObjectRequest>,
    ) -> Result<Response<v1::ResolveObjectResponse>, Status> {
        let r = req.get_ref();
        let o = self.resolve(&r.flag_key, r.context.as_ref(), ValueType::Object)?;
        Ok(Response::new(v1::ResolveObjectResponse {
            value: object(o.value),
            reason: o.reason.into(),
            variant: o.variant.unwrap_or_default(),
            metadata: Some(o.metadata),
        }))
    }

    type EventStreamStream = Events<v1::EventStreamResponse>;

    async fn event_stream(
        &self,
        _req: Request<v1::EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let s = self.events().map(|(t, data)| {
            Ok(v1::EventStreamResponse {
                r#type: t.into(),
                data: Some(data),
            })
        });
        Ok(Response::new(Box::pin(s)))
    }
}

// === v2 ===

#[tonic::async_trait]
impl v2::service_server::Service for Evaluation {
    async fn resolve_boolean(
        &self,
        req: Request<v2::ResolveBooleanRequest>,
    ) -> Result<Response<v2::ResolveBooleanResponse>, Status> {
        let r = req.get_ref();
        let o = self.resolve(&r.flag_key, r.context.as_ref(), ValueType::Boolean)?;
        Ok(Response::new(v2::ResolveBooleanResponse {
            value: o.value.as_ref().and_then(Value::as_bool),
            reason: o.reason.into(),
            variant: o.variant,
            metadata: Some(o.metadata),
        }))
    }

    async fn resolve_string(
        &self,
        req: Request<v2::ResolveStringRequest>,
    ) -> Result<Response<v2::ResolveStringResponse>, Status> {
        let r = req.get_ref();
        let o = self.resolve(&r.flag_key, r.context.as_ref(), ValueType::String)?;
        Ok(Response::new(v2::ResolveStringResponse {
            value: o.value.as_ref().and_then(Value::as_str).map(str::to_string),
            reason: o.reason.into(),
            variant: o.variant,
            metadata: Some(o.metadata),
        }))
    }

    async fn resolve_float(
        &self,
        req: Request<v2::ResolveFloatRequest>,
    ) -> Result<Response<v2::ResolveFloatResponse>, Status> {
        let r = req.get_ref();
        let o = self.resolve(&r.flag_key, r.context.as_ref(), ValueType::Float)?;
        Ok(Response::new(v2::ResolveFloatResponse {
            value: as_f64(o.value.as_ref()),
            reason: o.reason.into(),
            variant: o.variant,
            metadata: Some(o.metadata),
        }))
    }

    async fn resolve_int(
        &self,
        req: Request<v2::ResolveIntRequest>,
    ) -> Result<Response<v2::ResolveIntResponse>, Status> {
        let r = req.get_ref();
        let o = self.resolve(&r.flag_key, r.context.as_ref(), ValueType::Integer)?;
        Ok(Response::new(v2::ResolveIntResponse {
            value: as_i64(o.value.as_ref()),
            reason: o.reason.into(),
            variant: o.variant,
            metadata: Some(o.metadata),
        }))
    }

    async fn resolve_object(
        &self,
        req: Request<v2::ResolveObjectRequest>,
    ) -> Result<Response<v2::ResolveObjectResponse>, Status> {
        let r = req.get_ref();
        let o = self.resolve(&r.flag_key, r.context.as_ref(), ValueType::Object)?;
        Ok(Response::new(v2::ResolveObjectResponse {
            value: object(o.value),
            reason: o.reason.into(),
            variant: o.variant,
            metadata: Some(o.metadata),
        }))
    }

    type EventStreamStream = Events<v2::EventStreamResponse>;

    async fn event_stream(
        &self,
        _req: Request<v2::EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let s = self.events().map(|(t, data)| {
            Ok(v2::EventStreamResponse {
                r#type: t.into(),
                data: Some(data),
            })
        });
        Ok(Response::new(Box::pin(s)))
    }
}
