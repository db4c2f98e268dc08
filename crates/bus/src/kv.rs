//! JetStream key-value buckets: what phasegate persists and what agents
//! watch. Values are opaque bytes here; callers encode with the codec.

use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::kv::{
    Config, CreateErrorKind, Operation, Store, UpdateErrorKind, Watch,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::client::Client;
use crate::error::BusError;

/// How a bucket is created when it does not exist yet. Of an existing
/// bucket, [`Client::kv`] brings `max_age`, `description` and `replicas`
/// in line (the settings a deployment tunes: retention, a lease's TTL,
/// redundancy); `history` and `max_value_size` stay as the bucket was
/// created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketOptions {
    /// Values kept per key (1 = latest only).
    pub history: i64,
    /// Largest value accepted, in bytes.
    pub max_value_size: i32,
    /// Free text shown by `nats kv ls`.
    pub description: String,
    /// Values expire this long after they were written (zero: never).
    pub max_age: Duration,
    /// How many consumers (watchers) the bucket's stream admits; 0 keeps
    /// the server's default (1,000 per stream since nats-server 2.15, too
    /// few for a bucket every agent watches).
    pub max_consumers: i32,
    /// Copies of the bucket kept by a JetStream cluster (1 to 5; the
    /// servers' own limit). More than 1 needs at least that many servers
    /// with JetStream in one cluster.
    pub replicas: usize,
}

impl Default for BucketOptions {
    fn default() -> Self {
        Self {
            history: 1,
            max_value_size: 1024 * 1024,
            description: String::new(),
            max_age: Duration::ZERO,
            max_consumers: 0,
            replicas: 1,
        }
    }
}

/// One value of a bucket with the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key within the bucket.
    pub key: String,
    /// The bytes written; callers decode them.
    pub value: Bytes,
    /// The bucket-wide sequence number of the write.
    pub revision: u64,
}

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvChange {
    /// The key that changed.
    pub key: String,
    /// The new value; `None` when the key was deleted or purged.
    pub value: Option<Bytes>,
    /// The bucket-wide sequence number of the change.
    pub revision: u64,
    /// True once every value that existed when the watch began was delivered.
    pub seen_current: bool,
}

/// A stream of changes of a bucket.
pub type KvWatch = Pin<Box<dyn Stream<Item = Result<KvChange, BusError>> + Send>>;

/// A JetStream key-value bucket.
#[derive(Debug, Clone)]
pub struct Kv {
    store: Store,
    bucket: String,
}

/// A bucket that cannot be created, saying what to do when it asked for
/// more replicas than one server holds.
fn replicas_err(
    bucket: &str,
    op: &'static str,
    replicas: usize,
    e: impl std::fmt::Display,
) -> BusError {
    let message = if replicas > 1 {
        format!(
            "{e} ({replicas} replicas need a JetStream cluster of at least {replicas} servers; \
             on a single server configure 1 (coordinator.toml `bucket_replicas`))"
        )
    } else {
        e.to_string()
    };
    BusError::Kv {
        bucket: bucket.to_owned(),
        op,
        message,
    }
}

/// A write's failure: its outcome is unknown (see [`BusError::KvUnconfirmed`]).
fn kv_unconfirmed(bucket: &str, op: &'static str, e: impl std::fmt::Display) -> BusError {
    BusError::KvUnconfirmed {
        bucket: bucket.to_owned(),
        op,
        message: e.to_string(),
    }
}

fn kv_err(bucket: &str, op: &'static str, e: impl std::fmt::Display) -> BusError {
    BusError::Kv {
        bucket: bucket.to_owned(),
        op,
        message: e.to_string(),
    }
}

