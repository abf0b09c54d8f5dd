//! `circuit keygen`: a new random cluster key.

/// `keygen` takes no arguments of its own.
#[derive(clap::Args, Debug)]
pub struct Args {}

impl Args {
    /// Prints a fresh key: base64 of 32 bytes from the OS CSPRNG.
    pub fn run(self) -> anyhow::Result<()> {
        println!("{}", circuit_proto::Key::generate());
        Ok(())
    }
}
