//! Files the executor reads from or writes into the job's checkout on the runner host, confined
//! to the project directory.
//!
//! The checkout is the repository's: anyone who can push a branch decides which of its paths are
//! symlinks and where they point. Every access here goes through a capability handle on the
//! project directory ([`cap_std::fs::Dir`]), which resolves each path component beneath that
//! directory and refuses any `..` or symlink that would lead out of it (on Linux with
//! `openat2(RESOLVE_BENEATH)`, elsewhere component by component). Symlinks that stay inside the
//! project are followed, as a user would expect.
//!
//! # Guarantees
//! - A read never opens a file outside the project dir, and never reads more than its cap: the
//!   size is checked on the opened handle before reading, and the read itself is bounded, so a
//!   file that grows meanwhile (or a FIFO) cannot exhaust memory.
//! - A write never writes through a symlink at its last component: the data goes to a fresh
//!   temporary file (`O_CREAT|O_EXCL`) in the target's directory, which is then renamed over the
//!   target, replacing a planted link instead of following it.
//! - Errors name the path the job gave and the rule; they never contain file content.

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

/// Why a project file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProjectFileError {
    /// The path is absolute, has `..`, or is empty: it names no file inside the project.
    #[error("{path}: must be a relative path inside the project directory, without `..`")]
    NotRelative {
        /// The path as given (shortened).
        path: String,
    },
    /// The path leads out of the project directory through a symlink, or is not accessible.
    #[error(
        "{path}: refused: it leads outside the project directory (through a symlink) or is not accessible"
    )]
    Escapes {
        /// The path as given.
        path: String,
    },
    /// Nothing exists at the path.
    #[error("{path}: no such file in the project directory")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// The path is a directory, a FIFO, a device or a socket.
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The path as given.
        path: String,
    },
    /// The file is larger than the executor reads.
    #[error("{path}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The path as given.
        path: String,
        /// The cap.
        limit: u64,
    },
    /// The project directory itself cannot be opened.
    #[error("cannot open the project directory {}: {source}", dir.display())]
    OpenProject {
        /// The project dir.
        dir: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing failed on the runner host.
    #[error("{path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl ProjectFileError {
    /// Whether the job caused this (a bad path, a planted link, an oversized file) rather than
    /// the runner host failing.
    pub fn is_jobs_fault(&self) -> bool {
        match self {
            ProjectFileError::NotRelative { .. }
            | ProjectFileError::Escapes { .. }
            | ProjectFileError::NotFound { .. }
            | ProjectFileError::NotAFile { .. }
            | ProjectFileError::TooLarge { .. } => true,
            ProjectFileError::OpenProject { .. } | ProjectFileError::Io { .. } => false,
        }
    }
}

/// A capability on one job's project directory.
#[derive(Debug)]
pub struct ProjectDir {
    dir: Dir,
    path: PathBuf,
}

/// Longest path text quoted in an error.
const SHOWN_PATH_CHARS: usize = 96;

fn shown(path: &str) -> String {
    crate::excerpt::plain(path, SHOWN_PATH_CHARS)
}

/// Checks that `rel` is a plain relative path and returns it as a `Path`.
fn relative(rel: &str) -> Result<&Path, ProjectFileError> {
    let path = Path::new(rel);
    let plain = !rel.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if plain && path.components().any(|c| matches!(c, Component::Normal(_))) {
        Ok(path)
    } else {
        Err(ProjectFileError::NotRelative { path: shown(rel) })
    }
}

/// Maps an error of a confined operation on `rel`.
fn classify(rel: &str, e: io::Error) -> ProjectFileError {
    let path = shown(rel);
    // ELOOP: a symlink chain where none may be followed.
    if e.raw_os_error() == Some(nix::libc::ELOOP) {
        return ProjectFileError::Escapes { path };
    }
    match e.kind() {
        io::ErrorKind::NotFound => ProjectFileError::NotFound { path },
        // cap-std reports an escape (and the kernel a RESOLVE_BENEATH violation) as EACCES/EPERM.
        io::ErrorKind::PermissionDenied => ProjectFileError::Escapes { path },
        io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => {
            ProjectFileError::NotAFile { path }
        }
        _ => ProjectFileError::Io { path, source: e },
    }
}

