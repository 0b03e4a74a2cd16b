//! Viewer and publisher entry points: `/play/{playback_id}` (JSON), `/play/{playback_id}/{proto}/...`
//! (307 to the chosen edge), `/ingest/{stream_key}` (JSON, or 307 to WHIP for POST).
//!
//! The playback path reads the in-process playback cache and the routing snapshot: no SQL and no
//! Redis per request once an id is cached.

use std::fmt;
use std::net::SocketAddr;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request as HttpRequest, State};
use axum::http::request::Parts as RequestParts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use super::auth::principal_from_headers;
use super::params::Params;
use super::viewer::{Headers, Viewer};
use super::ApiError;
use crate::edge::per_viewer_estimate;
use crate::federation::Arrangement;
use crate::metrics::DecisionCounters;
use crate::registry::{IngestVerdict, Resolved};
use crate::routing::{
    host_of, Ask, Candidate, Parts, Pick, Position, Snapshot, RTMP_PORT, SRT_PORT,
};
use crate::state::AppState;

/// Primary plus up to four fallbacks.
const CHOICES: usize = 5;
/// Candidates listed by `?explain=1`.
const EXPLAIN: usize = 50;
/// Query parameter carrying the viewer session through the redirect.
const SESSION_PARAM: &str = "fh_sid";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/play/{playback_id}", get(play_json))
        // `/play/{playback_id}/{proto}/...` is served by `redirect`, ahead of the router (see
        // `http::serve`).
        .route("/ingest/{stream_key}", get(ingest).post(ingest))
}

/// The client's socket address, which `http::serve` attaches to every request it hands the router.
pub(super) fn peer_of(req: &HttpRequest) -> SocketAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}

/// Playback ids and stream keys are short url-safe tokens.
fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().fold(true, |ok, b| {
            ok & (b.is_ascii_alphanumeric() | (b == b'-') | (b == b'_'))
        })
}

/// The pieces of the edge URL of a protocol for a stream (MistServer's paths), or `None` for an
/// unknown protocol. Nothing is allocated: the redirect checks the protocol with it before
/// anything else, and writes the URL into the Location it builds.
fn url_parts<'a>(
    base: &'a str,
    proto: &'a str,
    stream: &'a str,
    rest: &'a str,
) -> Option<[&'a str; 5]> {
    let rest = rest.trim_start_matches('/');
    let or = |default| if rest.is_empty() { default } else { rest };
    Some(match proto {
        "hls" => [base, "/hls/", stream, "/", or("index.m3u8")],
        "dash" | "cmaf" => [base, "/cmaf/", stream, "/", or("index.mpd")],
        "webrtc" | "whep" => [base, "/webrtc/", stream, "", ""],
        "mp4" | "webm" | "ts" | "flv" | "html" => [base, "/", stream, ".", proto],
        _ => return None,
    })
}

/// The edge URL of a protocol for a stream, MistServer's paths.
pub(super) fn protocol_url(base: &str, proto: &str, stream: &str, rest: &str) -> Option<String> {
    url_parts(base, proto, stream, rest).map(|parts| parts.concat())
}

const PROTOCOLS: &[&str] = &["hls", "dash", "whep", "mp4", "webm", "html"];

#[derive(Serialize)]
struct EdgeChoice {
    node_id: String,
    cluster_id: String,
    remote: bool,
    base_url: String,
    score: u64,
    urls: serde_json::Map<String, serde_json::Value>,
}

fn choice(c: &Candidate, parts: &Parts, stream: &str, session: &Session<'_>) -> EdgeChoice {
    let mut urls = serde_json::Map::new();
    for proto in PROTOCOLS {
        if let Some(url) = protocol_url(&c.base_url, proto, stream, "") {
            urls.insert(
                (*proto).to_string(),
                json!(format!("{url}?{SESSION_PARAM}={session}")),
            );
        }
    }
    EdgeChoice {
        node_id: c.node_id.to_string(),
        cluster_id: c.cluster_id.to_string(),
        remote: c.remote,
        base_url: c.base_url.to_string(),
        score: parts.total,
        urls,
    }
}

