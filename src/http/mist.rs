//! The MistServer load-balancer API (MistUtilLoad), so MistServer and its tools can ask Foghorn:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /{stream}` | best edge's host name, plain text |
//! | `GET /{stream}?proto=P` | 307 to that edge's URL for protocol P (a MistServer connector name in any case, see [`mist_proto`]), the rest of the query string kept |
//! | `GET /?source={stream}` | `dtsc://host:4200/{stream}` of the best origin (has an input, not a replica, not the asking host), else `fallback` or `push://` |
//! | `GET /?ingest=...` | best ingest edge's host name |
//! | `GET /?lstserver` | every edge and its load, JSON (read view) |
//! | `GET /?streamstats={stream}` | per edge: viewers, inputs, bandwidth of that stream, JSON (read view) |
//! | `GET /?viewers` | viewers per stream, JSON (read view) |
//! | `GET /?host={host}` | one edge, JSON (read view) |
//! | `GET /?weights` / `?weights={json}` | read / change the score weights (operator token) |
//!
//! `/{stream}` charges the chosen edge one viewer's bandwidth, as a `/play` redirect does: a
//! MistServer player asks here and then connects, so a burst of lookups spreads over the edges.
//!
//! The read views answer this cluster's own edges and operator tokens only; names of streams
//! whose tenant may not use this cluster are unknown here (see [`known_stream`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request as HttpRequest, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::auth::principal_from_headers;
use super::params::Params;
use super::play::{chosen, debit, peer_of, protocol_url, temporary_redirect};
use super::viewer::Viewer;
use super::ApiError;
use crate::api;
use crate::registry::Resolved;
use crate::routing::{dtsc_url, host_of, Ask, Candidate, Snapshot};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/{stream}", get(best_host))
}

/// MistServer stream names: letters, digits and `_+.-`, at most 100 characters.
fn valid_stream(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b'-'))
}

/// The stream name a request gives, `None` when it is malformed. In a query string `live+abc`
/// decodes to `live abc`; names never contain spaces, so a space is the `+` of a MistServer
/// wildcard stream that the client did not percent-encode.
fn stream_name(given: &str) -> Option<String> {
    let name = given.replace(' ', "+");
    valid_stream(&name).then_some(name)
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The stream a MistServer-style name means: a playback id, or the internal name of a stream
/// this cluster serves. `None` for any other name: unknown here, or a stream of a tenant that may
/// not use this cluster, which must look exactly like an unknown one (DESIGN.md §11).
async fn known_stream(state: &AppState, stream: &str) -> Result<Option<Arc<Resolved>>, ApiError> {
    let stream =
        &stream_name(stream).ok_or_else(|| ApiError::BadRequest("malformed stream name".into()))?;
    if stream
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        if let Some(resolved) = state.playback.resolve(stream).await? {
            return Ok(Some(resolved));
        }
    }
    Ok(state.playback.resolve_internal_name(stream).await?)
}

async fn best_host(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    req: HttpRequest,
) -> Result<Response, ApiError> {
    let q = Params::of(req.uri())?;
    let resolved = known_stream(&state, &stream)
        .await?
        .ok_or_else(|| ApiError::NotFound("unknown stream".into()))?;
    let stream = &resolved.internal_name;
    let viewer = Viewer::of(&state, peer_of(&req), req.headers(), &q)?;
    let proto = match q.get("proto") {
        Some(given) => Some(mist_proto(&given).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown protocol {:?}",
                given.chars().take(32).collect::<String>()
            ))
        })?),
        None => None,
    };
    let snapshot = state.router.snapshot();
    let now = Instant::now();
    // MistServer's balancer calls come from this cluster's own edges: local edges only.
    let best = snapshot.decide_best(viewer.position, Ask::local_viewer(stream), now);
    let picked = chosen(&snapshot, best.as_ref(), &state.metrics.mist_decisions)?;
    let edge = picked.1;
    debit(&snapshot, picked, stream, None, now);
    match proto.and_then(|p| protocol_url(&edge.base_url, p, stream, "")) {
        Some(mut url) => {
            url.push_str(&forwarded_query(req.uri().query()));
            temporary_redirect(url)
        }
        None => Ok(text(host_of(&edge.base_url).to_string())),
    }
}

