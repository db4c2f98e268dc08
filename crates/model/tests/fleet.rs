//! The fleet of SPEC.md §4 (*silence is not success*), checked against a
//! brute-force reference over random reports, silences, clean leaves,
//! forgets and coordinator restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::collections::BTreeMap;

use phasegate_model::fleet::{Fleet, SegmentFleet};
use phasegate_proto::{AgentId, AgentRecord, AgentReport, BlockedEntity, Segment};
use proptest::prelude::*;

const SEGMENTS: [&str; 3] = ["dev", "eu.prod", "prod-us"];
const KEY: &str = "gate.g";
const REVISION: u64 = 3;
const FORGET_MS: u64 = 2_000;

#[derive(Debug, Clone)]
enum Step {
    Report {
        agent: usize,
        segment: usize,
        healthy: bool,
        applied: u64,
        blocked: bool,
        heartbeat_ms: u64,
    },
    Leave(usize),
    Forget(usize),
    Wait(u64),
    Expire,
    Restart,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..5, 0usize..3, any::<bool>(), 0u64..6, proptest::bool::weighted(0.2), 10u64..60)
            .prop_map(|(agent, segment, healthy, applied, blocked, heartbeat_ms)| Step::Report {
                agent, segment, healthy, applied, blocked, heartbeat_ms
            }),
        1 => (0usize..5).prop_map(Step::Leave),
        1 => (0usize..5).prop_map(Step::Forget),
        4 => (0u64..400).prop_map(Step::Wait),
        3 => Just(Step::Expire),
        1 => Just(Step::Restart),
    ]
}

/// What the reference remembers of one agent.
#[derive(Debug, Clone)]
struct Ref {
    segment: usize,
    healthy: bool,
    applied: u64,
    blocked: bool,
    heartbeat_ms: u64,
    last_seen: u64,
    heard: bool,
}

fn agent_id(i: usize) -> AgentId {
    AgentId::new(format!("a{i}")).unwrap()
}

