//! A gzip stream written as independent members, compressed on several threads and written in
//! order, each member deflated or stored as the data in it asks.
//!
//! Why members: concatenated gzip members are one valid gzip stream (RFC 1952, section 2.2), so
//! `gzip -d`, `tar -xz` (GNU and busybox) and this crate's extractor (`MultiGzDecoder`) read
//! the result unchanged, while each member can be compressed alone, on its own core and at its
//! own level. The cost is one 18-byte header and trailer per member and a dictionary that
//! restarts every [`MEMBER_SIZE`] (well under 1% on source trees). `gzp` was considered: its
//! pigz-style single member cannot switch between stored and deflated data, and its default
//! features build C code (libdeflate); std threads and channels do the job in a page.
//!
//! Threads (all scoped to one [`run`] call): the producer (the caller's closure, here the tar
//! walker) fills members through [`MemberWriter`]; `threads` workers compress them; the calling
//! thread writes finished members to the output in order. Each member's result travels on its
//! own one-slot channel, whose receiver the producer queues in order, so ordering needs no
//! reordering buffer.
//!
//! # Memory bound
//! At most `2 * threads` members are queued between the producer and the writer, plus the one
//! being filled and the one being written: `(2 * threads + 2)` members, each holding at most
//! [`MEMBER_SIZE`] of input plus its compressed output (under 2 x [`MEMBER_SIZE`]): 12 MiB with
//! 2 threads, whatever the size of the tree.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::compressibility::Mode;

/// Input bytes per member (the last one may be shorter). Large enough that the per-member
/// header and dictionary restart cost nothing measurable, small enough that a few members per
/// thread keep every core busy on a modest workspace.
pub(crate) const MEMBER_SIZE: usize = 1024 * 1024;
/// A member is cut where the data changes mode only once it holds at least this much, so
/// alternating small files of both kinds do not make a stream of tiny members.
pub(crate) const MIN_MEMBER: usize = 64 * 1024;

/// How [`run`] compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemberOptions {
    /// gzip level (0-9) of deflated members.
    pub level: u32,
    /// Compression threads (at least 1).
    pub threads: usize,
    /// Input bytes per member.
    pub member_size: usize,
}

/// What the writer side wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// Compressed bytes written to the output.
    pub bytes_out: u64,
    /// Input bytes that went into stored members.
    pub stored_in: u64,
    /// Members written.
    pub members: u64,
}

struct Job {
    data: Vec<u8>,
    mode: Mode,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// The producer's end: a `Write` that cuts its input into members and hands them to the
/// workers. Call [`MemberWriter::set_mode`] before each file's bytes.
pub(crate) struct MemberWriter {
    buf: Vec<u8>,
    /// Bytes of `buf` written while the mode was [`Mode::Store`].
    stored: usize,
    mode: Mode,
    member_size: usize,
    jobs: SyncSender<Job>,
    order: SyncSender<Receiver<io::Result<Vec<u8>>>>,
    stored_in: u64,
}

impl MemberWriter {
    /// The mode of the bytes written from now on (a file's header and content). Cuts the member
    /// here when it is long enough and mostly of the other mode.
    pub(crate) fn set_mode(&mut self, mode: Mode) -> io::Result<()> {
        if mode != self.mode && self.buf.len() >= MIN_MEMBER && self.majority() != mode {
            self.dispatch()?;
        }
        self.mode = mode;
        Ok(())
    }

    /// The mode of most of the bytes in the member being filled.
    fn majority(&self) -> Mode {
        if self.stored * 2 > self.buf.len() {
            Mode::Store
        } else {
            Mode::Deflate
        }
    }

    fn dispatch(&mut self) -> io::Result<()> {
        let mode = self.majority();
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.member_size));
        if mode == Mode::Store {
            self.stored_in += data.len() as u64;
        }
        self.stored = 0;
        let (reply, result) = sync_channel(1);
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the archive writer stopped");
        // Queue the place in line first: the writer then waits for this member even if the
        // job queue is full for a moment.
        self.order.send(result).map_err(|_| gone())?;
        self.jobs
            .send(Job { data, mode, reply })
            .map_err(|_| gone())
    }

    /// Sends the last member; there is always one, so even an empty stream is valid gzip.
    fn finish(mut self) -> io::Result<u64> {
        self.dispatch()?;
        Ok(self.stored_in)
    }
}

