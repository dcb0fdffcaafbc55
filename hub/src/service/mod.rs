//! What the hub does, below its HTTP handlers and above its store: `auth` (passwords,
//! tokens, comparing secrets, sign-in throttling), `audit` (the log of who changed what),
//! `rollouts` (staged rollouts, stage by stage), `fleet` (what the
//! fleet page shows of each gateway's reports, and the filter language), `identity`
//! (gateways' keys, enrollment and the certificates the hub issues).

pub mod audit;
pub mod auth;
pub mod fleet;
pub mod identity;
pub mod rollouts;
