//! The OAuth 2.0 client side of the portal login, on the `oauth2` crate: the
//! authorization request (code + PKCE S256 + state, `aud`, `nonce`), the code exchange,
//! refresh, and the OpenID Connect id-token check.
//!
//! The HTTP client used for the token endpoint follows no redirects (the crate's advice
//! against SSRF) and has short timeouts. Token-endpoint errors are reduced to their
//! RFC 6749 code; response bodies, codes and tokens are never logged or echoed.

use std::borrow::Cow;
use std::fmt;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, HttpClientError, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenUrl,
};
use portico_access::KeySource;
use portico_upstream::SecretString;
use serde::{Deserialize, Serialize};

/// Where clients log in, as the facade advertises it.
#[derive(Debug, Clone)]
pub struct SmartEndpoints {
    pub issuer: String,
    pub authorize: String,
    pub token: String,
    pub jwks: Option<String>,
}

/// SMART's additions to the token response (App Launch 2.x §"Token response").
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SmartTokenFields {
    /// The patient in context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The OpenID Connect id token, when `openid` was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
}

impl ExtraTokenFields for SmartTokenFields {}

/// `Debug` (required by `oauth2`) never shows the id token or the patient.
impl fmt::Debug for SmartTokenFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartTokenFields")
            .field("patient", &self.patient.is_some())
            .field("id_token", &self.id_token.is_some())
            .finish_non_exhaustive()
    }
}

pub type SmartTokenResponse = StandardTokenResponse<SmartTokenFields, BasicTokenType>;

/// An `oauth2` client with the authorization and token endpoints set.
pub type SmartClient = Client<
    BasicErrorResponse,
    SmartTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Why talking to the authorization server failed.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The server answered with an RFC 6749 error (`invalid_grant`, ...).
    #[error("the authorization server refused: {0}")]
    Refused(String),
    /// It could not be reached, or answered something that is not a token response.
    #[error("the authorization server is unavailable: {0}")]
    Unavailable(String),
    /// The configured endpoints are not usable URLs.
    #[error("the authorization server endpoints are invalid: {0}")]
    Config(String),
}

type TokenError = RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>;

fn classify(e: TokenError) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(r) => OAuthError::Refused(match r.error() {
            BasicErrorResponseType::Extension(_) => "error".to_owned(),
            known => known.to_string(),
        }),
        RequestTokenError::Request(e) => OAuthError::Unavailable(match e {
            HttpClientError::Reqwest(e) => e.without_url().to_string(),
            _ => "request failed".to_owned(),
        }),
        RequestTokenError::Parse(..) => {
            OAuthError::Unavailable("the token response could not be read".to_owned())
        }
        RequestTokenError::Other(_) => {
            OAuthError::Unavailable("unexpected token response".to_owned())
        }
    }
}

/// The gateway's registration at the authorization server.
#[derive(Clone)]
pub struct OAuthSettings {
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub aud: String,
}

impl fmt::Debug for OAuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthSettings")
            .field("client_id", &self.client_id)
            .field("confidential", &self.client_secret.is_some())
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// What `/auth/login` sends the browser to, and what it must remember.
#[derive(Debug)]
pub struct AuthorizationStart {
    pub url: url::Url,
    pub state: String,
    pub pkce_verifier: SecretString,
    pub nonce: Option<String>,
}

impl OAuthSettings {
    /// Whether an id token (and so a `nonce`) is part of the login.
    pub fn wants_openid(&self) -> bool {
        self.scopes.iter().any(|s| s == "openid")
    }

    pub fn client(&self, endpoints: &SmartEndpoints) -> Result<SmartClient, OAuthError> {
        let config = |e: url::ParseError| OAuthError::Config(e.to_string());
        let mut client = Client::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(AuthUrl::new(endpoints.authorize.clone()).map_err(config)?)
            .set_token_uri(TokenUrl::new(endpoints.token.clone()).map_err(config)?)
            .set_redirect_uri(RedirectUrl::new(self.redirect_uri.clone()).map_err(config)?);
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
        }
        Ok(client)
    }

    /// A fresh authorization request: PKCE S256, a random `state`, and a random `nonce`
    /// when `openid` is requested.
    pub fn start(&self, endpoints: &SmartEndpoints) -> Result<AuthorizationStart, OAuthError> {
        let client = self.client(endpoints)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = self.wants_openid().then(super::session::random_token);
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .add_extra_param("aud", self.aud.clone());
        if let Some(nonce) = &nonce {
            request = request.add_extra_param("nonce", nonce.clone());
        }
        let (url, state) = request.url();
        Ok(AuthorizationStart {
            url,
            state: state.secret().clone(),
            pkce_verifier: SecretString::new(verifier.secret().clone()),
            nonce,
        })
    }

    /// Exchanges an authorization code (with its PKCE verifier).
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        endpoints: &SmartEndpoints,
        code: &str,
        verifier: &SecretString,
    ) -> Result<SmartTokenResponse, OAuthError> {
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|e| OAuthError::Config(e.to_string()))?;
        self.client(endpoints)?
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose().to_owned()))
            .set_redirect_uri(Cow::Owned(redirect))
            .request_async(http)
            .await
            .map_err(classify)
    }

    /// Trades a refresh token for new tokens.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        endpoints: &SmartEndpoints,
        refresh_token: &SecretString,
    ) -> Result<SmartTokenResponse, OAuthError> {
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        self.client(endpoints)?
            .exchange_refresh_token(&token)
            .request_async(http)
            .await
            .map_err(classify)
    }
}

