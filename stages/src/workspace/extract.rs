//! Safe, streaming extraction of a returned workspace into the local project dir, synchronously
//! (run it on a blocking thread).
//!
//! The archive comes from a container the job's author controls, so every member is treated as
//! hostile. The rules, in the order they are checked:
//!
//! * limits first: every member's size counts against [`ExtractLimits::max_bytes`], extracted or
//!   not, and every header against [`ExtractLimits::max_entries`]; going over stops extraction
//!   with a job-caused error;
//! * GNU long-name and PAX headers are read by this module (the tar crate's raw mode) with a size
//!   cap, because the crate would otherwise buffer a header of any size in memory;
//! * a member name that is absolute (before anything is stripped) or has a `..` component is
//!   refused; the rest is joined onto '/' and must lie under one of the allowed roots;
//! * every directory between the root and the member must be a real directory (checked with
//!   `symlink_metadata`, never followed), so nothing is written through a symlink, whether it
//!   existed before or was planted earlier in the same archive; an existing file or symlink at
//!   the member's own path is unlinked and the file created with `O_EXCL`, so the last component
//!   is never followed either;
//! * a symlink may only point inside the allowed roots: its target is resolved against the
//!   filesystem as it is (following existing links, at most 40 hops), and `..` is only accepted
//!   as the leading components of a relative target (a later member could otherwise turn an
//!   inside-looking `a/../..` into an escape by making `a` a link);
//! * a hard link must name a regular file under an allowed root, reached without symlinks;
//! * devices, FIFOs, sparse files and unknown entry types are refused;
//! * modes keep only the permission bits (no setuid/setgid/sticky); directories always stay
//!   `u+rwx` so the runner can clean the build dir up; file mtimes are restored, owners are not.
//!
//! Refused members are reported in [`ExtractSummary::skipped`] and extraction goes on; only limits,
//! a broken archive and local write failures stop it.
//!
//! What it does not do: delete local files that the remote job deleted (restore only adds and
//! overwrites), restore directory mtimes (that would need a list of every directory in memory),
//! or defend against another process changing the tree while it runs.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::MultiGzDecoder;
use tar::{Entry, EntryType};

use super::WorkspaceError;
use super::location::{RETURNED_WORKSPACE_MEMBER, is_normal_absolute};

/// Size caps for extension headers; real ones are a few hundred bytes (PATH_MAX is 4096).
const MAX_LONG_NAME: u64 = 64 * 1024;
const MAX_PAX_HEADER: u64 = 1024 * 1024;
/// Longest path and path component the local filesystem accepts (Linux).
const MAX_PATH_LEN: usize = 4095;
const MAX_COMPONENT_LEN: usize = 255;
/// How many skipped members are described one by one; the rest are only counted.
const MAX_SKIPPED_LISTED: usize = 100;
/// Symlink hops followed when resolving a link target (the kernel's own limit).
const MAX_LINK_HOPS: u32 = 40;
/// Verified-directory cache entries kept before the cache is dropped (it only saves syscalls).
const MAX_VERIFIED_DIRS: usize = 100_000;
const COPY_BUFFER: usize = 128 * 1024;

/// Caps on what one restore may write; exceeding one is a job-caused error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Total bytes of all members (extracted or skipped). Default 20 GiB.
    pub max_bytes: u64,
    /// Number of members. Default 1,000,000. Extension headers (long names, PAX) are counted
    /// separately against four times this number.
    pub max_entries: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024 * 1024,
            max_entries: 1_000_000,
        }
    }
}

/// What a restore did, for the job log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    /// Regular files, symlinks and hard links written (directories are not counted).
    pub files: u64,
    /// File content bytes written.
    pub bytes: u64,
    /// The first refused members with the reason, as `"<path>: <reason>"`.
    pub skipped: Vec<String>,
    /// How many members were refused in all (may exceed `skipped.len()`).
    pub skipped_total: u64,
}

