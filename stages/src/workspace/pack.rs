//! Packing local directory trees into a gzip-compressed tar, synchronously (run it on a blocking
//! thread).
//!
//! Member names are the absolute paths without the leading '/', so `tar -xzf - -C /` in the
//! container restores them at the same absolute path. Owners are written as 0/0 so that a root
//! `tar -x` in the container does not hand the files to the runner host's uid.
//!
//! The gzip stream is a series of independent members compressed on several threads
//! ([`parallel_gzip`](super::parallel_gzip)); each file is deflated or stored as its name or a
//! sample of its first bytes says ([`compressibility`](super::compressibility)). The container
//! still needs only `tar -xz`: any gzip reader takes concatenated members as one stream.

use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::WorkspaceError;
use super::compressibility::{self, Mode, SAMPLE_LEN, SAMPLE_MIN_FILE};
use super::location::is_normal_absolute;
use super::parallel_gzip::{self, MEMBER_SIZE, MemberOptions, MemberWriter};

/// What packing (and uploading) did, for the job log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackSummary {
    /// File content bytes read from disk.
    pub bytes_in: u64,
    /// Compressed archive bytes produced.
    pub bytes_out: u64,
    /// Archive bytes (tar headers included) stored without compression because they would not
    /// compress; 0 when everything was deflated.
    pub bytes_stored: u64,
    /// Entries archived (files, directories and symlinks).
    pub files: u64,
    /// Upload parts: 1 for a single PutObject, 0 when nothing was uploaded (see
    /// [`pack_tree_to`]).
    pub parts: u32,
    /// What was left out or looked odd, and why (missing roots, sockets, files that changed size
    /// while being read).
    pub skipped: Vec<String>,
}

/// How [`pack_tree_with`] compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackOptions {
    /// gzip level (0-9) of compressible data; data that would not compress is stored whatever
    /// this says.
    pub level: u32,
    /// Compression threads; 0: one per available core, at most [`MAX_AUTO_THREADS`].
    pub threads: usize,
}

/// The most compression threads chosen by default: past this a runner host's other jobs lose
/// more than this one gains (the upload, not compression, bounds a large host), and each thread
/// adds 4 MiB to the memory bound.
pub const MAX_AUTO_THREADS: usize = 8;

impl PackOptions {
    /// The threads to use: `threads`, or the cores this process may use (capped).
    fn resolved_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_AUTO_THREADS),
            n => n,
        }
    }
}

/// [`pack_tree_with`] at gzip `level` on every available core.
///
/// # Errors
/// As [`pack_tree_with`].
pub fn pack_tree_to<W: Write>(
    roots: &[PathBuf],
    writer: W,
    level: u32,
) -> Result<PackSummary, WorkspaceError> {
    pack_tree_with(roots, writer, &PackOptions { level, threads: 0 })
}

