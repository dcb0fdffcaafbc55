//! Wire types shared by the gwe agent and the hub, so the two sides cannot drift.
//!
//! [`point`] is the binary encoding of one data point (alias, timestamp, value): the
//! payload of a GMQ queue record. [`batch`] frames queue records with their seqs as the
//! forwarder sends them to the hub. [`edge`] holds the JSON shapes of the edge data and
//! control paths, [`arrowhead`] those of service discovery. [`form`] reads the Exosite
//! device API's form bodies and headers by one set of rules for both sides. [`os`] holds
//! the OS-update words: the reboot policy and what the agent's status lines say.

pub mod arrowhead;
pub mod batch;
pub mod edge;
pub mod form;
pub mod os;
pub mod point;

pub use point::{PointError, PointRef};
