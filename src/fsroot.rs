//! The confined file system of the `files` service: a client path is checked lexically, then
//! resolved by the kernel with `openat2(RESOLVE_BENEATH)` from the root's descriptor, so neither
//! `..` nor a symbolic link reaches outside the served directory; uploads go to a hidden partial
//! file that one `rename` publishes (the client's [`LocalUpload`] shares that last part, and never
//! replaces anything but a writable regular file).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, FlockOperation, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// The longest client path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// The longest file name the kernel accepts, in bytes.
const MAX_NAME_LEN: usize = 255;

/// What `.NAME.sockit-part` adds to `NAME`.
const PARTIAL_PREFIX: &str = ".";
const PARTIAL_SUFFIX: &str = ".sockit-part";

/// How often `openat2` is asked again when it answers `EAGAIN` (a concurrent rename or mount
/// might have let resolution escape; the man page says to retry).
const EAGAIN_RETRIES: usize = 8;

/// How often `begin_put` reopens a partial file that was renamed or removed under it before it
/// got the lock; past this, another upload is clearly active and the answer is `Busy`.
const LOCK_RETRIES: usize = 4;

/// Whether `name` is the hidden partial file of an upload, `.NAME.sockit-part` with a non-empty
/// `NAME`. Such names are never listed and clients can never name them.
pub fn is_partial_name(name: &str) -> bool {
    name.strip_prefix(PARTIAL_PREFIX).and_then(|rest| rest.strip_suffix(PARTIAL_SUFFIX)).is_some_and(|n| !n.is_empty())
}

/// An error of the confined file system, with a one-line message naming the path.
///
/// Each variant has a stable code for the wire ([`FsError::code`]); a message received from a
/// peer comes back as [`FsError::Remote`] through [`FsError::from_code`]. Code 0 is never used.
///
/// | code | variant              |
/// |------|----------------------|
/// | 1    | `BadPath`            |
/// | 2    | `Outside`            |
/// | 3    | `NotFound`           |
/// | 4    | `NotADirectory`      |
/// | 5    | `IsADirectory`       |
/// | 6    | `NotAFile`           |
/// | 7    | `PermissionDenied`   |
/// | 8    | `DiskFull`           |
/// | 9    | `Busy`               |
/// | 10   | `Unsupported`        |
/// | 11   | `Io`                 |
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The path was refused before any system call: empty, absolute, with `..`, a NUL byte, a
    /// backslash, a partial file's name, or too long.
    #[error("bad path {path:?}: {reason}")]
    BadPath {
        /// The path as the client wrote it (shortened when very long).
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Resolving the path would leave the root (a symbolic link points out of it) or loops.
    #[error("{path:?} leads outside the served directory (through a symbolic link) or loops")]
    Outside {
        /// The path.
        path: String,
    },
    /// Nothing exists under that name.
    #[error("{path:?}: no such file or directory")]
    NotFound {
        /// The path.
        path: String,
    },
    /// A directory was needed.
    #[error("{path:?}: not a directory")]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// A file was needed and the name is a directory.
    #[error("{path:?} is a directory")]
    IsADirectory {
        /// The path.
        path: String,
    },
    /// The name is a device, FIFO, socket or other special file.
    #[error("{path:?} is not a regular file")]
    NotAFile {
        /// The path.
        path: String,
    },
    /// The file modes forbid it.
    #[error("{path:?}: permission denied")]
    PermissionDenied {
        /// The path.
        path: String,
    },
    /// No space left on the device, or the disk quota is exhausted.
    #[error("{path:?}: no space left (disk full or quota exceeded)")]
    DiskFull {
        /// The path.
        path: String,
    },
    /// Another upload to the same name is in progress.
    #[error("{path:?} is being written by another upload")]
    Busy {
        /// The path.
        path: String,
    },
    /// The kernel has no `openat2` (Linux before 5.6): confinement cannot be enforced, so nothing
    /// is served rather than falling back to unconfined opens.
    #[error("{path:?}: cannot confine file access: the kernel lacks openat2 (Linux 5.6 or later is needed)")]
    Unsupported {
        /// The path.
        path: String,
    },
    /// Any other failure of the operating system.
    #[error("{path:?}: {error}")]
    Io {
        /// The path.
        path: String,
        /// The operating system's error (shown in the message, so not a `source`).
        error: io::Error,
    },
    /// An error a peer reported over the wire: its code and message, as received (shown with
    /// control characters escaped).
    #[error("{}", crate::render::printable(message))]
    Remote {
        /// The peer's code (see the table above; unknown codes are kept as they are).
        code: u8,
        /// The peer's message.
        message: String,
    },
}

impl FsError {
    /// The stable wire code of this error (see the table on [`FsError`]); never 0.
    pub fn code(&self) -> u8 {
        match self {
            FsError::BadPath { .. } => 1,
            FsError::Outside { .. } => 2,
            FsError::NotFound { .. } => 3,
            FsError::NotADirectory { .. } => 4,
            FsError::IsADirectory { .. } => 5,
            FsError::NotAFile { .. } => 6,
            FsError::PermissionDenied { .. } => 7,
            FsError::DiskFull { .. } => 8,
            FsError::Busy { .. } => 9,
            FsError::Unsupported { .. } => 10,
            FsError::Io { .. } => 11,
            FsError::Remote { code, .. } => *code,
        }
    }

    /// The error a peer sent as `code` and `message`: a [`FsError::Remote`] whose `code()` is
    /// `code` and whose message is `message`, so it can be matched on and forwarded unchanged.
    pub fn from_code(code: u8, message: String) -> FsError {
        FsError::Remote { code, message }
    }

    /// Classifies an I/O error on `path`, for callers that write an upload's data: `ENOSPC`
    /// becomes [`FsError::DiskFull`], `EACCES` [`FsError::PermissionDenied`], and so on; errors
    /// without a variant become [`FsError::Io`].
    pub fn from_io(path: &str, error: io::Error) -> FsError {
        let path = path.to_owned();
        match error.raw_os_error() {
            Some(libc::ENOENT) => FsError::NotFound { path },
            Some(libc::ENOTDIR) => FsError::NotADirectory { path },
            Some(libc::EISDIR) => FsError::IsADirectory { path },
            Some(libc::ENXIO) => FsError::NotAFile { path },
            Some(libc::EACCES | libc::EPERM) => FsError::PermissionDenied { path },
            Some(libc::ENOSPC | libc::EDQUOT) => FsError::DiskFull { path },
            Some(libc::EXDEV | libc::ELOOP) => FsError::Outside { path },
            Some(libc::ENAMETOOLONG) => FsError::BadPath { path, reason: "a name in it is too long" },
            _ => FsError::Io { path, error },
        }
    }

    fn from_errno(path: &str, errno: Errno) -> FsError {
        FsError::from_io(path, errno.into())
    }

    /// Classifies an error of an unconfined open (the root itself, the client's local side),
    /// where `ELOOP` means a symbolic link loop and no root can be left.
    fn from_local_errno(path: &str, errno: Errno) -> FsError {
        match errno {
            Errno::LOOP | Errno::XDEV => FsError::Io { path: path.to_owned(), error: errno.into() },
            _ => FsError::from_errno(path, errno),
        }
    }