/// Resolves the id, or answers 400/404.
async fn resolve(
    state: &AppState,
    playback_id: &str,
    now: Instant,
) -> Result<std::sync::Arc<Resolved>, ApiError> {
    if !valid_token(playback_id) {
        return Err(ApiError::BadRequest("malformed playback id".into()));
    }
    state
        .playback
        .resolve_at(playback_id, now)
        .await?
        .ok_or_else(|| ApiError::NotFound("unknown playback id".into()))
}

/// A decision's best pick and its edge, counted in `counters`, or 503 when no edge is eligible.
pub(super) fn chosen<'s>(
    snapshot: &'s Snapshot,
    best: Option<&Pick>,
    counters: &DecisionCounters,
) -> Result<(u32, &'s Candidate), ApiError> {
    let edge = best.map(|p| (p.index, snapshot.candidate(p)));
    counters.count(edge.map(|(_, c)| c.remote));
    edge.ok_or_else(|| ApiError::NoEdge("no eligible edge right now, retry shortly".into()))
}

/// A viewer session: the id a returning viewer brought back, or a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Session<'a> {
    Returning(&'a str),
    /// 64 bits from the thread-local CSPRNG (no syscall per request).
    New(u64),
}

impl<'a> Session<'a> {
    fn new() -> Self {
        Session::New(rand::random())
    }

    /// The id as text: a new one as 16 lower-case hex digits written into `digits` (without
    /// `fmt`: the redirect's hot path writes one per request).
    fn text<'s>(&'s self, digits: &'s mut [u8; 16]) -> &'s str {
        match self {
            Session::Returning(id) => id,
            Session::New(id) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                *digits = std::array::from_fn(|i| HEX[((id >> (60 - 4 * i)) & 0xf) as usize]);
                std::str::from_utf8(digits).unwrap_or_default()
            }
        }
    }
}

impl fmt::Display for Session<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text(&mut [0; 16]))
    }
}

impl Serialize for Session<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Charges the chosen edge one viewer's bandwidth, once per viewer session: a viewer that comes
/// back with the session id of an earlier redirect was counted then. A peer's edge is charged
/// too, on its ledger here, until the peer's next summary shows the viewers itself: a flood of
/// viewers spreads over the peer's edges instead of all landing on its best one.
pub(super) fn debit<'a>(
    snapshot: &Snapshot,
    (index, c): (u32, &Candidate),
    stream: &str,
    session: Option<&'a str>,
    now: Instant,
) -> Session<'a> {
    if let Some(existing) = session.filter(|s| valid_token(s) && s.len() <= 64) {
        return Session::Returning(existing);
    }
    let on_stream = c.stream(stream).map(|s| (s.up, s.viewers));
    let bytes = per_viewer_estimate(on_stream, Some((c.up, c.connections)));
    snapshot.charge(index, bytes, now);
    Session::new()
}

/// What a viewer of `resolved` asks for: its stream, on this cluster's edges or those of the
/// clusters its tenant may use.
#[inline]
fn viewing(resolved: &Resolved) -> Ask<'_> {
    Ask::Viewer {
        stream: &resolved.internal_name,
        remote_clusters: &resolved.usable_clusters,
    }
}

