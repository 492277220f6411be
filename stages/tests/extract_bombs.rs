//! Archive bombs against the extractor with its production limits: a million tiny entries and
//! a gzip bomb, generated as streams (nothing of their size is ever held in memory or written
//! to disk), must stop at the cap as job-caused errors, quickly, without writing outside the
//! workspace. The hostile-input corpus (`tests/tests/hostile.rs`) covers the same bombs end to
//! end where the executor config can lower a limit; the config has no entry cap, so the million
//! entries are tested here.

use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use stages::workspace::{ExtractLimits, WorkspaceError, extract_tar, extract_tar_gz};

/// A tar stream of `count` copies of one 512-byte header (no data blocks), then the two zero
/// blocks that end an archive, produced on the fly.
struct Repeated {
    header: [u8; 512],
    count: u64,
    emitted: u64,
    offset: usize,
    trailer: usize,
}

impl Repeated {
    fn new(header: tar::Header, count: u64) -> Self {
        let mut block = [0u8; 512];
        block.copy_from_slice(header.as_bytes());
        Repeated {
            header: block,
            count,
            emitted: 0,
            offset: 0,
            trailer: 1024,
        }
    }
}

impl Read for Repeated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.emitted < self.count {
            let n = buf.len().min(512 - self.offset);
            buf[..n].copy_from_slice(&self.header[self.offset..self.offset + n]);
            self.offset += n;
            if self.offset == 512 {
                self.offset = 0;
                self.emitted += 1;
            }
            return Ok(n);
        }
        let n = buf.len().min(self.trailer);
        buf[..n].fill(0);
        self.trailer -= n;
        Ok(n)
    }
}

/// `<base>/builds/1/g/p` and its `.tmp` sibling, and `<base>/outside` that must stay empty.
fn sandbox() -> (tempfile::TempDir, Vec<PathBuf>, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = fs::canonicalize(dir.path()).expect("canonical");
    let outside = base.join("outside");
    fs::create_dir_all(&outside).expect("outside");
    let roots = vec![base.join("builds/1/g/p"), base.join("builds/1/g/p.tmp")];
    (dir, roots, outside)
}

fn member(path: &std::path::Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_owned()
}

#[test]
fn a_million_tiny_entries_stop_at_the_default_entry_cap() {
    let (_dir, roots, outside) = sandbox();
    let limits = ExtractLimits::default();
    assert_eq!(limits.max_entries, 1_000_000);
    // The same tiny directory over and over: each costs the extractor a header and a check,
    // the cheapest member there is, so the cap (not the disk) is what ends the stream.
    let mut header = tar::Header::new_gnu();
    header.set_path(member(&roots[0].join("d"))).expect("path");
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_cksum();
    let started = Instant::now();
    let err = extract_tar(
        Repeated::new(header, limits.max_entries + 1),
        &roots,
        &limits,
    )
    .expect_err("over the entry cap");
    assert!(
        matches!(err, WorkspaceError::TooManyEntries { limit: 1_000_000 }),
        "{err}"
    );
    assert!(err.is_job_caused(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
    assert!(roots[0].join("d").is_dir());
    assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0);
}

#[test]
fn a_million_refused_entries_are_counted_not_listed() {
    let (_dir, roots, outside) = sandbox();
    // Under the cap, all refused (outside the roots): the summary lists 100 and counts the rest.
    let mut header = tar::Header::new_gnu();
    header
        .set_path(member(&outside.join("evil")))
        .expect("path");
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(0);
    header.set_cksum();
    let count = 1_000_000;
    let summary = extract_tar(
        Repeated::new(header, count),
        &roots,
        &ExtractLimits::default(),
    )
    .expect("refused members do not stop extraction");
    assert_eq!(summary.skipped_total, count);
    assert_eq!(summary.skipped.len(), 100);
    assert_eq!(summary.files, 0);
    assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0);
}

#[test]
fn a_gzip_bomb_stops_at_the_byte_cap_before_its_data_is_written() {
    let (_dir, roots, outside) = sandbox();
    // 256 MiB of zeros in one member compress to a few hundred KiB (at level 9; zlib-rs's
    // level 1 uses static codes and gives ~2.5 MiB).
    let size: u64 = 256 << 20;
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    {
        let mut b = tar::Builder::new(&mut gz);
        let mut header = tar::Header::new_gnu();
        header
            .set_path(member(&roots[0].join("zeros")))
            .expect("path");
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        b.append(&header, io::repeat(0).take(size)).expect("append");
        b.finish().expect("finish");
    }
    let compressed = gz.finish().expect("gzip");
    assert!(compressed.len() < 2 << 20, "{} bytes", compressed.len());
    let limits = ExtractLimits {
        max_bytes: 1 << 20,
        ..ExtractLimits::default()
    };
    let err = extract_tar_gz(&compressed[..], &roots, &limits).expect_err("over the byte cap");
    assert!(
        matches!(err, WorkspaceError::ArchiveTooLarge { limit } if limit == 1 << 20),
        "{err}"
    );
    assert!(err.is_job_caused());
    assert!(!roots[0].join("zeros").exists(), "no data written");
    assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0);
}
