//! Queue behaviour over real files: round trip, group commit, torn tails, corruption,
//! caps, disk full, acknowledgement and segment deletion.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use gwe::queue::{format, FullPolicy, Options, Queue, QueueError};

fn opts() -> Options {
    Options { consumers: vec!["fwd".into()], ..Options::default() }
}

fn small_segments() -> Options {
    Options { max_bytes: 4 << 20, segment_bytes: 64 << 10, ..opts() }
}

fn payload(i: u64) -> Vec<u8> {
    format!("message-{i:08}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

/// Reads everything available for `fwd` without acknowledging.
fn drain(q: &Queue) -> Vec<(u64, Vec<u8>)> {
    let mut c = q.consumer("fwd").unwrap();
    let mut out = Vec::new();
    while c.poll(1000, Duration::ZERO, |s, p| out.push((s, p.to_vec()))).unwrap() > 0 {}
    out
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gmq"))
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = Queue::open(dir.path(), opts()).unwrap();
        for i in 0..500 {
            assert_eq!(q.append(&payload(i)).unwrap(), i + 1);
        }
    }
    let q = Queue::open(dir.path(), opts()).unwrap();
    let got = drain(&q);
    assert_eq!(got.len(), 500);
    for (i, (seq, p)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(p, &payload(i as u64));
    }
    assert_eq!(q.append(b"after").unwrap(), 501);
}

#[test]
fn group_commit_shares_fsyncs_between_producers() {
    let dir = tempfile::tempdir().unwrap();
    let q = Arc::new(Queue::open(dir.path(), opts()).unwrap());
    let producers = 8;
    let each = 300u64;
    let handles: Vec<_> = (0..producers)
        .map(|t| {
            let q = q.clone();
            thread::spawn(move || {
                (0..each).map(|i| (q.append(&payload(t * 10_000 + i)).unwrap(), t * 10_000 + i)).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<(u64, u64)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    acked.sort();
    let total = producers * each;
    let seqs: Vec<u64> = acked.iter().map(|a| a.0).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "every record gets its own seq, no gaps");
    let stats = q.stats();
    assert!(stats.flushes < total, "{} flushes for {total} records: no group commit", stats.flushes);
    let got = drain(&q);
    for ((seq, p), (aseq, id)) in got.iter().zip(&acked) {
        assert_eq!(seq, aseq);
        assert_eq!(p, &payload(*id), "seq {seq} holds the payload its producer was told");
    }
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = Queue::open(dir.path(), small_segments()).unwrap();
        for i in 0..3 {
            q.append(&payload(i)).unwrap();
        }
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let whole = fs::read(&seg).unwrap();
    let end = format::SEG_HEADER_LEN + (0..3).map(|i| format::REC_HEADER_LEN + payload(i).len()).sum::<usize>();
    let last_start = end - (format::REC_HEADER_LEN + payload(2).len());
    // A cut leaves either a shorter file, or (in preallocated space) zeros after the cut.
    let cases = (last_start..end).flat_map(|cut| [(cut, false), (cut, true)]);
    for (cut, zeroed) in cases {
        let d = tempfile::tempdir().unwrap();
        let mut bytes = whole[..cut].to_vec();
        if zeroed {
            bytes.resize(whole.len(), 0);
        }
        fs::write(d.path().join(seg.file_name().unwrap()), &bytes).unwrap();
        let q = Queue::open(d.path(), small_segments()).unwrap();
        let got = drain(&q);
        assert_eq!(got.len(), 2, "cut at {cut}");
        assert_eq!(got[1], (2, payload(1)));
        let nonzero = bytes[last_start..cut].iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        assert_eq!(q.stats().counters.torn_bytes, nonzero as u64, "cut at {cut}");
        // The queue goes on where the torn record would have been.
        assert_eq!(q.append(b"next").unwrap(), 3, "cut at {cut}");
        drop(q);
        let q = Queue::open(d.path(), small_segments()).unwrap();
        assert_eq!(drain(&q).last().unwrap(), &(3, b"next".to_vec()));
    }
}

#[test]
fn corrupt_middle_segment_is_moved_aside_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let n = 8000;
    {
        let q = Queue::open(dir.path(), small_segments()).unwrap();
        for i in 0..n {
            q.append(&payload(i)).unwrap();
        }
    }
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let victim = &segs[1];
    let victim_base = format::parse_segment_file_name(victim.file_name().unwrap().to_str().unwrap()).unwrap();
    let next_base = format::parse_segment_file_name(segs[2].file_name().unwrap().to_str().unwrap()).unwrap();
    let mut bytes = fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(victim, &bytes).unwrap();

    let q = Queue::open(dir.path(), small_segments()).unwrap();
    let got = drain(&q);
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    // Everything before the corrupt record and everything after the segment is there.
    assert!(seqs.contains(&1) && seqs.contains(&victim_base) && seqs.contains(&next_base) && seqs.contains(&n));
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    for (seq, p) in &got {
        assert_eq!(p, &payload(seq - 1));
    }
    let stats = q.stats();
    assert_eq!(stats.counters.corrupt_segments, 1);
    let lost = n - got.len() as u64;
    assert!(lost > 0 && stats.counters.lost_records == lost, "lost {lost}, counted {}", stats.counters.lost_records);
    assert!(dir.path().join("corrupt").join(victim.file_name().unwrap()).exists());
    // New writes still work and the counters survive a reopen.
    q.append(b"still-going").unwrap();
    drop(q);
    let q = Queue::open(dir.path(), small_segments()).unwrap();
    assert_eq!(q.stats().counters.corrupt_segments, 1);
}

#[test]
fn corrupt_active_segment_far_from_the_tail_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options { batch_bytes: 4096, max_record: 1024, ..opts() };
    {
        let q = Queue::open(dir.path(), o.clone()).unwrap();
        for i in 0..2000 {
            q.append(&payload(i)).unwrap();
        }
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[100] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    let q = Queue::open(dir.path(), o).unwrap();
    assert_eq!(q.stats().counters.corrupt_segments, 1);
    let s = q.append(b"new").unwrap();
    assert!(s > 2000, "new records never reuse a seq the corrupt segment may hold ({s})");
}

#[test]
fn reject_policy_refuses_when_full_and_recovers_after_ack() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options { max_bytes: 256 << 10, segment_bytes: 64 << 10, full_policy: FullPolicy::Reject, ..opts() };
    let q = Queue::open(dir.path(), o).unwrap();
    let p = vec![7u8; 1000];
    let mut accepted = 0u64;
    let err = loop {
        match q.append(&p) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, QueueError::Full { max } if max == 256 << 10), "{err}");
    assert!(err.to_string().contains("full"));
    assert!(accepted > 200, "{accepted}");
    // Everything accepted is still there.
    let mut c = q.consumer("fwd").unwrap();
    let mut n = 0;
    while c.poll(10_000, Duration::ZERO, |_, _| n += 1).unwrap() > 0 {}
    assert_eq!(n, accepted);
    c.ack(accepted).unwrap();
    assert!(q.stats().disk_bytes < 128 << 10);
    q.append(&p).unwrap();
}

#[test]
fn drop_oldest_policy_counts_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options { max_bytes: 256 << 10, segment_bytes: 64 << 10, full_policy: FullPolicy::DropOldest, ..opts() };
    let q = Queue::open(dir.path(), o.clone()).unwrap();
    let p = vec![9u8; 1000];
    let total = 2000u64;
    for _ in 0..total {
        q.append(&p).unwrap();
    }
    let stats = q.stats();
    assert!(stats.disk_bytes <= 256 << 10, "{}", stats.disk_bytes);
    let kept = drain(&q);
    assert_eq!(kept.last().unwrap().0, total, "the newest records are kept");
    assert_eq!(stats.counters.lost_records + kept.len() as u64, total, "every record is kept or counted");
    drop(q);
    assert_eq!(Queue::open(dir.path(), o).unwrap().stats().counters.lost_records, stats.counters.lost_records);
}

