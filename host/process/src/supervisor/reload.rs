//! `serve --reload`: watch the config file and the handler packages' directories, and ask for
//! a rolling restart when a source file changes (debounced, so an editor's save of several
//! files is one restart).
//!
//! Only what a worker reads at start counts: Python sources and data files. Bytecode caches,
//! the SQLite store and its journals, and hidden directories (`.git`, `.venv`) change as the
//! server runs, and would restart it in a loop.

use std::path::Path;
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc::UnboundedSender;

use pyhost_core::config::Config;

/// How long the tree must stay quiet before a change counts.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The running watcher; dropping it stops watching.
pub(crate) struct Watcher {
    _debouncer: Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
}

/// Watches what `config` loads; sends the first changed path of each burst on `changes`.
pub(crate) fn watch(
    config: &Config,
    changes: UnboundedSender<String>,
) -> Result<Watcher, notify_debouncer_mini::notify::Error> {
    let kv = config.kv_path.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        if let Some(event) = events
            .iter()
            .find(|event| counts(&event.path, kv.as_deref()))
        {
            let _ = changes.send(event.path.display().to_string());
        }
    })?;
    let watcher = debouncer.watcher();
    let mut dirs: Vec<&Path> = config
        .plugins
        .iter()
        .flat_map(|plugin| plugin.paths.iter().map(AsRef::as_ref))
        .collect();
    if let Some(dir) = config.source.parent() {
        dirs.push(dir);
    }
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::Recursive)?;
    }
    Ok(Watcher {
        _debouncer: debouncer,
    })
}

/// Whether a change to `path` means the workers should restart.
fn counts(path: &Path, kv: Option<&Path>) -> bool {
    if kv.is_some_and(|kv| {
        path.starts_with(kv) || path.to_string_lossy().starts_with(&*kv.to_string_lossy())
    }) {
        return false;
    }
    if path.components().any(|part| {
        let part = part.as_os_str().to_string_lossy();
        part == "__pycache__" || (part.starts_with('.') && part.len() > 1 && part != "..")
    }) {
        return false;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let ignored_suffixes = [
        ".pyc", ".pyo", ".swp", ".swx", "~", ".tmp", "-wal", "-shm", "-journal", ".sqlite3",
        ".sqlite", ".db",
    ];
    !ignored_suffixes.iter().any(|suffix| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_count_and_runtime_files_do_not() {
        let kv = Path::new("/srv/app/data/kv.sqlite3");
        assert!(counts(Path::new("/srv/app/handlers.py"), Some(kv)));
        assert!(counts(Path::new("/srv/app/pyhost.toml"), Some(kv)));
        assert!(counts(Path::new("/srv/app/templates/page.html"), Some(kv)));
        assert!(!counts(
            Path::new("/srv/app/__pycache__/handlers.cpython-311.pyc"),
            Some(kv)
        ));
        assert!(!counts(Path::new("/srv/app/data/kv.sqlite3-wal"), Some(kv)));
        assert!(!counts(Path::new("/srv/app/.git/index"), Some(kv)));
        assert!(!counts(Path::new("/srv/app/.handlers.py.swp"), Some(kv)));
    }
}
