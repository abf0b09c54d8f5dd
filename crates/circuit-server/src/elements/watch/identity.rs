//! Who a watcher's processes run as and what they may use: `Uid`, `Gid`
//! (names or numbers, resolved once when the watcher is made) and `Rlimits`
//! (set, soft and hard, in the child between fork and exec).
//!
//! The group is set before the user (std's `CommandExt::gid`/`uid` do it in
//! that order, dropping supplementary groups when the server is root), and
//! the limits after both, so a limit above the hard limit of a non-root
//! server fails the spawn with EPERM. A server not running as root cannot
//! run processes as anyone else: `mkwatch` fails with a clear error.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Group, User, getegid, geteuid};

use super::WatchError;

/// The resolved identity and limits of a watcher's processes.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    uid: Option<u32>,
    gid: Option<u32>,
    limits: Vec<(Resource, u64)>,
}

/// The resource named `name` (`NOFILE`, `rlimit_nofile`, …).
pub fn resource(name: &str) -> Option<Resource> {
    let up = name.trim().to_ascii_uppercase();
    let n = up.strip_prefix("RLIMIT_").unwrap_or(&up);
    Some(match n {
        "AS" => Resource::RLIMIT_AS,
        "CORE" => Resource::RLIMIT_CORE,
        "CPU" => Resource::RLIMIT_CPU,
        "DATA" => Resource::RLIMIT_DATA,
        "FSIZE" => Resource::RLIMIT_FSIZE,
        "LOCKS" => Resource::RLIMIT_LOCKS,
        "MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "NICE" => Resource::RLIMIT_NICE,
        "NOFILE" => Resource::RLIMIT_NOFILE,
        "NPROC" => Resource::RLIMIT_NPROC,
        "RSS" => Resource::RLIMIT_RSS,
        "RTPRIO" => Resource::RLIMIT_RTPRIO,
        "SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "STACK" => Resource::RLIMIT_STACK,
        _ => return None,
    })
}

/// The names [`resource`] knows, for error messages.
pub const RESOURCES: &str =
    "AS, CORE, CPU, DATA, FSIZE, LOCKS, MEMLOCK, MSGQUEUE, NICE, NOFILE, NPROC, RSS, RTPRIO, SIGPENDING, STACK";

fn user(spec: &str) -> Result<Option<u32>, WatchError> {
    let s = spec.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = s.parse::<u32>() {
        return Ok(Some(n));
    }
    match User::from_name(s) {
        Ok(Some(u)) => Ok(Some(u.uid.as_raw())),
        Ok(None) => Err(WatchError::Spec(format!(
            "Uid: no user named {s:?} on this server's host"
        ))),
        Err(e) => Err(WatchError::Spec(format!("Uid: cannot look up user {s:?}: {e}"))),
    }
}

fn group(spec: &str) -> Result<Option<u32>, WatchError> {
    let s = spec.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = s.parse::<u32>() {
        return Ok(Some(n));
    }
    match Group::from_name(s) {
        Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
        Ok(None) => Err(WatchError::Spec(format!(
            "Gid: no group named {s:?} on this server's host"
        ))),
        Err(e) => Err(WatchError::Spec(format!("Gid: cannot look up group {s:?}: {e}"))),
    }
}

impl Identity {
    /// Resolves `Uid`, `Gid` and `Rlimits` of a spec; fails if a name is
    /// unknown or this server may not take that identity.
    pub fn resolve(uid: &str, gid: &str, rlimits: &BTreeMap<String, u64>) -> Result<Identity, WatchError> {
        let uid = user(uid)?;
        let gid = group(gid)?;
        let me = geteuid();
        if !me.is_root() {
            if let Some(u) = uid.filter(|&u| u != me.as_raw()) {
                return Err(WatchError::Spec(format!(
                    "Uid {u}: this server runs as uid {me}, not root, so it cannot run processes as another user"
                )));
            }
            if let Some(g) = gid.filter(|&g| g != getegid().as_raw()) {
                return Err(WatchError::Spec(format!(
                    "Gid {g}: this server runs as uid {me}, not root, so it cannot run processes in another group"
                )));
            }
        }
        let mut limits = Vec::new();
        for (name, &n) in rlimits {
            let r = resource(name)
                .ok_or_else(|| WatchError::Spec(format!("Rlimits: unknown resource {name:?}; known: {RESOURCES}")))?;
            limits.push((r, n));
        }
        Ok(Identity { uid, gid, limits })
    }

    /// Sets the identity and limits on `cmd`, for its child.
    pub fn apply(&self, cmd: &mut Command) {
        if let Some(g) = self.gid {
            cmd.gid(g);
        }
        if let Some(u) = self.uid {
            cmd.uid(u);
        }
        if !self.limits.is_empty() {
            let limits = self.limits.clone();
            // SAFETY: between fork and exec the closure only calls setrlimit
            // (a system call, async-signal-safe) and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    for &(r, n) in &limits {
                        setrlimit(r, n, n).map_err(std::io::Error::from)?;
                    }
                    Ok(())
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_numbers_and_limits() {
        let none = BTreeMap::new();
        let me = geteuid().as_raw().to_string();
        let id = Identity::resolve(&me, "", &none).unwrap();
        assert_eq!((id.uid, id.gid), (Some(geteuid().as_raw()), None));
        let id = Identity::resolve("root", "root", &none);
        match geteuid().is_root() {
            true => assert_eq!(id.unwrap().uid, Some(0)),
            false => assert!(id.unwrap_err().to_string().contains("not root")),
        }
        let e = Identity::resolve("no-such-user-xyz", "", &none).unwrap_err();
        assert!(e.to_string().contains("no user named"), "{e}");
        let mut l = BTreeMap::new();
        l.insert("rlimit_nofile".to_string(), 64);
        assert_eq!(Identity::resolve("", "", &l).unwrap().limits.len(), 1);
        l.insert("BOGUS".to_string(), 1);
        assert!(
            Identity::resolve("", "", &l)
                .unwrap_err()
                .to_string()
                .contains("unknown resource")
        );
    }
}