    /// The path the error is about; `None` for a peer's error, whose path is in its message.
    pub fn path(&self) -> Option<&str> {
        match self {
            FsError::BadPath { path, .. }
            | FsError::Outside { path }
            | FsError::NotFound { path }
            | FsError::NotADirectory { path }
            | FsError::IsADirectory { path }
            | FsError::NotAFile { path }
            | FsError::PermissionDenied { path }
            | FsError::DiskFull { path }
            | FsError::Busy { path }
            | FsError::Unsupported { path }
            | FsError::Io { path, .. } => Some(path),
            FsError::Remote { .. } => None,
        }
    }

    /// The message without the path, for a caller that names the path itself.
    pub fn reason(&self) -> String {
        match self {
            FsError::BadPath { reason, .. } => format!("bad path: {reason}"),
            FsError::Outside { .. } => "it leads outside the served directory or loops".to_owned(),
            FsError::NotFound { .. } => "no such file or directory".to_owned(),
            FsError::NotADirectory { .. } => "not a directory".to_owned(),
            FsError::IsADirectory { .. } => "it is a directory".to_owned(),
            FsError::NotAFile { .. } => "it is not a regular file".to_owned(),
            FsError::PermissionDenied { .. } => "permission denied".to_owned(),
            FsError::DiskFull { .. } => "no space left (disk full or quota exceeded)".to_owned(),
            FsError::Busy { .. } => "it is being written by another transfer".to_owned(),
            FsError::Unsupported { .. } => "the kernel lacks openat2 (Linux 5.6 or later is needed)".to_owned(),
            FsError::Io { error, .. } => error.to_string(),
            FsError::Remote { message, .. } => message.clone(),
        }
    }
}

/// Whether a local file was to be read (the source of a put) or written (the target of a get).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The file was to be read.
    Read,
    /// The file was to be written.
    Write,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// A local file the client cannot use: the one `put` reads or `get` writes. The message starts
/// with "cannot read PATH" or "cannot write PATH", so that it is never taken for the server's.
#[derive(Debug)]
pub struct LocalError {
    /// What was to be done with the file.
    pub access: Access,
    /// The path as the user gave it.
    pub path: String,
    /// What is wrong.
    pub problem: Problem,
}

impl LocalError {
    /// A failure to write `path`.
    pub fn write(path: &str, problem: Problem) -> LocalError {
        LocalError { access: Access::Write, path: path.to_owned(), problem }
    }

    /// A failure to read `path`.
    pub fn read(path: &str, problem: Problem) -> LocalError {
        LocalError { access: Access::Read, path: path.to_owned(), problem }
    }
}

impl std::fmt::Display for LocalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot {} {}: ", self.access, self.path)?;
        match &self.problem {
            // The path is already named; an error about another one (a partial file) names it.
            Problem::Fs(e) if e.path() == Some(self.path.as_str()) => f.write_str(&e.reason()),
            other => write!(f, "{other}"),
        }
    }
}

impl std::error::Error for LocalError {}

/// What is wrong with a local file (see [`LocalError`]).
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The directory the file would be written in does not exist (or a component of its path
    /// is not a directory).
    #[error("no such directory")]
    NoDirectory,
    /// The name is a FIFO, socket or device: reading or writing it would not move a file, and
    /// replacing it would destroy it.
    #[error("it is {0}, not a regular file")]
    NotAFile(&'static str),
    /// The name is a symbolic link to nothing.
    #[error("it is a symbolic link to {0}, which does not exist")]
    Dangling(String),
    /// The name is a symbolic link that loops.
    #[error("it is a symbolic link that loops")]
    Loop,
    /// The name is a symbolic link to a FIFO, socket or device.
    #[error("it is a symbolic link to {target}, which is {kind}, not a regular file")]
    LinkToSpecial {
        /// Where the link leads.
        target: String,
        /// What is there ("a FIFO").
        kind: &'static str,
    },
    /// The file exists and its mode has no write bit: someone meant it not to change.
    #[error("it is read-only; remove it or choose another name")]
    ReadOnly,
    /// A kernel file (procfs, sysfs) that reads as more than [`crate::files::KERNEL_FILE_MAX`]:
    /// its size is not known until it is read, and it is read whole before it is sent.
    #[error("it is a kernel file larger than 64 MiB; copy it to a regular file and send that")]
    KernelFileTooBig,
    /// A kernel file that waits for the kernel to say more (`/proc/kmsg`): it has no end.
    #[error("it is a kernel file that waits for more to read, so it has no end to send")]
    KernelFileWaits,
    /// Any other file-system error.
    #[error("{0}")]
    Fs(FsError),
}

/// "a FIFO", "a socket"…: what a file of that type is called in a message.
pub fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "a special file",
    }
}

/// [`kind_name`] of the file `meta` describes.
pub fn kind_name_of(meta: &std::fs::Metadata) -> &'static str {
    kind_name(FileType::from_raw_mode(std::os::unix::fs::MetadataExt::mode(meta)))
}

/// The root directory of a `files` service; every path it is given resolves beneath it.
#[derive(Debug)]
pub struct Root {
    /// `O_PATH | O_DIRECTORY | O_CLOEXEC`: it stays on the same directory even if the directory
    /// is renamed, and it is what `openat2` resolves beneath.
    fd: OwnedFd,
    path: PathBuf,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name, with invalid UTF-8 replaced by U+FFFD.
    pub name: String,
    /// What the entry is (a symbolic link is reported as such, not followed).
    pub kind: EntryKind,
    /// The size in bytes of a regular file; 0 for every other kind.
    pub size: u64,
    /// The last modification, in seconds since the Unix epoch.
    pub mtime: i64,
}

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO, socket or anything else.
    Other,
}

