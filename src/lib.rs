//! Gateway Engine agent library. `main.rs` is a thin command-line front end.

pub mod fsio;
pub mod queue;