#[test]
fn acknowledged_segments_are_deleted_and_consumers_resume() {
    let dir = tempfile::tempdir().unwrap();
    let o = small_segments();
    {
        let q = Queue::open(dir.path(), o.clone()).unwrap();
        for i in 0..3000 {
            q.append(&payload(i)).unwrap();
        }
        let before = segment_files(dir.path()).len();
        let mut c = q.consumer("fwd").unwrap();
        let mut last = 0;
        c.poll(2000, Duration::ZERO, |s, _| last = s).unwrap();
        assert_eq!(last, 2000);
        c.ack(1500).unwrap();
        assert!(segment_files(dir.path()).len() < before);
        // Not acknowledged: delivered again after a rewind (at-least-once).
        c.rewind();
        let mut first = 0;
        c.poll(1, Duration::ZERO, |s, _| first = s).unwrap();
        assert_eq!(first, 1501);
    }
    let q = Queue::open(dir.path(), o).unwrap();
    let got = drain(&q);
    assert_eq!(got.first().unwrap().0, 1501);
    assert_eq!(got.len(), 1500);
    assert_eq!(q.stats().backlog(), 1500);
}

#[test]
fn consumer_waits_for_new_records_without_polling() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), opts()).unwrap();
    let q2 = q.clone();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        q2.append(b"late").unwrap()
    });
    let mut c = q.consumer("fwd").unwrap();
    let mut got = Vec::new();
    let n = c.poll(10, Duration::from_secs(10), |s, p| got.push((s, p.to_vec()))).unwrap();
    assert_eq!(n, 1);
    assert_eq!(got, vec![(t.join().unwrap(), b"late".to_vec())]);
    assert_eq!(c.poll(10, Duration::from_millis(10), |_, _| {}).unwrap(), 0);
}