impl Root {
    /// Opens the existing directory `path` as a root. Fails with [`FsError::Unsupported`] at once
    /// when the kernel lacks `openat2`, rather than at the first request.
    pub fn open(path: &Path) -> Result<Root, FsError> {
        let shown = path.display().to_string();
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| FsError::from_local_errno(&shown, e))?;
        open_beneath(fd.as_fd(), ".", OFlags::PATH | OFlags::DIRECTORY, &shown)?;
        Ok(Root { fd, path: path.to_owned() })
    }

    /// The root's path as it was given to [`Root::open`], for display.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a regular file for reading. Returns the file and its length.
    ///
    /// A FIFO, device or socket is refused with [`FsError::NotAFile`] without blocking, a
    /// directory with [`FsError::IsADirectory`].
    pub fn open_read(&self, rel: &str) -> Result<(File, u64), FsError> {
        let path = check(rel, Purpose::Read)?.join("/");
        // O_NONBLOCK so that opening a FIFO does not wait for a writer; it is cleared once fstat
        // has shown a regular file.
        let flags = OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = open_beneath(self.fd.as_fd(), &path, flags, &path)?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| FsError::from_errno(&path, e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Err(FsError::IsADirectory { path }),
            _ => return Err(FsError::NotAFile { path }),
        }
        clear_nonblock(&fd).map_err(|e| FsError::from_errno(&path, e))?;
        Ok((File::from(fd), file_size(&stat)))
    }

    /// Lists a directory ("" or "." is the root). Sorted by name. Hides sockit's partial files.
    ///
    /// Entries removed while the listing is made are left out.
    pub fn list(&self, rel: &str) -> Result<Vec<Entry>, FsError> {
        let path = joined(&check(rel, Purpose::List)?);
        let fd = open_beneath(self.fd.as_fd(), &path, OFlags::RDONLY | OFlags::DIRECTORY, &path)?;
        let dir = Dir::read_from(&fd).map_err(|e| FsError::from_errno(&path, e))?;
        let mut entries = Vec::new();
        for item in dir {
            let item = item.map_err(|e| FsError::from_errno(&path, e))?;
            let raw = item.file_name();
            if matches!(raw.to_bytes(), b"." | b"..") {
                continue;
            }
            let name = String::from_utf8_lossy(raw.to_bytes()).into_owned();
            if is_partial_name(&name) {
                continue;
            }
            let stat = match rustix::fs::statat(&fd, raw, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Removed between readdir and stat: it no longer exists, so it is not listed.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(FsError::from_errno(&joined(&[&path, &name]), e)),
            };
            let kind = match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => EntryKind::File,
                FileType::Directory => EntryKind::Dir,
                FileType::Symlink => EntryKind::Symlink,
                _ => EntryKind::Other,
            };
            let size = if kind == EntryKind::File { file_size(&stat) } else { 0 };
            entries.push(Entry { name, kind, size, mtime: stat.st_mtime as i64 });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Starts writing `rel`: see [`Upload`]. The parent directory must exist (none is created);
    /// with `resume`, data already in a partial file from an earlier upload is kept.
    pub fn begin_put(&self, rel: &str, resume: bool) -> Result<Upload, FsError> {
        let parts = check(rel, Purpose::Put)?;
        let (name, parent) = parts.split_last().expect("check(Purpose::Put) leaves a file name");
        let parent_path = joined(parent);
        let dir = open_beneath(self.fd.as_fd(), &parent_path, OFlags::PATH | OFlags::DIRECTORY, &parent_path)?;
        Upload::begin(dir, OsStr::new(name), parts.join("/"), resume)
    }
}

/// A file being written: data goes to a hidden partial file `.NAME.sockit-part` in the target's
/// own directory, which is published atomically under NAME at the end.
///
/// The partial file is locked (`flock`) while an `Upload` exists, so a second upload of the same
/// name is refused with [`FsError::Busy`]. Dropping an `Upload` is [`Upload::keep`].
#[derive(Debug)]
pub struct Upload {
    /// The partial file, open for writing and locked.
    file: File,
    /// The target's directory (`O_PATH`): the partial and the target are named relative to it.
    dir: OwnedFd,
    name: OsString,
    /// `name` for display.
    name_text: String,
    partial: OsString,
    /// The target's path for messages.
    shown: String,
    existing: u64,
}

impl Upload {
    /// The part shared by [`Root::begin_put`] and [`LocalUpload::begin`]: `dir` is the target's
    /// directory, already resolved.
    fn begin(dir: OwnedFd, name: &OsStr, shown: String, resume: bool) -> Result<Upload, FsError> {
        if name.len() + PARTIAL_PREFIX.len() + PARTIAL_SUFFIX.len() > MAX_NAME_LEN {
            return Err(FsError::BadPath { path: shorten(&shown), reason: NAME_TOO_LONG });
        }
        // Refused now, before any data moves, rather than at the rename at the very end.
        only_a_file_in_place(dir.as_fd(), name, &shown)?;
        let mut partial = OsString::from(PARTIAL_PREFIX);
        partial.push(name);
        partial.push(PARTIAL_SUFFIX);
        let mut file = lock_partial(dir.as_fd(), &partial, &shown)?;
        if !resume {
            file.set_len(0).map_err(|e| FsError::from_io(&shown, e))?;
        }
        let existing = file.metadata().map_err(|e| FsError::from_io(&shown, e))?.len();
        file.seek(SeekFrom::Start(existing)).map_err(|e| FsError::from_io(&shown, e))?;
        let name_text = name.to_string_lossy().into_owned();
        Ok(Upload { file, dir, name: name.to_owned(), name_text, partial, shown, existing })
    }

    /// The partial file, positioned at the end of the existing data.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The bytes already in the partial file: 0 unless `resume` found an earlier partial (or
    /// after [`Upload::restart_at`], the length it restarted at).
    pub fn existing_len(&self) -> u64 {
        self.existing
    }

    /// Truncates the partial file to `len` bytes and continues writing there. `len` must not
    /// exceed the partial file's current length.
    pub fn restart_at(&mut self, len: u64) -> Result<(), FsError> {
        let current = self.file.metadata().map_err(|e| FsError::from_io(&self.shown, e))?.len();
        if len > current {
            let error = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot restart at byte {len}: the partial file holds {current} bytes"),
            );
            return Err(FsError::Io { path: self.shown.clone(), error });
        }
        self.file.set_len(len).map_err(|e| FsError::from_io(&self.shown, e))?;
        self.file.seek(SeekFrom::Start(len)).map_err(|e| FsError::from_io(&self.shown, e))?;
        self.existing = len;
        Ok(())
    }

    /// Makes the data durable and renames the partial file to the target name in one step, so
    /// readers see either the old file or the complete new one. If the rename fails, the partial
    /// file stays for a later resume. The lock is released after the rename.
    pub fn publish(self) -> Result<(), FsError> {
        let map = |e: Errno| FsError::from_errno(&self.shown, e);
        if let Err(e) = self.file.sync_all() {
            // The data may never reach the disk, while the page cache still shows it: a resume
            // could match a prefix that is not there. The partial file goes.
            let _ = rustix::fs::unlinkat(&self.dir, &self.partial, AtFlags::empty());
            return Err(FsError::from_io(&self.shown, e));
        }
        // What may have taken the name while the data arrived (or was fsynced) is refused as at
        // the start; the partial file stays for a resume. Checked just before the rename, which
        // would replace any non-directory: a FIFO made in the moment between is not caught.
        only_a_file_in_place(self.dir.as_fd(), &self.name, &self.shown)?;
        rustix::fs::renameat(&self.dir, &self.partial, &self.dir, &self.name).map_err(map)?;
        // The rename is on disk only once the directory is; an O_PATH descriptor cannot be
        // fsynced, so the directory is opened for reading. The file is published by now, so a
        // failure here is not reported as a failed upload.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if let Ok(dir) = rustix::fs::openat(&self.dir, ".", flags, Mode::empty()) {
            let _ = rustix::fs::fsync(&dir);
        }
        Ok(())
    }

    /// Removes the partial file (best effort) and ends the upload.
    pub fn discard(self) {
        // Unlinked while the lock is still held, so no other upload can have taken it over.
        let _ = rustix::fs::unlinkat(&self.dir, &self.partial, AtFlags::empty());
    }

    /// Ends the upload and leaves the partial file for a later resume (dropping does the same).
    pub fn keep(self) {}

    /// The target's file name (its last component).
    pub fn name(&self) -> &str {
        &self.name_text
    }
}

/// The client's side of a get: an [`Upload`] of a local file, without confinement, that never
/// destroys what it would replace.
///
/// A name that exists must be a regular file with a write bit in its mode; a symbolic link is
/// followed, and the file it leads to is replaced in its own directory (the link stays). A FIFO,
/// socket, device, dangling link or read-only file is refused before any data moves, and checked
/// again just before the rename. The new file gets the permission bits of the file it replaces
/// (the partial file has them too, plus the owner's write bit, while it is written), and, when
/// running as root, its owner and group.
#[derive(Debug)]
pub struct LocalUpload {
    upload: Upload,
}

