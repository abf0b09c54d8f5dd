//! Finding and being found by other servers and clients.

mod alarm;
pub mod discovery;
pub mod driver;
pub mod node;
pub mod swim;
pub(crate) mod udp;
