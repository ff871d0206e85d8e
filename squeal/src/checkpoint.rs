//! The checkpoint: the binlog position up to which Kafka acknowledged every record.
//!
//! Saved atomically: write a temporary file beside the target, fsync it, rename it over the
//! target, fsync the directory. A crash leaves either the old or the new checkpoint, never a torn
//! one. Loading a file that is not a checkpoint is an error (never "start from scratch").
//!
//! One squeal per checkpoint: [`CheckpointLock`] holds an exclusive `flock` on a lock file beside
//! it for the life of the process, so a second squeal started on the same checkpoint stops at once
//! instead of interleaving its positions with the first's. The lock does not cover checkpoints on
//! file systems without `flock` (some network file systems accept it without enforcing it).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

/// Checkpoint file format version.
pub const CHECKPOINT_VERSION: u32 = 1;

/// A resumable position: the start of the first transaction not yet fully acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Binlog file name.
    pub file: String,
    /// Byte offset in `file` where reading resumes (a transaction boundary).
    pub pos: u64,
    /// GTID of the last acknowledged transaction, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// MariaDB: the GTID state at this position (`domain-server-seq` per domain, comma-separated),
    /// used to resume by GTID (`source.resume = "gtid"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_state: Option<String>,
    /// MySQL: the GTID set executed up to this position, in MySQL's text form
    /// (`uuid:1-5:7-9,uuid2:1-3`), used to resume by GTID (`source.resume = "gtid"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_set: Option<String>,
    /// Which server created `file`, and when, when known: a file of that name created at another
    /// time is a new file (RESET MASTER, a restored server) in which `pos` means nothing, and
    /// resuming there is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_created: Option<FileCreated>,
}

/// Who created a binlog file and when: the server id and the timestamp in the header of the
/// file's FORMAT_DESCRIPTION event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCreated {
    /// `server_id` of the server that wrote the file (a replica writes its own files).
    pub server_id: u32,
    /// Unix time of the file's creation.
    pub at: u32,
}

