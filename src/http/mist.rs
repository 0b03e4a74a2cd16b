//! The MistServer load-balancer API (MistUtilLoad), so MistServer and its tools can ask Foghorn:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /{stream}` | best edge's host name, plain text |
//! | `GET /{stream}?proto=P` | 307 to that edge's URL for protocol P (a MistServer connector name in any case, see [`mist_proto`]), the rest of the query string kept |
//! | `GET /?source={stream}` | `dtsc://host:4200/{stream}` of the best origin (has an input, not a replica, not the asking host), else `fallback` or `push://` |
//! | `GET /?ingest={cpu}` | best ingest edge's host name, among those with `cpu` percent of CPU to spare |
//! | `GET /?lstserver` | every edge and its load, JSON (read view) |
//! | `GET /?streamstats={stream}` | per stream (`*`: all; a name: it and its `name+...` children): `[viewers, bandwidth per viewer]`, JSON (read view) |
//! | `GET /?stream={stream}` | the stream's viewers over every edge, as text (read view) |
//! | `GET /?viewers` | viewers per stream, JSON (read view) |
//! | `GET /?host={host}` | one edge, JSON (read view) |
//! | `GET /?weights` / `?weights={json}` | read / change the score weights (operator token) |
//! | `GET /?addserver={host[:port][/MiB/s]}` / `?delserver={name}` | add / remove a MistServer polled on its MistController JSON, MistServer's replies (operator token, see [`crate::mist_servers`]) |
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
use crate::mist_servers::Target;
use crate::registry::Resolved;
use crate::routing::{dtsc_url, host_of, Ask, Candidate, Pick, Position, Snapshot};
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
    if let Some(cpu) = q.get("ingest") {
        let best = best_ingest(&snapshot, viewer.position, cpu_tenths(&cpu));
        let (_, edge) = chosen(&snapshot, best.as_ref(), &state.metrics.mist_decisions)?;
        return Ok(text(host_of(&edge.base_url).to_string()));
    }
    let views = ["lstserver", "streamstats", "stream", "viewers", "host"];
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
    if let Some(asked) = q.get("streamstats") {
        let name = match &*asked {
            "*" => None,
            name => match known_stream(&state, name).await? {
                Some(resolved) => Some(resolved.internal_name.clone()),
                None => return Ok(Json(json!({})).into_response()),
            },
        };
        return Ok(Json(stream_stats(&snapshot, name.as_deref())).into_response());
    }
    if let Some(stream) = q.get("stream") {
        let known = known_stream(&state, &stream).await?;
        let viewers: u64 = known.map_or(0, |s| {
            snapshot
                .candidates()
                .filter(|c| !c.remote)
                .filter_map(|c| c.stream(&s.internal_name))
                .map(|s| u64::from(s.viewers))
                .sum()
        });
        return Ok(text(viewers.to_string()));
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
    if let Some(name) = q.get("delserver").filter(|n| !n.is_empty()) {
        api::require_operator(&principal_from_headers(headers, &state).await?)?;
        let cluster = &state.config.cluster.id;
        let reply = if state.registry.remove_mist_server(cluster, &name).await? {
            "Offline"
        } else {
            "Server not monitored - could not delete from monitored server list!"
        };
        return Ok(text(json!(reply).to_string()));
    }
    if let Some(name) = q.get("addserver").filter(|n| !n.is_empty()) {
        api::require_operator(&principal_from_headers(headers, &state).await?)?;
        Target::parse(&name).map_err(ApiError::BadRequest)?;
        let cluster = &state.config.cluster.id;
        let reply = if state.registry.add_mist_server(cluster, &name).await? {
            json!({ name: "Starting monitoring" })
        } else {
            json!("Server already monitored - add request ignored")
        };
        return Ok(text(
            serde_json::to_string_pretty(&reply).unwrap_or_default(),
        ));
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
        "load_balancer": ["/{stream}", "?proto=", "?source=", "?ingest=", "?lstserver", "?streamstats=", "?stream=", "?viewers", "?host=", "?weights=", "?addserver=", "?delserver="],
    }))
    .into_response())
}

/// `?ingest=`'s argument as MistServer reads it: the CPU the new ingest will use, in percent (a
/// number at the start of the text, as C's `atof`; anything else is 0), as tenths.
fn cpu_tenths(given: &str) -> u64 {
    let end = given
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && c == '+')))
        .map_or(given.len(), |(i, _)| i);
    let percent = given[..end].parse::<f64>().unwrap_or(0.0);
    // At most 100 %: a bigger need fits no edge, as 100 already does not.
    (percent.clamp(0.0, 100.0) * 10.0) as u64
}

/// The best ingest edge for a publisher at `position` whose input needs `need` tenths of CPU: as
/// in MistServer, an edge fits when its CPU plus that need stays below 100 %. Ingest lookups are
/// rare (one per publish), so the edges are ranked in full and the best that fits is taken.
fn best_ingest(snapshot: &Snapshot, position: Option<Position>, need: u64) -> Option<Pick> {
    let now = Instant::now();
    if need == 0 {
        return snapshot.decide_best(position, Ask::Publisher, now);
    }
    snapshot
        .decide(position, Ask::Publisher, snapshot.len(), now)
        .into_iter()
        .find(|p| snapshot.candidate(p).cpu_tenths + need < 1000)
}

/// `?streamstats=` as MistServer answers it: per stream, `[viewers, bandwidth per viewer in bytes
/// per second]` summed over the edges; `name` gives that stream and its wildcard children
/// (`name+...`), `None` every stream; this cluster's edges, as MistServer's own. MistServer adds two byte totals; edges report rates to
/// Foghorn, not totals, so the array ends after the bandwidth.
fn stream_stats(snapshot: &Snapshot, name: Option<&str>) -> BTreeMap<String, Value> {
    let wanted = |stream: &str| {
        name.is_none_or(|n| {
            stream == n || stream.strip_prefix(n).is_some_and(|r| r.starts_with('+'))
        })
    };
    let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for c in snapshot.candidates().filter(|c| !c.remote) {
        for s in c.streams.iter().filter(|s| wanted(&s.name)) {
            let sum = sums.entry(&s.name).or_default();
            sum.0 += u64::from(s.viewers);
            sum.1 += s.up;
        }
    }
    sums.into_iter()
        .map(|(name, (viewers, up))| (name.to_string(), json!([viewers, up / viewers.max(1)])))
        .collect()
}

/// The read views (`?lstserver`, `?streamstats`, `?stream`, `?viewers`, `?host`) show every tenant's
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
