//! Trigger scale: thousands of active triggers on one coordinator. Puts
//! of distinct gates under a one-hour bake, a few in flight, until the
//! target count or the wall-time cap; then `trigger.get` latency under
//! that load, the coordinator's memory and its CPU when idle.

use std::time::Duration;

use phasegate_client::PhasegateClient;
use phasegate_devkit::NatsServer;
use phasegate_proto::{EntityKind, TriggerId};
use phasegate_tests::rollout::{actor, put_pipeline};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fleet::{Coord, Fleet, cpu_time, rss};
use crate::{Settings, p50_p99};

/// Puts per reported step.
const STEP: usize = 1_000;
/// Agents of the scale mode, one segment each.
const AGENTS: usize = 5;
/// How often a progress line is printed while putting.
const PROGRESS: Duration = Duration::from_secs(30);
/// `trigger.get`s measured.
const GETS: usize = 1_000;
/// The longest the `trigger.get`s may take together.
const GETS_CAP: Duration = Duration::from_secs(120);
/// The window idle CPU is read over, and how long the rollouts' first
/// steps (every trigger's phase applied, its bake started and written) may
/// take to settle after the last put before it is read.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
const SETTLE_CAP: Duration = Duration::from_secs(60);

/// What the puts came to.
struct Done {
    /// In order of completion.
    puts: Vec<Put>,
    /// Puts per second of each thousand (the last one possibly partial).
    rates: Vec<f64>,
    failed: usize,
}

/// One finished put.
struct Put {
    done: Instant,
    latency: Duration,
    trigger: Option<TriggerId>,
}

pub(crate) async fn run(s: &Settings) -> anyhow::Result<()> {
    println!(
        "\ntrigger scale: {} gates put, {} in flight, one-hour bake, {AGENTS} agents, cap {} s",
        s.triggers,
        s.in_flight,
        s.cap.as_secs()
    );
    let nats = NatsServer::start().await?;
    let coord = Coord::start(&nats).await?;
    let fleet = Fleet::start(&nats.url(), "scale", AGENTS, 1, s.heartbeat_ms).await?;
    coord.wait_live(AGENTS).await?;
    put_pipeline(
        &coord.client,
        json!({"name": "bake", "phases": [{"id": "bake", "segments": ["scale-*"], "wait_ms": 3_600_000}]}),
    )
    .await?;
    let pid = coord.pid()?;
    let (before, _) = rss(pid)?;

    let cpu0 = cpu_time(pid)?;
    let (done, elapsed) = put_all(&coord.client, s).await;
    let cpu = cpu_time(pid)?.saturating_sub(cpu0);
    let ids: Vec<TriggerId> = done.puts.iter().filter_map(|p| p.trigger.clone()).collect();
    println!(
        "  reached {} active triggers in {:.1} s ({} puts failed){}; coordinator CPU during the puts {:.1} s ({:.0} % of a core)",
        ids.len(),
        elapsed.as_secs_f64(),
        done.failed,
        if elapsed >= s.cap {
            " — stopped at the wall-time cap"
        } else {
            ""
        },
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9) * 100.0
    );
    rate_target(&done);

    print!("  during the catch-up after the puts: ");
    gets(&coord.client, &ids).await;
    // Settled: one second of under 5 % of a core, or the cap.
    let settle = Instant::now();
    loop {
        let c = cpu_time(pid)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = cpu_time(pid)?.saturating_sub(c);
        if busy < Duration::from_millis(50) || settle.elapsed() >= SETTLE_CAP {
            break;
        }
    }
    let settled_after = settle.elapsed();
    print!(
        "  settled ({:.0} s after the puts): ",
        settled_after.as_secs_f64()
    );
    gets(&coord.client, &ids).await;
    let (now, peak) = rss(pid)?;
    println!(
        "  coordinator RSS {:.0} MiB (peak {:.0} MiB; {:.0} MiB before the puts), separate process   (target < 1 GiB)",
        mib(now),
        mib(peak),
        mib(before)
    );
    let c0 = cpu_time(pid)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = cpu_time(pid)?.saturating_sub(c0);
    println!(
        "  coordinator CPU idle: {:.1} % of a core over {} s, once settled   (target < 5 %)",
        idle.as_secs_f64() / IDLE_WINDOW.as_secs_f64() * 100.0,
        IDLE_WINDOW.as_secs(),
    );
    fleet.stop().await;
    Ok(())
}

