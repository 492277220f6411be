//! Stages directories to S3 exactly as a remote job's staging does (`workspace::upload_tree`),
//! for `tests/bench/staging_benchmark.py`. An example, not a subcommand: it is a measuring tool,
//! kept out of the product's CLI.
//!
//! Usage: `staging_bench --bucket B --prefix P [--level N] [--threads N] [--concurrency N]
//! [--path-style] ROOT...`; credentials, region and endpoint come from the usual `AWS_*`
//! variables. Prints one JSON line with the summary and the wall time of the upload itself.
//! `--pack-only` packs into nothing instead (`pack_tree_with`), to tell packing from uploading.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use stages::workspace::{
    PackOptions, PackSummary, StagingLocation, UploadOptions, WORKSPACE_ARCHIVE, pack_tree_with,
    upload_tree,
};
use tokio_util::sync::CancellationToken;

struct Args {
    loc: StagingLocation,
    opts: UploadOptions,
    path_style: bool,
    pack_only: bool,
    roots: Vec<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut bucket = None;
    let mut prefix = None;
    let mut opts = UploadOptions::default();
    let mut path_style = false;
    let mut pack_only = false;
    let mut roots = Vec::new();
    let mut args = std::env::args().skip(1);
    let number = |value: Option<String>, flag: &str| -> Result<usize, String> {
        value
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bucket" => bucket = args.next(),
            "--prefix" => prefix = args.next(),
            "--level" => {
                opts.compression_level = u32::try_from(number(args.next(), "--level")?)
                    .map_err(|_| "--level is 0-9".to_owned())?;
            }
            "--threads" => opts.compression_threads = number(args.next(), "--threads")?,
            "--concurrency" => opts.max_concurrent_parts = number(args.next(), "--concurrency")?,
            "--path-style" => path_style = true,
            "--pack-only" => pack_only = true,
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            root => roots.push(PathBuf::from(root)),
        }
    }
    let (Some(bucket), Some(prefix)) = (bucket, prefix) else {
        return Err("--bucket and --prefix are required".to_owned());
    };
    Ok(Args {
        loc: StagingLocation { bucket, prefix },
        opts,
        path_style,
        pack_only,
        roots,
    })
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("staging_bench: {e}");
            return ExitCode::from(2);
        }
    };
    if args.pack_only {
        let started = Instant::now();
        let opts = PackOptions {
            level: args.opts.compression_level,
            threads: args.opts.compression_threads,
        };
        return match pack_tree_with(&args.roots, std::io::sink(), &opts) {
            Ok(s) => report(&s, started),
            Err(e) => {
                eprintln!("staging_bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The executor's own runtime flavour: one thread for all async work.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("staging_bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let sdk = stages::aws::loader(None, 3).load().await;
        let s3 = stages::aws::s3_client(&sdk, args.path_style);
        let started = Instant::now();
        let result = upload_tree(
            &s3,
            &args.loc,
            WORKSPACE_ARCHIVE,
            &args.roots,
            &args.opts,
            &CancellationToken::new(),
        )
        .await;
        match result {
            Ok(s) => report(&s, started),
            Err(e) => {
                eprintln!("staging_bench: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn report(s: &PackSummary, started: Instant) -> ExitCode {
    println!(
        "{{\"seconds\": {:.3}, \"bytes_in\": {}, \"bytes_out\": {}, \"bytes_stored\": {}, \"files\": {}, \"parts\": {}}}",
        started.elapsed().as_secs_f64(),
        s.bytes_in,
        s.bytes_out,
        s.bytes_stored,
        s.files,
        s.parts
    );
    ExitCode::SUCCESS
}
