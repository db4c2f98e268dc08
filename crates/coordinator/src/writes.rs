//! Entity writes the catalog makes, carried out off its mailbox so that
//! commands of different entities proceed concurrently, while those of one
//! entity stay in order: a command for an entity with a write in flight
//! waits in that entity's queue until the write is answered.
//!
//! The catalog decides (pure model, revision to check against, what to
//! publish); a task writes the entity, then its desired state, and hands
//! the outcome back as [`CatalogMsg::Written`]; the catalog adopts it and
//! answers. A write that has started is always answered from its outcome.

use bytes::Bytes;
use phasegate_proto::{
    Actor, EntityDeleteRequest, EntityKind, EntityPutRequest, EntityResult, EntitySpec,
    StoredEntity, Trigger,
};
use ractor::ActorRef;

use crate::catalog::CatalogMsg;
use crate::error::CoordinatorError;
use crate::reply::ReplyTo;
use crate::store::Store;

/// The catalog's key of an entity.
pub(crate) type EntityId = (EntityKind, String);

/// A command waiting for its entity's write in flight.
pub(crate) enum Queued {
    /// A put, with the `traceparent` of its command.
    Put(EntityPutRequest, Option<String>, ReplyTo<EntityResult>),
    /// A delete.
    Delete(EntityDeleteRequest, ReplyTo<()>),
}

/// What to do once the entity is written.
pub(crate) enum AfterWrite {
    /// Answer a put.
    Put {
        spec: Box<EntitySpec>,
        created: Option<Box<Trigger>>,
        actor: Actor,
        /// What the put did, for the log ([`phasegate_model::PutOutcome::change`]).
        change: &'static str,
        reply: ReplyTo<EntityResult>,
    },
    /// Answer a delete.
    Delete { actor: Actor, reply: ReplyTo<()> },
    /// Nothing yet: the command's answer is filled in before the write
    /// starts.
    Placeholder,
}

/// A decided write of an entity the catalog owns.
pub(crate) struct PendingWrite {
    pub(crate) id: EntityId,
    pub(crate) key: String,
    pub(crate) stored: StoredEntity,
    /// The revision the write is checked against.
    pub(crate) revision: u64,
    /// Desired state to publish after it, with the revision of the
    /// desired key to check against (no trigger started).
    pub(crate) publish: Option<(Bytes, u64)>,
    pub(crate) then: AfterWrite,
}

/// A write carried out.
pub(crate) struct Written {
    pub(crate) write: PendingWrite,
    /// The entity's new revision.
    pub(crate) entity: Result<u64, CoordinatorError>,
    /// The desired key's new revision, when one was published.
    pub(crate) desired: Option<Result<u64, CoordinatorError>>,
}

/// Carries out `write` and sends the outcome to the catalog.
pub(crate) fn spawn(store: Store, catalog: ActorRef<CatalogMsg>, write: PendingWrite) {
    tokio::spawn(async move {
        let entity = match crate::store::to_bytes(&write.stored) {
            Ok(bytes) => {
                store
                    .write(&store.entities)
                    .update(&write.key, bytes, write.revision)
                    .await
            }
            Err(e) => Err(e),
        };
        let desired = match (&entity, &write.publish) {
            (Ok(_), Some((bytes, rev))) => Some(
                store
                    .write(&store.desired)
                    .update(&write.key, bytes.clone(), *rev)
                    .await,
            ),
            _ => None,
        };
        let written = Written {
            write,
            entity,
            desired,
        };
        if catalog
            .cast(CatalogMsg::Written(Box::new(written)))
            .is_err()
        {
            tracing::debug!("catalog gone before a write was answered");
        }
    });
}
