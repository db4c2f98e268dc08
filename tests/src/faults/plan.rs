//! What one seed means: the rollouts, the operator's actions and the faults
//! of an episode, all drawn from [`Rng`] before anything runs, so a seed
//! always names the same schedule (the timing of real processes around it
//! still varies, which is the point of running many seeds).

use serde_json::{Value, json};

use super::rng::Rng;

/// Length of the part of an episode during which faults are injected and
/// operators act, in ms.
pub const TIMELINE_MS: u64 = 4_000;

/// The gates an installation rolls out; an episode uses the first few.
pub const ENTITIES: [&str; 3] = ["g0", "g1", "g2"];

/// One phase of a generated pipeline. Shares are 0 or 100 and the only
/// condition is on `country`, so what a unit must get is decidable from
/// outside.
#[derive(Debug, Clone)]
pub struct PhasePlan {
    /// `p0`, `p1`, …
    pub id: String,
    /// Segment names or globs.
    pub segments: Vec<String>,
    /// 0 or 100.
    pub pct: u32,
    /// Only units with `country = fr`.
    pub only_fr: bool,
    /// Bake time.
    pub wait_ms: u64,
    /// Approval required (any approver, one approval).
    pub approval: bool,
    /// Apply timeout.
    pub apply_timeout_ms: u64,
    /// `pause`, `ignore` or `abort`.
    pub on_unhealthy: &'static str,
}

impl PhasePlan {
    /// Whether this phase, once applied, gives the new version to a unit
    /// of `country` in `segment`.
    pub fn gives(&self, segment: &str, country: &str) -> bool {
        self.pct == 100
            && (!self.only_fr || country == "fr")
            && self.segments.iter().any(|p| glob_match(p, segment))
    }

    /// Whether it names `segment`.
    pub fn names(&self, segment: &str) -> bool {
        self.segments.iter().any(|p| glob_match(p, segment))
    }
}

/// An operator action the test issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manual {
    /// `approve` of the current phase (often a conflict: that is fine).
    Approve,
    /// `pause`, with the current phase id or without one.
    Pause {
        /// Whether `phase_id` is sent.
        with_phase: bool,
    },
    /// `resume`.
    Resume,
    /// `skip` of the current phase.
    Skip,
    /// `abort`, with or without the phase id.
    Abort {
        /// Whether `phase_id` is sent.
        with_phase: bool,
    },
    /// `rollout` of the current phase.
    Rollout,
}

/// One rollout of an episode.
#[derive(Debug, Clone)]
pub struct RolloutPlan {
    /// The gate.
    pub entity: &'static str,
    /// When the put is sent, from the start of the episode.
    pub start_ms: u64,
    /// Share of the gate's own rule in the new version (0 or 100): the
    /// value the new version answers is `new_pct == 100`.
    pub new_pct: u32,
    /// The pipeline.
    pub phases: Vec<PhasePlan>,
    /// Scheduled actions, by time from the start of the episode.
    pub actions: Vec<(u64, Manual)>,
    /// How the test finishes it after the faults, if it has not finished:
    /// `None` drives it to the end (approving and resuming).
    pub finish: Option<Manual>,
}

/// A fault, with its own recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` coordinator `0|1`, restarted after `down_ms`.
    KillCoordinator {
        /// Which coordinator.
        which: usize,
        /// How long it stays down.
        down_ms: u64,
    },
    /// `SIGSTOP` of coordinator `0|1`, `SIGCONT` after `for_ms`.
    FreezeCoordinator {
        /// Which coordinator.
        which: usize,
        /// How long it stays frozen.
        for_ms: u64,
    },
    /// `kill -9` of agent `i`, restarted after `down_ms`.
    KillAgent {
        /// Which agent.
        which: usize,
        /// How long it stays down.
        down_ms: u64,
    },
    /// `SIGSTOP` of agent `i`, `SIGCONT` after `for_ms`.
    FreezeAgent {
        /// Which agent.
        which: usize,
        /// How long it stays frozen.
        for_ms: u64,
    },
    /// `kill -9` of nats-server, restarted (same port, same store) after `down_ms`.
    RestartNats {
        /// How long it stays down.
        down_ms: u64,
    },
    /// `SIGSTOP` of nats-server, `SIGCONT` after `for_ms`.
    FreezeNats {
        /// How long it stays frozen.
        for_ms: u64,
    },
}

