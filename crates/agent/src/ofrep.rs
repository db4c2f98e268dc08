//! The OpenFeature Remote Evaluation Protocol (OFREP) on the agent's
//! listener (SPEC.md §5 *OpenFeature*), so that any OpenFeature SDK's stock
//! OFREP provider evaluates phasegate gates and configs with no custom code.
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}`: one flag. `key` is
//!   `gate:NAME`, `config:NAME`, or a bare `NAME` that only one kind has.
//! - `POST /ofrep/v1/evaluate/flags`: every entity of the segment, with a
//!   weak `ETag` (a digest of the answer itself, so it changes whenever any
//!   answer could, and differs between contexts) and `If-None-Match` → 304.
//!   It advertises the push endpoint of [`crate::sse`] in `eventStreams`.
//! - Browsers are served CORS: preflights answered, `ETag` exposed.
//!
//! Evaluation is the agent's own: the same snapshot and the same
//! [`CompiledState::evaluate`] as `/v1/check_gate`, so a unit gets the same
//! answer whichever way it asks. Status codes, error codes and body shapes
//! are those of the OFREP OpenAPI document (open-feature/protocol,
//! `service/openapi.yaml`): 400 with `PARSE_ERROR`, `INVALID_CONTEXT` or
//! `GENERAL`, 404 with `FLAG_NOT_FOUND`, every error body carrying
//! `errorDetails` (the Python provider reads it unconditionally).
//!
//! The mapping is pure ([`user_of`], [`resolve`], [`evaluation`]) and unit
//! tested here; the handlers only read the body and write the answer.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use phasegate_eval::{Answer, CompiledState, Reason, Value};
use phasegate_proto::{EntityKind, PhaseId, TriggerId, User, ValueMap};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::http::{ApiState, body_bytes, json};
use crate::served::Served;

/// The path of single-flag evaluation, without the key.
pub(crate) const FLAGS_PATH: &str = "/ofrep/v1/evaluate/flags";

/// The router of the OFREP endpoints, the push endpoint included.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route(FLAGS_PATH, post(bulk).options(preflight))
        .route(
            &format!("{FLAGS_PATH}/{{key}}"),
            post(single).options(preflight),
        )
        .merge(crate::sse::routes())
}

/// An OpenFeature error code (OFREP `errorCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ErrorCode {
    /// The body is not a JSON object.
    ParseError,
    /// `context` is not an object.
    InvalidContext,
    /// No entity answers to the key.
    FlagNotFound,
    /// Anything else: a bare key both kinds have.
    General,
}

/// Why an evaluation could not be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The OpenFeature code.
    pub(crate) code: ErrorCode,
    /// For people and logs.
    pub(crate) details: String,
}

impl Failure {
    fn new(code: ErrorCode, details: impl Into<String>) -> Self {
        Self {
            code,
            details: details.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::FlagNotFound => StatusCode::NOT_FOUND,
            ErrorCode::ParseError | ErrorCode::InvalidContext | ErrorCode::General => {
                StatusCode::BAD_REQUEST
            }
        }
    }
}

/// The body of an OFREP error: `evaluationFailure` / `flagNotFound` with
/// the key, `bulkEvaluationFailure` without.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FailureBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    error_code: ErrorCode,
    error_details: &'a str,
}

fn failure(key: Option<&str>, f: &Failure) -> Response {
    cors(json(
        f.status(),
        &FailureBody {
            key,
            error_code: f.code,
            error_details: &f.details,
        },
    ))
}

