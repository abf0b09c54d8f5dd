//! Several hosts on one machine: each host is a network namespace with its
//! own address, wired by a veth pair to a bridge that lives in a "switch"
//! namespace of its own, so nothing is added to the machine's real network.
//! A host can be cut off (its link set down) and healed; its processes are
//! started inside it and killed by PID.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One simulated host.
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// Its IPv4 address on the test network.
    pub ip: String,
    /// The switch-side end of its link.
    port: String,
}

/// A test network of hosts on one bridge; torn down on drop.
pub struct Net {
    switch: String,
    /// The hosts, in order.
    pub hosts: Vec<Host>,
}

fn ip(args: &[&str]) -> Result<Output, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Builds `n` hosts. Returns `None` with a printed reason when network
    /// namespaces are unavailable (not root, no `ip`), except under `CI=true`,
    /// where that is a failure.
    pub fn new(n: usize) -> Option<Net> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}", std::process::id() % 100_000, seq);
        let switch = format!("cts{tag}");
        let built = (|| -> Result<Net, String> {
            ip(&["netns", "add", &switch])?;
            let mut net = Net {
                switch: switch.clone(),
                hosts: Vec::new(),
            };
            ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &switch, "link", "set", "br0", "up"])?;
            // A /16 of our own inside these namespaces; nothing outside sees it.
            let subnet = 1 + (seq % 250);
            for i in 0..n {
                let ns = format!("cth{tag}x{i}");
                let port = format!("p{i}");
                ip(&["netns", "add", &ns])?;
                net.hosts.push(Host {
                    ns: ns.clone(),
                    ip: format!("10.201.{subnet}.{}", i + 1),
                    port: port.clone(),
                });
                ip(&[
                    "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ])?;
                ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
                let host = net.hosts.last().unwrap();
                ip(&["-n", &ns, "addr", "add", &format!("{}/24", host.ip), "dev", "eth0"])?;
                ip(&["-n", &ns, "link", "set", "eth0", "up", "multicast", "on"])?;
                ip(&["-n", &ns, "link", "set", "lo", "up"])?;
                ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
            }
            Ok(net)
        })();
        match built {
            Ok(net) => Some(net),
            Err(e) => {
                let _ = ip(&["netns", "del", &switch]);
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("network namespaces are required under CI=true: {e}");
                }
                eprintln!("skipping: network namespaces unavailable ({e}); run as root with iproute2");
                None
            }
        }
    }

    /// `ip netns exec HOST bin ARGS`: the child is the program itself (ip execs it).
    pub fn command(&self, host: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[host].ns]).arg(program);
        c
    }

    /// `circuit start -a HOST_IP:PORT EXTRA…` inside a host (port 0: any);
    /// a fixed port brings a restart back at the same address.
    pub fn start(&self, host: usize, port: u16, extra: &[&str]) -> super::TestServer {
        let mut cmd = self.command(host, &super::bin());
        cmd.args(["start", "-a", &format!("{}:{port}", self.hosts[host].ip)])
            .args(extra);
        super::TestServer::spawn(cmd)
    }

    /// Moves the calling thread into a host's namespace: the sockets it
    /// opens from then on, and the threads it starts, live there.
    pub fn enter(&self, host: usize) {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.hosts[host].ns)).expect("open the namespace");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the namespace");
    }

    /// Runs the circuit CLI inside a host, bounded to 60 s.
    pub fn cli(&self, host: usize, args: &[&str]) -> Output {
        self.cli_in(host, args, b"")
    }

    /// Like `cli`, with bytes on stdin.
    pub fn cli_in(&self, host: usize, args: &[&str], stdin: &[u8]) -> Output {
        let mut full = vec!["netns", "exec", &self.hosts[host].ns, "timeout", "60"];
        let bin = super::bin();
        let bin = bin.to_str().unwrap();
        full.push(bin);
        full.extend_from_slice(args);
        let mut child = Command::new("ip")
            .args(&full)
            .env_remove("CIRCUIT")
            .env_remove("CIRCUIT_DISCOVER")
            .env_remove("CIRCUIT_HMAC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run circuit in a namespace");
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait for circuit");
        let _ = writer.join();
        out
    }

    /// Cuts a host off the network.
    pub fn cut(&self, host: usize) {
        ip(&["-n", &self.switch, "link", "set", &self.hosts[host].port, "down"]).unwrap();
    }

    /// Reconnects a host.
    pub fn heal(&self, host: usize) {
        ip(&["-n", &self.switch, "link", "set", &self.hosts[host].port, "up"]).unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

/// A process started in a host; killed by PID on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
