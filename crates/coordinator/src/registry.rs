//! The triggers that want fleet views, indexed so that a change costs work
//! proportional to what it touches, not to the number of active triggers:
//! by segment (and, within one, by the revision acks are counted against)
//! and by entity key. Plain data: the directory actor asks it whom a
//! [`Changes`] concerns.

use std::collections::{BTreeSet, HashMap, HashSet};

use phasegate_model::fleet::Changes;
use phasegate_proto::{SegmentPattern, TriggerId};

/// One registered trigger.
#[derive(Debug, Clone)]
pub(crate) struct Registration<A> {
    /// Its entity's key (`<kind>.<name>`).
    pub(crate) key: String,
    /// The segments its pipeline names (names or globs).
    pub(crate) patterns: Vec<SegmentPattern>,
    /// Acks count at or above this desired-state revision.
    pub(crate) revision: u64,
    /// Where its views go.
    pub(crate) actor: A,
    /// The segments it covers now: its literal names, and the segments
    /// with known agents its globs match.
    pub(crate) segments: BTreeSet<String>,
}

impl<A> Registration<A> {
    fn has_globs(&self) -> bool {
        self.patterns.iter().any(|p| !p.is_literal())
    }

    /// The segments it covers, given the segments with known agents.
    fn cover<'a>(&self, known: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .patterns
            .iter()
            .filter(|p| p.is_literal())
            .map(|p| p.as_str().to_owned())
            .collect();
        if self.has_globs() {
            out.extend(
                known
                    .filter(|s| self.patterns.iter().any(|p| p.matches(s)))
                    .map(str::to_owned),
            );
        }
        out
    }
}

/// Every registration and its indexes.
#[derive(Debug)]
pub(crate) struct Registry<A> {
    regs: HashMap<TriggerId, Registration<A>>,
    /// Per segment, the triggers covering it by (revision, id).
    covering: HashMap<String, BTreeSet<(u64, TriggerId)>>,
    /// The trigger of each entity key.
    by_key: HashMap<String, TriggerId>,
    /// Triggers with globs: the only ones a new segment may concern.
    globbing: HashSet<TriggerId>,
}

impl<A> Default for Registry<A> {
    fn default() -> Self {
        Self {
            regs: HashMap::new(),
            covering: HashMap::new(),
            by_key: HashMap::new(),
            globbing: HashSet::new(),
        }
    }
}

impl<A> Registry<A> {
    /// The registration of `id`.
    pub(crate) fn get(&self, id: &TriggerId) -> Option<&Registration<A>> {
        self.regs.get(id)
    }

    fn index(&mut self, id: &TriggerId) {
        let Some(r) = self.regs.get(id) else {
            return;
        };
        for s in &r.segments {
            self.covering
                .entry(s.clone())
                .or_default()
                .insert((r.revision, id.clone()));
        }
    }

    fn unindex(&mut self, id: &TriggerId) {
        let Some(r) = self.regs.get(id) else {
            return;
        };
        for s in &r.segments {
            if let Some(set) = self.covering.get_mut(s) {
                set.remove(&(r.revision, id.clone()));
                if set.is_empty() {
                    self.covering.remove(s);
                }
            }
        }
    }

