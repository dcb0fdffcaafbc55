//! Wakes long-polls when a device's dataports change. Stores call [`Notifier::changed`]
//! after a commit; with PostgreSQL, a LISTEN task calls it for writes made by other hubs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Notifier {
    devices: Mutex<HashMap<i64, Arc<Notify>>>,
}

impl Notifier {
    /// The handle a long-poll waits on. Create the `notified()` future and `enable()` it
    /// before reading the value, so a change between the read and the wait is not missed.
    pub fn watch(&self, dev: i64) -> Arc<Notify> {
        let mut map = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(dev).or_default().clone()
    }

    /// Wakes every long-poll of `dev`; forgets devices nobody waits on.
    pub fn changed(&self, dev: i64) {
        let mut map = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(&dev) {
            n.notify_waiters();
            if Arc::strong_count(n) == 1 {
                map.remove(&dev);
            }
        }
    }

    /// Gives a handle back from [`Notifier::watch`]; the entry goes when nobody holds it.
    pub fn release(&self, dev: i64, handle: Arc<Notify>) {
        let mut map = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        drop(handle);
        if map.get(&dev).is_some_and(|n| Arc::strong_count(n) == 1) {
            map.remove(&dev);
        }
    }

    /// Devices with a live watcher entry (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.devices.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
