//! Pack/extract round trips and the refusal rules of the safe extractor, against hand-crafted
//! hostile archives. Everything runs in temp dirs; nothing outside them is touched.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use stages::workspace::{
    ExtractLimits, ExtractSummary, WorkspaceError, WorkspaceErrorKind, extract_tar, extract_tar_gz,
    extract_training_output, pack_tree_to,
};
use tar::{EntryType, Header};

/// A temp dir with a project dir `<base>/builds/1/group/project` and its `.tmp` sibling as the
/// allowed roots, and `<base>/outside` to catch escapes.
struct Sandbox {
    _dir: tempfile::TempDir,
    base: PathBuf,
    project: PathBuf,
    tmp: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Canonical, so paths compare equal to what the extractor resolves.
        let base = fs::canonicalize(dir.path()).expect("canonical tempdir");
        let project = base.join("builds/1/group/project");
        let tmp = base.join("builds/1/group/project.tmp");
        let outside = base.join("outside");
        fs::create_dir_all(&outside).expect("mkdir outside");
        Self {
            _dir: dir,
            base,
            project,
            tmp,
            outside,
        }
    }

    fn roots(&self) -> Vec<PathBuf> {
        vec![self.project.clone(), self.tmp.clone()]
    }

    /// A member name (absolute path without the leading '/') for a path under the project.
    fn member(&self, rel: &str) -> Vec<u8> {
        member_of(&self.project.join(rel))
    }

    fn extract(&self, archive: &[u8]) -> ExtractSummary {
        extract_tar(archive, &self.roots(), &ExtractLimits::default()).expect("extraction runs")
    }

    fn outside_is_empty(&self) -> bool {
        fs::read_dir(&self.outside)
            .expect("read outside")
            .next()
            .is_none()
    }
}

fn member_of(path: &Path) -> Vec<u8> {
    path.to_str()
        .expect("utf-8 temp path")
        .trim_start_matches('/')
        .as_bytes()
        .to_vec()
}

/// Appends an entry with the name written verbatim into the header, bypassing the tar crate's
/// own path checks (which would refuse the hostile names we need).
fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    kind: EntryType,
    name: &[u8],
    link: Option<&[u8]>,
    data: &[u8],
    mode: u32,
) {
    let mut header = Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().expect("gnu header");
        assert!(
            name.len() <= gnu.name.len(),
            "name too long for a raw header"
        );
        gnu.name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            assert!(
                link.len() <= gnu.linkname.len(),
                "link too long for a raw header"
            );
            gnu.linkname[..link.len()].copy_from_slice(link);
        }
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(1_600_000_000);
    header.set_cksum();
    builder.append(&header, data).expect("append raw entry");
}

fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    build(&mut builder);
    builder.into_inner().expect("finish archive")
}

fn assert_skipped(summary: &ExtractSummary, needle: &str) {
    assert!(
        summary.skipped.iter().any(|s| s.contains(needle)),
        "expected a refusal containing {needle:?}, got {:?}",
        summary.skipped
    );
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        mtime: i64,
        content: Vec<u8>,
    },
    Link(PathBuf),
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let node = if meta.file_type().is_symlink() {
                Node::Link(fs::read_link(&path).expect("read_link"))
            } else if meta.is_dir() {
                stack.push(path.clone());
                Node::Dir {
                    mode: meta.mode() & 0o777,
                }
            } else {
                Node::File {
                    mode: meta.mode() & 0o777,
                    mtime: meta.mtime(),
                    content: fs::read(&path).expect("read file"),
                }
            };
            out.insert(rel, node);
        }
    }
    out
}

/// Deterministic incompressible bytes (xorshift), so multi-MiB files stay multi-MiB compressed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_file(path: &Path, content: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    let file = fs::File::options().write(true).open(path).expect("open");
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_650_000_000))
        .expect("set mtime");
}