/// For a stream live on another cluster its tenant may use (DESIGN.md §7.2): arranges, once per
/// stream, the pull into one of this cluster's edges. `Some(base URL)` of the peer's edge when the
/// peer refused the pull or this cluster has no edge for it: the viewer goes there instead.
/// Nothing to do (no call, one string compare) for a stream live here or already arranged.
/// A stream live only on a cluster its tenant may not use is a 404: no edge here could pull it,
/// so a redirect would send the viewer nowhere.
pub(super) async fn cross_cluster(
    state: &AppState,
    resolved: &Resolved,
    viewer: &Viewer,
) -> Result<Option<String>, ApiError> {
    let Some(live) = resolved.live_cluster_id.as_deref() else {
        return Ok(None);
    };
    if live == state.config.cluster.id || state.federation.peers.has_origin(&resolved.internal_name)
    {
        return Ok(None);
    }
    if !resolved.usable_clusters.iter().any(|c| **c == *live) {
        return Err(ApiError::NotFound(
            "stream is live only on a cluster this stream's owner does not use".into(),
        ));
    }
    let arranged = state
        .federation
        .arrange(
            live,
            &resolved.tenant_id,
            &resolved.internal_name,
            viewer.position,
        )
        .await;
    Ok(match arranged {
        Ok(Arrangement::Local) => None,
        Ok(Arrangement::Remote { base_url }) => Some(base_url),
        Err(e) => {
            tracing::warn!(peer = %live, stream = %resolved.internal_name, error = %e, "could not arrange a cross-cluster origin pull");
            None
        }
    })
}

/// Whether a viewer of `resolved` may be sent to `c` now: this cluster's edges, a peer's edge
/// that carries the stream (or any edge of the cluster where it is live, or of any cluster while
/// it is live nowhere), and a peer's edge without it once the pull into its cluster stands.
/// `None`: that pull must be arranged first ([`settle`]); `Some(false)`: the peer refused a
/// moment ago.
fn reachable(state: &AppState, resolved: &Resolved, c: &Candidate) -> Option<bool> {
    let stream = resolved.internal_name.as_str();
    if !c.remote || c.stream(stream).is_some() {
        return Some(true);
    }
    match resolved.live_cluster_id.as_deref() {
        Some(live) if live != &*c.cluster_id => state.federation.remote_pull(&c.cluster_id, stream),
        _ => Some(true),
    }
}

/// `picks` (the best `k` for a viewer of `resolved`), once their first may receive the viewer:
/// when it is a peer's edge without the stream, the peer is asked to arrange the pull into it
/// first (once per stream and peer, [`crate::federation::Hub::arrange_remote`]); a peer that
/// will not is left out and the viewer decided again without it. Only for a remote first pick,
/// off the common path.
async fn settle(
    state: &AppState,
    snapshot: &Snapshot,
    resolved: &Resolved,
    position: Option<Position>,
    k: usize,
    mut picks: Vec<Pick>,
    now: Instant,
) -> Vec<Pick> {
    let stream = resolved.internal_name.as_str();
    // The usable clusters less those that would not take the viewer, once one would not.
    let mut clusters: Option<Vec<std::sync::Arc<str>>> = None;
    // Every round but the last leaves one peer out: once none is left, the pick is local.
    for _ in 0..=resolved.usable_clusters.len() {
        let Some(c) = picks.first().map(|p| snapshot.candidate(p)) else {
            break;
        };
        let ready = match (reachable(state, resolved, c), &resolved.live_cluster_id) {
            (Some(ready), _) => ready,
            (None, Some(live)) => {
                state
                    .federation
                    .arrange_remote(&c.cluster_id, &resolved.tenant_id, stream, live, &c.node_id)
                    .await
            }
            (None, None) => true,
        };
        if ready {
            break;
        }
        let clusters = clusters.get_or_insert_with(|| resolved.usable_clusters.to_vec());
        clusters.retain(|id| **id != *c.cluster_id);
        let ask = Ask::Viewer {
            stream,
            remote_clusters: clusters,
        };
        picks = snapshot.decide(position, ask, k, now);
    }
    picks
}