/// The evaluation context of a request, as phasegate's [`User`]
/// (SPEC.md §5): `targetingKey` → `user_id`; `email`, `country`,
/// `app_version` (or `appVersion`) → the same fields; every other
/// attribute → `custom`. An absent or null context is an empty user.
///
/// # Errors
///
/// `PARSE_ERROR` when the body is not a JSON object, `INVALID_CONTEXT`
/// when `context` is not an object.
pub(crate) fn user_of(body: &[u8]) -> Result<User, Failure> {
    // An empty body is an empty request: what `curl -X POST` sends.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(User::default());
    }
    let request: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Failure::new(ErrorCode::ParseError, format!("malformed JSON body: {e}")))?;
    let serde_json::Value::Object(mut request) = request else {
        return Err(Failure::new(
            ErrorCode::ParseError,
            "the body must be a JSON object with an optional \"context\"",
        ));
    };
    let context = match request.remove("context") {
        None | Some(serde_json::Value::Null) => return Ok(User::default()),
        Some(serde_json::Value::Object(c)) => c,
        Some(other) => {
            return Err(Failure::new(
                ErrorCode::InvalidContext,
                format!("\"context\" must be an object, got {}", json_type(&other)),
            ));
        }
    };
    let mut user = User::default();
    let mut custom = ValueMap::new();
    let mut camel_version = None;
    for (name, value) in context {
        match name.as_str() {
            "targetingKey" => user.user_id = value,
            "email" => user.email = value,
            "country" => user.country = value,
            "app_version" => user.app_version = value,
            "appVersion" => camel_version = Some(value),
            _ => {
                custom.insert(name, value);
            }
        }
    }
    // `app_version` wins when both spellings are given.
    if user.app_version.is_null()
        && let Some(v) = camel_version
    {
        user.app_version = v;
    }
    if !custom.is_empty() {
        user.custom = serde_json::Value::Object(custom);
    }
    Ok(user)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// True when the segment serves the entity to someone: a base, or a
/// rollout that has reached the segment.
fn exists(state: &CompiledState) -> bool {
    state.base().is_some() || state.rollout().is_some()
}

/// Finds the entity a flag key names.
///
/// # Errors
///
/// `FLAG_NOT_FOUND` when none does, `GENERAL` for a bare name both kinds
/// have.
pub(crate) fn resolve<'s, 'k>(
    served: &'s Served,
    key: &'k str,
) -> Result<(EntityKind, &'k str, &'s Arc<CompiledState>), Failure> {
    let found = |kind: EntityKind, name: &'k str| {
        served
            .get(kind, name)
            .filter(|s| exists(s))
            .map(|s| (kind, name, s))
    };
    let not_found = || Failure::new(ErrorCode::FlagNotFound, format!("no flag {key:?} here"));
    if let Some(name) = key.strip_prefix("gate:") {
        return found(EntityKind::Gate, name).ok_or_else(not_found);
    }
    if let Some(name) = key.strip_prefix("config:") {
        return found(EntityKind::Config, name).ok_or_else(not_found);
    }
    match (found(EntityKind::Gate, key), found(EntityKind::Config, key)) {
        (Some(g), None) => Ok(g),
        (None, Some(c)) => Ok(c),
        (None, None) => Err(not_found()),
        (Some(_), Some(_)) => Err(Failure::new(
            ErrorCode::General,
            format!(
                "{key:?} is both a gate and a config: ask for \"gate:{key}\" or \"config:{key}\""
            ),
        )),
    }
}

/// An OFREP flag value: a gate's bool, a config's object.
#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub(crate) enum FlagValue<'a> {
    /// A gate.
    Bool(bool),
    /// A config.
    Object(&'a ValueMap),
}

/// The `metadata` of an evaluation: no nulls (OFREP metadata values are
/// booleans, strings or numbers).
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Metadata<'a> {
    /// The version of the spec that answered.
    pub(crate) version: u64,
    /// The segment: OpenFeature's flag set.
    pub(crate) flag_set_id: &'a str,
    /// The rule that decided, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<&'a str>,
    /// The trigger, when the rollout's snapshot answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) trigger_id: Option<&'a TriggerId>,
    /// The phase, when the rollout's snapshot answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) phase_id: Option<&'a PhaseId>,
    /// The agent has not synchronised for longer than its bound.
    pub(crate) stale: bool,
}

