//! [`FhirClient`]: the FHIR R4 REST client over one pooled reqwest `Client`.
//!
//! Invariants:
//! - every URL is built from the configured base with percent-encoded path segments,
//!   and resource types, ids and versions are checked (known R4 type, FHIR id syntax)
//!   before anything is sent, so a request can never address another endpoint;
//! - a paging link is followed only if it has the base's scheme, host and port, no
//!   user info, and a path under the base path: the gateway's credential never goes
//!   anywhere else;
//! - redirects are not followed (a 3xx is a `Protocol` error), for the same reason;
//! - the gateway's token (client credentials, Backend Services) is sent in those modes,
//!   the caller's token only in passthrough mode, and nothing in `none` mode;
//! - logs carry the interaction kind, resource type, status and latency only: no URL,
//!   query, body or token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, header};
use portico_fhir::reference::is_valid_id;
use portico_fhir::scan::{ScanError, Scanner};
use portico_fhir::{FHIR_JSON, JSON_PATCH, resource_types};
use url::Url;

use crate::FhirUpstream;
use crate::auth::TokenProvider;
use crate::capabilities::{Capabilities, CapabilitySummary};
use crate::config::{ConfigError, ResolvedAuth, ResolvedUpstreamConfig, UpstreamConfig};
use crate::error::UpstreamError;
use crate::partial::{Answer, BodyRest, WHOLE_UP_TO};
use crate::request::{FhirRequest, Interaction};
use crate::response::{FhirResponse, parse_etag_version, parse_location};
use crate::secret::SecretString;

const FORM_URLENCODED: &str = "application/x-www-form-urlencoded";

