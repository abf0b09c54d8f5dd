//! The client library against a real server process.

mod common;

use circuit_client::{Client, ErrorKind, Key};
use common::{TempDir, TestServer};

#[tokio::test]
async fn dial_walk_and_peek() {
    let srv = TestServer::start(&[]);
    let client = Client::dial(&srv.url, None).await.unwrap();
    assert_eq!(client.url().to_string(), srv.url);
    let servers = client.servers().await.unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].path().to_string(), srv.id);
    let stat = servers[0].peek().await.unwrap();
    assert_eq!(stat.addr, srv.url);
    assert_eq!(stat.elements, 1);

    let a = client.walk(&srv.id).unwrap().walk("a").unwrap().walk("b").unwrap();
    assert_eq!(a.path().to_string(), format!("{}/a/b", srv.id));
    assert_eq!(a.peek().await.unwrap(), serde_json::Value::Null);
    assert!(a.list().await.unwrap().is_empty());
    assert_eq!(a.scrub().await.unwrap_err().kind(), Some(ErrorKind::NotFound));
    assert!(a.walk("no way").is_err());
    assert!(client.walk("/Xnothex").is_err());

    let gone = client.walk("/X0123456789abcdef/x").unwrap();
    let err = gone.peek().await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::NoServer));

    // Many requests in flight on one connection.
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let s = servers[0].clone();
        tasks.push(tokio::spawn(async move { s.peek().await.map(|st| st.members) }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
}

#[tokio::test]
async fn keyed_dial() {
    let dir = TempDir::new("libkey");
    let file = dir.key("key");
    let srv = TestServer::start(&["-hmac", &file]);
    let key = Key::load(std::path::Path::new(&file)).unwrap();
    let client = Client::dial(&srv.url, Some(&key)).await.unwrap();
    assert_eq!(client.servers().await.unwrap().len(), 1);
    assert!(Client::dial(&srv.url, None).await.is_err());
    let wrong = Key::from_base64(&Key::generate(), "wrong").unwrap();
    let err = Client::dial(&srv.url, Some(&wrong)).await.err().unwrap();
    assert!(err.to_string().contains("authentication failed"), "{err}");
}

#[tokio::test]
async fn server_stop_through_the_library() {
    let mut srv = TestServer::start(&[]);
    let client = Client::dial(&srv.url, None).await.unwrap();
    let s = client.servers().await.unwrap().remove(0);
    s.stop().await.unwrap();
    assert!(srv.wait_exit(std::time::Duration::from_secs(5)).unwrap().success());
    // The connection is gone: a clear error, not a hang.
    let err = s.peek().await.unwrap_err();
    assert!(matches!(err, circuit_client::Error::Closed(_)), "{err}");
}

/// A stream nobody reads stops only its own sender: other requests on the
/// same connection go on (no head-of-line blocking in the multiplexer).
#[tokio::test]
async fn an_unread_stream_does_not_block_the_connection() {
    let srv = TestServer::start(&[]);
    let client = Client::dial(&srv.url, None).await.unwrap();
    let a = client.walk(&srv.id).unwrap().walk("yes").unwrap();
    let p = a
        .make_proc(circuit_proto::ProcSpec::new("/usr/bin/yes", ["0123456789abcdef"]))
        .await
        .unwrap();
    let mut out = p.stdout().await.unwrap();
    let mut first = [0u8; 17];
    tokio::io::AsyncReadExt::read_exact(&mut out, &mut first).await.unwrap();
    // `out` is now left unread while the process keeps writing into it.
    let server = client.servers().await.unwrap().remove(0);
    let peeks = async {
        for _ in 0..300 {
            server.peek().await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), peeks)
        .await
        .expect("peeks are not blocked");
    drop(out);
    p.signal("KILL").await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), p.wait())
        .await
        .unwrap()
        .unwrap();
}
