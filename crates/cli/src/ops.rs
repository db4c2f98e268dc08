//! The operator commands over the command API (SPEC.md §6).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use phasegate_client::TriggerAction;
use phasegate_proto::{
    EntityKind, EntityName, EntitySpec, Phase, PhaseId, Pipeline, PipelineName, Segment, Trigger,
    TriggerId, TriggerListRequest, TriggerStatus,
};

use crate::Global;
use crate::output::{Table, clock, dur, opt, sanitize, say, show};

/// `phasegate pipeline …`
#[derive(Debug, Subcommand)]
pub(crate) enum PipelineCmd {
    /// Create or replace a pipeline from a TOML or JSON file.
    Put {
        /// The pipeline document.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Show one pipeline.
    Get {
        /// Its name.
        name: String,
    },
    /// List pipelines.
    List,
    /// Delete a pipeline no entity uses.
    Delete {
        /// Its name.
        name: String,
    },
}

/// `phasegate gate …` and `phasegate config …`
#[derive(Debug, Subcommand)]
pub(crate) enum EntityCmd {
    /// Create or change one from a TOML or JSON spec file; with a pipeline
    /// attached, a behaviour change starts a rollout.
    Put {
        /// The spec document.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Recorded on the rollout.
        #[arg(long)]
        comment: Option<String>,
        /// Refuse unless the latest version is this one.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Show one, with its active rollout.
    Get {
        /// Its name.
        name: String,
    },
    /// List them.
    List,
    /// Delete one (everywhere at once).
    Delete {
        /// Its name.
        name: String,
    },
}

/// `phasegate trigger …`
#[derive(Debug, Subcommand)]
pub(crate) enum TriggerCmd {
    /// List rollouts, newest first.
    List {
        /// Only gates or configs.
        #[arg(long, value_parser = ["gate", "config"])]
        kind: Option<String>,
        /// Only this entity.
        #[arg(long)]
        entity: Option<String>,
        /// Only this status.
        #[arg(long, value_parser = ["in_progress", "completed", "aborted"])]
        status: Option<String>,
    },
    /// Show one rollout: phases, segments, approvals, history.
    Get {
        /// The trigger id.
        id: String,
    },
    /// Follow a rollout live until it finishes (exit 0 completed, 20 aborted).
    Watch {
        /// The trigger id.
        id: String,
        /// Refresh interval in ms.
        #[arg(long, default_value_t = 250)]
        interval_ms: u64,
    },
    /// Approve the current phase.
    Approve(ActArgs),
    /// Stop all progress, keeping the remaining bake time.
    Pause(ActArgs),
    /// Continue after a pause.
    Resume(ActArgs),
    /// End the current phase now.
    Skip(ActArgs),
    /// Full roll-out: the new version everywhere now.
    Rollout(ActArgs),
    /// Roll back everywhere; irreversible.
    Abort(ActArgs),
}

/// Arguments of an action.
#[derive(Debug, clap::Args)]
pub(crate) struct ActArgs {
    /// The trigger id.
    id: String,
    /// The phase you act on [default: the current one, shown].
    #[arg(long)]
    phase: Option<String>,
    /// Recorded in history.
    #[arg(long, short = 'm')]
    comment: Option<String>,
}

/// Reads a TOML or JSON document, refusing unknown keys.
pub(crate) fn read_doc<T: serde::de::DeserializeOwned + serde::Serialize>(
    file: &PathBuf,
) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let value: serde_json::Value = if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{}", file.display()))?
    } else {
        let v: toml::Value =
            toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
        serde_json::to_value(v)?
    };
    crate::apply::strict(&value, &file.display().to_string())
}

pub(crate) async fn pipeline(g: &Global, cmd: PipelineCmd) -> anyhow::Result<()> {
    let c = g.client().await?;
    match cmd {
        PipelineCmd::Put { file } => {
            let p: Pipeline = read_doc(&file)?;
            let p = c.pipeline_put(p, g.actor()?).await?;
            show(g.output, &p, |p| {
                say!("pipeline {} stored ({} phases)", p.name, p.phases.len())
            })?;
        }
        PipelineCmd::Get { name } => {
            let p = c.pipeline_get(PipelineName::new(name)?).await?;
            show(g.output, &p, print_pipeline)?;
        }
        PipelineCmd::List => {
            let ps = c.pipeline_list().await?;
            show(g.output, &ps, |ps| {
                let mut t = Table::new(&["NAME", "PHASES", "DESCRIPTION"]);
                for p in ps {
                    let ids: Vec<&str> = p.phases.iter().map(|ph| ph.id.as_str()).collect();
                    t.row(vec![
                        p.name.to_string(),
                        ids.join(" → "),
                        p.description.clone(),
                    ]);
                }
                t.print();
            })?;
        }
        PipelineCmd::Delete { name } => {
            let name = PipelineName::new(name)?;
            c.pipeline_delete(name.clone(), g.actor()?).await?;
            show(g.output, &serde_json::json!({}), |_| {
                say!("pipeline {name} deleted")
            })?;
        }
    }
    Ok(())
}

