//! The command API on NATS (SPEC.md §6), on the NATS service API so the
//! coordinator is discoverable (`$SRV.PING`, `$SRV.INFO`) and keeps
//! per-endpoint stats (`$SRV.STATS`). Handlers decode, ask the catalog or
//! directory, and encode the envelope; nothing here decides anything.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use phasegate_bus::{Client, Request, Requests, Service, encode_reply};
use phasegate_proto::codec::MAX_REQUEST_BYTES;
use phasegate_proto::{
    ActionRequest, AgentForgetRequest, AgentInfo, AgentListRequest, AgentListResult, ApiError,
    Command, Empty, Encoding, EntityDeleteRequest, EntityGetRequest, EntityKind, EntityListResult,
    EntityPutRequest, ErrorCode, ListRequest, PipelineDeleteRequest, PipelineGetRequest,
    PipelineListResult, PipelinePutRequest, PipelineResult, Reply, TriggerAction,
    TriggerGetRequest, TriggerListRequest, TriggerListResult, TriggerResult, decode,
};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::auth::{self, Caller};
use crate::error::CoordinatorError;
use crate::msg::{CatalogMsg, DirectoryMsg};
use crate::page::{PAGE_BUDGET_BYTES, Page, PageRequest, page, within_bytes};
use crate::reply::{QUEUE_DEADLINE, ReplyTo};

/// How long a read-only question to the directory may take before it is
/// answered `unavailable` (it changes nothing, so that is always true).
const ACTOR_TIMEOUT: Duration = Duration::from_secs(8);

/// How long a handler waits for a started command. Past it the outcome is
/// unknown, so the answer is `internal`, never `unavailable`.
const STARTED_TIMEOUT: Duration = Duration::from_secs(60);

/// Commands handled at once; beyond it a command is answered `unavailable`
/// at once (not carried out) rather than queued without bound.
pub(crate) const MAX_IN_FLIGHT: usize = 512;

#[derive(Clone)]
pub(crate) struct Handlers {
    pub(crate) catalog: ActorRef<CatalogMsg>,
    pub(crate) directory: ActorRef<DirectoryMsg>,
    pub(crate) metrics: std::sync::Arc<phasegate_telemetry::metrics::Registry>,
    pub(crate) lease: crate::leader::Lease,
    pub(crate) in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    /// Authentication and roles; `None`: open.
    pub(crate) auth: Option<std::sync::Arc<crate::auth::AuthConfig>>,
}

/// Starts the service with one endpoint per command; returns the service
/// (stop it to stop answering) and the tasks serving the endpoints.
pub(crate) async fn start(
    client: &Client,
    handlers: Handlers,
) -> Result<(Service, Vec<tokio::task::JoinHandle<()>>), CoordinatorError> {
    let endpoints: Vec<(String, String)> = Command::ALL
        .iter()
        .map(|&c| {
            (
                format!("{}-{}", c.group(), c.verb()),
                client.subjects().command(c),
            )
        })
        .collect();
    let (svc, streams) = client
        .serve(
            "phasegate-coordinator",
            env!("CARGO_PKG_VERSION"),
            "phasegate coordinator: release pipelines for gates and configs",
            &endpoints,
        )
        .await?;
    let tasks = Command::ALL
        .iter()
        .zip(streams)
        .map(|(&command, requests)| {
            tokio::spawn(serve_endpoint(handlers.clone(), command, requests))
        })
        .collect();
    Ok((svc, tasks))
}

/// Takes the requests of one endpoint, each on a task of its own so a slow
/// one never holds up the endpoint (the actors serialise what must be);
/// beyond [`MAX_IN_FLIGHT`] a request is refused at once.
async fn serve_endpoint(h: Handlers, command: Command, mut requests: Requests) {
    while let Some(request) = requests.next().await {
        let Ok(permit) = h.in_flight.clone().try_acquire_owned() else {
            let (body, headers, _) = envelope::<Empty>(
                request.encoding(),
                Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "the coordinator is overloaded; the command was not carried out; retry",
                )),
            );
            if let Err(e) = request.respond(body, headers).await {
                tracing::debug!(error = %e, "cannot send reply");
            }
            continue;
        };
        let h = h.clone();
        tokio::spawn(async move {
            let _permit = permit;
            answer(&h, command, request).await;
        });
    }
}