/// Writes a tar.gz of `roots` into `writer` and returns what it packed.
///
/// Each root must be an absolute path without `.`/`..`; a missing root is skipped (and noted in
/// [`PackSummary::skipped`]). A root is followed if it is a symlink; nothing below it is:
/// symlinks are archived as symlinks. Sockets, FIFOs and devices are skipped. The archive is
/// finished and the last gzip member written, but `writer` itself is not flushed beyond that.
///
/// # Memory
/// Bounded by the compression pipeline: `(2 * threads + 2)` members of 1 MiB, each with its
/// compressed copy (12 MiB with 2 threads), whatever the size of the tree.
///
/// # Errors
/// [`WorkspaceError::InvalidRoot`], [`WorkspaceError::PackRead`] when the tree cannot be read,
/// [`WorkspaceError::PackWrite`] when `writer` fails.
pub fn pack_tree_with<W: Write>(
    roots: &[PathBuf],
    writer: W,
    opts: &PackOptions,
) -> Result<PackSummary, WorkspaceError> {
    for root in roots {
        if !is_normal_absolute(root) {
            return Err(WorkspaceError::InvalidRoot { path: root.clone() });
        }
    }
    let members = MemberOptions {
        level: opts.level.min(9),
        threads: opts.resolved_threads(),
        member_size: MEMBER_SIZE,
    };
    let (packed, written) = parallel_gzip::run(writer, &members, |members| {
        let mut packer = Packer {
            builder: tar::Builder::new(members),
            summary: PackSummary::default(),
            sample: Vec::with_capacity(SAMPLE_LEN),
            scratch: Vec::new(),
        };
        for root in roots {
            packer.pack_root(root)?;
        }
        let Packer {
            builder, summary, ..
        } = packer;
        // Writes the end-of-archive blocks.
        builder
            .into_inner()
            .map_err(|source| WorkspaceError::PackWrite { source })?;
        Ok(summary)
    });
    match (packed, written) {
        (Ok(mut summary), Ok(written)) => {
            summary.bytes_out = written.bytes_out;
            summary.bytes_stored = written.stored_in;
            Ok(summary)
        }
        // Packing stopped because writing did: the writer's error is the cause.
        (Err(WorkspaceError::PackWrite { .. }) | Ok(_), Err(source)) => {
            Err(WorkspaceError::PackWrite { source })
        }
        // A read error (or a bad root) is the cause even if writing failed after it.
        (Err(e), _) => Err(e),
    }
}

struct Packer<'w> {
    builder: tar::Builder<&'w mut MemberWriter>,
    summary: PackSummary,
    /// The first bytes of the file being packed, read ahead to judge its compressibility.
    sample: Vec<u8>,
    /// Where the sample is deflated to (its output is only measured).
    scratch: Vec<u8>,
}