fn expected(agents: &BTreeMap<usize, Ref>, segment: usize, now: u64) -> SegmentFleet {
    let mut f = SegmentFleet {
        settled: true,
        ..SegmentFleet::default()
    };
    for a in agents.values().filter(|a| a.segment == segment) {
        let window = a.heartbeat_ms * 3;
        let quiet = now - a.last_seen;
        f.known += 1;
        f.settled &= a.heard || quiet > window;
        if a.heard && quiet <= window {
            f.live += 1;
            f.healthy += u32::from(a.healthy);
            f.applied += u32::from(a.applied >= REVISION && !a.blocked);
        }
    }
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn fleet_matches_reference(steps in proptest::collection::vec(arb_step(), 1..80)) {
        let mut fleet = Fleet::new(FORGET_MS);
        let mut reference: BTreeMap<usize, Ref> = BTreeMap::new();
        // What each segment's triggers were last told.
        let mut told: BTreeMap<usize, SegmentFleet> = (0..SEGMENTS.len())
            .map(|s| (s, fleet.segment(SEGMENTS[s], KEY, REVISION, 0)))
            .collect();
        let mut now = 0u64;
        for step in steps {
            let changes = match step {
                Step::Report { agent, segment, healthy, applied, blocked, heartbeat_ms } => {
                    let report = AgentReport {
                        agent_id: agent_id(agent),
                        segment: Segment::new(SEGMENTS[segment]).unwrap(),
                        tier: None,
                        healthy,
                        applied_revision: applied,
                        stale: false,
                        heartbeat_ms,
                        sent_at_ms: now,
                        blocked: if blocked {
                            vec![BlockedEntity { key: KEY.into(), revision: REVISION, error: "bad".into() }]
                        } else {
                            Vec::new()
                        },
                        leaving: false,
                        analyses: Vec::new(),
                    };
                    reference.insert(agent, Ref { segment, healthy, applied, blocked, heartbeat_ms, last_seen: now, heard: true });
                    fleet.report(&report, now)
                }
                Step::Leave(agent) => {
                    let segment = reference.get(&agent).map_or(0, |a| a.segment);
                    let report = AgentReport {
                        agent_id: agent_id(agent),
                        segment: Segment::new(SEGMENTS[segment]).unwrap(),
                        tier: None,
                        healthy: true,
                        applied_revision: 0,
                        stale: false,
                        heartbeat_ms: 10,
                        sent_at_ms: now,
                        blocked: Vec::new(),
                        leaving: true,
                        analyses: Vec::new(),
                    };
                    reference.remove(&agent);
                    fleet.report(&report, now)
                }
                Step::Forget(agent) => {
                    let known = reference.remove(&agent).is_some();
                    let out = fleet.forget(&agent_id(agent));
                    prop_assert_eq!(out.is_some(), known, "forget of a known agent answers it");
                    out.unwrap_or_default()
                }
                Step::Wait(dt) => {
                    now += dt;
                    continue;
                }
                Step::Expire => {
                    reference.retain(|_, a| now - a.last_seen <= FORGET_MS);
                    fleet.expire(now)
                }
                Step::Restart => {
                    // A new coordinator restores what the store holds.
                    let records: Vec<AgentRecord> = reference
                        .iter()
                        .map(|(i, a)| AgentRecord {
                            agent_id: agent_id(*i),
                            segment: Segment::new(SEGMENTS[a.segment]).unwrap(),
                            tier: None,
                            heartbeat_ms: a.heartbeat_ms,
                            first_seen_ms: 0,
                        })
                        .collect();
                    fleet = Fleet::new(FORGET_MS);
                    fleet.restore(records, now);
                    for a in reference.values_mut() {
                        *a = Ref { healthy: false, applied: 0, blocked: false, last_seen: now, heard: false, ..a.clone() };
                    }
                    for (s, t) in &mut told {
                        *t = fleet.segment(SEGMENTS[*s], KEY, REVISION, now);
                    }
                    continue;
                }
            };
            for (s, name) in SEGMENTS.iter().enumerate() {
                let got = fleet.segment(name, KEY, REVISION, now);
                let want = expected(&reference, s, now);
                prop_assert_eq!(got, want, "segment {} at {}", name, now);
                prop_assert!(got.known >= got.live && got.live >= got.applied && got.live >= got.healthy);
                // Marked precisely: a moved ack only for triggers whose
                // revision it crosses, a block only for its key's trigger.
                let seen = changes.segment_set_changed
                    || changes.segments.contains(*name)
                    || changes.acks.iter().any(|a| a.segment == *name && a.crosses(REVISION))
                    || changes.blocked_keys.contains(KEY);
                if seen {
                    told.insert(s, got);
                }
            }
            if matches!(step, Step::Expire) {
                // Every change of a segment's view reached its triggers:
                // none waits for a later report to be noticed.
                for (s, name) in SEGMENTS.iter().enumerate() {
                    prop_assert_eq!(told[&s], fleet.segment(name, KEY, REVISION, now), "segment {} changed unannounced", name);
                }
            }
            let listed: Vec<String> = fleet.list(None, now).iter().map(|a| a.agent_id.to_string()).collect();
            let want: Vec<String> = {
                let mut v: Vec<(usize, String)> = reference.iter().map(|(i, a)| (a.segment, format!("a{i}"))).collect();
                v.sort();
                v.into_iter().map(|(_, id)| id).collect()
            };
            prop_assert_eq!(listed, want, "agent.list lists every known agent, by segment then id");
        }
    }
}

