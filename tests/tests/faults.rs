//! Seeded fault injection (tests/src/faults): a real installation of five
//! segments rolls gates out while the test kills, restarts and freezes the
//! coordinators, the agents and nats-server, and checks the contract's
//! invariants from outside. 20 seeds by default;
//! `PHASEGATE_SOAK_SEEDS=200` (or `make soak`) for the soak, and
//! `PHASEGATE_FAULTS_SEED=N` to replay one seed.

use phasegate_tests::faults::{Settings, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_keep_the_invariants() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let report = run(&settings).await?;
    eprintln!("{}", report.figures());
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "invariants violated:\n{failures}\n{}",
        report.figures()
    );
    Ok(())
}
