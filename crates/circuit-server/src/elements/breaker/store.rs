//! A breaker's file under `--var DIR`: `DIR/breakers/NAMES.json`, holding
//! its anchor names, its spec and its state ([`circuit_breaker::Persisted`]:
//! remaining times, since the monotonic clock does not survive), with the
//! wall-clock time it was written so the next start takes the downtime off.
//! Written to a temporary file, then renamed over the old one.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use circuit_breaker::Persisted;
use circuit_proto::{BreakerSpec, Path};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// The folder of breaker files under the var dir.
pub const DIR: &str = "breakers";

/// What a breaker's file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Saved {
    /// Its anchor names below `/X…`.
    pub names: Vec<String>,
    /// Its policy.
    pub spec: BreakerSpec,
    /// When it was written, ms since the epoch (wall clock).
    pub saved_at: u64,
    /// Its keys and permits.
    pub state: Persisted,
}

impl Saved {
    /// How long ago it was written, by the wall clock (zero if the clock
    /// went back).
    pub fn age(&self) -> Duration {
        Duration::from_millis(wall_ms().saturating_sub(self.saved_at))
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The file name for anchor `names`: the names joined by `%2F`, `%` itself
/// escaped, so distinct anchors never share a file.
pub fn file_name(names: &[String]) -> String {
    let parts: Vec<String> = names.iter().map(|n| n.replace('%', "%25")).collect();
    format!("{}.json", parts.join("%2F"))
}

/// Where one breaker's file goes.
pub struct Store {
    file: PathBuf,
    names: Vec<String>,
}

impl Store {
    /// The file of the breaker at `names` under `var`.
    pub fn new(var: &std::path::Path, names: &[String]) -> Store {
        Store {
            file: var.join(DIR).join(file_name(names)),
            names: names.to_vec(),
        }
    }

    /// What the file holds, if it is there and readable (a bad file is
    /// logged and ignored).
    pub fn load(&self, path: &Path) -> Option<Saved> {
        let text = match std::fs::read(&self.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(%path, file = %self.file.display(), error = %e, "cannot read the breaker's saved state");
                return None;
            }
        };
        match serde_json::from_slice::<Saved>(&text) {
            Ok(s) if s.names == self.names => Some(s),
            Ok(_) => None,
            Err(e) => {
                warn!(%path, file = %self.file.display(), error = %e, "ignoring the breaker's saved state");
                None
            }
        }
    }

    /// Writes the state (then renames it into place); a failure is logged.
    pub fn save(&self, path: &Path, spec: BreakerSpec, state: Persisted) {
        let saved = Saved {
            names: self.names.clone(),
            spec,
            saved_at: wall_ms(),
            state,
        };
        let write = || -> std::io::Result<()> {
            let dir = self.file.parent().expect("a file in a folder");
            std::fs::create_dir_all(dir)?;
            let tmp = self.file.with_extension("json.tmp");
            let text = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &self.file)
        };
        if let Err(e) = write() {
            warn!(%path, file = %self.file.display(), error = %e, "cannot save the breaker's state");
        }
    }

    /// Removes the file (the breaker was scrubbed).
    pub fn remove(&self, path: &Path) {
        if let Err(e) = std::fs::remove_file(&self.file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(%path, file = %self.file.display(), error = %e, "cannot remove the breaker's saved state");
        }
    }
}

/// Every breaker file under `var`: (anchor names, what it holds). Bad files
/// are logged and skipped.
pub fn saved(var: &std::path::Path) -> Vec<Saved> {
    let Ok(entries) = std::fs::read_dir(var.join(DIR)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_slice::<Saved>(&t).map_err(|e| e.to_string()))
        {
            Ok(s) if file_name(&s.names) == e.file_name().to_string_lossy() => out.push(s),
            Ok(_) => warn!(file = %p.display(), "breaker file under another name than its anchor's: skipped"),
            Err(e) => warn!(file = %p.display(), error = %e, "unreadable breaker file: skipped"),
        }
    }
    out.sort_by(|a, b| a.names.cmp(&b.names));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_distinct() {
        let n = |v: &[&str]| file_name(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(n(&["b"]), "b.json");
        assert_eq!(n(&["a", "b"]), "a%2Fb.json");
        assert_ne!(n(&["a%2Fb"]), n(&["a", "b"]));
    }
}