/// Puts `s.triggers` distinct gates, `s.in_flight` at a time, until done
/// or the cap; prints each thousand as it is reached, and a progress line
/// every [`PROGRESS`] in between. Returns what was done and the time taken.
async fn put_all(client: &PhasegateClient, s: &Settings) -> (Done, Duration) {
    let start = Instant::now();
    let mut running = JoinSet::new();
    let mut done = Done {
        puts: Vec::with_capacity(s.triggers),
        rates: Vec::new(),
        failed: 0,
    };
    let mut next = 0;
    let mut step_start = start;
    let mut progress = tokio::time::interval_at(start + PROGRESS, PROGRESS);
    loop {
        while next < s.triggers && running.len() < s.in_flight && start.elapsed() < s.cap {
            running.spawn(put_one(client.clone(), next));
            next += 1;
        }
        let joined = tokio::select! {
            j = running.join_next() => j,
            _ = progress.tick() => {
                println!(
                    "  … {} puts done after {:.0} s",
                    done.puts.len(),
                    start.elapsed().as_secs_f64()
                );
                continue;
            }
        };
        let Some(joined) = joined else { break };
        match joined {
            Ok(Ok(p)) => {
                done.puts.push(p);
                if done.puts.len().is_multiple_of(STEP) {
                    let (ended, r) = print_step(&done.puts, step_start);
                    step_start = ended;
                    done.rates.push(r);
                }
            }
            Ok(Err(e)) => {
                done.failed += 1;
                if done.failed <= 3 {
                    println!("  a put failed: {e}");
                }
            }
            Err(e) => println!("  a put task failed: {e}"),
        }
    }
    if !done.puts.is_empty() && !done.puts.len().is_multiple_of(STEP) {
        done.rates.push(print_step(&done.puts, step_start).1);
    }
    (done, start.elapsed())
}

/// One `gate.put` of a new gate: its trigger starts and bakes an hour.
async fn put_one(client: PhasegateClient, i: usize) -> anyhow::Result<Put> {
    let spec = serde_json::from_value(json!({
        "name": format!("g-{i:05}"), "pipeline": "bake",
        "rules": [{"id": "all", "pass_percentage": 100}]
    }))?;
    let t0 = Instant::now();
    let r = client
        .entity_put(EntityKind::Gate, spec, actor("bench"), None, None)
        .await?;
    Ok(Put {
        done: Instant::now(),
        latency: t0.elapsed(),
        trigger: r.trigger.map(|t| t.id),
    })
}

/// Prints the step that ends with the last put done (`puts 1001–2000:
/// 95.3 puts/s, latency p50 … p99 …`), begun at `began`; returns when it
/// ended.
fn print_step(done: &[Put], began: Instant) -> (Instant, f64) {
    let from = (done.len() - 1) / STEP * STEP;
    let step = &done[from..];
    let ended = step[step.len() - 1].done;
    let lat: Vec<Duration> = step.iter().map(|p| p.latency).collect();
    let r = rate(step.len(), ended.saturating_duration_since(began));
    println!(
        "  puts {:>6}–{:<6} {r:>8.1} puts/s   latency {}",
        from + 1,
        done.len(),
        p50_p99(&lat)
    );
    (ended, r)
}

/// The last thousand's rate against the first's.
fn rate_target(done: &Done) {
    let (Some(first), Some(last)) = (done.rates.first(), done.rates.last()) else {
        return;
    };
    println!(
        "  put rate: first thousand {first:.1}/s, last (puts {}–{}) {last:.1}/s: {:.2}× slower   (target: the 10,000th within 2× of the first thousand's)",
        (done.puts.len() - 1) / STEP * STEP + 1,
        done.puts.len(),
        first / last.max(1e-9)
    );
}

/// `GETS` `trigger.get`s spread over `ids`, one at a time, within
/// `GETS_CAP`.
async fn gets(client: &PhasegateClient, ids: &[TriggerId]) {
    if ids.is_empty() {
        return;
    }
    let start = Instant::now();
    let mut lat = Vec::with_capacity(GETS);
    let mut failed = 0;
    for k in 0..GETS {
        if start.elapsed() >= GETS_CAP {
            break;
        }
        // A fixed stride over the ids: different triggers, repeatable.
        let id = ids[(k * 7_919) % ids.len()].clone();
        let t0 = Instant::now();
        match client.trigger_get(id).await {
            Ok(_) => lat.push(t0.elapsed()),
            Err(_) => failed += 1,
        }
    }
    println!(
        "trigger.get ×{} under {} active triggers ({failed} failed): {}   (target: p99 < 5 ms)",
        lat.len(),
        ids.len(),
        p50_p99(&lat),
    );
}

fn rate(n: usize, d: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)] // small counts
    let n = n as f64;
    n / d.as_secs_f64().max(1e-9)
}

fn mib(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // memory sizes
    let b = bytes as f64;
    b / (1024.0 * 1024.0)
}
