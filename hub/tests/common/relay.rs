//! A TCP relay in front of a hub: counts the bytes each way, notices Range requests, and can
//! cut the link once after a number of bytes sent to the client (a dropped cellular link).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub struct Relay {
    pub port: u16,
    pub up: AtomicU64,
    pub down: AtomicU64,
    /// Requests seen with a `Range:` header.
    pub ranges: AtomicU64,
    /// When not 0: the next connection to pass this many bytes to the client is cut there.
    pub cut_after: AtomicU64,
}

impl Relay {
    /// A relay on a free port of 127.0.0.1 to `target` on 127.0.0.1.
    pub fn start(target: u16) -> Arc<Relay> {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Arc::new(Relay { port: l.local_addr().unwrap().port(), ..Relay::default() });
        let r = relay.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let Ok(s) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let (c2, s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
                let (r1, r2) = (r.clone(), r.clone());
                std::thread::spawn(move || r1.pump(c, s, true));
                std::thread::spawn(move || r2.pump(s2, c2, false));
            }
        });
        relay
    }

    /// (up, down) since the last call.
    pub fn take(&self) -> (u64, u64) {
        (self.up.swap(0, Ordering::SeqCst), self.down.swap(0, Ordering::SeqCst))
    }

    fn pump(&self, mut from: TcpStream, mut to: TcpStream, up: bool) {
        let mut buf = [0u8; 16 << 10];
        let mut passed = 0u64;
        loop {
            let mut got = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => k,
            };
            if up {
                let text = String::from_utf8_lossy(&buf[..got]).to_ascii_lowercase();
                self.ranges.fetch_add(text.matches("\r\nrange: bytes=").count() as u64, Ordering::SeqCst);
            } else {
                let cut = self.cut_after.load(Ordering::SeqCst);
                if cut > 0 && passed + got as u64 >= cut {
                    got = (cut - passed) as usize;
                    self.cut_after.store(0, Ordering::SeqCst);
                    let _ = to.write_all(&buf[..got]);
                    self.down.fetch_add(got as u64, Ordering::SeqCst);
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
                passed += got as u64;
            }
            if up { &self.up } else { &self.down }.fetch_add(got as u64, Ordering::SeqCst);
            if to.write_all(&buf[..got]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }
}
