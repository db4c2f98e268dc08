//! The local HTTP API (SPEC.md §5): `check_gate`, `get_config`,
//! `entities`, `healthz`. Evaluations read the current snapshot without
//! locks; every error is a JSON body `{"error": {"code", "message"}}`:
//! unknown paths (404), wrong methods (405, with `Allow`), bodies too
//! large (413) or too slow (408), malformed ones (400). The body is read as
//! JSON whatever its `Content-Type` says (`curl -d` sends a form type), so
//! there is no 415. Only what hyper answers before a request reaches the
//! router (a head it cannot parse, 400; one over the buffer, 431) has no
//! body. Connection limits and header timeouts are in `serve.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use phasegate_eval::{Answer, Value, unknown_answer};
use phasegate_proto::{
    ApiError, CheckGateRequest, CheckGateResponse, EntityKind, EntityView, ErrorCode,
    GetConfigRequest, GetConfigResponse, Healthz, HttpError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::served::Shared;

#[derive(Clone)]
pub(crate) struct Http {
    pub(crate) shared: Arc<Shared>,
    pub(crate) max_body_bytes: usize,
    /// How long a client may take to send a body.
    pub(crate) body_read_timeout: Duration,
}

/// The router of the agent's API.
pub(crate) fn router(state: Http) -> Router {
    Router::new()
        .route("/v1/check_gate", post(check_gate))
        .route("/v1/get_config", post(get_config))
        .route("/v1/entities", get(entities))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        // Must follow the routes: it is set on each of them.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        // Not reachable with the types served; still an envelope.
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"error": {"code": "internal", "message": e.to_string()}})
                .to_string(),
        )
            .into_response(),
    }
}

fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    json(
        status,
        &HttpError {
            error: ApiError::new(code, message),
        },
    )
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, ErrorCode::Invalid, message)
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint; see /v1/check_gate, /v1/get_config, /v1/entities, /healthz",
    )
}

async fn method_not_allowed(req: Request) -> Response {
    // axum adds the `Allow` header to what this returns.
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::Invalid,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
}

/// An error after which the rest of the body is not read: the connection
/// is closed rather than drained for the next request.
fn closing(status: StatusCode, message: String) -> Response {
    let mut r = error(status, ErrorCode::Invalid, message);
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// Reads and parses a JSON body, refusing oversized ones (413, at once
/// when `Content-Length` says so) and slow ones (408).
async fn body<T: DeserializeOwned>(req: Request, h: &Http) -> Result<T, Response> {
    let limit = h.max_body_bytes;
    let too_large = || {
        closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = Limited::new(req.into_body(), limit).collect();
    let bytes: Bytes = match tokio::time::timeout(h.body_read_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(closing(
                StatusCode::BAD_REQUEST,
                format!("unreadable body: {e}"),
            ));
        }
        Err(_) => {
            return Err(closing(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "body not received within {} ms",
                    h.body_read_timeout.as_millis()
                ),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("malformed request: {e}")))
}

fn answer_parts<'a>(
    a: &Answer<'a>,
) -> (
    u64,
    String,
    Option<phasegate_proto::TriggerId>,
    Option<phasegate_proto::PhaseId>,
) {
    (
        a.version,
        a.reason.to_string(),
        a.trigger_id.cloned(),
        a.phase_id.cloned(),
    )
}

/// Evaluates `name` for `user` against the snapshot, and counts it.
fn evaluate<'a>(
    served: &'a crate::served::Served,
    shared: &Shared,
    kind: EntityKind,
    name: &str,
    user: &phasegate_proto::User,
) -> Answer<'a> {
    let answer = match served.get(kind, name) {
        Some(state) => state.evaluate(user, &shared.context),
        None => unknown_answer(kind),
    };
    shared.count(kind, &answer);
    answer
}

async fn check_gate(State(h): State<Http>, req: Request) -> Response {
    let r: CheckGateRequest = match body(req, &h).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let served = h.shared.served.load();
    let stale = h.shared.stale();
    let respond = |a: Answer<'_>| {
        let (version, reason, trigger_id, phase_id) = answer_parts(&a);
        json(
            StatusCode::OK,
            &CheckGateResponse {
                gate: r.gate.clone(),
                value: matches!(a.value, Value::Gate(true)),
                version,
                reason,
                trigger_id,
                phase_id,
                stale,
            },
        )
    };
    respond(evaluate(
        &served,
        &h.shared,
        EntityKind::Gate,
        r.gate.as_str(),
        &r.user,
    ))
}

async fn get_config(State(h): State<Http>, req: Request) -> Response {
    let r: GetConfigRequest = match body(req, &h).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let served = h.shared.served.load();
    let stale = h.shared.stale();
    let respond = |a: Answer<'_>| {
        let (version, reason, trigger_id, phase_id) = answer_parts(&a);
        let value = match a.value {
            Value::Config(m) => m.clone(),
            Value::Gate(_) => phasegate_proto::ValueMap::new(),
        };
        json(
            StatusCode::OK,
            &GetConfigResponse {
                config: r.config.clone(),
                value,
                version,
                reason,
                trigger_id,
                phase_id,
                stale,
            },
        )
    };
    respond(evaluate(
        &served,
        &h.shared,
        EntityKind::Config,
        r.config.as_str(),
        &r.user,
    ))
}

