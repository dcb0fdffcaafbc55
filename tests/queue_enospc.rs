//! A really full filesystem (a 512 KiB tmpfs): the queue reports it, keeps what it
//! acknowledged, and goes on when space returns. Needs root to mount, as CI has.

mod common;

use std::time::Duration;

use gwe::queue::{FullPolicy, Options, Queue, QueueError};

use common::Tmpfs;

fn opts(policy: FullPolicy) -> Options {
    Options {
        max_bytes: 64 << 20,
        segment_bytes: 64 << 10,
        full_policy: policy,
        consumers: vec!["c".into()],
        ..Options::default()
    }
}

#[test]
fn disk_full_is_reported_and_recovered_from() {
    let Some(fs) = Tmpfs::mount("512k") else {
        return;
    };
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 128 << 10]).unwrap();
    let q = Queue::open(&fs.path().join("q"), opts(FullPolicy::Reject)).unwrap();
    let rec = [3u8; 1000];
    let mut acked = 0u64;
    let err = loop {
        match q.append(&rec) {
            Ok(seq) => acked = seq,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, QueueError::DiskFull), "{err}");
    assert!(acked > 100, "{acked}");
    // Failed again while full, no panic, nothing acknowledged lost.
    assert!(matches!(q.append(&rec), Err(QueueError::DiskFull)));
    let mut c = q.consumer("c").unwrap();
    let mut n = 0;
    while c
        .poll(1000, Duration::ZERO, |_, p| {
            assert_eq!(p, rec);
            n += 1
        })
        .unwrap()
        > 0
    {}
    assert_eq!(n, acked);
    // Space returns: the queue goes on with the next seq.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(q.append(&rec).unwrap(), acked + 1);
    drop(c);
    drop(q);
    let q = Queue::open(&fs.path().join("q"), opts(FullPolicy::Reject)).unwrap();
    assert_eq!(q.stats().next_seq, acked + 2);
}

#[test]
fn disk_full_with_drop_oldest_keeps_writing() {
    let Some(fs) = Tmpfs::mount("512k") else {
        return;
    };
    let q = Queue::open(&fs.path().join("q"), opts(FullPolicy::DropOldest)).unwrap();
    let rec = [4u8; 1000];
    let total = 2000u64;
    for i in 1..=total {
        assert_eq!(q.append(&rec).unwrap(), i);
    }
    let s = q.stats();
    assert!(s.counters.lost_records > 0);
    assert_eq!(s.counters.lost_records + s.backlog(), total, "every record is kept or counted as lost");
}
