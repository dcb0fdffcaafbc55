//! Gateway Engine agent library. `main.rs` is a thin command-line front end.

pub mod agent;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod ctl;
#[cfg(feature = "edge")]
pub mod edge;
pub mod forwarder;
pub mod fsio;
pub mod health;
pub mod identity;
pub mod ingest;
pub mod logging;
pub mod ota;
pub mod queue;
pub mod stop;
pub mod supervisor;
pub mod telemetry;
pub mod tpm;
pub mod usage;
