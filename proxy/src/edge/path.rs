//! One canonical spelling for the paths the broker checks. A backend decodes a request path before it
//! routes it (`/%6dcp` is `/mcp` to uvicorn), and servers differ in what else they fold (dot segments,
//! duplicate slashes, backslashes, `;` parameters, case). A request whose path is not written exactly
//! as one of the broker's own paths or the MCP path, but *could* be read as one of them (or as a path
//! under the MCP path) by some server, is refused: it would otherwise reach the backend as a
//! pass-through request, past every check the broker makes on the MCP path.
//!
//! The one exception is the trailing-slash spelling of the MCP path (`/mcp/` for `/mcp`, and the
//! reverse), which clients do send: the broker redirects it to the MCP path itself (307, a relative
//! `Location`), so nothing is forwarded and the client retries on the checked path.
//!
//! Pure: [`decide`] takes strings and returns a [`Decision`]; [`canonical`] is the normalizer, tested
//! as a table below.

/// What to do with a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Route it by its text, as written: one of the checked paths exactly, or a path no server would
    /// read as one of them (passed through to the backend untouched).
    Serve,
    /// The trailing-slash spelling of the MCP path: answer 307 to this path.
    Redirect(String),
    /// Another spelling of (or a path under) this checked path: answer 400.
    Refuse(String),
}

/// How many rounds of percent-decoding are folded (a double-encoded `%256d` is decoded by servers
/// that decode twice, or by a proxy in front of one).
const DECODE_ROUNDS: usize = 3;

/// Decides on a raw request path (as sent, without the query), given the broker's own paths and the
/// MCP path (both written canonically).
pub fn decide(raw: &str, owned: &[&str], mcp: &str) -> Decision {
    if raw == mcp || owned.contains(&raw) {
        return Decision::Serve;
    }
    let folded = canonical(raw).to_ascii_lowercase();
    let mcp_folded = mcp.to_ascii_lowercase();
    if let Some(path) = owned.iter().find(|p| p.to_ascii_lowercase() == folded) {
        return Decision::Refuse((*path).to_owned());
    }
    if folded == mcp_folded {
        return Decision::Refuse(mcp.to_owned());
    }
    let base = mcp_folded.trim_end_matches('/');
    if base.is_empty() {
        return Decision::Serve; // the MCP path is `/`: every other path is the backend's
    }
    let variant = match mcp.strip_suffix('/') {
        Some(bare) => bare.to_owned(),
        None => format!("{mcp}/"),
    };
    if folded == variant.to_ascii_lowercase() {
        // Written plainly (only the slash differs): a redirect. Any other spelling: refused.
        return if raw == variant {
            Decision::Redirect(mcp.to_owned())
        } else {
            Decision::Refuse(mcp.to_owned())
        };
    }
    if folded.starts_with(&format!("{base}/")) {
        return Decision::Refuse(mcp.to_owned());
    }
    Decision::Serve
}

