//! The benchmarks' "physical limit": a minimal axum server (the same HTTP stack as the
//! gateway: hyper, tokio's multi-threaded runtime) answering every GET with the same
//! bytes held in memory. Nothing is parsed, checked or looked up.
//!
//! Not part of the gateway binary; built by `scripts/bench.sh` with
//! `cargo build --release -p portico-sandbox --example static_server`.
//!
//! ```text
//! static_server --listen 127.0.0.1:8099 --body FILE [--content-type TYPE]
//! ```
//! Prints `listening on ADDR` once bound.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use bytes::Bytes;

/// The same allocator as the `portico` binary, so that the reference is not slower
/// for a reason the gateway does not share.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Args {
    listen: SocketAddr,
    body: std::path::PathBuf,
    content_type: String,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut body = None;
    let mut content_type = "application/json".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                listen = Some(
                    value()?
                        .parse::<SocketAddr>()
                        .map_err(|e| format!("--listen: {e}"))?,
                )
            }
            "--body" => body = Some(std::path::PathBuf::from(value()?)),
            "--content-type" => content_type = value()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        body: body.ok_or("--body is required")?,
        content_type,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("static_server: {e}");
            return ExitCode::from(64);
        }
    };
    let body = match std::fs::read(&args.body) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            eprintln!("static_server: cannot read {}: {e}", args.body.display());
            return ExitCode::from(66);
        }
    };
    let content_type = match HeaderValue::from_str(&args.content_type) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("static_server: --content-type: {e}");
            return ExitCode::from(64);
        }
    };
    let app = Router::new().fallback(move || {
        let body = body.clone();
        let content_type = content_type.clone();
        async move { ([(header::CONTENT_TYPE, content_type)], body).into_response() }
    });
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("static_server: cannot bind {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("static_server: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("static_server: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