#[test]
fn one_process_per_queue_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _q = Queue::open(dir.path(), opts()).unwrap();
    assert!(matches!(Queue::open(dir.path(), opts()), Err(QueueError::Locked(_))));
}

#[test]
fn oversized_record_is_refused_and_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), Options { max_record: 100, ..opts() }).unwrap();
    q.append(b"ok").unwrap();
    assert!(matches!(q.append(&[0; 101]), Err(QueueError::TooLarge { len: 101, max: 100 })));
    assert_eq!(q.append(b"ok2").unwrap(), 2);
}

#[test]
fn stale_leftovers_of_a_crash_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = Queue::open(dir.path(), opts()).unwrap();
        q.append(b"a").unwrap();
    }
    // A segment cut while being created, and a temp file of an ack write.
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.path().join(format::segment_file_name(2)))
        .unwrap();
    fs::write(dir.path().join("ack-fwd.gwe-tmp"), b"12").unwrap();
    let q = Queue::open(dir.path(), opts()).unwrap();
    assert_eq!(drain(&q), vec![(1, b"a".to_vec())]);
    assert!(!dir.path().join("ack-fwd.gwe-tmp").exists());
    assert_eq!(q.append(b"b").unwrap(), 2);
}

#[test]
fn many_records_of_one_call_are_contiguous_and_acknowledged_together() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), opts()).unwrap();
    q.append(b"before").unwrap();
    let parts: [&[u8]; 3] = [b"a", b"bb", b"ccc"];
    let first = q.append_many(3, |i| parts[i].len(), |i, buf| buf.copy_from_slice(parts[i])).unwrap();
    assert_eq!(first, 2);
    let got = drain(&q);
    assert_eq!(got[1..], [(2, b"a".to_vec()), (3, b"bb".to_vec()), (4, b"ccc".to_vec())]);
    let too_big = q.options().batch_bytes;
    let batch = q.append_many(too_big / 1000 + 1, |_| 1000, |_, _| {});
    assert!(matches!(batch, Err(QueueError::BatchTooLarge { max, .. }) if max == too_big), "{batch:?}");
    let one = q.options().max_record + 1;
    assert!(matches!(q.append_many(1, |_| one, |_, _| {}), Err(QueueError::TooLarge { .. })));
}

