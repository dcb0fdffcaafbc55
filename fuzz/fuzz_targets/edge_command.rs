//! Arbitrary bytes as an edge command (what a hub's `ctrlpoll` hands the agent): it parses
//! and passes its schema, or is refused with a reason; a command that passes serializes and
//! parses again to itself.
#![no_main]

use gwe_wire::edge::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Command::parse(data) {
        Ok(c) => {
            let again = serde_json::to_vec(&c).expect("a command serializes");
            assert_eq!(Command::parse(&again).expect("it parses again"), c);
        }
        Err(why) => assert!(!why.is_empty()),
    }
});
