//! The OAuth 2.0 grants: `/authorize` (code + PKCE), and at `/token` client
//! authentication (secret, `private_key_jwt`) and the code, refresh-token and
//! client-credentials grants.

use super::*;

impl AuthServer {
    /// Decides what `/auth/authorize` does with `params`.
    pub(crate) fn authorize(&self, params: &Params) -> AuthorizeOutcome {
        let Some(client_id) = params.get("client_id") else {
            return AuthorizeOutcome::Reject(oauth(
                ErrorCode::InvalidRequest,
                "client_id is required",
            ));
        };
        let Some(client) = self.client(client_id) else {
            return AuthorizeOutcome::Reject(oauth(ErrorCode::InvalidClient, "unknown client_id"));
        };
        let Some(redirect_uri) = params.get("redirect_uri") else {
            return AuthorizeOutcome::Reject(oauth(
                ErrorCode::InvalidRequest,
                "redirect_uri is required",
            ));
        };
        if !client.redirect_allowed(redirect_uri) {
            return AuthorizeOutcome::Reject(oauth(
                ErrorCode::InvalidRequest,
                "redirect_uri is not registered for this client",
            ));
        }
        // From here on the redirect URI is trusted: errors go back to the client.
        let state = params.get("state");
        let fail = |code: ErrorCode, description: &str| {
            AuthorizeOutcome::Redirect(redirect_with(
                redirect_uri,
                &[
                    ("error", Some(code.as_str())),
                    ("error_description", Some(description)),
                    ("state", state),
                ],
            ))
        };
        match params.get("response_type") {
            Some("code") => {}
            Some(_) => {
                return fail(
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                );
            }
            None => return fail(ErrorCode::InvalidRequest, "response_type is required"),
        }
        if state.is_none() {
            return fail(ErrorCode::InvalidRequest, "state is required");
        }
        if !client.allows(GrantType::AuthorizationCode) {
            return fail(
                ErrorCode::UnauthorizedClient,
                "client may not use the authorization code grant",
            );
        }
        if params.get("code_challenge_method") != Some("S256") {
            return fail(
                ErrorCode::InvalidRequest,
                "code_challenge_method must be S256",
            );
        }
        let Some(challenge) = params
            .get("code_challenge")
            .filter(|c| valid_s256_challenge(c))
        else {
            return fail(
                ErrorCode::InvalidRequest,
                "code_challenge is missing or malformed",
            );
        };
        if let Some(aud) = params.get("aud")
            && !self.accepts_audience(aud)
        {
            return fail(
                ErrorCode::InvalidRequest,
                "aud does not name this server's fhir base",
            );
        }
        let Some(scope) = params.get("scope") else {
            return fail(ErrorCode::InvalidScope, "scope is required");
        };
        let granted = scopes::grant(&scopes::split(scope), &client.reg.allowed_scopes);
        if granted.is_empty() {
            return fail(
                ErrorCode::InvalidScope,
                "none of the requested scopes can be granted to this client",
            );
        }
        let Some(login) = params.get("login_hint").and_then(|hint| self.login(hint)) else {
            return AuthorizeOutcome::PickPatient {
                client_id: client_id.to_owned(),
                scope: granted.join(" "),
            };
        };
        let code = random_token();
        let now = Instant::now();
        {
            let mut grants = self.state.lock();
            grants.purge(now);
            grants.codes.insert(
                code.clone(),
                CodeGrant {
                    client_id: client_id.to_owned(),
                    redirect_uri: redirect_uri.to_owned(),
                    code_challenge: challenge.to_owned(),
                    scopes: granted,
                    login,
                    nonce: params.get("nonce").map(str::to_owned),
                    expires: now + CODE_LIFETIME,
                },
            );
        }
        tracing::debug!(client_id, "authorization code issued");
        AuthorizeOutcome::Redirect(redirect_with(
            redirect_uri,
            &[("code", Some(&code)), ("state", state)],
        ))
    }

