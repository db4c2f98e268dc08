//! An agent's state directory evaluated offline with `phasegate-eval`: what
//! does user X get in this segment, from the files alone (no NATS, no agent
//! running). `offline_eval [STATE_DIR [USER_ID]]`; without a directory it
//! writes a small one first.

use phasegate_agent::state::{DiskState, Loaded, Store, StoredDesired};
use phasegate_eval::{AgentContext, CompiledState};
use phasegate_proto::{DesiredEntity, EntityKind, EntityName, Segment, User};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    run(std::env::args().skip(1))
}

fn run(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let sample = tempfile::tempdir()?;
    let dir = match args.next() {
        Some(dir) => dir.into(),
        None => write_sample(sample.path())?,
    };
    let user: User =
        serde_json::from_value(json!({"user_id": args.next().unwrap_or("u-1".into())}))?;

    let (_, loaded) = Store::open(&dir);
    let Loaded::Ok { state, .. } = loaded else {
        anyhow::bail!("{}: no usable state ({loaded:?})", dir.display());
    };
    let segment = state
        .segment
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no segment"))?;
    let agent = AgentContext::new(segment.as_str(), None);
    for stored in state.entities.values() {
        let d = &stored.desired;
        // What this segment serves of it: the base, plus its rollout phases.
        let view = phasegate_model::desired::view(d, segment.as_str());
        let compiled = CompiledState::new(d.kind, &view)?;
        let answer = compiled.evaluate(&user, &agent);
        println!(
            "{segment} {} {}: {} (version {}, {})",
            d.kind,
            d.name,
            answer.value.to_json(),
            answer.version,
            answer.reason
        );
    }
    Ok(())
}

/// A state directory of segment `dev` holding gate `new-checkout` at 50 %.
fn write_sample(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let spec = serde_json::from_value(json!({"kind": "gate", "name": "new-checkout",
        "version": 1, "rules": [{"id": "half", "pass_percentage": 50}]}))?;
    let mut state = DiskState {
        segment: Some(Segment::new("dev")?),
        ..DiskState::default()
    };
    let desired = DesiredEntity {
        kind: EntityKind::Gate,
        name: EntityName::new("new-checkout")?,
        base: Some(spec),
        rollout: None,
    };
    state.entities.insert(
        "gate.new-checkout".into(),
        StoredDesired {
            revision: 1,
            desired,
        },
    );
    let (mut store, _) = Store::open(dir);
    store.replace(&state)?;
    Ok(dir.to_path_buf())
}

#[test]
fn runs() -> anyhow::Result<()> {
    run(std::iter::empty())
}
