//! The one reading of the wall clock in the wire's unit. Every time on the
//! wire and in stored records is Unix-epoch milliseconds; coordinator,
//! agents and tools take "now" from here so they all count it the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time in Unix-epoch milliseconds: 0 for a clock set before
/// 1970, `u64::MAX` past the year 584 million.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