impl Client {
    /// Opens `bucket`, creating it with `opts` when it does not exist; an
    /// existing bucket whose `max_age` or description differ from `opts`
    /// is updated to them first, so a changed setting takes effect at the
    /// next start (values already stored then expire by the new age).
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] when JetStream is not reachable or refuses.
    pub async fn kv(&self, bucket: &str, opts: BucketOptions) -> Result<Kv, BusError> {
        let js = self.jetstream();
        let store = match js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(Config {
                    bucket: bucket.to_owned(),
                    description: opts.description.clone(),
                    history: opts.history,
                    max_value_size: opts.max_value_size,
                    max_age: opts.max_age,
                    num_replicas: opts.replicas,
                    ..Config::default()
                })
                .await
                .map_err(|e| replicas_err(bucket, "create bucket", opts.replicas, e))?,
        };
        // An existing bucket's settings brought in line; of a new one, what
        // the key-value API cannot set at creation.
        let store = if self.apply_settings(&store, bucket, &opts).await? {
            // Reopened, so what it caches of the stream is current.
            js.get_key_value(bucket)
                .await
                .map_err(|e| kv_err(bucket, "open bucket", e))?
        } else {
            store
        };
        Ok(Kv {
            store,
            bucket: bucket.to_owned(),
        })
    }

    /// Updates the stream behind an existing bucket when its `max_age`,
    /// description or replica count differ from `opts`; does nothing when
    /// they match. Returns whether it updated. A JetStream cluster moves a
    /// stream to more or fewer replicas in place; a server that cannot
    /// (too few servers, no cluster) refuses, and the error says so.
    async fn apply_settings(
        &self,
        store: &Store,
        bucket: &str,
        opts: &BucketOptions,
    ) -> Result<bool, BusError> {
        let js = self.jetstream();
        let info = js
            .get_stream(&store.stream_name)
            .await
            .map_err(|e| kv_err(bucket, "read bucket settings", e))?
            .get_info()
            .await
            .map_err(|e| kv_err(bucket, "read bucket settings", e))?;
        let mut config = info.config;
        let description = config.description.as_deref().unwrap_or_default();
        let consumers_ok = opts.max_consumers <= 0 || config.max_consumers == opts.max_consumers;
        let replicas_ok = config.num_replicas == opts.replicas;
        if config.max_age == opts.max_age
            && description == opts.description
            && consumers_ok
            && replicas_ok
        {
            return Ok(false);
        }
        tracing::info!(
            bucket,
            old_max_age_s = config.max_age.as_secs(),
            new_max_age_s = opts.max_age.as_secs(),
            old_replicas = config.num_replicas,
            new_replicas = opts.replicas,
            "bucket settings changed; updating"
        );
        let old_replicas = config.num_replicas;
        config.num_replicas = opts.replicas;
        config.max_age = opts.max_age;
        config.description = Some(opts.description.clone());
        if opts.max_consumers > 0 {
            config.max_consumers = opts.max_consumers;
        }
        // The server refuses a duplicate window longer than the age.
        if !opts.max_age.is_zero() && config.duplicate_window > opts.max_age {
            config.duplicate_window = opts.max_age;
        }
        js.update_stream(config).await.map_err(|e| {
            if replicas_ok {
                kv_err(bucket, "update bucket settings", e)
            } else {
                BusError::Kv {
                    bucket: bucket.to_owned(),
                    op: "change the bucket's replicas",
                    message: format!(
                        "it has {old_replicas}, {} configured, and the server refused ({e}): \
                         run a JetStream cluster of at least {} servers, or configure {old_replicas} \
                         replica(s) (coordinator.toml `bucket_replicas`), or move the bucket \
                         yourself (`nats stream edit KV_{bucket} --replicas {}`)",
                        opts.replicas, opts.replicas, opts.replicas
                    ),
                }
            }
        })?;
        Ok(true)
    }

    /// Opens `bucket`, which must exist: for readers that must not create
    /// what a writer owns.
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] when the bucket does not exist (yet) or JetStream
    /// is not reachable.
    pub async fn kv_existing(&self, bucket: &str) -> Result<Kv, BusError> {
        let js = self.jetstream();
        let store = js
            .get_key_value(bucket)
            .await
            .map_err(|e| kv_err(bucket, "open bucket", e))?;
        Ok(Kv {
            store,
            bucket: bucket.to_owned(),
        })
    }
}

impl Kv {
    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A revision-checked write to `key` lost to another writer.
    fn conflict(&self, key: &str) -> BusError {
        BusError::KvConflict {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
        }
    }

