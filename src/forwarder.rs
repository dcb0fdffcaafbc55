//! Drains the queue to the hub: reads records in order as the `forwarder` consumer, packs
//! them into a batch (`gwe_wire::batch`), deflates it and sends it. Records are
//! acknowledged, and so may be deleted, only after the hub answered that it stored them.
//! While the hub is unreachable the batch is retried with exponential backoff and jitter;
//! everything else stays queued on flash. One buffer of each kind is reused for every
//! batch, so forwarding allocates nothing per record.

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::write::ZlibEncoder;
use flate2::Compression;
use gwe_wire::batch::BatchWriter;

use crate::cloud::Cloud;
use crate::queue::{Consumer, Queue, QueueError};
use crate::stop::{jitter, Stop};

pub const CONSUMER: &str = "forwarder";

#[derive(Debug, Clone)]
pub struct Options {
    pub batch_records: usize,
    pub linger: Duration,
    pub retry_max: Duration,
}

pub fn start(queue: &Queue, cloud: Arc<Cloud>, opts: Options, stop: Arc<Stop>) -> Result<JoinHandle<()>, QueueError> {
    let consumer = queue.consumer(CONSUMER)?;
    let stream = queue.stream_id();
    std::thread::Builder::new()
        .name("forwarder".into())
        .spawn(move || run(consumer, stream, &cloud, &opts, &stop))
        .map_err(|e| QueueError::Io { what: "starting the forwarder thread".into(), source: e })
}

fn run(mut consumer: Consumer, stream: u64, cloud: &Cloud, opts: &Options, stop: &Stop) {
    let mut batch = BatchWriter::default();
    let mut deflated = Vec::new();
    let mut online = true;
    while !stop.stopped() {
        batch.reset(stream);
        if let Err(e) = fill(&mut consumer, &mut batch, opts) {
            log::error!("forwarder: reading the queue: {e}");
            stop.sleep(Duration::from_secs(5));
            continue;
        }
        if batch.is_empty() {
            continue;
        }
        deflated.clear();
        let mut z = ZlibEncoder::new(&mut deflated, Compression::default());
        if z.write_all(batch.bytes()).and_then(|()| z.finish().map(drop)).is_err() {
            log::error!("forwarder: compressing a batch failed");
            continue;
        }
        let (_, last) = batch.seqs();
        let mut backoff = Duration::from_secs(1);
        loop {
            match cloud.send_batch(&deflated) {
                Ok(acked) => {
                    if !online {
                        log::info!("forwarder: the hub is back; sending the backlog");
                        online = true;
                    }
                    if let Err(e) = consumer.ack(acked.min(last)) {
                        log::error!("forwarder: acknowledging up to seq {last}: {e}");
                    }
                    break;
                }
                Err(e) => {
                    if online {
                        log::warn!("forwarder: {e}; keeping records queued and retrying");
                        online = false;
                    } else {
                        log::debug!("forwarder: {e}");
                    }
                    if stop.sleep(jitter(backoff)) {
                        // Not acknowledged: sent again after the restart.
                        return;
                    }
                    backoff = (backoff * 2).min(opts.retry_max);
                }
            }
        }
    }
}

/// Reads up to `batch_records`, waiting up to `linger` for more once the first arrived.
fn fill(consumer: &mut Consumer, batch: &mut BatchWriter, opts: &Options) -> Result<(), QueueError> {
    let n = consumer.poll(opts.batch_records, Duration::from_millis(500), |seq, p| batch.push(seq, p))?;
    if n == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + opts.linger;
    while batch.len() < opts.batch_records {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        consumer.poll(opts.batch_records - batch.len(), deadline - now, |seq, p| batch.push(seq, p))?;
    }
    Ok(())
}
