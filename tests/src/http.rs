//! A small HTTP client for the agent's API, and a health endpoint whose
//! answer the test controls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/1 client.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }
}

impl Http {
    /// `method path` on `addr` with `body`; returns the status and the body
    /// parsed as JSON (`null` when empty).
    pub async fn call(
        &self,
        method: &str,
        addr: SocketAddr,
        path: &str,
        body: impl Into<Bytes>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(body.into()))?;
        let resp = self.client.request(req).await.context("http request")?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&bytes)))?
        };
        Ok((status, json))
    }

    /// `POST path` with a JSON value.
    pub async fn post(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        self.call("POST", addr, path, serde_json::to_vec(body)?)
            .await
    }

    /// `GET path`.
    pub async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        self.call("GET", addr, path, Bytes::new()).await
    }
}

/// A health endpoint answering every request with the status the test sets.
pub struct HealthEndpoint {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthEndpoint {
    /// Starts it, answering 200.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let status = Arc::new(AtomicU16::new(200));
        let s = status.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let code = s.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = sock.read(&mut buf).await;
                    let reply = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Ok(Self { addr, status, task })
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    /// Sets the status it answers.
    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

impl Drop for HealthEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}