#[test]
fn a_silent_agent_blocks_and_counts_unhealthy() {
    let mut fleet = Fleet::new(FORGET_MS);
    let report = |id: &str, applied: u64| AgentReport {
        agent_id: AgentId::new(id).unwrap(),
        segment: Segment::new("eu.prod").unwrap(),
        tier: None,
        healthy: true,
        applied_revision: applied,
        stale: false,
        heartbeat_ms: 100,
        sent_at_ms: 0,
        blocked: Vec::new(),
        leaving: false,
        analyses: Vec::new(),
    };
    fleet.report(&report("a", 5), 0);
    fleet.report(&report("b", 5), 0);
    // b goes silent; a keeps reporting.
    fleet.report(&report("a", 5), 250);
    let f = fleet.segment("eu.prod", KEY, 5, 250);
    assert_eq!((f.known, f.live, f.applied), (2, 2, 2));
    fleet.report(&report("a", 5), 301);
    let changes = fleet.expire(301);
    assert!(
        changes.segments.contains("eu.prod"),
        "the silence is announced"
    );
    let f = fleet.segment("eu.prod", KEY, 5, 301);
    assert_eq!((f.known, f.live, f.applied, f.healthy), (2, 1, 1, 1));
    // Forgotten by an operator: it no longer blocks.
    assert!(fleet.forget(&AgentId::new("b").unwrap()).is_some());
    let f = fleet.segment("eu.prod", KEY, 5, 301);
    assert_eq!((f.known, f.live, f.applied), (1, 1, 1));
    assert!(fleet.forget(&AgentId::new("b").unwrap()).is_none());
}

#[test]
fn restored_agents_settle_by_report_or_silence() {
    let mut fleet = Fleet::new(FORGET_MS);
    let rec = |id: &str| AgentRecord {
        agent_id: AgentId::new(id).unwrap(),
        segment: Segment::new("dev").unwrap(),
        tier: None,
        heartbeat_ms: 100,
        first_seen_ms: 0,
    };
    fleet.restore([rec("a"), rec("b")], 1_000);
    // Recovery took long; the window counts from when reports can arrive.
    fleet.listening(5_000);
    let f = fleet.segment("dev", KEY, 1, 5_200);
    assert!(!f.settled, "no decision before restored agents are heard");
    assert_eq!((f.known, f.live), (2, 0));
    fleet.report(
        &AgentReport {
            agent_id: AgentId::new("a").unwrap(),
            segment: Segment::new("dev").unwrap(),
            tier: None,
            healthy: true,
            applied_revision: 1,
            stale: false,
            heartbeat_ms: 100,
            sent_at_ms: 0,
            blocked: Vec::new(),
            leaving: false,
            analyses: Vec::new(),
        },
        5_250,
    );
    assert!(
        !fleet.segment("dev", KEY, 1, 5_250).settled,
        "b not heard yet"
    );
    let changes = fleet.expire(5_301);
    assert!(changes.segments.contains("dev"));
    let f = fleet.segment("dev", KEY, 1, 5_301);
    assert!(f.settled, "b stayed silent for a whole window");
    assert_eq!((f.known, f.live, f.applied), (2, 1, 1));
}

#[test]
fn a_flood_of_invented_agents_is_bounded() {
    let limits = phasegate_model::fleet::Limits {
        max_agents: 50,
        max_agents_per_segment: 20,
        max_segments: 3,
    };
    let mut fleet = Fleet::new(FORGET_MS).with_limits(limits);
    let mut writes = 0;
    let mut refused = 0;
    for i in 0..10_000u32 {
        let r = AgentReport {
            agent_id: AgentId::new(format!("evil-{i}")).unwrap(),
            segment: Segment::new(format!("s{}", i % 7)).unwrap(),
            tier: None,
            healthy: false,
            applied_revision: 0,
            stale: false,
            heartbeat_ms: 3_600_000,
            sent_at_ms: 0,
            blocked: Vec::new(),
            leaving: false,
            analyses: Vec::new(),
        };
        let c = fleet.report(&r, u64::from(i));
        writes += c.persist.len();
        refused += usize::from(c.refused);
    }
    assert!(fleet.len() <= 50);
    assert_eq!(fleet.segments().count(), 3);
    assert!(writes <= 50, "{writes} writes");
    assert_eq!(refused, 10_000 - fleet.len());
    // A claimed hour-long heartbeat is bounded: the agent is unreachable a
    // few minutes later, not three hours later.
    let max_window = phasegate_model::fleet::HEARTBEAT_BOUNDS_MS.1 * 3;
    let f = fleet.segment("s0", KEY, 0, 10_000 + max_window + 1);
    assert_eq!(f.live, 0);
}