/// Answers one request: who sent it, what it asks, the reply and its count.
async fn answer(h: &Handlers, command: Command, request: Request) {
    let encoding = request.encoding();
    let span = tracing::info_span!(
        "phasegate.command",
        otel.name = %command,
        otel.kind = "server",
        phasegate.action = %command,
    );
    phasegate_bus::trace::continue_from_headers(&span, request.headers());
    // Who sent it, as the NATS server says (SPEC.md §8).
    let caller = auth::identify(h.auth.as_deref(), request.header(auth::REQUEST_INFO_HEADER));
    let (body, headers, code) = match caller {
        Ok(caller) => {
            let cx = Cx {
                enc: encoding,
                command,
                caller,
            };
            handle(h, &cx, request.payload()).instrument(span).await
        }
        Err(e) => envelope::<Empty>(encoding, Err(e)),
    };
    let name = command.to_string();
    h.metrics.inc(
        "phasegate_commands_total",
        "commands answered, by command and result code",
        &[("command", &name), ("code", code)],
        1.0,
    );
    if let Err(e) = request.respond(body, headers).await {
        tracing::debug!(error = %e, "cannot send reply");
    }
}

/// A reply body, its headers, and the result code for metrics.
type Answer = (Bytes, phasegate_bus::HeaderMap, &'static str);

fn envelope<T: Serialize>(encoding: Encoding, result: Result<T, ApiError>) -> Answer {
    let (reply, code) = match result {
        Ok(r) => (Reply::ok(r), "ok"),
        Err(e) => {
            let code = e.code.as_str();
            (Reply::err(e), code)
        }
    };
    match encode_reply(&reply, encoding) {
        Ok((b, h)) => (b, h, code),
        // Even the fallback failed: answer with an empty body rather than
        // leave the requester waiting.
        Err(_) => (Bytes::new(), phasegate_bus::HeaderMap::new(), "internal"),
    }
}

fn parse<T: DeserializeOwned>(encoding: Encoding, body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::invalid(format!(
            "body of {} bytes exceeds the limit of {MAX_REQUEST_BYTES} bytes",
            body.len()
        )));
    }
    // An empty body reads as an empty map, so `list` needs no body at all.
    if body.is_empty() {
        return decode(Encoding::Json, b"{}").map_err(|e| ApiError::invalid(e.to_string()));
    }
    decode(encoding, body).map_err(|e| ApiError::invalid(e.to_string()))
}

