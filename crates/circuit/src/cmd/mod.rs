//! One module per group of commands.

pub mod anchor;
pub mod chan;
pub mod config;
pub mod keygen;
pub mod observe;
pub mod proc;
pub mod start;
pub mod subscription;
pub mod top;
pub mod watch;
pub mod watch_opts;