impl LocalUpload {
    /// Starts writing the local file `path`. The partial goes in the directory of the file that
    /// is replaced (`path`'s parent, the current directory for a bare name, or the directory of
    /// the file a symbolic link leads to).
    pub fn begin(path: &Path, resume: bool) -> Result<LocalUpload, LocalError> {
        let shown = path.display().to_string();
        let fail = |problem| LocalError::write(&shown, problem);
        let target = follow_link(path, &shown).map_err(fail)?;
        let Some(name) = target.file_name() else {
            return Err(fail(Problem::Fs(FsError::BadPath { path: shown.clone(), reason: "names no file" })));
        };
        let parent = local_parent(&target);
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(parent, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR => fail(Problem::NoDirectory),
            e => fail(Problem::Fs(FsError::from_local_errno(&parent.display().to_string(), e))),
        })?;
        let existing = replaceable(dir.as_fd(), name, &shown).map_err(fail)?;
        let upload = Upload::begin(dir, name, shown.clone(), resume).map_err(|e| fail(Problem::Fs(e)))?;
        if let Some(stat) = existing {
            // No one who could not read the old file may read the new one while it is written.
            let mode = Mode::from_raw_mode((stat.st_mode & 0o777) | 0o200);
            rustix::fs::fchmod(&upload.file, mode).map_err(|e| fail(Problem::Fs(FsError::from_errno(&shown, e))))?;
        }
        Ok(LocalUpload { upload })
    }

    fn fail(&self, e: FsError) -> LocalError {
        LocalError::write(&self.upload.shown, Problem::Fs(e))
    }

    /// The partial file, positioned at the end of the existing data.
    pub fn file(&mut self) -> &mut File {
        self.upload.file()
    }

    /// See [`Upload::existing_len`].
    pub fn existing_len(&self) -> u64 {
        self.upload.existing_len()
    }

    /// See [`Upload::restart_at`].
    pub fn restart_at(&mut self, len: u64) -> Result<(), LocalError> {
        self.upload.restart_at(len).map_err(|e| self.fail(e))
    }

    /// Checks the target again (it may have been replaced by a FIFO or made read-only while the
    /// data arrived), gives the partial file its modes, then publishes as [`Upload::publish`].
    /// A refusal here keeps the partial file for a later resume.
    pub fn publish(self) -> Result<(), LocalError> {
        let up = &self.upload;
        let fail = |problem| LocalError::write(&up.shown, problem);
        if let Some(stat) = replaceable(up.dir.as_fd(), &up.name, &up.shown).map_err(fail)? {
            adopt(&up.file, &stat).map_err(|e| fail(Problem::Fs(FsError::from_errno(&up.shown, e))))?;
        }
        let shown = up.shown.clone();
        self.upload.publish().map_err(|e| LocalError::write(&shown, Problem::Fs(e)))
    }

    /// See [`Upload::discard`].
    pub fn discard(self) {
        self.upload.discard();
    }

    /// See [`Upload::keep`].
    pub fn keep(self) {}
}

/// Where writing `path` should go: `path` itself, or the file its symbolic link leads to. A link
/// to nothing, a loop, or a link to a FIFO, socket or device is refused.
fn follow_link(path: &Path, shown: &str) -> Result<PathBuf, Problem> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {}
        // Not a link, or nothing there: what it is gets checked from its directory.
        _ => return Ok(path.to_owned()),
    }
    let real = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(Problem::Loop),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let to = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".to_owned());
            return Err(Problem::Dangling(to));
        }
        Err(e) => return Err(Problem::Fs(FsError::from_io(shown, e))),
    };
    let stat = rustix::fs::stat(&real).map_err(|e| Problem::Fs(FsError::from_local_errno(shown, e)))?;
    match FileType::from_raw_mode(stat.st_mode) {
        // A directory is refused by Upload::begin, as any directory under the target's name.
        FileType::RegularFile | FileType::Directory => Ok(real),
        kind => Err(Problem::LinkToSpecial { target: real.display().to_string(), kind: kind_name(kind) }),
    }
}

/// What is under `name` in `dir` now: nothing (`None`), or a regular file that may be replaced
/// (its status). Anything else is refused.
fn replaceable(dir: BorrowedFd<'_>, name: &OsStr, shown: &str) -> Result<Option<Stat>, Problem> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(Problem::Fs(FsError::from_local_errno(shown, e))),
    };
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile if stat.st_mode & 0o222 == 0 => Err(Problem::ReadOnly),
        FileType::RegularFile => Ok(Some(stat)),
        FileType::Directory => Err(Problem::Fs(FsError::IsADirectory { path: shown.to_owned() })),
        kind => Err(Problem::NotAFile(kind_name(kind))),
    }
}

/// Checks that an upload may take `name` in `dir`: nothing is there, or a regular file. A
/// directory is [`FsError::IsADirectory`]; a FIFO, socket, device or symbolic link (never
/// followed here, and never replaced by a file) is [`FsError::NotAFile`].
fn only_a_file_in_place(dir: BorrowedFd<'_>, name: &OsStr, shown: &str) -> Result<(), FsError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => Ok(()),
            FileType::Directory => Err(FsError::IsADirectory { path: shown.to_owned() }),
            _ => Err(FsError::NotAFile { path: shown.to_owned() }),
        },
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(FsError::from_errno(shown, e)),
    }
}

/// Gives `file` the permission bits of the file it replaces (`old`), and, when running as root,
/// its owner and group. Set-user-ID, set-group-ID and sticky bits are not copied.
fn adopt(file: &File, old: &Stat) -> Result<(), Errno> {
    if rustix::process::geteuid().is_root() {
        // The ids come from a stat of an existing file, so neither is -1.
        let (uid, gid) = (rustix::fs::Uid::from_raw(old.st_uid), rustix::fs::Gid::from_raw(old.st_gid));
        rustix::fs::fchown(file, Some(uid), Some(gid))?;
    }
    rustix::fs::fchmod(file, Mode::from_raw_mode(old.st_mode & 0o777))
}

/// Opens `.NAME.sockit-part` in `dir` for writing, creating it, and takes its lock.
fn lock_partial(dir: BorrowedFd<'_>, partial: &OsStr, shown: &str) -> Result<File, FsError> {
    let partial_shown = match shown.rfind('/') {
        Some(slash) => format!("{}/{}", &shown[..slash], partial.to_string_lossy()),
        None => partial.to_string_lossy().into_owned(),
    };
    // O_NOFOLLOW: a symbolic link planted under the partial name is refused, not followed.
    // O_NONBLOCK: a FIFO planted there cannot stall the open; it is cleared below.
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    for _ in 0..LOCK_RETRIES {
        let fd = match rustix::fs::openat(dir, partial, flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NXIO | Errno::ISDIR) => return Err(FsError::NotAFile { path: partial_shown }),
            Err(e) => return Err(FsError::from_errno(shown, e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| FsError::from_errno(shown, e))?;
        // A hard link planted under the partial name would have us truncate and write a file
        // that lives elsewhere, outside the root perhaps.
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile || stat.st_nlink != 1 {
            return Err(FsError::NotAFile { path: partial_shown });
        }
        clear_nonblock(&fd).map_err(|e| FsError::from_errno(shown, e))?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Err(FsError::Busy { path: shown.to_owned() }),
            Err(e) => return Err(FsError::from_errno(shown, e)),
        }
        // Between our open and our lock, the previous holder may have published the partial
        // (our descriptor would then be the published file) or discarded it (an unlinked file).
        // Only the inode still under the partial name is ours to write.
        match rustix::fs::statat(dir, partial, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_dev == stat.st_dev && now.st_ino == stat.st_ino => return Ok(File::from(fd)),
            Ok(_) | Err(Errno::NOENT) => continue,
            Err(e) => return Err(FsError::from_errno(shown, e)),
        }
    }
    Err(FsError::Busy { path: shown.to_owned() })
}