async fn play_json(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    req: HttpRequest,
) -> Result<Response, ApiError> {
    let q = Params::of(req.uri())?;
    let headers = req.headers();
    let resolved = resolve(&state, &playback_id, Instant::now()).await?;
    let viewer = Viewer::of(&state, peer_of(&req), headers, &q)?;
    let elsewhere = cross_cluster(&state, &resolved, &viewer).await?;
    let explain = q.get("explain").is_some_and(|v| v == "1");
    if explain {
        let p = principal_from_headers(headers, &state).await?;
        if !p.role.is_operator() {
            return Err(ApiError::Forbidden(
                "explain needs an operator token".into(),
            ));
        }
    }
    let snapshot = state.router.snapshot();
    let stream = resolved.internal_name.as_str();
    let now = Instant::now();
    let k = if explain { EXPLAIN } else { CHOICES };
    let mut picks = snapshot.decide(viewer.position, viewing(&resolved), k, now);
    // An operator's diagnostic must not change what it observes: explain arranges no pull.
    if !explain && picks.first().is_some_and(|p| snapshot.candidate(p).remote) {
        picks = settle(&state, &snapshot, &resolved, viewer.position, k, picks, now).await;
    }
    // Fallbacks too: none on a peer's edge that could not get the stream yet (explain shows
    // the ranking as a viewer's request would start from it).
    let usable: Vec<&Pick> = picks
        .iter()
        .filter(|p| explain || reachable(&state, &resolved, snapshot.candidate(p)) == Some(true))
        .take(CHOICES)
        .collect();
    let primary = chosen(
        &snapshot,
        usable.first().copied(),
        &state.metrics.play_json_decisions,
    )?;
    // An operator's diagnostic must not change what it observes: explain charges nothing.
    let returning = q.get(SESSION_PARAM);
    let session = if explain {
        Session::new()
    } else {
        debit(&snapshot, primary, stream, returning.as_deref(), now)
    };
    let choices: Vec<EdgeChoice> = usable
        .iter()
        .map(|p| choice(snapshot.candidate(p), &p.parts, stream, &session))
        .collect();
    let mut body = json!({
        "playback_id": resolved.playback_id,
        "peer_edge": elsewhere,
        "stream": {
            "internal_name": resolved.internal_name,
            "status": if resolved.live_node_id.is_some() { "live" } else { "offline" },
            "live_cluster_id": resolved.live_cluster_id,
        },
        "session_id": session,
        "primary": choices.first(),
        "fallbacks": &choices[1..],
    });
    if explain {
        body["explain"] = json!({
            "viewer": { "ip": viewer.ip.to_string(), "position_known": viewer.position.is_some() },
            "weights": snapshot.weights(),
            "candidates": picks.iter().map(|p| {
                let c = snapshot.candidate(p);
                json!({ "node_id": &*c.node_id, "cluster_id": &*c.cluster_id, "remote": c.remote, "parts": p.parts })
            }).collect::<Vec<_>>(),
        });
    }
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response())
}

/// `/play/{playback_id}/{proto}[/{rest}]`: the three parts, or `None` for any other path. The
/// parts are used as they are, not percent-decoded: ids, protocols and file names are url-safe
/// tokens, and anything else is refused as malformed.
fn play_path(path: &str) -> Option<(&str, &str, &str)> {
    let (playback_id, after) = slash(path.strip_prefix("/play/")?)?;
    Some(match slash(after) {
        Some((proto, rest)) => (playback_id, proto, rest),
        None => (playback_id, after, ""),
    })
}

/// `s` before its first `/` and after it. A plain byte scan: a redirect's path is a few dozen
/// bytes, where setting up `str`'s pattern searcher costs more than the search.
fn slash(s: &str) -> Option<(&str, &str)> {
    let at = s.bytes().position(|b| b == b'/')?;
    Some((&s[..at], &s[at + 1..]))
}

/// The part after the protocol: a relative path of url-safe segments, never `..`.
fn valid_rest(rest: &str) -> bool {
    // Folds without early exit (vectorised): every redirect's path goes through here.
    rest.len() <= 256
        && rest.bytes().fold(true, |ok, b| {
            ok & (b.is_ascii_alphanumeric() | matches!(b, b'-' | b'_' | b'.' | b'/'))
        })
        && !(rest.as_bytes().windows(2).any(|w| w == b"..")
            && rest.split('/').any(|seg| seg == ".."))
}