    /// Adds (or replaces) a registration; `known` are the segments with
    /// known agents.
    pub(crate) fn register<'a>(
        &mut self,
        id: TriggerId,
        key: String,
        patterns: Vec<SegmentPattern>,
        revision: u64,
        actor: A,
        known: impl Iterator<Item = &'a str>,
    ) {
        self.unregister(&id);
        let mut reg = Registration {
            key: key.clone(),
            patterns,
            revision,
            actor,
            segments: BTreeSet::new(),
        };
        reg.segments = reg.cover(known);
        if reg.has_globs() {
            self.globbing.insert(id.clone());
        }
        self.by_key.insert(key, id.clone());
        self.regs.insert(id.clone(), reg);
        self.index(&id);
    }

    /// Acks of `id` now count against `revision`.
    pub(crate) fn set_revision(&mut self, id: &TriggerId, revision: u64) -> bool {
        if !self.regs.contains_key(id) {
            return false;
        }
        self.unindex(id);
        if let Some(r) = self.regs.get_mut(id) {
            r.revision = revision;
        }
        self.index(id);
        true
    }

    /// Forgets `id`.
    pub(crate) fn unregister(&mut self, id: &TriggerId) {
        self.unindex(id);
        if let Some(r) = self.regs.remove(id)
            && self.by_key.get(&r.key) == Some(id)
        {
            self.by_key.remove(&r.key);
        }
        self.globbing.remove(id);
    }

    /// The triggers whose view `changes` may have changed. `known` are the
    /// segments with known agents after the change.
    pub(crate) fn concerned<'a>(
        &mut self,
        changes: &Changes,
        known: impl Iterator<Item = &'a str> + Clone,
    ) -> HashSet<TriggerId> {
        let mut out = HashSet::new();
        for s in &changes.segments {
            if let Some(set) = self.covering.get(s) {
                out.extend(set.iter().map(|(_, id)| id.clone()));
            }
        }
        for a in &changes.acks {
            let Some(set) = self.covering.get(&a.segment) else {
                continue;
            };
            // Only the triggers whose revision the move crosses.
            let (lo, hi) = (a.from.min(a.to), a.from.max(a.to));
            let Some(first) = lo.checked_add(1) else {
                continue;
            };
            out.extend(
                set.iter()
                    .skip_while(|(rev, _)| *rev < first)
                    .take_while(|(rev, _)| *rev <= hi)
                    .map(|(_, id)| id.clone()),
            );
        }
        for k in &changes.blocked_keys {
            if let Some(id) = self.by_key.get(k) {
                out.insert(id.clone());
            }
        }
        if changes.segment_set_changed {
            // Only triggers with globs can start or stop covering a segment.
            let globbing: Vec<TriggerId> = self.globbing.iter().cloned().collect();
            for id in globbing {
                let Some(now) = self.regs.get(&id).map(|r| r.cover(known.clone())) else {
                    continue;
                };
                if self.regs.get(&id).is_some_and(|r| r.segments != now) {
                    self.unindex(&id);
                    if let Some(r) = self.regs.get_mut(&id) {
                        r.segments = now;
                    }
                    self.index(&id);
                    out.insert(id);
                }
            }
        }
        out
    }

    /// How many triggers are registered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.regs.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests

    use phasegate_model::fleet::AckMove;

    use super::*;

    fn id(s: &str) -> TriggerId {
        TriggerId::new(s).unwrap()
    }

    fn pats(p: &[&str]) -> Vec<SegmentPattern> {
        p.iter().map(|s| SegmentPattern::new(*s).unwrap()).collect()
    }

    fn registry() -> Registry<()> {
        let mut r = Registry::default();
        let known = ["dev", "prod-eu", "prod-us"];
        r.register(
            id("a"),
            "gate.a".into(),
            pats(&["dev"]),
            5,
            (),
            known.iter().copied(),
        );
        r.register(
            id("b"),
            "gate.b".into(),
            pats(&["dev", "prod-*"]),
            9,
            (),
            known.iter().copied(),
        );
        r.register(
            id("c"),
            "gate.c".into(),
            pats(&["staging"]),
            7,
            (),
            known.iter().copied(),
        );
        r
    }

    fn ids(s: &HashSet<TriggerId>) -> BTreeSet<String> {
        s.iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn an_ack_concerns_only_the_triggers_it_crosses() {
        let mut r = registry();
        let known = ["dev", "prod-eu", "prod-us"];
        let ack = |from, to| Changes {
            acks: vec![AckMove {
                segment: "dev".into(),
                from,
                to,
            }],
            ..Changes::default()
        };
        let got = r.concerned(&ack(0, 5), known.iter().copied());
        assert_eq!(ids(&got), BTreeSet::from(["a".to_owned()]));
        let got = r.concerned(&ack(5, 9), known.iter().copied());
        assert_eq!(ids(&got), BTreeSet::from(["b".to_owned()]));
        let got = r.concerned(&ack(9, 12), known.iter().copied());
        assert!(got.is_empty(), "nobody waits for revision 12");
        // Going back (a recreated bucket) crosses the same way.
        let got = r.concerned(&ack(12, 0), known.iter().copied());
        assert_eq!(ids(&got), BTreeSet::from(["a".to_owned(), "b".to_owned()]));
        // After a new publish, b counts against 11.
        assert!(r.set_revision(&id("b"), 11));
        let got = r.concerned(&ack(9, 12), known.iter().copied());
        assert_eq!(ids(&got), BTreeSet::from(["b".to_owned()]));
    }

    #[test]
    fn a_segment_change_concerns_its_covering_triggers_and_globs_follow_new_segments() {
        let mut r = registry();
        let touched = Changes {
            segments: BTreeSet::from(["prod-eu".to_owned()]),
            ..Changes::default()
        };
        let got = r.concerned(&touched, ["dev", "prod-eu", "prod-us"].into_iter());
        assert_eq!(ids(&got), BTreeSet::from(["b".to_owned()]));
        // A new segment prod-ap: the glob of b now covers it.
        let grown = Changes {
            segments: BTreeSet::from(["prod-ap".to_owned()]),
            segment_set_changed: true,
            ..Changes::default()
        };
        let got = r.concerned(&grown, ["dev", "prod-ap", "prod-eu", "prod-us"].into_iter());
        assert_eq!(ids(&got), BTreeSet::from(["b".to_owned()]));
        assert!(r.get(&id("b")).unwrap().segments.contains("prod-ap"));
        // A literal segment is covered with no agent at all.
        assert!(r.get(&id("c")).unwrap().segments.contains("staging"));
        let blocked = Changes {
            blocked_keys: BTreeSet::from(["gate.c".to_owned()]),
            ..Changes::default()
        };
        assert_eq!(
            ids(&r.concerned(&blocked, std::iter::empty())),
            BTreeSet::from(["c".to_owned()])
        );
        r.unregister(&id("b"));
        assert_eq!(r.len(), 2);
        assert!(r.concerned(&touched, std::iter::empty()).is_empty());
    }
}
