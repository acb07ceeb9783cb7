//! The `portico` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of the system allocator: the gateway allocates and frees many
/// short-lived JSON values per request from several threads, and glibc's arenas both
/// cost more per call and leave a cache of ~50 000 bodies fragmented (docs/BENCHMARKS.md,
/// scenarios 1 and 6).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = portico::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portico: cannot start the async runtime: {e}");
            return ExitCode::from(71);
        }
    };
    runtime.block_on(portico::run(cli))
}
