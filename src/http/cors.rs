//! CORS: which pages' scripts may read Foghorn's answers.
//!
//! A browser player on another origin asks `/play/{id}` (JSON), follows `/play/{id}/{proto}`
//! redirects (a WHEP `POST` with its preflight) and asks the MistServer API (`/`, `/{stream}`),
//! as it did MistServer's balancer, which answers everything with `Access-Control-Allow-Origin:
//! *`. Those paths follow `viewers.cors_origins` (`["*"]` by default). `/api/v1` follows
//! `server.api_cors_origins`, empty by default: no CORS there unless the operator lists the
//! dashboards that may call it. Health, metrics, MCP and the dashboard have none.
//!
//! With `*` every answer on those paths carries the header, whether or not the request named an
//! origin (as MistServer). With a list, an answer names the request's `Origin` when listed, and
//! says `Vary: Origin` either way, so a cache keeps answers for different origins apart.
//! Credentials are never allowed: Foghorn uses bearer tokens, not cookies.
//!
//! One policy for both servers of the listener: the viewer lane writes [`Grant::write`]'s lines
//! into its own answers, hyper's answers get [`Grant::apply`] in `http::serve`. (tower-http's
//! `CorsLayer` would cover only the router, not the redirects answered before it.)

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use crate::config::Config;

/// What an answer says about CORS.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// `Access-Control-Allow-Origin`, when the request's origin may read the answer.
    allow: Option<HeaderValue>,
    /// Whether the answer depends on `Origin` (a list of origins is configured).
    vary: bool,
}

/// The origins that may read answers to `path`, `None` where there is no CORS.
fn origins<'c>(config: &'c Config, path: &str) -> Option<&'c [String]> {
    let api = path == "/api/v1" || path.starts_with("/api/v1/");
    let origins = if api {
        &config.server.api_cors_origins
    } else if is_viewer_path(path) {
        &config.viewers.cors_origins
    } else {
        return None;
    };
    (!origins.is_empty()).then_some(origins.as_slice())
}

/// The viewer paths (`/play...`, `/ingest/...`) and the MistServer API (`/`, `/{stream}`).
fn is_viewer_path(path: &str) -> bool {
    if path.starts_with("/play/") || path == "/play" || path.starts_with("/ingest/") {
        return true;
    }
    let Some(name) = path.strip_prefix('/') else {
        return false;
    };
    !name.contains('/') && !matches!(name, "health" | "ready" | "metrics" | "mcp" | "ui")
}

impl Grant {
    /// The grant of an answer to `path` for a request from `origin` (its `Origin` header, looked
    /// up only when a list of origins is configured).
    pub fn of<'o>(config: &Config, path: &str, origin: impl FnOnce() -> Option<&'o [u8]>) -> Grant {
        match origins(config, path) {
            None => Grant::default(),
            Some([any]) if any == "*" => Grant {
                allow: Some(HeaderValue::from_static("*")),
                vary: false,
            },
            Some(listed) => Grant {
                allow: origin()
                    .filter(|o| listed.iter().any(|l| l.as_bytes() == *o))
                    .and_then(|o| HeaderValue::from_bytes(o).ok()),
                vary: true,
            },
        }
    }

    /// Whether `path` has CORS at all (and so answers `OPTIONS` as a preflight).
    pub fn covers(config: &Config, path: &str) -> bool {
        origins(config, path).is_some()
    }

    /// Adds the grant's headers to a hyper answer.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(allow) = &self.allow {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow.clone());
        }
        if self.vary {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }

    /// Writes the grant's header lines into an answer the viewer lane builds.
    pub fn write(&self, out: &mut Vec<u8>) {
        if let Some(allow) = &self.allow {
            out.extend_from_slice(b"access-control-allow-origin: ");
            out.extend_from_slice(allow.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.vary {
            out.extend_from_slice(b"vary: origin\r\n");
        }
    }

    /// The answer to an `OPTIONS` request (a preflight) on a path with CORS: 204 with the methods
    /// the path takes and the request headers the script asked to send, for 10 minutes.
    pub fn preflight(&self, path: &str, request: &HeaderMap) -> Response {
        let methods = if path.starts_with("/api/v1") {
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
        } else {
            "GET, HEAD, POST, OPTIONS"
        };
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::ALLOW, HeaderValue::from_static(methods));
        self.apply(headers);
        if self.allow.is_some() {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(methods),
            );
            // `*` would not cover `Authorization`: the names asked for are allowed as asked.
            if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(viewers: &[&str], api: &[&str]) -> Config {
        let mut config = Config::default();
        config.viewers.cors_origins = viewers.iter().map(|s| s.to_string()).collect();
        config.server.api_cors_origins = api.iter().map(|s| s.to_string()).collect();
        config
    }

    fn allow(grant: &Grant) -> Option<&str> {
        grant.allow.as_ref().map(|v| v.to_str().expect("ASCII"))
    }

    #[test]
    fn paths_and_their_policies() {
        let c = config(&["*"], &[]);
        for path in [
            "/play/abc",
            "/play/abc/hls/index.m3u8",
            "/ingest/key",
            "/",
            "/live+x",
            "/play",
        ] {
            let g = Grant::of(&c, path, || None);
            assert_eq!(allow(&g), Some("*"), "{path}");
            assert!(!g.vary);
        }
        for path in [
            "/api/v1/clusters",
            "/api/v1",
            "/health",
            "/metrics",
            "/ui",
            "/ui/app.js",
            "/mcp",
            "/a/b",
        ] {
            assert!(!Grant::covers(&c, path), "{path}");
            assert!(allow(&Grant::of(&c, path, || Some(
                b"https://x.example".as_slice()
            )))
            .is_none());
        }
    }

    #[test]
    fn a_list_names_listed_origins_only_and_always_varies() {
        let c = config(&["https://a.example"], &["https://dash.example"]);
        let g = Grant::of(&c, "/play/x", || Some(b"https://a.example".as_slice()));
        assert_eq!((allow(&g), g.vary), (Some("https://a.example"), true));
        let g = Grant::of(&c, "/play/x", || Some(b"https://evil.example".as_slice()));
        assert_eq!((allow(&g), g.vary), (None, true));
        let g = Grant::of(&c, "/play/x", || None);
        assert_eq!((allow(&g), g.vary), (None, true));
        let g = Grant::of(&c, "/api/v1/tenant", || {
            Some(b"https://dash.example".as_slice())
        });
        assert_eq!(allow(&g), Some("https://dash.example"));
        let g = Grant::of(&c, "/api/v1/tenant", || {
            Some(b"https://a.example".as_slice())
        });
        assert_eq!(allow(&g), None);
        // None configured: no CORS at all, and OPTIONS is the router's.
        assert!(!Grant::covers(&config(&[], &[]), "/play/x"));
    }

    #[test]
    fn lane_lines_match_hyper_headers() {
        let c = config(&["https://a.example"], &[]);
        let g = Grant::of(&c, "/play/x", || Some(b"https://a.example".as_slice()));
        let mut out = Vec::new();
        g.write(&mut out);
        assert_eq!(
            out,
            b"access-control-allow-origin: https://a.example\r\nvary: origin\r\n"
        );
        let mut headers = HeaderMap::new();
        g.apply(&mut headers);
        assert_eq!(headers.len(), 2);
    }
}
