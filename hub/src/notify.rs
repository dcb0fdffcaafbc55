//! Wakes long-polls when a dataport they wait on changes. Stores call
//! [`Notifier::changed`] after a commit with the aliases written; with PostgreSQL, a LISTEN
//! task calls it for writes made by other hubs. Keyed by (device, alias): a gateway writing
//! its readings every few seconds does not wake its own long-poll on `engine_fetch`.
//!
//! It also carries revocations: a store that revoked a device (or, with PostgreSQL, heard
//! another hub do it) calls [`Notifier::revoked`], and the hub forgets that device's
//! remembered credentials at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

type Key = (i64, String);

#[derive(Default)]
pub struct Notifier {
    watches: Mutex<HashMap<Key, Arc<Notify>>>,
    revoked: Mutex<Vec<i64>>,
    revocations: Notify,
}

impl Notifier {
    /// The handle a long-poll on `dev`'s `alias` waits on. Create the `notified()` future
    /// and `enable()` it before reading the value, so a change between the read and the
    /// wait is not missed.
    pub fn watch(&self, dev: i64, alias: &str) -> Arc<Notify> {
        let mut map = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((dev, alias.to_string())).or_default().clone()
    }

    /// Wakes the long-polls on `aliases` of `dev`.
    pub fn changed<'a>(&self, dev: i64, aliases: impl IntoIterator<Item = &'a str>) {
        let map = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return;
        }
        let mut key = (dev, String::new());
        for a in aliases {
            a.clone_into(&mut key.1);
            if let Some(n) = map.get(&key) {
                n.notify_waiters();
            }
        }
    }

    /// Wakes every long-poll of `dev` (a change whose aliases are not known).
    pub fn changed_any(&self, dev: i64) {
        let map = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        for ((d, _), n) in map.iter() {
            if *d == dev {
                n.notify_waiters();
            }
        }
    }

    /// Gives a handle back from [`Notifier::watch`]; the entry goes when nobody holds it.
    pub fn release(&self, dev: i64, alias: &str, handle: Arc<Notify>) {
        let mut map = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        drop(handle);
        let key = (dev, alias.to_string());
        if map.get(&key).is_some_and(|n| Arc::strong_count(n) == 1) {
            map.remove(&key);
        }
    }

    /// A device was revoked: wakes its long-polls (they answer 401 from now on) and whoever
    /// waits in [`Notifier::revocations`].
    pub fn revoked(&self, dev: i64) {
        self.revoked.lock().unwrap_or_else(|e| e.into_inner()).push(dev);
        self.revocations.notify_one();
        self.changed_any(dev);
    }

    /// Waits until a device is revoked; then [`Notifier::take_revoked`] says which.
    pub async fn revocations(&self) {
        self.revocations.notified().await;
    }

    /// The devices revoked since the last call.
    pub fn take_revoked(&self) -> Vec<i64> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Live watch entries (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.watches.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The PostgreSQL NOTIFY payload for a change: `DEV` then the aliases, one a line (at most
/// ~7 kB; past that, or for aliases with a newline, just `DEV`: every long-poll wakes).
pub fn payload<'a>(dev: i64, aliases: impl IntoIterator<Item = &'a str>) -> String {
    let mut p = dev.to_string();
    for a in aliases {
        if a.contains('\n') || p.len() + a.len() > 7000 {
            return dev.to_string();
        }
        p.push('\n');
        p.push_str(a);
    }
    p
}

/// Applies a NOTIFY payload made by [`payload`].
pub fn apply(notifier: &Notifier, payload: &str) {
    let mut lines = payload.split('\n');
    let Some(Ok(dev)) = lines.next().map(str::parse::<i64>) else { return };
    let aliases: Vec<&str> = lines.collect();
    if aliases.is_empty() {
        notifier.changed_any(dev);
    } else {
        notifier.changed(dev, aliases);
    }
}

/// Payloads for the changes of many devices: [`payload`]s joined by an empty line (an
/// alias is never empty), each payload at most ~7 kB. A group commit of hundreds of writes
/// sends a few notifications, not hundreds, to every hub listening.
pub fn payloads<'a, A: IntoIterator<Item = &'a str>>(changes: impl IntoIterator<Item = (i64, A)>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for (dev, aliases) in changes {
        let p = payload(dev, aliases);
        if !cur.is_empty() && cur.len() + 2 + p.len() > 7000 {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push_str("\n\n");
        }
        cur.push_str(&p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Applies a payload made by [`payloads`].
pub fn apply_many(notifier: &Notifier, payloads: &str) {
    for p in payloads.split("\n\n") {
        apply(notifier, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        assert_eq!(payload(7, ["a", "b c"]), "7\na\nb c");
        assert_eq!(payload(7, ["a\nb"]), "7");
        let n = Notifier::default();
        let w = n.watch(7, "b c");
        {
            let f = w.notified();
            tokio::pin!(f);
            f.as_mut().enable();
            apply(&n, "7\na");
            assert!(futures_util::FutureExt::now_or_never(f.as_mut()).is_none(), "another alias does not wake it");
            apply(&n, &payload(7, ["b c"]));
            assert!(futures_util::FutureExt::now_or_never(f.as_mut()).is_some());
        }
        n.release(7, "b c", w);
        assert_eq!(n.watched(), 0);
    }

    #[test]
    fn many_devices_share_notifications() {
        let changes: Vec<(i64, Vec<&str>)> = (0..1000).map(|d| (d, vec!["temperature", "cmd"])).collect();
        let ps = payloads(changes.iter().map(|(d, a)| (*d, a.iter().copied())));
        assert!(ps.len() > 1 && ps.len() < 10, "{} payloads", ps.len());
        assert!(ps.iter().all(|p| p.len() <= 7000));
        let n = Notifier::default();
        let (first, last) = (n.watch(0, "cmd"), n.watch(999, "temperature"));
        let other = n.watch(5, "engine_fetch");
        {
            let (f, l, o) = (first.notified(), last.notified(), other.notified());
            tokio::pin!(f, l, o);
            f.as_mut().enable();
            l.as_mut().enable();
            o.as_mut().enable();
            for p in &ps {
                apply_many(&n, p);
            }
            assert!(futures_util::FutureExt::now_or_never(f.as_mut()).is_some());
            assert!(futures_util::FutureExt::now_or_never(l.as_mut()).is_some());
            assert!(futures_util::FutureExt::now_or_never(o.as_mut()).is_none(), "an alias not written stays asleep");
        }
    }
}