impl Fault {
    /// A short name, for the figures.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::KillCoordinator { .. } => "kill -9 coordinator",
            Self::FreezeCoordinator { .. } => "freeze coordinator",
            Self::KillAgent { .. } => "kill -9 agent",
            Self::FreezeAgent { .. } => "freeze agent",
            Self::RestartNats { .. } => "kill -9 nats-server",
            Self::FreezeNats { .. } => "freeze nats-server",
        }
    }
}

/// The whole schedule of one seed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// Rollouts, one per gate.
    pub rollouts: Vec<RolloutPlan>,
    /// Faults by start time.
    pub faults: Vec<(u64, Fault)>,
}

impl Plan {
    /// The schedule of `seed` for an installation of `segments` (5).
    pub fn new(seed: u64, segments: &[String]) -> Self {
        let mut rng = Rng::new(seed);
        let n = 2 + rng.below(2);
        let rollouts = (0..n)
            .map(|i| rollout(&mut rng, ENTITIES[i], segments))
            .collect();
        let mut faults = Vec::new();
        let mut at = rng.range(100, 600);
        while at < TIMELINE_MS - 300 {
            faults.push((at, fault(&mut rng, segments.len())));
            at += rng.range(250, 1_100);
        }
        Self {
            seed,
            rollouts,
            faults,
        }
    }
}

fn rollout(rng: &mut Rng, entity: &'static str, segments: &[String]) -> RolloutPlan {
    let phases = phases(rng, segments);
    let mut actions = Vec::new();
    for _ in 0..rng.range(0, 3) {
        let at = rng.range(300, TIMELINE_MS);
        let m = match rng.weighted(&[3, 4, 2, 3, 1, 1]) {
            0 => Manual::Approve,
            1 => Manual::Pause {
                with_phase: rng.chance(50),
            },
            2 => Manual::Resume,
            3 => Manual::Skip,
            4 => Manual::Abort {
                with_phase: rng.chance(50),
            },
            _ => Manual::Rollout,
        };
        actions.push((at, m));
        if matches!(m, Manual::Pause { .. }) {
            actions.push((at + rng.range(150, 900), Manual::Resume));
        }
    }
    actions.sort_by_key(|(at, _)| *at);
    let finish = match rng.weighted(&[6, 2, 2]) {
        0 => None,
        1 => Some(Manual::Rollout),
        _ => Some(Manual::Abort { with_phase: false }),
    };
    RolloutPlan {
        entity,
        start_ms: rng.range(0, 1_200),
        new_pct: if rng.chance(70) { 100 } else { 0 },
        phases,
        actions,
        finish,
    }
}

