//! Arbitrary bytes as a segment body: the decoder must never panic, loop, or return a record
//! whose CRC does not match, and every record's payload decodes or is refused as a point.
#![no_main]

use std::io::Cursor;

use gwe::queue::format::{encode_record, Item, SegmentReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = data.first().map_or(1, |&b| u64::from(b));
    let mut r = SegmentReader::new(Cursor::new(data), 0, first, 4096);
    let mut expected = first;
    let mut offset = 0usize;
    for _ in 0..data.len() + 1 {
        match r.next_item().expect("reading from memory cannot fail") {
            Item::Record { seq, payload } => {
                assert_eq!(seq, expected);
                expected += 1;
                // Re-encoding gives back exactly the bytes read: nothing was accepted loosely.
                let mut again = Vec::new();
                let n = encode_record(seq, payload, &mut again);
                assert_eq!(&data[offset..offset + n], &again[..]);
                offset += n;
                let _ = gwe_wire::point::decode(payload);
            }
            Item::End { offset: end, .. } => {
                assert_eq!(end as usize, offset);
                return;
            }
        }
    }
    panic!("decoder did not reach an end");
});
