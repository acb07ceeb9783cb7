//! Bootstrap: build the state from a [`Config`], bind the listener, serve until told to
//! stop. Tests drive the same code: [`App::build`] on port 0, or [`router`] with `oneshot`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderName;
use axum::middleware;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use portico_access::{ExtraLink, Policy, TokenVerifier, VerifierConfig};
use portico_cache::CachedUpstream;
use portico_upstream::{FhirClient, Resilient, ResolvedAuth, ResolvedUpstreamConfig};
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::audit::AuditTrail;
use crate::authn::HttpKeySource;
use crate::config::Config;
use crate::facade::cursor::CursorKey;
pub use crate::state::AppState;
use crate::state::Inner;

impl AppState {
    /// State over a real upstream client. `config.server.public_url` must be final.
    pub fn new(config: Config, client: FhirClient, passthrough: bool) -> anyhow::Result<Self> {
        let client = Arc::new(client);
        // The port every request goes through: cache → resilience → HTTP client.
        let resilient = Arc::new(Resilient::new(client.clone(), config.resilience.clone()));
        // Sessions, idempotency records, locks, offers and the cache's invalidation: in
        // memory, or shared by the replicas through Redis.
        let shared = crate::shared::SharedStores::build(&config)?;
        let mut cache = CachedUpstream::new(resilient.clone(), config.cache.clone());
        if let Some(redis) = &shared.redis {
            cache = cache.with_shared_generations(Arc::new(portico_redis::RedisGenerations::new(
                redis.clone(),
                config.cache.max_lifetime(),
            )));
        }
        let cache = Arc::new(cache);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let fhir_base = config.fhir_base();
        let upstream_base = config
            .upstream
            .base_url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let issuer = config.auth.issuer.as_str().trim_end_matches('/').to_owned();
        let discovery = [
            format!("{upstream_base}/.well-known/smart-configuration"),
            format!("{issuer}/.well-known/openid-configuration"),
        ]
        .iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .collect();
        let keys = HttpKeySource::new(http.clone(), config.auth.jwks_url.clone(), discovery);
        let mut verifier_config = VerifierConfig::new(issuer, config.audiences());
        verifier_config.leeway = Duration::from_secs(config.auth.leeway_seconds);
        let c = &config.auth.claims;
        verifier_config.claims.patient = c.patient.clone();
        verifier_config.claims.fhir_user = c.fhir_user.clone();
        verifier_config.claims.scope = c.scope.clone();
        verifier_config.claims.scp = c.scp.clone();
        let mut verifier = TokenVerifier::new(verifier_config, Arc::new(keys));
        if let Some(i) = &config.auth.introspection {
            let secret = i.resolve_secret().map_err(|e| anyhow::anyhow!(e))?;
            verifier = verifier.with_introspector(Arc::new(crate::authn::HttpIntrospector::new(
                http.clone(),
                i.url.clone(),
                i.client_id.clone(),
                secret,
            )));
        }
        let policy = Policy::new(upstream_base.clone())
            .with_local_base(fhir_base.clone())
            .with_link(ExtraLink::task_for())
            .with_link(portico_portal::bills::payment_link());
        // The audit trail: its writer (and AuditEvent delivery) tasks start here.
        let audit_trail = AuditTrail::start(&config.audit, client.token_provider().cloned())?;
        let audit: Arc<dyn portico_access::audit::AuditSink> = Arc::new(audit_trail.clone());
        let cursor_key = match &config.facade.cursor_key_file {
            Some(path) => {
                CursorKey::from_file_contents(&std::fs::read(path)?).map_err(anyhow::Error::msg)?
            }
            None => CursorKey::random(),
        }
        .with_upstream_base(upstream_base.clone());
        let login = crate::login::LoginState::new(&config)?
            .with_store(shared.sessions)
            .with_locks(shared.locks.clone());
        let profile = config.ehr.load_profile().map_err(|e| anyhow::anyhow!(e))?;
        let payments: Arc<dyn portico_portal::payments::PaymentProcessor> =
            match config.portal.payment_processor {
                crate::config::PaymentProcessorKind::None => {
                    Arc::new(portico_portal::payments::NoProcessor)
                }
                crate::config::PaymentProcessorKind::Sandbox => {
                    Arc::new(portico_portal::payments::SandboxProcessor::default())
                }
            };
        // The one guarded path to the EHR, shared by the facade and the portal.
        let guard = portico_guard::Guard::new(cache.clone(), policy.clone(), audit.clone())
            .with_uncached(resilient.clone());
        let rules = config
            .proxies
            .rules()
            .map_err(|problems| anyhow::anyhow!(problems.join("; ")))?;
        let delegations = portico_guard::Delegations::new(cache.clone(), rules).with_consents(
            profile.proxies.revoke == portico_portal::profile::RevokeStrategy::Consent,
        );
        let portal = portico_portal::Portal::with_guard(guard.clone(), profile, payments)
            .with_locks(shared.locks)
            .with_offers(shared.offers);
        let idempotency = shared.idempotency;
        Ok(AppState {
            inner: Arc::new(Inner {
                upstream: cache.clone(),
                cache,
                resilient,
                client,
                passthrough,
                verifier,
                policy,
                audit,
                audit_trail,
                cursor_key,
                http,
                fhir_base,
                upstream_base,
                smart: OnceCell::new(),
                capabilities: OnceCell::new(),
                login,
                http_metrics: crate::metrics::HttpMetrics::default(),
                guard,
                delegations,
                portal,
                idempotency,
                redis: shared.redis,
                config,
            }),
        })
    }
}

