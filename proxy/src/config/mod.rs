//! Configuration: the command line, the config file and the settings they make. A leaf: nothing
//! here imports another part of the proxy.

pub mod admin;
pub mod cli;
pub mod file;
pub mod identity;
pub mod settings;

pub use settings::Settings;
