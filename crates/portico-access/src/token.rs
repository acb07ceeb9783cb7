//! Bearer token verification, HTTP-agnostic.
//!
//! [`TokenVerifier::verify`] turns a bearer token into a [`Principal`]:
//!
//! - a JWT is verified against the configured issuer's keys, obtained through the
//!   [`KeySource`] port (the gateway implements it: JWKS discovered from the issuer's
//!   metadata). Only RS256, RS384, ES256 and ES384 are accepted (`none`, HMAC and
//!   everything else are refused before any key is looked at); the key must match the
//!   token's `kid` (when it has one), its key type and curve must fit the algorithm, and
//!   its `alg`/`use`, when published, must agree. `iss` must equal the configured issuer,
//!   `aud` (string or array) must contain an accepted audience, `exp` is required and
//!   `nbf` honoured, with a small leeway (30 s by default), and `sub` is required;
//! - an opaque token goes to the [`Introspector`] port (RFC 7662), when one is
//!   configured, and the response is mapped by [`principal_from_introspection`];
//! - verified principals are cached until their `exp`, keyed by the SHA-256 of the token
//!   (the token itself is never stored), in a cache of bounded size that evicts the
//!   soonest-expiring entry first.
//!
//! Key rotation: when a token names a `kid` the cached key set lacks, the key set is
//! fetched again, but at most once per [`VerifierConfig::key_refetch_interval`] per
//! issuer (failed fetches count), so forged `kid`s cannot make the gateway hammer the
//! authorization server. Fetches are single-flight.
//!
//! Errors never contain the token or claim values.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::principal::{ClaimNames, ClaimsError, Principal};

/// The only JWT algorithms accepted.
pub const ACCEPTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Longer bearer tokens are refused unread.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// How tokens are verified.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The one accepted `iss`; keys are always looked up for this issuer.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Empty accepts nothing.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    pub claims: ClaimNames,
    /// At most one key-set refetch per issuer in this interval.
    pub key_refetch_interval: Duration,
    /// Verified tokens kept at most.
    pub cache_capacity: usize,
}

impl VerifierConfig {
    /// Defaults: 30 s leeway, SMART claim names, one refetch per minute, 10 000 cached
    /// tokens.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> VerifierConfig {
        VerifierConfig {
            issuer: issuer.into(),
            audiences,
            leeway: Duration::from_secs(30),
            claims: ClaimNames::default(),
            key_refetch_interval: Duration::from_secs(60),
            cache_capacity: 10_000,
        }
    }
}

/// Fetching signing keys failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeySourceError(pub String);

/// Where the issuer's signing keys come from (its JWKS). Implemented by the gateway.
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The issuer's current keys. `kid` is the key id being looked for, when known (a
    /// hint; return the whole set). Called on first use and on unknown `kid`s, at most
    /// once per refetch interval.
    async fn keys(&self, issuer: &str, kid: Option<&str>) -> Result<Vec<Jwk>, KeySourceError>;
}

/// Introspection failed (not: the token is inactive).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IntrospectionError(pub String);

/// RFC 7662 token introspection. Implemented by the gateway.
#[async_trait]
pub trait Introspector: Send + Sync {
    /// The introspection endpoint's JSON response for `token`.
    async fn introspect(&self, token: &str) -> Result<Value, IntrospectionError>;
}

/// Why a bearer token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("token signing key is unknown")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lacks required claim {0}")]
    MissingClaim(String),
    #[error("token is not active")]
    Inactive,
    #[error("opaque tokens are not accepted")]
    OpaqueNotAccepted,
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    #[error("signing keys are unavailable: {0}")]
    Keys(KeySourceError),
    #[error("token introspection failed: {0}")]
    Introspection(IntrospectionError),
}

impl TokenError {
    /// Whether the failure is ours or the authorization server's, not the token's (the
    /// gateway answers 503 rather than 401).
    pub fn retryable(&self) -> bool {
        matches!(self, TokenError::Keys(_) | TokenError::Introspection(_))
    }
}

fn map_jwt_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => TokenError::UnsupportedAlgorithm,
        _ => TokenError::Malformed,
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------
// Keys

#[derive(Debug)]
struct IssuerKeys {
    keys: Arc<Vec<Jwk>>,
    last_attempt: Instant,
}

struct KeyStore {
    source: Arc<dyn KeySource>,
    interval: Duration,
    cache: RwLock<HashMap<String, IssuerKeys>>,
    fetching: tokio::sync::Mutex<()>,
}

enum Cached {
    /// The cached set has the key (or no particular key was asked for).
    Hit(Arc<Vec<Jwk>>),
    /// The set lacks the key but was fetched too recently to fetch again.
    TooSoon(Arc<Vec<Jwk>>),
    Miss,
}

