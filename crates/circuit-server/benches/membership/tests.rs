//! The simulation's own tests: `cargo test -p circuit-server --test simulation`.

#[allow(dead_code)] // the benchmark uses the rest
#[path = "sim.rs"]
mod sim;
