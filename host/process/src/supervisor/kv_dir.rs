//! The directory of the key-value file the workers share when the config names none.

use std::path::PathBuf;

use super::SupervisorError;

/// The directory holding the workers' shared key-value file when the config names none;
/// removed when the supervisor ends, so the store lives as long as the server, as the
/// in-memory store of a single process does.
pub(super) struct RuntimeDir(PathBuf);

impl RuntimeDir {
    pub(super) fn create(run_id: &str) -> Result<Self, SupervisorError> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!("pyhost-{}-{run_id}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&path)
            .map_err(|source| SupervisorError::RuntimeDir {
                path: path.clone(),
                source,
            })?;
        Ok(Self(path))
    }

    pub(super) fn kv_file(&self) -> PathBuf {
        self.0.join("kv.sqlite3")
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