/// Opens `path` (relative, lexically checked) beneath `root`: symbolic links are followed only
/// while they stay inside, and `/proc`-style magic links never. `O_CLOEXEC` is added.
fn open_beneath(root: BorrowedFd<'_>, path: &str, flags: OFlags, shown: &str) -> Result<OwnedFd, FsError> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            // No fallback to openat: without RESOLVE_BENEATH nothing keeps a symlink inside.
            Err(Errno::NOSYS) => return Err(FsError::Unsupported { path: shown.to_owned() }),
            result => return result.map_err(|e| FsError::from_errno(shown, e)),
        }
    }
}

/// Clears `O_NONBLOCK` on a descriptor opened with it, once it is known to be a regular file.
pub(crate) fn clear_nonblock(fd: impl AsFd) -> Result<(), Errno> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
}

/// The most [`read_config_file`] reads: far more than any dictionary, rule list or certificate.
pub const MAX_CONFIG_FILE: u64 = 64 << 20;

/// Reads a file the user named for configuration (a dictionary, rules, certificates): a regular
/// file, or a pipe (`<(…)`), of at most [`MAX_CONFIG_FILE`] bytes. A device such as
/// `/dev/zero`, a directory or a socket is refused at once, a FIFO with no writer reads as
/// empty instead of blocking the open, and one larger than the limit is refused, not read into
/// memory without end.
pub fn read_config_file(path: &Path) -> io::Result<Vec<u8>> {
    let (file, _) = open_named_file(path).map_err(|e| match e {
        NamedFileError::NotAFile(kind) => {
            io::Error::new(io::ErrorKind::InvalidInput, format!("it is {}, not a regular file", kind_name(kind)))
        }
        NamedFileError::Io(e) => e,
    })?;
    let mut content = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_CONFIG_FILE + 1), &mut content)?;
    if content.len() as u64 > MAX_CONFIG_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than {} MiB, more than such a file can need", MAX_CONFIG_FILE >> 20),
        ));
    }
    Ok(content)
}

/// Why [`open_named_file`] could not open a file.
pub(crate) enum NamedFileError {
    /// It is not a regular file or a pipe: what it is.
    NotAFile(FileType),
    /// It could not be looked at or opened.
    Io(io::Error),
}

/// Opens a file the user named for the program to read (a token, a dictionary, certificates):
/// a regular file, or a pipe (`<(…)`). Anything else (a directory, a socket, a device such as
/// `/dev/zero`) is refused for what it is, before it is opened: opening a socket fails, and a
/// device may do anything. A FIFO with no writer does not block the open; the reads then wait
/// for one, and one with none ends at once. Returns the file and what `fstat` says of it.
pub(crate) fn open_named_file(path: &Path) -> Result<(File, Stat), NamedFileError> {
    let readable = |stat: &Stat| match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile | FileType::Fifo => Ok(()),
        other => Err(NamedFileError::NotAFile(other)),
    };
    let io = |e: io::Error| NamedFileError::Io(e);
    readable(&rustix::fs::stat(path).map_err(|e| io(e.into()))?)?;
    let file = open_read_nonblocking(path).map_err(io)?;
    // Looked at again: it may have been replaced between the look and the open.
    let stat = rustix::fs::fstat(&file).map_err(|e| io(e.into()))?;
    readable(&stat)?;
    clear_nonblock(&file).map_err(|e| io(e.into()))?;
    Ok((file, stat))
}

/// Opens a local file for reading without waiting: a FIFO with no writer would block the open,
/// before the caller could see it is no regular file. [`clear_nonblock`] once it has looked.
pub(crate) fn open_read_nonblocking(path: &Path) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::open(path, flags, Mode::empty())?))
}

fn file_size(stat: &Stat) -> u64 {
    u64::try_from(stat.st_size).unwrap_or(0)
}

/// The directory a local path's file is in: `.` for a bare name.
fn local_parent(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// What a path is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A directory to list: the empty path is the root.
    List,
    /// A file to read.
    Read,
    /// A file to write: the last component must be a file name.
    Put,
}

const NAME_TOO_LONG: &str = "the file name is too long (at most 242 bytes)";

/// The lexical check every client path passes before any system call. Returns the components,
/// none of them empty, `.` or `..`.
fn check(rel: &str, purpose: Purpose) -> Result<Vec<&str>, FsError> {
    let refuse = |reason| Err(FsError::BadPath { path: shorten(rel), reason });
    if rel.len() > MAX_PATH_LEN {
        return refuse("longer than 4096 bytes");
    }
    if rel.is_empty() && purpose != Purpose::List {
        return refuse("empty");
    }
    if rel.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if rel.contains('\\') {
        return refuse("contains a backslash (the separator is /)");
    }
    if rel.starts_with('/') {
        return refuse("absolute (paths are relative to the served directory)");
    }
    let mut parts = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => return refuse("contains a .. component"),
            _ if is_partial_name(part) => return refuse("names a partial upload file"),
            _ => parts.push(part),
        }
    }
    match purpose {
        Purpose::List => {}
        Purpose::Read if parts.is_empty() => return refuse("names no file"),
        Purpose::Read => {}
        Purpose::Put => {
            // "dir/" or "dir/." name a directory, not a file to write, even though collapsing
            // would leave "dir".
            if matches!(rel.rsplit('/').next(), Some("" | ".")) {
                return refuse("does not end in a file name");
            }
            let name = parts.last().expect("a path not ending in / or . has a last component");
            if name.len() + PARTIAL_PREFIX.len() + PARTIAL_SUFFIX.len() > MAX_NAME_LEN {
                return refuse(NAME_TOO_LONG);
            }
        }
    }
    Ok(parts)
}

/// Joins path components with `/`; no components is `.`.
fn joined(parts: &[&str]) -> String {
    let parts: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() { ".".to_owned() } else { parts.join("/") }
}

