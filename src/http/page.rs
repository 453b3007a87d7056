//! `/`: the live status page, one self-contained HTML file (`status.html`: inline CSS and
//! script, nothing fetched from elsewhere) compiled into the binary. Its script polls
//! `/api/v1/overview`. The Content-Security-Policy allows exactly the page's own inline
//! style and script (by their SHA-256) and requests to this listener, nothing else.

use base64::Engine as _;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};

use super::{respond, Body};

/// The page, as shipped.
pub const HTML: &str = include_str!("status.html");

/// Used if the page's hashes cannot be made into a header (never, with the page as
/// shipped): the inline code is still confined to this origin.
const FALLBACK_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

pub struct Page {
    csp: HeaderValue,
}

impl Page {
    pub fn new() -> Page {
        let hash = |tag: &str| {
            inline(HTML, tag).map(|code| {
                let digest = Sha256::digest(code.as_bytes());
                format!(
                    "'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(digest)
                )
            })
        };
        let csp = match (hash("script"), hash("style")) {
            (Some(script), Some(style)) => HeaderValue::from_str(&format!(
                "default-src 'none'; script-src {script}; style-src {style}; \
                 connect-src 'self'; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'"
            ))
            .ok(),
            _ => None,
        };
        Page {
            csp: csp.unwrap_or(HeaderValue::from_static(FALLBACK_CSP)),
        }
    }

    pub fn response(&self) -> Response<Body> {
        let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", HTML);
        r.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        r.headers_mut()
            .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        r
    }
}

/// The text between `<tag>` and `</tag>` (the first such element).
fn inline<'a>(html: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = html.find(&open)? + open.len();
    let len = html[start..].find(&format!("</{tag}>"))?;
    Some(&html[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_small_self_contained_and_hashed() {
        assert!(HTML.len() < 20 * 1024, "{} bytes", HTML.len());
        for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
            assert!(
                !HTML.contains(external),
                "the page must not load {external}"
            );
        }
        assert!(inline(HTML, "script").is_some_and(|s| s.contains("api/v1/overview")));
        assert!(inline(HTML, "style").is_some());
        let csp = Page::new().csp;
        let csp = csp.to_str().expect("ASCII");
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(csp.contains("style-src 'sha256-"), "{csp}");
        for id in [
            "id=\"connections\"",
            "id=\"deepest\"",
            "id=\"store\"",
            "id=\"drops\"",
            "id=\"rates\"",
        ] {
            assert!(HTML.contains(id), "{id}");
        }
    }
}