/// The method, URL and body (with its content type) of an interaction.
type Plan = (Method, Url, Option<(Bytes, &'static str)>);

#[derive(Debug)]
enum Credential {
    None,
    System(TokenProvider),
    Passthrough,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// The service base; its path has no trailing slash (except the root `/`).
    base: Url,
    request_timeout: Duration,
    search_post_threshold: usize,
    credential: Credential,
}

/// The upstream FHIR client. Cheap to clone: clones share the connection pool and the
/// token cache.
#[derive(Debug, Clone)]
pub struct FhirClient {
    inner: Arc<Inner>,
}

impl FhirClient {
    /// Builds the client from a resolved configuration.
    pub fn new(config: ResolvedUpstreamConfig) -> Result<FhirClient, ConfigError> {
        let build_err = |e: reqwest::Error| ConfigError::HttpClient {
            detail: crate::error::error_chain(&e),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(config.pool_idle_timeout)
            .user_agent(config.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(build_err)?;
        let credential = match &config.auth {
            ResolvedAuth::None => Credential::None,
            ResolvedAuth::Passthrough => Credential::Passthrough,
            auth => {
                // The token client has a whole-request timeout because oauth2 cannot set
                // one per request; it never follows redirects (RFC 6749 section 3.2).
                let token_http = reqwest::Client::builder()
                    .connect_timeout(config.connect_timeout)
                    .timeout(config.request_timeout)
                    .user_agent(config.user_agent.clone())
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(build_err)?;
                match TokenProvider::from_auth(auth, token_http) {
                    Some(provider) => Credential::System(provider),
                    None => Credential::None,
                }
            }
        };
        let mut base = config.base_url;
        base.set_query(None);
        base.set_fragment(None);
        if base.path().len() > 1 && base.path().ends_with('/') {
            let trimmed = base.path().trim_end_matches('/').to_owned();
            base.set_path(&trimmed);
        }
        Ok(FhirClient {
            inner: Arc::new(Inner {
                http,
                base,
                request_timeout: config.request_timeout,
                search_post_threshold: config.search_post_threshold,
                credential,
            }),
        })
    }

    /// Resolves secrets (files, process environment) and builds the client.
    pub fn from_config(config: &UpstreamConfig) -> Result<FhirClient, ConfigError> {
        FhirClient::new(config.resolve()?)
    }

    /// The configured FHIR base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The provider of the gateway's own upstream token, in the modes that have one.
    pub fn token_provider(&self) -> Option<&TokenProvider> {
        match &self.inner.credential {
            Credential::System(provider) => Some(provider),
            _ => None,
        }
    }

    /// Checks that the upstream credential works: obtains a token in the client
    /// credentials and Backend Services modes, succeeds at once otherwise.
    pub async fn check_auth(&self) -> Result<(), UpstreamError> {
        match self.token_provider() {
            Some(provider) => provider.check().await,
            None => Ok(()),
        }
    }

    pub async fn read(&self, resource_type: &str, id: &str) -> Result<FhirResponse, UpstreamError> {
        self.execute(FhirRequest::read(resource_type, id)).await
    }

    pub async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: &str,
    ) -> Result<FhirResponse, UpstreamError> {
        self.execute(FhirRequest::vread(resource_type, id, version))
            .await
    }

    pub async fn history(
        &self,
        resource_type: &str,
        id: &str,
        params: Vec<(String, String)>,
    ) -> Result<FhirResponse, UpstreamError> {
        self.execute(FhirRequest::history(resource_type, id, params))
            .await
    }

    pub async fn search(
        &self,
        resource_type: &str,
        params: Vec<(String, String)>,
    ) -> Result<FhirResponse, UpstreamError> {
        self.execute(FhirRequest::search(resource_type, params))
            .await
    }

    pub async fn search_page(&self, url: &str) -> Result<FhirResponse, UpstreamError> {
        self.execute(FhirRequest::search_page(url)).await
    }

    pub async fn create(
        &self,
        resource_type: &str,
        body: Bytes,
        if_none_exist: Option<String>,
    ) -> Result<FhirResponse, UpstreamError> {
        let mut request = FhirRequest::create(resource_type, body);
        if let Some(query) = if_none_exist {
            request = request.with_if_none_exist(query);
        }
        self.execute(request).await
    }

    pub async fn update(
        &self,
        resource_type: &str,
        id: &str,
        body: Bytes,
        if_match: Option<String>,
    ) -> Result<FhirResponse, UpstreamError> {
        let mut request = FhirRequest::update(resource_type, id, body);
        if let Some(etag) = if_match {
            request = request.with_if_match(etag);
        }
        self.execute(request).await
    }

    pub async fn patch(
        &self,
        resource_type: &str,
        id: &str,
        json_patch: Bytes,
        if_match: Option<String>,
    ) -> Result<FhirResponse, UpstreamError> {
        let mut request = FhirRequest::patch(resource_type, id, json_patch);
        if let Some(etag) = if_match {
            request = request.with_if_match(etag);
        }
        self.execute(request).await
    }

    pub async fn delete(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<FhirResponse, UpstreamError> {
        self.execute(FhirRequest::delete(resource_type, id)).await
    }

    /// `GET metadata`, parsed and summarised.
    pub async fn capabilities(&self) -> Result<Capabilities, UpstreamError> {
        let response = self.execute(FhirRequest::capabilities()).await?;
        let statement = response.json()?;
        let summary = CapabilitySummary::from_statement(&statement)?;
        Ok(Capabilities { statement, summary })
    }

    /// Checks that a paging link lies under the configured base (same scheme, host and
    /// port, no user info, path under the base path) and returns it parsed. Relative
    /// links are resolved against the base first.
    pub fn check_page_url(&self, link: &str) -> Result<Url, UpstreamError> {
        let outside = || UpstreamError::Protocol {
            detail: "paging link points outside the upstream base url".to_owned(),
        };
        let base = &self.inner.base;
        let mut base_dir = base.clone();
        if !base_dir.path().ends_with('/') {
            let with_slash = format!("{}/", base_dir.path());
            base_dir.set_path(&with_slash);
        }
        let url = Url::options()
            .base_url(Some(&base_dir))
            .parse(link.trim())
            .map_err(|_| outside())?;
        let same_origin = url.scheme() == base.scheme()
            && url.host() == base.host()
            && url.port_or_known_default() == base.port_or_known_default();
        let no_userinfo = url.username().is_empty() && url.password().is_none();
        let base_path = base.path().trim_end_matches('/');
        let path = url.path();
        let under_base = base_path.is_empty()
            || path == base_path
            || path
                .strip_prefix(base_path)
                .is_some_and(|rest| rest.starts_with('/'));
        if same_origin && no_userinfo && under_base {
            Ok(url)
        } else {
            Err(outside())
        }
    }

    /// `base/segment/segment...`, segments percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<Url, UpstreamError> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| UpstreamError::InvalidRequest {
                detail: "the upstream base url cannot have a path".to_owned(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// The method, URL and body (with its content type) of an interaction.
    fn plan(&self, interaction: &Interaction) -> Result<Plan, UpstreamError> {
        Ok(match interaction {
            Interaction::Read { resource_type, id } => {
                check_type(resource_type)?;
                check_id(id, "id")?;
                (Method::GET, self.url(&[resource_type, id])?, None)
            }
            Interaction::VRead {
                resource_type,
                id,
                version,
            } => {
                check_type(resource_type)?;
                check_id(id, "id")?;
                check_id(version, "version id")?;
                let url = self.url(&[resource_type, id, "_history", version])?;
                (Method::GET, url, None)
            }
            Interaction::History {
                resource_type,
                id,
                params,
            } => {
                check_type(resource_type)?;
                check_id(id, "id")?;
                let mut url = self.url(&[resource_type, id, "_history"])?;
                set_query(&mut url, params);
                (Method::GET, url, None)
            }
            Interaction::Search {
                resource_type,
                params,
            } => {
                check_type(resource_type)?;
                let query = encode_query(params);
                let threshold = self.inner.search_post_threshold;
                if threshold > 0 && query.len() > threshold {
                    let url = self.url(&[resource_type, "_search"])?;
                    (
                        Method::POST,
                        url,
                        Some((Bytes::from(query), FORM_URLENCODED)),
                    )
                } else {
                    let mut url = self.url(&[resource_type])?;
                    if !query.is_empty() {
                        url.set_query(Some(&query));
                    }
                    (Method::GET, url, None)
                }
            }
            Interaction::SearchPage { url } => (Method::GET, self.check_page_url(url)?, None),
            Interaction::Create {
                resource_type,
                body,
                ..
            } => {
                check_type(resource_type)?;
                let url = self.url(&[resource_type])?;
                (Method::POST, url, Some((body.clone(), FHIR_JSON)))
            }
            Interaction::Update {
                resource_type,
                id,
                body,
                ..
            } => {
                check_type(resource_type)?;
                check_id(id, "id")?;
                let url = self.url(&[resource_type, id])?;
                (Method::PUT, url, Some((body.clone(), FHIR_JSON)))
            }
            Interaction::Patch {
                resource_type,
                id,
                json_patch,
                ..
            } => {
                check_type(resource_type)?;
                check_id(id, "id")?;
                let url = self.url(&[resource_type, id])?;
                (Method::PATCH, url, Some((json_patch.clone(), JSON_PATCH)))
            }
            Interaction::Delete { resource_type, id } => {
                check_type(resource_type)?;
                check_id(id, "id")?;
                (Method::DELETE, self.url(&[resource_type, id])?, None)
            }
            Interaction::Operation {
                resource_type,
                id,
                name,
                body,
            } => {
                check_operation_name(name)?;
                let op = format!("${name}");
                let url = match (resource_type, id) {
                    (Some(rt), Some(id)) => {
                        check_type(rt)?;
                        check_id(id, "id")?;
                        self.url(&[rt, id, &op])?
                    }
                    (Some(rt), None) => {
                        check_type(rt)?;
                        self.url(&[rt, &op])?
                    }
                    (None, None) => self.url(&[&op])?,
                    (None, Some(_)) => {
                        return Err(UpstreamError::InvalidRequest {
                            detail: "an instance operation needs a resource type".to_owned(),
                        });
                    }
                };
                (Method::POST, url, Some((body.clone(), FHIR_JSON)))
            }
            Interaction::Capabilities => (Method::GET, self.url(&["metadata"])?, None),
        })
    }

    /// The request headers other than `Authorization`.
    fn headers(&self, request: &FhirRequest) -> Result<HeaderMap, UpstreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(FHIR_JSON));
        if let Some(id) = &request.request_id {
            headers.insert("x-request-id", header_value(id, "X-Request-Id")?);
        }
        if let Some(prefer) = request.prefer {
            headers.insert("prefer", HeaderValue::from_static(prefer.header_value()));
        }
        match &request.interaction {
            Interaction::Create {
                if_none_exist: Some(query),
                ..
            } => {
                headers.insert("if-none-exist", header_value(query, "If-None-Exist")?);
            }
            Interaction::Update {
                if_match: Some(etag),
                ..
            }
            | Interaction::Patch {
                if_match: Some(etag),
                ..
            } => {
                headers.insert(header::IF_MATCH, header_value(etag, "If-Match")?);
            }
            Interaction::Read { .. } | Interaction::VRead { .. } => {
                if let Some(etag) = &request.if_none_match {
                    headers.insert(header::IF_NONE_MATCH, header_value(etag, "If-None-Match")?);
                }
            }
            _ => {}
        }
        Ok(headers)
    }

    /// The `Authorization` header for this request, if any.
    async fn authorization(
        &self,
        request: &FhirRequest,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        let token: SecretString = match (&self.inner.credential, &request.bearer) {
            (Credential::None, _) | (Credential::Passthrough, None) => return Ok(None),
            (Credential::Passthrough, Some(token)) => token.clone(),
            (Credential::System(provider), _) => provider.token().await?,
        };
        let mut value =
            HeaderValue::try_from(format!("Bearer {}", token.expose())).map_err(|_| {
                UpstreamError::InvalidRequest {
                    detail: "bearer token is not a valid header value".to_owned(),
                }
            })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    async fn send(&self, request: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        match self.send_reading(request, false).await? {
            Answer::Whole(response) => Ok(response),
            // Not produced when not asked for; were it, the rest is read here.
            Answer::Partial(mut response, mut rest) => {
                let mut body = BytesMut::from(&response.body[..]);
                while let Some(piece) = rest.next().await {
                    body.extend_from_slice(&piece?);
                }
                response.body = body.freeze();
                Ok(response)
            }
        }
    }

    /// Sends the request and reads its answer: whole, or with `partial` and a body
    /// longer than [`WHOLE_UP_TO`], in part ([`crate::partial`]).
    async fn send_reading(
        &self,
        request: FhirRequest,
        partial: bool,
    ) -> Result<Answer, UpstreamError> {
        let (method, url, body) = self.plan(&request.interaction)?;
        let mut headers = self.headers(&request)?;
        if let Some((_, content_type)) = &body {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        if let Some(auth) = self.authorization(&request).await? {
            headers.insert(header::AUTHORIZATION, auth);
        }
        let mut builder = self
            .inner
            .http
            .request(method, url)
            .headers(headers)
            .timeout(self.inner.request_timeout);
        if let Some((bytes, _)) = body {
            builder = builder.body(bytes);
        }

        let started = Instant::now();
        let conditional = request.if_none_match.is_some()
            && matches!(
                request.interaction,
                Interaction::Read { .. } | Interaction::VRead { .. }
            );
        let result = match self.exchange(builder, conditional).await {
            Err(e) => Err(e),
            Ok((response, None)) => check_answer(&request.interaction, response).map(Answer::Whole),
            Ok((mut response, Some(rest))) if !partial => match rest.bytes().await {
                Ok(body) => {
                    response.body = body;
                    check_answer(&request.interaction, response).map(Answer::Whole)
                }
                Err(e) => Err(UpstreamError::from_reqwest(e)),
            },
            Ok((mut response, Some(mut rest))) => match read_up_to(&mut rest, WHOLE_UP_TO).await {
                Err(e) => Err(e),
                Ok((first, ended)) => {
                    response.body = first;
                    if ended {
                        check_answer(&request.interaction, response).map(Answer::Whole)
                    } else {
                        check_content_type(&response)
                            .map(|()| Answer::Partial(response, body_rest(rest)))
                    }
                }
            },
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let resource_type = request.resource_type().unwrap_or("");
        match &result {
            Ok(Answer::Whole(response) | Answer::Partial(response, _)) => tracing::debug!(
                interaction = request.kind(),
                resource_type,
                status = response.status,
                partial = matches!(result, Ok(Answer::Partial(..))),
                elapsed_ms,
                "upstream request"
            ),
            Err(err) => tracing::debug!(
                interaction = request.kind(),
                resource_type,
                error = %err,
                elapsed_ms,
                "upstream request failed"
            ),
        }
        if let (Err(UpstreamError::Unauthorized { .. }), Credential::System(provider)) =
            (&result, &self.inner.credential)
        {
            // The EHR no longer accepts our token (revoked, rotated keys): fetch a new
            // one next time instead of failing until it expires.
            provider.invalidate();
        }
        result
    }

    /// Sends the request and reads the answer's status and headers. An error status is
    /// the error (its body read for an OperationOutcome); a `304` to a conditional read
    /// (`conditional`: an `If-None-Match` read) is an answer with no body rather than a
    /// protocol error; otherwise the answer without its body, and the body to read.
    async fn exchange(
        &self,
        builder: reqwest::RequestBuilder,
        conditional: bool,
    ) -> Result<(FhirResponse, Option<reqwest::Response>), UpstreamError> {
        let response = builder.send().await.map_err(UpstreamError::from_reqwest)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = |name: http::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
        };
        if conditional && status == 304 {
            let mut not_modified = FhirResponse::new(304, Bytes::new());
            if let Some(etag) = text(header::ETAG) {
                not_modified = not_modified.with_etag(etag);
            }
            return Ok((not_modified, None));
        }
        if !(200..300).contains(&status) {
            // The body only serves to recover an OperationOutcome: if it cannot be read,
            // the status alone still classifies the failure.
            let body = response.bytes().await.unwrap_or_default();
            return Err(UpstreamError::from_status(
                status,
                &body,
                text(header::WWW_AUTHENTICATE),
                text(header::RETRY_AFTER).as_deref(),
            ));
        }
        let etag = text(header::ETAG);
        let location = text(header::LOCATION).or_else(|| text(header::CONTENT_LOCATION));
        let version_id = etag.as_deref().and_then(parse_etag_version).or_else(|| {
            location
                .as_deref()
                .and_then(parse_location)
                .and_then(|r| r.version)
        });
        let answer = FhirResponse {
            status,
            body: Bytes::new(),
            etag,
            version_id,
            location,
            last_modified: text(header::LAST_MODIFIED),
            content_type: text(header::CONTENT_TYPE),
            stale_age: None,
            derived: None,
        };
        Ok((answer, Some(response)))
    }
}

/// Reads a body until it ends or `limit` bytes have come: what came, and whether the
/// body ended.
async fn read_up_to(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Bytes, bool), UpstreamError> {
    let first = response
        .chunk()
        .await
        .map_err(UpstreamError::from_reqwest)?;
    let Some(first) = first else {
        return Ok((Bytes::new(), true));
    };
    // Most bodies come in one piece: keep it without a copy.
    let mut more = match response
        .chunk()
        .await
        .map_err(UpstreamError::from_reqwest)?
    {
        None => return Ok((first, true)),
        Some(second) => {
            let mut body = BytesMut::with_capacity(first.len() + second.len());
            body.extend_from_slice(&first);
            body.extend_from_slice(&second);
            body
        }
    };
    while more.len() < limit {
        match response
            .chunk()
            .await
            .map_err(UpstreamError::from_reqwest)?
        {
            None => return Ok((more.freeze(), true)),
            Some(piece) => more.extend_from_slice(&piece),
        }
    }
    Ok((more.freeze(), false))
}

/// The rest of a body as it arrives; it ends at its first error.
fn body_rest(response: reqwest::Response) -> BodyRest {
    BodyRest::new(futures::stream::unfold(
        Some(response),
        |response| async move {
            let mut response = response?;
            match response.chunk().await {
                Ok(Some(piece)) => Some((Ok(piece), Some(response))),
                Ok(None) => None,
                Err(e) => Some((Err(UpstreamError::from_reqwest(e)), None)),
            }
        },
    ))
}

#[async_trait::async_trait]
impl FhirUpstream for FhirClient {
    async fn execute(&self, request: FhirRequest) -> Result<FhirResponse, UpstreamError> {
        self.send(request).await
    }

    /// Reads partially only searches and their pages: the answers the streamed Bundle
    /// check reads.
    async fn execute_partial(&self, request: FhirRequest) -> Result<Answer, UpstreamError> {
        let partial = matches!(
            request.interaction,
            Interaction::Search { .. } | Interaction::SearchPage { .. }
        );
        self.send_reading(request, partial).await
    }
}

/// Checks that a successful answer is what the request asked for before anything uses
/// or keeps it: readable JSON (complete: a body cut short is not), a JSON content type
/// when one is named, and for reads, histories and searches the expected resource type
/// (a read answered with an `OperationOutcome` is not the resource). What fails is a
/// [`UpstreamError::MalformedBody`]: an upstream fault, never cached, retried like the
/// EHR's other failures where reads are retried. Writes are left to the caller, which
/// must tell a malformed answer to an applied write from a write that did not happen.
fn check_answer(
    interaction: &Interaction,
    response: FhirResponse,
) -> Result<FhirResponse, UpstreamError> {
    let expected = match interaction {
        Interaction::Read { resource_type, .. } | Interaction::VRead { resource_type, .. } => {
            Some(resource_type.as_str())
        }
        Interaction::History { .. }
        | Interaction::Search { .. }
        | Interaction::SearchPage { .. } => Some("Bundle"),
        Interaction::Capabilities => Some("CapabilityStatement"),
        // An operation may answer with nothing, a Bundle, Parameters or a resource.
        Interaction::Operation { .. } if response.body.is_empty() => return Ok(response),
        Interaction::Operation { .. } => None,
        _ => return Ok(response),
    };
    if response.is_not_modified() {
        return Ok(response);
    }
    check_content_type(&response)?;
    let resource_type =
        resource_type_of(&response.body).map_err(|e| UpstreamError::MalformedBody {
            detail: format!("the answer is not complete JSON ({e})"),
        })?;
    match (expected, resource_type.as_deref()) {
        (None, _) => Ok(response),
        (Some(want), Some(got)) if want == got => Ok(response),
        (Some(want), got) => Err(UpstreamError::MalformedBody {
            detail: format!(
                "expected a {want}, the EHR answered with {}",
                got.unwrap_or("something that is not a resource")
            ),
        }),
    }
}

/// A JSON content type when the answer names one.
fn check_content_type(response: &FhirResponse) -> Result<(), UpstreamError> {
    if let Some(content_type) = response.content_type.as_deref() {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let json = media.eq_ignore_ascii_case("application/fhir+json")
            || media.eq_ignore_ascii_case("application/json")
            || media.eq_ignore_ascii_case("application/json+fhir");
        if !json {
            return Err(UpstreamError::MalformedBody {
                detail: "the answer is not FHIR JSON".to_owned(),
            });
        }
    }
    Ok(())
}

/// The `resourceType` of a JSON object's text, read with one pass of the scanner, which
/// checks the whole text is JSON; `None` when it has none. Text that is not an object,
/// and a `resourceType` given twice (a reader could take either) or not as a string,
/// are errors.
fn resource_type_of(body: &[u8]) -> Result<Option<String>, ScanError> {
    let mut scanner = Scanner::new(body)?;
    let mut resource_type = None;
    scanner.enter_object()?;
    while let Some(key) = scanner.next_key()? {
        let span = scanner.skip_value()?;
        if key == "resourceType" {
            let at = span.start;
            let value: String =
                serde_json::from_str(&scanner.text()[span]).map_err(|_| ScanError {
                    what: "a resourceType that is not a string",
                    at,
                })?;
            if resource_type.replace(value).is_some() {
                return Err(ScanError {
                    what: "resourceType given twice",
                    at,
                });
            }
        }
    }
    scanner.end()?;
    Ok(resource_type)
}

fn check_type(resource_type: &str) -> Result<(), UpstreamError> {
    if resource_types::is_known(resource_type) {
        Ok(())
    } else {
        Err(UpstreamError::InvalidRequest {
            detail: "unknown resource type".to_owned(),
        })
    }
}

/// An operation name (without `$`): a letter, then letters, digits, `-` or `_`.
fn check_operation_name(name: &str) -> Result<(), UpstreamError> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(UpstreamError::InvalidRequest {
            detail: "invalid operation name".to_owned(),
        })
    }
}

fn check_id(id: &str, what: &str) -> Result<(), UpstreamError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(UpstreamError::InvalidRequest {
            detail: format!("invalid resource {what}"),
        })
    }
}

fn header_value(value: &str, name: &str) -> Result<HeaderValue, UpstreamError> {
    HeaderValue::from_str(value).map_err(|_| UpstreamError::InvalidRequest {
        detail: format!("{name} is not a valid header value"),
    })
}

fn encode_query(params: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

fn set_query(url: &mut Url, params: &[(String, String)]) {
    let query = encode_query(params);
    if !query.is_empty() {
        url.set_query(Some(&query));
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    fn answer(body: &str, content_type: Option<&str>) -> FhirResponse {
        let mut r = FhirResponse::new(200, body.to_owned());
        r.content_type = content_type.map(str::to_owned);
        r
    }

    fn read() -> Interaction {
        Interaction::Read {
            resource_type: "Patient".to_owned(),
            id: "p1".to_owned(),
        }
    }

    fn search() -> Interaction {
        Interaction::Search {
            resource_type: "Observation".to_owned(),
            params: Vec::new(),
        }
    }

    #[test]
    fn only_complete_answers_of_the_type_asked_for_pass() {
        let fhir = Some("application/fhir+json; charset=utf-8");
        let patient = r#"{"resourceType":"Patient","id":"p1","name":[{"family":"A"}]}"#;
        let bundle = r#"{"resourceType":"Bundle","type":"searchset","entry":[]}"#;
        assert!(check_answer(&read(), answer(patient, fhir)).is_ok());
        assert!(check_answer(&read(), answer(patient, None)).is_ok());
        assert!(check_answer(&search(), answer(bundle, fhir)).is_ok());
        let refused = [
            (read(), answer(&patient[..30], fhir)),
            (read(), answer(patient, Some("text/html"))),
            (
                read(),
                answer(r#"{"resourceType":"OperationOutcome","issue":[]}"#, fhir),
            ),
            (read(), answer(r#"{"id":"p1"}"#, fhir)),
            (search(), answer(patient, fhir)),
            (search(), answer(&bundle[..bundle.len() - 1], fhir)),
            (search(), answer(&format!("{bundle} trailing"), fhir)),
            // Which `resourceType` a reader takes is not for the gateway to guess.
            (
                search(),
                answer(
                    r#"{"resourceType":"Patient","resourceType":"Bundle"}"#,
                    fhir,
                ),
            ),
            (search(), answer(r#"{"resourceType":["Bundle"]}"#, fhir)),
            (search(), answer(r#"["Bundle"]"#, fhir)),
            (read(), answer("\"Patient\"", fhir)),
            // A control character inside a string.
            (
                read(),
                answer("{\"resourceType\":\"Patient\",\"id\":\"\u{1}\"}", fhir),
            ),
        ];
        for (interaction, response) in refused {
            assert!(
                matches!(
                    check_answer(&interaction, response),
                    Err(UpstreamError::MalformedBody { .. })
                ),
                "{interaction:?}"
            );
        }
        // An operation may answer with nothing; writes are the caller's to judge.
        let operation = Interaction::Operation {
            resource_type: Some("Appointment".to_owned()),
            id: None,
            name: "find".to_owned(),
            body: Bytes::new(),
        };
        assert!(check_answer(&operation, answer("", None)).is_ok());
        assert!(check_answer(&operation, answer("{", fhir)).is_err());
        assert!(check_answer(&operation, answer("[]", fhir)).is_err());
        assert!(check_answer(&operation, answer(r#"{"resourceType":"Parameters"}"#, fhir)).is_ok());
        let create = Interaction::Create {
            resource_type: "Patient".to_owned(),
            body: Bytes::new(),
            if_none_exist: None,
        };
        assert!(check_answer(&create, answer("{", fhir)).is_ok());
    }
}

#[cfg(test)]
mod operation_tests {
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use crate::{FhirClient, FhirRequest, FhirUpstream, UpstreamAuthConfig, UpstreamConfig};

    #[tokio::test]
    async fn operations_post_parameters_to_type_instance_and_system_urls() {
        let server = MockServer::start().await;
        for p in [
            "/fhir/Appointment/$find",
            "/fhir/Appointment/a1/$hold",
            "/fhir/$ping",
        ] {
            Mock::given(method("POST"))
                .and(path(p))
                .and(header("content-type", "application/fhir+json"))
                .and(body_string_contains("\"Parameters\""))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(crate::tests::fixture("ehr/searchset-empty.json")),
                )
                .expect(1)
                .mount(&server)
                .await;
        }
        let base = url::Url::parse(&format!("{}/fhir", server.uri())).unwrap();
        let config = UpstreamConfig::new(base, UpstreamAuthConfig::None)
            .resolve()
            .unwrap();
        let c = FhirClient::new(config).unwrap();
        let body = r#"{"resourceType":"Parameters"}"#;
        for request in [
            FhirRequest::operation(Some("Appointment"), None, "find", body),
            FhirRequest::operation(Some("Appointment"), Some("a1"), "hold", body),
            FhirRequest::operation(None, None, "ping", body),
        ] {
            assert_eq!(c.execute(request).await.unwrap().status, 200);
        }
        // Names, types and ids are checked before anything is sent.
        for bad in [
            FhirRequest::operation(Some("Appointment"), None, "../x", body),
            FhirRequest::operation(Some("Appointment"), None, "", body),
            FhirRequest::operation(Some("NotAType"), None, "find", body),
            FhirRequest::operation(Some("Appointment"), Some("a/b"), "hold", body),
            FhirRequest::operation(None, Some("a1"), "hold", body),
        ] {
            let e = c.execute(bad).await.unwrap_err();
            assert!(
                matches!(e, crate::UpstreamError::InvalidRequest { .. }),
                "{e:?}"
            );
        }
    }
}