    /// The latest value of `key`, if it has one.
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] on transport or server failure.
    pub async fn get(&self, key: &str) -> Result<Option<KvEntry>, BusError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| kv_err(&self.bucket, "get", e))?;
        Ok(entry.and_then(|e| match e.operation {
            Operation::Put => Some(KvEntry {
                key: e.key,
                value: e.value,
                revision: e.revision,
            }),
            Operation::Delete | Operation::Purge => None,
        }))
    }

    /// Writes `value` unconditionally; returns its revision.
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] on transport or server failure.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, BusError> {
        self.store
            .put(key, value)
            .await
            .map_err(|e| kv_unconfirmed(&self.bucket, "put", e))
    }

    /// Writes `value` only if `key` has no value; returns its revision.
    ///
    /// # Errors
    ///
    /// [`BusError::KvConflict`] when the key exists, [`BusError::Kv`] otherwise.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<u64, BusError> {
        self.store.create(key, value).await.map_err(|e| {
            if e.kind() == CreateErrorKind::AlreadyExists {
                self.conflict(key)
            } else {
                kv_unconfirmed(&self.bucket, "create", e)
            }
        })
    }

    /// Writes `value` only if the latest revision of `key` is `revision`
    /// (0 = the key must have no value); returns the new revision. Two
    /// writers can never silently overwrite each other.
    ///
    /// # Errors
    ///
    /// [`BusError::KvConflict`] on a stale revision, [`BusError::Kv`] otherwise.
    pub async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, BusError> {
        if revision == 0 {
            return self.create(key, value).await;
        }
        self.store.update(key, value, revision).await.map_err(|e| {
            if e.kind() == UpdateErrorKind::WrongLastRevision {
                self.conflict(key)
            } else {
                kv_unconfirmed(&self.bucket, "update", e)
            }
        })
    }

    /// Deletes `key` (a tombstone that watchers see).
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] on transport or server failure.
    pub async fn delete(&self, key: &str) -> Result<(), BusError> {
        self.store
            .delete(key)
            .await
            .map_err(|e| kv_unconfirmed(&self.bucket, "delete", e))
    }

    /// Deletes `key` only if its latest revision is `revision`: a writer
    /// never removes a value it did not write last.
    ///
    /// # Errors
    ///
    /// [`BusError::KvConflict`] on a stale revision, [`BusError::Kv`] otherwise.
    pub async fn delete_if(&self, key: &str, revision: u64) -> Result<(), BusError> {
        self.store
            .delete_expect_revision(key, Some(revision))
            .await
            .map_err(|e| {
                if e.kind() == UpdateErrorKind::WrongLastRevision {
                    self.conflict(key)
                } else {
                    kv_unconfirmed(&self.bucket, "delete", e)
                }
            })
    }

    /// The bucket's generation: when its stream was created, in Unix
    /// nanoseconds, as the server says. Revisions restart at 1 when a
    /// bucket is deleted and created again; the generation tells the two
    /// apart. Asks the server each time (one JetStream API request).
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] when the bucket no longer exists, or on transport
    /// or server failure.
    pub async fn generation(&self) -> Result<u64, BusError> {
        Ok(self.generation_and_last_revision().await?.0)
    }

    /// The bucket's [generation](Kv::generation) and the revision of its
    /// latest write (0 when nothing was ever written), in one request: a
    /// watcher that has seen less than that for a while has lost its
    /// feed.
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] when the bucket no longer exists, or on transport
    /// or server failure.
    pub async fn generation_and_last_revision(&self) -> Result<(u64, u64), BusError> {
        let info = self.stream_info("stream info").await?;
        // Before 1970 or after 2554 cannot happen for a stream created by
        // a working server; 0 then still names one generation.
        let generation = u64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(0);
        Ok((generation, info.state.last_sequence))
    }

    /// What the server says of the bucket's stream now; `op` names the
    /// asking operation in errors.
    async fn stream_info(
        &self,
        op: &'static str,
    ) -> Result<async_nats::jetstream::stream::Info, BusError> {
        self.store
            .stream
            .get_info()
            .await
            .map_err(|e| kv_err(&self.bucket, op, e))
    }

    /// How long values live in the bucket (zero: forever), as the server
    /// holds it now.
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] on transport or server failure.
    pub async fn max_age(&self) -> Result<Duration, BusError> {
        Ok(self.stream_info("status").await?.config.max_age)
    }

    /// How many replicas the server keeps of the bucket, and which server
    /// leads it (`None` on a single server without a cluster, or while no
    /// leader is elected).
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] on transport or server failure.
    pub async fn replicas(&self) -> Result<(usize, Option<String>), BusError> {
        let info = self.stream_info("status").await?;
        let leader = info.cluster.and_then(|c| c.leader);
        Ok((info.config.num_replicas, leader))
    }

    /// True when the bucket holds no message at all.
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] on transport or server failure.
    pub async fn is_empty(&self) -> Result<bool, BusError> {
        let status = self
            .store
            .status()
            .await
            .map_err(|e| kv_err(&self.bucket, "status", e))?;
        Ok(status.values() == 0)
    }

    /// Every live value of the bucket, read in one pass.
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] on transport or server failure.
    pub async fn entries(&self) -> Result<Vec<KvEntry>, BusError> {
        let status = self
            .store
            .status()
            .await
            .map_err(|e| kv_err(&self.bucket, "status", e))?;
        if status.values() == 0 {
            return Ok(Vec::new());
        }
        let mut watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| kv_err(&self.bucket, "watch", e))?;
        let mut out = std::collections::BTreeMap::new();
        // The watch delivers the latest value of every key, then waits for
        // changes; `delta == 0` marks the last of the existing ones.
        while let Some(next) = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .map_err(|e| kv_err(&self.bucket, "read all", e))?
        {
            let e = next.map_err(|e| kv_err(&self.bucket, "read all", e))?;
            let done = e.delta == 0;
            match e.operation {
                Operation::Put => {
                    out.insert(
                        e.key.clone(),
                        KvEntry {
                            key: e.key,
                            value: e.value,
                            revision: e.revision,
                        },
                    );
                }
                Operation::Delete | Operation::Purge => {
                    out.remove(&e.key);
                }
            }
            if done {
                break;
            }
        }
        Ok(out.into_values().collect())
    }

    /// Watches every key: first the latest value of each (deleted keys
    /// included as `None`), then every change as it happens, in revision
    /// order. `seen_current` turns true once the existing values are through.
    ///
    /// # Errors
    ///
    /// [`BusError::Kv`] when the watch cannot be set up.
    pub async fn watch_all_with_history(&self) -> Result<KvWatch, BusError> {
        let watch: Watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| kv_err(&self.bucket, "watch", e))?;
        let bucket = self.bucket.clone();
        Ok(Box::pin(watch.map(move |next| {
            let e = next.map_err(|e| kv_err(&bucket, "watch", e))?;
            Ok(KvChange {
                key: e.key,
                value: match e.operation {
                    Operation::Put => Some(e.value),
                    Operation::Delete | Operation::Purge => None,
                },
                revision: e.revision,
                seen_current: e.seen_current || e.delta == 0,
            })
        })))
    }
}
