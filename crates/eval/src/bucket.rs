//! Bucketing of units (SPEC.md §2, "Evaluation"): bit-exact across SDKs.

use sha2::{Digest, Sha256};

/// Number of buckets: percentages have a resolution of 0.01.
const BUCKETS: u64 = 10_000;

/// The bucket of `unit` under `salt`: the first 8 bytes of
/// SHA-256(`"{salt}.{unit}"`) read as a big-endian u64, modulo 10000.
///
/// Always below 10000.
pub fn bucket(salt: &str, unit: &str) -> u32 {
    Salt::new(salt).bucket(unit)
}

/// True when a unit in `bucket` falls inside `pass_percentage`:
/// `bucket < floor(p × 100 + 0.5)`, computed in f64 as the contract says.
///
/// 100 lets every bucket pass and 0 none; NaN lets none pass.
pub fn passes(pass_percentage: f64, bucket: u32) -> bool {
    f64::from(bucket) < (pass_percentage * 100.0 + 0.5).floor()
}

/// A salt with `"{salt}."` already fed to the hasher, so that bucketing a
/// unit only hashes the unit: no formatting, no allocation.
#[derive(Clone)]
pub(crate) struct Salt {
    prefix: Sha256,
}

impl Salt {
    pub(crate) fn new(salt: &str) -> Self {
        let mut prefix = Sha256::new();
        prefix.update(salt.as_bytes());
        prefix.update(b".");
        Self { prefix }
    }

    pub(crate) fn bucket(&self, unit: &str) -> u32 {
        let mut hasher = self.prefix.clone();
        hasher.update(unit.as_bytes());
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        // The remainder is below 10000, so the narrowing cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        let b = (u64::from_be_bytes(first) % BUCKETS) as u32;
        b
    }
}

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hasher state is opaque and says nothing useful.
        f.write_str("Salt")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefilled_salt_equals_one_shot_hash() {
        // Long salts cross the 64-byte block boundary inside the prefix.
        let long = "s".repeat(130);
        for salt in ["", "x", "salt-330", long.as_str()] {
            for unit in [
                "",
                "u1",
                "ünïcode",
                "0123456789012345678901234567890123456789012345678901234567890123456789",
            ] {
                let mut h = Sha256::new();
                h.update(format!("{salt}.{unit}").as_bytes());
                let d = h.finalize();
                let mut first = [0u8; 8];
                first.copy_from_slice(&d[..8]);
                assert_eq!(
                    u64::from(bucket(salt, unit)),
                    u64::from_be_bytes(first) % 10_000
                );
            }
        }
    }

    #[test]
    fn thresholds_round_half_up_in_f64() {
        let table: &[(f64, u32, bool)] = &[
            (0.0, 0, false),
            (0.004, 0, false),
            (0.005, 0, true),
            (0.005, 1, false),
            (0.01, 0, true),
            (0.29, 28, true),
            (0.29, 29, false),
            (12.5, 1249, true),
            (12.5, 1250, false),
            (99.99, 9998, true),
            (99.99, 9999, false),
            (100.0, 9999, true),
            (f64::NAN, 0, false),
        ];
        for &(p, b, want) in table {
            assert_eq!(passes(p, b), want, "passes({p}, {b})");
        }
    }
}