async fn entities(State(h): State<Http>) -> Response {
    let served = h.shared.served.load();
    let mut rows: Vec<EntityView> = served
        .values()
        .filter_map(|s| {
            let rollout = s.rollout();
            // An entity absent everywhere (deleted, or created through a
            // pipeline that has not reached this segment) is not listed.
            let name = s
                .base()
                .map(|b| b.name().clone())
                .or_else(|| rollout.map(|r| r.snapshot().name().clone()))?;
            Some(EntityView {
                kind: s.kind(),
                name,
                base_version: s.base().map_or(0, |b| b.version()),
                rollout_version: rollout.map(|r| r.snapshot().version()),
                trigger_id: rollout.map(|r| r.trigger_id().clone()),
                phase_id: rollout.map(|r| r.phase_id().clone()),
            })
        })
        .collect();
    rows.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    json(StatusCode::OK, &rows)
}

async fn healthz(State(h): State<Http>) -> Response {
    let s = &h.shared;
    json(
        StatusCode::OK,
        &Healthz {
            segment: s.segment.clone(),
            agent_id: s.agent_id.clone(),
            connected: s.connected.load(Ordering::Relaxed),
            healthy: s.healthy.load(Ordering::Relaxed) && !s.analysis.failing(),
            last_sync_ms: s.last_sync(),
            stale: s.stale(),
            blocked: s.blocked.load().as_ref().clone(),
            analyses: s.analysis.statuses(),
        },
    )
}

/// Prometheus text of the agent.
async fn metrics(State(h): State<Http>) -> Response {
    use phasegate_telemetry::metrics::write_sample;
    let s = &h.shared;
    let mut out = String::new();
    let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let seg = s.segment.as_str();
    let id = s.agent_id.as_str();
    out.push_str("# HELP phasegate_agent_evaluations_total evaluations answered, by kind, reason and whether the rollout snapshot answered\n# TYPE phasegate_agent_evaluations_total counter\n");
    for (k, kind) in ["gate", "config"].iter().enumerate() {
        for (r, reason) in crate::served::REASONS.iter().enumerate() {
            for (src, source) in ["base", "rollout"].iter().enumerate() {
                #[allow(clippy::cast_precision_loss)] // a counter read as f64 for the text format
                let v = s.evaluations[k][r][src].load(Ordering::Relaxed) as f64;
                write_sample(
                    &mut out,
                    "phasegate_agent_evaluations_total",
                    &l(&[
                        ("segment", seg),
                        ("kind", kind),
                        ("reason", reason),
                        ("source", source),
                    ]),
                    v,
                );
            }
        }
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let (open, refused) = (
        s.http.open.load(Ordering::Relaxed) as f64,
        s.http.refused.load(Ordering::Relaxed) as f64,
    );
    out.push_str("# HELP phasegate_agent_http_connections_refused_total HTTP connections closed at accept because max_connections were open\n# TYPE phasegate_agent_http_connections_refused_total counter\n");
    write_sample(
        &mut out,
        "phasegate_agent_http_connections_refused_total",
        &l(&[("segment", seg), ("agent_id", id)]),
        refused,
    );
    let gauges: [(&str, &str, f64); 6] = [
        (
            "phasegate_agent_http_connections",
            "HTTP connections open now",
            open,
        ),
        (
            "phasegate_agent_stale",
            "1 while not synchronised for longer than the bound",
            f64::from(u8::from(s.stale())),
        ),
        (
            "phasegate_agent_healthy",
            "1 while every health probe passes",
            f64::from(u8::from(s.healthy.load(Ordering::Relaxed))),
        ),
        (
            "phasegate_agent_connected",
            "1 while connected to NATS",
            f64::from(u8::from(s.connected.load(Ordering::Relaxed))),
        ),
        (
            "phasegate_agent_applied_revision",
            "the desired-state revision applied and persisted",
            #[allow(clippy::cast_precision_loss)] // revisions far below 2^52
            {
                s.applied_revision.load(Ordering::Relaxed) as f64
            },
        ),
        (
            "phasegate_agent_last_sync_age_seconds",
            "seconds since the agent last knew itself in sync (-1: never)",
            s.last_sync().map_or(-1.0, |t| {
                #[allow(clippy::cast_precision_loss)] // milliseconds far below 2^52
                let age = crate::served::now_ms().saturating_sub(t) as f64 / 1000.0;
                age
            }),
        ),
    ];
    for (name, help, v) in gauges {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        write_sample(&mut out, name, &l(&[("segment", seg), ("agent_id", id)]), v);
    }
    s.analysis.write_metrics(&mut out, seg);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
