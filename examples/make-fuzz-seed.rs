//! Writes a segment body of a few valid records, a seed for `scripts/fuzz.sh`.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "seed sizes are small"
)]

fn main() {
    let path = std::env::args().nth(1).expect("usage: make-fuzz-seed PATH");
    let mut bytes = vec![1u8];
    bytes.clear();
    let mut buf = [0u8; 64];
    for (i, v) in ["21.5", "a&b=c", ""].iter().enumerate() {
        let n = gwe_wire::point::encode(1_700_000_000 + i as i64, "temp", v.as_bytes(), &mut buf).expect("fits");
        gwe::queue::format::encode_record(1 + i as u64, &buf[..n], &mut bytes);
    }
    std::fs::write(&path, bytes).expect("write seed");
}
