//! HTTP endpoints of the authorization server (paths relative to `/auth`).
//!
//! The handlers only translate HTTP to [`AuthServer`] calls and back: query and form
//! parsing (repeated parameters are refused), `Authorization: Basic` decoding, RFC 6749
//! JSON errors with `Cache-Control: no-store`, and the HTML patient picker (patients,
//! then the families' patients and proxies), in which every interpolated value is
//! escaped.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::{AuthServer, AuthorizeOutcome, ErrorCode, OAuthError, Params};

/// How many patients the picker lists before asking for an id instead.
const PICKER_LIMIT: usize = 200;

/// The authorization server's routes, relative to `/auth` (the sandbox nests them).
pub fn router(server: Arc<AuthServer>) -> Router {
    Router::new()
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/jwks", get(jwks))
        .route("/patients", get(patients))
        .route("/families", get(families))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .with_state(server)
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn oauth_error_response(error: &OAuthError) -> Response {
    let body = json!({ "error": error.code.as_str(), "error_description": error.description });
    if error.code == ErrorCode::InvalidClient {
        let mut response = json_response(StatusCode::UNAUTHORIZED, &body);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"portico-sandbox\""),
        );
        return no_store(response);
    }
    let status = if error.code == ErrorCode::ServerError {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    };
    no_store(json_response(status, &body))
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// Escapes text for HTML element content and double- or single-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem}}\
         button{{margin:.15rem 0;padding:.35rem .7rem;cursor:pointer}}li{{list-style:none}}\
         code{{background:#f3f3f3;padding:0 .2rem}}</style></head><body><main>{body}</main></body></html>\n",
        title = escape(title),
    );
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    no_store(response)
}

/// An error shown to the user agent, never redirected.
fn reject(headers: &HeaderMap, error: &OAuthError) -> Response {
    if !wants_html(headers) {
        return oauth_error_response(error);
    }
    let status = if error.code == ErrorCode::InvalidClient {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = format!(
        "<h1>Authorization request refused</h1><p><code>{}</code>: {}</p>",
        escape(error.code.as_str()),
        escape(&error.description)
    );
    html_page(status, "Authorization error", &body)
}

async fn authorize(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(params) => params,
        Err(repeated) => {
            let error = OAuthError {
                code: ErrorCode::InvalidRequest,
                description: format!("parameter {repeated} is repeated"),
            };
            return reject(&headers, &error);
        }
    };
    match server.authorize(&params) {
        AuthorizeOutcome::Redirect(location) => match HeaderValue::from_str(&location) {
            Ok(location) => {
                no_store((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
            }
            Err(_) => reject(
                &headers,
                &OAuthError {
                    code: ErrorCode::InvalidRequest,
                    description: "redirect_uri cannot be used in a location header".to_owned(),
                },
            ),
        },
        AuthorizeOutcome::Reject(error) => reject(&headers, &error),
        AuthorizeOutcome::PickPatient { client_id, scope } => {
            picker(&server, &params, &client_id, &scope)
        }
    }
}

/// The patient picker: one GET form per way of choosing, each carrying the original
/// request as hidden fields plus `login_hint`.
fn picker(server: &AuthServer, params: &Params, client_id: &str, scope: &str) -> Response {
    let hidden: String = params
        .iter()
        .filter(|(name, _)| *name != "login_hint")
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(name),
                escape(value)
            )
        })
        .collect();
    let mut body = format!(
        "<h1>Sandbox EHR sign-in</h1><p>The app <code>{}</code> asks for <code>{}</code>. \
         Choose the patient to sign in as.</p>",
        escape(client_id),
        escape(scope)
    );
    if params.get("login_hint").is_some() {
        body.push_str("<p><strong>That patient id is not known here.</strong></p>");
    }
    body.push_str(&format!(
        "<form method=\"get\" action=\"authorize\">{hidden}<ul>"
    ));
    for patient in server.patients().iter().take(PICKER_LIMIT) {
        body.push_str(&format!(
            "<li><button type=\"submit\" name=\"login_hint\" value=\"{id}\">{name} (born {birth}, <code>{id}</code>)</button></li>",
            id = escape(&patient.id),
            name = escape(&patient.name),
            birth = escape(&patient.birth_date),
        ));
    }
    body.push_str("</ul></form>");
    if server.patients().len() > PICKER_LIMIT {
        body.push_str(&format!(
            "<p>Showing {PICKER_LIMIT} of {} patients.</p>",
            server.patients().len()
        ));
    }
    if let Some(families) = server.families() {
        body.push_str(&format!(
            "<h2>Families</h2><form method=\"get\" action=\"authorize\">{hidden}<ul>"
        ));
        for patient in &families.patients {
            body.push_str(&format!(
                "<li><button type=\"submit\" name=\"login_hint\" value=\"{id}\">{name} (born {birth}, <code>{id}</code>)</button></li>",
                id = escape(&patient.id),
                name = escape(&patient.name),
                birth = escape(&patient.birth_date),
            ));
        }
        body.push_str("</ul><h2>Proxies</h2><ul>");
        for login in families.logins.all() {
            body.push_str(&format!(
                "<li><button type=\"submit\" name=\"login_hint\" value=\"{id}\">{name}, for {patients} (<code>{id}</code>)</button></li>",
                id = escape(&login.id),
                name = escape(&login.name),
                patients = escape(&login.patients.join(", ")),
            ));
        }
        body.push_str("</ul></form>");
    }
    body.push_str(&format!(
        "<form method=\"get\" action=\"authorize\">{hidden}<label>Patient or login id \
         <input name=\"login_hint\" required></label> <button type=\"submit\">Sign in</button></form>"
    ));
    html_page(StatusCode::OK, "Sandbox EHR sign-in", &body)
}

