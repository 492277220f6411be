//! Whether a workspace file is worth compressing: by its extension for formats that are always
//! compressed, else by deflating a sample of its first bytes.
//!
//! Why: gzip at any level spends about as long on data it cannot shrink as on data it can, and
//! one core of deflate (30-60 MB/s on random bytes) was the whole cost of staging model weights,
//! datasets and archives. Stored deflate blocks cost a copy and a CRC32 instead.

use std::ffi::OsStr;
use std::path::Path;

use flate2::{Compress, Compression, FlushCompress};

/// How a file's bytes go into the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Deflated at the configured level.
    Deflate,
    /// Stored deflate blocks: the bytes as they are, framed.
    Store,
}

/// How much of a file's start is deflated to judge it. Small enough to cost little next to the
/// file (files shorter than [`SAMPLE_MIN_FILE`] are not sampled), large enough to see repeats
/// within deflate's 32 KiB window.
pub(crate) const SAMPLE_LEN: usize = 16 * 1024;
/// Files shorter than this are judged by extension only: sampling them would cost a large share
/// of their own compression, and they rarely decide a member's mode alone.
pub(crate) const SAMPLE_MIN_FILE: u64 = 64 * 1024;
/// A sample that deflates to more than this share of its size is stored: saving under 10% of the
/// bytes is not worth a core of deflate on the runner host.
const STORE_ABOVE_RATIO: f64 = 0.90;

/// Extensions of formats whose content is compressed already (lowercase): compressed archives
/// and streams, office documents (zip containers), images, audio and video.
#[rustfmt::skip]
const COMPRESSED_EXTENSIONS: &[&str] = &[
    "gz", "tgz", "bz2", "tbz2", "xz", "txz", "lz4", "zst", "zstd", "lzma", "br", "7z", "rar",
    "zip", "jar", "war", "whl", "apk",
    "docx", "xlsx", "pptx", "odt", "ods",
    "png", "jpg", "jpeg", "gif", "webp", "avif", "heic",
    "mp3", "mp4", "m4a", "m4v", "mkv", "mov", "webm", "ogg", "opus", "flac",
];

/// The mode a file's name alone implies: [`Mode::Store`] for known-compressed formats.
pub(crate) fn mode_by_name(path: &Path) -> Option<Mode> {
    let ext = path.extension().and_then(OsStr::to_str)?;
    COMPRESSED_EXTENSIONS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(ext))
        .then_some(Mode::Store)
}

/// The mode a sample of a file's first bytes implies: deflated once at the fastest level, stored
/// when it would not shrink by at least 10%. An empty sample is deflated (it costs nothing).
pub(crate) fn mode_by_sample(sample: &[u8], scratch: &mut Vec<u8>) -> Mode {
    if sample.is_empty() {
        return Mode::Deflate;
    }
    scratch.clear();
    // Room for the worst case (stored blocks), so one call finishes the stream.
    scratch.reserve(sample.len() + sample.len() / 100 + 64);
    let mut deflate = Compress::new(Compression::fast(), false);
    let finished = deflate.compress_vec(sample, scratch, FlushCompress::Finish);
    if finished.is_err() {
        // Cannot happen with an in-memory buffer of this size; deflating is the safe default.
        return Mode::Deflate;
    }
    let ratio = deflate.total_out() as f64 / sample.len() as f64;
    if ratio > STORE_ABOVE_RATIO {
        Mode::Store
    } else {
        Mode::Deflate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()[3]
            })
            .collect()
    }

    #[test]
    fn known_compressed_extensions_are_stored() {
        assert_eq!(mode_by_name(Path::new("/b/data.tar.GZ")), Some(Mode::Store));
        assert_eq!(mode_by_name(Path::new("/b/photo.jpeg")), Some(Mode::Store));
        assert_eq!(mode_by_name(Path::new("/b/main.rs")), None);
        assert_eq!(mode_by_name(Path::new("/b/Makefile")), None);
        // A name that only ends like an extension is not one.
        assert_eq!(mode_by_name(Path::new("/b/zip")), None);
    }

    #[test]
    fn random_bytes_are_stored_and_text_is_deflated() {
        let mut scratch = Vec::new();
        assert_eq!(
            mode_by_sample(&noise(SAMPLE_LEN), &mut scratch),
            Mode::Store
        );
        let text = b"fn main() { println!(\"hello, world\"); }\n".repeat(500);
        assert_eq!(
            mode_by_sample(&text[..SAMPLE_LEN], &mut scratch),
            Mode::Deflate
        );
        assert_eq!(mode_by_sample(&[], &mut scratch), Mode::Deflate);
    }

    #[test]
    fn mostly_random_data_with_little_redundancy_is_stored() {
        // 95% random, 5% zeros: deflate saves about 5%, under the 10% threshold.
        let mut sample = noise(SAMPLE_LEN);
        let zeros = SAMPLE_LEN / 20;
        sample[..zeros].fill(0);
        let mut scratch = Vec::new();
        assert_eq!(mode_by_sample(&sample, &mut scratch), Mode::Store);
        // Half zeros saves about half: deflated.
        sample[..SAMPLE_LEN / 2].fill(0);
        assert_eq!(mode_by_sample(&sample, &mut scratch), Mode::Deflate);
    }
}
