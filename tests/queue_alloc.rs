//! The enqueue path allocates nothing per record: a counting global allocator shows it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use gwe::queue::{Options, Queue};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn no_allocation_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let q = Arc::new(
        Queue::open(dir.path(), Options { segment_bytes: 64 << 20, max_bytes: 512 << 20, ..Options::default() })
            .unwrap(),
    );
    let payload = [0x5au8; 100];
    q.append(&payload).unwrap(); // warm up
    let records = 2000u64;
    // Several producers, so the group-commit paths (leader, follower, buffer swap) all run.
    let qs: Vec<Arc<Queue>> = (0..4).map(|_| q.clone()).collect();
    let barrier = Arc::new(std::sync::Barrier::new(5));
    let workers: Vec<_> = qs
        .into_iter()
        .map(|q| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                for _ in 0..records / 4 {
                    q.append(&payload).unwrap();
                }
                b.wait();
            })
        })
        .collect();
    COUNTING.store(true, Ordering::SeqCst);
    barrier.wait();
    barrier.wait();
    COUNTING.store(false, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let allocs = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(allocs, 0, "{allocs} allocations for {records} records");
    assert_eq!(q.stats().next_seq, records + 2);
}