/// One successful evaluation (OFREP `evaluationSuccess`).
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Evaluation<'a> {
    /// The key, as asked (single) or as listed (bulk).
    pub(crate) key: &'a str,
    /// The value.
    pub(crate) value: FlagValue<'a>,
    /// `DISABLED`, `DEFAULT`, `TARGETING_MATCH` or `SPLIT`.
    pub(crate) reason: &'static str,
    /// `on`/`off` for gates, `v<version>` for configs.
    pub(crate) variant: Variant,
    /// The rest, by name.
    pub(crate) metadata: Metadata<'a>,
}

/// A variant, written without allocating for gates.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Variant {
    /// A gate that is on.
    On,
    /// A gate that is off.
    Off,
    /// A config, by the version that answered.
    Version(u64),
}

impl Variant {
    /// The variant of an answer.
    pub(crate) fn of(answer: &Answer<'_>) -> Self {
        match answer.value {
            Value::Gate(true) => Self::On,
            Value::Gate(false) => Self::Off,
            Value::Config(_) => Self::Version(answer.version),
        }
    }
}

impl Serialize for Variant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::On => s.serialize_str("on"),
            Self::Off => s.serialize_str("off"),
            Self::Version(v) => s.collect_str(&format_args!("v{v}")),
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::On => f.write_str("on"),
            Self::Off => f.write_str("off"),
            Self::Version(v) => write!(f, "v{v}"),
        }
    }
}

/// The OpenFeature reason of an answer (SPEC.md §5): `DISABLED`,
/// `DEFAULT`, `TARGETING_MATCH` when a rule at 100 % of the base decided,
/// `SPLIT` when a rule below 100 % or the rollout's snapshot did. `None`
/// for the unknown-entity answer, which OFREP answers as not found.
pub(crate) fn reason(state: &CompiledState, answer: &Answer<'_>) -> Option<&'static str> {
    match answer.reason {
        Reason::Disabled => Some("DISABLED"),
        Reason::Default => Some("DEFAULT"),
        Reason::Unknown => None,
        Reason::Rule(_) if answer.trigger_id.is_some() => Some("SPLIT"),
        Reason::Rule(id) => {
            let full = state
                .base()
                .and_then(|b| b.rule_percentage(id))
                .is_some_and(|p| p >= 100.0);
            Some(if full { "TARGETING_MATCH" } else { "SPLIT" })
        }
    }
}

/// The OFREP evaluation of `answer`, which `state` gave for the flag
/// listed as `key`; `None` when the answer is the unknown-entity one (an
/// entity whose rollout has not reached this unit yet: not served to it).
pub(crate) fn evaluation<'a>(
    key: &'a str,
    state: &CompiledState,
    answer: &Answer<'a>,
    segment: &'a str,
    stale: bool,
) -> Option<Evaluation<'a>> {
    let reason = reason(state, answer)?;
    let value = match answer.value {
        Value::Gate(b) => FlagValue::Bool(b),
        Value::Config(m) => FlagValue::Object(m),
    };
    let variant = Variant::of(answer);
    let rule = match answer.reason {
        Reason::Rule(id) => Some(id),
        _ => None,
    };
    Some(Evaluation {
        key,
        value,
        reason,
        variant,
        metadata: Metadata {
            version: answer.version,
            flag_set_id: segment,
            rule,
            trigger_id: answer.trigger_id,
            phase_id: answer.phase_id,
            stale,
        },
    })
}

/// CORS for browsers: any origin (the API carries no cookies), and the
/// `ETag` readable by scripts so the web provider can revalidate.
pub(crate) fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("ETag"),
    );
    r
}

/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Answers a CORS preflight: the methods of the OFREP endpoints and
/// whatever headers the browser asks for (a provider may add
/// `Authorization` or an API key header).
pub(crate) async fn preflight(headers: HeaderMap) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let asked = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("Content-Type, If-None-Match, Last-Event-ID"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    cors(r)
}