impl KeyStore {
    /// The answer a cache lookup gives without fetching, if any. Within the back-off after
    /// a failed first fetch there are no keys at all: that is the key source's failure.
    fn settled(cached: Cached) -> Option<Result<Arc<Vec<Jwk>>, TokenError>> {
        match cached {
            Cached::Hit(keys) => Some(Ok(keys)),
            Cached::TooSoon(keys) if keys.is_empty() => Some(Err(TokenError::Keys(
                KeySourceError("signing keys are not available yet".into()),
            ))),
            Cached::TooSoon(keys) => Some(Ok(keys)),
            Cached::Miss => None,
        }
    }

    fn cached(&self, issuer: &str, kid: Option<&str>) -> Cached {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = cache.get(issuer) else {
            return Cached::Miss;
        };
        let has_kid = kid.is_none_or(|kid| {
            entry
                .keys
                .iter()
                .any(|k| k.common.key_id.as_deref() == Some(kid))
        });
        if has_kid && !entry.keys.is_empty() {
            Cached::Hit(entry.keys.clone())
        } else if entry.last_attempt.elapsed() < self.interval {
            Cached::TooSoon(entry.keys.clone())
        } else {
            Cached::Miss
        }
    }

    async fn keys(&self, issuer: &str, kid: Option<&str>) -> Result<Arc<Vec<Jwk>>, TokenError> {
        if let Some(found) = Self::settled(self.cached(issuer, kid)) {
            return found;
        }
        let _single_flight = self.fetching.lock().await;
        // Someone else may have fetched while we waited.
        if let Some(found) = Self::settled(self.cached(issuer, kid)) {
            return found;
        }
        let fetched = self.source.keys(issuer, kid).await;
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                cache.insert(
                    issuer.to_owned(),
                    IssuerKeys {
                        keys: keys.clone(),
                        last_attempt: Instant::now(),
                    },
                );
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(error = %e, "fetching the issuer's signing keys failed");
                match cache.get_mut(issuer) {
                    // Keep serving the keys we have; count the attempt.
                    Some(entry) => {
                        entry.last_attempt = Instant::now();
                        Ok(entry.keys.clone())
                    }
                    None => {
                        cache.insert(
                            issuer.to_owned(),
                            IssuerKeys {
                                keys: Arc::new(Vec::new()),
                                last_attempt: Instant::now(),
                            },
                        );
                        Err(TokenError::Keys(e))
                    }
                }
            }
        }
    }
}

/// Whether `jwk` may verify a token signed with `alg`.
fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return false;
    }
    if let Some(published) = jwk.common.key_algorithm
        && Algorithm::try_from(published).ok() != Some(alg)
    {
        return false;
    }
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::RS384) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Cache

type TokenHash = [u8; 32];

#[derive(Default)]
struct CacheInner {
    entries: HashMap<TokenHash, (u64, Principal)>,
    by_expiry: BTreeSet<(u64, TokenHash)>,
}

struct TokenCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

impl TokenCache {
    fn get(&self, key: &TokenHash, now: u64) -> Option<Principal> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (exp, principal) = inner.entries.get(key)?;
        if *exp > now {
            return Some(principal.clone());
        }
        let exp = *exp;
        inner.entries.remove(key);
        inner.by_expiry.remove(&(exp, *key));
        None
    }

    fn insert(&self, key: TokenHash, principal: Principal, exp: u64, now: u64) {
        if self.capacity == 0 || exp <= now {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((old_exp, _)) = inner.entries.remove(&key) {
            inner.by_expiry.remove(&(old_exp, key));
        }
        while let Some(&(first_exp, first_key)) = inner.by_expiry.first() {
            if first_exp > now && inner.entries.len() < self.capacity {
                break;
            }
            inner.by_expiry.pop_first();
            inner.entries.remove(&first_key);
        }
        inner.entries.insert(key, (exp, principal));
        inner.by_expiry.insert((exp, key));
    }

    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

// ---------------------------------------------------------------------------------------
// Verifier

/// Verifies bearer tokens. Share one per gateway (it holds the key and token caches).
pub struct TokenVerifier {
    config: VerifierConfig,
    keys: KeyStore,
    introspector: Option<Arc<dyn Introspector>>,
    cache: TokenCache,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("config", &self.config)
            .field("introspection", &self.introspector.is_some())
            .field("cached_tokens", &self.cache.len())
            .finish()
    }
}

