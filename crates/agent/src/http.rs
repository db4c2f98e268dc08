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
use phasegate_telemetry::metrics::write_sample;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::served::Shared;

/// What every handler reads: the snapshot and counters, and the limits
/// on request bodies.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) max_body_bytes: usize,
    /// How long a client may take to send a body.
    pub(crate) body_read_timeout: Duration,
}

/// The router of the agent's API.
pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/check_gate", post(check_gate))
        .route("/v1/get_config", post(get_config))
        .route("/v1/entities", get(entities))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(crate::ofrep::routes())
        // Must follow the routes: it is set on each of them.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
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

pub(crate) fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
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
async fn body<T: DeserializeOwned>(req: Request, api: &ApiState) -> Result<T, Response> {
    let bytes = body_bytes(req, api).await?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("malformed request: {e}")))
}

/// Reads a body whole, under the same limits as [`body`]; what it is made
/// of is the caller's business (OFREP answers malformed bodies its own way).
pub(crate) async fn body_bytes(req: Request, api: &ApiState) -> Result<Bytes, Response> {
    let limit = api.max_body_bytes;
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
    let bytes: Bytes = match tokio::time::timeout(api.body_read_timeout, read).await {
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
                    api.body_read_timeout.as_millis()
                ),
            ));
        }
    };
    Ok(bytes)
}

/// Evaluates `name` for `user` against the current snapshot, counts it,
/// and answers 200 with what `respond` makes of the answer and of whether
/// the agent is stale.
fn evaluate<T: Serialize>(
    api: &ApiState,
    kind: EntityKind,
    name: &str,
    user: &phasegate_proto::User,
    respond: impl FnOnce(&Answer<'_>, bool) -> T,
) -> Response {
    let served = api.shared.served.load();
    let stale = api.shared.stale();
    let answer = match served.get(kind, name) {
        Some(state) => {
            let answer = state.evaluate(user, &api.shared.context);
            crate::flag_metrics::record(&api.shared.flags, kind, name, state, &answer);
            answer
        }
        None => unknown_answer(kind),
    };
    api.shared.count(kind, &answer);
    json(StatusCode::OK, &respond(&answer, stale))
}

async fn check_gate(State(api): State<ApiState>, req: Request) -> Response {
    let r: CheckGateRequest = match body(req, &api).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    evaluate(
        &api,
        EntityKind::Gate,
        r.gate.as_str(),
        &r.user,
        |a, stale| CheckGateResponse {
            gate: r.gate.clone(),
            value: matches!(a.value, Value::Gate(true)),
            version: a.version,
            reason: a.reason.to_string(),
            trigger_id: a.trigger_id.cloned(),
            phase_id: a.phase_id.cloned(),
            stale,
        },
    )
}

async fn get_config(State(api): State<ApiState>, req: Request) -> Response {
    let r: GetConfigRequest = match body(req, &api).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    evaluate(
        &api,
        EntityKind::Config,
        r.config.as_str(),
        &r.user,
        |a, stale| GetConfigResponse {
            config: r.config.clone(),
            value: match a.value {
                Value::Config(m) => m.clone(),
                Value::Gate(_) => phasegate_proto::ValueMap::new(),
            },
            version: a.version,
            reason: a.reason.to_string(),
            trigger_id: a.trigger_id.cloned(),
            phase_id: a.phase_id.cloned(),
            stale,
        },
    )
}

async fn entities(State(api): State<ApiState>) -> Response {
    let served = api.shared.served.load();
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

async fn healthz(State(api): State<ApiState>) -> Response {
    let s = &api.shared;
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
async fn metrics(State(api): State<ApiState>) -> Response {
    let s = &api.shared;
    let mut out = String::new();
    write_evaluations(&mut out, s);
    let agent = labels(&[
        ("segment", s.segment.as_str()),
        ("agent_id", s.agent_id.as_str()),
    ]);
    out.push_str("# HELP phasegate_agent_http_connections_refused_total HTTP connections closed at accept because max_connections were open\n# TYPE phasegate_agent_http_connections_refused_total counter\n");
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let refused = s.http.refused.load(Ordering::Relaxed) as f64;
    write_sample(
        &mut out,
        "phasegate_agent_http_connections_refused_total",
        &agent,
        refused,
    );
    for (name, help, v) in gauges(s) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        write_sample(&mut out, name, &agent, v);
    }
    s.flags.render(&mut out, s.segment.as_str());
    phasegate_telemetry::metrics::write_build_info(&mut out, "agent");
    s.analysis.write_metrics(&mut out, s.segment.as_str());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The evaluation counters, one sample per kind × reason × source.
fn write_evaluations(out: &mut String, s: &Shared) {
    out.push_str("# HELP phasegate_agent_evaluations_total evaluations answered, by kind, reason and whether the rollout snapshot answered\n# TYPE phasegate_agent_evaluations_total counter\n");
    for kind in EntityKind::ALL {
        let k = crate::served::kind_index(*kind);
        for (r, reason) in crate::served::REASONS.iter().enumerate() {
            for (src, source) in ["base", "rollout"].iter().enumerate() {
                #[allow(clippy::cast_precision_loss)] // a counter read as f64 for the text format
                let v = s.evaluations[k][r][src].load(Ordering::Relaxed) as f64;
                write_sample(
                    out,
                    "phasegate_agent_evaluations_total",
                    &labels(&[
                        ("segment", s.segment.as_str()),
                        ("kind", kind.as_str()),
                        ("reason", reason),
                        ("source", source),
                    ]),
                    v,
                );
            }
        }
    }
}

/// The gauges: name, help, value.
fn gauges(s: &Shared) -> [(&'static str, &'static str, f64); 7] {
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let open = s.http.open.load(Ordering::Relaxed) as f64;
    #[allow(clippy::cast_precision_loss)] // at most max_event_streams
    let streams = s.push.open() as f64;
    [
        (
            "phasegate_agent_http_connections",
            "HTTP connections open now",
            open,
        ),
        (
            "phasegate_agent_event_streams",
            "OFREP event streams (server-sent events) open now",
            streams,
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
            "phasegate_agent_last_sync_timestamp_seconds",
            "Unix time the agent last knew itself in sync (0: never)",
            s.last_sync().map_or(0.0, |t| {
                #[allow(clippy::cast_precision_loss)] // milliseconds far below 2^52
                let seconds = t as f64 / 1000.0;
                seconds
            }),
        ),
    ]
}
