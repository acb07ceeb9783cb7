//! `portico demo` and `portico sandbox`: the embedded default.
//!
//! `demo` starts the sandbox EHR and a gateway configured against it in one process, then
//! prints who can log in and what to try. The gateway reaches the sandbox exactly as it
//! would reach a real EHR: over HTTP, with an OAuth2 client-credentials token from the
//! sandbox's authorization server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use portico_sandbox::{Sandbox, SandboxConfig};
use portico_upstream::{
    ClientAuthMethod, ResolvedAuth, ResolvedUpstreamConfig, SecretString, UpstreamAuthConfig,
    UpstreamConfig,
};
use url::Url;

use crate::cli::{DemoArgs, SandboxArgs, SandboxData};
use crate::config::{
    AuditConfig, AuthConfig, ClaimNamesConfig, Config, EhrConfig, FacadeConfig, LogConfig,
    LoginConfig, ServerConfig,
};

/// The sandbox client the demo gateway uses for its own system access.
const SYSTEM_CLIENT: &str = "portico-system";

/// The sandbox client the demo gateway's portal login (`/auth`) uses.
const PORTAL_CLIENT: &str = "portico-portal";

/// How many patients the banner lists.
const LISTED_PATIENTS: usize = 5;

fn sandbox_config(data: &SandboxData, require_auth: bool) -> SandboxConfig {
    SandboxConfig {
        seed: data.seed,
        patients: data.patients as usize,
        require_auth,
        latency: Duration::from_millis(data.latency_ms),
    }
}

async fn start_sandbox(port: u16, config: SandboxConfig) -> Result<Sandbox, ExitCode> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = std::time::Instant::now();
    match Sandbox::start(addr, config).await {
        Ok(s) => {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "sandbox EHR ready"
            );
            Ok(s)
        }
        Err(e) => {
            eprintln!("portico: cannot start the sandbox EHR on {addr}: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// The gateway configuration for a sandbox, with the system client's secret passed in
/// memory (it is generated at sandbox start and never written anywhere).
pub fn gateway_for_sandbox(
    sandbox: &Sandbox,
    listen: SocketAddr,
) -> anyhow::Result<(Config, ResolvedUpstreamConfig)> {
    let base_url = Url::parse(&sandbox.fhir_base())?;
    let token_url = Url::parse(&format!("{}/auth/token", sandbox.base_url()))?;
    let secret = sandbox
        .clients()
        .into_iter()
        .find(|c| c.client_id == SYSTEM_CLIENT)
        .and_then(|c| c.client_secret)
        .ok_or_else(|| anyhow::anyhow!("the sandbox has no {SYSTEM_CLIENT} client"))?;
    let portal_secret = sandbox
        .clients()
        .into_iter()
        .find(|c| c.client_id == PORTAL_CLIENT)
        .and_then(|c| c.client_secret)
        .ok_or_else(|| anyhow::anyhow!("the sandbox has no {PORTAL_CLIENT} client"))?;
    let scope = "system/*.read system/*.write".to_owned();
    let upstream = UpstreamConfig::new(
        base_url,
        UpstreamAuthConfig::ClientCredentials {
            token_url: token_url.clone(),
            client_id: SYSTEM_CLIENT.to_owned(),
            client_secret_file: None,
            client_secret_env: None,
            scope: Some(scope.clone()),
            client_auth: ClientAuthMethod::Basic,
        },
    );
    let mut resolved =
        UpstreamConfig::new(upstream.base_url.clone(), UpstreamAuthConfig::None).resolve()?;
    resolved.auth = ResolvedAuth::ClientCredentials {
        token_url,
        client_id: SYSTEM_CLIENT.to_owned(),
        client_secret: SecretString::new(secret),
        scope: Some(scope),
        client_auth: ClientAuthMethod::Basic,
    };
    let issuer = Url::parse(&format!("{}/auth", sandbox.base_url()))?;
    let audit_path =
        std::env::temp_dir().join(format!("portico-demo-audit-{}.jsonl", std::process::id()));
    let config = Config {
        server: ServerConfig {
            listen,
            ..ServerConfig::default()
        },
        log: LogConfig::default(),
        ehr: EhrConfig::default(),
        upstream,
        auth: AuthConfig {
            issuer,
            jwks_url: None,
            audiences: Vec::new(),
            authorize_url: None,
            token_url: None,
            leeway_seconds: 30,
            claims: ClaimNamesConfig::default(),
            introspection: None,
        },
        audit: AuditConfig { path: audit_path },
        facade: FacadeConfig::default(),
        cache: portico_cache::CacheConfig::default(),
        resilience: portico_upstream::ResilienceConfig::default(),
        login: LoginConfig {
            client_id: Some(PORTAL_CLIENT.to_owned()),
            client_secret: Some(SecretString::new(portal_secret)),
            ..LoginConfig::default()
        },
        portal: crate::config::PortalConfig {
            payment_processor: crate::config::PaymentProcessorKind::Sandbox,
            ..crate::config::PortalConfig::default()
        },
    };
    Ok((config, resolved))
}

/// `portico demo`.
pub async fn run_demo(args: DemoArgs) -> ExitCode {
    crate::telemetry::init(&LogConfig {
        level: "info,tower_http=warn".to_owned(),
        ..LogConfig::default()
    });
    let sandbox = match start_sandbox(args.ehr_port, sandbox_config(&args.data, true)).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], args.port));
    let mut audit_path = None;
    let app = match gateway_for_sandbox(&sandbox, listen) {
        Ok((config, upstream)) => {
            audit_path = Some(config.audit.path.clone());
            crate::app::App::build_with(config, upstream).await
        }
        Err(e) => Err(e),
    };
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            eprintln!("portico: cannot start the gateway on {listen}: {e}");
            sandbox.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    let bound = app.local_addr().unwrap_or(listen);
    // SMART apps log in at the sandbox naming the gateway's FHIR base as `aud`.
    sandbox.auth().add_audience(&format!("http://{bound}/fhir"));
    print!("{}", banner(&sandbox, bound));
    if let Some(path) = audit_path {
        println!("Audit log: {}", path.display());
    }
    let result = app.run_until_stopped(crate::shutdown_signal()).await;
    sandbox.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico: gateway failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `portico sandbox`.