/// Extracts an uncompressed tar stream under `allowed_roots` (absolute, normalized paths; missing
/// ones are created when a member needs them). See the module docs for the rules.
///
/// # Errors
/// [`WorkspaceError::ArchiveTooLarge`]/[`WorkspaceError::TooManyEntries`] (job-caused),
/// [`WorkspaceError::CorruptArchive`] (job-caused), [`WorkspaceError::Restore`] (local I/O),
/// [`WorkspaceError::InvalidRoot`].
pub fn extract_tar<R: Read>(
    reader: R,
    allowed_roots: &[PathBuf],
    limits: &ExtractLimits,
) -> Result<ExtractSummary, WorkspaceError> {
    let mut extractor = Extractor::new(allowed_roots, *limits)?;
    extractor.extract(reader)?;
    Ok(extractor.summary)
}

/// [`extract_tar`] for a gzip-compressed stream (a `workspace.tar.gz`).
pub fn extract_tar_gz<R: Read>(
    reader: R,
    allowed_roots: &[PathBuf],
    limits: &ExtractLimits,
) -> Result<ExtractSummary, WorkspaceError> {
    extract_tar(MultiGzDecoder::new(reader), allowed_roots, limits)
}

/// Extracts SageMaker's `output.tar.gz`: finds the `workspace.tar` member of the outer archive
/// and extracts it as [`extract_tar`] would, streaming (nothing is buffered in memory or on disk).
/// Members before it count against the byte and entry limits, since they must be decompressed.
///
/// # Errors
/// As [`extract_tar`], plus [`WorkspaceError::WorkspaceMemberMissing`] when the outer archive
/// has no `workspace.tar`.
pub fn extract_training_output<R: Read>(
    gz_reader: R,
    allowed_roots: &[PathBuf],
    limits: &ExtractLimits,
) -> Result<ExtractSummary, WorkspaceError> {
    let mut extractor = Extractor::new(allowed_roots, *limits)?;
    let mut outer = tar::Archive::new(MultiGzDecoder::new(gz_reader));
    let entries = outer
        .entries()
        .map_err(|e| corrupt("reading the training output", e))?
        .raw(true);
    let mut ext = PendingExt::default();
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt("reading the training output", e))?;
        extractor.count_header(&entry)?;
        if ext.absorb(&mut entry)? {
            continue;
        }
        let ext = std::mem::take(&mut ext);
        let name = ext.path(&entry);
        ext.check_size(&entry, &name)?;
        let is_workspace = matches!(
            member_components(&name).as_deref(),
            Ok([only]) if only.as_bytes() == RETURNED_WORKSPACE_MEMBER.as_bytes()
        );
        if is_workspace
            && matches!(
                entry.header().entry_type(),
                EntryType::Regular | EntryType::Continuous
            )
        {
            extractor.extract(&mut entry)?;
            return Ok(extractor.summary);
        }
        extractor.charge(entry.size())?;
    }
    Err(WorkspaceError::WorkspaceMemberMissing {
        member: RETURNED_WORKSPACE_MEMBER,
    })
}

fn corrupt(context: impl Into<String>, source: io::Error) -> WorkspaceError {
    WorkspaceError::CorruptArchive {
        context: context.into(),
        source,
    }
}

fn restore_err(path: &Path, source: io::Error) -> WorkspaceError {
    WorkspaceError::Restore {
        path: path.to_path_buf(),
        source,
    }
}

/// Extension headers seen since the last real member; they describe the next one.
#[derive(Default)]
struct PendingExt {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
    /// Set when an extension header was refused; the member it describes is refused too.
    refused: Option<&'static str>,
}

