//! The console's HTTP API: the embedded front end, JSON over the command
//! API, and the live event stream. Internal to the console (its shapes
//! may change with the front end); the contract is the command API.
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/session` | `{actor, credentials}`: who the console acts as |
//! | `GET /api/events` | server-sent events `clock`, `rollouts`, `agents`, `status` (`live.rs`) |
//! | `GET /api/rollouts` | the `rollouts` part now |
//! | `GET /api/agents` | the `agents` part now |
//! | `GET /api/finished?cursor=` | `{triggers: [summary…], next_cursor}`: finished triggers, newest first |
//! | `GET /api/triggers/{id}` | `{trigger, diff}` |
//! | `POST /api/triggers/{id}/{action}` `{phase_id?, comment?}` | `{trigger}` |
//! | `GET /api/gates?q=` `/api/configs?q=` `/api/pipelines?q=` | `{items, total}` |
//!
//! Errors are `{"error": {"code", "message"}}` with the command API's code
//! and an HTTP status for it (`conflict` 409, `forbidden` 403, …).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use phasegate_client::{ClientError, TriggerAction};
use phasegate_proto::{
    ApiError, EntityKind, EntityRef, ErrorCode, HttpError, PhaseId, Trigger, TriggerId,
    TriggerListRequest, TriggerSummary,
};
use serde::{Deserialize, Serialize};

use super::{Console, assets, diff, live, query, specs};

/// The most items a list answers; the search narrows the rest.
const MAX_ITEMS: usize = 500;

/// Finished triggers per page of the rollouts view.
const FINISHED_PAGE: usize = 20;

/// Pages of `trigger.list` read at most for one page of finished ones
/// (active ones are skipped).
const FINISHED_READS: usize = 8;

/// The router of the console.
pub(crate) fn router(console: Console) -> Router {
    let mut router = Router::new()
        .route("/api/session", get(session))
        .route("/api/events", get(events))
        .route("/api/rollouts", get(rollouts))
        .route("/api/agents", get(agents))
        .route("/api/finished", get(finished))
        .route("/api/triggers/{id}", get(trigger))
        .route("/api/triggers/{id}/{action}", post(act))
        .route("/api/gates", get(gates))
        .route("/api/configs", get(configs))
        .route("/api/pipelines", get(pipelines));
    for asset in assets::ASSETS {
        router = router.route(asset.path, get(move || async move { static_file(asset) }));
    }
    router
        .fallback(|| async { error(ErrorCode::NotFound, "no such page") })
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            host_guard,
        ))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(console)
}

/// Whether `host` (a `Host` header: name or address, maybe a port) names
/// this machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// On loopback, only requests for a loopback name are served: a site
/// whose name the attacker rebinds to 127.0.0.1 is the same origin to the
/// browser, and would otherwise read and act through the console.
async fn host_guard(
    State(c): State<Console>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if c.loopback && !loopback_host(host) {
        return error(
            ErrorCode::Forbidden,
            "this console listens on loopback: open it as localhost or 127.0.0.1",
        );
    }
    next.run(request).await
}

/// Every answer: no framing by other sites, no sniffing, and a policy that
/// lets the page load nothing but its own files.
async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn static_file(asset: &assets::Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // A new binary serves new files: never a stale script.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

fn json_text(json: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json,
    )
        .into_response()
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => json_text(text),
        Err(e) => error(ErrorCode::Internal, format!("cannot serialise: {e}")),
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Invalid => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::BAD_GATEWAY,
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    let body = HttpError {
        error: ApiError::new(code, message),
    };
    let text = serde_json::to_string(&body).unwrap_or_default();
    (
        status_of(code),
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

/// A refused request: the command API's code and a message, answered
/// as `{"error": {"code", "message"}}` with the code's HTTP status.
#[derive(Debug)]
struct Refused {
    code: ErrorCode,
    message: String,
}

impl Refused {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.code, self.message)
    }
}

/// A failed command keeps the coordinator's code and message.
impl From<ClientError> for Refused {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api(api) => Self::new(api.code, api.message),
            other => Self::new(other.code(), other.to_string()),
        }
    }
}

type Answer = Result<Response, Refused>;

#[derive(Serialize)]
struct Session<'a> {
    actor: &'a str,
    credentials: Option<&'a str>,
}

async fn session(State(c): State<Console>) -> Response {
    json(&Session {
        actor: c.actor.as_str(),
        credentials: c.credentials.as_deref(),
    })
}

async fn rollouts(State(c): State<Console>) -> Response {
    let part = c.live.borrow().rollouts.clone();
    json_text(part.json.clone())
}

async fn agents(State(c): State<Console>) -> Response {
    let part = c.live.borrow().agents.clone();
    json_text(part.json.clone())
}

/// One event stream: the parts of the live view as they change.
struct Stream {
    live: tokio::sync::watch::Receiver<live::Snapshot>,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The `seq` of each part last sent: rollouts, agents, status.
    sent: [Option<u64>; 3],
    queue: VecDeque<Event>,
    started: bool,
}

impl Stream {
    /// Queues every part whose `seq` moved since it was last sent.
    fn queue_changes(&mut self) {
        let snapshot = self.live.borrow_and_update().clone();
        let parts = [
            ("rollouts", snapshot.rollouts),
            ("agents", snapshot.agents),
            ("status", snapshot.status),
        ];
        for (i, (name, part)) in parts.into_iter().enumerate() {
            if self.sent[i] != Some(part.seq) {
                self.sent[i] = Some(part.seq);
                self.queue
                    .push_back(Event::default().event(name).data(part.json.as_str()));
            }
        }
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if *self.stopping.borrow() {
                return None;
            }
            if self.started {
                tokio::select! {
                    changed = self.live.changed() => changed.ok()?,
                    _ = self.stopping.changed() => return None,
                }
            } else {
                self.started = true;
                // The page counts bake time down against the server's
                // clock, not its own.
                self.queue.push_back(
                    Event::default()
                        .event("clock")
                        .data(format!("{{\"now_ms\":{}}}", phasegate_proto::now_ms())),
                );
            }
            self.queue_changes();
        }
    }
}

async fn events(State(c): State<Console>) -> Response {
    let stream = Stream {
        live: c.live.clone(),
        stopping: c.stopping.clone(),
        sent: [None; 3],
        queue: VecDeque::new(),
        started: false,
    };
    let events = futures_util::stream::unfold(stream, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Serialize)]
struct Finished {
    triggers: Vec<TriggerSummary>,
    next_cursor: Option<String>,
}

async fn finished(State(c): State<Console>, uri: Uri) -> Answer {
    let mut cursor = query::param(uri.query(), "cursor").filter(|s| !s.is_empty());
    let mut triggers = Vec::new();
    for _ in 0..FINISHED_READS {
        let page = TriggerListRequest {
            limit: u32::try_from(FINISHED_PAGE).ok(),
            cursor: cursor.clone(),
            ..TriggerListRequest::default()
        };
        let r = c.client.trigger_list_page(&page).await?;
        triggers.extend(r.triggers.into_iter().filter(|t| t.status.is_finished()));
        cursor = r.next_cursor;
        if cursor.is_none() || triggers.len() >= FINISHED_PAGE {
            break;
        }
    }
    Ok(json(&Finished {
        triggers,
        next_cursor: cursor,
    }))
}

/// A rollout's change, when this dashboard has seen both versions.
#[derive(Serialize)]
struct Diff {
    from_version: u64,
    to_version: u64,
    /// Whether each side is known (version 0, absent, always is).
    from_known: bool,
    to_known: bool,
    /// The lines, when both sides are known.
    lines: Option<Vec<diff::Line>>,
}

#[derive(Serialize)]
struct TriggerPage {
    trigger: Trigger,
    diff: Diff,
}

fn trigger_id(id: String) -> Result<TriggerId, Refused> {
    TriggerId::new(id).map_err(|e| Refused::new(ErrorCode::Invalid, e.to_string()))
}

async fn trigger(State(c): State<Console>, Path(id): Path<String>) -> Answer {
    let t = c.client.trigger_get(trigger_id(id)?).await?;
    // The entity now: its latest version is the new one while the trigger
    // runs, and the old one again after an abort.
    if let Ok(r) = c
        .client
        .entity_get(t.entity.kind, t.entity.name.clone())
        .await
    {
        specs::lock(&c.specs).remember(&r.spec);
    }
    let diff = diff_of(&c, &t.entity, t.from_version, t.to_version);
    Ok(json(&TriggerPage { trigger: t, diff }))
}

fn diff_of(c: &Console, entity: &EntityRef, from_version: u64, to_version: u64) -> Diff {
    let cache = specs::lock(&c.specs);
    let from = (from_version != 0).then(|| cache.get(entity, from_version));
    let to = cache.get(entity, to_version);
    let from_known = !matches!(from, Some(None));
    let lines = match (from_known, to) {
        (true, Some(to)) => Some(diff::lines(
            &diff::spec_text(from.flatten()),
            &diff::spec_text(Some(to)),
        )),
        _ => None,
    };
    Diff {
        from_version,
        to_version,
        from_known,
        to_known: to.is_some(),
        lines,
    }
}

#[derive(Deserialize)]
struct ActBody {
    #[serde(default)]
    phase_id: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// A cross-site page can send a form or a `text/plain` POST without the
/// browser asking first; it cannot send `application/json` that way, nor
/// forge `Origin`. So an action must be JSON, from this console's origin.
fn same_origin_json(headers: &HeaderMap) -> Result<(), Refused> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(Refused::new(
            ErrorCode::Invalid,
            "an action is a JSON body (Content-Type: application/json)",
        ));
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (None, _) => Ok(()),
        (Some(origin), Some(host))
            if origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host) =>
        {
            Ok(())
        }
        _ => Err(Refused::new(
            ErrorCode::Forbidden,
            "an action must come from the console's own page",
        )),
    }
}

async fn act(
    State(c): State<Console>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    same_origin_json(&headers)?;
    let action = TriggerAction::ALL
        .into_iter()
        .find(|a| a.as_str() == verb)
        .ok_or_else(|| Refused::new(ErrorCode::NotFound, format!("no action {verb:?}")))?;
    let id = trigger_id(id)?;
    let body: ActBody = serde_json::from_slice(&body)
        .map_err(|e| Refused::new(ErrorCode::Invalid, format!("bad body: {e}")))?;
    let phase_id = body
        .phase_id
        .map(PhaseId::new)
        .transpose()
        .map_err(|e| Refused::new(ErrorCode::Invalid, e.to_string()))?;
    let comment = body.comment.filter(|s| !s.trim().is_empty());
    let result = c
        .client
        .act(action, id, phase_id, c.actor.clone(), comment)
        .await;
    // Every tab sees the effect (or that nothing changed) at once.
    c.poke.notify_one();
    Ok(json(&serde_json::json!({ "trigger": result? })))
}

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
    /// How many matched: more than `items` holds when capped.
    total: usize,
}

/// Whether `q` (lowercase, trimmed) is in any of `fields`, ignoring ASCII case.
fn matches(q: &str, fields: &[&str]) -> bool {
    q.is_empty() || fields.iter().any(|f| f.to_ascii_lowercase().contains(q))
}

fn items<T: Serialize>(all: Vec<T>, keep: impl Fn(&T) -> bool) -> Response {
    let matched: Vec<T> = all.into_iter().filter(|x| keep(x)).collect();
    let total = matched.len();
    json(&Items {
        items: matched.into_iter().take(MAX_ITEMS).collect(),
        total,
    })
}

fn search(uri: &Uri) -> String {
    query::param(uri.query(), "q")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

async fn entities(c: &Console, kind: EntityKind, uri: &Uri) -> Answer {
    let specs = c.client.entity_list(kind).await?;
    {
        let mut cache = specs::lock(&c.specs);
        for spec in &specs {
            cache.remember(spec);
        }
    }
    let q = search(uri);
    Ok(items(specs, |s| {
        matches(
            &q,
            &[
                s.name.as_str(),
                &s.description,
                s.pipeline.as_ref().map_or("", |p| p.as_str()),
            ],
        )
    }))
}

async fn gates(State(c): State<Console>, uri: Uri) -> Answer {
    entities(&c, EntityKind::Gate, &uri).await
}

async fn configs(State(c): State<Console>, uri: Uri) -> Answer {
    entities(&c, EntityKind::Config, &uri).await
}

async fn pipelines(State(c): State<Console>, uri: Uri) -> Answer {
    let all = c.client.pipeline_list().await?;
    let q = search(&uri);
    Ok(items(all, |p| {
        let segments: Vec<&str> = p
            .phases
            .iter()
            .flat_map(|ph| ph.segments.iter().map(|s| s.as_str()))
            .collect();
        matches(&q, &[p.name.as_str(), &p.description]) || matches(&q, &segments)
    }))
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn loopback_names_with_or_without_a_port() {
        for host in [
            "localhost",
            "localhost:3100",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:3100",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:3100",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "",
            "console",
            "evil.example:3100",
            "10.0.0.1:3100",
            "localhost.evil.example",
            "[::2]:3100",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