/// Why an id token was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("the id token is invalid")]
    Invalid,
    #[error("the id token's nonce does not match the login")]
    NonceMismatch,
    #[error("the issuer's keys are unavailable: {0}")]
    Keys(String),
}

#[derive(Deserialize)]
struct IdClaims {
    nonce: Option<String>,
}

/// Verifies an OpenID Connect id token from the token endpoint: signature (with the
/// issuer's JWKS, the same algorithm allow-list as access tokens), `iss`, `aud` = our
/// client id, `exp`, and the `nonce` of the login.
pub async fn verify_id_token(
    keys: &dyn KeySource,
    issuer: &str,
    client_id: &str,
    leeway: u64,
    id_token: &str,
    nonce: &str,
) -> Result<(), IdTokenError> {
    let header = jsonwebtoken::decode_header(id_token).map_err(|_| IdTokenError::Invalid)?;
    if !portico_access::token::ACCEPTED_ALGORITHMS.contains(&header.alg) {
        return Err(IdTokenError::Invalid);
    }
    let jwks: Vec<Jwk> = keys
        .keys(issuer, header.kid.as_deref())
        .await
        .map_err(|e| IdTokenError::Keys(e.0))?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = leeway;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    let claims = jwks
        .iter()
        .filter(|k| {
            header
                .kid
                .as_deref()
                .is_none_or(|kid| k.common.key_id.as_deref() == Some(kid))
        })
        .filter_map(|k| DecodingKey::from_jwk(k).ok())
        .find_map(|key| jsonwebtoken::decode::<IdClaims>(id_token, &key, &validation).ok())
        .ok_or(IdTokenError::Invalid)?
        .claims;
    match claims.nonce {
        Some(n) if super::browser::constant_time_eq(n.as_bytes(), nonce.as_bytes()) => Ok(()),
        _ => Err(IdTokenError::NonceMismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(scopes: &str) -> OAuthSettings {
        OAuthSettings {
            client_id: "portico-portal".into(),
            client_secret: Some(SecretString::new("s3cret")),
            redirect_uri: "http://127.0.0.1:8080/auth/callback".into(),
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
            aud: "http://127.0.0.1:8090/fhir".into(),
        }
    }

    fn endpoints() -> SmartEndpoints {
        SmartEndpoints {
            issuer: "http://127.0.0.1:8090/auth".into(),
            authorize: "http://127.0.0.1:8090/auth/authorize".into(),
            token: "http://127.0.0.1:8090/auth/token".into(),
            jwks: None,
        }
    }

    #[test]
    fn authorization_request_has_pkce_state_aud_and_nonce() {
        let start = settings("openid fhirUser patient/*.rs")
            .start(&endpoints())
            .unwrap();
        let q: std::collections::HashMap<_, _> = start.url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "portico-portal");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"].len(), 43);
        assert_eq!(q["state"], start.state);
        assert_eq!(q["aud"], "http://127.0.0.1:8090/fhir");
        assert_eq!(q["scope"], "openid fhirUser patient/*.rs");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:8080/auth/callback");
        assert_eq!(Some(&q["nonce"]), start.nonce.as_ref());
        // The secret never travels in the front channel.
        assert!(!start.url.as_str().contains("s3cret"));
        assert!(!start.url.as_str().contains(start.pkce_verifier.expose()));
        let other = settings("openid").start(&endpoints()).unwrap();
        assert_ne!(other.state, start.state);
        assert_ne!(other.nonce, start.nonce);
    }

    #[test]
    fn no_nonce_without_openid() {
        let start = settings("patient/*.rs").start(&endpoints()).unwrap();
        assert!(start.nonce.is_none());
        assert!(!start.url.query_pairs().any(|(k, _)| k == "nonce"));
    }

    #[test]
    fn smart_fields_are_read_and_not_printed() {
        let body = r#"{"access_token":"eyJ.a.b","token_type":"Bearer","expires_in":60,
            "patient":"pat-7","id_token":"eyJ.i.d","scope":"openid patient/*.rs"}"#;
        let r: SmartTokenResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.extra_fields().patient.as_deref(), Some("pat-7"));
        assert_eq!(r.extra_fields().id_token.as_deref(), Some("eyJ.i.d"));
        let debug = format!("{:?}", r.extra_fields());
        assert!(
            !debug.contains("pat-7") && !debug.contains("eyJ.i.d"),
            "{debug}"
        );
    }
}