/// Sends a command to the catalog with a deadline by which it must start
/// (see [`crate::reply`]), and waits for its answer.
async fn ask<T, F>(actor: &ActorRef<CatalogMsg>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(ReplyTo<T>) -> CatalogMsg,
{
    let deadline = tokio::time::Instant::now() + QUEUE_DEADLINE;
    let call = actor.call(
        |port: RpcReplyPort<Result<T, ApiError>>| f(ReplyTo::new(port, deadline)),
        Some(STARTED_TIMEOUT),
    );
    match call.await {
        Ok(CallResult::Success(r)) => r,
        Ok(CallResult::Timeout) => Err(ApiError::new(
            ErrorCode::Internal,
            "no answer from the coordinator's actors; the outcome is unknown: read before retrying",
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::Unavailable,
            "the coordinator is stopping; the command was not carried out; retry",
        )),
        Ok(CallResult::SenderError) => Err(ApiError::new(
            ErrorCode::Internal,
            "the command was interrupted; the outcome is unknown: read before retrying",
        )),
    }
}

/// A command being handled: how to answer, what it is, who sent it.
pub(crate) struct Cx {
    enc: Encoding,
    command: Command,
    caller: Caller,
}

/// A request whose `actor` the sender's identity decides (SPEC.md §8).
trait Acting {
    /// Puts the caller's actor in place of the declared one.
    fn bind(&mut self, caller: &Caller) -> Result<(), ApiError>;
}

macro_rules! acting {
    ($($t:ty),* $(,)?) => {$(
        impl Acting for $t {
            fn bind(&mut self, caller: &Caller) -> Result<(), ApiError> {
                self.actor = caller.actor(&self.actor)?;
                Ok(())
            }
        }
    )*};
}

macro_rules! not_acting {
    ($($t:ty),* $(,)?) => {$(
        impl Acting for $t {
            fn bind(&mut self, _: &Caller) -> Result<(), ApiError> {
                Ok(())
            }
        }
    )*};
}

acting!(
    ActionRequest,
    PipelinePutRequest,
    PipelineDeleteRequest,
    EntityPutRequest,
    EntityDeleteRequest,
    AgentForgetRequest,
);
not_acting!(
    PipelineGetRequest,
    EntityGetRequest,
    ListRequest,
    TriggerGetRequest,
    TriggerListRequest,
    AgentListRequest,
);

/// Decodes the request (`invalid` first), checks the caller's role
/// (`forbidden`), binds its actor, then runs `f`.
async fn run<Req, Res, Fut>(cx: &Cx, body: &[u8], f: impl FnOnce(Req) -> Fut) -> Answer
where
    Req: DeserializeOwned + Acting,
    Res: Serialize,
    Fut: Future<Output = Result<Res, ApiError>>,
{
    let encoding = cx.enc;
    let ready = parse::<Req>(encoding, body).and_then(|mut req| {
        cx.caller.may(cx.command)?;
        req.bind(&cx.caller)?;
        Ok(req)
    });
    let result = match ready {
        Ok(req) => f(req).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result
        && matches!(e.code, ErrorCode::Internal | ErrorCode::Unavailable)
    {
        tracing::warn!(code = %e.code, message = %e.message, "command failed");
    }
    envelope(encoding, result)
}

/// Routes a command to its handler, once this coordinator is known to lead.
async fn handle(h: &Handlers, cx: &Cx, body: &[u8]) -> Answer {
    if !h.lease.holds() {
        // A coordinator that may have lost its lease does nothing at all.
        return envelope::<Empty>(
            cx.enc,
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "this coordinator no longer leads; the command was not carried out; retry",
            )),
        );
    }
    let c = &h.catalog;
    if let Some(action) = TriggerAction::of_command(cx.command) {
        return run(cx, body, |req: ActionRequest| async move {
            let trigger = ask(c, |r| CatalogMsg::TriggerAct(action, req, r)).await?;
            Ok(TriggerResult { trigger })
        })
        .await;
    }
    if let Some(kind) = cx.command.entity_kind() {
        return entity_command(c, cx, kind, body).await;
    }
    use Command as C;
    match cx.command {
        C::PipelinePut | C::PipelineGet | C::PipelineList | C::PipelineDelete => {
            pipeline_command(c, cx, body).await
        }
        C::TriggerGet | C::TriggerList => trigger_read(c, cx, body).await,
        C::AgentList | C::AgentForget => agent_command(&h.directory, cx, body).await,
        // Actions and entity commands were routed above.
        _ => unrouted(cx),
    }
}

/// The answer to a command that reached a handler not meant for it: a bug.
fn unrouted(cx: &Cx) -> Answer {
    envelope::<Empty>(
        cx.enc,
        Err(ApiError::new(ErrorCode::Internal, "unrouted command")),
    )
}

async fn pipeline_command(c: &ActorRef<CatalogMsg>, cx: &Cx, body: &[u8]) -> Answer {
    match cx.command {
        Command::PipelinePut => {
            run(cx, body, |req: PipelinePutRequest| async move {
                let pipeline = ask(c, |r| CatalogMsg::PipelinePut(req, r)).await?;
                Ok(PipelineResult { pipeline })
            })
            .await
        }
        Command::PipelineGet => {
            run(cx, body, |req: PipelineGetRequest| async move {
                let pipeline = ask(c, |r| CatalogMsg::PipelineGet(req.name, r)).await?;
                Ok(PipelineResult { pipeline })
            })
            .await
        }
        Command::PipelineList => {
            run(cx, body, |req: ListRequest| async move {
                let page = PageRequest::parse(req.limit, req.cursor.as_deref())?;
                let p = ask(c, |r| CatalogMsg::PipelineList(page, r)).await?;
                let p = within_bytes(p, |p| p.name.to_string(), PAGE_BUDGET_BYTES);
                Ok(PipelineListResult {
                    pipelines: p.items,
                    next_cursor: p.next_cursor,
                })
            })
            .await
        }
        Command::PipelineDelete => {
            run(cx, body, |req: PipelineDeleteRequest| async move {
                ask(c, |r| CatalogMsg::PipelineDelete(req, r)).await?;
                Ok(Empty {})
            })
            .await
        }
        _ => unrouted(cx),
    }
}