impl Write for MemberWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = (self.member_size - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.mode == Mode::Store {
            self.stored += take;
        }
        if self.buf.len() >= self.member_size {
            self.dispatch()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `produce` on its own thread writing into a [`MemberWriter`], compresses its members on
/// `opts.threads` threads and writes them in order into `out` on this thread.
///
/// Returns what `produce` returned (with the stored input bytes, when it got that far), and what
/// was written or why writing stopped. When writing fails the producer's next write fails with
/// `BrokenPipe`, so it stops too; when the producer fails, what it produced so far is written.
pub(crate) fn run<W, R>(
    mut out: W,
    opts: &MemberOptions,
    produce: impl FnOnce(&mut MemberWriter) -> R + Send,
) -> (R, io::Result<Written>)
where
    W: Write,
    R: Send,
{
    let threads = opts.threads.max(1);
    let member_size = opts.member_size.max(MIN_MEMBER);
    let level = Compression::new(opts.level.min(9));
    let depth = 2 * threads;
    let (jobs_tx, jobs_rx) = sync_channel::<Job>(depth);
    let (order_tx, order_rx) = sync_channel(depth);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    thread::scope(|scope| {
        for _ in 0..threads {
            let jobs = Arc::clone(&jobs_rx);
            scope.spawn(move || compress_jobs(&jobs, level));
        }
        let producer = scope.spawn(move || {
            let mut writer = MemberWriter {
                buf: Vec::with_capacity(member_size),
                stored: 0,
                mode: Mode::Deflate,
                member_size,
                jobs: jobs_tx,
                order: order_tx,
                stored_in: 0,
            };
            let produced = produce(&mut writer);
            // A failed finish means the writer stopped; its own error is the one reported.
            let stored_in = writer.finish().unwrap_or(0);
            (produced, stored_in)
        });
        let written = write_in_order(&mut out, &order_rx);
        // Unblocks a producer waiting for room in the queue once writing failed.
        drop(order_rx);
        let (produced, stored_in) = match producer.join() {
            Ok(done) => done,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (produced, written.map(|w| Written { stored_in, ..w }))
    })
}

/// A worker: compresses members until the producer is done.
fn compress_jobs(jobs: &Mutex<Receiver<Job>>, level: Compression) {
    loop {
        // The lock is held only while waiting for the next job, never while compressing.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = compress_member(&job.data, job.mode, level);
        drop(job.data);
        // The writer may have stopped; then nobody wants this member.
        let _ = job.reply.send(result);
    }
}

/// One complete gzip member of `data`.
pub(crate) fn compress_member(data: &[u8], mode: Mode, level: Compression) -> io::Result<Vec<u8>> {
    let (level, capacity) = match mode {
        // Stored blocks: 5 bytes of framing per 64 KiB block, plus header and trailer.
        Mode::Store => (Compression::none(), data.len() + data.len() / 8192 + 64),
        Mode::Deflate => (level, data.len() / 2 + 64),
    };
    let mut gz = GzEncoder::new(Vec::with_capacity(capacity), level);
    gz.write_all(data)?;
    gz.finish()
}

fn write_in_order<W: Write>(
    out: &mut W,
    order: &Receiver<Receiver<io::Result<Vec<u8>>>>,
) -> io::Result<Written> {
    let mut written = Written::default();
    // Ends when the producer has finished and dropped its sender.
    while let Ok(member) = order.recv() {
        let bytes = member
            .recv()
            .map_err(|_| io::Error::other("a compression thread stopped"))??;
        out.write_all(&bytes)?;
        written.bytes_out += bytes.len() as u64;
        written.members += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn opts(threads: usize) -> MemberOptions {
        MemberOptions {
            level: 6,
            threads,
            member_size: MIN_MEMBER,
        }
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    #[test]
    fn members_concatenate_in_order_into_one_stream() {
        let input: Vec<u8> = (0..1_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut out = Vec::new();
        let (produced, written) = run(&mut out, &opts(3), |w| w.write_all(&input));
        produced.expect("produce");
        let written = written.expect("write");
        assert_eq!(written.bytes_out, out.len() as u64);
        assert_eq!(written.members, input.len().div_ceil(MIN_MEMBER) as u64);
        assert!(written.members > 1);
        assert_eq!(gunzip(&out), input);
        // A plain single-member decoder stops after the first member: this is really several.
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut first)
            .expect("first member");
        assert_eq!(first.len(), MIN_MEMBER);
    }

    #[test]
    fn empty_input_is_one_valid_member() {
        let mut out = Vec::new();
        let (_, written) = run(&mut out, &opts(1), |_| ());
        assert_eq!(written.expect("write").members, 1);
        assert!(gunzip(&out).is_empty());
    }

    #[test]
    fn mode_changes_cut_members_only_when_long_enough() {
        let opts = MemberOptions {
            member_size: 4 * MIN_MEMBER,
            ..opts(2)
        };
        let mut out = Vec::new();
        let (produced, written) = run(&mut out, &opts, |w| {
            w.write_all(&[b'a'; 1000])?;
            // Too short to cut: the small stored file joins the deflated member.
            w.set_mode(Mode::Store)?;
            w.write_all(&[b'b'; 100])?;
            w.set_mode(Mode::Deflate)?;
            w.write_all(&[b'c'; 70_000])?;
            // Long enough and mostly deflated: cut here, and the rest is a stored member.
            w.set_mode(Mode::Store)?;
            w.write_all(&[b'd'; 10_000])
        });
        produced.expect("produce");
        let written = written.expect("write");
        assert_eq!(written.members, 2);
        assert_eq!(written.stored_in, 10_000);
        let expected: Vec<u8> = [
            vec![b'a'; 1000],
            vec![b'b'; 100],
            vec![b'c'; 70_000],
            vec![b'd'; 10_000],
        ]
        .concat();
        assert_eq!(gunzip(&out), expected);
    }

    #[test]
    fn stored_members_are_barely_larger_than_their_input() {
        let input = vec![7u8; 3 * MIN_MEMBER];
        let mut out = Vec::new();
        let (produced, written) = run(&mut out, &opts(2), |w| {
            w.set_mode(Mode::Store)?;
            w.write_all(&input)
        });
        produced.expect("produce");
        let written = written.expect("write");
        assert_eq!(written.stored_in, input.len() as u64);
        // Compressible bytes, stored anyway: the output is the input plus framing.
        assert!(out.len() > input.len());
        assert!(out.len() < input.len() + input.len() / 100, "{}", out.len());
        assert_eq!(gunzip(&out), input);
    }

    /// Counts the members it is given and how far the producer was ahead at each.
    struct LeadWriter<'a> {
        produced: &'a AtomicUsize,
        written: usize,
        max_lead: usize,
    }

    impl Write for LeadWriter<'_> {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.written += 1;
            let lead = self
                .produced
                .load(Ordering::SeqCst)
                .saturating_sub(self.written);
            self.max_lead = self.max_lead.max(lead);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_producer_stays_within_the_queue_bound() {
        // Filling a member is a copy; deflating it at level 9 takes far longer, so an unbounded
        // queue would let the producer run all the way ahead.
        let member: Vec<u8> = (0..MIN_MEMBER as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 27) as u8)
            .collect();
        let produced = AtomicUsize::new(0);
        let mut out = LeadWriter {
            produced: &produced,
            written: 0,
            max_lead: 0,
        };
        let opts = MemberOptions {
            level: 9,
            threads: 2,
            member_size: MIN_MEMBER,
        };
        let (result, written) = run(&mut out, &opts, |w| {
            for _ in 0..200 {
                produced.fetch_add(1, Ordering::SeqCst);
                w.write_all(&member)?;
            }
            Ok::<_, io::Error>(())
        });
        result.expect("produce");
        assert_eq!(written.expect("write").members, 201);
        // Queued (2 per thread), being written, and the one the producer is handing over.
        let bound = 2 * opts.threads + 2;
        assert!(out.max_lead <= bound, "{} > {bound}", out.max_lead);
    }

    struct FailingWriter;

    impl Write for FailingWriter {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_output_stops_the_producer() {
        let (produced, written) = run(FailingWriter, &opts(2), |w| {
            // Far more than the queue holds: the producer must be told to stop, not hang.
            for _ in 0..1000 {
                w.write_all(&[1u8; MIN_MEMBER])?;
            }
            Ok::<_, io::Error>(())
        });
        let err = written.expect_err("output failed");
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(
            produced.expect_err("producer stopped").kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
