//! Where a watcher's stdout and stderr go: `/dev/null` (`discard`), a log
//! file rotated by size, or a bounded in-memory ring per slot read by
//! `circuit stdout|stderr PATH`.
//!
//! For a file or a ring, each process gets a pipe per stream and the server
//! reads it with a task of its own, so a chatty child never blocks on a full
//! pipe; the task ends at end of file (the process and every child holding
//! the pipe have exited). Rings are kept per slot (WID): a respawned process
//! appends to its slot's ring. Files are shared by every process whose path
//! (after `$(WID)`) is the same; writes and rotations of one file are
//! serialized.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use circuit_proto::{OutputSpec, WatchSpec};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tracing::warn;

use super::WatchError;

/// The largest ring a slot may keep, per stream.
pub const MAX_RING: u64 = 64 * 1024 * 1024;

/// Checks the `Stdout` and `Stderr` parts of a spec.
pub fn check(spec: &WatchSpec) -> Result<(), WatchError> {
    for (name, o) in [("Stdout", &spec.stdout), ("Stderr", &spec.stderr)] {
        match o {
            OutputSpec::Discard => {}
            OutputSpec::File(f) if f.path.trim().is_empty() => {
                return Err(WatchError::Spec(format!("{name}.File has no path")));
            }
            OutputSpec::File(f) => {
                let first = PathBuf::from(f.path.trim().replace("$(WID)", "1"));
                if let Some(dir) = first.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
                    return Err(WatchError::Spec(format!(
                        "{name}.File: {} is not a directory on this server",
                        dir.display()
                    )));
                }
            }
            OutputSpec::Ring(n) if *n == 0 || *n > MAX_RING => {
                return Err(WatchError::Spec(format!(
                    "{name}.Ring must be a number of bytes from 1 to {MAX_RING}, not {n}"
                )));
            }
            OutputSpec::Ring(_) => {}
        }
    }
    Ok(())
}

/// A log file with size rotation.
struct Rotating {
    path: PathBuf,
    max: u64,
    backups: u32,
    file: Option<File>,
    size: u64,
    /// An error was logged; the next one is not (until a write works again).
    failing: bool,
}

impl Rotating {
    fn backup(&self, i: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{i}"));
        p.into()
    }

    /// `f.(k-1)` → `f.k`, …, `f` → `f.1`; the oldest is dropped.
    fn rotate(&mut self) {
        self.file = None;
        if self.backups == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(self.backup(self.backups));
            for i in (1..self.backups).rev() {
                let _ = std::fs::rename(self.backup(i), self.backup(i + 1));
            }
            let _ = std::fs::rename(&self.path, self.backup(1));
        }
        self.size = 0;
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            let f = OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        if self.max > 0 && self.size > 0 && self.size + data.len() as u64 > self.max {
            self.rotate();
            let f = OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }
}

/// Where one stream's bytes go.
#[derive(Clone)]
enum Sink {
    Ring(u32),
    File(Arc<Mutex<Rotating>>),
}

/// The output of a watcher's processes: their rings and open log files.
pub struct Outputs {
    stdout: OutputSpec,
    stderr: OutputSpec,
    /// Rings by (stderr?, WID).
    rings: Mutex<BTreeMap<(bool, u32), VecDeque<u8>>>,
    files: Mutex<HashMap<PathBuf, Arc<Mutex<Rotating>>>>,
}

/// The server's ends of a new process's pipes, to [`Outputs::attach`] once
/// it has started.
pub struct Pipes(Vec<(bool, OwnedFd)>);

impl Outputs {
    /// The outputs of a watcher with this spec ([`check`]ed).
    pub fn new(spec: &WatchSpec) -> Arc<Outputs> {
        Arc::new(Outputs {
            stdout: spec.stdout.clone(),
            stderr: spec.stderr.clone(),
            rings: Mutex::default(),
            files: Mutex::default(),
        })
    }

    fn spec(&self, err: bool) -> &OutputSpec {
        if err { &self.stderr } else { &self.stdout }
    }

    /// Points `cmd`'s stdout and stderr at new pipes, for those not
    /// discarded; returns the server's ends.
    pub fn pipe(&self, cmd: &mut Command) -> std::io::Result<Pipes> {
        let mut ends = Vec::new();
        for err in [false, true] {
            if matches!(self.spec(err), OutputSpec::Discard) {
                continue;
            }
            let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
            if err {
                cmd.stderr(Stdio::from(wr));
            } else {
                cmd.stdout(Stdio::from(wr));
            }
            ends.push((err, rd));
        }
        Ok(Pipes(ends))
    }

    fn sink(&self, err: bool, wid: u32) -> Option<Sink> {
        match self.spec(err) {
            OutputSpec::Discard => None,
            OutputSpec::Ring(_) => Some(Sink::Ring(wid)),
            OutputSpec::File(f) => {
                let path = PathBuf::from(f.path.trim().replace("$(WID)", &wid.to_string()));
                let mut files = self.files.lock().unwrap();
                let file = files.entry(path.clone()).or_insert_with(|| {
                    Arc::new(Mutex::new(Rotating {
                        path,
                        max: f.max_bytes,
                        backups: f.backups,
                        file: None,
                        size: 0,
                        failing: false,
                    }))
                });
                Some(Sink::File(file.clone()))
            }
        }
    }

