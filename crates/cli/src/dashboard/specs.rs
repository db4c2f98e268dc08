//! The versions of gates and configs this dashboard has seen.
//!
//! The command API answers only an entity's latest spec, so the version a
//! rollout started from is gone from it once the rollout runs. The
//! dashboard remembers every spec it reads (the poller lists them all now
//! and then, and reads an entity again when its rollout finishes), and
//! shows the diff of a trigger when it has seen both ends. A version it
//! never saw is said to be unknown, never guessed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use phasegate_proto::{EntityRef, EntitySpec};

/// How many versions of one entity are kept (the newest).
const VERSIONS_PER_ENTITY: usize = 8;

/// How many entities are remembered at most; past it, new ones are not.
const MAX_ENTITIES: usize = 20_000;

/// Specs by entity and version.
#[derive(Debug, Default)]
pub(crate) struct SpecCache {
    by_entity: HashMap<EntityRef, BTreeMap<u64, EntitySpec>>,
}

impl SpecCache {
    /// Remembers `spec` under its kind, name and version.
    pub(crate) fn remember(&mut self, spec: &EntitySpec) {
        let key = EntityRef {
            kind: spec.kind,
            name: spec.name.clone(),
        };
        if !self.by_entity.contains_key(&key) && self.by_entity.len() >= MAX_ENTITIES {
            return;
        }
        let versions = self.by_entity.entry(key).or_default();
        versions.insert(spec.version, spec.clone());
        while versions.len() > VERSIONS_PER_ENTITY {
            versions.pop_first();
        }
    }

    /// The spec of `entity` at `version`, if seen.
    pub(crate) fn get(&self, entity: &EntityRef, version: u64) -> Option<&EntitySpec> {
        self.by_entity.get(entity)?.get(&version)
    }
}

/// The cache, locked. A panic while it was held cannot leave it torn
/// (every change is one insert or one removal), so a poisoned lock is
/// taken as it is.
pub(crate) fn lock(cache: &Mutex<SpecCache>) -> MutexGuard<'_, SpecCache> {
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phasegate_proto::{EntityKind, EntityName};

    fn spec(name: &str, version: u64) -> EntitySpec {
        let mut s = EntitySpec::new(EntityKind::Gate, EntityName::new(name).unwrap());
        s.version = version;
        s
    }

    #[test]
    fn keeps_the_newest_versions_of_each_entity() {
        let mut c = SpecCache::default();
        for v in 1..=10 {
            c.remember(&spec("g", v));
        }
        c.remember(&spec("h", 1));
        let g = EntityRef {
            kind: EntityKind::Gate,
            name: EntityName::new("g").unwrap(),
        };
        assert!(c.get(&g, 2).is_none(), "the oldest are dropped");
        assert_eq!(c.get(&g, 3).map(|s| s.version), Some(3));
        assert_eq!(c.get(&g, 10).map(|s| s.version), Some(10));
        let config = EntityRef {
            kind: EntityKind::Config,
            ..g
        };
        assert!(c.get(&config, 10).is_none(), "kinds are apart");
    }
}
