//! Finding and being found by other servers and clients.

pub mod discovery;
pub mod driver;
pub mod node;
pub mod swim;