/// 3 to 5 phases over the segments in order; a phase may also widen the
/// previous one's segments, and the two `prod-us-*` segments are named by
/// their glob when they fall in one phase.
fn phases(rng: &mut Rng, segments: &[String]) -> Vec<PhasePlan> {
    let count = 3 + rng.below(3).min(segments.len().saturating_sub(3));
    // Cut points: `count` non-empty contiguous groups.
    let mut cuts: Vec<usize> = Vec::new();
    while cuts.len() < count - 1 {
        let c = 1 + rng.below(segments.len() - 1);
        if !cuts.contains(&c) {
            cuts.push(c);
        }
    }
    cuts.sort_unstable();
    let mut bounds = vec![0];
    bounds.extend(cuts);
    bounds.push(segments.len());
    let mut out: Vec<PhasePlan> = Vec::new();
    for (k, w) in bounds.windows(2).enumerate() {
        let mut names: Vec<String> = segments[w[0]..w[1]].to_vec();
        let us: Vec<&String> = names.iter().filter(|s| s.starts_with("prod-us-")).collect();
        if us.len() == 2 && rng.chance(60) {
            names.retain(|s| !s.starts_with("prod-us-"));
            names.push("prod-us-*".to_owned());
        }
        if let Some(prev) = out.last()
            && rng.chance(30)
        {
            names.extend(prev.segments.iter().cloned());
        }
        let (pct, only_fr) = match rng.weighted(&[6, 2, 2]) {
            0 => (100, false),
            1 => (0, false),
            _ => (100, true),
        };
        out.push(PhasePlan {
            id: format!("p{k}"),
            segments: names,
            pct,
            only_fr,
            wait_ms: rng.range(50, 500),
            approval: rng.chance(20),
            apply_timeout_ms: rng.range(700, 2_000),
            on_unhealthy: ["pause", "pause", "ignore", "ignore", "abort"][rng.below(5)],
        });
    }
    out
}

fn fault(rng: &mut Rng, agents: usize) -> Fault {
    match rng.weighted(&[2, 2, 3, 3, 1, 1]) {
        0 => Fault::KillCoordinator {
            which: rng.below(2),
            down_ms: rng.range(0, 800),
        },
        1 => Fault::FreezeCoordinator {
            which: rng.below(2),
            for_ms: rng.range(300, 2_500),
        },
        2 => Fault::KillAgent {
            which: rng.below(agents),
            down_ms: rng.range(100, 1_500),
        },
        3 => Fault::FreezeAgent {
            which: rng.below(agents),
            for_ms: rng.range(200, 2_000),
        },
        4 => Fault::RestartNats {
            down_ms: rng.range(0, 800),
        },
        _ => Fault::FreezeNats {
            for_ms: rng.range(100, 800),
        },
    }
}

/// The pipeline of a rollout, as the command API takes it.
pub fn pipeline_json(name: &str, phases: &[PhasePlan]) -> Value {
    let phases: Vec<Value> = phases
        .iter()
        .map(|p| {
            let conditions = if p.only_fr {
                json!([{"field": "country", "op": "any", "values": ["fr"]}])
            } else {
                json!([])
            };
            json!({
                "id": p.id,
                "segments": p.segments,
                "conditions": conditions,
                "pass_percentage": p.pct,
                "wait_ms": p.wait_ms,
                "apply_timeout_ms": p.apply_timeout_ms,
                "approval": {"required": p.approval, "approvers": [], "min_approvals": 1},
                "health": {"on_unhealthy": p.on_unhealthy, "min_healthy_ratio": 1.0},
            })
        })
        .collect();
    json!({"name": name, "phases": phases})
}

/// SPEC §3 globs: only `*`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut tail) = name.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return tail.ends_with(part);
        }
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs() -> Vec<String> {
        ["dev", "staging", "prod-us-west", "prod-us-east", "prod-eu"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn a_seed_always_means_the_same_schedule() {
        let a = Plan::new(42, &segs());
        let b = Plan::new(42, &segs());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(format!("{a:?}"), format!("{:?}", Plan::new(43, &segs())));
    }

    #[test]
    fn every_segment_is_named_by_some_phase() {
        for seed in 0..200 {
            let p = Plan::new(seed, &segs());
            for r in &p.rollouts {
                assert!((3..=5).contains(&r.phases.len()));
                for s in segs() {
                    assert!(r.phases.iter().any(|ph| ph.names(&s)), "seed {seed}: {s}");
                }
            }
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("prod-us-*", "prod-us-west"));
        assert!(!glob_match("prod-us-*", "prod-eu"));
        assert!(glob_match("dev", "dev") && !glob_match("dev", "dev2"));
        assert!(glob_match("*", "x") && glob_match("a*c*e", "abcde"));
    }
}
