//! App hosting: supervisord's job inside the agent.

pub mod ini;
pub mod program;