impl PendingExt {
    /// Consumes `entry` if it is an extension header; true when it was one.
    fn absorb<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<bool, WorkspaceError> {
        let kind = entry.header().entry_type();
        let cap = match kind {
            EntryType::GNULongName | EntryType::GNULongLink => MAX_LONG_NAME,
            EntryType::XHeader => MAX_PAX_HEADER,
            // Global PAX headers hold archive-wide defaults (charset, comments); nothing here
            // needs them. The tar crate skips their data.
            EntryType::XGlobalHeader => return Ok(true),
            _ => return Ok(false),
        };
        if entry.size() > cap {
            self.refused = Some("extension header (long name or PAX) over the size cap");
            return Ok(true);
        }
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| corrupt("reading an extension header", e))?;
        match kind {
            EntryType::GNULongName => self.long_name = Some(trim_nul(data)),
            EntryType::GNULongLink => self.long_link = Some(trim_nul(data)),
            _ => self.parse_pax(&data)?,
        }
        Ok(true)
    }

    fn parse_pax(&mut self, data: &[u8]) -> Result<(), WorkspaceError> {
        for ext in tar::PaxExtensions::new(data) {
            let ext = ext.map_err(|e| corrupt("parsing a PAX header", e))?;
            match ext.key_bytes() {
                b"path" => self.pax_path = Some(ext.value_bytes().to_vec()),
                b"linkpath" => self.pax_link = Some(ext.value_bytes().to_vec()),
                b"size" => {
                    let size = ext
                        .value()
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .ok_or_else(|| {
                            corrupt(
                                "parsing a PAX header",
                                io::Error::new(io::ErrorKind::InvalidData, "bad size value"),
                            )
                        })?;
                    self.pax_size = Some(size);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Raw mode reads a member with its header's size; a PAX size override (members over 8 GiB
    /// from pax-format writers) would desynchronise the stream, so it is an error, not a guess.
    fn check_size<R: Read>(&self, entry: &Entry<'_, R>, name: &[u8]) -> Result<(), WorkspaceError> {
        match self.pax_size {
            Some(size) if size != entry.size() => Err(corrupt(
                format!("{}: PAX size override is not supported", printable(name)),
                io::Error::new(io::ErrorKind::Unsupported, "pax size"),
            )),
            _ => Ok(()),
        }
    }

    fn path<R: Read>(&self, entry: &Entry<'_, R>) -> Vec<u8> {
        self.pax_path
            .clone()
            .or_else(|| self.long_name.clone())
            .unwrap_or_else(|| entry.header().path_bytes().into_owned())
    }

    fn link<R: Read>(&self, entry: &Entry<'_, R>) -> Option<Vec<u8>> {
        self.pax_link
            .clone()
            .or_else(|| self.long_link.clone())
            .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()))
    }
}

fn trim_nul(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

/// The components of a member name, or why it is refused. Checked before anything is stripped.
fn member_components(name: &[u8]) -> Result<Vec<&OsStr>, &'static str> {
    if name.first() == Some(&b'/') {
        return Err("absolute member name");
    }
    if name.contains(&0) {
        return Err("NUL byte in member name");
    }
    let mut out = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("`..` in member name"),
            _ => out.push(OsStr::from_bytes(part)),
        }
    }
    Ok(out)
}