impl ProjectDir {
    /// Opens the project directory (the executor's own path, so following it is fine).
    pub fn open(path: &Path) -> Result<ProjectDir, ProjectFileError> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority()).map_err(|source| {
            ProjectFileError::OpenProject {
                dir: path.to_owned(),
                source,
            }
        })?;
        Ok(ProjectDir {
            dir,
            path: path.to_owned(),
        })
    }

    /// The project directory's path on the runner host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the regular file `rel` (relative to the project dir), at most `limit` bytes.
    pub fn read(&self, rel: &str, limit: u64) -> Result<Vec<u8>, ProjectFileError> {
        let path = relative(rel)?;
        let mut options = OpenOptions::new();
        // Non-blocking, so a FIFO planted at the path cannot hold the open; it is refused below.
        options.read(true).custom_flags(nix::libc::O_NONBLOCK);
        let file = self
            .dir
            .open_with(path, &options)
            .map_err(|e| classify(rel, e))?;
        let meta = file.metadata().map_err(|e| classify(rel, e))?;
        if !meta.is_file() {
            return Err(ProjectFileError::NotAFile { path: shown(rel) });
        }
        if meta.len() > limit {
            return Err(ProjectFileError::TooLarge {
                path: shown(rel),
                limit,
            });
        }
        let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        // Bounded even if the file grows between the stat and the read.
        file.take(limit.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| classify(rel, e))?;
        if data.len() as u64 > limit {
            return Err(ProjectFileError::TooLarge {
                path: shown(rel),
                limit,
            });
        }
        Ok(data)
    }

    /// Reads `rel` as UTF-8 text, at most `limit` bytes.
    pub fn read_text(&self, rel: &str, limit: u64) -> Result<String, ProjectFileError> {
        let bytes = self.read(rel, limit)?;
        String::from_utf8(bytes).map_err(|_| ProjectFileError::Io {
            path: shown(rel),
            source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
        })
    }

    /// Makes sure `rel` is a directory inside the project, creating it (and missing parents,
    /// inside the project only) if needed: a check made before anything is created in AWS, so a
    /// planted link at an output directory fails the job first.
    pub fn ensure_dir(&self, rel: &str) -> Result<(), ProjectFileError> {
        let path = relative(rel)?;
        // Opened, not stat'ed: an existing link leading out is refused here, as is a file.
        match self.dir.open_dir(path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(classify(rel, e)),
        }
        self.dir
            .create_dir_all(path)
            .map_err(|e| classify(rel, e))?;
        self.dir
            .open_dir(path)
            .map(drop)
            .map_err(|e| classify(rel, e))
    }

    /// Writes `data` to `rel`, creating missing parent directories (inside the project only),
    /// through a temporary file renamed over the target: a symlink planted at `rel` is replaced,
    /// never followed.
    pub fn write(&self, rel: &str, data: &[u8]) -> Result<(), ProjectFileError> {
        let mut file = self.create(rel)?;
        file.write_all(data).map_err(|e| classify(rel, e))?;
        file.commit()
    }

    /// Starts writing `rel` as [`ProjectDir::write`] does, for data that arrives in pieces:
    /// nothing appears at `rel` until [`NewFile::commit`]; dropping the file removes it.
    pub fn create(&self, rel: &str) -> Result<NewFile, ProjectFileError> {
        let path = relative(rel)?;
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(p), Some(n)) => (p, n),
            _ => return Err(ProjectFileError::NotRelative { path: shown(rel) }),
        };
        let dir = if parent.as_os_str().is_empty() {
            self.dir.try_clone().map_err(|e| classify(rel, e))?
        } else {
            self.dir
                .create_dir_all(parent)
                .map_err(|e| classify(rel, e))?;
            self.dir.open_dir(parent).map_err(|e| classify(rel, e))?
        };
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".sagemaker-executor-{}.tmp", std::process::id()));
        let tmp = Path::new(&tmp_name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let file = match dir.open_with(tmp, &options) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A leftover of a killed run (or a planted link): unlink it, never follow it.
                dir.remove_file(tmp).map_err(|e| classify(rel, e))?;
                dir.open_with(tmp, &options).map_err(|e| classify(rel, e))?
            }
            Err(e) => return Err(classify(rel, e)),
        };
        Ok(NewFile {
            file: Some(file),
            dir,
            tmp: tmp_name,
            name: name.to_owned(),
            rel: rel.to_owned(),
        })
    }
}

/// A file being written into the project dir; see [`ProjectDir::create`].
#[derive(Debug)]
pub struct NewFile {
    file: Option<cap_std::fs::File>,
    dir: Dir,
    tmp: std::ffi::OsString,
    name: std::ffi::OsString,
    rel: String,
}

impl Write for NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl NewFile {
    /// Syncs the data and renames it over the target.
    pub fn commit(mut self) -> Result<(), ProjectFileError> {
        let rel = self.rel.clone();
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(|e| classify(&rel, e))?;
        }
        // A directory at the target cannot be replaced by a rename; say so plainly.
        if self
            .dir
            .symlink_metadata(&self.name)
            .is_ok_and(|m| m.is_dir())
        {
            return Err(ProjectFileError::NotAFile { path: shown(&rel) });
        }
        self.dir
            .rename(&self.tmp, &self.dir, &self.name)
            .map_err(|e| classify(&rel, e))?;
        // Renamed: nothing left for Drop to remove.
        self.tmp.clear();
        Ok(())
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.tmp.is_empty() {
            let _ = self.dir.remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn project() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let base = tempfile::tempdir().expect("tempdir");
        let project = base.path().join("project");
        let outside = base.path().join("host-secret");
        std::fs::create_dir(&project).expect("project dir");
        std::fs::write(&outside, "runner host secret").expect("outside file");
        (base, project, outside)
    }

