//! Packing local directory trees into a gzip-compressed tar, synchronously (run it on a blocking
//! thread).
//!
//! Member names are the absolute paths without the leading '/', so `tar -xzf - -C /` in the
//! container restores them at the same absolute path. Owners are written as 0/0 so that a root
//! `tar -x` in the container does not hand the files to the runner host's uid.

use std::fs::{self, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

use super::WorkspaceError;
use super::location::is_normal_absolute;

/// The buffer between tar and gzip; large enough that each compression call gets a useful chunk.
const PACK_BUFFER: usize = 256 * 1024;

/// What packing (and uploading) did, for the job log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackSummary {
    /// File content bytes read from disk.
    pub bytes_in: u64,
    /// Compressed archive bytes produced.
    pub bytes_out: u64,
    /// Entries archived (files, directories and symlinks).
    pub files: u64,
    /// Upload parts: 1 for a single PutObject, 0 when nothing was uploaded (see
    /// [`pack_tree_to`]).
    pub parts: u32,
    /// What was left out or looked odd, and why (missing roots, sockets, files that changed size
    /// while being read).
    pub skipped: Vec<String>,
}

/// Writes a tar.gz of `roots` into `writer` at gzip `level` (0-9) and returns what it packed.
///
/// Each root must be an absolute path without `.`/`..`; a missing root is skipped (and noted in
/// [`PackSummary::skipped`]). A root is followed if it is a symlink; nothing below it is:
/// symlinks are archived as symlinks. Sockets, FIFOs and devices are skipped. The archive is
/// finished and the gzip trailer written, but `writer` itself is not flushed beyond that.
///
/// # Errors
/// [`WorkspaceError::InvalidRoot`], [`WorkspaceError::PackRead`] when the tree cannot be read,
/// [`WorkspaceError::PackWrite`] when `writer` fails.
pub fn pack_tree_to<W: Write>(
    roots: &[PathBuf],
    writer: W,
    level: u32,
) -> Result<PackSummary, WorkspaceError> {
    for root in roots {
        if !is_normal_absolute(root) {
            return Err(WorkspaceError::InvalidRoot { path: root.clone() });
        }
    }
    let counting = CountingWriter {
        inner: writer,
        count: 0,
    };
    let gz = GzEncoder::new(counting, Compression::new(level.min(9)));
    let mut packer = Packer {
        builder: tar::Builder::new(BufWriter::with_capacity(PACK_BUFFER, gz)),
        summary: PackSummary::default(),
    };
    for root in roots {
        packer.pack_root(root)?;
    }
    let Packer {
        builder,
        mut summary,
    } = packer;
    let finish = || -> io::Result<u64> {
        let buffered = builder.into_inner()?;
        let gz = buffered.into_inner().map_err(|e| e.into_error())?;
        Ok(gz.finish()?.count)
    };
    summary.bytes_out = finish().map_err(|source| WorkspaceError::PackWrite { source })?;
    Ok(summary)
}

struct Packer<W: Write> {
    builder: tar::Builder<W>,
    summary: PackSummary,
}

impl<W: Write> Packer<W> {
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
            header.set_entry_type(EntryType::Regular);
            header.set_size(size);
            let mut data = ExactLen::new(file, size);
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

/// Counts the bytes that reach the real writer (the compressed size).
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&out[..]));
        assert_eq!(archive.entries().expect("entries").count(), 0);
    }
}
