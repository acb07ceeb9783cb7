//! Portico, the gateway binary's library: configuration, command line, HTTP surfaces.
//!
//! This is the only crate that knows HTTP status codes and chooses them (see [`error`]).
//! The layers under it — `portico-upstream` (the EHR client) and `portico-fhir` (FHIR
//! vocabulary) — know nothing of axum. `portico-sandbox` is linked in only for the
//! `demo` and `sandbox` commands.

pub mod app;
pub mod audit;
pub mod authn;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod edge;
pub mod error;
pub mod facade;
mod kept;
pub mod login;
pub mod metrics;
pub mod portal;
pub mod probes;
mod shared;
pub mod state;
pub mod telemetry;
pub mod web;

use std::process::ExitCode;

use cli::{Cli, Command};
use config::Config;

/// `EX_USAGE` from sysexits.h: the configuration (or command line) is wrong.
pub const EXIT_CONFIG: u8 = 64;

/// Runs one command to completion and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid configuration\n{e}", config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Serve { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: invalid configuration\n{e}", config.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            telemetry::init(&config.log);
            serve(config).await
        }
        Command::Openapi => match portal::openapi().to_pretty_json() {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portico: cannot render the OpenAPI document: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo(args) => demo::run_demo(args).await,
        Command::Sandbox(args) => demo::run_sandbox(args).await,
    }
}

async fn serve(config: Config) -> ExitCode {
    let app = match app::App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("portico: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match app.local_addr() {
        Ok(addr) => tracing::info!(%addr, "gateway listening"),
        Err(e) => tracing::warn!(error = %e, "cannot read the bound address"),
    }
    // An external logrotate moves the audit log away and sends SIGHUP.
    audit::reopen_on_sighup(app.audit_trail().clone());
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