    #[test]
    fn reads_stay_inside_and_are_capped() {
        let (_base, dir, outside) = project();
        std::fs::write(dir.join("spec.yaml"), "action: train\n").expect("write");
        std::fs::create_dir(dir.join("sub")).expect("mkdir");
        symlink("../spec.yaml", dir.join("sub/inner-link")).expect("link");
        symlink(&outside, dir.join("abs-link")).expect("link");
        symlink("../host-secret", dir.join("rel-link")).expect("link");
        let p = ProjectDir::open(&dir).expect("open");
        assert_eq!(
            p.read_text("spec.yaml", 100).expect("read"),
            "action: train\n"
        );
        assert_eq!(
            p.read_text("sub/inner-link", 100)
                .expect("a link inside is fine"),
            "action: train\n"
        );
        for escaping in ["abs-link", "rel-link", "sub/../../host-secret"] {
            let err = p.read(escaping, 100).expect_err(escaping);
            assert!(err.is_jobs_fault(), "{escaping}: {err}");
            assert!(!err.to_string().contains("runner host secret"), "{err}");
        }
        for bad in ["/etc/passwd", "../host-secret", "", "."] {
            assert!(
                matches!(p.read(bad, 100), Err(ProjectFileError::NotRelative { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            p.read("spec.yaml", 4),
            Err(ProjectFileError::TooLarge { limit: 4, .. })
        ));
        assert!(matches!(
            p.read("missing", 4),
            Err(ProjectFileError::NotFound { .. })
        ));
        assert!(matches!(
            p.read("sub", 4),
            Err(ProjectFileError::NotAFile { .. })
        ));
    }

    #[test]
    fn a_fifo_is_not_read() {
        let (_base, dir, _outside) = project();
        nix::unistd::mkfifo(&dir.join("pipe"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let p = ProjectDir::open(&dir).expect("open");
        // Opening a FIFO for reading would block until a writer comes; it must be refused first.
        let err = p.read("pipe", 100);
        assert!(
            matches!(err, Err(ProjectFileError::NotAFile { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn writes_replace_planted_links_instead_of_following_them() {
        let (_base, dir, outside) = project();
        symlink(&outside, dir.join("sagemaker.env")).expect("link");
        symlink("../host-secret", dir.join("metrics.txt")).expect("link");
        std::fs::create_dir(dir.join("release")).expect("mkdir");
        let p = ProjectDir::open(&dir).expect("open");
        p.write("sagemaker.env", b"A=1\n").expect("write");
        p.write("metrics.txt", b"m 1\n").expect("write");
        assert_eq!(
            std::fs::read_to_string(&outside).expect("outside intact"),
            "runner host secret"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("sagemaker.env")).expect("written"),
            "A=1\n"
        );
        assert!(
            !std::fs::symlink_metadata(dir.join("sagemaker.env"))
                .expect("meta")
                .file_type()
                .is_symlink()
        );
        p.write("release/x/manifest.json", b"{}")
            .expect("nested write");
        assert!(dir.join("release/x/manifest.json").is_file());
        // A directory symlinked out of the project is not written into.
        symlink(outside.parent().expect("base"), dir.join("out")).expect("link");
        assert!(p.write("out/evil", b"x").is_err());
        assert!(!outside.parent().expect("base").join("evil").exists());
        // A planted temp-file link is unlinked, not followed.
        let tmp = dir.join(format!(
            ".again.sagemaker-executor-{}.tmp",
            std::process::id()
        ));
        symlink(&outside, &tmp).expect("link");
        p.write("again", b"ok").expect("write");
        assert_eq!(
            std::fs::read_to_string(&outside).expect("outside intact"),
            "runner host secret"
        );
        assert!(matches!(
            p.write("release", b"x"),
            Err(ProjectFileError::NotAFile { .. })
        ));
    }

    #[test]
    fn ensure_dir_refuses_a_planted_link_and_creates_nothing_outside() {
        let (base, dir, outside) = project();
        let p = ProjectDir::open(&dir).expect("open");
        p.ensure_dir("release").expect("created");
        p.ensure_dir("release").expect("exists");
        assert!(dir.join("release").is_dir());
        symlink(base.path(), dir.join("out")).expect("link");
        symlink("../..", dir.join("up")).expect("link");
        for bad in ["out", "out/new", "up", "up/new"] {
            let err = p.ensure_dir(bad).expect_err(bad);
            assert!(err.is_jobs_fault(), "{bad}: {err}");
        }
        assert!(!base.path().join("new").exists());
        assert!(matches!(
            p.ensure_dir("../x"),
            Err(ProjectFileError::NotRelative { .. })
        ));
        std::fs::write(dir.join("file"), "x").expect("file");
        assert!(p.ensure_dir("file").is_err());
        assert_eq!(
            std::fs::read_to_string(&outside).expect("outside intact"),
            "runner host secret"
        );
    }
}
