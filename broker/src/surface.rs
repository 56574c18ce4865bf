//! Which UI a request comes from: the **surface**, normalized from `X-Anthropic-Client`, the
//! User-Agent family and the MCP `clientInfo.name` by ordered rules (configured rules first, then the
//! built-in knowledge of real clients). Pure: the proxy hands in header values.

use crate::ids::Surface;

/// What a request says about its UI.
#[derive(Debug, Default, Clone)]
pub struct SurfaceSignals<'a> {
    /// `X-Anthropic-Client`.
    pub anthropic_client: Option<&'a str>,
    /// `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// `clientInfo.name` from the MCP session's `initialize` (or `_meta` in sessionless requests).
    pub client_name: Option<&'a str>,
    /// Values of the extra headers named by configured rules, as (lowercase name, value).
    pub headers: Vec<(String, &'a str)>,
}

/// Where a configured rule looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    UserAgent,
    ClientName,
    /// A request header, by lowercase name.
    Header(String),
}

/// One configured rule: `SOURCE:PATTERN=SURFACE`, where SOURCE is `ua`, `client` or `header.NAME`
/// and PATTERN is a case-insensitive glob with `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurfaceRule {
    pub source: RuleSource,
    pub pattern: String,
    pub surface: Surface,
}

/// Why a configured rule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "surface rule {0:?} must look like SOURCE:PATTERN=SURFACE (SOURCE: ua, client, header.NAME)"
    )]
    Shape(String),
    #[error("surface rule {rule:?}: {reason}")]
    BadSurface { rule: String, reason: String },
}

impl std::str::FromStr for SurfaceRule {
    type Err = RuleError;

    fn from_str(rule: &str) -> Result<Self, RuleError> {
        let shape = || RuleError::Shape(rule.to_owned());
        let (source, rest) = rule.split_once(':').ok_or_else(shape)?;
        let (pattern, surface) = rest.rsplit_once('=').ok_or_else(shape)?;
        let source = match source.trim() {
            "ua" => RuleSource::UserAgent,
            "client" => RuleSource::ClientName,
            other => match other.strip_prefix("header.") {
                Some(name) if !name.is_empty() => RuleSource::Header(name.to_ascii_lowercase()),
                _ => return Err(shape()),
            },
        };
        if pattern.is_empty() {
            return Err(shape());
        }
        let surface = Surface::parse(surface.trim()).map_err(|e| RuleError::BadSurface {
            rule: rule.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            source,
            pattern: pattern.to_owned(),
            surface,
        })
    }
}

/// Ordered surface rules: configured ones first, then the built-in knowledge of real clients.
#[derive(Debug, Clone, Default)]
pub struct SurfaceRules {
    configured: Vec<SurfaceRule>,
}

impl SurfaceRules {
    pub fn new(configured: Vec<SurfaceRule>) -> Self {
        Self { configured }
    }

    /// Header names (lowercase) the proxy must collect for the configured rules.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.configured
            .iter()
            .filter_map(|rule| match &rule.source {
                RuleSource::Header(name) => Some(name.as_str()),
                _ => None,
            })
    }

    /// The surface these signals point at; never fails (`unknown` when nothing is known).
    pub fn classify(&self, signals: &SurfaceSignals<'_>) -> Surface {
        for rule in &self.configured {
            let value = match &rule.source {
                RuleSource::UserAgent => signals.user_agent,
                RuleSource::ClientName => signals.client_name,
                RuleSource::Header(name) => signals
                    .headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| *v),
            };
            if value.is_some_and(|v| glob_matches(&rule.pattern, v)) {
                return rule.surface.clone();
            }
        }
        builtin(signals)
    }
}

fn builtin(signals: &SurfaceSignals<'_>) -> Surface {
    if let Some(client) = signals
        .anthropic_client
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        return match client.to_ascii_lowercase().as_str() {
            "claudeai" => surface("claude-ai"),
            "cowork" => surface("claude-cowork"),
            other => slug_surface("anthropic-", other),
        };
    }
    if let Some(ua) = signals.user_agent.map(str::trim) {
        if let Some(rest) = ua.strip_prefix("claude-code/") {
            let flavour = rest
                .split_once('(')
                .and_then(|(_, inner)| inner.split([')', ';', ',']).next())
                .map(str::trim)
                .unwrap_or("");
            return match flavour {
                "cli" => surface("claude-code-cli"),
                "claude-vscode" => surface("claude-code-vscode"),
                "claude-desktop" => surface("claude-code-desktop"),
                _ => surface("claude-code"),
            };
        }
        if ua.starts_with("Claude-User") {
            return surface("claude-ai");
        }
    }
    if let Some(name) = signals.client_name.map(str::trim).filter(|n| !n.is_empty()) {
        return match name {
            "claude-ai" | "Anthropic/ClaudeAI" => surface("claude-ai"),
            "claude-code" => surface("claude-code"),
            "openai-mcp" => surface("chatgpt"),
            "cursor-vscode" => surface("cursor"),
            "Visual Studio Code" => surface("vscode"),
            other => slug_surface("", other),
        };
    }
    surface("unknown")
}