impl Position {
    /// `pos` in `file`, with nothing else known (no GTIDs, no file date).
    pub fn at(file: impl Into<String>, pos: u64) -> Position {
        Position {
            file: file.into(),
            pos,
            gtid: None,
            gtid_state: None,
            gtid_set: None,
            file_created: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    #[serde(flatten)]
    position: Position,
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The checkpoint path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process holds the checkpoint's lock.
    #[error("checkpoint {path} is in use by another squeal{holder} (lock {lock}); stop it first, or give this one its own checkpoint.path")]
    InUse {
        /// The checkpoint path.
        path: PathBuf,
        /// The lock file beside it.
        lock: PathBuf,
        /// `" (pid N)"` when the holder wrote its pid into the lock file, else empty.
        holder: String,
    },
    /// The file exists but is not a checkpoint squeal can read.
    #[error("checkpoint {path} is unreadable ({reason}); fix or remove it deliberately (see README, Operations)")]
    Corrupt {
        /// The checkpoint path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An exclusive lock on a checkpoint, held until dropped (or the process ends, even by SIGKILL:
/// the kernel releases a `flock` with the last descriptor, so a crash leaves no stale lock).
///
/// The lock is on `<checkpoint>.lock`, not on the checkpoint itself, because [`save`] replaces the
/// checkpoint by renaming a new file over it, and a lock on the old file would not cover the new one.
#[derive(Debug)]
pub struct CheckpointLock {
    /// Held open for the lock's life: closing it releases the lock.
    _file: File,
}

impl CheckpointLock {
    /// Takes the lock on `checkpoint`'s lock file without waiting; [`CheckpointError::InUse`] if
    /// another process (or another open of it in this one) holds it.
    pub fn acquire(checkpoint: &Path) -> Result<CheckpointLock, CheckpointError> {
        let mut name = checkpoint.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        let io_err = |source| CheckpointError::Io {
            path: lock.clone(),
            source,
        };
        // Not truncated on open: the holder's pid stays readable for the refusal's message.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io_err)?;
        match try_flock_exclusive(&file) {
            Ok(true) => {}
            Ok(false) => {
                let holder = fs::read_to_string(&lock)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(CheckpointError::InUse {
                    path: checkpoint.to_owned(),
                    lock,
                    holder,
                });
            }
            Err(e) => return Err(io_err(e)),
        }
        // Who holds it, for the message a second squeal prints; the lock works without it.
        file.set_len(0).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(CheckpointLock { _file: file })
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file description holds a lock on it.
/// (`File::try_lock` does the same from Rust 1.89, above the workspace's rust-version.)
fn try_flock_exclusive(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `file` owns and keeps open for the call; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Loads the checkpoint; `Ok(None)` when the file does not exist.
pub fn load(path: &Path) -> Result<Option<Position>, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let file: CheckpointFile =
        serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if file.version != CHECKPOINT_VERSION {
        return Err(CheckpointError::Corrupt {
            path: path.to_owned(),
            reason: format!(
                "version {} (this squeal reads {CHECKPOINT_VERSION})",
                file.version
            ),
        });
    }
    Ok(Some(file.position))
}

/// Saves the checkpoint atomically and durably.
pub fn save(path: &Path, position: &Position) -> Result<(), CheckpointError> {
    let io_err = |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io_err(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let tmp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let body = serde_json::to_vec_pretty(&CheckpointFile {
        version: CHECKPOINT_VERSION,
        position: position.clone(),
    })
    .expect("checkpoint serializes");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err)?;
        f.write_all(&body).map_err(io_err)?;
        f.write_all(b"\n").map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
    }
    fs::rename(&tmp, path).map_err(io_err)?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err)?;
    Ok(())
}

/// Writes checkpoints on a thread of its own, so that fsync never stalls the async runtime.
///
/// It always writes the newest position handed to it (older pending ones are superseded: positions
/// only move forward). [`CheckpointWriter::finish`] writes what is pending and reports any error.
pub struct CheckpointWriter {
    shared: Arc<(Mutex<WriterState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

#[derive(Default)]
struct WriterState {
    /// The newest position not yet written.
    pending: Option<Position>,
    /// No more positions will come.
    closed: bool,
    /// The first write error; the writer stops at it.
    error: Option<String>,
}

impl CheckpointWriter {
    /// Starts the writer thread; `on_written` runs after each durable write (metrics).
    pub fn spawn(
        path: PathBuf,
        on_written: impl Fn(&Position) + Send + 'static,
    ) -> CheckpointWriter {
        let shared: Arc<(Mutex<WriterState>, Condvar)> = Arc::default();
        let thread_shared = shared.clone();
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("squeal-checkpoint".into())
            .spawn(move || {
                let (lock, ready) = &*thread_shared;
                loop {
                    let next = {
                        let mut state = lock.lock().expect("checkpoint lock");
                        while state.pending.is_none() && !state.closed {
                            state = ready.wait(state).expect("checkpoint lock");
                        }
                        match state.pending.take() {
                            Some(p) => p,
                            None => return, // closed and drained
                        }
                    };
                    match save(&thread_path, &next) {
                        Ok(()) => on_written(&next),
                        Err(e) => {
                            // Said now, though squeal stops only at its next submit: an idle
                            // squeal would otherwise keep it to itself until the next commit.
                            tracing::error!(error = %e, "checkpoint not written; squeal stops at the next transaction");
                            // The path is added back when the error is reported (`error`).
                            let reason = match e {
                                CheckpointError::Io { source, .. } => source.to_string(),
                                other => other.to_string(),
                            };
                            lock.lock().expect("checkpoint lock").error = Some(reason);
                            return;
                        }
                    }
                }
            })
            .expect("spawn the checkpoint thread");
        CheckpointWriter {
            shared,
            thread: Some(thread),
            path,
        }
    }

    fn error(&self, message: String) -> CheckpointError {
        CheckpointError::Io {
            path: self.path.clone(),
            source: io::Error::other(message),
        }
    }

    /// Hands over a position to write; fails if an earlier write failed.
    pub fn submit(&self, position: Position) -> Result<(), CheckpointError> {
        let (lock, ready) = &*self.shared;
        let mut state = lock.lock().expect("checkpoint lock");
        if let Some(e) = &state.error {
            return Err(self.error(e.clone()));
        }
        state.pending = Some(position);
        ready.notify_one();
        Ok(())
    }

    /// Writes what is pending, stops the thread, and reports the first error.
    pub fn finish(mut self) -> Result<(), CheckpointError> {
        {
            let (lock, ready) = &*self.shared;
            lock.lock().expect("checkpoint lock").closed = true;
            ready.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let state = self.shared.0.lock().expect("checkpoint lock");
        match &state.error {
            Some(e) => Err(self.error(e.clone())),
            None => Ok(()),
        }
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        let (lock, ready) = &*self.shared;
        if let Ok(mut state) = lock.lock() {
            state.closed = true;
        }
        ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_checkpoint_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let first = CheckpointLock::acquire(&path).unwrap();
        match CheckpointLock::acquire(&path) {
            Err(e @ CheckpointError::InUse { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("(pid {})", std::process::id())),
                    "the message names the holder: {text}"
                );
                assert!(text.contains("cp.json.lock"), "{text}");
            }
            other => panic!("a second lock while the first is held: {other:?}"),
        }
        // Another checkpoint in the same directory is not affected.
        let _other = CheckpointLock::acquire(&dir.path().join("other.json")).unwrap();
        drop(first);
        CheckpointLock::acquire(&path).expect("free again once the holder is gone");
    }

    #[test]
    fn save_then_load_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        assert_eq!(load(&path).unwrap(), None);
        let a = Position::at("b.000001", 4);
        save(&path, &a).unwrap();
        assert_eq!(load(&path).unwrap(), Some(a));
        let b = Position {
            file: "b.000002".into(),
            pos: 1234,
            gtid: Some("0-1-9".into()),
            gtid_state: Some("0-1-9,1-2-3".into()),
            gtid_set: Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9".into()),
            file_created: Some(FileCreated {
                server_id: 1,
                at: 1_764_489_600,
            }),
        };
        save(&path, &b).unwrap();
        assert_eq!(load(&path).unwrap(), Some(b));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn writer_thread_writes_the_newest_position_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let written = Arc::new(Mutex::new(Vec::new()));
        let seen = written.clone();
        let writer =
            CheckpointWriter::spawn(path.clone(), move |p| seen.lock().unwrap().push(p.pos));
        for pos in 4..200 {
            writer.submit(Position::at("b.000001", pos)).unwrap();
        }
        writer.finish().unwrap();
        assert_eq!(
            load(&path).unwrap().unwrap().pos,
            199,
            "the newest position is durable after finish"
        );
        let order = written.lock().unwrap().clone();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "never goes backwards: {order:?}"
        );
        let bad = CheckpointWriter::spawn(dir.path().join("missing-dir").join("cp.json"), |_| {});
        let p = Position::at("b", 4);
        bad.submit(p.clone()).unwrap();
        let reported = bad
            .finish()
            .expect_err("a failed write is reported, not swallowed");
        let text = reported.to_string();
        assert_eq!(
            text.matches("missing-dir").count(),
            1,
            "the path is said once: {text}"
        );
    }

    #[test]
    fn garbage_or_future_version_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        fs::write(&path, b"{\"file\":").unwrap();
        assert!(matches!(load(&path), Err(CheckpointError::Corrupt { .. })));
        fs::write(&path, br#"{"version":9,"file":"x","pos":4}"#).unwrap();
        assert!(matches!(load(&path), Err(CheckpointError::Corrupt { .. })));
    }
}
