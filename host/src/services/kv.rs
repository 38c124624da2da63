//! The key-value store behind `host.kv`: one namespace per plugin, in memory or in SQLite.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// A failure of the store (SQLite errors); the message reaches the plugin.
#[derive(Debug, thiserror::Error)]
#[error("key-value store: {0}")]
pub(super) struct KvError(String);

/// How long a write waits for another connection's (another worker's) to finish.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// In-memory entries by (plugin index, key).
type MemoryMap = HashMap<(u32, Vec<u8>), Vec<u8>>;

/// Storage for the key-value service.
pub(super) enum KvStore {
    /// Lost when the process ends.
    Memory(Mutex<MemoryMap>),
    /// A SQLite database file; survives restarts.
    Sqlite(Mutex<rusqlite::Connection>),
}

impl KvStore {
    /// An in-memory store.
    pub(super) fn memory() -> Self {
        KvStore::Memory(Mutex::new(HashMap::new()))
    }

    /// Opens (or creates) a SQLite-backed store at `path`.
    ///
    /// Workers of one server open the file at the same moment. Switching a new file to WAL
    /// takes a lock SQLite does not wait for (its busy handler is skipped there to avoid a
    /// deadlock), so a set-up that finds the file busy is tried again, for as long as the busy
    /// timeout a write would wait.
    pub(super) fn open(path: &Path) -> Result<Self, KvError> {
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::try_open(path) {
                Err(rusqlite::Error::SqliteFailure(error, _))
                    if matches!(
                        error.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(error) => return Err(KvError(error.to_string())),
                Ok(connection) => return Ok(KvStore::Sqlite(Mutex::new(connection))),
            }
        }
    }

    fn try_open(path: &Path) -> Result<rusqlite::Connection, rusqlite::Error> {
        let connection = rusqlite::Connection::open(path)?;
        // Workers of one server share the file, one connection each; a write waits for
        // another's instead of failing with SQLITE_BUSY.
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.execute_batch(
            "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS kv (
                     plugin TEXT NOT NULL,
                     key BLOB NOT NULL,
                     value BLOB NOT NULL,
                     PRIMARY KEY (plugin, key)
                 ) WITHOUT ROWID;",
        )?;
        Ok(connection)
    }

    /// Reads `key` of plugin `plugin` (`namespace` is the plugin's name, used on disk so that
    /// reordering plugins in the config keeps their data).
    pub(super) fn get(
        &self,
        plugin: u32,
        namespace: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, KvError> {
        match self {
            KvStore::Memory(map) => Ok(lock(map).get(&(plugin, key.to_vec())).cloned()),
            KvStore::Sqlite(connection) => {
                let connection = lock(connection);
                let mut statement = connection
                    .prepare_cached("SELECT value FROM kv WHERE plugin = ?1 AND key = ?2")
                    .map_err(|e| KvError(e.to_string()))?;
                let mut rows = statement
                    .query(rusqlite::params![namespace, key])
                    .map_err(|e| KvError(e.to_string()))?;
                match rows.next().map_err(|e| KvError(e.to_string()))? {
                    Some(row) => Ok(Some(row.get(0).map_err(|e| KvError(e.to_string()))?)),
                    None => Ok(None),
                }
            }
        }
    }

    /// Writes `key` of plugin `plugin`.
    pub(super) fn set(
        &self,
        plugin: u32,
        namespace: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), KvError> {
        match self {
            KvStore::Memory(map) => {
                lock(map).insert((plugin, key.to_vec()), value.to_vec());
                Ok(())
            }
            KvStore::Sqlite(connection) => lock(connection)
                .prepare_cached(
                    "INSERT OR REPLACE INTO kv (plugin, key, value) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut statement| {
                    statement.execute(rusqlite::params![namespace, key, value])
                })
                .map(|_| ())
                .map_err(|e| KvError(e.to_string())),
        }
    }

    /// Deletes `key` of plugin `plugin` (absent keys are fine).
    pub(super) fn delete(&self, plugin: u32, namespace: &str, key: &[u8]) -> Result<(), KvError> {
        match self {
            KvStore::Memory(map) => {
                lock(map).remove(&(plugin, key.to_vec()));
                Ok(())
            }
            KvStore::Sqlite(connection) => lock(connection)
                .prepare_cached("DELETE FROM kv WHERE plugin = ?1 AND key = ?2")
                .and_then(|mut statement| statement.execute(rusqlite::params![namespace, key]))
                .map(|_| ())
                .map_err(|e| KvError(e.to_string())),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &KvStore) {
        assert_eq!(store.get(0, "app", b"k").unwrap(), None);
        store.set(0, "app", b"k", b"v1").unwrap();
        store.set(1, "other", b"k", b"v2").unwrap();
        assert_eq!(store.get(0, "app", b"k").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(store.get(1, "other", b"k").unwrap(), Some(b"v2".to_vec()));
        store.delete(0, "app", b"k").unwrap();
        assert_eq!(store.get(0, "app", b"k").unwrap(), None);
    }

    #[test]
    fn memory_store_namespaces_plugins() {
        exercise(&KvStore::memory());
    }

    #[test]
    fn connections_opening_a_new_file_at_once_all_succeed() {
        // As the workers of one server do at start: without retrying the set-up, one of
        // them failed with "database is locked" about once a run.
        for round in 0..20 {
            let dir = std::env::temp_dir().join(format!("pyhost-kv-race-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("kv-{round}.sqlite"));
            let _ = std::fs::remove_file(&path);
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        KvStore::open(&path).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().unwrap();
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn sqlite_store_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("pyhost-kv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kv.sqlite");
        let _ = std::fs::remove_file(&path);
        exercise(&KvStore::open(&path).unwrap());
        KvStore::open(&path)
            .unwrap()
            .set(0, "app", b"keep", b"yes")
            .unwrap();
        let reopened = KvStore::open(&path).unwrap();
        assert_eq!(
            reopened.get(0, "app", b"keep").unwrap(),
            Some(b"yes".to_vec())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
