//! The web console: a page, a style sheet and a script, embedded in the
//! binary with `include_str!`, served by the daemon at `/` and
//! `/console/*`.
//!
//! The console is a client of the HTTP API under `/api/v1` like any other:
//! it holds the account's API key in the browser tab's session storage and
//! sends it with every call, so it can show and do only what that key may.
//! Nothing here reads the catalog; every rule lives behind the API.
//!
//! The assets are plain files (no build step): `assets/index.html`,
//! `assets/console.css`, `assets/i18n.js` (the words, in English, French and
//! Spanish) and `assets/console.js` (the views). Responses forbid framing and
//! every script or style not from this origin.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The embedded files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/console.js"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/i18n.js"),
    ),
];

const INDEX: &str = include_str!("../assets/index.html");

/// Routes for the console, to merge into the daemon's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(asset))
}

async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => serve(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such console file").into_response(),
    }
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_TYPE, content_type),
        // The daemon may be upgraded under an open tab: always revalidate.
        (header::CACHE_CONTROL, "no-cache"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page loads is embedded, so a renamed asset fails here
    /// rather than in a browser.
    #[test]
    fn the_page_loads_only_embedded_files() {
        for reference in INDEX.split("/console/").skip(1) {
            let name: String = reference
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "index.html loads /console/{name}, which is not embedded"
            );
        }
    }
}
