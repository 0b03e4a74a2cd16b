//! The dashboard at `/ui`: one hand-written page, stylesheet and script compiled into the binary.
//!
//! The page holds no data of its own: the script signs in with an API token (kept in
//! `sessionStorage`, sent as a bearer header, never a cookie, so there is no CSRF surface) and
//! calls only `/api/v1`, so the dashboard can do nothing the API refuses. Every path under `/ui`
//! answers the same page (the script picks the view from the fragment); these are static routes,
//! matched ahead of the viewer's `/{stream}` and never seen by the viewer lane (`/play/...`).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

const PAGE: &str = include_str!("ui/index.html");
const STYLE: &str = include_str!("ui/app.css");
const SCRIPT: &str = include_str!("ui/app.js");

/// Only this origin's script, style, images and API; no framing, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The `/ui` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/app.css", get(style))
        .route("/ui/app.js", get(script))
        .route("/ui/{*rest}", get(page))
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// One asset with the dashboard's security headers. `no-cache` so a new binary's script is
/// picked up at once (the assets are small; revalidation is a full fetch, which is fine here).
fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, kind),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
