//! Entity writes the catalog makes, carried out off its mailbox so that
//! commands of different entities proceed concurrently, while those of one
//! entity stay in order: a command for an entity with a write in flight
//! waits in that entity's queue until the write is answered.
//!
//! The catalog decides (pure model, revision to check against, what to
//! publish); a task writes the entity, then its desired state, and hands
//! the outcome back (as `CatalogMsg::Written`); the catalog adopts it and
//! answers. A write that has started is always answered from its outcome.

use bytes::Bytes;
use phasegate_proto::{
    Actor, EntityDeleteRequest, EntityPutRequest, EntityRef, EntityResult, EntitySpec,
    StoredEntity, Trigger,
};

use crate::error::CoordinatorError;
use crate::reply::ReplyTo;
use crate::store::Store;

/// A command waiting for its entity's write in flight.
pub(crate) enum Queued {
    Put {
        req: EntityPutRequest,
        /// The command's `traceparent`.
        trace: Option<String>,
        reply: ReplyTo<EntityResult>,
    },
    Delete {
        req: EntityDeleteRequest,
        reply: ReplyTo<()>,
    },
}

/// What a put answers once its write succeeded.
pub(crate) struct PutAnswer {
    pub(crate) spec: Box<EntitySpec>,
    /// The trigger the put started, if any.
    pub(crate) created: Option<Box<Trigger>>,
    pub(crate) actor: Actor,
    /// What the put did, for the log ([`phasegate_model::PutOutcome::change`]).
    pub(crate) change: &'static str,
}

/// What to do once the entity is written.
pub(crate) enum AfterWrite {
    /// Answer a put (and start the trigger it created).
    Put {
        answer: PutAnswer,
        reply: ReplyTo<EntityResult>,
    },
    /// Answer a delete.
    Delete { actor: Actor, reply: ReplyTo<()> },
}

/// A decided write of an entity the catalog owns.
pub(crate) struct EntityWrite {
    pub(crate) entity: EntityRef,
    pub(crate) stored: StoredEntity,
    /// The revision the write is checked against.
    pub(crate) revision: u64,
    /// Desired state to publish after it, with the revision of the
    /// desired key to check against (no trigger started).
    pub(crate) publish: Option<(Bytes, u64)>,
}

/// A write and the command it answers.
pub(crate) struct PendingWrite {
    pub(crate) write: EntityWrite,
    pub(crate) then: AfterWrite,
}

/// A write carried out.
pub(crate) struct Written {
    pub(crate) pending: PendingWrite,
    /// The entity's new revision.
    pub(crate) entity_revision: Result<u64, CoordinatorError>,
    /// The desired key's new revision, when one was published.
    pub(crate) desired_revision: Option<Result<u64, CoordinatorError>>,
}

/// Carries out `pending` on a task of its own and hands the outcome to
/// `deliver` (which sends it to the catalog).
pub(crate) fn spawn(
    store: Store,
    pending: PendingWrite,
    deliver: impl FnOnce(Written) + Send + 'static,
) {
    tokio::spawn(async move {
        let w = &pending.write;
        let key = w.entity.key();
        let entity_revision = match crate::store::to_bytes(&w.stored) {
            Ok(bytes) => {
                store
                    .write(&store.entities)
                    .update(&key, bytes, w.revision)
                    .await
            }
            Err(e) => Err(e),
        };
        let desired_revision = match (&entity_revision, &w.publish) {
            (Ok(_), Some((bytes, rev))) => Some(
                store
                    .write(&store.desired)
                    .update(&key, bytes.clone(), *rev)
                    .await,
            ),
            _ => None,
        };
        deliver(Written {
            pending,
            entity_revision,
            desired_revision,
        });
    });
}
