//! Runnable examples of embedding phasegate, each a file next to this one:
//!
//! - `put_and_watch`: a gate put and its rollout watched through
//!   `phasegate-client`;
//! - `embedded_fleet`: a coordinator and two agents in one process, and a
//!   service asking an agent over HTTP;
//! - `offline_eval`: an agent's state directory read and evaluated with
//!   `phasegate-eval`, no NATS and no agent running.
//!
//! `cargo run -p phasegate-examples --example NAME`; `cargo test` runs
//! them all. Each starts its own `nats-server` (through `phasegate-devkit`)
//! where it needs one.