fn build_sample_tree(sb: &Sandbox) {
    write_file(&sb.project.join("README.md"), b"hello\n", 0o644);
    write_file(&sb.project.join("one-byte"), b"x", 0o600);
    write_file(
        &sb.project.join("bin/run.sh"),
        b"#!/bin/sh\necho hi\n",
        0o755,
    );
    write_file(
        &sb.project.join("data/deep/nested/big.bin"),
        &noise(3 * 1024 * 1024 + 17, 7),
        0o644,
    );
    write_file(&sb.project.join("empty-file"), b"", 0o644);
    fs::create_dir_all(sb.project.join("empty/dir")).expect("mkdir empty");
    symlink("README.md", sb.project.join("readme-link")).expect("symlink");
    symlink("data/deep", sb.project.join("deep-link")).expect("symlink");
    symlink("../project.tmp/vars", sb.project.join("to-tmp")).expect("symlink");
    let long = "a-rather-long-directory-name-to-force-gnu-long-name-headers".repeat(3);
    write_file(&sb.project.join(&long).join("file.txt"), b"long", 0o644);
    write_file(&sb.tmp.join("vars"), b"FILE_VAR=1\n", 0o600);
}

#[test]
fn pack_then_extract_restores_the_same_tree() {
    let sb = Sandbox::new();
    build_sample_tree(&sb);
    let before = (snapshot(&sb.project), snapshot(&sb.tmp));

    let mut packed = Vec::new();
    let packed_summary = pack_tree_to(&sb.roots(), &mut packed, 6).expect("pack");
    assert!(packed_summary.files >= 12, "{packed_summary:?}");
    assert!(packed_summary.bytes_in > 3 * 1024 * 1024);
    assert_eq!(packed_summary.bytes_out, packed.len() as u64);

    // Only the archive can bring the tree back.
    fs::remove_dir_all(sb.base.join("builds")).expect("remove tree");
    let summary =
        extract_tar_gz(&packed[..], &sb.roots(), &ExtractLimits::default()).expect("extract");
    assert!(summary.skipped.is_empty(), "{:?}", summary.skipped);
    assert_eq!(summary.skipped_total, 0);
    assert!(summary.bytes > 3 * 1024 * 1024);

    let after = (snapshot(&sb.project), snapshot(&sb.tmp));
    assert_eq!(before, after);
    assert!(sb.project.join("empty/dir").is_dir());
}

#[test]
fn extraction_overwrites_files_and_replaces_symlinks_without_following_them() {
    let sb = Sandbox::new();
    write_file(&sb.project.join("a.txt"), b"new", 0o644);
    write_file(&sb.project.join("b.txt"), b"new b", 0o644);
    let mut packed = Vec::new();
    pack_tree_to(&sb.roots(), &mut packed, 1).expect("pack");

    // Local state before restoring: a stale a.txt and a b.txt that is a link to a file outside.
    fs::write(sb.project.join("a.txt"), b"old content").expect("write");
    fs::remove_file(sb.project.join("b.txt")).expect("rm");
    let victim = sb.outside.join("victim");
    fs::write(&victim, b"untouched").expect("write victim");
    symlink(&victim, sb.project.join("b.txt")).expect("symlink");

    let summary =
        extract_tar_gz(&packed[..], &sb.roots(), &ExtractLimits::default()).expect("extract");
    assert!(summary.skipped.is_empty(), "{:?}", summary.skipped);
    assert_eq!(fs::read(sb.project.join("a.txt")).expect("read"), b"new");
    assert!(
        !fs::symlink_metadata(sb.project.join("b.txt"))
            .expect("meta")
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(sb.project.join("b.txt")).expect("read"), b"new b");
    assert_eq!(fs::read(&victim).expect("read victim"), b"untouched");
}

#[test]
fn absolute_member_names_are_refused_before_stripping() {
    let sb = Sandbox::new();
    let mut name = b"/".to_vec();
    name.extend(member_of(&sb.project.join("abs.txt")));
    let tar = archive(|b| raw_entry(b, EntryType::Regular, &name, None, b"x", 0o644));
    let summary = sb.extract(&tar);
    assert_skipped(&summary, "absolute member name");
    assert!(!sb.project.join("abs.txt").exists());
}

#[test]
fn dot_dot_members_are_refused() {
    let sb = Sandbox::new();
    let mut name = sb.member("sub");
    name.extend_from_slice(b"/../../../../outside/pwned");
    let tar = archive(|b| raw_entry(b, EntryType::Regular, &name, None, b"x", 0o644));
    let summary = sb.extract(&tar);
    assert_skipped(&summary, "`..` in member name");
    assert!(sb.outside_is_empty());
}

