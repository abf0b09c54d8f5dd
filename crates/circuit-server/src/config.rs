//! Elements declared in a config file (`circuit start --config FILE`):
//! made at boot, and brought in line with the file again by
//! `circuit reloadconfig /X…` ([`circuit_proto::ServerOp::ReloadConfig`]).
//!
//! The server does not know the file's format: the binary hands it a
//! [`Loader`] that reads the file into [`Declaration`]s. The server
//! remembers what it made from the file (the paths and their specs), so a
//! reload only ever touches those: an element made by hand is never
//! scrubbed or replaced by a reload, and a declared anchor already taken by
//! one is reported as failed.
//!
//! A reload compares the file with what the server made from it last time:
//! - a declaration that is new is made (`Created`);
//! - one that is gone is scrubbed, gracefully for watchers (`Removed`);
//! - one whose spec changed is scrubbed (gracefully) and made again with
//!   the new spec, so its processes are new ones (`Changed`); except a DNS
//!   server whose address stays: its records are replaced in place, on the
//!   same sockets (`Changed`), and a breaker, which takes the new policy
//!   with its keys' state kept (`Changed`);
//! - one that is the same, and whose element is still there, is left alone:
//!   same processes, same pids (`Unchanged`); if its element was scrubbed by
//!   hand meanwhile, it is made again (`Created`).
//!
//! Watchers are made first, then the other elements.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use circuit_proto::WireError;
use circuit_proto::{
    BreakerOp, BreakerSpec, ChanOp, DnsOp, DnsSpec, ErrorKind, Op, Path, ReloadFailure, ReloadReport, Reply, Response,
};
use circuit_proto::{WatchOp, WatchSpec};
use tracing::{info, warn};

use crate::{Server, State};

/// One element the config file declares.
#[derive(Clone, Debug, PartialEq)]
pub enum Declared {
    /// A watcher with this spec.
    Watch(Box<WatchSpec>),
    /// A channel with this capacity.
    Chan(u64),
    /// A DNS server at this address with these records.
    Dns(DnsSpec),
    /// A circuit breaker with this policy.
    Breaker(BreakerSpec),
}

impl Declared {
    fn kind(&self) -> &'static str {
        match self {
            Declared::Watch(_) => "watch",
            Declared::Chan(_) => "chan",
            Declared::Dns(_) => "dns",
            Declared::Breaker(_) => "breaker",
        }
    }
}

/// An element of the config file and where it goes, below this server.
#[derive(Clone, Debug, PartialEq)]
pub struct Declaration {
    /// The anchor names below `/X…` (checked by the loader).
    pub names: Vec<String>,
    /// What to make there.
    pub element: Declared,
}

/// Reads a config file; the error is one line naming the file (and the
/// line and column when it is about the content).
pub type Loader = fn(&std::path::Path) -> Result<Vec<Declaration>, String>;

/// The config file a server was started with.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    /// Its absolute path, read again on every reload.
    pub path: PathBuf,
    /// How to read it.
    pub load: Loader,
    /// What the server made from it, by anchor names.
    made: Arc<Mutex<BTreeMap<Vec<String>, Declared>>>,
}

impl ConfigFile {
    /// A config file read with `load`.
    pub fn new(path: PathBuf, load: Loader) -> ConfigFile {
        ConfigFile {
            path,
            load,
            made: Arc::default(),
        }
    }
}

fn path_of(state: &State, names: &[String]) -> Path {
    names
        .iter()
        .try_fold(Path::server(state.ctx.id), |p, n| p.child(n))
        .expect("the loader checks the names")
}

fn make(state: &State, path: &Path, d: &Declared) -> Response {
    let op = match d {
        Declared::Watch(spec) => Op::Watch(WatchOp::Make(spec.clone())),
        Declared::Chan(cap) => Op::Chan(ChanOp::Make { cap: *cap }),
        Declared::Dns(spec) => Op::Dns(DnsOp::Make(spec.clone())),
        Declared::Breaker(spec) => Op::Breaker(BreakerOp::Make(spec.clone())),
    };
    crate::elements::make(&state.ctx, path, op)
}

/// Applies a changed declaration to the element in place, when its kind
/// can take the change without being made again: a DNS server whose
/// address stays gets the new records on the same sockets. `None` when it
/// cannot.
fn change_in_place(state: &State, path: &Path, old: &Declared, new: &Declared) -> Option<Response> {
    if let Declared::Breaker(spec) = new {
        // A breaker takes a new policy in place: its keys keep their state.
        if let Err(e) = spec.validate() {
            return Some(Err(WireError::at(ErrorKind::Invalid, path, format!("{path}: {e}"))));
        }
        return match state.ctx.get(path)? {
            crate::elements::Element::Breaker(b) => {
                b.set_spec(spec.clone());
                Some(Ok(Reply::Done))
            }
            _ => None,
        };
    }
    let (Declared::Dns(old), Declared::Dns(new)) = (old, new) else {
        return None;
    };
    if old.addr != new.addr {
        return None;
    }
    match state.ctx.get(path)? {
        crate::elements::Element::Dns(d) => Some(crate::elements::dns::ops::replace(&d, path, &new.records)),
        _ => None,
    }
}