/// Whether `path` is a viewer redirect, `/play/{playback_id}/{proto}[/...]`.
pub(super) fn is_redirect_path(path: &str) -> bool {
    play_path(path).is_some()
}

/// `GET|POST /play/{playback_id}/{proto}/...` through hyper (the viewer lane hands hyper every
/// request it does not take itself, POST included): the answer of [`redirect_to`].
pub(super) async fn redirect(
    state: &AppState,
    peer: SocketAddr,
    req: &RequestParts,
) -> Result<Response, ApiError> {
    if !matches!(req.method, Method::GET | Method::HEAD | Method::POST) {
        let mut response = ApiError::MethodNotAllowed("use GET or POST".into()).into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
        return Ok(response);
    }
    let mut location = Vec::new();
    redirect_to(
        state,
        peer,
        req.uri.path(),
        req.uri.query(),
        &req.headers,
        Instant::now(),
        &mut location,
    )
    .await?;
    temporary_redirect(location)
}

/// The viewer hot path, for the viewer lane and hyper alike: resolve (in-process cache), rank
/// (snapshot), debit (the edge's own ledger), and the edge URL to send the viewer to. No SQL,
/// Redis, lock or per-request map. `now` is the request's arrival, read once for every request
/// the lane found in one read. The URL is written into `location` (the lane's buffer, reused
/// from request to request: cleared first); on an error, what it holds is not a URL.
pub(super) async fn redirect_to<H: Headers + ?Sized>(
    state: &AppState,
    peer: SocketAddr,
    path: &str,
    query: Option<&str>,
    headers: &H,
    now: Instant,
    location: &mut Vec<u8>,
) -> Result<(), ApiError> {
    location.clear();
    let (playback_id, proto, rest) =
        play_path(path).ok_or_else(|| ApiError::BadRequest("malformed path".into()))?;
    let q = Params::parse(query.unwrap_or(""))?;
    if !valid_rest(rest) {
        return Err(ApiError::BadRequest("malformed path".into()));
    }
    if url_parts("", proto, "", "").is_none() {
        return Err(ApiError::BadRequest(format!(
            "unknown protocol {:?}; one of hls, dash, cmaf, webrtc, whep, mp4, webm, ts, flv, html",
            proto.chars().take(32).collect::<String>()
        )));
    }
    let resolved = resolve(state, playback_id, now).await?;
    let viewer = Viewer::of(state, peer, headers, &q)?;
    let stream = resolved.internal_name.as_str();
    if let Some(base_url) = cross_cluster(state, &resolved, &viewer).await? {
        // The peer would not let this cluster pull the stream: its own edge serves the viewer.
        state.metrics.play_decisions.count(Some(true));
        push_url(location, &base_url, proto, stream, rest)?;
        return redirect_location(location);
    }
    let snapshot = state.router.snapshot();
    let mut best = snapshot.decide_best(viewer.position, viewing(&resolved), now);
    if let Some(remote) = best.filter(|p| snapshot.candidate(p).remote) {
        let picks = settle(
            state,
            &snapshot,
            &resolved,
            viewer.position,
            1,
            vec![remote],
            now,
        );
        best = picks.await.first().copied();
    }
    let picked = chosen(&snapshot, best.as_ref(), &state.metrics.play_decisions)?;
    let edge = picked.1;
    let returning = q.get(SESSION_PARAM);
    let session = debit(&snapshot, picked, stream, returning.as_deref(), now);
    push_url(location, &edge.base_url, proto, stream, rest)?;
    location.push(b'?');
    location.extend_from_slice(SESSION_PARAM.as_bytes());
    location.push(b'=');
    location.extend_from_slice(session.text(&mut [0; 16]).as_bytes());
    redirect_location(location)
}