#[test]
fn members_outside_the_roots_are_refused() {
    let sb = Sandbox::new();
    let name = member_of(&sb.outside.join("pwned"));
    // A sibling whose name merely starts like the root must not count as inside.
    let sibling = member_of(&sb.base.join("builds/1/group/project-evil"));
    let tar = archive(|b| {
        raw_entry(b, EntryType::Regular, &name, None, b"x", 0o644);
        raw_entry(b, EntryType::Regular, &sibling, None, b"x", 0o644);
    });
    let summary = sb.extract(&tar);
    assert_eq!(summary.skipped_total, 2, "{:?}", summary.skipped);
    assert!(sb.outside_is_empty());
    assert!(!sb.base.join("builds/1/group/project-evil").exists());
}

#[test]
fn symlink_escapes_are_refused_and_nothing_is_written_through_them() {
    let sb = Sandbox::new();
    let outside = sb.outside.to_str().expect("utf-8").as_bytes().to_vec();
    fs::create_dir_all(sb.project.join("real")).expect("mkdir");
    let tar = archive(|b| {
        // Absolute target outside, then a write through it.
        raw_entry(
            b,
            EntryType::Symlink,
            &sb.member("abs"),
            Some(&outside),
            b"",
            0o777,
        );
        let mut through = sb.member("abs");
        through.extend_from_slice(b"/pwned");
        raw_entry(b, EntryType::Regular, &through, None, b"x", 0o644);
        // Relative target climbing out.
        raw_entry(
            b,
            EntryType::Symlink,
            &sb.member("rel"),
            Some(b"../../../../outside"),
            b"",
            0o777,
        );
        // `..` after a component: could become an escape once `d` is made a link.
        raw_entry(
            b,
            EntryType::Symlink,
            &sb.member("late"),
            Some(b"d/../.."),
            b"",
            0o777,
        );
        // Allowed: inside the project, and into the .tmp sibling.
        raw_entry(
            b,
            EntryType::Symlink,
            &sb.member("ok"),
            Some(b"README.md"),
            b"",
            0o777,
        );
        raw_entry(
            b,
            EntryType::Symlink,
            &sb.member("tmp"),
            Some(b"../project.tmp/vars"),
            b"",
            0o777,
        );
        // A link planted by the archive, even one pointing inside, is never written through.
        raw_entry(
            b,
            EntryType::Symlink,
            &sb.member("inner"),
            Some(b"real"),
            b"",
            0o777,
        );
        let mut via_inner = sb.member("inner");
        via_inner.extend_from_slice(b"/file");
        raw_entry(b, EntryType::Regular, &via_inner, None, b"x", 0o644);
    });
    let summary = sb.extract(&tar);

    assert_skipped(&summary, "abs: symlink target");
    assert_skipped(&summary, "rel: symlink target");
    assert_skipped(&summary, "has `..` after other components");
    assert_skipped(&summary, "is a symlink; not writing through it");
    assert!(sb.outside_is_empty());
    assert!(
        !fs::symlink_metadata(sb.project.join("rel")).is_ok_and(|m| m.file_type().is_symlink())
    );
    assert_eq!(
        fs::read_link(sb.project.join("ok")).expect("ok link"),
        Path::new("README.md")
    );
    assert_eq!(
        fs::read_link(sb.project.join("tmp")).expect("tmp link"),
        Path::new("../project.tmp/vars")
    );
    assert!(!sb.project.join("real/file").exists());
    // The refused write through `abs` created a real directory instead, inside the project.
    assert!(
        !fs::symlink_metadata(sb.project.join("abs"))
            .expect("meta")
            .file_type()
            .is_symlink()
    );
}

#[test]
fn preexisting_symlink_out_of_the_project_is_not_written_through() {
    let sb = Sandbox::new();
    fs::create_dir_all(&sb.project).expect("mkdir");
    symlink(&sb.outside, sb.project.join("escape")).expect("symlink");
    let mut name = sb.member("escape");
    name.extend_from_slice(b"/pwned");
    let tar = archive(|b| {
        raw_entry(b, EntryType::Regular, &name, None, b"x", 0o644);
        // A new link whose target goes through the existing escape is resolved on disk.
        raw_entry(
            b,
            EntryType::Symlink,
            &sb.member("via"),
            Some(b"escape/x"),
            b"",
            0o777,
        );
    });
    let summary = sb.extract(&tar);
    assert_skipped(&summary, "is a symlink; not writing through it");
    assert_skipped(&summary, "via: symlink target escape/x is outside");
    assert!(sb.outside_is_empty());
}