/// A `?proto=` value as MistServer takes it: the name of one of its connectors, in any case
/// (`HLS`, `DASH`, `CMAF`, `WebRTC`, `MP4`, `EBML`, `HTTPTS`, `FLV`, `HTTP`), or the protocol names of
/// `/play` (`webm`, `ts`, `html`, `whep`).
fn mist_proto(given: &str) -> Option<&'static str> {
    Some(match given.to_ascii_lowercase().as_str() {
        "hls" => "hls",
        "dash" => "dash",
        "cmaf" => "cmaf",
        "webrtc" => "webrtc",
        "whep" => "whep",
        "mp4" => "mp4",
        "webm" | "ebml" => "webm",
        "ts" | "httpts" => "ts",
        "flv" => "flv",
        "html" | "http" => "html",
        _ => return None,
    })
}

/// The viewer's query string for the edge, as it came, without `proto`: `""` or `?...`.
fn forwarded_query(query: Option<&str>) -> String {
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("proto"))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

/// What `?source=` answers: the DTSC URL of the best local origin of `stream`, asked from the
/// asking edge's position when it is one of ours; else the origin pull arranged with the peer
/// cluster where the stream is live (DESIGN.md §7.2).
fn source_url(
    state: &AppState,
    snapshot: &Snapshot,
    stream: &str,
    viewer: &Viewer,
) -> Option<String> {
    let asker = Some(viewer.ip);
    let position = snapshot
        .candidates()
        .find(|c| c.ip.is_some() && c.ip == asker)
        .and_then(|c| c.position)
        .or(viewer.position);
    match snapshot.best_source(stream, asker, position, Instant::now()) {
        Some(c) => Some(dtsc_url(&c.base_url, stream)),
        None => state.federation.peers.origin(stream).map(|o| o.dtsc_url),
    }
}

async fn root(State(state): State<AppState>, req: HttpRequest) -> Result<Response, ApiError> {
    let q = Params::of(req.uri())?;
    let headers = req.headers();
    let viewer = Viewer::of(&state, peer_of(&req), headers, &q)?;
    let snapshot = state.router.snapshot();
    if let Some(stream) = q.get("source") {
        let known = known_stream(&state, &stream).await?;
        let mut source = known
            .as_ref()
            .and_then(|s| source_url(&state, &snapshot, &s.internal_name, &viewer));
        if let Some(resolved) = known.as_ref().filter(|_| source.is_none()) {
            // Live on another cluster its tenant uses, and no pull arranged here: a viewer
            // reached this edge without asking this Foghorn (DNS, an old link), or the pull
            // was dropped. Arranged now, once per stream, as for a viewer here.
            if let Ok(None) = super::play::cross_cluster(&state, resolved, &viewer).await {
                source = state
                    .federation
                    .peers
                    .origin(&resolved.internal_name)
                    .map(|o| o.dtsc_url);
            }
        }
        let fallback = q.get("fallback");
        return Ok(text(source.unwrap_or_else(|| {
            fallback.as_deref().unwrap_or("push://").to_string()
        })));
    }
    if q.has("ingest") {
        let best = snapshot.decide_best(viewer.position, Ask::Publisher, Instant::now());
        let (_, edge) = chosen(&snapshot, best.as_ref(), &state.metrics.mist_decisions)?;
        return Ok(text(host_of(&edge.base_url).to_string()));
    }
    let views = ["lstserver", "streamstats", "viewers", "host"];
    if views.iter().any(|v| q.has(v)) {
        may_read_views(&state, &snapshot, &viewer, headers).await?;
    }
    if q.has("lstserver") {
        let list: BTreeMap<&str, Value> = snapshot
            .candidates()
            .map(|c| (host_of(&c.base_url), describe(c)))
            .collect();
        return Ok(Json(list).into_response());
    }
    if let Some(stream) = q.get("streamstats") {
        let known = known_stream(&state, &stream).await?;
        let stats: BTreeMap<&str, Value> = snapshot
            .candidates()
            .filter_map(|c| {
                let stream = &known.as_ref()?.internal_name;
                c.stream(stream).map(|s| {
                    (
                        host_of(&c.base_url),
                        json!({ "viewers": s.viewers, "inputs": s.inputs, "bandwidth": s.up, "replicated": s.replicated }),
                    )
                })
            })
            .collect();
        return Ok(Json(stats).into_response());
    }
    if q.has("viewers") {
        let mut viewers: BTreeMap<&str, u64> = BTreeMap::new();
        for c in snapshot.candidates() {
            for s in c.streams.iter() {
                *viewers.entry(&s.name).or_default() += u64::from(s.viewers);
            }
        }
        return Ok(Json(viewers).into_response());
    }
    if let Some(host) = q.get("host") {
        let c = snapshot
            .candidates()
            .find(|c| host_of(&c.base_url) == host || *c.node_id == *host)
            .ok_or_else(|| ApiError::NotFound("unknown host".into()))?;
        return Ok(Json(describe(c)).into_response());
    }
    if let Some(changes) = q.get("weights") {
        let caller = principal_from_headers(headers, &state).await?;
        let weights = if changes.is_empty() {
            api::weights(&state, &caller)?
        } else {
            api::set_weights(&state, &caller, &changes).await?
        };
        return Ok(Json(weights).into_response());
    }
    Ok(Json(json!({
        "service": "foghorn",
        "cluster_id": &state.config.cluster.id,
        "load_balancer": ["/{stream}", "?proto=", "?source=", "?ingest=", "?lstserver", "?streamstats=", "?viewers", "?host=", "?weights="],
    }))
    .into_response())
}

