//! The channel element's status, shared by the server and the client.

use serde::{Deserialize, Serialize};

/// What `peek` says of a channel. The field order is the JSON key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChanStat {
    /// Buffer capacity, in messages.
    pub cap: u64,
    /// The channel was closed.
    pub closed: bool,
    /// The channel was scrubbed while in use.
    pub aborted: bool,
    /// Messages whose senders finished writing them.
    pub num_send: u64,
    /// Messages handed whole to a receiver.
    pub num_recv: u64,
}