fn surface(name: &'static str) -> Surface {
    Surface::parse(name).unwrap_or_else(|_| unreachable!())
}

/// `prefix` + the name lowercased, every character outside `[a-z0-9._-]` turned into `-`, at most 64.
fn slug_surface(prefix: &str, name: &str) -> Surface {
    let mut slug: String = prefix.to_owned();
    for c in name.chars().flat_map(char::to_lowercase) {
        let keep = c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
        slug.push(if keep { c } else { '-' });
    }
    slug.truncate(64);
    Surface::parse(slug).unwrap_or_else(|_| surface("unknown"))
}

/// Case-insensitive glob with `*` only.
fn glob_matches(pattern: &str, value: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let value = value.to_ascii_lowercase();
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return value.is_empty(),
    };
    let Some(mut remaining) = value.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(ac: Option<&str>, ua: Option<&str>, name: Option<&str>) -> String {
        let signals = SurfaceSignals {
            anthropic_client: ac,
            user_agent: ua,
            client_name: name,
            headers: vec![],
        };
        SurfaceRules::default().classify(&signals).to_string()
    }

    #[test]
    fn real_clients_map_to_their_surfaces() {
        assert_eq!(
            classify(Some("ClaudeAI"), Some("Claude-User"), Some("claude-ai")),
            "claude-ai"
        );
        assert_eq!(classify(Some("Cowork"), None, None), "claude-cowork");
        assert_eq!(
            classify(None, Some("Claude-User"), Some("Anthropic/ClaudeAI")),
            "claude-ai"
        );
        assert_eq!(
            classify(None, Some("claude-code/2.1.3 (cli)"), Some("claude-code")),
            "claude-code-cli"
        );
        assert_eq!(
            classify(None, Some("claude-code/2.1.3 (claude-vscode)"), None),
            "claude-code-vscode"
        );
        assert_eq!(
            classify(None, Some("claude-code/2.1.3 (claude-desktop)"), None),
            "claude-code-desktop"
        );
        assert_eq!(
            classify(None, Some("python-httpx/0.28"), Some("claude-code")),
            "claude-code"
        );
        assert_eq!(classify(None, None, Some("openai-mcp")), "chatgpt");
        assert_eq!(classify(None, None, Some("cursor-vscode")), "cursor");
        assert_eq!(classify(None, None, Some("Visual Studio Code")), "vscode");
        assert_eq!(classify(None, None, Some("My Bot/2")), "my-bot-2");
        assert_eq!(classify(None, None, None), "unknown");
    }

    #[test]
    fn configured_rules_come_first() {
        let rules = SurfaceRules::new(vec![
            "header.x-client-kind:desk*=desktop".parse().expect("rule"),
            "client:claude-*=claude-family".parse().expect("rule"),
        ]);
        let signals = SurfaceSignals {
            client_name: Some("claude-ai"),
            headers: vec![("x-client-kind".into(), "Desktop-App")],
            ..Default::default()
        };
        assert_eq!(rules.classify(&signals).as_str(), "desktop");
        let signals = SurfaceSignals {
            client_name: Some("claude-ai"),
            ..Default::default()
        };
        assert_eq!(rules.classify(&signals).as_str(), "claude-family");
        assert_eq!(
            rules.header_names().collect::<Vec<_>>(),
            vec!["x-client-kind"]
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_shape() {
        assert!("nonsense".parse::<SurfaceRule>().is_err());
        assert!("ua:x=Bad Surface".parse::<SurfaceRule>().is_err());
        assert!("header.:x=y".parse::<SurfaceRule>().is_err());
    }

    #[test]
    fn glob() {
        assert!(glob_matches("a*c", "abc"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("ABC", "abc"));
        assert!(!glob_matches("a*c", "abd"));
        assert!(glob_matches("a*b*c", "a-b-b-c"));
        assert!(!glob_matches("abc", "abcd"));
    }
}
