//! Principal sources: bearer tokens, trusted headers, two credentials, the 401 challenge.
use super::*;
use http::HeaderName;

#[test]
fn bearer_tokens() {
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bearer  abc "), Some("abc"));
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearer"), None);
}

#[test]
fn resource_metadata_is_read_from_www_authenticate() {
    assert_eq!(
        resource_metadata_of(
            r#"Bearer error="invalid_token", resource_metadata="https://mcp.example/.well-known/oauth-protected-resource""#
        )
        .as_deref(),
        Some("https://mcp.example/.well-known/oauth-protected-resource")
    );
    assert_eq!(
        resource_metadata_of("Bearer resource_metadata=https://a/b, error=x").as_deref(),
        Some("https://a/b")
    );
    assert_eq!(resource_metadata_of("Bearer"), None);
}

#[tokio::test]
async fn a_header_counts_only_from_a_trusted_proxy() {
    let identities = Identities::new(
        PrincipalSource::Header {
            name: HeaderName::from_static("x-forwarded-user"),
            trusted_proxies: vec!["10.0.0.0/8".parse().expect("net")],
        },
        PrincipalHasher::new(b"secret"),
        false,
    );
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-user", "alice".parse().expect("value"));
    let proxy = Some("10.1.2.3".parse().expect("ip"));
    let stranger = Some("192.0.2.7".parse().expect("ip"));
    let alice = identities.principal(&headers, proxy).await.expect("alice");
    assert!(identities.principal(&headers, stranger).await.is_err());
    let mut forwarded = headers.clone();
    identities.strip_untrusted(&mut forwarded, stranger);
    assert!(forwarded.get("x-forwarded-user").is_none());
    identities.strip_untrusted(&mut headers, proxy);
    assert!(headers.get("x-forwarded-user").is_some());
    // The same text as an API key is another principal.
    let mut bearer = HeaderMap::new();
    bearer.insert(header::AUTHORIZATION, "Bearer alice".parse().expect("v"));
    let hmac = Identities::new(
        PrincipalSource::BearerHmac,
        PrincipalHasher::new(b"secret"),
        false,
    );
    assert_ne!(hmac.principal(&bearer, proxy).await.expect("p"), alice);
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let identities = Identities::new(
        PrincipalSource::BearerHmac,
        PrincipalHasher::new(b"secret"),
        false,
    );
    let mut headers = HeaderMap::new();
    headers.append(header::AUTHORIZATION, "Bearer a".parse().expect("v"));
    headers.append(header::AUTHORIZATION, "Bearer b".parse().expect("v"));
    assert!(matches!(
        identities.principal(&headers, None).await,
        Err(Refused::TwoCredentials)
    ));
}