/// The path as the most liberal server would read it: percent-decoded (repeatedly), backslashes as
/// slashes, cut at a decoded `?` or `#`, `;` parameters dropped from each segment, dot segments
/// removed (RFC 3986 §5.2.4) and empty segments collapsed. Case is kept.
pub fn canonical(raw: &str) -> String {
    let mut bytes = raw.as_bytes().to_vec();
    for _ in 0..DECODE_ROUNDS {
        let decoded = percent_decode(&bytes);
        if decoded == bytes {
            break;
        }
        bytes = decoded;
    }
    let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let text = text.split(['?', '#']).next().unwrap_or_default();
    let trailing = text.ends_with('/') || text.ends_with("/.") || text.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(text.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

/// Decodes every valid `%XX` triplet; an invalid one is kept as written.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(high), Some(low)) = (
                input.get(i + 1).and_then(|b| hex_value(*b)),
                input.get(i + 2).and_then(|b| hex_value(*b)),
            )
        {
            out.push(high << 4 | low);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNED: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/.well-known/jwks.json"];

    #[test]
    fn the_normalizer() {
        let table = [
            ("/mcp", "/mcp"),
            ("/", "/"),
            ("", "/"),
            ("/%6dcp", "/mcp"),
            ("/mc%70", "/mcp"),
            ("/%6D%63%70", "/mcp"),
            ("/%256dcp", "/mcp"),
            ("/%25256dcp", "/mcp"),
            ("//mcp", "/mcp"),
            ("/x/../mcp", "/mcp"),
            ("/x/%2e%2e/mcp", "/mcp"),
            ("/./mcp", "/mcp"),
            ("/../../mcp", "/mcp"),
            ("/mcp%2f", "/mcp/"),
            ("/mcp/", "/mcp/"),
            ("/mcp/.", "/mcp/"),
            ("/a/b/..", "/a/"),
            ("\\mcp", "/mcp"),
            ("/mcp;jsessionid=1", "/mcp"),
            ("/mcp%3bx", "/mcp"),
            ("/mcp%3Fa=b", "/mcp"),
            ("/mcp%23frag", "/mcp"),
            ("/%zz/mcp", "/%zz/mcp"),
            ("/50%", "/50%"),
            ("/%ff", "/\u{fffd}"),
            ("/MCP", "/MCP"),
            (
                "/.well-known/oauth-protected-resource/mcp",
                "/.well-known/oauth-protected-resource/mcp",
            ),
        ];
        for (raw, expected) in table {
            assert_eq!(canonical(raw), expected, "canonical({raw:?})");
        }
    }

    #[test]
    fn decisions() {
        use Decision::*;
        let mcp = |to: &str| to.to_owned();
        let table = [
            ("/mcp", Serve),
            ("/healthz", Serve),
            ("/.well-known/jwks.json", Serve),
            ("/.well-known/oauth-protected-resource/mcp", Serve),
            ("/.well-known/oauth-authorization-server", Serve),
            ("/audit", Serve),
            ("/mcpx", Serve),
            ("/x/mcp", Serve),
            ("/%41udit", Serve),
            ("/%6dcp", Refuse(mcp("/mcp"))),
            ("/mc%70", Refuse(mcp("/mcp"))),
            ("/%256dcp", Refuse(mcp("/mcp"))),
            ("//mcp", Refuse(mcp("/mcp"))),
            ("/x/../mcp", Refuse(mcp("/mcp"))),
            ("/MCP", Refuse(mcp("/mcp"))),
            ("/mcp;x", Refuse(mcp("/mcp"))),
            ("/mcp%2f", Refuse(mcp("/mcp"))),
            ("/mcp//", Refuse(mcp("/mcp"))),
            ("/mcp/x", Refuse(mcp("/mcp"))),
            ("/mcp/%2e%2e/mcp", Refuse(mcp("/mcp"))),
            ("/mcp/", Redirect(mcp("/mcp"))),
            ("/Mcp/", Refuse(mcp("/mcp"))),
            ("/%68ealthz", Refuse(mcp("/healthz"))),
            ("/metrics/", Serve),
            ("/%2emetrics", Serve),
            (
                "/.well-known/jwks%2ejson",
                Refuse(mcp("/.well-known/jwks.json")),
            ),
            ("/readyz;", Refuse(mcp("/readyz"))),
        ];
        for (raw, expected) in table {
            assert_eq!(decide(raw, &OWNED, "/mcp"), expected, "decide({raw:?})");
        }
    }

    #[test]
    fn other_mcp_paths() {
        use Decision::*;
        assert_eq!(decide("/mcp", &OWNED, "/mcp/"), Redirect("/mcp/".into()));
        assert_eq!(decide("/mcp/", &OWNED, "/mcp/"), Serve);
        assert_eq!(decide("/mcp/x", &OWNED, "/mcp/"), Refuse("/mcp/".into()));
        assert_eq!(decide("/api/v1/mcp", &OWNED, "/api/v1/mcp"), Serve);
        assert_eq!(
            decide("/api/v1/%6dcp", &OWNED, "/api/v1/mcp"),
            Refuse("/api/v1/mcp".into())
        );
        assert_eq!(decide("/api/v1", &OWNED, "/api/v1/mcp"), Serve);
        // The MCP path is `/`: only its own spellings are refused, every other path is passed on.
        assert_eq!(decide("/", &OWNED, "/"), Serve);
        assert_eq!(decide("/anything", &OWNED, "/"), Serve);
        assert_eq!(decide("//", &OWNED, "/"), Refuse("/".into()));
        assert_eq!(decide("/%2f", &OWNED, "/"), Refuse("/".into()));
        assert_eq!(decide("/%68ealthz", &OWNED, "/"), Refuse("/healthz".into()));
    }
}
