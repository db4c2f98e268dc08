//! NATS subjects of the command API (SPEC.md §6).
//!
//! Subjects are built here and nowhere else; other crates never spell one
//! as a literal.

use std::fmt;

use crate::names::NameError;

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "phasegate";

/// The API version token that follows the prefix.
pub const API_VERSION: &str = "v1";

macro_rules! commands {
    ($($variant:ident => $group:literal, $verb:literal;)*) => {
        /// Every request/reply endpoint of the command API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Command {
            $(
                #[doc = concat!("`", $group, ".", $verb, "`")]
                $variant,
            )*
        }

        impl Command {
            /// Every command, in contract order.
            pub const ALL: &'static [Command] = &[$(Command::$variant),*];

            /// The group token (`pipeline`, `gate`, …).
            pub fn group(self) -> &'static str {
                match self { $(Command::$variant => $group,)* }
            }

            /// The verb token (`put`, `get`, …).
            pub fn verb(self) -> &'static str {
                match self { $(Command::$variant => $verb,)* }
            }

            /// The kind of entity a `gate.*` or `config.*` command acts on;
            /// `None` for other commands.
            pub fn entity_kind(self) -> Option<crate::EntityKind> {
                self.group().parse().ok()
            }
        }
    };
}

commands! {
    PipelinePut => "pipeline", "put";
    PipelineGet => "pipeline", "get";
    PipelineList => "pipeline", "list";
    PipelineDelete => "pipeline", "delete";
    GatePut => "gate", "put";
    GateGet => "gate", "get";
    GateList => "gate", "list";
    GateDelete => "gate", "delete";
    ConfigPut => "config", "put";
    ConfigGet => "config", "get";
    ConfigList => "config", "list";
    ConfigDelete => "config", "delete";
    TriggerGet => "trigger", "get";
    TriggerList => "trigger", "list";
    TriggerApprove => "trigger", "approve";
    TriggerPause => "trigger", "pause";
    TriggerResume => "trigger", "resume";
    TriggerSkip => "trigger", "skip";
    TriggerRollout => "trigger", "rollout";
    TriggerAbort => "trigger", "abort";
    AgentList => "agent", "list";
    AgentForget => "agent", "forget";
}

/// The JetStream key-value buckets phasegate keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Pipelines by name.
    Pipelines,
    /// Entities (and their active trigger) by `<kind>.<name>`.
    Entities,
    /// Finished triggers by id.
    Triggers,
    /// Desired state by `<kind>.<name>`, watched by every agent.
    Desired,
    /// Agents ever heard from, by id.
    Agents,
    /// The coordinator's leadership lease.
    Leader,
}

impl Bucket {
    /// Every bucket of an installation.
    pub const ALL: [Bucket; 6] = [
        Self::Pipelines,
        Self::Entities,
        Self::Triggers,
        Self::Desired,
        Self::Agents,
        Self::Leader,
    ];

    /// The bucket's suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pipelines => "pipelines",
            Self::Entities => "entities",
            Self::Triggers => "triggers",
            Self::Desired => "desired",
            Self::Agents => "agents",
            Self::Leader => "leader",
        }
    }
}

/// The key of an entity in the entity and desired-state buckets.
pub fn entity_key(kind: crate::EntityKind, name: &crate::EntityName) -> String {
    format!("{}.{}", kind.as_str(), name)
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.group(), self.verb())
    }
}

