//! Running the sandbox: the HTTP router (`/fhir`, `/auth`, `/_sandbox`) and
//! [`Sandbox`], a server bound to a port and serving on a tokio task.
//!
//! [`Sandbox::start`] binds first (port 0 is fine), so every URL the sandbox hands out
//! (paging links, `Location`, token `aud`, the CapabilityStatement) carries the real
//! port; then it generates the synthetic data, loads it into the store, and serves with
//! graceful shutdown.
//!
//! Layers on `/fhir`, outermost first: the request counter and fault knobs
//! ([`crate::faults`]), then bearer-token authentication (except `metadata` and
//! `.well-known/smart-configuration`). Authentication only checks that the token is one
//! this sandbox issued; it deliberately does not restrict what the token may read (see
//! the crate documentation).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use portico_fhir::outcome::IssueCode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::{AuthConfig, AuthServer};
use crate::faults::{self, Faults};
use crate::fhir::{self, FhirError};
use crate::generator::{self, Families, GeneratorConfig};
pub use crate::state::SandboxState;
use crate::store::Store;
use crate::{ClientInfo, PatientSummary};

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Seed of the synthetic data; the same seed gives the same patients and ids.
    pub seed: u64,
    /// How many patients to generate.
    pub patients: usize,
    /// Whether `/fhir` requires a bearer token issued by the sandbox.
    pub require_auth: bool,
    /// Initial added latency per `/fhir` request.
    pub latency: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            seed: 42,
            patients: 50,
            require_auth: true,
            latency: Duration::ZERO,
        }
    }
}

/// The largest request body accepted (resources and `_search` forms).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The sandbox's whole HTTP surface: `/fhir/*`, `/auth/*` and `/_sandbox/*`.
pub fn router(state: SandboxState) -> Router {
    let protected = fhir::router(state.clone()).route_layer(middleware::from_fn_with_state(
        state.clone(),
        require_bearer,
    ));
    let fhir = fhir::public_router(state.clone())
        .merge(protected)
        .fallback(fhir::not_found)
        .method_not_allowed_fallback(fhir::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.faults.clone(),
            faults::middleware,
        ));
    Router::new()
        .nest("/fhir", fhir)
        .nest("/auth", crate::auth::router(state.auth.clone()))
        .nest("/_sandbox", faults::router(state.faults.clone()))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Checks `Authorization: Bearer <token>` against the sandbox's authorization server.
async fn require_bearer(
    State(state): State<SandboxState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !state.require_auth {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return unauthorized(
            "Bearer realm=\"portico-sandbox\"",
            "a bearer token is required",
        );
    };
    match state.auth.verify_access_token(token) {
        Ok(claims) => {
            request.extensions_mut().insert(Arc::new(claims));
            next.run(request).await
        }
        Err(e) => unauthorized(
            "Bearer realm=\"portico-sandbox\", error=\"invalid_token\"",
            &format!("invalid access token: {e}"),
        ),
    }
}

fn unauthorized(challenge: &'static str, message: &str) -> Response {
    let mut response =
        FhirError::new(StatusCode::UNAUTHORIZED, IssueCode::Login, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// A running sandbox.
pub struct Sandbox {
    addr: SocketAddr,
    base_url: String,
    state: SandboxState,
    patients: Vec<PatientSummary>,
    families: Families,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("base_url", &self.base_url)
            .field("patients", &self.patients.len())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Binds `addr` (port 0 picks a free port), generates and loads the synthetic data,
    /// and serves on a tokio task. Returns once the listener accepts connections.
    pub async fn start(addr: SocketAddr, config: SandboxConfig) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let host = match local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let addr = SocketAddr::new(host, local.port());
        let base_url = format!("http://{addr}");

        let store = Arc::new(Store::new());
        let loading = store.clone();
        let generator_config = GeneratorConfig {
            seed: config.seed,
            patients: config.patients,
            today: chrono::Utc::now().date_naive(),
        };
        let started = Instant::now();
        let (generated, rejected) = tokio::task::spawn_blocking(move || {
            let mut rejected = 0usize;
            let generated = generator::generate(&generator_config, &mut |resource| {
                if loading.insert_loaded(resource).is_err() {
                    rejected += 1;
                }
            });
            (generated, rejected)
        })
        .await
        .map_err(std::io::Error::other)?;
        if rejected > 0 {
            tracing::warn!(rejected, "sandbox store refused some generated resources");
        }
        let generator::Generated { patients, families } = generated;
        tracing::info!(
            patients = patients.len(),
            resources = store.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sandbox data loaded"
        );

        let auth = Arc::new(
            AuthServer::new(
                AuthConfig {
                    base_url: base_url.clone(),
                    token_lifetime: Duration::from_secs(3600),
                },
                patients.clone(),
            )
            .with_families(families.clone()),
        );
        let state = SandboxState {
            store,
            auth,
            faults: Arc::new(Faults::new(config.latency)),
            base_url: Arc::from(base_url.as_str()),
            require_auth: config.require_auth,
        };
        let app = router(state.clone());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%base_url, "sandbox EHR listening");
        Ok(Sandbox {
            addr,
            base_url,
            state,
            patients,
            families,
            shutdown,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The FHIR base, `base_url() + "/fhir"`.
    pub fn fhir_base(&self) -> String {
        format!("{}/fhir", self.base_url)
    }

    /// The address the sandbox listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The SMART authorization server.
    pub fn auth(&self) -> &Arc<AuthServer> {
        &self.state.auth
    }

    /// The resource store, for tests that count and inspect resources.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The latency and fault knobs and the request counter.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// The generated ordinary patients, `pat-1` … `pat-N`.
    pub fn patients(&self) -> &[PatientSummary] {
        &self.patients
    }

    /// The generated families: their patients, sensitive records and proxy logins
    /// (tokens for a proxy: [`AuthServer::issue_proxy_token`]).
    pub fn families(&self) -> &Families {
        &self.families
    }

    /// The clients registered with the authorization server.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.state.auth.clients()
    }

    /// The shared handler state, for building another router over the same sandbox.
    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    /// Stops accepting connections and waits (at most five seconds) for open ones.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
