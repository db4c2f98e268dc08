//! The words of every wire enum, pinned against serde: for each variant,
//! `as_str` and `Display` say what serde_json writes, `FromStr` reads it
//! back (as serde does), and an unknown word is refused with a message
//! that names it. An enum declared through `wire_enum!` whose words drift
//! from its serde attributes fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::fmt::{Debug, Display};
use std::str::FromStr;

use phasegate_proto::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn pinned<T>(all: &[T], as_str: fn(T) -> &'static str)
where
    T: Copy + Debug + PartialEq + Display + Serialize + DeserializeOwned,
    T: FromStr<Err = UnknownWord>,
{
    assert!(!all.is_empty());
    for &v in all {
        let word = as_str(v);
        assert_eq!(
            serde_json::to_value(v).unwrap(),
            serde_json::Value::String(word.to_owned()),
            "{v:?}: as_str and serde disagree"
        );
        assert_eq!(v.to_string(), word, "{v:?}: Display");
        assert_eq!(word.parse::<T>(), Ok(v), "{v:?}: FromStr");
        assert_eq!(
            serde_json::from_value::<T>(serde_json::Value::String(word.to_owned())).unwrap(),
            v,
            "{v:?}: serde reads the word back"
        );
    }
    for unknown in ["no_such_word", "", "IN_PROGRESS "] {
        let e = unknown.parse::<T>().unwrap_err();
        assert_eq!(e.word, unknown);
        assert!(
            e.to_string().contains(&format!("{unknown:?}")),
            "the error names the word: {e}"
        );
        assert!(
            serde_json::from_value::<T>(serde_json::Value::String(unknown.to_owned())).is_err(),
            "serde refuses {unknown:?} too"
        );
    }
}

#[test]
fn every_wire_enum_says_what_serde_says() {
    pinned(ErrorCode::ALL, ErrorCode::as_str);
    pinned(EntityKind::ALL, EntityKind::as_str);
    pinned(Op::ALL, Op::as_str);
    pinned(TriggerStatus::ALL, TriggerStatus::as_str);
    pinned(PhaseState::ALL, PhaseState::as_str);
    pinned(PausedReason::ALL, PausedReason::as_str);
    pinned(HistoryType::ALL, HistoryType::as_str);
    pinned(OnUnhealthy::ALL, OnUnhealthy::as_str);
    pinned(CompareOp::ALL, CompareOp::as_str);
    pinned(AnalysisResult::ALL, AnalysisResult::as_str);
}

#[test]
fn the_words_are_the_contracts() {
    // A few spelled out, so a reader sees the shape without running serde.
    assert_eq!(ErrorCode::NotFound.as_str(), "not_found");
    assert_eq!(TriggerStatus::InProgress.as_str(), "in_progress");
    assert_eq!(HistoryType::PhaseApplied.as_str(), "phase_applied");
    assert_eq!(Op::StrStartsWithAny.as_str(), "str_starts_with_any");
    assert_eq!(HistoryType::ALL.len(), 12);
    let e = "paused".parse::<TriggerStatus>().unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"unknown trigger status "paused": expected one of in_progress, completed, aborted"#
    );
}

#[test]
fn actions_are_their_commands_verbs() {
    for a in TriggerAction::ALL {
        assert_eq!(a.command().group(), "trigger");
        assert_eq!(a.as_str(), a.command().verb());
        assert_eq!(a.to_string(), a.as_str());
        assert_eq!(TriggerAction::of_command(a.command()), Some(a));
    }
    let actions = Command::ALL
        .iter()
        .filter_map(|&c| TriggerAction::of_command(c))
        .count();
    assert_eq!(
        actions,
        TriggerAction::ALL.len(),
        "every trigger verb but get and list"
    );
    assert_eq!(TriggerAction::of_command(Command::TriggerGet), None);
}