pub async fn run_sandbox(args: SandboxArgs) -> ExitCode {
    crate::telemetry::init(&LogConfig {
        level: "info,tower_http=warn".to_owned(),
        ..LogConfig::default()
    });
    let sandbox = match start_sandbox(args.port, sandbox_config(&args.data, !args.no_auth)).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    print!("{}", sandbox_banner(&sandbox));
    crate::shutdown_signal().await;
    sandbox.shutdown().await;
    ExitCode::SUCCESS
}

fn sandbox_banner(sandbox: &Sandbox) -> String {
    use std::fmt::Write;
    let base = sandbox.base_url();
    let mut out = String::new();
    let _ = writeln!(out, "\nSandbox EHR (synthetic data only)");
    let _ = writeln!(out, "  FHIR R4 base        {base}/fhir");
    let _ = writeln!(
        out,
        "  SMART configuration {base}/fhir/.well-known/smart-configuration"
    );
    let _ = writeln!(
        out,
        "  authorize / token   {base}/auth/authorize   {base}/auth/token"
    );
    let _ = writeln!(out, "  patients (JSON)     {base}/auth/patients");
    let patients = sandbox.patients();
    let _ = writeln!(
        out,
        "\nDemo patients ({} generated; first {}):",
        patients.len(),
        LISTED_PATIENTS.min(patients.len())
    );
    for p in patients.iter().take(LISTED_PATIENTS) {
        let _ = writeln!(out, "  {:<10} {:<28} born {}", p.id, p.name, p.birth_date);
    }
    let _ = writeln!(out, "\nOAuth clients registered with the sandbox:");
    for c in sandbox.clients() {
        let secret = match &c.client_secret {
            Some(s) => format!("secret {s}"),
            None => "public, no secret".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<16} {:<26} {}",
            c.client_id, secret, c.description
        );
    }
    out
}

fn banner(sandbox: &Sandbox, gateway: SocketAddr) -> String {
    use std::fmt::Write;
    let mut out = sandbox_banner(sandbox);
    let first = sandbox
        .patients()
        .first()
        .map(|p| p.id.clone())
        .unwrap_or_default();
    let ehr_port = sandbox.addr().port();
    let _ = writeln!(out, "\nGateway: http://{gateway}");
    let _ = writeln!(
        out,
        "  liveness / readiness  http://{gateway}/healthz   http://{gateway}/readyz"
    );
    let _ = writeln!(out, "\nTry:");
    let _ = writeln!(out, "  curl -s http://{gateway}/readyz");
    let _ = writeln!(
        out,
        "  # log in as {first} (authorization code + PKCE S256, demo-app) and read the record:"
    );
    let _ = writeln!(
        out,
        "  python3 scripts/smart-login.py --ehr http://127.0.0.1:{ehr_port} --patient {first}"
    );
    let _ = writeln!(out, "\nCtrl-C stops both.");
    out
}