/// Traces an evaluation for a caller that sent W3C trace context: a
/// `feature_flag.evaluation` span under the caller's span, with the
/// attributes of the OpenTelemetry feature-flag semantic conventions.
/// Requests without `traceparent` pay one header lookup, nothing more;
/// the span holds no event, so it is exported (when an OTLP endpoint is
/// set) but never logged.
fn trace_evaluation(traceparent: Option<&HeaderValue>, key: &str, e: &Evaluation<'_>) {
    let Some(tp) = traceparent.and_then(|v| v.to_str().ok()) else {
        return;
    };
    let span = tracing::info_span!(
        "feature_flag.evaluation",
        otel.name = "feature_flag.evaluation",
        feature_flag.key = key,
        feature_flag.result.variant = %e.variant,
        feature_flag.result.reason = e.reason,
        feature_flag.provider.name = "phasegate",
        feature_flag.set.id = e.metadata.flag_set_id,
        feature_flag.version = e.metadata.version,
    );
    phasegate_bus::trace::continue_from_traceparent(&span, Some(tp));
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
async fn single(State(h): State<ApiState>, Path(key): Path<String>, req: Request) -> Response {
    let traceparent = req.headers().get("traceparent").cloned();
    let bytes = match body_bytes(req, &h).await {
        Ok(b) => b,
        Err(r) => return cors(r),
    };
    let user = match user_of(&bytes) {
        Ok(u) => u,
        Err(f) => return failure(Some(&key), &f),
    };
    let served = h.shared.served.load();
    let (kind, name, state) = match resolve(&served, &key) {
        Ok(found) => found,
        Err(f) => return failure(Some(&key), &f),
    };
    let answer = state.evaluate(&user, &h.shared.context);
    h.shared.count(kind, &answer);
    crate::flag_metrics::record(&h.shared.flags, kind, name, state, &answer);
    let segment = h.shared.segment.as_str();
    match evaluation(&key, state, &answer, segment, h.shared.stale()) {
        Some(e) => {
            trace_evaluation(traceparent.as_ref(), &key, &e);
            cors(json(StatusCode::OK, &e))
        }
        None => failure(
            Some(&key),
            &Failure::new(
                ErrorCode::FlagNotFound,
                format!("flag {key:?} is not served to this unit yet"),
            ),
        ),
    }
}

/// A push endpoint advertised by the bulk answer (ADR-0008 of OFREP).
#[derive(Debug, Serialize)]
struct EventStream {
    #[serde(rename = "type")]
    kind: &'static str,
    url: String,
}

/// The bulk answer (OFREP `bulkEvaluationSuccess`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Bulk<'a> {
    flags: Vec<Evaluation<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    event_streams: Vec<EventStream>,
}

/// The keys of the bulk answer: bare names, prefixed only where a name
/// exists as both kinds; sorted, so equal answers are equal bytes.
fn listed(served: &Served) -> Vec<Listed<'_>> {
    let mut keys: Vec<Listed<'_>> = served
        .iter()
        .filter(|(_, _, s)| exists(s))
        .map(|(kind, name, s)| {
            let other = match kind {
                EntityKind::Gate => EntityKind::Config,
                EntityKind::Config => EntityKind::Gate,
            };
            let both = served.get(other, name).is_some_and(|o| exists(o));
            let key = if both {
                format!("{kind}:{name}")
            } else {
                name.to_owned()
            };
            Listed {
                key,
                kind,
                name,
                state: s,
            }
        })
        .collect();
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    keys
}

/// One entity of the bulk answer.
struct Listed<'s> {
    key: String,
    kind: EntityKind,
    name: &'s str,
    state: &'s Arc<CompiledState>,
}

/// The weak entity tag of a bulk answer: a digest of its bytes, so it
/// changes whenever any answer does (for this context) and never else.
pub(crate) fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

