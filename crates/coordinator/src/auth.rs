//! Who sent a command, and what they may do (SPEC.md §8).
//!
//! With authentication on (an `[auth]` table in `coordinator.toml`), the
//! sender is the authenticated NATS identity the server states in the
//! `Nats-Request-Info` header of a request that crossed the service import
//! (operators' account imports the command subjects with `share: true`; a
//! client cannot forge that header, the server overwrites it). That
//! identity is the command's actor, whatever the body says, and its role
//! decides which commands it may send. With authentication off, actors are
//! declared by the caller, except `phasegate`, which is reserved for the
//! coordinator's own automatic steps.
//!
//! Pure: the service hands in the header and the command, and gets an
//! answer.

use std::collections::BTreeMap;

use phasegate_proto::{Actor, ApiError, Command};
use serde::Deserialize;

/// The header nats-server adds to requests that cross a service import
/// with `share: true`.
pub const REQUEST_INFO_HEADER: &str = "Nats-Request-Info";

phasegate_proto::wire_enum! {
    /// What an identity may do; each role includes the ones before it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Role as "role" {
        /// Get, list, watch.
        Viewer => "viewer",
        /// And put/delete of gates and configs, pause, resume, abort.
        Editor => "editor",
        /// And pipelines, skip, rollout, `agent.forget`.
        Admin => "admin",
    }
}

/// One operator identity of a secured installation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// The nkey public key it authenticates with (`U…`), as `phasegate auth
    /// init` writes it.
    #[serde(default)]
    pub nkey: Option<String>,
    /// Or the NATS user name it authenticates with (user/password).
    #[serde(default)]
    pub user: Option<String>,
    /// What it may do.
    pub role: Role,
}

/// The `[auth]` table: its presence turns authentication on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Operators by name: the name is the actor recorded in history.
    #[serde(default)]
    pub operators: BTreeMap<String, OperatorConfig>,
}

impl AuthConfig {
    /// Checks names and keys; `origin` names the file in messages.
    pub fn check(&self, origin: &str) -> Result<(), String> {
        for (name, op) in &self.operators {
            Actor::new(name.clone())
                .map_err(|e| format!("{origin}: auth.operators.{name}: {e}"))?;
            if name == Actor::system().as_str() {
                return Err(format!(
                    "{origin}: auth.operators.{name}: `phasegate` is reserved for automatic steps"
                ));
            }
            if op.nkey.is_none() && op.user.is_none() {
                return Err(format!(
                    "{origin}: auth.operators.{name}: give `nkey` (from `phasegate auth init`) or `user`"
                ));
            }
        }
        Ok(())
    }
}

/// Who sent a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off: the body's actor is taken as declared.
    Open,
    /// An authenticated operator.
    Identified {
        /// Its name: the actor of everything it does.
        actor: Actor,
        /// What it may do.
        role: Role,
    },
}

#[derive(Deserialize)]
struct RequestInfo {
    #[serde(default)]
    user: Option<String>,
}

/// Establishes the sender of a command from the `Nats-Request-Info` header
/// (`None` when absent). `forbidden` when authentication is on and the
/// sender cannot be established or is no configured operator.
pub fn identify(auth: Option<&AuthConfig>, request_info: Option<&str>) -> Result<Caller, ApiError> {
    let Some(auth) = auth else {
        return Ok(Caller::Open);
    };
    let unknown = || {
        ApiError::forbidden(
            "the sender's identity cannot be established: send commands with operator credentials",
        )
    };
    let user = request_info
        .and_then(|h| {
            phasegate_proto::decode::<RequestInfo>(phasegate_proto::Encoding::Json, h.as_bytes())
                .ok()
        })
        .and_then(|i| i.user)
        .filter(|u| !u.is_empty())
        .ok_or_else(unknown)?;
    let (name, op) = auth
        .operators
        .iter()
        .find(|(_, op)| {
            op.nkey.as_deref() == Some(user.as_str()) || op.user.as_deref() == Some(user.as_str())
        })
        .ok_or_else(unknown)?;
    let actor = Actor::new(name.clone()).map_err(|_| unknown())?;
    Ok(Caller::Identified {
        actor,
        role: op.role,
    })
}

/// The least role that may send `command`; `None` for `approve`, which any
/// identity may send (the phase's approvers decide).
pub fn required_role(command: Command) -> Option<Role> {
    use Command as C;
    Some(match command {
        C::PipelineGet
        | C::PipelineList
        | C::GateGet
        | C::GateList
        | C::ConfigGet
        | C::ConfigList
        | C::TriggerGet
        | C::TriggerList
        | C::AgentList => Role::Viewer,
        C::GatePut
        | C::GateDelete
        | C::ConfigPut
        | C::ConfigDelete
        | C::TriggerPause
        | C::TriggerResume
        | C::TriggerAbort => Role::Editor,
        C::PipelinePut
        | C::PipelineDelete
        | C::TriggerSkip
        | C::TriggerRollout
        | C::AgentForget => Role::Admin,
        C::TriggerApprove => return None,
    })
}

