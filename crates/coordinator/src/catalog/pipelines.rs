//! Pipeline commands. A pipeline an active trigger uses is frozen until
//! the trigger finishes, one attached to an entity cannot be deleted, and
//! both wait for an entity write in flight that uses the pipeline.

use std::sync::Arc;

use phasegate_model as model;
use phasegate_proto::{
    ApiError, ErrorCode, Pipeline, PipelineDeleteRequest, PipelineName, PipelinePutRequest,
};

use super::{CatalogState, store_err};
use crate::page::{Page, PageRequest, page};
use crate::store::to_bytes;

impl CatalogState {
    pub(super) fn pipeline_get(&self, name: &PipelineName) -> Result<Pipeline, ApiError> {
        self.pipelines
            .get(name)
            .map(|(p, _)| p.clone())
            .ok_or_else(|| ApiError::not_found(format!("pipeline {name} does not exist")))
    }

    pub(super) fn pipeline_list(&self, req: &PageRequest<String>) -> Page<Pipeline> {
        let p = page(self.pipelines.values(), |(p, _)| p.name.to_string(), req);
        Page {
            items: p.items.into_iter().map(|(p, _)| p.clone()).collect(),
            next_cursor: p.next_cursor,
        }
    }

    fn pipeline_in_use(&self, name: &PipelineName) -> bool {
        self.entities.values().any(|s| {
            s.stored
                .active
                .as_ref()
                .is_some_and(|a| &a.trigger.pipeline == name)
        })
    }

    /// `unavailable` while an entity write in flight attaches `name` or
    /// starts a trigger on it: the pipeline command waits for it to land
    /// (and is not carried out now).
    fn pipeline_settled(&self, name: &PipelineName) -> Result<(), ApiError> {
        if self.in_flight_pipelines.values().any(|p| p == name) {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("a write using pipeline {name} is in flight; not carried out; retry"),
            ));
        }
        Ok(())
    }

    pub(super) async fn pipeline_put(
        &mut self,
        req: PipelinePutRequest,
    ) -> Result<Pipeline, ApiError> {
        let p = req.pipeline;
        model::validate_pipeline(&p).map_err(|e| ApiError::invalid(e.to_string()))?;
        let existing = self.pipelines.get(&p.name);
        if existing.is_some_and(|(old, _)| old == &p) {
            return Ok(p);
        }
        self.pipeline_settled(&p.name)?;
        if self.pipeline_in_use(&p.name) {
            return Err(ApiError::conflict(format!(
                "pipeline {} is used by an active trigger; it is frozen until that trigger finishes",
                p.name
            )));
        }
        let revision = existing.map_or(0, |(_, r)| *r);
        let written = self
            .store
            .write(&self.store.pipelines)
            .update(p.name.as_str(), to_bytes(&p).map_err(store_err)?, revision)
            .await;
        let new_rev = match written {
            Ok(r) => r,
            Err(e) => {
                // Lost to another write, or unconfirmed and perhaps stored
                // later: what is stored is the truth for the retry.
                self.refresh_pipeline(&p.name).await;
                return Err(store_err(e));
            }
        };
        tracing::info!(pipeline = %p.name, actor = %req.actor, "pipeline stored");
        Arc::make_mut(&mut self.pipelines).insert(p.name.clone(), (p.clone(), new_rev));
        Ok(p)
    }

    /// Re-reads one pipeline after a failed write.
    async fn refresh_pipeline(&mut self, name: &PipelineName) {
        match self.store.pipelines.get(name.as_str()).await {
            Ok(Some(e)) => {
                match phasegate_proto::decode::<Pipeline>(
                    phasegate_proto::Encoding::MsgPack,
                    &e.value,
                ) {
                    Ok(p) => {
                        Arc::make_mut(&mut self.pipelines).insert(name.clone(), (p, e.revision));
                    }
                    Err(err) => {
                        tracing::error!(pipeline = %name, error = %err, "stored pipeline undecodable")
                    }
                }
            }
            Ok(None) => {
                Arc::make_mut(&mut self.pipelines).remove(name);
            }
            Err(err) => tracing::warn!(pipeline = %name, error = %err, "cannot re-read pipeline"),
        }
    }

    pub(super) async fn pipeline_delete(
        &mut self,
        req: PipelineDeleteRequest,
    ) -> Result<(), ApiError> {
        if !self.pipelines.contains_key(&req.name) {
            return Err(ApiError::not_found(format!(
                "pipeline {} does not exist",
                req.name
            )));
        }
        self.pipeline_settled(&req.name)?;
        if self.pipeline_in_use(&req.name) {
            return Err(ApiError::conflict(format!(
                "pipeline {} is used by an active trigger",
                req.name
            )));
        }
        let attached = self.entities.values().find(|s| {
            s.stored
                .record
                .latest
                .as_ref()
                .is_some_and(|l| l.pipeline.as_ref() == Some(&req.name))
        });
        if let Some(s) = attached {
            return Err(ApiError::conflict(format!(
                "pipeline {} is attached to {} {}; detach it first",
                req.name, s.stored.record.kind, s.stored.record.name
            )));
        }
        self.store
            .write(&self.store.pipelines)
            .delete(req.name.as_str())
            .await
            .map_err(store_err)?;
        tracing::info!(pipeline = %req.name, actor = %req.actor, "pipeline deleted");
        Arc::make_mut(&mut self.pipelines).remove(&req.name);
        Ok(())
    }
}