/// A member name made fit for one job-log line: lossy UTF-8, control characters replaced.
fn printable(name: &[u8]) -> String {
    String::from_utf8_lossy(name)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Why a member was refused; extraction goes on.
type Refusal = String;

struct Extractor {
    roots: Vec<PathBuf>,
    /// The roots as given and with symlinked host ancestors resolved, so a symlink target
    /// resolved on disk can be compared against them.
    real_roots: Vec<PathBuf>,
    limits: ExtractLimits,
    members: u64,
    headers: u64,
    bytes_seen: u64,
    summary: ExtractSummary,
    /// Directories known to be real (not symlinks) during this run. Nothing here ever replaces a
    /// directory, so an entry stays true until the run ends.
    verified: HashSet<PathBuf>,
    buf: Vec<u8>,
}

impl Extractor {
    fn new(allowed_roots: &[PathBuf], limits: ExtractLimits) -> Result<Self, WorkspaceError> {
        let mut roots = Vec::with_capacity(allowed_roots.len());
        for root in allowed_roots {
            // "/" itself would make every path fair game.
            if !is_normal_absolute(root) || root.parent().is_none() {
                return Err(WorkspaceError::InvalidRoot { path: root.clone() });
            }
            roots.push(root.clone());
        }
        // A resolved symlink target is compared against both spellings of each root: as given,
        // and with symlinked host ancestors (say /builds -> /data/builds) resolved.
        let mut real_roots = roots.clone();
        real_roots.extend(roots.iter().filter_map(|root| resolve(root).ok()));
        Ok(Self {
            roots,
            real_roots,
            limits,
            members: 0,
            headers: 0,
            bytes_seen: 0,
            summary: ExtractSummary::default(),
            verified: HashSet::new(),
            buf: vec![0; COPY_BUFFER],
        })
    }

    fn count_header<R: Read>(&mut self, entry: &Entry<'_, R>) -> Result<(), WorkspaceError> {
        let is_ext = matches!(
            entry.header().entry_type(),
            EntryType::GNULongName
                | EntryType::GNULongLink
                | EntryType::XHeader
                | EntryType::XGlobalHeader
        );
        if is_ext {
            self.headers += 1;
            if self.headers > self.limits.max_entries.saturating_mul(4) {
                return Err(WorkspaceError::TooManyEntries {
                    limit: self.limits.max_entries,
                });
            }
        } else {
            self.members += 1;
            if self.members > self.limits.max_entries {
                return Err(WorkspaceError::TooManyEntries {
                    limit: self.limits.max_entries,
                });
            }
        }
        Ok(())
    }

    fn charge(&mut self, size: u64) -> Result<(), WorkspaceError> {
        self.bytes_seen = self.bytes_seen.saturating_add(size);
        if self.bytes_seen > self.limits.max_bytes {
            return Err(WorkspaceError::ArchiveTooLarge {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    fn skip(&mut self, name: &[u8], reason: impl Into<String>) {
        self.summary.skipped_total += 1;
        if self.summary.skipped.len() < MAX_SKIPPED_LISTED {
            let reason = reason.into();
            self.summary
                .skipped
                .push(format!("{}: {reason}", printable(name)));
        }
    }

    fn extract<R: Read>(&mut self, reader: R) -> Result<(), WorkspaceError> {
        let mut archive = tar::Archive::new(reader);
        // Raw mode: extension headers come to us, so their size can be capped (see module docs).
        let entries = archive
            .entries()
            .map_err(|e| corrupt("reading the workspace archive", e))?
            .raw(true);
        let mut ext = PendingExt::default();
        for entry in entries {
            let mut entry = entry.map_err(|e| corrupt("reading the workspace archive", e))?;
            self.count_header(&entry)?;
            self.charge(entry.size())?;
            if ext.absorb(&mut entry)? {
                continue;
            }
            let ext = std::mem::take(&mut ext);
            self.member(&mut entry, &ext)?;
        }
        Ok(())
    }

    fn member<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        ext: &PendingExt,
    ) -> Result<(), WorkspaceError> {
        let name = ext.path(entry);
        ext.check_size(entry, &name)?;
        if let Some(reason) = ext.refused {
            self.skip(&name, reason);
            return Ok(());
        }
        let target = match member_components(&name) {
            Ok(parts) => parts
                .into_iter()
                .fold(PathBuf::from("/"), |path, part| path.join(part)),
            Err(reason) => {
                self.skip(&name, reason);
                return Ok(());
            }
        };
        let Some(root) = self.root_of(&target) else {
            self.skip(&name, "outside the workspace");
            return Ok(());
        };
        let too_long = target.as_os_str().len() > MAX_PATH_LEN
            || target
                .components()
                .any(|c| c.as_os_str().len() > MAX_COMPONENT_LEN);
        if too_long {
            self.skip(&name, "name too long");
            return Ok(());
        }
        let kind = entry.header().entry_type();
        let outcome = match kind {
            EntryType::Regular | EntryType::Continuous => {
                self.write_file(entry, &root, &target, &name)?
            }
            EntryType::Directory => self.make_dir(entry, &root, &target)?,
            EntryType::Symlink => match ext.link(entry) {
                Some(link) => self.make_symlink(&root, &target, &link)?,
                None => Err("symlink without a target".into()),
            },
            EntryType::Link => match ext.link(entry) {
                Some(link) => self.make_hardlink(&root, &target, &link)?,
                None => Err("hard link without a target".into()),
            },
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                Err("device or FIFO entries are not restored".into())
            }
            EntryType::GNUSparse => Err("sparse files are not supported".into()),
            other => Err(format!(
                "unsupported entry type {:?}",
                other.as_byte() as char
            )),
        };
        if let Err(reason) = outcome {
            self.skip(&name, reason);
        }
        Ok(())
    }

    /// The allowed root `path` lies under (the longest one, should roots nest).
    fn root_of(&self, path: &Path) -> Option<PathBuf> {
        self.roots
            .iter()
            .filter(|root| path.starts_with(root))
            .max_by_key(|root| root.as_os_str().len())
            .cloned()
    }

    fn is_under_real_root(&self, path: &Path) -> bool {
        self.real_roots.iter().any(|root| path.starts_with(root))
    }

    /// Makes sure `root` exists as a directory (creating it and its ancestors, which are the
    /// executor's own trusted path).
    fn ensure_root(&mut self, root: &Path) -> Result<Result<(), Refusal>, WorkspaceError> {
        if self.verified.contains(root) {
            return Ok(Ok(()));
        }
        // Following a symlinked root (or ancestor) is fine here: it is the executor's path.
        match fs::metadata(root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(Err("the workspace root is not a directory".into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(root).map_err(|e| restore_err(root, e))?;
            }
            Err(e) => return Err(restore_err(root, e)),
        }
        self.remember(root.to_path_buf());
        Ok(Ok(()))
    }

    fn remember(&mut self, dir: PathBuf) {
        if self.verified.len() >= MAX_VERIFIED_DIRS {
            self.verified.clear();
        }
        self.verified.insert(dir);
    }

    /// Ensures every directory from `root` down to `dir` is a real directory, creating missing
    /// ones. Never follows a symlink below the root.
    fn ensure_dirs(
        &mut self,
        root: &Path,
        dir: &Path,
    ) -> Result<Result<(), Refusal>, WorkspaceError> {
        if let Err(reason) = self.ensure_root(root)? {
            return Ok(Err(reason));
        }
        let Ok(below) = dir.strip_prefix(root) else {
            return Ok(Err("outside the workspace".into()));
        };
        let mut current = root.to_path_buf();
        for part in below.components() {
            current.push(part);
            if self.verified.contains(&current) {
                continue;
            }
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Ok(Err(format!(
                        "{} is a symlink; not writing through it",
                        current.display()
                    )));
                }
                Ok(_) => {
                    return Ok(Err(format!("{} is not a directory", current.display())));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&current).map_err(|e| restore_err(&current, e))?;
                }
                Err(e) => return Err(restore_err(&current, e)),
            }
            self.remember(current.clone());
        }
        Ok(Ok(()))
    }

    /// Unlinks whatever non-directory sits at `path` (a file, or a symlink, which is removed,
    /// not followed). A directory is refused: replacing it would mean deleting a tree.
    fn clear_path(&mut self, path: &Path) -> Result<Result<(), Refusal>, WorkspaceError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_dir() => {
                Ok(Err("a directory exists at this path".into()))
            }
            Ok(_) => match fs::remove_file(path) {
                Ok(()) => Ok(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ok(())),
                Err(e) => Err(restore_err(path, e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ok(())),
            Err(e) => Err(restore_err(path, e)),
        }
    }

    /// Prepares the parent directories of a non-directory member and clears its path.
    fn prepare_leaf(
        &mut self,
        root: &Path,
        target: &Path,
    ) -> Result<Result<(), Refusal>, WorkspaceError> {
        if target == root {
            return Ok(Err("would replace the workspace root".into()));
        }
        let Some(parent) = target.parent() else {
            return Ok(Err("no parent directory".into()));
        };
        if let Err(reason) = self.ensure_dirs(root, parent)? {
            return Ok(Err(reason));
        }
        self.clear_path(target)
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        root: &Path,
        target: &Path,
        name: &[u8],
    ) -> Result<Result<(), Refusal>, WorkspaceError> {
        if let Err(reason) = self.prepare_leaf(root, target)? {
            return Ok(Err(reason));
        }
        // create_new = O_CREAT|O_EXCL: fails rather than follows if a symlink appeared meanwhile.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
            .map_err(|e| restore_err(target, e))?;
        let size = entry.size();
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(format!("reading {}", printable(name)), e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| restore_err(target, e))?;
            written += n as u64;
        }
        if written != size {
            return Err(corrupt(
                format!("{} is truncated", printable(name)),
                io::Error::from(io::ErrorKind::UnexpectedEof),
            ));
        }
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o777;
        // On the open handle (fchmod/futimens): no path lookup, so nothing to follow.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| restore_err(target, e))?;
        if let Ok(mtime) = header.mtime() {
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
                .map_err(|e| restore_err(target, e))?;
        }
        self.summary.files += 1;
        self.summary.bytes += written;
        Ok(Ok(()))
    }

    fn make_dir<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        root: &Path,
        target: &Path,
    ) -> Result<Result<(), Refusal>, WorkspaceError> {
        if target == root {
            // The root's own metadata stays the host's.
            return self.ensure_root(root);
        }
        let Some(parent) = target.parent() else {
            return Ok(Err("no parent directory".into()));
        };
        if let Err(reason) = self.ensure_dirs(root, parent)? {
            return Ok(Err(reason));
        }
        match fs::symlink_metadata(target) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => {
                // A file or symlink where the job now has a directory: replace it (unlink only).
                fs::remove_file(target).map_err(|e| restore_err(target, e))?;
                fs::create_dir(target).map_err(|e| restore_err(target, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(target).map_err(|e| restore_err(target, e))?;
            }
            Err(e) => return Err(restore_err(target, e)),
        }
        // Always u+rwx, so later members can be written and the runner can delete the tree.
        let mode = (entry.header().mode().unwrap_or(0o755) & 0o777) | 0o700;
        // The path was just checked to be a real directory; set_permissions follows symlinks,
        // but nothing else changes this tree while we run.
        fs::set_permissions(target, Permissions::from_mode(mode))
            .map_err(|e| restore_err(target, e))?;
        self.remember(target.to_path_buf());
        Ok(Ok(()))
    }

    fn make_symlink(
        &mut self,
        root: &Path,
        target: &Path,
        link: &[u8],
    ) -> Result<Result<(), Refusal>, WorkspaceError> {
        let Some(parent) = target.parent() else {
            return Ok(Err("no parent directory".into()));
        };
        if let Err(reason) = self.check_link_target(parent, link) {
            return Ok(Err(reason));
        }
        if let Err(reason) = self.prepare_leaf(root, target)? {
            return Ok(Err(reason));
        }
        std::os::unix::fs::symlink(OsStr::from_bytes(link), target)
            .map_err(|e| restore_err(target, e))?;
        self.summary.files += 1;
        Ok(Ok(()))
    }

    /// Accepts a symlink target only if it stays inside the allowed roots, both lexically and
    /// when resolved against the filesystem as it is now.
    fn check_link_target(&self, parent: &Path, link: &[u8]) -> Result<(), Refusal> {
        if link.is_empty() || link.contains(&0) {
            return Err("symlink with an empty or invalid target".into());
        }
        let absolute = link.first() == Some(&b'/');
        let mut lexical = if absolute {
            PathBuf::from("/")
        } else {
            parent.to_path_buf()
        };
        let mut seen_normal = false;
        for part in link.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    // Only leading `..` of a relative target: they climb real directories only
                    // (every directory below the root was verified not to be a link).
                    if absolute || seen_normal {
                        return Err(format!(
                            "symlink target {} has `..` after other components",
                            printable(link)
                        ));
                    }
                    if !lexical.pop() {
                        return Err("symlink target climbs above /".into());
                    }
                }
                _ => {
                    seen_normal = true;
                    lexical.push(OsStr::from_bytes(part));
                }
            }
        }
        let outside = || {
            format!(
                "symlink target {} is outside the workspace",
                printable(link)
            )
        };
        if self.root_of(&lexical).is_none() {
            return Err(outside());
        }
        let resolved = resolve(&lexical)?;
        if !self.is_under_real_root(&resolved) {
            return Err(outside());
        }
        Ok(())
    }

    fn make_hardlink(
        &mut self,
        root: &Path,
        target: &Path,
        link: &[u8],
    ) -> Result<Result<(), Refusal>, WorkspaceError> {
        // Hard link names are member names: relative to the archive root, i.e. to '/'.
        let source = match member_components(link) {
            Ok(parts) => parts
                .into_iter()
                .fold(PathBuf::from("/"), |path, part| path.join(part)),
            Err(reason) => return Ok(Err(format!("hard link target: {reason}"))),
        };
        let Some(source_root) = self.root_of(&source) else {
            return Ok(Err(format!(
                "hard link to {} outside the workspace",
                printable(link)
            )));
        };
        if source == *target {
            return Ok(Err("hard link to itself".into()));
        }
        // The link source must be reached without symlinks and be a regular file.
        let Some(source_parent) = source.parent() else {
            return Ok(Err("hard link target has no parent".into()));
        };
        if let Err(reason) = self.check_real_dirs(&source_root, source_parent) {
            return Ok(Err(reason));
        }
        match fs::symlink_metadata(&source) {
            Ok(meta) if meta.file_type().is_file() => {}
            _ => {
                return Ok(Err(
                    "hard link target is not an existing regular file".into()
                ));
            }
        }
        if let Err(reason) = self.prepare_leaf(root, target)? {
            return Ok(Err(reason));
        }
        fs::hard_link(&source, target).map_err(|e| restore_err(target, e))?;
        self.summary.files += 1;
        Ok(Ok(()))
    }

    /// Like [`Self::ensure_dirs`], but creates nothing.
    fn check_real_dirs(&self, root: &Path, dir: &Path) -> Result<(), Refusal> {
        let Ok(below) = dir.strip_prefix(root) else {
            return Err("outside the workspace".into());
        };
        let mut current = root.to_path_buf();
        for part in below.components() {
            current.push(part);
            if self.verified.contains(&current) {
                continue;
            }
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_dir() => {}
                _ => return Err(format!("{} is not a real directory", current.display())),
            }
        }
        Ok(())
    }
}