#[test]
fn hard_links_must_stay_inside() {
    let sb = Sandbox::new();
    fs::write(sb.outside.join("secret"), b"secret").expect("write secret");
    let secret = member_of(&sb.outside.join("secret"));
    let mut absolute = b"/".to_vec();
    absolute.extend_from_slice(&secret);
    let tar = archive(|b| {
        raw_entry(
            b,
            EntryType::Link,
            &sb.member("out"),
            Some(&secret),
            b"",
            0o644,
        );
        raw_entry(
            b,
            EntryType::Link,
            &sb.member("abs"),
            Some(&absolute),
            b"",
            0o644,
        );
        raw_entry(
            b,
            EntryType::Regular,
            &sb.member("orig"),
            None,
            b"data",
            0o644,
        );
        raw_entry(
            b,
            EntryType::Link,
            &sb.member("copy"),
            Some(&sb.member("orig")),
            b"",
            0o644,
        );
    });
    let summary = sb.extract(&tar);
    assert_skipped(&summary, "out: hard link to");
    assert_skipped(&summary, "abs: hard link target: absolute member name");
    assert!(!sb.project.join("out").exists());
    assert!(!sb.project.join("abs").exists());
    let orig = fs::metadata(sb.project.join("orig")).expect("orig");
    let copy = fs::metadata(sb.project.join("copy")).expect("copy");
    assert_eq!(orig.ino(), copy.ino());
}

#[test]
fn devices_and_fifos_are_refused_and_setuid_is_stripped() {
    let sb = Sandbox::new();
    let tar = archive(|b| {
        raw_entry(b, EntryType::Char, &sb.member("null"), None, b"", 0o666);
        raw_entry(b, EntryType::Block, &sb.member("disk"), None, b"", 0o666);
        raw_entry(b, EntryType::Fifo, &sb.member("fifo"), None, b"", 0o666);
        raw_entry(
            b,
            EntryType::Regular,
            &sb.member("suid"),
            None,
            b"#!/bin/sh\n",
            0o6755,
        );
    });
    let summary = sb.extract(&tar);
    assert_eq!(summary.skipped_total, 3, "{:?}", summary.skipped);
    assert_skipped(&summary, "device or FIFO");
    for name in ["null", "disk", "fifo"] {
        assert!(
            fs::symlink_metadata(sb.project.join(name)).is_err(),
            "{name} was created"
        );
    }
    let mode = fs::metadata(sb.project.join("suid")).expect("suid").mode();
    assert_eq!(mode & 0o7777, 0o755);
}

#[test]
fn a_file_cannot_replace_the_root_or_a_directory() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.project.join("dir/child")).expect("mkdir");
    let tar = archive(|b| {
        raw_entry(
            b,
            EntryType::Regular,
            &member_of(&sb.project),
            None,
            b"x",
            0o644,
        );
        raw_entry(b, EntryType::Regular, &sb.member("dir"), None, b"x", 0o644);
    });
    let summary = sb.extract(&tar);
    assert_skipped(&summary, "would replace the workspace root");
    assert_skipped(&summary, "a directory exists at this path");
    assert!(sb.project.join("dir/child").is_dir());
}

#[test]
fn limits_stop_extraction_as_a_job_caused_error() {
    let sb = Sandbox::new();
    let tar = archive(|b| {
        for i in 0..5 {
            raw_entry(
                b,
                EntryType::Regular,
                &sb.member(&format!("f{i}")),
                None,
                b"0123456789",
                0o644,
            );
        }
    });
    let few = ExtractLimits {
        max_entries: 3,
        ..ExtractLimits::default()
    };
    let err = extract_tar(&tar[..], &sb.roots(), &few).expect_err("entry limit");
    assert!(
        matches!(err, WorkspaceError::TooManyEntries { limit: 3 }),
        "{err}"
    );
    assert!(err.is_job_caused());
    assert!(!sb.project.join("f3").exists());

    let small = ExtractLimits {
        max_bytes: 25,
        ..ExtractLimits::default()
    };
    let err = extract_tar(&tar[..], &sb.roots(), &small).expect_err("byte limit");
    assert!(
        matches!(err, WorkspaceError::ArchiveTooLarge { limit: 25 }),
        "{err}"
    );
    assert_eq!(err.kind(), WorkspaceErrorKind::JobContent);
}

