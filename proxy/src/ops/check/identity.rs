//! The `identity` line: whether the principal source (`--principal`) is usable. For `jwt` the key
//! set is fetched (or read) as the edge fetches it ([`fetch_key_set`]) and its keys counted, with
//! how many fit the accepted algorithms (none fitting: no token could ever verify); for
//! `bearer-hmac` and `header` it says what is configured.

use broker::oauth::{self, Rules};
use jsonwebtoken::jwk::JwkSet;

use super::{Line, PROBE_TIMEOUT};
use crate::config::Settings;
use crate::config::identity::{JwksLocation, PrincipalSource};
use crate::edge::identify::fetch_key_set;

const WHAT: &str = "identity";

/// Checks the principal source of `settings`.
pub async fn check(settings: &Settings) -> Line {
    let anonymous = if settings.allow_anonymous {
        "; requests without a credential come in as one anonymous principal"
    } else {
        "; requests without a credential are refused"
    };
    match &settings.principal_source {
        PrincipalSource::BearerHmac => {
            let keyed = if settings.principal_secret.is_some() {
                "--principal-secret-file"
            } else {
                "the signing key"
            };
            Line::ok(
                WHAT,
                format!(
                    "bearer-hmac: each bearer credential is a principal, kept as a hash keyed by \
                     {keyed}{anonymous}"
                ),
            )
        }
        PrincipalSource::Header {
            name,
            trusted_proxies,
        } => {
            let proxies: Vec<String> = trusted_proxies.iter().map(ToString::to_string).collect();
            Line::ok(
                WHAT,
                format!(
                    "header: `{name}` names the caller, believed only from {}{anonymous}",
                    proxies.join(", ")
                ),
            )
        }
        PrincipalSource::Jwt { jwks, rules, .. } => jwt(jwks, rules, anonymous).await,
    }
}

async fn jwt(location: &JwksLocation, rules: &Rules, anonymous: &str) -> Line {
    let shown = match location {
        JwksLocation::Url(uri) => format!("JWKS {uri}"),
        JwksLocation::File(path) => format!("JWKS file {}", path.display()),
    };
    let keys = match tokio::time::timeout(PROBE_TIMEOUT, fetch_key_set(location)).await {
        Ok(Ok(keys)) => keys,
        Ok(Err(error)) => {
            // The fetch names the URL itself ("URL answered HTTP 404").
            let error = match location {
                JwksLocation::Url(uri) => error
                    .strip_prefix(&format!("{uri} "))
                    .map_or(error.clone(), str::to_owned),
                JwksLocation::File(_) => error,
            };
            return Line::fail(WHAT, format!("jwt: {shown}: {error}"));
        }
        Err(_) => {
            return Line::fail(
                WHAT,
                format!("jwt: {shown}: no answer within {PROBE_TIMEOUT:?}"),
            );
        }
    };
    let algorithms: Vec<String> = rules.algorithms.iter().map(|a| format!("{a:?}")).collect();
    let algorithms = algorithms.join(",");
    let fitting = fitting(&keys, rules);
    let audience = rules
        .audience
        .as_deref()
        .map_or("not checked".to_owned(), |aud| format!("`{aud}`"));
    let count = match keys.keys.len() {
        1 => "1 key".to_owned(),
        n => format!("{n} keys"),
    };
    if fitting == 0 {
        return Line::fail(
            WHAT,
            format!("jwt: {shown}: {count}, none for {algorithms}: no token could be verified"),
        );
    }
    Line::ok(
        WHAT,
        format!(
            "jwt: {shown}: {count}, {fitting} for {algorithms}; issuer `{}`, audience {audience}{anonymous}",
            rules.issuer
        ),
    )
}

/// How many keys of the set verify at least one accepted algorithm.
fn fitting(keys: &JwkSet, rules: &Rules) -> usize {
    keys.keys
        .iter()
        .filter(|jwk| {
            let one = JwkSet {
                keys: vec![(*jwk).clone()],
            };
            rules
                .algorithms
                .iter()
                .any(|alg| oauth::signing_key(&one, None, *alg).is_some())
        })
        .count()
}
