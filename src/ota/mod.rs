//! Over-the-air updates of apps and of the agent (docs/ota-format.md).
//!
//! `package`: names, digests and signatures, checked before anything is unpacked.
//! `extract`: unpacking that refuses any entry that could escape or harm the system.
//! `fetch`: commands from the cloud (`engine_fetch`), downloads, `fetch_status`.
//! `os`: whole-image updates of the operating system through RAUC, and their check.
//! `stream`: the loopback relay through which RAUC streams a bundle from the hub.

pub mod build;
pub mod extract;
pub mod fetch;
pub mod install;
pub mod os;
pub mod package;
pub mod release;
pub mod selfupdate;
pub mod store;
pub mod stream;
