//! The local HTTP API (SPEC.md §5): `check_gate`, `get_config`,
//! `entities`, `healthz`. Evaluations read the current snapshot without
//! locks; every error is a JSON body `{"error": {"code", "message"}}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
}

/// The router of the agent's API.
pub(crate) fn router(state: Http) -> Router {
    Router::new()
        .route("/v1/check_gate", post(check_gate))
        .route("/v1/get_config", post(get_config))
        .route("/v1/entities", get(entities))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(state)
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
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

/// Reads and parses a JSON body, refusing oversized ones.
async fn body<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, Response> {
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| invalid(format!("body is larger than {limit} bytes (or unreadable)")))?;
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

async fn check_gate(State(h): State<Http>, req: Request) -> Response {
    let r: CheckGateRequest = match body(req, h.max_body_bytes).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let served = h.shared.served.load();
    let stale = h.shared.stale();
    let key = (EntityKind::Gate, r.gate.to_string());
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
    match served.entities.get(&key) {
        Some(state) => respond(state.evaluate(&r.user, &h.shared.context)),
        None => respond(unknown_answer(EntityKind::Gate)),
    }
}

async fn get_config(State(h): State<Http>, req: Request) -> Response {
    let r: GetConfigRequest = match body(req, h.max_body_bytes).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let served = h.shared.served.load();
    let stale = h.shared.stale();
    let key = (EntityKind::Config, r.config.to_string());
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
    match served.entities.get(&key) {
        Some(state) => respond(state.evaluate(&r.user, &h.shared.context)),
        None => respond(unknown_answer(EntityKind::Config)),
    }
}

async fn entities(State(h): State<Http>) -> Response {
    let served = h.shared.served.load();
    let mut rows: Vec<EntityView> = served
        .entities
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
            healthy: s.healthy.load(Ordering::Relaxed),
            last_sync_ms: s.last_sync(),
            stale: s.stale(),
        },
    )
}
