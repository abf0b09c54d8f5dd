//! One module per group of commands.

pub mod anchor;
pub mod keygen;
pub mod start;