fn phase_row(ph: &Phase) -> Vec<String> {
    let segs: Vec<&str> = ph.segments.iter().map(|s| s.as_str()).collect();
    let approval = if ph.approval.required {
        let who: Vec<&str> = ph.approval.approvers.iter().map(|a| a.as_str()).collect();
        format!(
            "{} of {}",
            ph.approval.min_approvals,
            if who.is_empty() {
                "anyone".to_owned()
            } else {
                who.join(",")
            }
        )
    } else {
        "-".to_owned()
    };
    vec![
        ph.id.to_string(),
        segs.join(","),
        format!("{}%", ph.pass_percentage),
        dur(ph.wait_ms),
        approval,
        format!(
            "{} <{}",
            serde_json::to_value(ph.health.on_unhealthy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            ph.health.min_healthy_ratio
        ),
    ]
}

fn print_pipeline(p: &Pipeline) {
    say!(
        "pipeline {}{}",
        p.name,
        if p.description.is_empty() {
            String::new()
        } else {
            format!(": {}", p.description)
        }
    );
    let mut t = Table::new(&[
        "PHASE",
        "SEGMENTS",
        "SHARE",
        "BAKE",
        "APPROVAL",
        "ON UNHEALTHY",
    ]);
    for ph in &p.phases {
        t.row(phase_row(ph));
    }
    t.print();
    if let Some(analyses) = crate::analysis::pipeline_table(p) {
        println!();
        analyses.print();
    }
}

pub(crate) async fn entity(g: &Global, kind: EntityKind, cmd: EntityCmd) -> anyhow::Result<()> {
    let c = g.client().await?;
    match cmd {
        EntityCmd::Put {
            file,
            comment,
            expected_version,
        } => {
            let spec: EntitySpec = read_doc(&file)?;
            let r = c
                .entity_put(kind, spec, g.actor()?, comment, expected_version)
                .await?;
            show(g.output, &r, |r| {
                say!("{kind} {} is at version {}", r.spec.name, r.spec.version);
                if let Some(t) = &r.trigger {
                    say!(
                        "rollout {} started through pipeline {} (phase {}); follow it with: phasegate trigger watch {}",
                        t.id,
                        t.pipeline,
                        opt(t.current_phase_id.as_ref()),
                        t.id
                    );
                }
            })?;
        }
        EntityCmd::Get { name } => {
            let r = c.entity_get(kind, EntityName::new(name)?).await?;
            show(g.output, &r, |r| {
                let s = &r.spec;
                say!(
                    "{kind} {} v{} {}",
                    s.name,
                    s.version,
                    if s.enabled { "enabled" } else { "DISABLED" }
                );
                say!("pipeline: {}", opt(s.pipeline.as_ref()));
                if !s.description.is_empty() {
                    say!("description: {}", s.description);
                }
                let mut t = Table::new(&["RULE", "SHARE", "CONDITIONS"]);
                for rule in &s.rules {
                    let conds: Vec<String> = rule
                        .conditions
                        .iter()
                        .map(|c| {
                            format!(
                                "{} {} {}",
                                c.field,
                                serde_json::to_value(c.op)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_owned))
                                    .unwrap_or_default(),
                                serde_json::to_string(&c.values).unwrap_or_default()
                            )
                        })
                        .collect();
                    t.row(vec![
                        rule.id.to_string(),
                        format!("{}%", rule.pass_percentage),
                        if conds.is_empty() {
                            "everyone".into()
                        } else {
                            conds.join(" and ")
                        },
                    ]);
                }
                t.print();
                if let Some(tr) = &r.trigger {
                    say!(
                        "active rollout {}: phase {} {}",
                        tr.id,
                        opt(tr.current_phase_id.as_ref()),
                        state_of(tr)
                    );
                }
            })?;
        }
        EntityCmd::List => {
            let specs = c.entity_list(kind).await?;
            show(g.output, &specs, |specs| {
                let mut t = Table::new(&["NAME", "VERSION", "ENABLED", "RULES", "PIPELINE"]);
                for s in specs {
                    t.row(vec![
                        s.name.to_string(),
                        s.version.to_string(),
                        s.enabled.to_string(),
                        s.rules.len().to_string(),
                        opt(s.pipeline.as_ref()),
                    ]);
                }
                t.print();
            })?;
        }
        EntityCmd::Delete { name } => {
            let name = EntityName::new(name)?;
            c.entity_delete(kind, name.clone(), g.actor()?).await?;
            show(g.output, &serde_json::json!({}), |_| {
                say!("{kind} {name} deleted")
            })?;
        }
    }
    Ok(())
}