#[test]
fn oversized_long_name_headers_are_not_buffered() {
    let sb = Sandbox::new();
    let tar = archive(|b| {
        let mut header = Header::new_gnu();
        header.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
        header.set_entry_type(EntryType::GNULongName);
        let name = vec![b'a'; 200 * 1024];
        header.set_size(name.len() as u64);
        header.set_cksum();
        b.append(&header, &name[..]).expect("append long name");
        raw_entry(
            b,
            EntryType::Regular,
            &sb.member("short"),
            None,
            b"x",
            0o644,
        );
        raw_entry(
            b,
            EntryType::Regular,
            &sb.member("after"),
            None,
            b"y",
            0o644,
        );
    });
    let summary = sb.extract(&tar);
    assert_skipped(&summary, "over the size cap");
    assert!(!sb.project.join("short").exists());
    assert_eq!(fs::read(sb.project.join("after")).expect("after"), b"y");
}

#[test]
fn pax_path_overrides_are_checked_too() {
    let sb = Sandbox::new();
    let evil = format!(
        "/{}",
        String::from_utf8(member_of(&sb.outside.join("pax"))).expect("utf-8")
    );
    let record = {
        let body = format!(" path={evil}\n");
        // A PAX record's length counts its own digits: iterate to the fixed point.
        let mut len = body.len();
        while body.len() + len.to_string().len() != len {
            len = body.len() + len.to_string().len();
        }
        format!("{len}{body}")
    };
    let tar = archive(|b| {
        raw_entry(
            b,
            EntryType::XHeader,
            b"PaxHeader",
            None,
            record.as_bytes(),
            0o644,
        );
        raw_entry(
            b,
            EntryType::Regular,
            &sb.member("innocent"),
            None,
            b"x",
            0o644,
        );
    });
    let summary = sb.extract(&tar);
    assert_skipped(&summary, "absolute member name");
    assert!(sb.outside_is_empty());
    assert!(!sb.project.join("innocent").exists());
}

#[test]
fn corrupt_streams_are_job_caused() {
    let sb = Sandbox::new();
    let err = extract_tar_gz(
        &b"definitely not gzip"[..],
        &sb.roots(),
        &ExtractLimits::default(),
    )
    .expect_err("corrupt");
    assert!(err.is_job_caused(), "{err}");

    // A member cut short.
    let mut tar = archive(|b| {
        raw_entry(
            b,
            EntryType::Regular,
            &sb.member("cut"),
            None,
            &[7; 4096],
            0o644,
        )
    });
    tar.truncate(512 + 1000);
    let err = extract_tar(&tar[..], &sb.roots(), &ExtractLimits::default()).expect_err("truncated");
    assert!(
        matches!(err, WorkspaceError::CorruptArchive { .. }),
        "{err}"
    );
}

fn training_output(inner: &[u8], inner_name: &str) -> Vec<u8> {
    let mut outer = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, data) in [("metrics.json", &b"{}"[..]), (inner_name, inner)] {
        let mut header = Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(EntryType::Regular);
        outer.append_data(&mut header, name, data).expect("append");
    }
    outer
        .into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip")
}

#[test]
fn training_output_layout_is_unwrapped() {
    let sb = Sandbox::new();
    write_file(
        &sb.project.join("model/weights.bin"),
        &noise(100_000, 3),
        0o644,
    );
    write_file(&sb.tmp.join("env"), b"A=1\n", 0o600);
    let before = snapshot(&sb.project);
    let mut packed = Vec::new();
    pack_tree_to(&sb.roots(), &mut packed, 1).expect("pack");
    // The bootstrap returns an uncompressed tar; SageMaker gzips the output dir around it.
    let mut inner = Vec::new();
    flate2::read::MultiGzDecoder::new(&packed[..])
        .read_to_end(&mut inner)
        .expect("gunzip");

    for name in ["workspace.tar", "./workspace.tar"] {
        fs::remove_dir_all(sb.base.join("builds")).expect("remove tree");
        let output = training_output(&inner, name);
        let summary = extract_training_output(&output[..], &sb.roots(), &ExtractLimits::default())
            .expect("extract training output");
        assert!(summary.skipped.is_empty(), "{:?}", summary.skipped);
        assert_eq!(snapshot(&sb.project), before, "member name {name}");
        assert_eq!(fs::read(sb.tmp.join("env")).expect("env"), b"A=1\n");
    }

    let without = training_output(b"not it", "other.tar");
    let err = extract_training_output(&without[..], &sb.roots(), &ExtractLimits::default())
        .expect_err("no workspace member");
    assert_eq!(err.kind(), WorkspaceErrorKind::Missing, "{err}");
}