/// Resolves `path` against the filesystem, following existing symlinks in every component (at
/// most [`MAX_LINK_HOPS`]); components that do not exist are taken as they are.
fn resolve(path: &Path) -> Result<PathBuf, Refusal> {
    let mut todo: VecDeque<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    let mut current = PathBuf::from("/");
    let mut hops = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            // `current` is already resolved, so its lexical parent is its real parent.
            current.pop();
            continue;
        }
        current.push(&part);
        let is_link = fs::symlink_metadata(&current)
            .map(|meta| meta.file_type().is_symlink())
            .unwrap_or(false);
        if !is_link {
            continue;
        }
        hops += 1;
        if hops > MAX_LINK_HOPS {
            return Err("too many levels of symlinks".into());
        }
        let link = fs::read_link(&current)
            .map_err(|e| format!("cannot read symlink {}: {e}", current.display()))?;
        current.pop();
        if link.is_absolute() {
            current = PathBuf::from("/");
        }
        for part in link.components().rev() {
            match part {
                Component::Normal(p) => todo.push_front(p.to_os_string()),
                Component::ParentDir => todo.push_front(OsString::from("..")),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_checked_before_stripping() {
        assert_eq!(
            member_components(b"/etc/passwd"),
            Err("absolute member name")
        );
        assert_eq!(
            member_components(b"a/../../etc"),
            Err("`..` in member name")
        );
        assert_eq!(member_components(b"a/b\0c"), Err("NUL byte in member name"));
        let ok = member_components(b"./builds//1/./p/").expect("valid");
        assert_eq!(ok, ["builds", "1", "p"].map(OsStr::new));
    }

    #[test]
    fn printable_replaces_control_characters() {
        assert_eq!(printable(b"a\x1b[31mb\n"), "a?[31mb?");
    }

    #[test]
    fn resolve_follows_existing_links_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canonical tempdir");
        fs::create_dir(base.join("real")).expect("mkdir");
        std::os::unix::fs::symlink("real", base.join("link")).expect("symlink");
        std::os::unix::fs::symlink("/etc", base.join("real/out")).expect("symlink");
        assert_eq!(
            resolve(&base.join("link/missing/x")).expect("resolves"),
            base.join("real/missing/x")
        );
        assert_eq!(
            resolve(&base.join("link/out/passwd")).expect("resolves"),
            fs::canonicalize("/etc").expect("etc").join("passwd")
        );
        std::os::unix::fs::symlink("loop", base.join("loop")).expect("symlink");
        assert!(resolve(&base.join("loop")).is_err());
    }

    #[test]
    fn root_slash_and_relative_roots_are_refused() {
        for root in ["/", "rel", "/a/../b"] {
            assert!(
                Extractor::new(&[PathBuf::from(root)], ExtractLimits::default()).is_err(),
                "{root} must be refused"
            );
        }
    }
}