/// Compares what the EHR profile needs with the EHR's CapabilityStatement and refuses
/// to start when something is missing, naming each interaction. An EHR that cannot be
/// reached at start is not fatal (it may come up later); `/readyz` reports it.
async fn verify_ehr_profile(state: &AppState) -> anyhow::Result<()> {
    let profile = state.portal().profile();
    match tokio::time::timeout(Duration::from_secs(10), state.upstream_capabilities()).await {
        Ok(Some(capabilities)) => {
            let missing = profile.check_capabilities(&capabilities.summary);
            if !missing.is_empty() {
                anyhow::bail!(
                    "the EHR's CapabilityStatement lacks what EHR profile `{}` needs: {}. \
                     Choose the profile that matches this EHR (`ehr.profile`), or set \
                     `ehr.check_capabilities = false` if the statement is known to be incomplete",
                    profile.name,
                    missing.join(", ")
                );
            }
            tracing::info!(profile = %profile.name, "EHR profile matches the EHR's capabilities");
        }
        _ => tracing::warn!(
            profile = %profile.name,
            "could not read the EHR's CapabilityStatement; the EHR profile was not checked"
        ),
    }
    Ok(())
}

/// A bound, ready-to-run gateway.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    router: Router,
    shutdown_grace: Duration,
    /// For its audit trail and, at shutdown, leaving the fleet's shared cache
    /// generations.
    state: AppState,
}

impl App {
    /// Builds the upstream client and binds `config.server.listen`. The config must
    /// already be validated (see [`Config::load`]).
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let upstream = config.upstream.resolve()?;
        Self::build_with(config, upstream).await
    }

    /// [`build`](Self::build) with an already resolved upstream configuration: the demo
    /// passes the sandbox's in-memory client secret this way.
    pub async fn build_with(
        mut config: Config,
        upstream: ResolvedUpstreamConfig,
    ) -> anyhow::Result<App> {
        let passthrough = matches!(upstream.auth, ResolvedAuth::Passthrough);
        let client = FhirClient::new(upstream)?;
        let listener = TcpListener::bind(config.server.listen).await?;
        if config.server.public_url.is_none() {
            // Links must name the port actually bound (port 0 in tests).
            config.server.public_url = Some(url::Url::parse(&format!(
                "http://{}",
                listener.local_addr()?
            ))?);
        }
        let shutdown_grace = config.server.shutdown_grace();
        let state = AppState::new(config, client, passthrough)?;
        if state.config().ehr.check_capabilities {
            verify_ehr_profile(&state).await?;
        }
        let router = router(state.clone());
        Ok(App {
            listener,
            router,
            shutdown_grace,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The audit trail (to reopen its file on SIGHUP).
    pub fn audit_trail(&self) -> &AuditTrail {
        self.state.audit_trail()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish for up to
    /// the configured grace period, then drains and syncs the audit trail.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let grace = self.shutdown_grace;
        let state = self.state;
        let audit = state.audit_trail().clone();
        // No Nagle delay: a streamed answer's pieces are separate writes, and its last
        // one would otherwise wait for the client's delayed acknowledgement.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY could not be set");
            }
        });
        let serve = axum::serve(listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            // Other replicas' writes stop waiting for this one's cache (requests still in
            // flight here ask Redis instead).
            state.cache().leave_shared_generations().await;
            let _ = tx.send(());
        });
        let mut serve = std::pin::pin!(serve.into_future());
        let result = tokio::select! {
            result = &mut serve => result,
            _ = async {
                let _ = rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown grace period over; dropping open connections");
                Ok(())
            }
        };
        audit.close().await;
        result
    }
}