/// True when `If-None-Match` names `tag` (weak comparison, as RFC 9110
/// wants for `If-None-Match`) or is `*`.
pub(crate) fn none_match(header: Option<&HeaderValue>, tag: &str) -> bool {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(tag);
    value
        .split(',')
        .any(|t| t.trim() == "*" || opaque(t) == ours)
}

/// The URL of the push endpoint as this client reached the agent; `None`
/// without a `Host` header (then no stream is advertised).
fn events_url(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    // Behind a TLS-terminating proxy the client's scheme is https.
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    Some(format!("{scheme}://{host}{}", crate::sse::EVENTS_PATH))
}

/// `POST /ofrep/v1/evaluate/flags`.
async fn bulk(State(h): State<ApiState>, req: Request) -> Response {
    let headers = req.headers().clone();
    let bytes = match body_bytes(req, &h).await {
        Ok(b) => b,
        Err(r) => return cors(r),
    };
    let user = match user_of(&bytes) {
        Ok(u) => u,
        Err(f) => return failure(None, &f),
    };
    let served = h.shared.served.load();
    let keys = listed(&served);
    let segment = h.shared.segment.as_str();
    let stale = h.shared.stale();
    let answers: Vec<_> = keys
        .iter()
        .map(|l| {
            let answer = l.state.evaluate(&user, &h.shared.context);
            h.shared.count(l.kind, &answer);
            crate::flag_metrics::record(&h.shared.flags, l.kind, l.name, l.state, &answer);
            (l.key.as_str(), l.state, answer)
        })
        .collect();
    let flags = answers
        .iter()
        .filter_map(|(key, state, answer)| evaluation(key, state, answer, segment, stale))
        .collect();
    let body = Bulk {
        flags,
        event_streams: events_url(&headers)
            .map(|url| EventStream { kind: "sse", url })
            .into_iter()
            .collect(),
    };
    let bytes = match serde_json::to_vec(&body) {
        Ok(b) => b,
        Err(e) => return failure(None, &Failure::new(ErrorCode::General, e.to_string())),
    };
    let tag = etag(&bytes);
    let mut r = if none_match(headers.get(header::IF_NONE_MATCH), &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    cors(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phasegate_eval::AgentContext;
    use phasegate_proto::{EntitySpec, EntityState, RolloutView};
    use serde_json::json;

    fn spec(v: serde_json::Value) -> EntitySpec {
        serde_json::from_value(v).unwrap()
    }

    fn state(kind: EntityKind, base: serde_json::Value) -> Arc<CompiledState> {
        let st = EntityState {
            base: Some(spec(base)),
            rollout: None,
        };
        Arc::new(CompiledState::new(kind, &st).unwrap())
    }

    fn gate() -> Arc<CompiledState> {
        state(
            EntityKind::Gate,
            json!({"kind": "gate", "name": "checkout", "version": 4, "rules": [
                {"id": "staff", "pass_percentage": 100, "conditions": [{"field": "email", "op": "str_contains_any", "values": ["@corp"]}]},
                {"id": "beta", "pass_percentage": 50, "conditions": [{"field": "custom.plan", "op": "any", "values": ["beta"]}]},
            ]}),
        )
    }

    fn user(ctx: serde_json::Value) -> User {
        user_of(json!({ "context": ctx }).to_string().as_bytes()).unwrap()
    }

    fn eval_json(key: &str, s: &CompiledState, u: &User) -> serde_json::Value {
        let agent = AgentContext::new("prod-eu", None);
        let a = s.evaluate(u, &agent);
        match evaluation(key, s, &a, "prod-eu", false) {
            Some(e) => serde_json::to_value(&e).unwrap(),
            None => serde_json::Value::Null,
        }
    }

    #[test]
    fn context_maps_to_the_user() {
        let u = user(json!({
            "targetingKey": "u-1", "email": "a@corp.io", "country": "FR",
            "appVersion": "2.1", "plan": "beta", "user_id": "ignored-as-custom"
        }));
        assert_eq!(u.user_id, json!("u-1"));
        assert_eq!(u.email, json!("a@corp.io"));
        assert_eq!(u.country, json!("FR"));
        assert_eq!(u.app_version, json!("2.1"));
        assert_eq!(
            u.custom,
            json!({"plan": "beta", "user_id": "ignored-as-custom"})
        );
        // Both spellings: the field's own name wins.
        let u = user(json!({"app_version": "3", "appVersion": "4"}));
        assert_eq!(u.app_version, json!("3"));
        assert_eq!(u.custom, serde_json::Value::Null);
    }

    #[test]
    fn malformed_bodies_and_contexts_are_refused_by_code() {
        let code = |b: &[u8]| user_of(b).unwrap_err().code;
        assert_eq!(code(b"{"), ErrorCode::ParseError);
        assert_eq!(code(b"[1]"), ErrorCode::ParseError);
        assert_eq!(code(b"\"x\""), ErrorCode::ParseError);
        assert_eq!(code(br#"{"context": []}"#), ErrorCode::InvalidContext);
        assert_eq!(code(br#"{"context": "u-1"}"#), ErrorCode::InvalidContext);
        assert_eq!(code(br#"{"context": 3}"#), ErrorCode::InvalidContext);
        assert_eq!(user_of(b"").unwrap(), User::default());
        assert_eq!(user_of(b"{}").unwrap(), User::default());
        assert_eq!(user_of(br#"{"context": null}"#).unwrap(), User::default());
        let f = Failure::new(ErrorCode::FlagNotFound, "x");
        assert_eq!(f.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            serde_json::to_value(ErrorCode::InvalidContext).unwrap(),
            json!("INVALID_CONTEXT")
        );
    }

    #[test]
    fn keys_resolve_by_kind_and_bare_names_only_when_unambiguous() {
        let mut served = Served::default();
        served.insert(EntityKind::Gate, "checkout".into(), gate());
        served.insert(
            EntityKind::Config,
            "limits".into(),
            state(
                EntityKind::Config,
                json!({"kind": "config", "name": "limits", "version": 2}),
            ),
        );
        served.insert(
            EntityKind::Gate,
            "limits".into(),
            state(
                EntityKind::Gate,
                json!({"kind": "gate", "name": "limits", "version": 1}),
            ),
        );
        // A key whose entity is absent everywhere counts as missing.
        served.insert(
            EntityKind::Config,
            "checkout".into(),
            Arc::new(CompiledState::new(EntityKind::Config, &EntityState::default()).unwrap()),
        );
        assert_eq!(resolve(&served, "checkout").unwrap().0, EntityKind::Gate);
        assert_eq!(resolve(&served, "gate:checkout").unwrap().1, "checkout");
        assert_eq!(
            resolve(&served, "gate:checkout").unwrap().0,
            EntityKind::Gate
        );
        assert_eq!(
            resolve(&served, "config:checkout").unwrap_err().code,
            ErrorCode::FlagNotFound
        );
        assert_eq!(
            resolve(&served, "limits").unwrap_err().code,
            ErrorCode::General
        );
        assert_eq!(
            resolve(&served, "config:limits").unwrap().0,
            EntityKind::Config
        );
        assert_eq!(
            resolve(&served, "nope").unwrap_err().code,
            ErrorCode::FlagNotFound
        );
        let keys: Vec<String> = listed(&served).into_iter().map(|l| l.key).collect();
        assert_eq!(keys, ["checkout", "config:limits", "gate:limits"]);
    }

    #[test]
    fn reasons_variants_and_metadata_follow_the_spec() {
        let g = gate();
        // A rule at 100 % of the base: a targeting match.
        assert_eq!(
            eval_json(
                "checkout",
                &g,
                &user(json!({"targetingKey": "u", "email": "a@corp.io"}))
            ),
            json!({"key": "checkout", "value": true, "reason": "TARGETING_MATCH", "variant": "on",
                   "metadata": {"version": 4, "flagSetId": "prod-eu", "rule": "staff", "stale": false}})
        );
        // A rule below 100 %: a split, whichever side the unit falls on.
        let e = eval_json(
            "checkout",
            &g,
            &user(json!({"targetingKey": "u-7", "plan": "beta"})),
        );
        assert_eq!(e["reason"], "SPLIT");
        assert_eq!(e["metadata"]["rule"], "beta");
        assert_eq!(
            e["variant"],
            if e["value"] == json!(true) {
                "on"
            } else {
                "off"
            }
        );
        // No rule held.
        let e = eval_json("checkout", &g, &user(json!({"targetingKey": "u"})));
        assert_eq!(
            e,
            json!({"key": "checkout", "value": false, "reason": "DEFAULT", "variant": "off",
                   "metadata": {"version": 4, "flagSetId": "prod-eu", "stale": false}})
        );
        // Disabled.
        let off = state(
            EntityKind::Gate,
            json!({"kind": "gate", "name": "x", "version": 9, "enabled": false}),
        );
        assert_eq!(eval_json("x", &off, &User::default())["reason"], "DISABLED");
    }

    #[test]
    fn configs_answer_objects_with_a_version_variant() {
        let c = state(
            EntityKind::Config,
            json!({"kind": "config", "name": "limits", "version": 3,
                   "default_value": {"max": 10},
                   "rules": [{"id": "all", "pass_percentage": 100, "value": {"max": 50}}]}),
        );
        assert_eq!(
            eval_json("config:limits", &c, &User::default()),
            json!({"key": "config:limits", "value": {"max": 50}, "reason": "TARGETING_MATCH",
                   "variant": "v3", "metadata": {"version": 3, "flagSetId": "prod-eu", "rule": "all", "stale": false}})
        );
    }

    #[test]
    fn the_rollout_snapshot_answers_as_a_split_with_its_trigger() {
        let base = spec(json!({"kind": "gate", "name": "g", "version": 1}));
        let snapshot = spec(json!({"kind": "gate", "name": "g", "version": 2,
            "rules": [{"id": "all", "pass_percentage": 100}]}));
        let view: RolloutView = serde_json::from_value(json!({
            "trigger_id": "t-1", "phase_id": "dev", "snapshot": snapshot,
            "rules": [{"conditions": [], "pass_percentage": 100}]
        }))
        .unwrap();
        let st = CompiledState::new(
            EntityKind::Gate,
            &EntityState {
                base: Some(base),
                rollout: Some(view),
            },
        )
        .unwrap();
        assert_eq!(
            eval_json("g", &st, &user(json!({"targetingKey": "u"}))),
            json!({"key": "g", "value": true, "reason": "SPLIT", "variant": "on",
                   "metadata": {"version": 2, "flagSetId": "prod-eu", "rule": "all",
                                "triggerId": "t-1", "phaseId": "dev", "stale": false}})
        );
        // A unit the unknown-entity answer is for is not served the flag.
        let empty = CompiledState::new(EntityKind::Gate, &EntityState::default()).unwrap();
        assert_eq!(
            eval_json("g", &empty, &User::default()),
            serde_json::Value::Null
        );
    }

    #[test]
    fn etags_are_weak_digests_and_if_none_match_compares_weakly() {
        let t = etag(b"{\"flags\":[]}");
        assert!(
            t.starts_with("W/\"") && t.ends_with('"') && t.len() == 28,
            "{t}"
        );
        assert_ne!(t, etag(b"{\"flags\":[1]}"));
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(none_match(Some(&hv(&t)), &t));
        assert!(none_match(Some(&hv(t.trim_start_matches("W/"))), &t));
        assert!(none_match(Some(&hv(&format!("\"other\", {t}"))), &t));
        assert!(none_match(Some(&hv("*")), &t));
        assert!(!none_match(Some(&hv("W/\"other\"")), &t));
        assert!(!none_match(None, &t));
    }
}
