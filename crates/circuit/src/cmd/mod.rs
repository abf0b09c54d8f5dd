//! One module per group of commands.

pub mod anchor;
pub mod chan;
pub mod keygen;
pub mod proc;
pub mod start;
pub mod subscription;
