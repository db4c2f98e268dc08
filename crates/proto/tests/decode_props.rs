//! Decoding arbitrary bytes returns an error, never panics.
#![allow(clippy::unwrap_used)] // tests

use phasegate_proto::*;
use proptest::prelude::*;

fn try_all(bytes: &[u8]) {
    for enc in [Encoding::MsgPack, Encoding::Json] {
        let _ = decode::<EntityPutRequest>(enc, bytes);
        let _ = decode::<PipelinePutRequest>(enc, bytes);
        let _ = decode::<ActionRequest>(enc, bytes);
        let _ = decode::<TriggerListRequest>(enc, bytes);
        let _ = decode::<Reply<TriggerResult>>(enc, bytes);
        let _ = decode::<EntityState>(enc, bytes);
        let _ = decode::<serde_json::Value>(enc, bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        try_all(&bytes);
    }

    #[test]
    fn mutated_valid_messages_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let valid = include_bytes!("fixtures/pipeline_put.msgpack");
        let mut bytes = valid.to_vec();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        try_all(&bytes);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    // 100k nested arrays would overflow a naive recursive decoder.
    let mut mp = vec![0x91u8; 100_000];
    mp.push(0xc0);
    try_all(&mp);
    let json = "[".repeat(100_000);
    try_all(json.as_bytes());
}
