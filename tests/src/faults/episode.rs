//! One episode: the seed's rollouts, operators and faults on a running
//! installation, then healing, convergence and the ledger.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use phasegate_client::{PhasegateClient, TriggerAction};
use phasegate_proto::{
    Actor, EntityKind, EntityName, ErrorCode, PausedReason, PhaseState, PipelineName, Trigger,
    TriggerId, TriggerListRequest, TriggerStatus,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Report;
use super::install::{Installation, signal};
use super::ledger::{Answer, Cmd, Record, history_kind};
use super::oracle::{self, Known, UNITS};
use super::plan::{self, ENTITIES, Fault, Manual, Plan, RolloutPlan, TIMELINE_MS};
use crate::http::Http;

/// How long rollouts may take to finish once every process is back.
const DRIVE_DEADLINE: Duration = Duration::from_secs(15);
/// How long agents may take to serve the final versions once healed:
/// reconnecting to a restarted nats-server included.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(10);
/// An agent that does not answer within this is counted unreachable.
const AGENT_TIMEOUT: Duration = Duration::from_millis(400);
/// Violations kept per seed (one bug tends to repeat on every sample).
const MAX_VIOLATIONS: usize = 40;

/// Unix ms now.
pub(super) use phasegate_proto::now_ms;

/// What each gate of the installation serves after the last episode:
/// (version, value), absent = (0, false).
#[derive(Debug, Default)]
pub(super) struct Entities(BTreeMap<&'static str, (u64, bool)>);

/// State shared by the tasks of an episode.
struct Shared {
    seed: u64,
    client: PhasegateClient,
    http: Http,
    agents: Vec<(SocketAddr, String)>,
    segments: Vec<String>,
    known: Mutex<Vec<Option<Known>>>,
    records: Mutex<Vec<Record>>,
    violations: Mutex<Vec<String>>,
    checks: Mutex<BTreeMap<&'static str, u64>>,
    next_actor: AtomicU64,
    stop: AtomicBool,
    healed: AtomicBool,
    t0: Instant,
}

impl Shared {
    fn actor(&self) -> String {
        format!(
            "s{}-c{}",
            self.seed,
            self.next_actor.fetch_add(1, Ordering::SeqCst)
        )
    }

    fn violation(&self, v: String) {
        let mut vs = lock(&self.violations);
        if vs.len() < MAX_VIOLATIONS && !vs.contains(&v) {
            vs.push(v);
        }
    }

    fn count(&self, what: &'static str) {
        *lock(&self.checks).entry(what).or_default() += 1;
    }

    fn record(&self, actor: String, cmd: Cmd, answer: Answer) {
        lock(&self.records).push(Record {
            seed: self.seed,
            actor,
            cmd,
            answer,
        });
    }

    fn knowns(&self) -> Vec<Known> {
        lock(&self.known).iter().flatten().cloned().collect()
    }
}

/// A poisoned lock only means another task panicked: keep its data.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the episode of `seed`. An error means the installation is broken
/// (a process would not come back) and must be replaced.
pub(super) async fn run(
    inst: &mut Installation,
    seed: u64,
    segments: &[String],
    entities: &mut Entities,
    report: &mut Report,
) -> anyhow::Result<()> {
    let plan = Plan::new(seed, segments);
    let sh = Arc::new(Shared {
        seed,
        client: inst.client.clone(),
        http: Http::default(),
        agents: inst
            .agents
            .iter()
            .map(|a| (a.proc.addr, a.segment.clone()))
            .collect(),
        segments: segments.to_vec(),
        known: Mutex::new(vec![None; plan.rollouts.len()]),
        records: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        checks: Mutex::new(BTreeMap::new()),
        next_actor: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        healed: AtomicBool::new(false),
        t0: Instant::now(),
    });
    let outcome = run_inner(inst, &plan, &sh, entities, report).await;
    // Figures and violations, whatever happened.
    for (k, n) in lock(&sh.checks).iter() {
        *report.checks.entry(k).or_default() += n;
    }
    let records = std::mem::take(&mut *lock(&sh.records));
    for r in &records {
        *report.commands.entry(r.answer.label()).or_default() += 1;
    }
    report.records.extend(records);
    let vs = std::mem::take(&mut *lock(&sh.violations));
    if !vs.is_empty() {
        report.violations.entry(seed).or_default().extend(vs);
    }
    outcome
}

async fn run_inner(
    inst: &mut Installation,
    plan: &Plan,
    sh: &Arc<Shared>,
    entities: &mut Entities,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Every agent reported before and none stopped cleanly: all are known.
    let listed = wait_answer(|| sh.client.agents(None)).await?;
    for a in &inst.agents {
        sh.count("every agent known");
        if !listed.iter().any(|x| x.agent_id.as_str() == a.id) {
            sh.violation(format!(
                "[agent unknown to the coordinator] agent {} of segment {} reports and serves, \
                 but agent.list does not list it",
                a.id, a.segment
            ));
        }
    }
    let sampler = tokio::spawn(sampler(sh.clone()));
    let operators: Vec<_> = plan
        .rollouts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let base = entities.0.get(r.entity).copied().unwrap_or((0, false));
            tokio::spawn(operate(sh.clone(), i, r.clone(), base))
        })
        .collect();
    let injected = inject(inst, plan, sh, report).await;
    let healed = match injected {
        Ok(()) => heal(inst, sh, report).await,
        Err(e) => Err(e),
    };
    if let Err(e) = healed {
        sh.stop.store(true, Ordering::SeqCst);
        for o in operators {
            o.abort();
        }
        sampler.abort();
        return Err(e);
    }
    let healed_at = Instant::now();
    sh.healed.store(true, Ordering::SeqCst);
    // The test plays the service manager until the rollouts are over: a
    // coordinator that stops by itself is started again (bounded: each
    // operator gives up after its own deadline).
    while !operators.iter().all(tokio::task::JoinHandle::is_finished) {
        watch_coordinators(inst, sh, report)?;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for o in operators {
        o.await?;
    }
    sh.stop.store(true, Ordering::SeqCst);
    watch_coordinators(inst, sh, report)?;
    inst.wait_ready(Duration::from_secs(20)).await?;
    sampler.await?;
    converge(sh, healed_at, report).await;
    check_ledger(sh).await;
    for r in &plan.rollouts {
        let name = EntityName::new(r.entity)?;
        if let Ok(e) = wait_answer(|| sh.client.entity_get(EntityKind::Gate, name.clone())).await {
            let value = e.spec.enabled
                && e.spec
                    .rules
                    .first()
                    .is_some_and(|r| r.pass_percentage >= 100.0);
            entities.0.insert(r.entity, (e.spec.version, value));
        }
    }
    Ok(())
}

/// Asks until the command API answers (bounded).
async fn wait_answer<T, F, Fut>(mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, phasegate_bus::BusError>>,
{
    Ok(crate::wait_for("the command API to answer", Duration::from_secs(10), &mut f).await?)
}

// ---------------------------------------------------------------- faults

/// Plays the seed's faults, each with its recovery; a fault whose target
/// is already down or frozen is skipped (decided by the schedule alone).
async fn inject(
    inst: &mut Installation,
    plan: &Plan,
    sh: &Arc<Shared>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut events: Vec<(u64, usize, bool)> = Vec::new();
    for (k, (at, f)) in plan.faults.iter().enumerate() {
        let dur = match *f {
            Fault::KillCoordinator { down_ms, .. }
            | Fault::KillAgent { down_ms, .. }
            | Fault::RestartNats { down_ms } => down_ms,
            Fault::FreezeCoordinator { for_ms, .. }
            | Fault::FreezeAgent { for_ms, .. }
            | Fault::FreezeNats { for_ms } => for_ms,
        };
        events.push((*at, k, true));
        events.push((at + dur, k, false));
    }
    events.sort_by_key(|(at, _, begin)| (*at, *begin));
    let mut active = vec![false; plan.faults.len()];
    let mut next = 0;
    // Bounded: the last event is at most a few seconds past the timeline.
    while next < events.len() || sh.t0.elapsed() < Duration::from_millis(TIMELINE_MS) {
        watch_coordinators(inst, sh, report)?;
        let Some(&(at, k, begin)) = events.get(next) else {
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        };
        if sh.t0.elapsed() < Duration::from_millis(at) {
            // Pacing the schedule, not synchronising.
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        }
        next += 1;
        let f = plan.faults[k].1;
        if begin {
            if begin_fault(inst, f)? {
                active[k] = true;
                *report.faults.entry(f.kind()).or_default() += 1;
            }
        } else if active[k] {
            end_fault(inst, f, sh).await?;
        }
    }
    Ok(())
}

/// A coordinator that exited without the test killing it is restarted,
/// as a service manager would; both gone at once is a violation.
fn watch_coordinators(
    inst: &mut Installation,
    sh: &Arc<Shared>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut exited = Vec::new();
    for c in &mut inst.coords {
        if !c.down && !c.proc.is_running() {
            exited.push(c.instance.clone());
        }
    }
    sh.count("some coordinator keeps running");
    // A coordinator frozen past its lease must stop when it wakes up: only
    // exits of coordinators never frozen since their start count.
    let unprovoked = inst
        .coords
        .iter()
        .any(|c| exited.contains(&c.instance) && !c.woken);
    if exited.len() == inst.coords.len() && unprovoked {
        let tails: Vec<String> = inst
            .coords
            .iter()
            .map(|c| format!("{}: {}", c.instance, last_error(&c.proc.log_tail(30))))
            .collect();
        sh.violation(format!(
            "[every coordinator exited on its own] {exited:?}; last words: {tails:?}"
        ));
    }
    for c in &mut inst.coords {
        if exited.contains(&c.instance) {
            report.coordinator_self_exits += 1;
            c.frozen = false;
            c.woken = false;
            c.proc.restart()?;
        }
    }
    Ok(())
}

/// The last warning or error of a JSON log.
fn last_error(tail: &str) -> String {
    tail.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["level"] == "ERROR" || v["level"] == "WARN")
        .map_or_else(String::new, |v| v["fields"].to_string())
}

fn begin_fault(inst: &mut Installation, f: Fault) -> anyhow::Result<bool> {
    match f {
        Fault::KillCoordinator { which, .. } | Fault::FreezeCoordinator { which, .. } => {
            let c = &mut inst.coords[which];
            if c.down || c.frozen {
                return Ok(false);
            }
            if matches!(f, Fault::KillCoordinator { .. }) {
                c.proc.kill()?;
                c.down = true;
            } else {
                signal(c.proc.pid(), "STOP");
                c.frozen = true;
            }
        }
        Fault::KillAgent { which, .. } | Fault::FreezeAgent { which, .. } => {
            let a = &mut inst.agents[which];
            if a.down || a.frozen {
                return Ok(false);
            }
            if matches!(f, Fault::KillAgent { .. }) {
                a.proc.proc.kill()?;
                a.down = true;
            } else {
                signal(a.proc.proc.pid(), "STOP");
                a.frozen = true;
            }
        }
        Fault::RestartNats { .. } | Fault::FreezeNats { .. } => {
            if inst.nats_down || inst.nats_frozen {
                return Ok(false);
            }
            if matches!(f, Fault::RestartNats { .. }) {
                inst.nats.kill()?;
                inst.nats_down = true;
            } else {
                signal(inst.nats.pid(), "STOP");
                inst.nats_frozen = true;
            }
        }
    }
    Ok(true)
}

async fn end_fault(inst: &mut Installation, f: Fault, sh: &Arc<Shared>) -> anyhow::Result<()> {
    match f {
        Fault::KillCoordinator { which, .. } => {
            let c = &mut inst.coords[which];
            c.proc.restart()?;
            c.down = false;
            c.woken = false;
        }
        Fault::FreezeCoordinator { which, .. } => {
            let c = &mut inst.coords[which];
            signal(c.proc.pid(), "CONT");
            c.frozen = false;
            c.woken = true;
        }
        Fault::KillAgent { which, .. } | Fault::FreezeAgent { which, .. } => {
            // What the agent serves the moment it is back is what it held
            // while away: read the triggers first, then bring it back and
            // ask it at once.
            let knowns = sh.knowns();
            let t1s = read_triggers(sh, &knowns).await;
            let a = &mut inst.agents[which];
            if matches!(f, Fault::KillAgent { .. }) {
                a.proc.proc.restart()?;
                a.down = false;
                a.proc.wait_serving().await?;
            } else {
                signal(a.proc.proc.pid(), "CONT");
                a.frozen = false;
            }
            let agent = (a.proc.addr, a.segment.clone());
            let answers = ask_agent(sh, agent.0, &knowns).await;
            let t2s = read_triggers(sh, &knowns).await;
            check_agent(sh, &knowns, &t1s, &t2s, &agent.1, &answers, "agent back");
        }
        Fault::RestartNats { .. } => {
            inst.nats.restart().await?;
            inst.nats_down = false;
        }
        Fault::FreezeNats { .. } => {
            signal(inst.nats.pid(), "CONT");
            inst.nats_frozen = false;
        }
    }
    Ok(())
}

/// Brings everything back and waits for a leader.
async fn heal(
    inst: &mut Installation,
    sh: &Arc<Shared>,
    report: &mut Report,
) -> anyhow::Result<()> {
    watch_coordinators(inst, sh, report)?;
    let exited = inst.heal().await?;
    report.coordinator_self_exits += exited.len() as u64;
    // As a service manager would, keep starting coordinators that stop by
    // themselves (one woken up past its lease stops a moment after it is
    // continued) until one answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if inst.client.pipeline_list().await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return inst.wait_ready(Duration::from_millis(1)).await;
        }
        watch_coordinators(inst, sh, report)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- sampling

async fn read_triggers(sh: &Shared, knowns: &[Known]) -> Vec<Option<Trigger>> {
    join_all(
        knowns
            .iter()
            .map(|k| async { sh.client.trigger_get(k.id.clone()).await.ok() }),
    )
    .await
}

/// One agent's answers: (known index, unit index, answer).
async fn ask_agent(sh: &Shared, addr: SocketAddr, knowns: &[Known]) -> Vec<(usize, usize, Value)> {
    let mut asks = Vec::new();
    for (ki, k) in knowns.iter().enumerate() {
        for (ui, (user, country)) in UNITS.iter().enumerate() {
            let body =
                json!({"gate": k.plan.entity, "user": {"user_id": user, "country": country}});
            asks.push(async move {
                let r = tokio::time::timeout(
                    AGENT_TIMEOUT,
                    sh.http.post(addr, "/v1/check_gate", &body),
                )
                .await;
                match r {
                    Ok(Ok((200, v))) => Some((ki, ui, v)),
                    _ => None,
                }
            });
        }
    }
    join_all(asks).await.into_iter().flatten().collect()
}

fn check_agent(
    sh: &Shared,
    knowns: &[Known],
    t1s: &[Option<Trigger>],
    t2s: &[Option<Trigger>],
    segment: &str,
    answers: &[(usize, usize, Value)],
    when: &str,
) {
    for (ki, ui, ans) in answers {
        let (Some(Some(t1)), Some(Some(t2))) = (t1s.get(*ki), t2s.get(*ki)) else {
            continue;
        };
        sh.count("agents serve only what applied phases allow");
        if let Err(e) = oracle::check_answer(&knowns[*ki], t1, t2, segment, UNITS[*ui].1, ans) {
            sh.violation(format!("{e} ({when})"));
        }
    }
}

async fn sampler(sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::SeqCst) {
        let knowns = sh.knowns();
        let t1s = read_triggers(&sh, &knowns).await;
        let answers = join_all(
            sh.agents
                .iter()
                .map(|(addr, _)| ask_agent(&sh, *addr, &knowns)),
        )
        .await;
        let health = join_all(sh.agents.iter().map(|(addr, _)| async {
            tokio::time::timeout(AGENT_TIMEOUT, sh.http.get(*addr, "/healthz"))
                .await
                .ok()
                .and_then(Result::ok)
        }))
        .await;
        let t2s = read_triggers(&sh, &knowns).await;
        for ((_, segment), a) in sh.agents.iter().zip(&answers) {
            check_agent(&sh, &knowns, &t1s, &t2s, segment, a, "sampled");
        }
        for ((_, segment), h) in sh.agents.iter().zip(&health) {
            if let Some((_, h)) = h {
                sh.count("healthz names its segment");
                if h["segment"] != segment.as_str() {
                    sh.violation(format!("[healthz of the wrong segment] {segment}: {h}"));
                }
            }
        }
        for t in t2s.iter().flatten() {
            sh.count("history well formed");
            if let Err(e) = oracle::check_history(t) {
                sh.violation(e);
            }
            sh.count("agents' segments visible to triggers");
            if let Err(e) = oracle::check_segments_known(t, &sh.segments) {
                sh.violation(e);
            }
        }
        // Pacing the sampling, not synchronising.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- operators

async fn operate(sh: Arc<Shared>, i: usize, plan: RolloutPlan, base: (u64, bool)) {
    tokio::time::sleep_until(sh.t0 + Duration::from_millis(plan.start_ms)).await;
    let deadline = sh.t0 + Duration::from_millis(TIMELINE_MS) + DRIVE_DEADLINE;
    let Some(pipeline) = put_pipeline(&sh, &plan, deadline).await else {
        sh.violation(format!(
            "[no progress] {}: pipeline.put never answered ok",
            plan.entity
        ));
        return;
    };
    let Some(known) = put_gate(&sh, &plan, &pipeline, base, deadline).await else {
        sh.violation(format!(
            "[no progress] {}: gate.put never started a rollout",
            plan.entity
        ));
        return;
    };
    lock(&sh.known)[i] = Some(known.clone());
    let mut actions = plan.actions.iter().peekable();
    let timeline = sh.t0 + Duration::from_millis(TIMELINE_MS);
    while Instant::now() < timeline {
        if let Some((at, m)) = actions.peek()
            && sh.t0 + Duration::from_millis(*at) <= Instant::now()
        {
            act(&sh, &known.id, *m).await;
            actions.next();
            continue;
        }
        if auto_step(&sh, &known.id, false).await {
            break;
        }
        // Pacing the operator, not synchronising.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while !sh.healed.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drive(&sh, &known, plan.finish).await;
}

async fn put_pipeline(sh: &Shared, plan: &RolloutPlan, deadline: Instant) -> Option<String> {
    for attempt in 0.. {
        if Instant::now() >= deadline {
            return None;
        }
        let name = format!("s{}-{}-{attempt}", sh.seed, plan.entity);
        let actor = sh.actor();
        let p = serde_json::from_value(plan::pipeline_json(&name, &plan.phases)).ok()?;
        let r = sh.client.pipeline_put(p, Actor::new(&actor).ok()?).await;
        let answer = Answer::of(&r);
        sh.record(actor, Cmd::PipelinePut(name.clone()), answer);
        if answer == Answer::Ok {
            return Some(name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn put_gate(
    sh: &Shared,
    plan: &RolloutPlan,
    pipeline: &str,
    base: (u64, bool),
    deadline: Instant,
) -> Option<Known> {
    let spec = json!({"name": plan.entity, "pipeline": pipeline,
        "rules": [{"id": "r", "salt": format!("s{}", sh.seed), "pass_percentage": plan.new_pct}]});
    let name = EntityName::new(plan.entity).ok()?;
    let mut mine: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        let actor = sh.actor();
        mine.push(actor.clone());
        let r = sh
            .client
            .entity_put(
                EntityKind::Gate,
                serde_json::from_value(spec.clone()).ok()?,
                Actor::new(&actor).ok()?,
                None,
                None,
            )
            .await;
        sh.record(actor, Cmd::Put(plan.entity), Answer::of(&r));
        let mut trigger = r.ok().and_then(|r| r.trigger);
        if trigger.is_none() {
            // An earlier attempt may have started it (timed out, then done).
            trigger = sh
                .client
                .entity_get(EntityKind::Gate, name.clone())
                .await
                .ok()
                .and_then(|e| e.trigger)
                .filter(|t| mine.iter().any(|a| a == t.created_by.as_str()));
        }
        if let Some(t) = trigger {
            sh.count("a new trigger starts from the served version");
            if t.from_version != base.0 {
                sh.violation(format!(
                    "[trigger from_version is not the version served] {}: trigger {} from v{} but agents converged on v{}",
                    plan.entity, t.id, t.from_version, base.0
                ));
            }
            return Some(Known {
                plan: plan.clone(),
                id: t.id,
                from: t.from_version,
                to: t.to_version,
                old_value: base.1,
                new_value: plan.new_pct == 100,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Sends `m` about the trigger's current phase; `None` when the trigger
/// could not be read or is finished (nothing sent).
async fn act(sh: &Shared, id: &TriggerId, m: Manual) -> Option<Answer> {
    let t = sh.client.trigger_get(id.clone()).await.ok()?;
    if t.status != TriggerStatus::InProgress {
        return None;
    }
    let (action, with_phase) = match m {
        Manual::Approve => (TriggerAction::Approve, true),
        Manual::Pause { with_phase } => (TriggerAction::Pause, with_phase),
        Manual::Resume => (TriggerAction::Resume, true),
        Manual::Skip => (TriggerAction::Skip, true),
        Manual::Abort { with_phase } => (TriggerAction::Abort, with_phase),
        Manual::Rollout => (TriggerAction::Rollout, true),
    };
    let phase = if with_phase {
        t.current_phase_id.clone()
    } else {
        None
    };
    let actor = sh.actor();
    let r = sh
        .client
        .act(action, id.clone(), phase, Actor::new(&actor).ok()?, None)
        .await;
    let answer = Answer::of(&r);
    sh.record(actor, Cmd::Act(action, id.clone()), answer);
    Some(answer)
}

/// What an operator does unasked: approve what awaits approval, resume
/// what timed out applying (and, when `all`, anything paused). True once
/// the trigger is finished.
async fn auto_step(sh: &Shared, id: &TriggerId, all: bool) -> bool {
    let Ok(t) = sh.client.trigger_get(id.clone()).await else {
        return false;
    };
    if t.status != TriggerStatus::InProgress {
        return true;
    }
    if t.paused && (all || t.paused_reason == Some(PausedReason::ApplyTimeout)) {
        act(sh, id, Manual::Resume).await;
    } else if t.phase_state == Some(PhaseState::AwaitingApproval) {
        act(sh, id, Manual::Approve).await;
    }
    false
}

/// After healing: ends the rollout as the seed says, or drives it to the
/// end; a rollout that cannot finish is a violation, then aborted.
async fn drive(sh: &Shared, k: &Known, finish: Option<Manual>) {
    let deadline = Instant::now() + DRIVE_DEADLINE;
    let mut finish = finish;
    while Instant::now() < deadline {
        if let Some(m) = finish {
            match act(sh, &k.id, m).await {
                Some(Answer::Ok | Answer::Refused(_)) | None => finish = None,
                _ => {}
            }
        }
        if auto_step(sh, &k.id, true).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = sh.client.trigger_get(k.id.clone()).await;
    sh.violation(format!(
        "[no progress after healing] {} trigger {} not finished {DRIVE_DEADLINE:?} after every process was back: {}",
        k.plan.entity,
        k.id,
        t.as_ref().map_or_else(|e| e.to_string(), |t| format!("{}; history: {}", oracle::brief(t), oracle::history_line(t)))
    ));
    for _ in 0..20 {
        if let Some(Answer::Ok | Answer::Refused(_)) | None =
            act(sh, &k.id, Manual::Abort { with_phase: false }).await
        {
            return;
        }
    }
}

// ---------------------------------------------------------------- the end

/// Every reachable agent serves the final version of each rollout.
async fn converge(sh: &Shared, healed_at: Instant, report: &mut Report) {
    let knowns = sh.knowns();
    for k in &knowns {
        let Ok(t) = wait_answer(|| sh.client.trigger_get(k.id.clone())).await else {
            continue;
        };
        let (version, value) = match t.status {
            TriggerStatus::Completed => (k.to, k.new_value),
            TriggerStatus::Aborted => (k.from, k.old_value),
            TriggerStatus::InProgress => continue,
        };
        for (addr, segment) in &sh.agents {
            for (user, country) in UNITS {
                sh.count("agents converge on the final version");
                let body =
                    json!({"gate": k.plan.entity, "user": {"user_id": user, "country": country}});
                let seen = crate::wait_for("", CONVERGE_DEADLINE, || async {
                    let (_, v) = tokio::time::timeout(
                        AGENT_TIMEOUT,
                        sh.http.post(*addr, "/v1/check_gate", &body),
                    )
                    .await
                    .map_err(|_| "no answer".to_owned())?
                    .map_err(|e| e.to_string())?;
                    if v["version"] == version && v["value"] == value && v["trigger_id"].is_null() {
                        Ok(())
                    } else {
                        Err(v.to_string())
                    }
                })
                .await;
                match seen {
                    Ok(()) => {
                        let ms = u64::try_from(healed_at.elapsed().as_millis()).unwrap_or(0);
                        report.slowest_convergence_ms = report.slowest_convergence_ms.max(ms);
                    }
                    Err(e) => sh.violation(format!(
                        "[agent did not converge] {} trigger {} {:?}: agent of {segment} should serve v{version} ({value}) as its base: {e}",
                        k.plan.entity, k.id, t.status
                    )),
                }
            }
        }
    }
}

/// `ok` commands are reflected; `unavailable` ones took no effect.
async fn check_ledger(sh: &Shared) {
    let records = lock(&sh.records).clone();
    let mut triggers: BTreeMap<String, Trigger> = BTreeMap::new();
    for e in ENTITIES {
        for t in list_triggers(sh, e).await {
            triggers.insert(t.id.as_str().to_owned(), t);
        }
    }
    for r in &records {
        check_record(sh, r, &triggers).await;
    }
}

/// Every trigger of gate `e`, whole.
async fn list_triggers(sh: &Shared, e: &str) -> Vec<Trigger> {
    let Ok(name) = EntityName::new(e) else {
        return Vec::new();
    };
    let req = TriggerListRequest {
        entity_kind: Some(EntityKind::Gate),
        entity_name: Some(name),
        limit: Some(1000),
        ..TriggerListRequest::default()
    };
    let Ok(list) = wait_answer(|| sh.client.trigger_list(req.clone())).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in list {
        if let Ok(t) = wait_answer(|| sh.client.trigger_get(s.id.clone())).await {
            out.push(t);
        }
    }
    out
}

async fn check_record(sh: &Shared, r: &Record, triggers: &BTreeMap<String, Trigger>) {
    let ok = r.answer == Answer::Ok;
    let never = r.answer.never_takes_effect();
    if !ok && !never {
        return;
    }
    sh.count("commands: ok reflected, unavailable without effect");
    let by_actor = |t: &Trigger| t.history.iter().any(|h| h.actor.as_str() == r.actor);
    let seen = match &r.cmd {
        Cmd::PipelinePut(name) => {
            let Ok(n) = PipelineName::new(name.as_str()) else {
                return;
            };
            match sh.client.pipeline_get(n).await {
                Ok(_) => true,
                Err(e) if e.code() == ErrorCode::NotFound => false,
                Err(_) => return,
            }
        }
        Cmd::Put(_) => triggers.values().any(|t| t.created_by.as_str() == r.actor),
        Cmd::Act(a, id) => {
            let Some(t) = triggers.get(id.as_str()) else {
                return;
            };
            if ok {
                let kind = history_kind(*a);
                let entry = t
                    .history
                    .iter()
                    .any(|h| h.actor.as_str() == r.actor && h.kind == kind);
                let status_ok = match a {
                    TriggerAction::Abort => t.status == TriggerStatus::Aborted,
                    TriggerAction::Rollout => t.status == TriggerStatus::Completed,
                    _ => true,
                };
                entry && status_ok
            } else {
                by_actor(t)
            }
        }
    };
    if ok && !seen {
        sh.violation(format!(
            "[ok command not reflected] {:?} by {} answered ok, but the final state does not show it",
            r.cmd, r.actor
        ));
    }
    if never && seen {
        sh.violation(format!(
            "[unavailable command took effect] {:?} by {} answered {}, yet the final state shows it",
            r.cmd,
            r.actor,
            r.answer.label()
        ));
    }
}

/// At the end of the run: no command answered `unavailable` took effect
/// later, in any episode.
pub(super) async fn final_ledger_check(inst: &Installation, report: &mut Report) {
    let sh = Shared {
        seed: 0,
        client: inst.client.clone(),
        http: Http::default(),
        agents: Vec::new(),
        segments: Vec::new(),
        known: Mutex::new(Vec::new()),
        records: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        checks: Mutex::new(BTreeMap::new()),
        next_actor: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        healed: AtomicBool::new(true),
        t0: Instant::now(),
    };
    let mut triggers: Vec<Trigger> = Vec::new();
    for e in ENTITIES {
        triggers.extend(list_triggers(&sh, e).await);
    }
    for r in report
        .records
        .iter()
        .filter(|r| r.answer.never_takes_effect())
    {
        *report
            .checks
            .entry("unavailable commands never take effect (end of run)")
            .or_default() += 1;
        let hit = triggers.iter().find(|t| {
            t.created_by.as_str() == r.actor
                || t.history.iter().any(|h| h.actor.as_str() == r.actor)
        });
        if let Some(t) = hit {
            report.violations.entry(r.seed).or_default().push(format!(
                "[unavailable command took effect later] {:?} by {} answered {}; trigger {} shows it: {}",
                r.cmd,
                r.actor,
                r.answer.label(),
                t.id,
                oracle::history_line(t)
            ));
        }
    }
}