/// The read views (`?lstserver`, `?streamstats`, `?viewers`, `?host`) show every tenant's
/// streams and load on this cluster: they answer this cluster's own edges (MistServer asks them
/// from there) and operators, nobody else (DESIGN.md §11).
async fn may_read_views(
    state: &AppState,
    snapshot: &Snapshot,
    asker: &Viewer,
    headers: &axum::http::HeaderMap,
) -> Result<(), ApiError> {
    if snapshot
        .candidates()
        .any(|c| !c.remote && c.ip == Some(asker.ip))
    {
        return Ok(());
    }
    api::require_operator(&principal_from_headers(headers, state).await?)
}

fn describe(c: &Candidate) -> Value {
    json!({
        "node_id": &*c.node_id,
        "cluster_id": &*c.cluster_id,
        "remote": c.remote,
        "base_url": &*c.base_url,
        "cpu_tenths": c.cpu_tenths,
        "ram_used": c.ram_used,
        "ram_max": c.ram_max,
        "up": c.up,
        "bw_limit": c.bw_limit,
        "pending": c.pending.current(),
        "streams": c.streams.len(),
        "viewers": c.streams.iter().map(|s| u64::from(s.viewers)).sum::<u64>(),
        "position_known": c.position.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn hosts_and_names() {
        assert_eq!(
            host_of("https://edge-1.c.example.net"),
            "edge-1.c.example.net"
        );
        assert_eq!(
            host_of("https://edge-1.c.example.net:8443/x"),
            "edge-1.c.example.net"
        );
        assert_eq!(host_of("edge"), "edge");
        // An IPv6 literal keeps its brackets: `rtmp://[2001:db8::1]:1935/...` and the
        // MistServer answers must name the whole address.
        assert_eq!(host_of("https://[2001:db8::1]:8443/x"), "[2001:db8::1]");
        assert_eq!(host_of("https://[2001:db8::1]"), "[2001:db8::1]");
        assert!(valid_stream("live+abc_1.2-3"));
        assert!(!valid_stream("a/b"));
        assert!(!valid_stream(""));
    }

    /// MistServer's rule for stream names, written out: 1 to 100 characters, each an ASCII
    /// letter or digit or one of `_+.-`.
    fn mist_name(s: &str) -> bool {
        (1..=100).contains(&s.chars().count())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+.-".contains(c))
    }

    proptest! {
        /// Stream names are accepted exactly by MistServer's rule, whatever the text (non-ASCII,
        /// separators, lengths around the bound); a space counts as the `+` it was sent as.
        #[test]
        fn stream_names_follow_the_mist_rule(
            s in prop_oneof![
                any::<String>(),
                "[A-Za-z0-9_+. /%é-]{0,12}",
                "[A-Za-z0-9_+.-]{95,105}",
            ],
        ) {
            prop_assert_eq!(valid_stream(&s), mist_name(&s));
            let as_sent = s.replace(' ', "+");
            prop_assert_eq!(stream_name(&s), mist_name(&as_sent).then_some(as_sent));
        }

        /// A name reads back the same however a MistServer client writes it: in the path, in a
        /// query string as is (`+` then decodes to a space), form-encoded, or every byte escaped.
        #[test]
        fn a_stream_name_reads_back_however_it_was_sent(name in "[A-Za-z0-9_+.-]{1,100}") {
            prop_assert_eq!(stream_name(&name), Some(name.clone()));
            let encoded: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
            let escaped: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
            for written in [&name, &encoded, &escaped] {
                let query = format!("source={written}");
                let params = Params::parse(&query).expect("a short query");
                let given = params.get("source").expect("given");
                prop_assert_eq!(stream_name(&given), Some(name.clone()), "{}", query);
            }
        }
    }
}