#[test]
fn pipelined_appends_share_one_flush_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), opts()).unwrap();
    let tickets: Vec<_> = (0..100).map(|i| q.append_async(&payload(i)).unwrap()).collect();
    assert_eq!(q.stats().flushes, 0, "nothing is written before someone waits");
    let seqs: Vec<u64> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert_eq!(q.stats().flushes, 1, "one write and one fdatasync for all 100");
    // A dropped ticket still settles its batch.
    drop(q.append_async(b"dropped").unwrap());
    assert_eq!(q.append(b"after").unwrap(), 102);
    let got = drain(&q);
    assert_eq!(got.len(), 102);
    assert_eq!(got[100], (101, b"dropped".to_vec()));
}

#[test]
fn torn_batch_with_a_hole_in_reserved_space_is_cut_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = Queue::open(dir.path(), small_segments()).unwrap();
        for i in 0..3 {
            q.append(&payload(i)).unwrap();
        }
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    assert_eq!(bytes.len(), 64 << 10, "the active segment is preallocated");
    let end = format::SEG_HEADER_LEN + (0..3).map(|i| format::REC_HEADER_LEN + payload(i).len()).sum::<usize>();
    // A batch of two records whose first page never landed but whose second did.
    let mut batch = Vec::new();
    format::encode_record(4, &payload(3), &mut batch);
    format::encode_record(5, &payload(4), &mut batch);
    let hole = 40;
    bytes[end + hole..end + batch.len()].copy_from_slice(&batch[hole..]);
    fs::write(&seg, &bytes).unwrap();

    let q = Queue::open(dir.path(), small_segments()).unwrap();
    assert_eq!(q.stats().counters.torn_bytes, batch.len() as u64, "hole included");
    assert_eq!(drain(&q).len(), 3);
    // Reserved again after the cut, and the new records are not confused with the old bytes.
    assert_eq!(fs::metadata(&seg).unwrap().len(), 64 << 10);
    assert_eq!(q.append(b"short").unwrap(), 4);
    drop(q);
    let q = Queue::open(dir.path(), small_segments()).unwrap();
    let got = drain(&q);
    assert_eq!(got.last().unwrap(), &(4, b"short".to_vec()));
    assert_eq!(q.stats().counters.torn_bytes, batch.len() as u64, "nothing more was torn");
}

#[test]
fn sealed_segments_end_at_their_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), small_segments()).unwrap();
    for i in 0..3000 {
        q.append(&payload(i)).unwrap();
    }
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 2);
    for s in &segs[..segs.len() - 1] {
        let bytes = fs::read(s).unwrap();
        assert!(bytes.len() < 64 << 10, "sealed segment keeps no reserved tail");
        assert_ne!(&bytes[bytes.len() - 4..], &[0, 0, 0, 0], "ends in a record's payload");
    }
    assert_eq!(fs::metadata(segs.last().unwrap()).unwrap().len(), 64 << 10);
}

#[test]
fn seek_reads_from_any_unacknowledged_record_and_skips_count_for_ack() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), small_segments()).unwrap();
    for i in 1..=4000 {
        q.append(&payload(i)).unwrap();
    }
    assert!(segment_files(dir.path()).len() > 3);
    let mut c = q.consumer("fwd").unwrap();
    // Readers taking turns, forward and back, across segment boundaries.
    for start in [3000u64, 10, 2500, 11, 3999, 1, 1500, 2999] {
        assert_eq!(c.seek(start), start);
        let mut got = Vec::new();
        c.poll(300, Duration::ZERO, |s, p| got.push((s, p.to_vec()))).unwrap();
        let want: Vec<_> = (start..=(start + 299).min(4000)).map(|s| (s, payload(s))).collect();
        assert_eq!(got, want, "from {start}");
    }
    // Past the newest: clamped to the next seq to come.
    assert_eq!(c.seek(9999), 4001);
    // Skipped records may be acknowledged; then nothing before them can be sought.
    c.ack(3500).unwrap();
    assert_eq!(c.seek(1), 3501);
    let mut first = None;
    c.poll(1, Duration::ZERO, |s, _| first = Some(s)).unwrap();
    assert_eq!(first, Some(3501));
    drop(c);
    assert_eq!(q.stats().consumers, vec![("fwd".to_string(), 3500)]);
    let left = segment_files(dir.path()).len();
    assert!(left <= 2, "{left} segments left after acknowledging 3500 of 4000");
}
