//! Sends every batch provider the points of its configuration at its own interval. The
//! configuration and the provider list are read again at each wake-up, so a command or a
//! refreshed provider list takes effect at once, without a restart.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gwe_wire::edge::{Batch, BatchAck, BatchConfig, GROUP_PREFIX};

use super::store::PointLog;
use super::{Provider, Shared};
use crate::cloud::{Cloud, CloudError};
use crate::stop::jitter;

/// Batches over this many bytes of JSON are deflated.
const DEFLATE_OVER: usize = 1024;
/// Most batches sent to one provider in a row before the others get their turn.
const BURST: usize = 16;
/// How often the queue is told what the providers no longer need (and may be deleted):
/// often enough that a small queue does not fill with what the edge no longer needs.
const RELEASE_EVERY: Duration = Duration::from_secs(5);

/// The configuration a provider gets: its own by name, else its group's.
pub fn config_for<'a>(configs: &'a BTreeMap<String, BatchConfig>, p: &Provider) -> Option<&'a BatchConfig> {
    configs.get(&p.name).or_else(|| p.group.as_ref().and_then(|g| configs.get(&format!("{GROUP_PREFIX}{g}"))))
}

#[derive(Default)]
struct Timing {
    /// When the last batch round of this provider ended (None: never since start).
    last: Option<Instant>,
    failures: u32,
    retry_at: Option<Instant>,
}

pub fn run(mut log: PointLog, cloud: &Cloud, max: usize, sh: &Shared) {
    let mut timing: HashMap<String, Timing> = HashMap::new();
    let mut body = Vec::new();
    let mut deflated = Vec::new();
    let mut next_release = Instant::now() + RELEASE_EVERY;
    while !sh.stopped() {
        let seen = sh.bell.generation();
        let providers = sh.dir.lock().unwrap_or_else(|e| e.into_inner()).batch.clone();
        let configs = sh.configs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = Instant::now();
        if now >= next_release {
            release(&mut log);
            next_release = now + RELEASE_EVERY;
        }
        let mut wake = next_release;
        for p in &providers {
            let Some(cfg) = config_for(&configs, p) else {
                continue;
            };
            let interval = Duration::from_millis(cfg.interval_ms);
            let t = timing.entry(p.key.clone()).or_default();
            let due = match (t.retry_at, t.last) {
                (Some(r), _) => r,
                (None, Some(l)) => l + interval,
                (None, None) => now,
            };
            if due > now {
                wake = wake.min(due);
                continue;
            }
            match send_round(&mut log, cloud, sh, p, cfg, max, &mut body, &mut deflated) {
                Ok(()) => {
                    if t.failures > 0 {
                        log::info!("edge: batch provider {} is reachable again", p.key);
                    }
                    t.failures = 0;
                    t.retry_at = None;
                    t.last = Some(Instant::now());
                    wake = wake.min(Instant::now() + interval);
                }
                Err(e) => {
                    if t.failures == 0 {
                        log::warn!("edge: batch to {}: {e}; keeping it and retrying", p.key);
                    }
                    t.failures += 1;
                    let backoff = Duration::from_secs(1 << t.failures.min(6)).max(interval);
                    let at = Instant::now() + jitter(backoff);
                    t.retry_at = Some(at);
                    wake = wake.min(at);
                }
            }
        }
        sh.bell.wait(seen, wake.saturating_duration_since(Instant::now()));
    }
    release(&mut log);
}

fn release(log: &mut PointLog) {
    if let Err(e) = log.release() {
        log::error!("edge: acknowledging sent points in the queue: {e}");
    }
}

/// Sends what is due to one provider: the batch in flight, then new ones while they come
/// full (at most `BURST`).
#[allow(clippy::too_many_arguments)]
fn send_round(
    log: &mut PointLog,
    cloud: &Cloud,
    sh: &Shared,
    p: &Provider,
    cfg: &BatchConfig,
    max: usize,
    body: &mut Vec<u8>,
    deflated: &mut Vec<u8>,
) -> Result<(), String> {
    for _ in 0..BURST {
        let Some(b) = log.next_batch(&sh.system, &p.name, &p.key, cfg, max).map_err(|e| format!("edge store: {e}"))?
        else {
            return Ok(());
        };
        let full = b.points.len() >= max;
        let batch = Batch { batch_id: b.batch_id, system: sh.system.clone(), points: b.points };
        body.clear();
        serde_json::to_writer(&mut *body, &batch).map_err(|e| e.to_string())?;
        let send: (&[u8], bool) = if body.len() > DEFLATE_OVER {
            deflated.clear();
            let mut z = flate2::write::ZlibEncoder::new(&mut *deflated, flate2::Compression::default());
            z.write_all(body).and_then(|()| z.finish().map(drop)).map_err(|e| e.to_string())?;
            (deflated, true)
        } else {
            (body, false)
        };
        match cloud.provider_call("edge_batch", &p.url, &p.token, Some(send)) {
            Ok((200, resp)) => {
                let ack: BatchAck = serde_json::from_slice(&resp)
                    .map_err(|e| format!("the provider's answer is not a batch ack: {e}"))?;
                if ack.batch_id != batch.batch_id {
                    return Err(format!("the provider confirmed batch {}, not {}", ack.batch_id, batch.batch_id));
                }
                log.batch_done(&p.key, &batch.batch_id).map_err(|e| format!("edge store: {e}"))?;
                log::debug!("edge: batch {} ({} points) stored by {}", batch.batch_id, batch.points.len(), p.key);
            }
            Ok((401, resp)) => {
                sh.stale.store(true, Ordering::Relaxed);
                return Err(format!(
                    "token refused ({}); asking the orchestrator again",
                    String::from_utf8_lossy(&resp).trim()
                ));
            }
            Ok((status, resp)) => return Err(format!("{status}: {}", String::from_utf8_lossy(&resp).trim())),
            Err(CloudError::Unreachable(e)) => return Err(format!("unreachable: {e}")),
            Err(e) => return Err(e.to_string()),
        }
        if !full {
            return Ok(());
        }
    }
    Ok(())
}