impl Packer<'_> {
    fn pack_root(&mut self, root: &Path) -> Result<(), WorkspaceError> {
        // The root is the executor's own path; following it if it is a symlink matches what the
        // container will see after restoring it as a directory.
        let meta = match fs::metadata(root) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.summary
                    .skipped
                    .push(format!("{}: does not exist", root.display()));
                return Ok(());
            }
            Err(source) => {
                return Err(WorkspaceError::PackRead {
                    path: root.to_path_buf(),
                    source,
                });
            }
        };
        self.append(root, &meta)?;
        if !meta.is_dir() {
            return Ok(());
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let read_err = |source| WorkspaceError::PackRead {
                path: dir.clone(),
                source,
            };
            let mut children = fs::read_dir(&dir)
                .map_err(read_err)?
                .map(|entry| entry.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()
                .map_err(read_err)?;
            // Sorted, so the same tree always gives the same archive (and easier-to-read logs).
            children.sort();
            for name in children {
                let path = dir.join(name);
                let meta = match fs::symlink_metadata(&path) {
                    Ok(meta) => meta,
                    // Removed since it was listed: nothing to pack.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(WorkspaceError::PackRead { path, source }),
                };
                if self.append(&path, &meta)? && meta.is_dir() {
                    stack.push(path);
                }
            }
        }
        Ok(())
    }

    /// Appends one entry; false when it was skipped.
    fn append(&mut self, path: &Path, meta: &Metadata) -> Result<bool, WorkspaceError> {
        let name = path.strip_prefix("/").unwrap_or(path);
        let mut header = Header::new_gnu();
        header.set_mode(meta.mode() & 0o777);
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        let file_type = meta.file_type();
        let written = if file_type.is_dir() {
            header.set_entry_type(EntryType::Directory);
            self.builder.append_data(&mut header, name, io::empty())
        } else if file_type.is_symlink() {
            let target = fs::read_link(path).map_err(|source| WorkspaceError::PackRead {
                path: path.to_path_buf(),
                source,
            })?;
            header.set_entry_type(EntryType::Symlink);
            self.builder.append_link(&mut header, name, target)
        } else if file_type.is_file() {
            // O_NOFOLLOW: the entry was a regular file when listed; if a symlink took its
            // place since, the open fails instead of packing whatever the link points at.
            let file = match fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(source) => {
                    return Err(WorkspaceError::PackRead {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            };
            let size = meta.len();
            let read_err = |source| WorkspaceError::PackRead {
                path: path.to_path_buf(),
                source,
            };
            // The sample is read ahead and then packed first, so each byte is read once.
            self.sample.clear();
            let mode = match compressibility::mode_by_name(path) {
                Some(mode) => mode,
                None if size < SAMPLE_MIN_FILE => Mode::Deflate,
                None => {
                    (&file)
                        .take(SAMPLE_LEN as u64)
                        .read_to_end(&mut self.sample)
                        .map_err(read_err)?;
                    compressibility::mode_by_sample(&self.sample, &mut self.scratch)
                }
            };
            self.builder
                .get_mut()
                .set_mode(mode)
                .map_err(|source| WorkspaceError::PackWrite { source })?;
            header.set_entry_type(EntryType::Regular);
            header.set_size(size);
            let mut data = ExactLen::new((&self.sample[..]).chain(file), size);
            let written = self.builder.append_data(&mut header, name, &mut data);
            if let Some(source) = data.read_error.take() {
                return Err(WorkspaceError::PackRead {
                    path: path.to_path_buf(),
                    source,
                });
            }
            if data.padded {
                self.summary.skipped.push(format!(
                    "{}: shrank while being packed; the missing tail was zero-filled",
                    path.display()
                ));
            }
            self.summary.bytes_in += size;
            written
        } else {
            self.summary.skipped.push(format!(
                "{}: socket, FIFO or device file not packed",
                path.display()
            ));
            return Ok(false);
        };
        written.map_err(|source| WorkspaceError::PackWrite { source })?;
        self.summary.files += 1;
        Ok(true)
    }
}

/// Yields exactly `remaining` bytes: the file's content, cut off if the file grew, zero-filled if
/// it shrank. The tar header already states the size, so anything else would corrupt the archive.
/// Read errors are kept apart so they are reported as reading, not writing, failures.
struct ExactLen<R> {
    inner: R,
    remaining: u64,
    at_eof: bool,
    padded: bool,
    read_error: Option<io::Error>,
}

impl<R: Read> ExactLen<R> {
    fn new(inner: R, len: u64) -> Self {
        Self {
            inner,
            remaining: len,
            at_eof: false,
            padded: false,
            read_error: None,
        }
    }
}

impl<R: Read> Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        if !self.at_eof {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => self.at_eof = true,
                Ok(n) => {
                    self.remaining -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    let reported = io::Error::new(e.kind(), "reading a workspace file failed");
                    self.read_error = Some(e);
                    return Err(reported);
                }
            }
        }
        self.padded = true;
        buf[..want].fill(0);
        self.remaining -= want as u64;
        Ok(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_len_pads_and_truncates() {
        let mut out = Vec::new();
        let mut short = ExactLen::new(&b"abc"[..], 5);
        short.read_to_end(&mut out).expect("in-memory read");
        assert_eq!(out, b"abc\0\0");
        assert!(short.padded);

        out.clear();
        let mut long = ExactLen::new(&b"abcdef"[..], 2);
        long.read_to_end(&mut out).expect("in-memory read");
        assert_eq!(out, b"ab");
        assert!(!long.padded);
    }

    #[test]
    fn relative_root_is_refused() {
        let err = pack_tree_to(&[PathBuf::from("rel/dir")], Vec::new(), 1)
            .expect_err("relative root must be refused");
        assert!(matches!(err, WorkspaceError::InvalidRoot { .. }));
    }

    #[test]
    fn missing_root_is_skipped_and_archive_is_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let mut out = Vec::new();
        let summary = pack_tree_to(&[missing], &mut out, 6).expect("pack");
        assert_eq!(summary.files, 0);
        assert_eq!(summary.skipped.len(), 1);
        assert_eq!(summary.bytes_out, out.len() as u64);
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(&out[..]));
        assert_eq!(archive.entries().expect("entries").count(), 0);
    }
}
