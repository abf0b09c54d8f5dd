//! What every element may use of its server: not the whole server state,
//! only its runtime (clock, task tracker, shutdown token, reaper), its id,
//! its namespace, its event bus and its view of the cluster.

use std::sync::{Arc, Mutex};

use circuit_proto::{CircuitUrl, Entry, ErrorKind, Path, ServerId, WireError};

use super::Element;
use super::proc::Reaper;
use crate::events::Bus;
use crate::membership::swim::Membership;
use crate::namespace::Namespace;

/// An element's view of its server. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    /// The clock, the task tracker and shutdown token, the reaper's handle.
    pub rt: super::Runtime,
    /// This server's id.
    pub id: ServerId,
    /// The anchor tree (held only for map operations, never across an await).
    pub ns: Arc<Mutex<Namespace>>,
    /// This server's events.
    pub events: Bus,
    /// Reaps every process this server starts.
    pub reaper: Arc<Reaper>,
    /// The cluster as this server sees it.
    pub members: Arc<Membership>,
    /// This server's URL.
    pub url: Arc<CircuitUrl>,
    /// When it started, RFC 3339.
    pub joined: Arc<str>,
    /// When it started, for uptimes.
    pub started: std::time::Instant,
    /// The Docker engine, when the server was started with `-docker`.
    pub docker: Option<Arc<super::docker::Engine>>,
    /// The state directory given with `--var DIR` (`None` for the default
    /// one, removed at exit): where elements keep what outlives a restart.
    pub var: Option<Arc<std::path::PathBuf>>,
}

impl Ctx {
    /// The element at `path`, if any.
    pub fn get(&self, path: &Path) -> Option<Element> {
        self.ns.lock().unwrap().get(path.names())
    }

    /// The anchors below `path` (every descendant when `recursive`), with
    /// their full paths. Each path is built once from its names (linear); a
    /// name the tree should never hold is left out and logged rather than
    /// taking the server down.
    pub fn list(&self, path: &Path, recursive: bool) -> Vec<Entry> {
        let listed = self.ns.lock().unwrap().list(path.names(), recursive);
        listed
            .into_iter()
            .filter_map(|(names, kind)| match Path::from_names(self.id, names) {
                Ok(path) => Some(Entry { path, kind }),
                Err(e) => {
                    tracing::warn!(error = %e, "anchor left out of a listing");
                    None
                }
            })
            .collect()
    }

    /// Refuses `path` for a new element (a server's root, or an anchor
    /// already taken); `noun` names the kind in the message.
    pub fn check_free(&self, path: &Path, noun: &str) -> Result<(), WireError> {
        check_below_server(path, noun)?;
        match self.ns.lock().unwrap().get(path.names()) {
            Some(old) => Err(taken(path, &old)),
            None => Ok(()),
        }
    }

    /// The one way an element enters the namespace: refuses a server's
    /// root and a taken anchor, then runs `build` under the namespace lock
    /// (so two makers of one path cannot both start something), inserts
    /// the element it gives, if any, and reports it `created`. `build`
    /// must be quick: a kind that takes long to start (a watcher) starts
    /// first, after [`Ctx::check_free`], and hands the started element in.
    pub fn make<T>(
        &self,
        path: &Path,
        noun: &str,
        build: impl FnOnce() -> (Option<Element>, T),
    ) -> Result<T, WireError> {
        check_below_server(path, noun)?;
        let mut ns = self.ns.lock().unwrap();
        if let Some(old) = ns.get(path.names()) {
            return Err(taken(path, &old));
        }
        let (el, out) = build();
        if let Some(el) = el {
            ns.insert(path.names(), el).expect("checked free under the same lock");
        }
        Ok(out)
    }
}

fn check_below_server(path: &Path, noun: &str) -> Result<(), WireError> {
    if path.is_server_root() {
        return Err(WireError::at(
            ErrorKind::Invalid,
            path,
            format!("{path} is a server; make the {noun} below it, like {path}/name"),
        ));
    }
    Ok(())
}

fn taken(path: &Path, old: &Element) -> WireError {
    WireError::at(
        ErrorKind::Exists,
        path,
        format!("anchor {path} already holds a {}", old.kind()),
    )
}
