//! Finding and being found by other servers and clients.

pub mod discovery;
pub mod node;
pub mod sim;
pub mod swim;