/// The gateway's routes and layers.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let server = &state.config().server;
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-");
                    // Ids and query strings are patient data: log the path's shape only.
                    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %redact_path(req.uri().path()))
                })
                .on_request(())
                .on_response(|res: &axum::http::Response<_>, latency: Duration, _span: &tracing::Span| {
                    tracing::info!(status = res.status().as_u16(), latency_ms = latency.as_secs_f64() * 1000.0, "served");
                }),
        )
        .layer(PropagateRequestIdLayer::new(request_id))
        // Bodies read whole and bounded (an oversized one is drained, then refused: 413),
        // the time limit (504), and every error in the API's format, whoever produced it.
        .layer(middleware::from_fn_with_state(
            crate::edge::Edge {
                body_limit: server.body_limit_bytes,
                timeout: server.request_timeout(),
            },
            crate::edge::edge,
        ));

    let routes = Router::new()
        .route("/healthz", get(crate::probes::healthz))
        .route("/readyz", get(crate::probes::readyz))
        .route("/metrics", get(crate::probes::metrics))
        .nest("/fhir", crate::facade::router())
        .nest("/auth", crate::login::router())
        .nest("/api/v1", crate::portal::router(&state));
    // The patient portal's pages (and the fallback: their 404 page, or a plain one).
    crate::web::mount(routes, &state)
        // Bodies are bounded once, by `edge` (the configured limit).
        .layer(axum::extract::DefaultBodyLimit::disable())
        // Inside the router, so the matched route template is known (see `metrics`).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::probes::track,
        ))
        .layer(layers)
        .with_state(state)
}

/// The shape of a request path, safe to log: resource types and fixed words are kept,
/// anything else (ids, versions, names) becomes `:id`.
pub fn redact_path(path: &str) -> String {
    const WORDS: &[&str] = &[
        "fhir",
        "api",
        "v1",
        "auth",
        "metadata",
        "_history",
        "_search",
        "_page",
        "$everything",
        ".well-known",
        "smart-configuration",
        "healthz",
        "readyz",
        "metrics",
        "login",
        "callback",
        "logout",
        "session",
    ];
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').skip(1) {
        out.push('/');
        if WORDS.contains(&segment)
            || portico_fhir::resource_types::is_known(segment)
            || segment.is_empty()
        {
            out.push_str(segment);
        } else {
            out.push_str(":id");
        }
    }
    if out.is_empty() { "/".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::redact_path;

    #[test]
    fn paths_are_logged_without_ids() {
        assert_eq!(redact_path("/fhir/Patient/pat-1"), "/fhir/Patient/:id");
        assert_eq!(
            redact_path("/fhir/Observation/o-1/_history/2"),
            "/fhir/Observation/:id/_history/:id"
        );
        assert_eq!(
            redact_path("/fhir/Patient/pat-1/$everything"),
            "/fhir/Patient/:id/$everything"
        );
        assert_eq!(redact_path("/healthz"), "/healthz");
        assert_eq!(redact_path("/"), "/");
        assert_eq!(redact_path("/api/v1/records/Jane%20Doe"), "/api/v1/:id/:id");
    }
}
