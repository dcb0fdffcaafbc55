//! Property tests: record encode/decode, and the queue against a `VecDeque` model across
//! appends, polls, acks, rewinds and reopens. Cases: as below, divided by GWE_PROPTEST_DIV
//! when set (CI's runs under qemu-user divide by 4).

use std::collections::VecDeque;
use std::io::Cursor;
use std::time::Duration;

use gwe::queue::format::{encode_record, EndKind, Item, SegmentReader};
use gwe::queue::{Options, Queue};
use proptest::prelude::*;

fn read_all(bytes: &[u8], first: u64) -> (Vec<(u64, Vec<u8>)>, EndKind) {
    let mut r = SegmentReader::new(Cursor::new(bytes), 0, first, 1 << 20);
    let mut out = Vec::new();
    loop {
        match r.next_item().unwrap() {
            Item::Record { seq, payload } => out.push((seq, payload.to_vec())),
            Item::End { end, .. } => return (out, end),
        }
    }
}

/// `cases`, or a share of them for slow runners (GWE_PROPTEST_DIV).
fn config(cases: u32) -> ProptestConfig {
    let div: u32 = std::env::var("GWE_PROPTEST_DIV").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    ProptestConfig::with_cases((cases / div.max(1)).max(16))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn encode_then_decode_gives_the_records_back(first in 1u64..u64::MAX / 2, payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..40)) {
        let mut bytes = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            encode_record(first + i as u64, p, &mut bytes);
        }
        let (got, end) = read_all(&bytes, first);
        prop_assert_eq!(end, EndKind::Clean);
        let want: Vec<(u64, Vec<u8>)> = payloads.iter().enumerate().map(|(i, p)| (first + i as u64, p.clone())).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn damage_never_yields_a_wrong_record(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 1..20), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            encode_record(1 + i as u64, p, &mut bytes);
        }
        let mut damaged = bytes.clone();
        let at = flip.index(damaged.len());
        damaged[at] ^= 1 << bit;
        let damaged = &damaged[..cut.index(damaged.len() + 1)];
        let (got, _) = read_all(damaged, 1);
        // Whatever is returned is a prefix of what was written: never a changed record.
        for (i, (seq, p)) in got.iter().enumerate() {
            prop_assert_eq!(*seq, 1 + i as u64);
            prop_assert_eq!(p, &payloads[i]);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    Poll(usize),
    AckAll,
    Rewind,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..3000).prop_map(Op::Append),
        3 => (1usize..30).prop_map(Op::Poll),
        2 => Just(Op::AckAll),
        1 => Just(Op::Rewind),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn queue_behaves_like_a_deque(ops in prop::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options { consumers: vec!["c".into()], segment_bytes: 64 << 10, max_bytes: 64 << 20, ..Options::default() };
        let mut q = Some(Queue::open(dir.path(), opts.clone()).unwrap());
        let mut c = Some(q.as_ref().unwrap().consumer("c").unwrap());
        // Model: every unacknowledged record, and the next seq to deliver.
        let mut unacked: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut next_seq = 1u64;
        let mut cursor = 1u64;
        for op in ops {
            match op {
                Op::Append(p) => {
                    let seq = q.as_ref().unwrap().append(&p).unwrap();
                    prop_assert_eq!(seq, next_seq);
                    unacked.push_back((seq, p));
                    next_seq += 1;
                }
                Op::Poll(max) => {
                    let mut got = Vec::new();
                    c.as_mut().unwrap().poll(max, Duration::ZERO, |s, p| got.push((s, p.to_vec()))).unwrap();
                    let want: Vec<_> = unacked.iter().filter(|r| r.0 >= cursor).take(max).cloned().collect();
                    prop_assert_eq!(&got, &want);
                    if let Some(last) = got.last() {
                        cursor = last.0 + 1;
                    }
                }
                Op::AckAll => {
                    c.as_mut().unwrap().ack(cursor - 1).unwrap();
                    while unacked.front().is_some_and(|r| r.0 < cursor) {
                        unacked.pop_front();
                    }
                }
                Op::Rewind => {
                    c.as_mut().unwrap().rewind();
                    cursor = unacked.front().map_or(next_seq, |r| r.0);
                }
                Op::Reopen => {
                    // Close the consumer, then the queue (and its lock), before reopening.
                    drop(c.take());
                    drop(q.take());
                    q = Some(Queue::open(dir.path(), opts.clone()).unwrap());
                    c = Some(q.as_ref().unwrap().consumer("c").unwrap());
                    cursor = unacked.front().map_or(next_seq, |r| r.0);
                }
            }
            let s = q.as_ref().unwrap().stats();
            prop_assert_eq!(s.next_seq, next_seq);
            prop_assert_eq!(s.backlog(), unacked.len() as u64);
        }
    }
}
