//! The command line: `serve`, `demo`, `sandbox`, `check-config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Portico: a FHIR R4 gateway that puts a patient portal and SMART-on-FHIR apps in front
/// of the EHR a hospital already runs.
///
/// Start with `portico demo` to try it with the built-in sandbox EHR, then write a
/// config file (see config/portico.example.toml) for a real EHR and run
/// `portico check-config FILE` followed by `portico serve --config FILE`.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway against a real EHR, as configured in FILE.
    ///
    /// Settings can be overridden with environment variables named
    /// PORTICO__SECTION__KEY, e.g. PORTICO__SERVER__LISTEN=0.0.0.0:8080.
    /// Secrets are never read from the file itself: it names the file or the
    /// environment variable that holds each one.
    Serve {
        /// Path to the TOML configuration file.
        #[arg(long, short, value_name = "FILE", env = "PORTICO_CONFIG")]
        config: PathBuf,
    },
    /// Start the sandbox EHR and the gateway in front of it, in one process.
    ///
    /// Prints the demo patients, the registered OAuth clients and commands to try.
    /// Nothing leaves this machine: both listen on 127.0.0.1.
    Demo(DemoArgs),
    /// Start only the sandbox EHR (FHIR R4 server + SMART authorization server).
    Sandbox(SandboxArgs),
    /// Check a configuration file (and the environment overrides) without starting.
    ///
    /// Exits 0 when valid; exits 64 and names each bad key otherwise.
    CheckConfig {
        /// Path to the TOML configuration file.
        #[arg(value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the portal API's OpenAPI 3.1 document (the one served at
    /// /api/v1/openapi.json) and exit.
    Openapi,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port for the gateway.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Port for the sandbox EHR.
    #[arg(long, default_value_t = 8090)]
    pub ehr_port: u16,
    #[command(flatten)]
    pub data: SandboxData,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub action: Option<SandboxAction>,
    /// Port for the sandbox EHR.
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
    /// Accept FHIR requests without a bearer token.
    #[arg(long)]
    pub no_auth: bool,
    /// Another FHIR base apps may name as `aud` when they log in (a gateway in front of
    /// the sandbox, or in front of another EHR that uses the sandbox's authorization
    /// server). Repeatable.
    #[arg(long = "audience", value_name = "URL")]
    pub audiences: Vec<url::Url>,
    #[command(flatten)]
    pub data: SandboxData,
}

#[derive(Debug, Subcommand)]
pub enum SandboxAction {
    /// Write the synthetic dataset to a file instead of serving it, to load it into
    /// another FHIR server (a transaction Bundle of PUTs that keep the ids, or NDJSON).
    ///
    /// The same seed, patient count and --today give byte-identical output.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// How many synthetic patients to generate.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub patients: u32,
    /// Seed for the synthetic data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The day the data is generated for (YYYY-MM-DD): history ends here, free Slots
    /// follow it. Default: today (UTC).
    #[arg(long, value_name = "DATE")]
    pub today: Option<chrono::NaiveDate>,
    /// `bundle`: one FHIR transaction Bundle with a PUT per resource; `ndjson`: one
    /// resource per line.
    #[arg(long, value_enum, default_value_t = ExportFormat::Bundle)]
    pub format: ExportFormat,
    /// Where to write; `-` for standard output.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Bundle,
    Ndjson,
}

#[derive(Debug, Args)]
pub struct SandboxData {
    /// How many synthetic patients to generate.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub patients: u32,
    /// Seed for the synthetic data; the same seed gives the same patients and ids.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Latency the sandbox adds to every FHIR request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn demo_flags() {
        let cli = Cli::try_parse_from([
            "portico",
            "demo",
            "--port",
            "9000",
            "--ehr-port",
            "9001",
            "--patients",
            "3",
        ])
        .unwrap();
        match cli.command {
            Command::Demo(d) => {
                assert_eq!((d.port, d.ehr_port, d.data.patients), (9000, 9001, 3));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["portico", "demo", "--patients", "0"]).is_err());
    }

    #[test]
    fn sandbox_export_flags() {
        let cli = Cli::try_parse_from([
            "portico",
            "sandbox",
            "export",
            "--patients",
            "3",
            "--seed",
            "7",
            "--today",
            "2026-01-15",
            "--format",
            "ndjson",
            "--out",
            "x.ndjson",
        ])
        .unwrap();
        match cli.command {
            Command::Sandbox(SandboxArgs {
                action: Some(SandboxAction::Export(e)),
                ..
            }) => {
                assert_eq!((e.patients, e.seed, e.format), (3, 7, ExportFormat::Ndjson));
                assert_eq!(
                    e.today.map(|d| d.to_string()).as_deref(),
                    Some("2026-01-15")
                );
                assert_eq!(e.out, PathBuf::from("x.ndjson"));
            }
            other => panic!("parsed as {other:?}"),
        }
        // Plain `portico sandbox` still serves, with extra audiences.
        let cli = Cli::try_parse_from([
            "portico",
            "sandbox",
            "--port",
            "9001",
            "--audience",
            "http://127.0.0.1:8080/fhir",
            "--audience",
            "http://gw.example/fhir",
        ])
        .unwrap();
        match cli.command {
            Command::Sandbox(SandboxArgs {
                action: None,
                port: 9001,
                audiences,
                ..
            }) => assert_eq!(
                audiences.iter().map(url::Url::as_str).collect::<Vec<_>>(),
                ["http://127.0.0.1:8080/fhir", "http://gw.example/fhir"]
            ),
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["portico", "sandbox", "--audience", "not a url"]).is_err());
        assert!(
            Cli::try_parse_from([
                "portico", "sandbox", "export", "--today", "soon", "--out", "x"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["portico", "sandbox", "export"]).is_err());
    }
}
