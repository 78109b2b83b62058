//! The outcome of evaluating one flag: value, variant, OpenFeature reason and error code.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// OpenFeature resolution reasons that flagd produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResolutionReason {
    /// No targeting: the default variant.
    Static,
    /// Targeting chose a variant.
    TargetingMatch,
    /// Targeting returned null, or the flag has no default variant.
    Default,
    /// The flag is disabled: the caller's code default applies.
    Disabled,
    /// Evaluation failed; see the error code.
    Error,
}

/// OpenFeature error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No flag with that key.
    FlagNotFound,
    /// The flag definition or its targeting is defective.
    ParseError,
    /// The value is not of the type the caller asked for.
    TypeMismatch,
    /// A targeting key was required and absent (flagd's evaluator never requires one).
    TargetingKeyMissing,
    /// The evaluation context is malformed.
    InvalidContext,
    /// Anything else, e.g. targeting chose a variant the flag does not have.
    General,
}

/// The type a typed OpenFeature call asks for (the gherkin suites and SDK-style callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `true`/`false`.
    Boolean,
    /// A string.
    String,
    /// An integral number.
    Integer,
    /// Any number.
    Float,
    /// An object or array.
    Object,
}

/// One flag's evaluation. Borrows from the [`FlagSet`](super::FlagSet): building it
/// allocates only on error paths that format a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution<'s> {
    /// The value; `None` means "use the code default" (no default variant, disabled, error).
    pub value: Option<&'s Value>,
    /// The variant served, if any.
    pub variant: Option<&'s str>,
    /// Why.
    pub reason: ResolutionReason,
    /// Set when `reason` is `Error`.
    pub error_code: Option<ErrorCode>,
    /// A human sentence for errors.
    pub error_message: Option<Cow<'s, str>>,
    /// Flag metadata (flag-set metadata overlaid with the flag's own).
    pub metadata: &'s Map<String, Value>,
    /// Index of `variant` in the flag's sorted variant list (for precomputed headers).
    pub(crate) variant_index: Option<u32>,
}

// === impl ResolutionReason ===

impl ResolutionReason {
    /// The OpenFeature spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionReason::Static => "STATIC",
            ResolutionReason::TargetingMatch => "TARGETING_MATCH",
            ResolutionReason::Default => "DEFAULT",
            ResolutionReason::Disabled => "DISABLED",
            ResolutionReason::Error => "ERROR",
        }
    }
}

// === impl ErrorCode ===

impl ErrorCode {
    /// The OpenFeature spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

// === impl ValueType ===

impl ValueType {
    /// Whether `v` is of this type (flagd: floats accept integers, integers refuse floats).
    pub fn admits(self, v: &Value) -> bool {
        match self {
            ValueType::Boolean => v.is_boolean(),
            ValueType::String => v.is_string(),
            ValueType::Integer => v.is_i64() || v.is_u64(),
            ValueType::Float => v.is_number(),
            ValueType::Object => v.is_object() || v.is_array(),
        }
    }
}

// === impl Resolution ===

impl<'s> Resolution<'s> {
    /// An error resolution.
    pub(crate) fn error(
        code: ErrorCode,
        message: Cow<'s, str>,
        metadata: &'s Map<String, Value>,
    ) -> Self {
        Resolution {
            value: None,
            variant: None,
            reason: ResolutionReason::Error,
            error_code: Some(code),
            error_message: Some(message),
            metadata,
            variant_index: None,
        }
    }

    /// Checks the value against the type a typed call asked for, turning a mismatch into
    /// `ERROR`/`TYPE_MISMATCH`. Code defaults (disabled, or no variant) are not checked.
    pub fn check_type(self, expected: ValueType) -> Self {
        match self.value {
            Some(v) if !expected.admits(v) => {
                let metadata = self.metadata;
                Resolution::error(
                    ErrorCode::TypeMismatch,
                    Cow::Owned(format!(
                        "expected {expected:?}, the flag's value is {}",
                        json_kind(v)
                    )),
                    metadata,
                )
            }
            _ => self,
        }
    }

    /// Index of the variant served in [`FlagSet::variants`](super::FlagSet::variants) order,
    /// so that callers can keep per-variant tables (routing, metric handles) and skip a
    /// lookup by name.
    #[inline]
    pub fn variant_index(&self) -> Option<u32> {
        self.variant_index
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON `sluice eval` prints: `{value, variant, reason, errorCode, errorMessage?}`
/// (`value`, `variant` and `errorCode` are null when absent).
pub fn resolution_json(r: &Resolution<'_>) -> Value {
    let mut m = Map::new();
    m.insert("value".into(), r.value.cloned().unwrap_or(Value::Null));
    m.insert(
        "variant".into(),
        r.variant.map_or(Value::Null, |v| Value::String(v.into())),
    );
    m.insert("reason".into(), Value::String(r.reason.as_str().into()));
    m.insert(
        "errorCode".into(),
        r.error_code
            .map_or(Value::Null, |c| Value::String(c.as_str().into())),
    );
    if let Some(msg) = &r.error_message {
        m.insert("errorMessage".into(), Value::String(msg.to_string()));
    }
    Value::Object(m)
}
