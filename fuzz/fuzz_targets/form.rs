//! Arbitrary bytes as a form body, a query and a timestamp: the rules both the hub and the
//! agent read them by (`gwe_wire::form`) decode or refuse, never panic, and what they
//! accept encodes back to the same pairs.
#![no_main]

use gwe_wire::form;
use libfuzzer_sys::fuzz_target;

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = form::all_pairs(data) {
        let again: String = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
        let back = form::all_pairs(again.as_bytes()).expect("an encoded body decodes");
        assert_eq!(pairs, back);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = form::query_names(text);
        if let Ok(ts) = form::timestamp(text) {
            assert!(ts >= 0);
        }
        let _ = form::request_timeout(text);
        let _ = form::content_type(Some(text));
    }
});
