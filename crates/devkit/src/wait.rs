//! Polling with a deadline, in place of sleeping to synchronise.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;

/// The longest pause between two polls.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Ok`, for at most `timeout`, and returns
/// that value. Polls quickly at first (1 ms), then backs off to 50 ms.
///
/// # Errors
///
/// [`Error::TimedOut`] when `probe` still fails at the deadline: it names
/// `what` was awaited and the last failure seen.
pub async fn wait_for<T, E, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, Error>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let last = match probe().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::TimedOut {
                what: what.to_owned(),
                timeout,
                last: last.to_string(),
            });
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Polls `cond` until it holds, for at most `timeout`.
///
/// # Errors
///
/// [`Error::TimedOut`] when `cond` still does not hold at the deadline.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, timeout, || {
        let ready = cond();
        async move { if ready.await { Ok(()) } else { Err("not yet") } }
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    #[tokio::test]
    async fn waits_report_what_was_expected() {
        let err = wait_for("the light is green", Duration::from_millis(20), || async {
            Err::<(), _>("still red")
        })
        .await
        .unwrap_err();
        assert!(matches!(err, Error::TimedOut { .. }));
        let err = err.to_string();
        assert!(
            err.contains("the light is green") && err.contains("still red"),
            "{err}"
        );

        let mut polls = 0;
        wait_until("the third poll", Duration::from_secs(10), || {
            polls += 1;
            let done = polls >= 3;
            async move { done }
        })
        .await
        .unwrap();
        assert_eq!(polls, 3);
    }
}