    /// Handles a `/auth/token` request. `basic` is the decoded `Authorization: Basic`
    /// credential pair, if one was sent.
    pub(crate) fn token(
        &self,
        params: &Params,
        basic: Option<(String, String)>,
    ) -> Result<Value, OAuthError> {
        let grant_type = params
            .get("grant_type")
            .ok_or_else(|| oauth(ErrorCode::InvalidRequest, "grant_type is required"))?;
        let grant = match grant_type {
            "authorization_code" => GrantType::AuthorizationCode,
            "refresh_token" => GrantType::RefreshToken,
            "client_credentials" => GrantType::ClientCredentials,
            _ => {
                return Err(oauth(
                    ErrorCode::UnsupportedGrantType,
                    "unsupported grant_type",
                ));
            }
        };
        let (client, authenticated) = self.authenticate(params, basic)?;
        if !client.allows(grant) {
            return Err(oauth(
                ErrorCode::UnauthorizedClient,
                "client may not use this grant type",
            ));
        }
        let response = match grant {
            GrantType::AuthorizationCode => self.exchange_code(&client, params),
            GrantType::RefreshToken => self.refresh(&client, params),
            GrantType::ClientCredentials => {
                if !authenticated {
                    return Err(oauth(
                        ErrorCode::InvalidClient,
                        "client_credentials needs client authentication",
                    ));
                }
                self.client_credentials(&client, params)
            }
        };
        if response.is_ok() {
            tracing::debug!(client_id = %client.id(), grant_type, "tokens issued");
        }
        response
    }

    /// The client `id`, authenticated by its secret (HTTP Basic or the form).
    fn client_with_secret(
        &self,
        id: &str,
        secret: &str,
    ) -> Result<(Arc<Client>, bool), OAuthError> {
        let failed = || oauth(ErrorCode::InvalidClient, "client authentication failed");
        let client = self.client(id).ok_or_else(failed)?;
        match &client.reg.secret {
            Some(expected) if constant_time_eq(expected.as_bytes(), secret.as_bytes()) => {
                Ok((client, true))
            }
            _ => Err(failed()),
        }
    }

    /// Identifies and authenticates the client. The flag says whether it proved a
    /// credential (false for a public client naming itself).
    fn authenticate(
        &self,
        params: &Params,
        basic: Option<(String, String)>,
    ) -> Result<(Arc<Client>, bool), OAuthError> {
        let invalid = |d: &str| oauth(ErrorCode::InvalidClient, d);
        let form_id = params.get("client_id");
        let methods = [
            basic.is_some(),
            params.get("client_secret").is_some(),
            params.get("client_assertion").is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(oauth(
                ErrorCode::InvalidRequest,
                "use exactly one client authentication method",
            ));
        }
        if let Some((id, secret)) = basic {
            if form_id.is_some_and(|f| f != id) {
                return Err(invalid("client_id does not match the basic credentials"));
            }
            return self.client_with_secret(&id, &secret);
        }
        if let Some(secret) = params.get("client_secret") {
            let id =
                form_id.ok_or_else(|| oauth(ErrorCode::InvalidRequest, "client_id is required"))?;
            return self.client_with_secret(id, secret);
        }
        if let Some(assertion) = params.get("client_assertion") {
            if params.get("client_assertion_type") != Some(CLIENT_ASSERTION_TYPE) {
                return Err(oauth(
                    ErrorCode::InvalidRequest,
                    "unsupported client_assertion_type",
                ));
            }
            return self.verify_assertion(assertion, form_id).map(|c| (c, true));
        }
        let id = form_id.ok_or_else(|| invalid("client authentication is required"))?;
        let client = self.client(id).ok_or_else(|| invalid("unknown client"))?;
        if !client.reg.is_public() {
            return Err(invalid("client authentication is required"));
        }
        Ok((client, false))
    }