/// `in_progress: baking`, `paused (health)`, `completed` …
pub(crate) fn state_of(t: &Trigger) -> String {
    summary_state(&t.into())
}

/// The state column of a trigger summary.
pub(crate) fn summary_state(t: &phasegate_proto::TriggerSummary) -> String {
    let word = |v: serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_default();
    match t.status {
        TriggerStatus::InProgress => {
            let state = t
                .phase_state
                .map(|s| word(serde_json::to_value(s).unwrap_or_default()))
                .unwrap_or_default();
            match (t.paused, t.paused_reason) {
                (true, Some(r)) => format!(
                    "{state}, paused ({})",
                    word(serde_json::to_value(r).unwrap_or_default())
                ),
                (true, None) => format!("{state}, paused"),
                _ => state,
            }
        }
        s => word(serde_json::to_value(s).unwrap_or_default()),
    }
}

pub(crate) fn print_trigger(t: &Trigger) {
    say!(
        "trigger {}  {} {}  v{} → v{}  pipeline {}  by {}",
        t.id,
        t.entity.kind,
        t.entity.name,
        t.from_version,
        t.to_version,
        t.pipeline,
        t.created_by
    );
    say!("status: {}", state_of(t));
    let mut table = Table::new(&[
        "",
        "PHASE",
        "SEGMENTS",
        "SHARE",
        "BAKE",
        "APPROVAL",
        "ON UNHEALTHY",
    ]);
    for (i, ph) in t.pipeline_snapshot.phases.iter().enumerate() {
        let mark = match (t.status, (i as u32).cmp(&t.current_phase)) {
            (TriggerStatus::Completed, _) | (_, std::cmp::Ordering::Less) => "done",
            (TriggerStatus::InProgress, std::cmp::Ordering::Equal) => "→",
            _ => "",
        };
        let mut row = vec![mark.to_owned()];
        row.extend(phase_row(ph));
        table.row(row);
    }
    table.print();
    if let Some(end) = t.phase_ends_at_ms {
        say!("bake ends at {} UTC", clock(end));
    }
    if let Some(left) = t.remaining_wait_ms {
        say!("bake left when resumed: {}", dur(left));
    }
    if !t.approvals.is_empty() {
        let who: Vec<String> = t.approvals.iter().map(|a| a.actor.to_string()).collect();
        say!("approved by: {}", who.join(", "));
    }
    let mut segs = Table::new(&["SEGMENT", "NEW VERSION", "LIVE", "APPLIED", "HEALTHY"]);
    for (name, s) in &t.segments {
        segs.row(vec![
            name.clone(),
            if s.version_active {
                "active".into()
            } else {
                "-".into()
            },
            s.agents_live.to_string(),
            s.agents_applied.to_string(),
            s.agents_healthy.to_string(),
        ]);
    }
    println!();
    segs.print();
    if let Some(analyses) = crate::analysis::table(t) {
        println!();
        analyses.print();
    }
    println!();
    for h in &t.history {
        println!("{}", history_line(h));
    }
}

