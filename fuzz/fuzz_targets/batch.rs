//! Arbitrary bytes as a forwarder batch (what the hub's `/gwe/v1/batch` decodes): records
//! come out with increasing seqs, or the batch is refused; never a panic, never a read
//! past its end.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((_, records)) = gwe_wire::batch::read(data) else { return };
    let mut prev = 0u64;
    for r in records.take(data.len() + 1) {
        match r {
            Ok((seq, p)) => {
                assert!(seq > prev, "seq {seq} after {prev}");
                prev = seq;
                assert!(p.alias.len() <= gwe_wire::point::MAX_ALIAS);
            }
            Err(_) => break,
        }
    }
});