    /// `private_key_jwt`: verifies the assertion against the client's registered keys.
    fn verify_assertion(
        &self,
        assertion: &str,
        form_id: Option<&str>,
    ) -> Result<Arc<Client>, OAuthError> {
        let invalid = |d: &str| oauth(ErrorCode::InvalidClient, d);
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| invalid("client assertion is malformed"))?;
        // The issuer is read unverified only to find the key; it is verified below.
        let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
            .map_err(|_| invalid("client assertion is malformed"))?;
        let client_id = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("client assertion has no iss"))?;
        if form_id.is_some_and(|f| f != client_id) {
            return Err(invalid("client_id does not match the assertion issuer"));
        }
        let client = self
            .client(client_id)
            .ok_or_else(|| invalid("client authentication failed"))?;
        let candidates: Vec<&ClientKey> = client
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(have)) => wanted == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(invalid(
                "no registered key accepts this assertion's algorithm",
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = ASSERTION_LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_issuer(&[client.id()]);
        validation.sub = Some(client.id().to_owned());
        validation.set_audience(&[&self.token_url]);
        let claims = candidates
            .iter()
            .find_map(|k| {
                jsonwebtoken::decode::<AssertionClaims>(assertion, &k.key, &validation).ok()
            })
            .ok_or_else(|| {
                invalid("client assertion is invalid, expired or not for this token endpoint")
            })?
            .claims;
        let now = unix_now();
        if claims.exp > now + MAX_ASSERTION_LIFETIME_SECS + ASSERTION_LEEWAY_SECS as i64 {
            return Err(invalid(
                "client assertion expires more than five minutes ahead",
            ));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty())
            .ok_or_else(|| invalid("client assertion has no jti"))?;
        let mut grants = self.state.lock();
        grants.purge(Instant::now());
        let key = (client.id().to_owned(), jti);
        if grants.jtis.contains_key(&key) {
            return Err(invalid("client assertion jti was already used"));
        }
        grants.jtis.insert(key, claims.exp);
        drop(grants);
        Ok(client)
    }

    fn exchange_code(&self, client: &Client, params: &Params) -> Result<Value, OAuthError> {
        let code = params
            .get("code")
            .ok_or_else(|| oauth(ErrorCode::InvalidRequest, "code is required"))?;
        let redirect_uri = params
            .get("redirect_uri")
            .ok_or_else(|| oauth(ErrorCode::InvalidRequest, "redirect_uri is required"))?;
        let verifier = params
            .get("code_verifier")
            .ok_or_else(|| oauth(ErrorCode::InvalidRequest, "code_verifier is required"))?;
        // Any attempt consumes the code, so a verifier cannot be guessed twice.
        let grant = {
            let mut grants = self.state.lock();
            grants.purge(Instant::now());
            grants.codes.remove(code)
        };
        let invalid = |d: &str| oauth(ErrorCode::InvalidGrant, d);
        let grant = grant
            .ok_or_else(|| invalid("authorization code is unknown, expired or already used"))?;
        if grant.expires <= Instant::now() {
            return Err(invalid(
                "authorization code is unknown, expired or already used",
            ));
        }
        if grant.client_id != client.id() {
            return Err(invalid("authorization code was issued to another client"));
        }
        if grant.redirect_uri != redirect_uri {
            return Err(invalid(
                "redirect_uri does not match the authorization request",
            ));
        }
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if !valid_code_verifier(verifier)
            || !constant_time_eq(computed.as_bytes(), grant.code_challenge.as_bytes())
        {
            return Err(invalid("code_verifier does not match the code challenge"));
        }
        self.issue_tokens(
            client,
            &grant.scopes,
            Some(&grant.login),
            grant.nonce.as_deref(),
            None,
        )
    }

    fn refresh(&self, client: &Client, params: &Params) -> Result<Value, OAuthError> {
        let token = params
            .get("refresh_token")
            .ok_or_else(|| oauth(ErrorCode::InvalidRequest, "refresh_token is required"))?;
        let invalid = |d: &str| oauth(ErrorCode::InvalidGrant, d);
        let now = Instant::now();
        let grant = {
            let mut grants = self.state.lock();
            grants.purge(now);
            if let Some((family, _)) = grants.spent_refresh.remove(token) {
                // Reuse of a rotated token: assume theft and end the whole login.
                grants.refresh.retain(|_, r| r.family != family);
                tracing::warn!(client_id = %client.id(), "rotated refresh token reused; family revoked");
                return Err(invalid("refresh token was already used"));
            }
            match grants.refresh.get(token) {
                Some(g) if g.client_id != client.id() => {
                    return Err(invalid("refresh token was issued to another client"));
                }
                Some(g) if g.expires <= now => return Err(invalid("refresh token has expired")),
                Some(_) => {}
                None => return Err(invalid("refresh token is unknown")),
            }
            let Some(grant) = grants.refresh.remove(token) else {
                return Err(invalid("refresh token is unknown"));
            };
            grants
                .spent_refresh
                .insert(token.to_owned(), (grant.family, grant.expires));
            grant
        };
        let scopes = match params.get("scope") {
            None => grant.scopes.clone(),
            Some(requested) => {
                let requested = scopes::split(requested);
                if !requested.iter().all(|s| scopes::contains(&grant.scopes, s)) {
                    return Err(oauth(
                        ErrorCode::InvalidScope,
                        "a refresh cannot widen the granted scopes",
                    ));
                }
                requested
            }
        };
        self.issue_tokens(
            client,
            &scopes,
            grant.login.as_ref(),
            None,
            Some(grant.family),
        )
    }

    fn client_credentials(&self, client: &Client, params: &Params) -> Result<Value, OAuthError> {
        let scopes = match params.get("scope") {
            Some(requested) => scopes::grant(&scopes::split(requested), &client.reg.allowed_scopes),
            None => client.reg.allowed_scopes.clone(),
        };
        if scopes.is_empty() {
            return Err(oauth(
                ErrorCode::InvalidScope,
                "none of the requested scopes can be granted to this client",
            ));
        }
        self.issue_tokens(client, &scopes, None, None, None)
    }

    /// Builds a token response; a refresh token comes with `offline_access` or
    /// `online_access` for clients allowed to refresh, an id token with `openid`.
    fn issue_tokens(
        &self,
        client: &Client,
        granted: &[String],
        login: Option<&Login>,
        nonce: Option<&str>,
        family: Option<u64>,
    ) -> Result<Value, OAuthError> {
        let signing_failed = |error: jsonwebtoken::errors::Error| {
            tracing::error!(%error, "signing a token failed");
            oauth(ErrorCode::ServerError, "token signing failed")
        };
        let scope = granted.join(" ");
        let access = self
            .mint_access(client.id(), &scope, login)
            .map_err(signing_failed)?;
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_secs(),
            "scope": scope,
        });
        if let Some(login) = login {
            if let Some(patient) = login.launch_patient() {
                body["patient"] = json!(patient);
            }
            body["need_patient_banner"] = json!(false);
            if scopes::contains(granted, "openid") {
                body["id_token"] = json!(
                    self.mint_id_token(client.id(), login, nonce)
                        .map_err(signing_failed)?
                );
            }
        }
        let offline = scopes::contains(granted, "offline_access");
        if (offline || scopes::contains(granted, "online_access"))
            && client.allows(GrantType::RefreshToken)
        {
            let token = random_token();
            let lifetime = if offline {
                OFFLINE_REFRESH_LIFETIME
            } else {
                ONLINE_REFRESH_LIFETIME
            };
            let mut grants = self.state.lock();
            let family = family.unwrap_or_else(|| {
                grants.next_family += 1;
                grants.next_family
            });
            grants.refresh.insert(
                token.clone(),
                RefreshGrant {
                    client_id: client.id().to_owned(),
                    scopes: granted.to_vec(),
                    login: login.cloned(),
                    family,
                    expires: Instant::now() + lifetime,
                },
            );
            drop(grants);
            body["refresh_token"] = json!(token);
        }
        Ok(body)
    }
}
