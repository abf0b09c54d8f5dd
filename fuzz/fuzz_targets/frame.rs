//! The frame decoder never panics, and what decodes re-encodes to itself.
#![no_main]

use circuit_proto::frame::{decode, encode};
use circuit_proto::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode::<Request>(data) {
        let again = encode(&req).expect("a decoded request encodes");
        assert_eq!(decode::<Request>(&again[4..]).expect("round trip"), req);
    }
    let _ = decode::<Response>(data);
});
