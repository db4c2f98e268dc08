//! The history of a trigger is capped by encoded bytes (SPEC §4 history,
//! the NATS message limit): no sequence of actions makes the stored record
//! outgrow the budget plus the bounded rest of the record, `started` and
//! the latest entries stay, and the count of bytes is an upper bound of
//! the real encoding.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use common::*;
use phasegate_model::rollout::{HISTORY_BUDGET_BYTES, MAX_COMMENT_BYTES, entry_bytes};
use phasegate_model::{act, observe};
use phasegate_proto::*;
use proptest::prelude::*;

macro_rules! encoded_len {
    ($v:expr) => {
        encode(Encoding::MsgPack, $v).unwrap().len()
    };
}

fn arb_text(min: usize, max: usize) -> impl Strategy<Value = String> {
    // Multi-byte characters included: limits are in bytes. Cheap to draw:
    // one character repeated, cut to at most `max` bytes.
    (min..=max, prop_oneof![Just('a'), Just('é'), Just('漢')]).prop_map(move |(n, c)| {
        let mut s: String = std::iter::repeat_n(c, n).collect();
        while s.len() > max {
            s.pop();
        }
        s
    })
}

fn arb_actor() -> impl Strategy<Value = Actor> {
    arb_text(1, 128)
        .prop_map(|s| Actor::new(if s.is_empty() { "a".to_owned() } else { s }).unwrap())
}

const KINDS: [HistoryType; 12] = [
    HistoryType::Started,
    HistoryType::Approved,
    HistoryType::PhaseStarted,
    HistoryType::PhaseApplied,
    HistoryType::Paused,
    HistoryType::Resumed,
    HistoryType::Skipped,
    HistoryType::Rollout,
    HistoryType::Aborted,
    HistoryType::HealthDegraded,
    HistoryType::HealthRecovered,
    HistoryType::Completed,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The count the cap relies on never undercounts.
    #[test]
    fn entry_bytes_bound_the_encoding(
        kind in 0usize..KINDS.len(),
        phase in proptest::option::of("[a-z0-9][a-z0-9-]{0,63}"),
        actor in arb_actor(),
        at_ms in any::<u64>(),
        comment in proptest::option::of(arb_text(0, MAX_COMMENT_BYTES)),
    ) {
        let e = HistoryEntry {
            kind: KINDS[kind],
            phase_id: phase.map(|p| PhaseId::new(p).unwrap()),
            actor,
            at_ms,
            comment,
        };
        prop_assert!(entry_bytes(&e) >= encoded_len!(&e));
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Pause when running, resume when paused, with a long comment.
    Toggle(String),
    /// Health drops and recovers.
    Flap,
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            5 => arb_text(MAX_COMMENT_BYTES * 9 / 10, MAX_COMMENT_BYTES).prop_map(Step::Toggle),
            1 => Just(Step::Flap),
        ],
        // Enough long comments to overflow the budget more than once.
        400..700,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Long comments and flapping health, in any order, then an abort with
    /// the longest comment: the stored record stays within the budget plus
    /// the rest of the record, and keeps its start and its latest entries.
    #[test]
    fn no_sequence_outgrows_the_budget(steps in arb_steps(), actor in arb_actor()) {
        let mut rec = start(pipeline(vec![phase("a", &["dev"], 600_000)]), 0);
        observe(&mut rec, &fleet(&[("dev", 2, 2, 2)]), 0);
        let mut rest = rec.clone();
        rest.trigger.history.clear();
        let rest = encoded_len!(&rest);
        for (i, step) in steps.iter().enumerate() {
            let now = 10 + i as u64 * 2;
            let mut r = req(&rec, "op");
            r.actor = actor.clone();
            match step {
                Step::Toggle(c) => {
                    r.comment = Some(c.clone());
                    let action = if rec.trigger.paused { TriggerAction::Resume } else { TriggerAction::Pause };
                    act(&mut rec, action, &r, now).unwrap();
                }
                Step::Flap => {
                    observe(&mut rec, &fleet(&[("dev", 2, 2, 1)]), now);
                    observe(&mut rec, &fleet(&[("dev", 2, 2, 2)]), now + 1);
                }
            }
            if i % 50 == 0 {
                prop_assert!(encoded_len!(&rec.trigger.history) <= HISTORY_BUDGET_BYTES);
            }
        }
        let last_before_abort = rec.trigger.history.last().cloned();
        let mut r = req(&rec, "op");
        r.actor = actor;
        r.comment = Some("z".repeat(MAX_COMMENT_BYTES));
        act(&mut rec, TriggerAction::Abort, &r, 10_000).unwrap();
        let h = &rec.trigger.history;
        prop_assert_eq!(h[0].kind, HistoryType::Started);
        prop_assert_eq!(h.last().unwrap().kind, HistoryType::Aborted);
        prop_assert_eq!(h.get(h.len() - 2).cloned(), last_before_abort, "the latest stay");
        prop_assert!(encoded_len!(h) <= HISTORY_BUDGET_BYTES);
        // The budget was reached: entries after `started` were dropped.
        // (The second entry was written at 0, when the first phase began.)
        prop_assert!(h[1].at_ms > 0, "nothing was dropped: the budget was not reached");
        // The rest of the record changes by bounded fields only (status,
        // phase state, timestamps): a kilobyte covers them.
        prop_assert!(encoded_len!(&rec) <= rest + HISTORY_BUDGET_BYTES + 1024);
    }
}