/// `gate.*` and `config.*`: the same commands on two kinds of entity.
async fn entity_command(
    c: &ActorRef<CatalogMsg>,
    cx: &Cx,
    kind: EntityKind,
    body: &[u8],
) -> Answer {
    use Command as C;
    match cx.command {
        C::GatePut | C::ConfigPut => {
            run(cx, body, |req: EntityPutRequest| async move {
                // A trigger this put starts joins the command's trace.
                let trace = phasegate_bus::trace::traceparent_of(&tracing::Span::current());
                ask(c, |reply| CatalogMsg::EntityPut {
                    kind,
                    req,
                    trace,
                    reply,
                })
                .await
            })
            .await
        }
        C::GateGet | C::ConfigGet => {
            run(cx, body, |req: EntityGetRequest| async move {
                ask(c, |r| CatalogMsg::EntityGet(kind, req, r)).await
            })
            .await
        }
        C::GateList | C::ConfigList => {
            run(cx, body, |req: ListRequest| async move {
                let page = PageRequest::parse(req.limit, req.cursor.as_deref())?;
                let r = ask(c, |r| CatalogMsg::EntityList(kind, page, r)).await?;
                let p = Page {
                    items: r.specs,
                    next_cursor: r.next_cursor,
                };
                let p = within_bytes(p, |s| s.name.to_string(), PAGE_BUDGET_BYTES);
                Ok(EntityListResult {
                    specs: p.items,
                    next_cursor: p.next_cursor,
                })
            })
            .await
        }
        C::GateDelete | C::ConfigDelete => {
            run(cx, body, |req: EntityDeleteRequest| async move {
                ask(c, |r| CatalogMsg::EntityDelete(kind, req, r)).await?;
                Ok(Empty {})
            })
            .await
        }
        _ => unrouted(cx),
    }
}

/// `trigger.get` and `trigger.list` (actions are routed on their own).
async fn trigger_read(c: &ActorRef<CatalogMsg>, cx: &Cx, body: &[u8]) -> Answer {
    match cx.command {
        Command::TriggerGet => {
            run(cx, body, |req: TriggerGetRequest| async move {
                let trigger = ask(c, |r| CatalogMsg::TriggerGet(req.id, r)).await?;
                Ok(TriggerResult { trigger })
            })
            .await
        }
        Command::TriggerList => {
            run(cx, body, |req: TriggerListRequest| async move {
                let page = PageRequest::parse(req.limit, req.cursor.as_deref())?;
                let r = ask(c, |r| CatalogMsg::TriggerList(req, page, r)).await?;
                let p = Page {
                    items: r.triggers,
                    next_cursor: r.next_cursor,
                };
                let p = within_bytes(
                    p,
                    |t| (std::cmp::Reverse(t.created_at_ms), t.id.to_string()),
                    PAGE_BUDGET_BYTES,
                );
                Ok(TriggerListResult {
                    triggers: p.items,
                    next_cursor: p.next_cursor,
                })
            })
            .await
        }
        _ => unrouted(cx),
    }
}

/// `agent.list` and `agent.forget`, answered by the directory.
async fn agent_command(d: &ActorRef<DirectoryMsg>, cx: &Cx, body: &[u8]) -> Answer {
    let busy = || ApiError::new(ErrorCode::Unavailable, "the agent directory is busy; retry");
    match cx.command {
        Command::AgentList => {
            run(cx, body, |req: AgentListRequest| async move {
                let page_req = PageRequest::parse(req.limit, req.cursor.as_deref())?;
                let segment = req.segment;
                let call = d.call(
                    |reply| DirectoryMsg::List { segment, reply },
                    Some(ACTOR_TIMEOUT),
                );
                let Ok(CallResult::Success(agents)) = call.await else {
                    return Err(busy());
                };
                // The directory answers every agent; the page is cut here,
                // by segment then agent id.
                let key = |a: &AgentInfo| (a.segment.to_string(), a.agent_id.to_string());
                let p = page(agents, key, &page_req);
                let p = within_bytes(p, key, PAGE_BUDGET_BYTES);
                Ok(AgentListResult {
                    agents: p.items,
                    next_cursor: p.next_cursor,
                })
            })
            .await
        }
        Command::AgentForget => {
            run(cx, body, |req: AgentForgetRequest| async move {
                let agent_id = req.agent_id;
                let call = d.call(
                    |reply| DirectoryMsg::Forget { agent_id, reply },
                    Some(ACTOR_TIMEOUT),
                );
                match call.await {
                    Ok(CallResult::Success(answer)) => answer.map(|()| Empty {}),
                    _ => Err(busy()),
                }
            })
            .await
        }
        _ => unrouted(cx),
    }
}
