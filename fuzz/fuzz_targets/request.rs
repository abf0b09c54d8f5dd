//! Request decoding from strangers' bytes never panics, and every path that
//! decodes keeps every rule: valid names, at most 64 of them, at most 4 KiB.
#![no_main]

use circuit_proto::path::{MAX_DEPTH, MAX_PATH, check_name};
use circuit_proto::{Path, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = circuit_proto::frame::decode::<Request>(data) else { return };
    let path = req.path();
    assert!(path.names().len() <= MAX_DEPTH);
    assert!(path.names().iter().all(|n| check_name(n).is_ok()));
    let printed = path.to_string();
    assert!(printed.len() <= MAX_PATH);
    assert!(!path.is_root() || path.names().is_empty());
    assert_eq!(&printed.parse::<Path>().expect("a decoded path prints as a valid one"), path);
});