/// Decodes `Authorization: Basic`; client id and secret are form-urlencoded inside
/// (RFC 6749 §2.3.1). `Err` means a Basic header that cannot be decoded.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || OAuthError {
        code: ErrorCode::InvalidClient,
        description: "malformed basic credentials".to_owned(),
    };
    let value = value.to_str().map_err(|_| invalid())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(invalid());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(invalid)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

async fn token(State(server): State<Arc<AuthServer>>, headers: HeaderMap, body: Bytes) -> Response {
    let params = match Params::parse(&body) {
        Ok(params) => params,
        Err(repeated) => {
            return oauth_error_response(&OAuthError {
                code: ErrorCode::InvalidRequest,
                description: format!("parameter {repeated} is repeated"),
            });
        }
    };
    let basic = match basic_credentials(&headers) {
        Ok(basic) => basic,
        Err(error) => return oauth_error_response(&error),
    };
    match server.token(&params, basic) {
        Ok(body) => no_store(json_response(StatusCode::OK, &body)),
        Err(error) => oauth_error_response(&error),
    }
}

async fn jwks(State(server): State<Arc<AuthServer>>) -> Response {
    json_response(StatusCode::OK, &server.jwks())
}

async fn patients(State(server): State<Arc<AuthServer>>) -> Response {
    match serde_json::to_value(server.patients()) {
        Ok(list) => json_response(StatusCode::OK, &list),
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": "server_error" }),
        ),
    }
}

/// The families (patient ids, sensitive records, proxy logins, RelatedPersons), for
/// tools that sign in as a proxy; 404 when the server has none.
async fn families(State(server): State<Arc<AuthServer>>) -> Response {
    let Some(families) = server.families() else {
        return json_response(StatusCode::NOT_FOUND, &json!({ "error": "not_found" }));
    };
    match serde_json::to_value(families) {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": "server_error" }),
        ),
    }
}

async fn openid_configuration(State(server): State<Arc<AuthServer>>) -> Response {
    json_response(StatusCode::OK, &server.openid_configuration())
}
