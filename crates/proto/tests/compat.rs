//! Mixed versions during an upgrade (deploy/README.md, "Upgrade order"):
//! the records an agent and a coordinator exchange are read by the other
//! side whether the sender is one version newer (fields the reader does not
//! know are ignored) or older (fields it did not send take their defaults),
//! in MessagePack as stored and sent.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use phasegate_proto::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// `value` with `key` added (a newer sender) or removed (an older one), as
/// MessagePack maps, decoded back into `T`.
fn reencoded<T: Serialize + DeserializeOwned>(value: &T, edit: impl FnOnce(&mut Value)) -> T {
    let mut v = serde_json::to_value(value).unwrap();
    edit(&mut v);
    let bytes = encode(Encoding::MsgPack, &v).unwrap();
    decode(Encoding::MsgPack, &bytes).unwrap()
}

fn report() -> AgentReport {
    serde_json::from_value(json!({
        "agent_id": "eu-1", "segment": "eu", "tier": "production", "healthy": true,
        "applied_revision": 7, "stale": false, "heartbeat_ms": 1000,
        "sent_at_ms": 1, "blocked": [], "leaving": false
    }))
    .unwrap()
}

#[test]
fn a_newer_agents_report_is_read_by_an_older_coordinator() {
    let back: AgentReport = reencoded(&report(), |v| {
        v["region_latency_ms"] = json!(12);
        v["capabilities"] = json!({"ofrep": true});
    });
    assert_eq!(back, report());
}

#[test]
fn an_older_agents_report_is_read_by_a_newer_coordinator() {
    let back: AgentReport = reencoded(&report(), |v| {
        let m = v.as_object_mut().unwrap();
        for optional in ["tier", "stale", "blocked", "leaving"] {
            m.remove(optional);
        }
    });
    assert_eq!(back.applied_revision, 7);
    assert_eq!(back.tier, None);
    assert!(!back.stale && back.blocked.is_empty());
}

#[test]
fn a_newer_coordinators_desired_state_is_read_by_an_older_agent() {
    let desired: DesiredEntity = serde_json::from_value(json!({
        "kind": "gate", "name": "g",
        "base": {"name": "g", "rules": [{"id": "all", "pass_percentage": 100}]}
    }))
    .unwrap();
    let back: DesiredEntity = reencoded(&desired, |v| {
        v["published_by"] = json!("coordinator-2");
        v["base"]["owner_team"] = json!("payments");
    });
    assert_eq!(back, desired);
    // And without what an older coordinator may leave out.
    let back: DesiredEntity = reencoded(&desired, |v| {
        v.as_object_mut().unwrap().remove("rollout");
    });
    assert_eq!(back, desired);
}
