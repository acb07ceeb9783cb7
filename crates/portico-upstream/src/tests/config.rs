//! The `[upstream]` configuration: TOML shapes for each auth mode, secrets from files
//! and the environment.

use super::*;

fn parse_toml(text: &str) -> Result<UpstreamConfig, Box<figment::Error>> {
    use figment::providers::Format;
    figment::Figment::from(figment::providers::Toml::string(text))
        .extract()
        .map_err(Box::new)
}

#[test]
fn toml_shapes_for_each_auth_mode() {
    let c = parse_toml(
        r#"
        base_url = "https://ehr.example.org/fhir/r4"
        connect_timeout = "2s"
        request_timeout = 2500
        [auth]
        type = "none"
        "#,
    )
    .unwrap();
    assert_eq!(c.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.request_timeout, Duration::from_millis(2500));
    assert_eq!(c.pool_idle_timeout, Duration::from_secs(90));
    assert!(matches!(c.auth, UpstreamAuthConfig::None));

    let c = parse_toml(
        r#"
        base_url = "https://ehr.example.org/fhir/r4"
        [auth]
        type = "client_credentials"
        token_url = "https://ehr.example.org/oauth2/token"
        client_id = "portico"
        client_secret_env = "PORTICO_EHR_SECRET"
        scope = "system/*.read"
        "#,
    )
    .unwrap();
    assert!(matches!(
        c.auth,
        UpstreamAuthConfig::ClientCredentials { .. }
    ));
    match c.resolve_with(no_env) {
        Err(e @ ConfigError::MissingEnv { .. }) => {
            assert!(e.to_string().contains("PORTICO_EHR_SECRET"))
        }
        other => panic!("{other:?}"),
    }

    let c = parse_toml(
        r#"
        base_url = "https://ehr.example.org/fhir/r4"
        [auth]
        type = "backend_services"
        token_url = "https://ehr.example.org/oauth2/token"
        client_id = "portico"
        private_key_file = "/nonexistent/portico-key.pem"
        algorithm = "ES384"
        kid = "k1"
        scope = "system/Patient.rs"
        "#,
    )
    .unwrap();
    match c.resolve_with(no_env) {
        Err(e @ ConfigError::ReadSecretFile { .. }) => {
            assert!(e.to_string().contains("/nonexistent/portico-key.pem"))
        }
        other => panic!("{other:?}"),
    }

    let c = parse_toml(
        r#"
        base_url = "https://ehr.example.org/fhir/r4"
        auth = { type = "passthrough" }
        "#,
    )
    .unwrap();
    assert!(matches!(c.auth, UpstreamAuthConfig::Passthrough));

    // Inline secrets are refused, not silently ignored.
    let inline = parse_toml(
        r#"
        base_url = "https://ehr.example.org/fhir/r4"
        [auth]
        type = "client_credentials"
        token_url = "https://ehr.example.org/oauth2/token"
        client_id = "portico"
        client_secret = "hunter2"
        "#,
    );
    assert!(inline.is_err());
    let bad_duration = parse_toml(
        r#"
        base_url = "https://ehr.example.org/fhir/r4"
        request_timeout = "soon"
        auth = { type = "none" }
        "#,
    );
    assert!(bad_duration.is_err());
}

#[test]
fn secrets_resolve_from_files_and_reject_bad_keys() {
    let dir = std::env::temp_dir().join(format!("portico-upstream-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_path = dir.join("secret");
    std::fs::write(&secret_path, "s3cret\n").unwrap();
    let auth = UpstreamAuthConfig::ClientCredentials {
        token_url: Url::parse("https://ehr.example.org/token").unwrap(),
        client_id: "portico".into(),
        client_secret_file: Some(secret_path.clone()),
        client_secret_env: None,
        scope: None,
        client_auth: Default::default(),
    };
    let resolved = config("https://ehr.example.org/fhir", auth)
        .resolve_with(no_env)
        .unwrap();
    match &resolved.auth {
        crate::ResolvedAuth::ClientCredentials { client_secret, .. } => {
            assert_eq!(client_secret.expose(), "s3cret")
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{resolved:?}").contains("s3cret"));

    // Both sources, neither source, a key that is not a key, a key of the wrong type.
    let both = UpstreamAuthConfig::ClientCredentials {
        token_url: Url::parse("https://ehr.example.org/token").unwrap(),
        client_id: "portico".into(),
        client_secret_file: Some(secret_path.clone()),
        client_secret_env: Some("X".into()),
        scope: None,
        client_auth: Default::default(),
    };
    assert!(matches!(
        config("https://ehr.example.org/fhir", both).resolve_with(no_env),
        Err(ConfigError::AmbiguousSecretSource { .. })
    ));
    let key_path = dir.join("key.pem");
    std::fs::write(&key_path, "not a key").unwrap();
    let backend = |algorithm, file: &std::path::Path| UpstreamAuthConfig::BackendServices {
        token_url: Url::parse("https://ehr.example.org/token").unwrap(),
        client_id: "portico".into(),
        private_key_file: Some(file.to_owned()),
        private_key_env: None,
        algorithm,
        kid: None,
        scope: "system/*.rs".into(),
    };
    let e = config(
        "https://ehr.example.org/fhir",
        backend(SigningAlgorithm::ES384, &key_path),
    )
    .resolve_with(no_env)
    .unwrap_err();
    assert!(matches!(e, ConfigError::InvalidKey { .. }), "{e:?}");
    assert!(e.to_string().contains("key.pem"));
    std::fs::write(&key_path, super::auth::es384_keys().0).unwrap();
    assert!(matches!(
        config(
            "https://ehr.example.org/fhir",
            backend(SigningAlgorithm::RS384, &key_path)
        )
        .resolve_with(no_env),
        Err(ConfigError::InvalidKey { .. })
    ));
    config(
        "https://ehr.example.org/fhir",
        backend(SigningAlgorithm::ES384, &key_path),
    )
    .resolve_with(no_env)
    .unwrap();
    let missing = UpstreamAuthConfig::BackendServices {
        token_url: Url::parse("https://ehr.example.org/token").unwrap(),
        client_id: "portico".into(),
        private_key_file: None,
        private_key_env: None,
        algorithm: SigningAlgorithm::ES384,
        kid: None,
        scope: "system/*.rs".into(),
    };
    assert!(matches!(
        config("https://ehr.example.org/fhir", missing).resolve_with(no_env),
        Err(ConfigError::MissingSecretSource { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
