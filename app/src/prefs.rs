//! UI state that survives a restart, in `<data dir>/app.json`: the display name chosen at first
//! run, the selected conversation, unsent drafts, the theme. Chat history is not here: it comes
//! from the node's store. Written atomically (a temporary file renamed over the old one). The
//! window's size and position and the panels' sizes are kept by eframe in `<data dir>/window`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Drafts kept at most (one per conversation), each at most this many bytes.
const MAX_DRAFTS: usize = 200;
const MAX_DRAFT_BYTES: usize = 64 * 1024;

/// The persisted UI state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prefs {
    /// The display name picked at first run.
    pub name: Option<String>,
    /// The conversation open when the app closed (its address).
    pub selected: Option<String>,
    /// Unsent text per conversation address.
    pub drafts: BTreeMap<String, String>,
    /// Light theme instead of dark.
    pub light: bool,
}

impl Prefs {
    /// The file in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("app.json")
    }

    /// Reads them; defaults when the file is missing or unreadable (logged).
    pub fn load(data_dir: &Path) -> Self {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring {}: {e}", path.display());
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    /// Writes them (bounded: drafts beyond the limits are dropped).
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let mut bounded = self.clone();
        bounded
            .drafts
            .retain(|_, d| !d.is_empty() && d.len() <= MAX_DRAFT_BYTES);
        while bounded.drafts.len() > MAX_DRAFTS {
            let first = bounded.drafts.keys().next().cloned().unwrap_or_default();
            bounded.drafts.remove(&first);
        }
        std::fs::create_dir_all(data_dir)?;
        let path = Self::path(data_dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&bounded)?)?;
        std::fs::rename(&tmp, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefs_round_trip_and_survive_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Prefs::load(dir.path()), Prefs::default());
        let mut prefs = Prefs {
            name: Some("ann".into()),
            selected: Some("user:ben".into()),
            ..Prefs::default()
        };
        prefs
            .drafts
            .insert("user:ben".into(), "half a thought".into());
        prefs.drafts.insert("user:cal".into(), String::new());
        prefs.save(dir.path()).unwrap();
        let back = Prefs::load(dir.path());
        assert_eq!(back.name.as_deref(), Some("ann"));
        assert_eq!(back.drafts.len(), 1, "empty drafts are not kept");
        std::fs::write(Prefs::path(dir.path()), b"{not json").unwrap();
        assert_eq!(Prefs::load(dir.path()), Prefs::default());
    }
}
