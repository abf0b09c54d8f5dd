//! Discovery datagrams from strangers never panic the opener.
#![no_main]

use circuit_proto::beacon::open;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = open(data, None);
});
