//! Serving request/reply endpoints on the NATS service API, so a service
//! is discoverable (`$SRV.PING`, `$SRV.INFO`) and keeps per-endpoint stats
//! (`$SRV.STATS`), and plain publish/subscribe. Callers get bytes, headers
//! and a way to answer; they never touch `async-nats` types.

use std::pin::Pin;

use async_nats::HeaderMap;
use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::client::Client;
use crate::error::BusError;

/// A running service; dropping it does not stop it, [`Service::stop`] does.
pub struct Service {
    inner: service::Service,
}

impl Service {
    /// Stops answering on every endpoint (bounded: a lost connection must
    /// not hold a shutdown up).
    pub async fn stop(self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.inner.stop()).await;
    }
}

/// One request received on an endpoint.
pub struct Request {
    inner: service::Request,
}

impl Request {
    /// The request body.
    pub fn payload(&self) -> &Bytes {
        &self.inner.message.payload
    }

    /// The request headers, if any.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.inner.message.headers.as_ref()
    }

    /// The first value of header `name`, compared exactly (header names
    /// are case-sensitive in NATS); `None` when absent or not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()?
            .iter()
            .find(|(k, _)| AsRef::<str>::as_ref(*k) == name)
            .and_then(|(_, v)| v.first())
            .map(|v| v.as_str())
    }

    /// The encoding the request asks for (its `Content-Type`).
    pub fn encoding(&self) -> phasegate_proto::Encoding {
        crate::headers::encoding_of(&self.inner.message)
    }

    /// Answers it with `body` and `headers`, as [`crate::encode_reply`]
    /// makes them; the endpoint's stats count the answer.
    ///
    /// # Errors
    ///
    /// [`BusError::Publish`] when the answer cannot be sent.
    pub async fn respond(self, body: Bytes, headers: HeaderMap) -> Result<(), BusError> {
        let subject = self.inner.message.subject.to_string();
        self.inner
            .respond_with_headers(Ok(body), headers)
            .await
            .map_err(|source| BusError::Publish { subject, source })
    }
}

/// Requests arriving on one endpoint.
pub type Requests = Pin<Box<dyn Stream<Item = Request> + Send>>;

/// Errors of the service API, as text: `async-nats` has no common type.
fn service_err(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Service(format!("{what}: {e}"))
}

impl Client {
    /// Starts a service `name` with one endpoint per `(endpoint name,
    /// subject)`; returns it and the request stream of each endpoint, in
    /// order.
    ///
    /// # Errors
    ///
    /// [`BusError::Service`] when the service or an endpoint cannot start.
    pub async fn serve(
        &self,
        name: &str,
        version: &str,
        description: &str,
        endpoints: &[(String, String)],
    ) -> Result<(Service, Vec<Requests>), BusError> {
        let svc = self
            .nats()
            .service_builder()
            .description(description)
            .start(name, version)
            .await
            .map_err(|e| service_err("cannot start the service", e))?;
        let mut streams: Vec<Requests> = Vec::new();
        for (endpoint, subject) in endpoints {
            let e = svc
                .endpoint_builder()
                .name(endpoint)
                .add(subject.clone())
                .await
                .map_err(|e| service_err(&format!("cannot add endpoint {endpoint}"), e))?;
            streams.push(Box::pin(e.map(|inner| Request { inner })));
        }
        Ok((Service { inner: svc }, streams))
    }

    /// Messages published on `subject` (wildcards allowed), as payloads.
    ///
    /// # Errors
    ///
    /// [`BusError::Service`] when the subscription cannot be made.
    pub async fn subscribe_payloads(
        &self,
        subject: String,
    ) -> Result<Pin<Box<dyn Stream<Item = (String, Bytes)> + Send>>, BusError> {
        let sub = self
            .nats()
            .subscribe(subject.clone())
            .await
            .map_err(|e| service_err(&format!("cannot subscribe to {subject}"), e))?;
        Ok(Box::pin(sub.map(|m| (m.subject.to_string(), m.payload))))
    }

    /// Publishes `payload` on `subject` (fire and forget).
    ///
    /// # Errors
    ///
    /// [`BusError::Publish`] when the client's buffer is full or closed.
    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        self.nats()
            .publish(subject.clone(), payload)
            .await
            .map_err(|source| BusError::Publish { subject, source })
    }

    /// Sends everything buffered, waiting at most two seconds and not at
    /// all while disconnected (the buffer would never drain).
    pub async fn flush(&self) {
        if self.is_connected() {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), self.nats().flush()).await;
        }
    }
}
