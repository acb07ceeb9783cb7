//! Bootstrap: build the state from a [`Config`], bind the listener, serve until told to
//! stop. Tests drive the same code: [`App::build`] on port 0, or [`router`] with `oneshot`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use portico_upstream::{FhirClient, FhirUpstream, ResolvedUpstreamConfig};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::map_request_body::MapRequestBodyLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::error::{ApiError, FhirError, PortalError};

/// Everything a handler needs, cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    upstream: Arc<dyn FhirUpstream>,
    client: Arc<FhirClient>,
}

impl AppState {
    /// State over a real upstream client.
    pub fn new(config: Config, client: FhirClient) -> Self {
        let client = Arc::new(client);
        AppState {
            inner: Arc::new(Inner {
                config,
                upstream: client.clone(),
                client,
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The upstream port every request goes through.
    pub fn upstream(&self) -> &Arc<dyn FhirUpstream> {
        &self.inner.upstream
    }

    /// The concrete client, for probes that need more than the port (token checks).
    pub fn client(&self) -> &FhirClient {
        &self.inner.client
    }
}

/// A bound, ready-to-run gateway.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    router: Router,
    shutdown_grace: Duration,
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
        config: Config,
        upstream: ResolvedUpstreamConfig,
    ) -> anyhow::Result<App> {
        let client = FhirClient::new(upstream)?;
        let listener = TcpListener::bind(config.server.listen).await?;
        let shutdown_grace = config.server.shutdown_grace();
        let router = router(AppState::new(config, client));
        Ok(App {
            listener,
            router,
            shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish for up to
    /// the configured grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let grace = self.shutdown_grace;
        let serve = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = tx.send(());
        });
        let mut serve = std::pin::pin!(serve.into_future());
        tokio::select! {
            result = &mut serve => result,
            _ = async {
                let _ = rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown grace period over; dropping open connections");
                Ok(())
            }
        }
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
                    // The path only: query strings can carry identifiers.
                    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
                })
                .on_request(())
                .on_response(|res: &axum::http::Response<_>, latency: Duration, _span: &tracing::Span| {
                    tracing::info!(status = res.status().as_u16(), latency_ms = latency.as_secs_f64() * 1000.0, "served");
                }),
        )
        .layer(PropagateRequestIdLayer::new(request_id))
        // Refuses declared-too-large bodies at once (413) and caps streamed ones.
        .layer(RequestBodyLimitLayer::new(server.body_limit_bytes))
        .layer(MapRequestBodyLayer::new(Body::new))
        .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, server.request_timeout()))
        .layer(middleware::from_fn(log_errors));

    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/fhir", Router::new().fallback(fhir_not_found))
        .nest("/api/v1", Router::new().fallback(portal_not_found))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(layers)
        .with_state(state)
}

/// Logs every error response once, from the [`ApiError`] the renderer left in the
/// response extensions (status and code only: never bodies).
async fn log_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(e) = response.extensions().get::<ApiError>() {
        if e.status.is_server_error() {
            tracing::warn!(status = e.status.as_u16(), code = e.code, "request failed");
        } else {
            tracing::debug!(status = e.status.as_u16(), code = e.code, "request refused");
        }
    }
    response
}

/// Liveness: the process is up and serving.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the EHR answers its `metadata` and the upstream credential works.
async fn readyz(State(state): State<AppState>) -> Response {
    let token = state.client().check_auth().await;
    let metadata = state
        .upstream()
        .execute(portico_upstream::FhirRequest::capabilities())
        .await;
    let check = |r: Result<(), String>| match r {
        Ok(()) => serde_json::json!({"status": "ok"}),
        Err(e) => serde_json::json!({"status": "failing", "error": e}),
    };
    let ready = token.is_ok() && metadata.is_ok();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "upstream_credentials": check(token.map_err(|e| e.to_string())),
            "upstream_metadata": check(metadata.map(|_| ()).map_err(|e| e.to_string())),
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn fhir_not_found() -> FhirError {
    FhirError(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such FHIR endpoint on this gateway",
    ))
}

async fn portal_not_found() -> PortalError {
    PortalError(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such portal API endpoint",
    ))
}
