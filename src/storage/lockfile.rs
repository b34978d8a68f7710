//! The lock file beside a SQLite database (`<database>.lock`): while a store has the file
//! open, its process alone uses it (what `Lease::always` and the resource cache rely on).

use std::path::Path;

use crate::error::{Error, Result};

/// How long an open waits for another store of the same file to let it go (a store of
/// this process being dropped, a process ending).
const OWNER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Take the lock that says this process alone uses the database at `path`; an error naming
/// the lock file when another process (or another open store) holds it.
pub(super) fn own(path: &Path) -> Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock).map_err(|error| {
        Error::internal(format!(
            "the database {} (database.path) cannot be locked: {}: {error}",
            path.display(),
            lock.display()
        ))
    })?;
    let deadline = std::time::Instant::now() + OWNER_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::internal(format!(
                    "the database {} (database.path) is in use by another CSE process (it holds {}); \
                     one process per database file",
                    path.display(),
                    lock.display()
                )));
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(Error::internal(format!(
                    "the database {} (database.path) cannot be locked: {}: {error}",
                    path.display(),
                    lock.display()
                )));
            }
        }
    }
}
