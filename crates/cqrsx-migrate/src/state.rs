//! The state file: how far the copy got, so that a restart goes on from there.

use std::path::{Path, PathBuf};

use cqrsx_core::{Checkpoint, Error, Result};
use serde::{Deserialize, Serialize};

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    /// The file format.
    pub format: u32,
    /// The next source position to copy, per source partition.
    pub next: Vec<u64>,
    /// Events copied so far (a page copied again after a restart counts again).
    pub events_copied: u64,
}

const FORMAT: u32 = 1;

impl State {
    /// A copy that has not started, over `partitions` source partitions.
    pub fn fresh(partitions: u32) -> Self {
        Self {
            format: FORMAT,
            next: vec![1; partitions.max(1) as usize],
            events_copied: 0,
        }
    }

    /// The source checkpoint reached.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        Checkpoint::from_offsets(self.next.iter().copied())
    }

    /// Reads the state file; `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path, e)),
        };
        let state: State = serde_json::from_slice(&bytes)
            .map_err(|e| Error::serialization(format!("migration state file {}", path.display()), e))?;
        if state.format != FORMAT || state.next.is_empty() || state.next.contains(&0) {
            return Err(Error::InvalidInput(format!(
                "{} is not a migration state file of format {FORMAT}",
                path.display()
            )));
        }
        Ok(Some(state))
    }

    /// Writes the state file whole: a temporary file synced, then renamed over it.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let bytes = serde_json::to_vec(self).map_err(|e| Error::serialization("migration state", e))?;
        let tmp = tmp_path(path);
        let mut file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        file.write_all(&bytes).map_err(|e| io(&tmp, e))?;
        file.sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Config(format!("migration state file {}: {e}", path.display()))
}