/// Appends the edge URL of `proto` for `stream` to `location` ([`url_parts`]); 400 for a
/// protocol it does not know.
fn push_url(
    location: &mut Vec<u8>,
    base: &str,
    proto: &str,
    stream: &str,
    rest: &str,
) -> Result<(), ApiError> {
    let parts = url_parts(base, proto, stream, rest)
        .ok_or_else(|| ApiError::BadRequest("malformed path".into()))?;
    for part in parts {
        location.extend_from_slice(part.as_bytes());
    }
    Ok(())
}

/// Whether `location` can be sent as a header value (visible ASCII, what `HeaderValue` takes
/// from a URL); 400 if not.
fn redirect_location(location: &[u8]) -> Result<(), ApiError> {
    if super::header_text(location) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "cannot build a redirect for this request".into(),
        ))
    }
}

/// 307 keeps the method and body: a WHEP/WHIP POST stays a POST at the edge.
pub(super) fn temporary_redirect(location: impl Into<Bytes>) -> Result<Response, ApiError> {
    let value = HeaderValue::from_maybe_shared(location.into())
        .map_err(|_| ApiError::BadRequest("cannot build a redirect for this request".into()))?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, value);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn ingest(
    State(state): State<AppState>,
    Path(stream_key): Path<String>,
    req: HttpRequest,
) -> Result<Response, ApiError> {
    let q = Params::of(req.uri())?;
    if !valid_token(&stream_key) {
        return Err(ApiError::BadRequest("malformed stream key".into()));
    }
    let viewer = Viewer::of(&state, peer_of(&req), req.headers(), &q)?;
    let stream = match state
        .registry
        .check_ingest(&stream_key, &state.config.cluster.id)
        .await?
    {
        IngestVerdict::Accept(stream) => stream,
        // Another tenant's key is refused exactly as an unknown one: this cluster's users learn
        // nothing of streams that may not use it.
        IngestVerdict::UnknownKey | IngestVerdict::NotPermitted => {
            return Err(ApiError::NotFound("unknown stream key".into()))
        }
    };
    let snapshot = state.router.snapshot();
    let best = snapshot.decide_best(viewer.position, Ask::Publisher, Instant::now());
    let (_, edge) = chosen(
        &snapshot,
        best.as_ref(),
        &state.metrics.ingest_routing_decisions,
    )?;
    let host = host_of(&edge.base_url);
    let whip = format!("{}/webrtc/{stream_key}", edge.base_url);
    if req.method() == Method::POST {
        return temporary_redirect(whip);
    }
    Ok(Json(json!({
        "stream": { "name": stream.name, "internal_name": stream.internal_name },
        "edge": { "node_id": &*edge.node_id, "cluster_id": &*edge.cluster_id, "base_url": &*edge.base_url },
        "urls": {
            "whip": whip,
            "rtmp": format!("rtmp://{host}:{RTMP_PORT}/live/{stream_key}"),
            "srt": format!("srt://{host}:{SRT_PORT}?streamid={stream_key}"),
        },
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn protocol_urls_follow_mistserver_paths() {
        let b = "https://e.example";
        assert_eq!(
            protocol_url(b, "hls", "live+x", "").as_deref(),
            Some("https://e.example/hls/live+x/index.m3u8")
        );
        assert_eq!(
            protocol_url(b, "hls", "live+x", "720p/index.m3u8").as_deref(),
            Some("https://e.example/hls/live+x/720p/index.m3u8")
        );
        assert_eq!(
            protocol_url(b, "dash", "live+x", "").as_deref(),
            Some("https://e.example/cmaf/live+x/index.mpd")
        );
        assert_eq!(
            protocol_url(b, "whep", "live+x", "").as_deref(),
            Some("https://e.example/webrtc/live+x")
        );
        assert_eq!(
            protocol_url(b, "mp4", "live+x", "").as_deref(),
            Some("https://e.example/live+x.mp4")
        );
        assert_eq!(protocol_url(b, "gopher", "live+x", ""), None);
    }

    proptest! {
        /// The hot path's checks and writers mean what their plain forms mean.
        #[test]
        fn hot_path_helpers_match_their_plain_forms(
            id in any::<u64>(),
            text in proptest::collection::vec(any::<u8>(), 0..300),
            token in "[A-Za-z0-9_.%/ -]{0,140}",
            rest in "[A-Za-z0-9_.%/-]{0,80}",
            path in "(/play/|/play|/)?[a-z/]{0,12}",
        ) {
            let plain_path = path.strip_prefix("/play/").and_then(|p| {
                let mut parts = p.splitn(3, '/');
                Some((parts.next()?, parts.next()?, parts.next().unwrap_or("")))
            });
            prop_assert_eq!(play_path(&path), plain_path);
            let written = Session::New(id).text(&mut [0; 16]).to_string();
            prop_assert_eq!(&written, &format!("{id:016x}"));
            prop_assert_eq!(Session::New(id).to_string(), written);
            prop_assert_eq!(
                super::super::header_text(&text),
                text.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
            );
            prop_assert_eq!(
                valid_token(&token),
                !token.is_empty() && token.len() <= 128
                    && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            prop_assert_eq!(
                valid_rest(&rest),
                rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
                    && !rest.split('/').any(|seg| seg == "..")
            );
        }

        /// Every `Location` is a valid URI: for any base URL the edge state can hold (what
        /// `check_base_url` accepts of any text) and any stream, protocol, path and session the
        /// handlers let through, the redirect parses, keeps the edge's host, and has the session
        /// as its only query and no fragment.
        #[test]
        fn every_location_is_a_valid_uri(
            base in "(https?://)([a-z0-9.-]{1,12}|[a-zA-Z0-9.\\-_ é%\\[\\]:@]{0,12})(:[0-9]{1,6})?((/[a-z0-9._~%-]{0,6}){0,3}|[a-zA-Z0-9/ .%?#é\\t]{0,12})",
            stream in "[A-Za-z0-9_+.-]{1,40}",
            proto in proptest::sample::select(vec!["hls", "dash", "cmaf", "webrtc", "whep", "mp4", "webm", "ts", "flv", "html"]),
            rest in "[A-Za-z0-9_./-]{0,40}",
            new_session in any::<u64>(),
            returning in proptest::option::of("[A-Za-z0-9_-]{1,64}"),
        ) {
            let session = match &returning {
                Some(id) => Session::Returning(id),
                None => Session::New(new_session),
            };
            let Ok(base) = crate::edge::check_base_url(&base) else {
                return Ok(());
            };
            prop_assume!(valid_rest(&rest));
            let location = format!(
                "{}?{SESSION_PARAM}={session}",
                protocol_url(&base, proto, &stream, &rest).expect("known protocol")
            );
            let uri: axum::http::Uri = location.parse().expect("a URI");
            prop_assert!(HeaderValue::from_str(&location).is_ok());
            let url = url::Url::parse(&location).expect("a URL");
            let edge = url::Url::parse(&base).expect("base URL");
            prop_assert_eq!(url.host_str(), edge.host_str());
            prop_assert_eq!(url.port(), edge.port());
            prop_assert!(url.fragment().is_none(), "{}", location);
            let query = format!("{SESSION_PARAM}={session}");
            prop_assert_eq!(url.query(), Some(query.as_str()));
            prop_assert!(url.path().starts_with(edge.path().trim_end_matches('/')));
            prop_assert_eq!(uri.query(), url.query());
        }
    }

    #[test]
    fn paths_and_tokens_are_bounded() {
        assert!(valid_rest("720p/index.m3u8"));
        assert!(!valid_rest("../etc/passwd"));
        assert!(!valid_rest("a/../b"));
        assert!(!valid_rest("a b"));
        assert!(!valid_rest(&"a".repeat(300)));
        assert!(valid_token("abc_DEF-123"));
        assert!(!valid_token(""));
        assert!(!valid_token("a/b"));
        assert!(!valid_token(&"a".repeat(200)));
    }
}
