//! The path parser never panics, and what parses prints back to itself.
#![no_main]

use circuit_proto::{CircuitUrl, Path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = s.parse::<Path>() {
        assert_eq!(p.to_string().parse::<Path>().expect("printed path parses"), p);
    }
    if let Ok(u) = s.parse::<CircuitUrl>() {
        assert_eq!(u.to_string().parse::<CircuitUrl>().expect("printed URL parses"), u);
    }
});
