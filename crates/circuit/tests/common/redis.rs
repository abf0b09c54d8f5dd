//! A real `redis-server` per test, on its own loopback port and temporary
//! directory, with persistence off; killed by PID on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    pub child: Child,
    pub port: u16,
    _dir: TempDir,
}

/// True when `redis-server` can be run. Otherwise prints why and returns
/// false, except under `CI=true`, where that is a failure.
pub fn available() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("redis-server is required under CI=true (apt-get install redis-server)");
        }
        eprintln!("skipping: no redis-server (apt-get install redis-server redis-tools)");
    }
    ok
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts one (a few tries, should another process take the port
    /// between our probe and its bind); `None` if redis-server is missing
    /// outside CI.
    pub fn start() -> Option<RedisServer> {
        if !available() {
            return None;
        }
        (0..5)
            .find_map(|_| RedisServer::start_on(free_port()))
            .or_else(|| panic!("redis-server did not start"))
    }

    /// Starts one on `port`; `None` if it did not come up.
    pub fn start_on(port: u16) -> Option<RedisServer> {
        {
            let dir = TempDir::new("redis");
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
                .arg("--dir")
                .arg(&dir.0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if ping(port) {
                    return Some(RedisServer { child, port, _dir: dir });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        None
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli -p PORT ARGS…`, bounded.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Kills the server now (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True if something answers PING on the port.
pub fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Output's exit code (`-1` for a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}