/// Builds subjects under a configurable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl Subjects {
    /// Subjects under `prefix`: one or more dot-separated tokens of
    /// `[A-Za-z0-9_-]`.
    pub fn new(prefix: impl Into<String>) -> Result<Self, NameError> {
        let prefix = prefix.into();
        let ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
            });
        if ok {
            Ok(Self { prefix })
        } else {
            Err(NameError {
                what: "subject prefix",
                value: prefix.chars().take(80).collect(),
                rule: "must be dot-separated tokens of [A-Za-z0-9_-], at most 64 bytes",
            })
        }
    }

    /// The prefix every subject and bucket name starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.v1.<group>.<verb>`.
    pub fn command(&self, command: Command) -> String {
        format!(
            "{}.{API_VERSION}.{}.{}",
            self.prefix,
            command.group(),
            command.verb()
        )
    }

    /// `<prefix>.v1.>`: every command, for a subscriber.
    pub fn all_commands(&self) -> String {
        format!("{}.{API_VERSION}.>", self.prefix)
    }

    /// Where agents send [`crate::AgentReport`]s: `<prefix>.v1.internal.report.<segment>`.
    pub fn agent_report(&self, segment: &crate::Segment) -> String {
        format!("{}.{API_VERSION}.internal.report.{segment}", self.prefix)
    }

    /// Every agent report, for the coordinator. A multi-token wildcard:
    /// segment names may contain dots (SPEC.md §1).
    pub fn all_agent_reports(&self) -> String {
        format!("{}.{API_VERSION}.internal.report.>", self.prefix)
    }

    /// Every internal subject (`<prefix>.v1.internal.>`): reports, never
    /// commands; operators are denied them.
    pub fn all_internal(&self) -> String {
        format!("{}.{API_VERSION}.internal.>", self.prefix)
    }

    /// The segment an agent-report subject names, if it is one.
    pub fn report_segment<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?
            .strip_prefix(API_VERSION)?
            .strip_prefix(".internal.report.")
            .filter(|s| !s.is_empty())
    }

    /// The name of a JetStream key-value bucket of this installation:
    /// `<prefix>_<what>`, dots of the prefix turned into underscores.
    pub fn bucket(&self, what: Bucket) -> String {
        format!("{}_{}", self.prefix.replace('.', "_"), what.as_str())
    }

    /// Parses a command subject under this prefix.
    pub fn parse_command(&self, subject: &str) -> Option<Command> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?
            .strip_prefix(API_VERSION)?
            .strip_prefix('.')?;
        let (group, verb) = rest.split_once('.')?;
        Command::ALL
            .iter()
            .copied()
            .find(|c| c.group() == group && c.verb() == verb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_contract() {
        let s = Subjects::default();
        assert_eq!(s.command(Command::GatePut), "phasegate.v1.gate.put");
        assert_eq!(
            s.command(Command::TriggerRollout),
            "phasegate.v1.trigger.rollout"
        );
        assert_eq!(s.command(Command::AgentList), "phasegate.v1.agent.list");
        assert_eq!(s.all_commands(), "phasegate.v1.>");
    }

    #[test]
    fn report_subjects_carry_dotted_segments() {
        let s = Subjects::new("pg").unwrap();
        let seg = crate::Segment::new("eu.prod").unwrap();
        let subject = s.agent_report(&seg);
        assert_eq!(s.report_segment(&subject), Some("eu.prod"));
        assert_eq!(s.all_agent_reports(), "pg.v1.internal.report.>");
        assert_eq!(s.report_segment("pg.v1.internal.report."), None);
        assert_eq!(s.report_segment("other.v1.internal.report.dev"), None);
        assert_eq!(s.report_segment("pg.v1.gate.put"), None);
    }

    #[test]
    fn every_command_parses_back() {
        let s = Subjects::new("acme.pg").unwrap();
        for &c in Command::ALL {
            assert_eq!(s.parse_command(&s.command(c)), Some(c), "{c}");
        }
        assert_eq!(s.parse_command("acme.pg.v1.gate.nope"), None);
        assert_eq!(s.parse_command("phasegate.v1.gate.put"), None);
        assert_eq!(Command::ALL.len(), 22, "SPEC §6 with agent.forget");
    }

    #[test]
    fn entity_commands_name_their_kind() {
        assert_eq!(
            Command::GatePut.entity_kind(),
            Some(crate::EntityKind::Gate)
        );
        assert_eq!(
            Command::ConfigList.entity_kind(),
            Some(crate::EntityKind::Config)
        );
        assert_eq!(Command::PipelinePut.entity_kind(), None);
        assert_eq!(Command::TriggerAbort.entity_kind(), None);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(Subjects::new("a.b-c_d").is_ok());
        assert!(Subjects::new("").is_err());
        assert!(Subjects::new("a..b").is_err());
        assert!(Subjects::new("a.*").is_err());
        assert!(Subjects::new("a >").is_err());
    }
}
