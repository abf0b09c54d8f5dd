//! Docker test support: whether an engine answers, the tiny busybox image
//! the tests build themselves (no registry is reachable), and a guard that
//! removes every container a test's servers made.

use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The image the tests run: Debian's static busybox, imported locally. The
/// tag changes with [`APPLETS`], so an image left by an older list is not
/// taken for this one.
pub const IMAGE: &str = "circuit-test-busybox:1";

/// The applets the image holds as links to busybox.
const APPLETS: &[&str] = &[
    "sh", "cat", "sleep", "echo", "true", "false", "ls", "env", "wc", "head", "kill",
];

/// `docker ARGS`, its output.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: format!("cannot run docker: {e}").into_bytes(),
        })
}

/// True when an engine answers and the test image is there (imported once
/// per machine). Otherwise prints why and returns false, except under
/// `CI=true`, where that is a failure.
pub fn available() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    match READY.get_or_init(prepare) {
        Ok(()) => true,
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("a Docker engine is required under CI=true: {e}");
            }
            eprintln!("skipping: no Docker engine ({e})");
            false
        }
    }
}

fn prepare() -> Result<(), String> {
    let v = docker(&["version", "--format", "{{.Server.Version}}"]);
    if !v.status.success() {
        return Err(String::from_utf8_lossy(&v.stderr).trim().to_string());
    }
    // Several test binaries may import at once: one at a time, then check.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("circuit-test-busybox.lock"))
        .map_err(|e| e.to_string())?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e.to_string())?;
    if docker(&["image", "inspect", IMAGE]).status.success() {
        return Ok(());
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or("no /bin/busybox: install Debian's busybox-static")?;
    let dir = super::TempDir::new("busybox");
    let bin = dir.0.join("root/bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy(busybox, bin.join("busybox")).map_err(|e| e.to_string())?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(a)).map_err(|e| e.to_string())?;
    }
    let tar = dir.0.join("busybox.tar");
    let t = Command::new("tar")
        .arg("-C")
        .arg(dir.0.join("root"))
        .arg("-cf")
        .arg(&tar)
        .arg("bin")
        .output()
        .map_err(|e| e.to_string())?;
    if !t.status.success() {
        return Err(format!("tar: {}", String::from_utf8_lossy(&t.stderr)));
    }
    let i = docker(&["import", tar.to_str().unwrap(), IMAGE]);
    if !i.status.success() {
        return Err(format!("docker import: {}", String::from_utf8_lossy(&i.stderr).trim()));
    }
    Ok(())
}

/// The ids of the containers (running or not) labelled as made by `server`
/// (`/X…` or `X…`).
pub fn containers_of(server: &str) -> Vec<String> {
    let filter = format!("label=circuit.server={}", server.trim_start_matches('/'));
    let o = docker(&["ps", "-aq", "--filter", &filter]);
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
}

/// Removes, on drop, every container the servers of a test made, whatever
/// the test did (it also asserts they are gone where that matters).
#[derive(Default)]
pub struct Cleanup(pub Vec<String>);

impl Cleanup {
    /// Cleans up after the server `id`.
    pub fn of(ids: &[&str]) -> Cleanup {
        Cleanup(ids.iter().map(|s| s.to_string()).collect())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in &self.0 {
            for c in containers_of(id) {
                let _ = docker(&["rm", "-f", "-v", &c]);
            }
        }
    }
}
