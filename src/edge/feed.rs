//! Copies data points from the queue into the edge store: one transaction per poll, and
//! the records are acknowledged only once it committed.

use std::time::Duration;

use rusqlite::params;

use super::store::EdgeDb;
use super::Shared;
use crate::queue::Consumer;

pub fn run(mut db: EdgeDb, mut consumer: Consumer, max_points: u64, sh: &Shared) {
    let mut fed = match db.fed_seq() {
        Ok(s) => s,
        Err(e) => {
            log::error!("edge: reading the store's position in the queue: {e}");
            return;
        }
    };
    while !sh.stopped() {
        match once(&mut db, &mut consumer, max_points, &mut fed) {
            Ok(0) => {}
            Ok(_) => crate::health::ok("edge store"),
            Err(e) => {
                log::error!("edge: storing points: {e}; trying again");
                crate::health::failed("edge store", &e);
                consumer.rewind();
                if sh.stop.sleep(Duration::from_secs(5)) {
                    return;
                }
            }
        }
    }
}

/// Moves up to 512 records; answers how many. `fed`: the last seq already in the store.
fn once(db: &mut EdgeDb, consumer: &mut Consumer, max_points: u64, fed: &mut u64) -> Result<usize, String> {
    let mut last = 0;
    let already = *fed;
    let n = db
        .with_insert(max_points, |insert| {
            let mut failed = None;
            let n = consumer
                .poll(512, Duration::from_secs(1), |seq, payload| {
                    last = seq;
                    if failed.is_some() || seq <= already {
                        return;
                    }
                    // Records that are not data points (none today) are skipped.
                    if let Ok(p) = gwe_wire::point::decode(payload) {
                        let v = String::from_utf8_lossy(p.value);
                        if let Err(e) = insert.execute(params![p.alias, p.ts, &*v]) {
                            failed = Some(e);
                        }
                    }
                })
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            // Nothing is committed when one insert failed: the whole poll comes again.
            failed.map_or(Ok((n, last)), Err)
        })
        .map_err(|e| e.to_string())?;
    if n > 0 {
        *fed = (*fed).max(last);
        consumer.ack(last).map_err(|e| e.to_string())?;
    }
    Ok(n)
}
