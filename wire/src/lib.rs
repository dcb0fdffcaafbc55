//! Wire types shared by the gwe agent and the hub, so the two sides cannot drift.
//!
//! [`point`] is the binary encoding of one data point (alias, timestamp, value): the
//! payload of a GMQ queue record and the unit the forwarder sends to the hub.

pub mod point;

pub use point::{PointError, PointRef};
