//! Arbitrary bytes as what a client sends the agent's local API: the request reader must
//! answer (whole, refused, or wait for more), never panic, and keep to its limits.
#![no_main]

use gwe::ingest::http::{parse, Limits, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_head: 1024, max_headers: 8, max_body: 512, ..Limits::with_body(512) };
    for continued in [false, true] {
        match parse(data, &limits, continued) {
            Parsed::Whole(rq, used, _) => {
                assert!(used <= data.len(), "used {used} of {} bytes", data.len());
                assert!(rq.body.len() <= limits.max_body, "a {}-byte body passed", rq.body.len());
                assert!(rq.headers.len() <= limits.max_headers);
                // What a handler does first with it.
                let _ = gwe_wire::form::content_type(rq.header("Content-Type"));
                let _ = gwe_wire::form::all_pairs(&rq.body);
            }
            Parsed::Refused(status, why) => assert!((400..500).contains(&status) && !why.is_empty()),
            Parsed::Partial | Parsed::Continue => {}
        }
    }
});