    /// Starts a task per pipe of the process in slot `wid` (on the
    /// watcher's `tasks`), copying its output to the ring or the file until
    /// end of file, or until the watcher's task has ended.
    pub fn attach(self: &Arc<Self>, wid: u32, pipes: Pipes, tasks: &super::Tasks) {
        for (err, fd) in pipes.0 {
            let Some(sink) = self.sink(err, wid) else { continue };
            let mut rx = match pipe::Receiver::from_owned_fd(fd) {
                Ok(rx) => rx,
                Err(e) => {
                    warn!(wid, error = %e, "cannot read a process's output pipe");
                    continue;
                }
            };
            let me = self.clone();
            let over = tasks.over.clone();
            tasks.spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    tokio::select! {
                        r = rx.read(&mut buf) => match r {
                            Ok(0) | Err(_) => return,
                            Ok(n) => me.put(err, &sink, &buf[..n]),
                        },
                        _ = over.cancelled() => return,
                    }
                }
            });
        }
    }

    fn put(&self, err: bool, sink: &Sink, data: &[u8]) {
        match sink {
            Sink::Ring(wid) => {
                let cap = match self.spec(err) {
                    OutputSpec::Ring(n) => *n as usize,
                    _ => return,
                };
                let mut rings = self.rings.lock().unwrap();
                let ring = rings.entry((err, *wid)).or_default();
                let data = &data[data.len().saturating_sub(cap)..];
                let over = (ring.len() + data.len()).saturating_sub(cap);
                ring.drain(..over);
                ring.extend(data);
            }
            Sink::File(f) => {
                let mut f = f.lock().unwrap();
                match f.write(data) {
                    Ok(()) => f.failing = false,
                    Err(e) => {
                        if !f.failing {
                            warn!(file = %f.path.display(), error = %e, "cannot write a watcher's output; dropping it");
                        }
                        f.failing = true;
                        f.file = None;
                    }
                }
            }
        }
    }

    /// Whether `stdout` (or `stderr`) is kept in rings.
    pub fn has_ring(&self, err: bool) -> bool {
        matches!(self.spec(err), OutputSpec::Ring(_))
    }

    /// Every slot's ring of one stream, each line prefixed by `[WID] `, by
    /// slot; a last line without a newline gets one.
    pub fn dump(&self, err: bool) -> Vec<u8> {
        let rings = self.rings.lock().unwrap();
        let mut out = Vec::new();
        for ((e, wid), ring) in rings.iter() {
            if *e != err || ring.is_empty() {
                continue;
            }
            let bytes: Vec<u8> = ring.iter().copied().collect();
            for line in bytes.split_inclusive(|&b| b == b'\n') {
                out.extend_from_slice(format!("[{wid}] ").as_bytes());
                out.extend_from_slice(line);
                if !line.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use circuit_proto::FileOutput;

    #[test]
    fn rings_keep_the_newest_bytes_and_dump_with_prefixes() {
        let mut spec = WatchSpec::new("/bin/true", Vec::<String>::new());
        spec.stdout = OutputSpec::Ring(8);
        let o = Outputs::new(&spec);
        o.put(false, &Sink::Ring(2), b"b1\n");
        o.put(false, &Sink::Ring(1), b"hello\nworld\n");
        assert_eq!(String::from_utf8(o.dump(false)).unwrap(), "[1] o\n[1] world\n[2] b1\n");
        o.put(false, &Sink::Ring(2), b"0123456789ab");
        assert_eq!(
            String::from_utf8(o.dump(false)).unwrap(),
            "[1] o\n[1] world\n[2] 456789ab\n"
        );
        assert!(o.dump(true).is_empty());
        spec.stdout = OutputSpec::Ring(0);
        assert!(check(&spec).is_err());
        spec.stdout = OutputSpec::File(circuit_proto::FileOutput {
            path: "/no/such/dir/$(WID).log".into(),
            max_bytes: 0,
            backups: 0,
        });
        assert!(
            check(&spec)
                .unwrap_err()
                .to_string()
                .contains("/no/such/dir is not a directory")
        );
    }

    #[test]
    fn files_rotate_keeping_backups() {
        let dir = std::env::temp_dir().join(format!("circuit-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.log");
        let mut spec = WatchSpec::new("/bin/true", Vec::<String>::new());
        spec.stdout = OutputSpec::File(FileOutput {
            path: path.to_string_lossy().into_owned(),
            max_bytes: 10,
            backups: 2,
        });
        let o = Outputs::new(&spec);
        let sink = o.sink(false, 1).unwrap();
        for i in 0..6 {
            o.put(false, &sink, format!("line {i}\n").as_bytes());
        }
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "line 5\n");
        assert_eq!(read(&dir.join("w.log.1")), "line 4\n");
        assert_eq!(read(&dir.join("w.log.2")), "line 3\n");
        assert!(!dir.join("w.log.3").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