/// One history entry as a line, [`sanitize`]d: actors and comments are
/// anybody's text.
pub(crate) fn history_line(h: &phasegate_proto::HistoryEntry) -> String {
    let kind = serde_json::to_value(h.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let line = format!(
        "{}  {:<16} {:<14} {}{}",
        clock(h.at_ms),
        kind,
        opt(h.phase_id.as_ref()),
        h.actor,
        h.comment
            .as_ref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default()
    );
    sanitize(&line).into_owned()
}

pub(crate) async fn trigger(g: &Global, cmd: TriggerCmd) -> anyhow::Result<u8> {
    let c = g.client().await?;
    let (action, args) = match cmd {
        TriggerCmd::List {
            kind,
            entity,
            status,
        } => {
            let filter = TriggerListRequest {
                entity_kind: kind.map(|k| {
                    if k == "config" {
                        EntityKind::Config
                    } else {
                        EntityKind::Gate
                    }
                }),
                entity_name: entity.map(EntityName::new).transpose()?,
                status: status
                    .map(|s| serde_json::from_value(serde_json::Value::String(s)))
                    .transpose()?,
                ..TriggerListRequest::default()
            };
            let ts = c.trigger_list(filter).await?;
            show(g.output, &ts, |ts| {
                let mut t = Table::new(&[
                    "ID", "ENTITY", "VERSIONS", "PIPELINE", "PHASE", "STATE", "CREATED",
                ]);
                for tr in ts {
                    t.row(vec![
                        tr.id.to_string(),
                        format!("{} {}", tr.entity.kind, tr.entity.name),
                        format!("{}→{}", tr.from_version, tr.to_version),
                        tr.pipeline.to_string(),
                        opt(tr.current_phase_id.as_ref()),
                        summary_state(tr),
                        clock(tr.created_at_ms),
                    ]);
                }
                t.print();
            })?;
            return Ok(0);
        }
        TriggerCmd::Get { id } => {
            let t = c.trigger_get(TriggerId::new(id)?).await?;
            show(g.output, &t, print_trigger)?;
            return Ok(0);
        }
        TriggerCmd::Watch { id, interval_ms } => {
            return crate::watch::watch(g, &c, TriggerId::new(id)?, interval_ms).await;
        }
        TriggerCmd::Approve(a) => (TriggerAction::Approve, a),
        TriggerCmd::Pause(a) => (TriggerAction::Pause, a),
        TriggerCmd::Resume(a) => (TriggerAction::Resume, a),
        TriggerCmd::Skip(a) => (TriggerAction::Skip, a),
        TriggerCmd::Rollout(a) => (TriggerAction::Rollout, a),
        TriggerCmd::Abort(a) => (TriggerAction::Abort, a),
    };
    let id = TriggerId::new(args.id)?;
    let phase = match args.phase {
        Some(p) => Some(PhaseId::new(p)?),
        None => {
            // Take the phase from the trigger, and say which: nobody should
            // act on a phase they did not look at.
            let t = c.trigger_get(id.clone()).await?;
            if let Some(p) = &t.current_phase_id {
                eprintln!("acting on phase {p} ({})", state_of(&t));
            }
            t.current_phase_id
        }
    };
    let t = c.act(action, id, phase, g.actor()?, args.comment).await?;
    show(g.output, &t, |t| {
        say!(
            "trigger {}: phase {} {}",
            t.id,
            opt(t.current_phase_id.as_ref()),
            state_of(t)
        );
    })?;
    Ok(0)
}

/// `agents --forget ID`.
pub(crate) async fn agent_forget(g: &Global, id: &str) -> anyhow::Result<()> {
    let c = g.client().await?;
    c.agent_forget(phasegate_proto::AgentId::new(id)?, g.actor()?)
        .await?;
    show(g.output, &serde_json::json!({}), |_| {
        say!("agent {id} forgotten");
    })
}

pub(crate) async fn agents(g: &Global, segment: Option<String>) -> anyhow::Result<()> {
    let c = g.client().await?;
    let segment = segment.map(Segment::new).transpose()?;
    let list = c.agents(segment).await?;
    show(g.output, &list, |list| {
        let mut t = Table::new(&[
            "AGENT",
            "SEGMENT",
            "TIER",
            "LIVE",
            "HEALTHY",
            "STALE",
            "APPLIED",
            "BLOCKED",
            "LAST SEEN",
        ]);
        for a in list {
            let blocked: Vec<&str> = a.blocked.iter().map(|b| b.key.as_str()).collect();
            t.row(vec![
                a.agent_id.to_string(),
                a.segment.to_string(),
                opt(a.tier.as_ref()),
                a.live.to_string(),
                a.healthy.to_string(),
                a.stale.to_string(),
                a.applied_revision.to_string(),
                if blocked.is_empty() {
                    "-".to_owned()
                } else {
                    blocked.join(",")
                },
                clock(a.last_seen_ms),
            ]);
        }
        t.print();
    })?;
    Ok(())
}
