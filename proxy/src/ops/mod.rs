//! Operations: the admin API and its CLI, `session-broker check`, and the finalizer that closes idle
//! work sessions. The top layer: it may import every layer below.

pub mod admin;
pub mod admin_cli;
pub mod check;
pub mod finalizer;
