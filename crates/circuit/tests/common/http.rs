//! A small blocking HTTP/1.0 client for the web console's tests: one
//! request per connection, the body read to the server's close (no chunked
//! encoding in HTTP/1.0), and a reader of server-sent events. Every read
//! has a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A response: status, headers (names lower-cased) and body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the console");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).unwrap();
    s
}

fn head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (status, headers)
}

/// Sends one request and reads the whole response.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let s = send(addr, method, path, headers, body);
    let mut r = BufReader::new(s);
    let (status, headers) = head(&mut r);
    let mut body = String::new();
    let _ = r.read_to_string(&mut body);
    Resp { status, headers, body }
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(addr, "GET", path, headers, None)
}

/// `POST path` with a JSON body.
pub fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &serde_json::Value) -> Resp {
    request(addr, "POST", path, headers, Some(&body.to_string()))
}

/// An open stream of server-sent events.
pub struct Sse {
    r: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Sse {
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let s = send(addr, "GET", path, headers, None);
        let mut r = BufReader::new(s);
        let (status, headers) = head(&mut r);
        Sse { r, status, headers }
    }

    /// The next event (its name and data) within `limit`, if one comes.
    pub fn next(&mut self, limit: Duration) -> Option<(String, String)> {
        let end = Instant::now() + limit;
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            self.r
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() || !name.is_empty() {
                    return Some((name, data));
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }

    /// Reads events until one named `name` whose data satisfies `want`.
    pub fn until(&mut self, limit: Duration, name: &str, mut want: impl FnMut(&str) -> bool) -> Option<String> {
        let end = Instant::now() + limit;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let (n, d) = self.next(left)?;
            if n == name && want(&d) {
                return Some(d);
            }
        }
        None
    }
}
