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

use crate::cli::{DemoArgs, ExportArgs, ExportFormat, SandboxAction, SandboxArgs, SandboxData};
use crate::config::{
    AuditConfig, AuthConfig, ClaimNamesConfig, Config, EhrConfig, FacadeConfig, FhirAuthKind,
    FhirSinkConfig, LogConfig, LoginConfig, ServerConfig, SinkKind,
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
        audit: AuditConfig {
            path: audit_path,
            ..AuditConfig::default()
        },
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
        redis: crate::config::RedisConfig::default(),
        web: crate::config::WebConfig::default(),
        proxies: crate::config::ProxiesConfig::default(),
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
    let mut audit_events = None;
    let app = match gateway_for_sandbox(&sandbox, listen) {
        Ok((mut config, upstream)) => match send_audit_events_to(
            &mut config,
            &sandbox.fhir_base(),
            // Per process, like the audit log: the demo keeps nothing between runs.
            std::env::temp_dir().join(format!("portico-demo-audit-spool-{}", std::process::id())),
        ) {
            Ok(()) => {
                audit_path = Some(config.audit.path.clone());
                audit_events = config.audit.fhir.clone();
                crate::app::App::build_with(config, upstream).await
            }
            Err(e) => Err(e),
        },
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
    if let Some(fhir) = audit_events {
        println!(
            "Audit events: FHIR AuditEvents POSTed to {}/AuditEvent (spool {})",
            fhir.base_url.as_str().trim_end_matches('/'),
            fhir.spool_dir.display()
        );
    }
    crate::audit::reopen_on_sighup(app.audit_trail().clone());
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

/// Makes the gateway also send every record as a FHIR AuditEvent to `fhir_base` (in the
/// demo, the sandbox, standing in for the audit repository: hospitals often use the EHR
/// for that), with the gateway's own EHR credential (`auth = "upstream"`: the demo's
/// `portico-system` client), spooled in `spool_dir`. Kept out of
/// [`gateway_for_sandbox`], which the integration tests share: their counts of sandbox
/// requests must not include AuditEvents.
pub fn send_audit_events_to(
    config: &mut Config,
    fhir_base: &str,
    spool_dir: std::path::PathBuf,
) -> anyhow::Result<()> {
    let mut fhir = FhirSinkConfig::new(Url::parse(fhir_base)?);
    fhir.auth = FhirAuthKind::Upstream;
    fhir.spool_dir = spool_dir;
    if !config.audit.has(SinkKind::Fhir) {
        config.audit.sinks.push(SinkKind::Fhir);
    }
    config.audit.fhir = Some(fhir);
    Ok(())
}

/// `portico sandbox`.
pub async fn run_sandbox(args: SandboxArgs) -> ExitCode {
    if let Some(SandboxAction::Export(export)) = args.action {
        return run_export(&export);
    }
    crate::telemetry::init(&LogConfig {
        level: "info,tower_http=warn".to_owned(),
        ..LogConfig::default()
    });
    let sandbox = match start_sandbox(args.port, sandbox_config(&args.data, !args.no_auth)).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    for aud in &args.audiences {
        sandbox.auth().add_audience(aud.as_str());
    }
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
    let families = sandbox.families();
    let _ = writeln!(
        out,
        "\nFamilies (sign in as a family patient, or as a proxy by login id):"
    );
    for p in &families.patients {
        let _ = writeln!(out, "  {:<24} {:<28} born {}", p.id, p.name, p.birth_date);
    }
    for login in families.logins.all() {
        let _ = writeln!(
            out,
            "  {:<24} {:<28} proxy for {}",
            login.id,
            login.name,
            login.patients.join(", ")
        );
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
    let _ = writeln!(
        out,
        "\nPatient portal: open http://{gateway}/ and sign in (pick a demo patient)"
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

/// `portico sandbox export`: writes the generated dataset to a file.
fn run_export(args: &ExportArgs) -> ExitCode {
    let today = args
        .today
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    let generator = portico_sandbox::generator::GeneratorConfig {
        seed: args.seed,
        patients: args.patients as usize,
        today,
    };
    let mut buffer = Vec::new();
    let count = match export_dataset(&generator, args.format, &mut buffer) {
        Ok(count) => count,
        Err(e) => {
            eprintln!("portico: cannot export the dataset: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = if args.out.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().lock().write_all(&buffer)
    } else {
        std::fs::write(&args.out, &buffer)
    };
    match written {
        Ok(()) => {
            eprintln!(
                "portico: exported {count} resources ({} patients, seed {}, today {today}) to {}",
                args.patients,
                args.seed,
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portico: cannot write {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}

/// Writes every generated resource to `out`, in generation order (shared resources
/// first, so references point backwards), and returns how many there were.
///
/// `Bundle` is one FHIR R4 `transaction` Bundle whose entries are `PUT Type/id`, so a
/// server loading it keeps the sandbox's ids (`pat-1`, `slot-...`) and the demo
/// patients log in under the same ids. `Ndjson` is one resource per line. Both carry
/// exactly what the generator made: no `meta`, no server-assigned fields.
pub fn export_dataset(
    config: &portico_sandbox::generator::GeneratorConfig,
    format: ExportFormat,
    out: &mut Vec<u8>,
) -> anyhow::Result<usize> {
    let mut resources = Vec::new();
    portico_sandbox::generator::generate(config, &mut |resource| resources.push(resource));
    let count = resources.len();
    match format {
        ExportFormat::Ndjson => {
            for resource in &resources {
                serde_json::to_writer(&mut *out, resource)?;
                out.push(b'\n');
            }
        }
        ExportFormat::Bundle => {
            let mut entries = Vec::with_capacity(count);
            for resource in resources {
                let ty = resource
                    .get("resourceType")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| anyhow::anyhow!("a generated resource has no resourceType"))?
                    .to_owned();
                let id = resource
                    .get("id")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| anyhow::anyhow!("a generated {ty} has no id"))?
                    .to_owned();
                entries.push(serde_json::json!({
                    "fullUrl": format!("urn:portico-sandbox:{ty}/{id}"),
                    "resource": resource,
                    "request": { "method": "PUT", "url": format!("{ty}/{id}") },
                }));
            }
            let bundle = serde_json::json!({
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": entries,
            });
            serde_json::to_writer(&mut *out, &bundle)?;
            out.push(b'\n');
        }
    }
    Ok(count)
}

#[cfg(test)]
mod export_tests {
    use super::*;
    use portico_sandbox::generator::GeneratorConfig;

    fn config(seed: u64) -> GeneratorConfig {
        GeneratorConfig {
            seed,
            patients: 2,
            today: chrono::NaiveDate::from_ymd_opt(2026, 1, 15).unwrap(),
        }
    }

    #[test]
    fn bundle_is_a_transaction_of_puts_keeping_ids_and_deterministic() {
        let mut first = Vec::new();
        let count = export_dataset(&config(7), ExportFormat::Bundle, &mut first).unwrap();
        let mut again = Vec::new();
        export_dataset(&config(7), ExportFormat::Bundle, &mut again).unwrap();
        assert_eq!(first, again, "the same seed and day give the same bytes");
        let mut other = Vec::new();
        export_dataset(&config(8), ExportFormat::Bundle, &mut other).unwrap();
        assert_ne!(first, other, "another seed gives other data");

        let bundle: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "transaction");
        let entries = bundle["entry"].as_array().unwrap();
        assert_eq!(entries.len(), count);
        let mut seen = std::collections::HashSet::new();
        for e in entries {
            let r = &e["resource"];
            let url = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            assert_eq!(e["request"]["method"], "PUT");
            assert_eq!(e["request"]["url"], url.as_str());
            assert!(seen.insert(url.clone()), "{url} exported twice");
        }
        assert!(seen.contains("Patient/pat-1") && seen.contains("Patient/pat-2"));
        assert!(!seen.contains("Patient/pat-3"));
        // Every reference points at an exported resource, so the loaded server holds
        // the whole graph.
        fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(serde_json::Value::String(r)) = m.get("reference") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|x| refs(x, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&bundle, &mut all);
        assert!(!all.is_empty());
        for r in all {
            assert!(seen.contains(&r), "dangling reference {r}");
        }
    }

    #[test]
    fn ndjson_has_one_resource_per_line_same_as_bundle() {
        let mut bundle = Vec::new();
        export_dataset(&config(3), ExportFormat::Bundle, &mut bundle).unwrap();
        let bundle: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
        let mut ndjson = Vec::new();
        let count = export_dataset(&config(3), ExportFormat::Ndjson, &mut ndjson).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(ndjson)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), count);
        let from_bundle: Vec<&serde_json::Value> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .collect();
        assert_eq!(lines.iter().collect::<Vec<_>>(), from_bundle);
    }
}
