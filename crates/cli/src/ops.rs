//! The operator commands over the command API (SPEC.md §6).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use phasegate_client::{PhasegateClient, TriggerAction};
use phasegate_proto::{
    EntityKind, EntityName, EntitySpec, PhaseId, Pipeline, PipelineName, Segment, TriggerId,
    TriggerListRequest,
};

use crate::Global;
use crate::output::{say, show};
use crate::render;
// The demo (crates/cli/src/demo.rs) still takes the history line from here.

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
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(EntityKind::WORDS))]
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

/// `phasegate pipeline …`.
pub(crate) async fn pipeline(g: &Global, cmd: PipelineCmd) -> anyhow::Result<()> {
    let c = g.client().await?;
    match cmd {
        PipelineCmd::Put { file } => {
            let p: Pipeline = read_doc(&file)?;
            let p = c.pipeline_put(p, g.actor()?).await?;
            show(g.output, &p, render::pipeline_stored)
        }
        PipelineCmd::Get { name } => {
            let p = c.pipeline_get(PipelineName::new(name)?).await?;
            show(g.output, &p, render::pipeline)
        }
        PipelineCmd::List => show(g.output, &c.pipeline_list().await?, |ps| {
            render::pipelines(ps)
        }),
        PipelineCmd::Delete { name } => {
            let name = PipelineName::new(name)?;
            c.pipeline_delete(name.clone(), g.actor()?).await?;
            show(g.output, &serde_json::json!({}), |_| {
                say!("pipeline {name} deleted")
            })
        }
    }
}

/// `phasegate gate …` and `phasegate config …`.
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
            show(g.output, &r, |r| render::entity_stored(kind, r))
        }
        EntityCmd::Get { name } => {
            let r = c.entity_get(kind, EntityName::new(name)?).await?;
            show(g.output, &r, |r| render::entity(kind, r))
        }
        EntityCmd::List => show(g.output, &c.entity_list(kind).await?, |specs| {
            render::entities(specs)
        }),
        EntityCmd::Delete { name } => {
            let name = EntityName::new(name)?;
            c.entity_delete(kind, name.clone(), g.actor()?).await?;
            show(g.output, &serde_json::json!({}), |_| {
                say!("{kind} {name} deleted")
            })
        }
    }
}

/// `phasegate trigger …`; returns the exit code (`watch` has its own).
pub(crate) async fn trigger(g: &Global, cmd: TriggerCmd) -> anyhow::Result<u8> {
    let c = g.client().await?;
    let (action, args) = match cmd {
        TriggerCmd::List {
            kind,
            entity,
            status,
        } => {
            let filter = trigger_filter(kind, entity, status)?;
            show(g.output, &c.trigger_list(filter).await?, |ts| {
                render::triggers(ts)
            })?;
            return Ok(0);
        }
        TriggerCmd::Get { id } => {
            let t = c.trigger_get(TriggerId::new(id)?).await?;
            show(g.output, &t, render::trigger)?;
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
    act(g, &c, action, args).await?;
    Ok(0)
}

/// The filter of `trigger list` from its flags.
fn trigger_filter(
    kind: Option<String>,
    entity: Option<String>,
    status: Option<String>,
) -> anyhow::Result<TriggerListRequest> {
    Ok(TriggerListRequest {
        entity_kind: kind.map(|k| k.parse::<EntityKind>()).transpose()?,
        entity_name: entity.map(EntityName::new).transpose()?,
        status: status
            .map(|s| serde_json::from_value(serde_json::Value::String(s)))
            .transpose()?,
        ..TriggerListRequest::default()
    })
}

/// `trigger approve|pause|resume|skip|rollout|abort`.
async fn act(
    g: &Global,
    c: &PhasegateClient,
    action: TriggerAction,
    args: ActArgs,
) -> anyhow::Result<()> {
    let id = TriggerId::new(args.id)?;
    let phase = match args.phase {
        Some(p) => Some(PhaseId::new(p)?),
        None => {
            // Take the phase from the trigger, and say which: nobody should
            // act on a phase they did not look at.
            let t = c.trigger_get(id.clone()).await?;
            if let Some(p) = &t.current_phase_id {
                eprintln!("acting on phase {p} ({})", render::trigger_state(&t));
            }
            t.current_phase_id
        }
    };
    let t = c.act(action, id, phase, g.actor()?, args.comment).await?;
    show(g.output, &t, render::acted)
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

/// `agents [--segment S]`.
pub(crate) async fn agents(g: &Global, segment: Option<String>) -> anyhow::Result<()> {
    let c = g.client().await?;
    let segment = segment.map(Segment::new).transpose()?;
    show(g.output, &c.agents(segment).await?, |list| {
        render::agents(list)
    })
}