impl Caller {
    /// `forbidden` when this caller's role does not allow `command`.
    pub fn may(&self, command: Command) -> Result<(), ApiError> {
        let Self::Identified { actor, role } = self else {
            return Ok(());
        };
        match required_role(command) {
            Some(needed) if *role < needed => Err(ApiError::forbidden(format!(
                "{actor} is a {role} and may not send {command}: that needs the {needed} role"
            ))),
            _ => Ok(()),
        }
    }

    /// The actor a command is recorded under: the identity when there is
    /// one (the body's is ignored), else the declared one, which may not be
    /// the reserved `phasegate`.
    pub fn actor(&self, declared: &Actor) -> Result<Actor, ApiError> {
        match self {
            Self::Identified { actor, .. } => Ok(actor.clone()),
            Self::Open if declared == &Actor::system() => Err(ApiError::invalid(
                "actor: `phasegate` is reserved for the coordinator's automatic steps",
            )),
            Self::Open => Ok(declared.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests

    use phasegate_proto::ErrorCode;

    use super::*;

    fn auth() -> AuthConfig {
        toml::from_str(
            r#"
            [operators.alice]
            nkey = "UALICE"
            role = "admin"
            [operators.carol]
            nkey = "UCAROL"
            role = "viewer"
            [operators.ed]
            user = "ed"
            role = "editor"
            "#,
        )
        .unwrap()
    }

    fn info(user: &str) -> String {
        format!(r#"{{"acc":"OPERATORS","user":"{user}","rtt":"1ms"}}"#)
    }

    #[test]
    fn the_identity_is_the_servers_word_not_the_bodys() {
        let a = auth();
        let carol = identify(Some(&a), Some(&info("UCAROL"))).unwrap();
        let declared = Actor::new("alice").unwrap();
        assert_eq!(carol.actor(&declared).unwrap().as_str(), "carol");
        let ed = identify(Some(&a), Some(&info("ed"))).unwrap();
        assert_eq!(ed.actor(&declared).unwrap().as_str(), "ed");
    }

    #[test]
    fn no_or_unknown_identity_is_forbidden_when_secured() {
        let a = auth();
        for h in [
            None,
            Some("not json"),
            Some(r#"{"acc":"X"}"#),
            Some(&*info("UMALLORY")),
        ] {
            let e = identify(Some(&a), h).unwrap_err();
            assert_eq!(e.code, ErrorCode::Forbidden, "{h:?}");
        }
        assert_eq!(identify(None, None).unwrap(), Caller::Open);
    }

    #[test]
    fn roles_include_the_ones_before() {
        let a = auth();
        let carol = identify(Some(&a), Some(&info("UCAROL"))).unwrap();
        let ed = identify(Some(&a), Some(&info("ed"))).unwrap();
        let alice = identify(Some(&a), Some(&info("UALICE"))).unwrap();
        assert!(carol.may(Command::GateList).is_ok());
        assert_eq!(
            carol.may(Command::GatePut).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert!(
            carol.may(Command::TriggerApprove).is_ok(),
            "approvers decide"
        );
        assert!(ed.may(Command::GatePut).is_ok());
        assert!(ed.may(Command::TriggerAbort).is_ok());
        assert_eq!(
            ed.may(Command::PipelinePut).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            ed.may(Command::TriggerSkip).unwrap_err().code,
            ErrorCode::Forbidden
        );
        for c in Command::ALL {
            assert!(alice.may(*c).is_ok(), "{c}");
            assert!(Caller::Open.may(*c).is_ok());
        }
    }

    #[test]
    fn roles_read_as_configured() {
        for &role in Role::ALL {
            let toml = format!("[operators.x]\nuser = \"x\"\nrole = \"{role}\"\n");
            let a: AuthConfig = toml::from_str(&toml).unwrap();
            assert_eq!(a.operators["x"].role, role, "serde reads {role}");
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
        assert!(toml::from_str::<AuthConfig>("[operators.x]\nrole = \"root\"\n").is_err());
    }

    #[test]
    fn phasegate_is_reserved() {
        let e = Caller::Open.actor(&Actor::system()).unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        let mut a = auth();
        a.operators.insert(
            "phasegate".into(),
            OperatorConfig {
                nkey: Some("UX".into()),
                user: None,
                role: Role::Admin,
            },
        );
        assert!(a.check("coordinator.toml").is_err());
    }
}