impl TokenVerifier {
    pub fn new(config: VerifierConfig, keys: Arc<dyn KeySource>) -> TokenVerifier {
        TokenVerifier {
            keys: KeyStore {
                source: keys,
                interval: config.key_refetch_interval,
                cache: RwLock::new(HashMap::new()),
                fetching: tokio::sync::Mutex::new(()),
            },
            cache: TokenCache {
                capacity: config.cache_capacity,
                inner: Mutex::new(CacheInner::default()),
            },
            config,
            introspector: None,
        }
    }

    /// Accept opaque (non-JWT) tokens through RFC 7662 introspection.
    pub fn with_introspector(mut self, introspector: Arc<dyn Introspector>) -> TokenVerifier {
        self.introspector = Some(introspector);
        self
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Verifies a bearer token (without the `Bearer ` prefix).
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if token.is_empty()
            || token.len() > MAX_TOKEN_LEN
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(TokenError::Malformed);
        }
        let key: TokenHash = Sha256::digest(token.as_bytes()).into();
        let now = now_unix();
        if let Some(principal) = self.cache.get(&key, now) {
            return Ok(principal);
        }
        let principal = if token.split('.').count() == 3 {
            self.verify_jwt(token).await?
        } else if let Some(introspector) = &self.introspector {
            let response = introspector
                .introspect(token)
                .await
                .map_err(TokenError::Introspection)?;
            principal_from_introspection(&response, &self.config, now)?
        } else {
            return Err(TokenError::OpaqueNotAccepted);
        };
        if let Some(exp) = principal.expires_at {
            self.cache.insert(key, principal.clone(), exp, now);
        }
        Ok(principal)
    }

    async fn verify_jwt(&self, token: &str) -> Result<Principal, TokenError> {
        let header = decode_header(token).map_err(|e| match e.kind() {
            // An unknown `alg` (`none`, `HS999`) fails header parsing.
            ErrorKind::Json(_) => TokenError::UnsupportedAlgorithm,
            other => map_jwt_error(other),
        })?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if self.config.audiences.is_empty() {
            return Err(TokenError::WrongAudience);
        }
        let keys = self
            .keys
            .keys(&self.config.issuer, header.kid.as_deref())
            .await?;
        let candidates: Vec<&Jwk> = keys
            .iter()
            .filter(|k| {
                header
                    .kid
                    .as_deref()
                    .is_none_or(|kid| k.common.key_id.as_deref() == Some(kid))
            })
            .filter(|k| key_fits(k, header.alg))
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey);
        }

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&self.config.audiences);

        let mut last = TokenError::BadSignature;
        for jwk in candidates {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match decode::<Map<String, Value>>(token, &key, &validation) {
                Ok(data) => {
                    // jsonwebtoken accepts an `iss` array that contains the issuer; a
                    // token has exactly one issuer.
                    if data.claims.get("iss").and_then(Value::as_str)
                        != Some(self.config.issuer.as_str())
                    {
                        return Err(TokenError::WrongIssuer);
                    }
                    return Ok(Principal::from_claims(&data.claims, &self.config.claims)?);
                }
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {
                    last = TokenError::BadSignature;
                }
                Err(e) => return Err(map_jwt_error(e.kind())),
            }
        }
        Err(last)
    }
}

/// Maps an RFC 7662 introspection response to a principal: `active` must be `true`,
/// `exp` is required and checked (with the leeway) against `now` (seconds since the
/// epoch), `nbf` honoured, `iss` (when given) must be the configured issuer and `aud`
/// (when given) must contain an accepted audience. The claims are then read like a JWT's.
pub fn principal_from_introspection(
    response: &Value,
    config: &VerifierConfig,
    now: u64,
) -> Result<Principal, TokenError> {
    let Some(claims) = response.as_object() else {
        return Err(TokenError::Malformed);
    };
    if claims.get("active").and_then(Value::as_bool) != Some(true) {
        return Err(TokenError::Inactive);
    }
    let leeway = config.leeway.as_secs();
    let exp = claims
        .get("exp")
        .ok_or_else(|| TokenError::MissingClaim("exp".into()))?
        .as_u64()
        .ok_or(TokenError::Malformed)?;
    if exp.saturating_add(leeway) <= now {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_u64().ok_or(TokenError::Malformed)?;
        if nbf > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
    }
    if let Some(iss) = claims.get("iss")
        && iss.as_str() != Some(config.issuer.as_str())
    {
        return Err(TokenError::WrongIssuer);
    }
    if let Some(aud) = claims.get("aud") {
        let names: Vec<&str> = match aud {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => return Err(TokenError::Malformed),
        };
        if !names
            .iter()
            .any(|a| config.audiences.iter().any(|c| c == a))
        {
            return Err(TokenError::WrongAudience);
        }
    }
    Ok(Principal::from_claims(claims, &config.claims)?)
}

#[cfg(test)]
mod tests;
