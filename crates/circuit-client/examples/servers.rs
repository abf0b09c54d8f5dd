//! Lists the servers of a cluster and peeks at each.
//!
//! ```sh
//! cargo run -p circuit-client --example servers -- circuit://127.0.0.1:11022/1234/X88550014d4c82e4d [KEYFILE]
//! ```

use circuit_client::{Client, Key};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: servers URL [KEYFILE]")?;
    let key = args.next().map(|f| Key::load(f.as_ref())).transpose()?;
    let client = Client::dial(&url, key.as_ref()).await?;
    for server in client.servers().await? {
        let stat = server.peek().await?;
        println!(
            "{}  {}  joined {}  {} element(s)",
            server.path(),
            stat.addr,
            stat.joined,
            stat.elements
        );
    }
    Ok(())
}