/// A path short enough for a one-line message.
fn shorten(path: &str) -> String {
    const KEEP: usize = 100;
    if path.len() <= KEEP {
        return path.to_owned();
    }
    let mut end = KEEP;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &path[..end], path.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::io::{Read, Write};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A temporary directory holding `root/` (the served directory) and `secret`, a file just
    /// outside it.
    struct Fixture {
        tmp: tempfile::TempDir,
        root: Root,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            std::fs::create_dir(tmp.path().join("root")).unwrap();
            std::fs::write(tmp.path().join("secret"), b"outside").unwrap();
            let root = Root::open(&tmp.path().join("root")).unwrap();
            Fixture { tmp, root }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.tmp.path().join("root").join(rel)
        }

        /// Every path under the temporary directory (symlinks not followed), with file contents.
        fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
            fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) {
                for entry in std::fs::read_dir(dir).unwrap() {
                    let path = entry.unwrap().path();
                    let rel = path.strip_prefix(base).unwrap().display().to_string();
                    let meta = std::fs::symlink_metadata(&path).unwrap();
                    if meta.is_dir() {
                        out.push((rel, Vec::new()));
                        walk(&path, base, out);
                    } else if meta.is_file() {
                        out.push((rel, std::fs::read(&path).unwrap()));
                    } else {
                        out.push((rel, Vec::new()));
                    }
                }
            }
            let mut out = Vec::new();
            walk(self.tmp.path(), self.tmp.path(), &mut out);
            out.sort();
            out
        }
    }

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
        assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
    }

    fn read_all(root: &Root, rel: &str) -> Vec<u8> {
        let (mut file, len) = root.open_read(rel).unwrap();
        let mut data = Vec::new();
        file.read_to_end(&mut data).unwrap();
        assert_eq!(data.len() as u64, len);
        data
    }

    #[track_caller]
    fn assert_bad_path<T: std::fmt::Debug>(result: Result<T, FsError>) {
        assert!(matches!(result, Err(FsError::BadPath { .. })), "expected BadPath, got {result:?}");
    }

    #[test]
    fn lexical_check_refuses_escapes_and_partials() {
        let long = "a/".repeat(2049);
        let refused = [
            "../x",
            "a/../../x",
            "a/..",
            "..",
            "/etc/passwd",
            "a\\b",
            "a\0b",
            "",
            ".x.sockit-part",
            "dir/.y.sockit-part",
        ];
        for rel in refused.iter().copied().chain([long.as_str()]) {
            assert_bad_path(check(rel, Purpose::Read));
            assert_bad_path(check(rel, Purpose::Put));
        }
        for (rel, expected) in
            [("a", vec!["a"]), ("./a", vec!["a"]), ("a//b/", vec!["a", "b"]), ("a/./b", vec!["a", "b"])]
        {
            assert_eq!(check(rel, Purpose::Read).unwrap(), expected, "{rel:?}");
        }
        assert_eq!(check("", Purpose::List).unwrap(), Vec::<&str>::new());
        assert_eq!(check(".", Purpose::List).unwrap(), Vec::<&str>::new());
        assert_bad_path(check(".", Purpose::Read));
        assert_bad_path(check("", Purpose::Read));
    }

    #[test]
    fn put_needs_a_file_name() {
        for rel in ["a/", "a/.", ".", "./", "a//"] {
            assert_bad_path(check(rel, Purpose::Put));
        }
        assert_eq!(check("./a//b", Purpose::Put).unwrap(), ["a", "b"]);
        assert!(check(&"n".repeat(242), Purpose::Put).is_ok());
        assert_bad_path(check(&"n".repeat(243), Purpose::Put));
    }

    #[test]
    fn refused_paths_touch_nothing() {
        let f = Fixture::new();
        std::fs::create_dir(f.path("dir")).unwrap();
        let before = f.snapshot();
        for rel in
            ["../secret", "dir/../../secret", "/etc/passwd", "a\\b", "a\0b", "", ".x.sockit-part", "dir/.y.sockit-part"]
        {
            assert_bad_path(f.root.open_read(rel));
            assert_bad_path(f.root.begin_put(rel, false));
            if !rel.is_empty() {
                assert_bad_path(f.root.list(rel));
            }
        }
        assert_eq!(f.snapshot(), before);
    }

    #[test]
    fn symlinks_out_of_the_root_are_outside() {
        let f = Fixture::new();
        symlink("/etc", f.path("etc")).unwrap();
        symlink(f.tmp.path(), f.path("abs")).unwrap();
        symlink("..", f.path("up")).unwrap();
        symlink("../secret", f.path("secret-link")).unwrap();
        symlink("/etc/passwd", f.path("passwd-link")).unwrap();
        let before = f.snapshot();

        for rel in ["etc/passwd", "abs/secret", "up/secret", "secret-link", "passwd-link"] {
            let result = f.root.open_read(rel);
            assert!(matches!(result, Err(FsError::Outside { .. })), "open_read({rel:?}): {result:?}");
        }
        for rel in ["etc/x", "abs/x", "up/x", "up/secret"] {
            let result = f.root.begin_put(rel, false);
            assert!(matches!(result, Err(FsError::Outside { .. })), "begin_put({rel:?}): {result:?}");
        }
        for rel in ["etc", "up", "abs"] {
            let result = f.root.list(rel);
            assert!(matches!(result, Err(FsError::Outside { .. })), "list({rel:?}): {result:?}");
        }
        assert_eq!(f.snapshot(), before);
        assert_eq!(std::fs::read(f.tmp.path().join("secret")).unwrap(), b"outside");
    }

    #[test]
    fn symlinks_inside_the_root_work() {
        let f = Fixture::new();
        std::fs::create_dir(f.path("dir")).unwrap();
        std::fs::write(f.path("dir/data"), b"inside").unwrap();
        symlink("dir/data", f.path("alias")).unwrap();
        symlink("../dir/data", f.path("dir/sibling")).unwrap();
        symlink("dir", f.path("dirlink")).unwrap();
        assert_eq!(read_all(&f.root, "alias"), b"inside");
        assert_eq!(read_all(&f.root, "dir/sibling"), b"inside");
        assert_eq!(read_all(&f.root, "dirlink/data"), b"inside");
        let mut up = f.root.begin_put("dirlink/new", false).unwrap();
        up.file().write_all(b"via link").unwrap();
        up.publish().unwrap();
        assert_eq!(std::fs::read(f.path("dir/new")).unwrap(), b"via link");
    }

    #[test]
    fn open_read_refuses_directories_and_special_files() {
        let f = Fixture::new();
        std::fs::create_dir(f.path("dir")).unwrap();
        mkfifo(&f.path("fifo"));
        let result = f.root.open_read("dir");
        assert!(matches!(result, Err(FsError::IsADirectory { .. })), "{result:?}");

        // On a separate thread, so a blocking open fails the test instead of hanging it.
        let root = Root::open(&f.path("")).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(root.open_read("fifo").map(|_| ())));
        let result = rx.recv_timeout(Duration::from_secs(5)).expect("open_read of a FIFO blocked");
        assert!(matches!(result, Err(FsError::NotAFile { .. })), "{result:?}");

        let result = f.root.open_read("missing");
        assert!(matches!(result, Err(FsError::NotFound { .. })), "{result:?}");
    }

    #[test]
    fn open_read_returns_a_blocking_file_and_its_length() {
        let f = Fixture::new();
        std::fs::write(f.path("data"), b"twelve bytes").unwrap();
        let (file, len) = f.root.open_read("./data").unwrap();
        assert_eq!(len, 12);
        let flags = rustix::fs::fcntl_getfl(&file).unwrap();
        assert!(!flags.contains(OFlags::NONBLOCK));
        assert!(rustix::io::fcntl_getfd(&file).unwrap().contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn put_refusals_create_nothing() {
        let f = Fixture::new();
        std::fs::create_dir(f.path("dir")).unwrap();
        std::fs::write(f.path("file"), b"x").unwrap();
        let before = f.snapshot();
        let result = f.root.begin_put("dir", false);
        assert!(matches!(result, Err(FsError::IsADirectory { .. })), "{result:?}");
        let result = f.root.begin_put("missing/x", false);
        assert!(matches!(result, Err(FsError::NotFound { .. })), "{result:?}");
        let result = f.root.begin_put("file/x", false);
        assert!(matches!(result, Err(FsError::NotADirectory { .. })), "{result:?}");
        assert_eq!(f.snapshot(), before);
    }

    /// A FIFO or link that takes the name while the data arrives is not replaced either: the
    /// upload fails at the rename and its partial file stays for a resume.
    #[test]
    fn what_takes_the_name_during_a_put_is_not_replaced() {
        let f = Fixture::new();
        for (name, fifo) in [("fifo", true), ("link", false)] {
            let mut up = f.root.begin_put(name, false).unwrap();
            up.file().write_all(b"data").unwrap();
            if fifo {
                mkfifo(&f.path(name));
            } else {
                symlink("elsewhere", f.path(name)).unwrap();
            }
            let result = up.publish();
            assert!(matches!(result, Err(FsError::NotAFile { .. })), "{name}: {result:?}");
            assert!(!std::fs::symlink_metadata(f.path(name)).unwrap().is_file(), "{name} was replaced");
            assert_eq!(std::fs::read(f.path(&format!(".{name}.sockit-part"))).unwrap(), b"data");
        }
    }

    #[test]
    fn a_planted_partial_symlink_is_not_followed() {
        let f = Fixture::new();
        symlink(f.tmp.path().join("secret"), f.path(".x.sockit-part")).unwrap();
        let result = f.root.begin_put("x", false);
        assert!(matches!(result, Err(FsError::NotAFile { .. })), "{result:?}");
        assert_eq!(std::fs::read(f.tmp.path().join("secret")).unwrap(), b"outside");
    }

    #[test]
    fn a_planted_partial_hard_link_is_not_written() {
        let f = Fixture::new();
        // The tempdir's "secret" is outside the root but on the same file system.
        std::fs::hard_link(f.tmp.path().join("secret"), f.path(".x.sockit-part")).unwrap();
        let result = f.root.begin_put("x", false);
        assert!(matches!(result, Err(FsError::NotAFile { .. })), "{result:?}");
        assert_eq!(std::fs::read(f.tmp.path().join("secret")).unwrap(), b"outside");
    }

    #[test]
    fn publish_replaces_the_target_atomically() {
        let f = Fixture::new();
        std::fs::write(f.path("target"), b"old").unwrap();
        let mut up = f.root.begin_put("target", false).unwrap();
        assert_eq!(up.name(), "target");
        up.file().write_all(b"new content").unwrap();
        assert_eq!(std::fs::read(f.path("target")).unwrap(), b"old");
        assert_eq!(std::fs::read(f.path(".target.sockit-part")).unwrap(), b"new content");
        up.publish().unwrap();
        assert_eq!(std::fs::read(f.path("target")).unwrap(), b"new content");
        assert!(!f.path(".target.sockit-part").exists());

        let mut up = f.root.begin_put("fresh", false).unwrap();
        up.file().write_all(b"x").unwrap();
        assert!(!f.path("fresh").exists());
        up.publish().unwrap();
        assert_eq!(std::fs::read(f.path("fresh")).unwrap(), b"x");
        assert!(!f.path(".fresh.sockit-part").exists());
    }

    #[test]
    fn discard_removes_the_partial() {
        let f = Fixture::new();
        let mut up = f.root.begin_put("gone", false).unwrap();
        up.file().write_all(b"x").unwrap();
        up.discard();
        assert!(!f.path(".gone.sockit-part").exists());
        assert!(!f.path("gone").exists());
    }

    #[test]
    fn resume_keeps_the_partial_data() {
        let f = Fixture::new();
        let mut up = f.root.begin_put("big", false).unwrap();
        assert_eq!(up.existing_len(), 0);
        up.file().write_all(b"hello").unwrap();
        up.keep();

        let mut up = f.root.begin_put("big", true).unwrap();
        assert_eq!(up.existing_len(), 5);
        up.file().write_all(b" world").unwrap();
        drop(up);

        let mut up = f.root.begin_put("big", true).unwrap();
        assert_eq!(up.existing_len(), 11);
        up.restart_at(5).unwrap();
        assert_eq!(up.existing_len(), 5);
        assert!(matches!(up.restart_at(6), Err(FsError::Io { .. })));
        up.file().write_all(b", you").unwrap();
        up.publish().unwrap();
        assert_eq!(std::fs::read(f.path("big")).unwrap(), b"hello, you");

        let mut up = f.root.begin_put("big", false).unwrap();
        up.file().write_all(b"abc").unwrap();
        up.keep();
        let mut up = f.root.begin_put("big", false).unwrap();
        assert_eq!(up.existing_len(), 0);
        up.file().write_all(b"z").unwrap();
        up.publish().unwrap();
        assert_eq!(std::fs::read(f.path("big")).unwrap(), b"z");
    }

    #[test]
    fn a_second_put_of_the_same_name_is_busy() {
        let f = Fixture::new();
        let first = f.root.begin_put("same", false).unwrap();
        let result = f.root.begin_put("./same", true);
        assert!(matches!(result, Err(FsError::Busy { .. })), "{:?}", result.map(|_| ()));
        let other = f.root.begin_put("other", false).unwrap();
        drop(first);
        let mut again = f.root.begin_put("same", true).unwrap();
        again.file().write_all(b"ok").unwrap();
        again.publish().unwrap();
        other.discard();
        assert_eq!(std::fs::read(f.path("same")).unwrap(), b"ok");
    }

    #[test]
    fn list_hides_partials_sorts_and_reports_kinds() {
        let f = Fixture::new();
        std::fs::write(f.path("b"), b"12345").unwrap();
        std::fs::write(f.path("a"), b"1").unwrap();
        std::fs::create_dir(f.path("d")).unwrap();
        std::fs::write(f.path("d/inner"), b"").unwrap();
        symlink("a", f.path("l")).unwrap();
        mkfifo(&f.path("p"));
        let mut up = f.root.begin_put("c", false).unwrap();
        up.file().write_all(b"partial").unwrap();
        up.keep();

        let entries = f.root.list("").unwrap();
        let summary: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.kind, e.size)).collect();
        assert_eq!(
            summary,
            [
                ("a", EntryKind::File, 1),
                ("b", EntryKind::File, 5),
                ("d", EntryKind::Dir, 0),
                ("l", EntryKind::Symlink, 0),
                ("p", EntryKind::Other, 0),
            ]
        );
        assert!(entries.iter().all(|e| e.mtime > 1_500_000_000), "{entries:?}");
        assert_eq!(f.root.list(".").unwrap(), entries);
        assert_eq!(f.root.list("d/").unwrap().iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["inner"]);
        assert!(matches!(f.root.list("a"), Err(FsError::NotADirectory { .. })));
        assert!(matches!(f.root.list("missing"), Err(FsError::NotFound { .. })));
        assert_bad_path(f.root.list(".."));
    }

    #[test]
    fn local_upload_publishes_and_refuses_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("got");
        let mut up = LocalUpload::begin(&target, false).unwrap();
        up.file().write_all(b"downloaded").unwrap();
        assert!(tmp.path().join(".got.sockit-part").exists());
        assert!(!target.exists());
        up.publish().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"downloaded");
        assert!(!tmp.path().join(".got.sockit-part").exists());

        std::fs::create_dir(tmp.path().join("dir")).unwrap();
        let result = LocalUpload::begin(&tmp.path().join("dir"), false);
        assert!(
            matches!(result, Err(LocalError { problem: Problem::Fs(FsError::IsADirectory { .. }), .. })),
            "{result:?}"
        );
        let result = LocalUpload::begin(&tmp.path().join("missing/x"), false);
        assert!(matches!(result, Err(LocalError { problem: Problem::NoDirectory, .. })), "{result:?}");
        let missing = tmp.path().join("missing/x");
        assert_eq!(result.unwrap_err().to_string(), format!("cannot write {}: no such directory", missing.display()));

        assert_eq!(local_parent(Path::new("file")), Path::new("."));
        assert_eq!(local_parent(Path::new("a/file")), Path::new("a"));
        assert_eq!(local_parent(Path::new("/file")), Path::new("/"));
    }

    /// Each name a get must not replace, what it is refused as, and that it is left as it was.
    #[test]
    fn local_upload_refuses_what_it_would_destroy() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = |name: &str| tmp.path().join(name);
        mkfifo(&p("fifo"));
        let _socket = std::os::unix::net::UnixListener::bind(p("sock")).unwrap();
        std::fs::write(p("ro"), b"keep").unwrap();
        std::fs::set_permissions(p("ro"), std::fs::Permissions::from_mode(0o444)).unwrap();
        symlink("nowhere", p("dangling")).unwrap();
        symlink("fifo", p("to-fifo")).unwrap();
        symlink("loop-b", p("loop-a")).unwrap();
        symlink("loop-a", p("loop-b")).unwrap();
        let before = names_and_kinds(tmp.path());
        let cases: &[(&str, &str)] = &[
            ("fifo", "it is a FIFO, not a regular file"),
            ("sock", "it is a socket, not a regular file"),
            ("ro", "it is read-only; remove it or choose another name"),
            ("dangling", "it is a symbolic link to nowhere, which does not exist"),
            ("to-fifo", "which is a FIFO, not a regular file"),
            ("loop-a", "it is a symbolic link that loops"),
        ];
        for (name, message) in cases {
            let error = LocalUpload::begin(&p(name), false).expect_err(name);
            let text = error.to_string();
            assert!(text.starts_with(&format!("cannot write {}: ", p(name).display())), "{text}");
            assert!(text.contains(message), "{name}: {text}");
        }
        assert_eq!(names_and_kinds(tmp.path()), before, "a refused target was touched or a partial left");
        assert_eq!(std::fs::read(p("ro")).unwrap(), b"keep");
    }

    #[test]
    fn local_upload_writes_through_a_symlink_and_keeps_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        let target = tmp.path().join("real/secret");
        std::fs::write(&target, b"old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = tmp.path().join("link");
        symlink("real/secret", &link).unwrap();

        let mut up = LocalUpload::begin(&link, false).unwrap();
        // The partial sits next to the real file, and is no more readable than it.
        let partial = tmp.path().join("real/.secret.sockit-part");
        assert_eq!(std::fs::metadata(&partial).unwrap().permissions().mode() & 0o077, 0);
        up.file().write_all(b"new").unwrap();
        up.publish().unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777, 0o600);
        assert!(!partial.exists());

        // Made read-only while the data arrived: not published, the partial kept for a resume.
        let mut up = LocalUpload::begin(&target, false).unwrap();
        up.file().write_all(b"newer").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o400)).unwrap();
        let result = up.publish();
        assert!(matches!(result, Err(LocalError { problem: Problem::ReadOnly, .. })), "{result:?}");
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(partial.exists());
    }

    /// The names in `dir` with what each is (symbolic links not followed).
    fn names_and_kinds(dir: &Path) -> Vec<(String, String)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), format!("{:?}", e.file_type().unwrap()))
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn permission_denied_is_reported() {
        if rustix::process::geteuid().is_root() {
            eprintln!("skipping permission_denied_is_reported: root bypasses file modes");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let f = Fixture::new();
        std::fs::create_dir(f.path("locked")).unwrap();
        std::fs::set_permissions(f.path("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
        let result = f.root.list("locked");
        std::fs::set_permissions(f.path("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(result, Err(FsError::PermissionDenied { .. })), "{result:?}");

        std::fs::write(f.path("unreadable"), b"x").unwrap();
        std::fs::set_permissions(f.path("unreadable"), std::fs::Permissions::from_mode(0o000)).unwrap();
        let result = f.root.open_read("unreadable");
        assert!(matches!(result, Err(FsError::PermissionDenied { .. })), "{result:?}");

        std::fs::create_dir(f.path("readonly")).unwrap();
        std::fs::set_permissions(f.path("readonly"), std::fs::Permissions::from_mode(0o555)).unwrap();
        let result = f.root.begin_put("readonly/x", false);
        std::fs::set_permissions(f.path("readonly"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(result, Err(FsError::PermissionDenied { .. })), "{:?}", result.map(|_| ()));
    }

    #[test]
    fn root_must_be_a_directory() {
        let f = Fixture::new();
        assert!(matches!(Root::open(&f.tmp.path().join("secret")), Err(FsError::NotADirectory { .. })));
        assert!(matches!(Root::open(&f.tmp.path().join("missing")), Err(FsError::NotFound { .. })));
        assert_eq!(f.root.path(), f.tmp.path().join("root"));
    }

    #[test]
    fn codes_are_distinct_and_survive_the_wire() {
        let p = || "p".to_owned();
        let errors = [
            FsError::BadPath { path: p(), reason: "r" },
            FsError::Outside { path: p() },
            FsError::NotFound { path: p() },
            FsError::NotADirectory { path: p() },
            FsError::IsADirectory { path: p() },
            FsError::NotAFile { path: p() },
            FsError::PermissionDenied { path: p() },
            FsError::DiskFull { path: p() },
            FsError::Busy { path: p() },
            FsError::Unsupported { path: p() },
            FsError::Io { path: p(), error: io::Error::other("boom") },
        ];
        let codes: Vec<u8> = errors.iter().map(FsError::code).collect();
        assert_eq!(codes, (1..=11).collect::<Vec<u8>>());
        for error in &errors {
            let received = FsError::from_code(error.code(), error.to_string());
            assert_eq!(received.code(), error.code());
            assert_eq!(received.to_string(), error.to_string());
            assert!(!error.to_string().contains('\n'));
        }
    }

    #[test]
    fn write_errors_are_classified() {
        let full = FsError::from_io("f", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(full, FsError::DiskFull { .. }));
        let quota = FsError::from_io("f", io::Error::from_raw_os_error(libc::EDQUOT));
        assert!(matches!(quota, FsError::DiskFull { .. }));
        let other = FsError::from_io("f", io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(other, FsError::Io { .. }));
        assert_eq!(other.to_string().lines().count(), 1);
    }

    #[test]
    fn partial_names() {
        assert!(is_partial_name(".x.sockit-part"));
        assert!(is_partial_name("..x.sockit-part"));
        assert!(!is_partial_name(".sockit-part"));
        assert!(!is_partial_name("..sockit-part"));
        assert!(!is_partial_name("x.sockit-part"));
        assert!(!is_partial_name(".x.sockit-par"));
    }
}
