//! `circuit keygen`: a new random cluster key.

/// Prints a fresh key: base64 of 32 bytes from the OS CSPRNG.
pub fn run() {
    println!("{}", circuit_proto::Key::generate());
}