/// Scrubs the element at `path`, if there is one; true if there was.
fn scrub(state: &State, path: &Path) -> bool {
    let el = state.ctx.ns.lock().unwrap().remove(path.names());
    match el {
        Some(el) => {
            info!(op = "reloadconfig", %path, kind = %el.kind(), "scrubbing");
            el.scrub();
            true
        }
        None => false,
    }
}

/// Brings the elements made from `file` in line with `decls`.
fn apply(state: &State, file: &ConfigFile, mut decls: Vec<Declaration>) -> ReloadReport {
    let mut made = file.made.lock().unwrap();
    let mut out = ReloadReport::default();
    // Watchers first, then the rest (stable: file order otherwise).
    decls.sort_by_key(|d| !matches!(d.element, Declared::Watch(_)));
    let wanted: std::collections::BTreeSet<&Vec<String>> = decls.iter().map(|d| &d.names).collect();
    let gone: Vec<Vec<String>> = made.keys().filter(|k| !wanted.contains(k)).cloned().collect();
    for names in gone {
        made.remove(&names);
        let path = path_of(state, &names);
        scrub(state, &path);
        out.removed.push(path.to_string());
    }
    for d in decls {
        let path = path_of(state, &d.names);
        let present = state.ctx.ns.lock().unwrap().get(d.names.as_slice()).is_some();
        let in_place = match made.get(&d.names) {
            Some(old) if present && *old != d.element => change_in_place(state, &path, old, &d.element),
            _ => None,
        };
        if let Some(r) = in_place {
            match r {
                Ok(_) => {
                    info!(op = "reloadconfig", %path, kind = d.element.kind(), "changed in place");
                    made.insert(d.names, d.element);
                    out.changed.push(path.to_string());
                }
                Err(e) => {
                    warn!(op = "reloadconfig", %path, error = %e.message, "cannot change a declared element");
                    out.failed.push(ReloadFailure {
                        path: path.to_string(),
                        error: e.message,
                    });
                }
            }
            continue;
        }
        let changed = match made.get(&d.names) {
            Some(old) if *old == d.element && present => {
                out.unchanged.push(path.to_string());
                continue;
            }
            Some(_) if present => {
                scrub(state, &path);
                true
            }
            _ => false,
        };
        made.remove(&d.names);
        match make(state, &path, &d.element) {
            Ok(_) => {
                info!(op = "reloadconfig", %path, kind = d.element.kind(), changed, "made from the config file");
                made.insert(d.names, d.element);
                if changed {
                    out.changed.push(path.to_string());
                } else {
                    out.created.push(path.to_string());
                }
            }
            Err(e) => {
                warn!(op = "reloadconfig", %path, error = %e.message, "cannot make a declared element");
                out.failed.push(ReloadFailure {
                    path: path.to_string(),
                    error: e.message,
                });
            }
        }
    }
    out
}

impl Server {
    /// Makes the elements of the config file, if the server has one. Fails
    /// (and scrubs what it made) if one of them cannot be made.
    pub fn boot_config(&self) -> Result<Option<ReloadReport>, String> {
        let state = &self.state;
        let Some(file) = &state.config.config_file else {
            return Ok(None);
        };
        let decls = (file.load)(&file.path)?;
        let summary = apply(state, file, decls);
        if let Some(f) = summary.failed.first() {
            for el in state.ctx.ns.lock().unwrap().drain() {
                el.scrub();
            }
            return Err(format!("{}: {}", file.path.display(), f.error));
        }
        info!(file = %file.path.display(), elements = summary.created.len(), "made the elements of the config file");
        Ok(Some(summary))
    }
}

/// `reloadconfig /X…` (the server's root; `elements::server` checks it):
/// reads the config file again and applies the difference.
pub fn reload(state: &Arc<State>) -> Response {
    let Some(file) = &state.config.config_file else {
        return Err(WireError::new(
            ErrorKind::Invalid,
            format!(
                "server {} was started without --config FILE: there is nothing to reload",
                state.ctx.id
            ),
        ));
    };
    let decls = (file.load)(&file.path).map_err(|e| WireError::new(ErrorKind::Invalid, e))?;
    let summary = apply(state, file, decls);
    info!(op = "reloadconfig", file = %file.path.display(), created = summary.created.len(),
          changed = summary.changed.len(), removed = summary.removed.len(),
          unchanged = summary.unchanged.len(), failed = summary.failed.len(), "reloaded the config file");
    Ok(Reply::Reload(Box::new(summary)))
}
