//! Streams: creation with a stream key shown once, and the ingest and playback URLs that follow the
//! tenant's preferred cluster (and its official cluster when that differs).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{caller_tenant, check_uuid};
use crate::api::ApiError;
use crate::names::Zone;
use crate::registry::{Principal, Stream, Tenant};
use crate::routing::{RTMP_PORT, SRT_PORT};
use crate::state::AppState;

/// Stands for the stream key in URLs shown after creation, when the key is no longer known.
const KEY_PLACEHOLDER: &str = "{stream_key}";

/// Input of `POST /streams`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// 1 to 100 letters, digits, spaces, `-`, `_` or `.`; unique per tenant.
    pub name: String,
}

/// Input of the `get_streaming_config` tool.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamingConfigQuery {
    /// One stream; without it, every stream of the tenant.
    pub stream_id: Option<String>,
}

/// Where to publish, on one cluster.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IngestEndpoints {
    pub cluster_id: String,
    /// `preferred`, `official`, or `preferred+official` when they are the same cluster.
    pub label: String,
    /// `rtmp://edge-ingest.{cluster}.{root}:1935/live/{key}`.
    pub rtmp: String,
    /// WHIP endpoint for WebRTC publishing.
    pub whip: String,
    /// SRT with the key as stream id.
    pub srt: String,
}

/// Where viewers watch, through the preferred cluster's Foghorn.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlaybackEndpoints {
    pub cluster_id: String,
    pub hls: String,
    pub dash: String,
    pub whep: String,
    /// JSON with the best edge and fallbacks.
    pub info: String,
}

/// A stream with its URLs. `stream_key` only in the answer that created it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StreamView {
    pub id: String,
    pub name: String,
    pub playback_id: String,
    pub internal_name: String,
    /// Present once, when the stream is created; store it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_key: Option<String>,
    /// `live` or `offline`.
    pub status: &'static str,
    pub live_cluster_id: Option<String>,
    pub created_at: i64,
    /// Preferred cluster first, then the official one when it differs. After creation the key
    /// is shown as `{stream_key}`.
    pub ingest: Vec<IngestEndpoints>,
    pub playback: PlaybackEndpoints,
}

/// The URLs of `stream` for `tenant`, with `key` or the placeholder.
fn stream_view(root: &str, tenant: &Tenant, stream: &Stream, key: Option<String>) -> StreamView {
    let official = tenant.official_cluster_id.as_str();
    let preferred = tenant.preferred_cluster_id.as_deref().unwrap_or(official);
    let shown_key = key.as_deref().unwrap_or(KEY_PLACEHOLDER);
    let ingest_on = |cluster: &str, label: &str| {
        let ingest = Zone::new(cluster, root).ingest_host();
        IngestEndpoints {
            cluster_id: cluster.to_string(),
            label: label.to_string(),
            rtmp: format!("rtmp://{ingest}:{RTMP_PORT}/live/{shown_key}"),
            whip: format!("https://{ingest}/webrtc/{shown_key}"),
            srt: format!("srt://{ingest}:{SRT_PORT}?streamid={shown_key}"),
        }
    };
    let ingest = if preferred == official {
        vec![ingest_on(preferred, "preferred+official")]
    } else {
        vec![
            ingest_on(preferred, "preferred"),
            ingest_on(official, "official"),
        ]
    };
    let play = format!(
        "{}/play/{}",
        Zone::new(preferred, root).foghorn_url(),
        stream.playback_id
    );
    StreamView {
        id: stream.id.clone(),
        name: stream.name.clone(),
        playback_id: stream.playback_id.clone(),
        internal_name: stream.internal_name.clone(),
        stream_key: key,
        status: if stream.live_node_id.is_some() {
            "live"
        } else {
            "offline"
        },
        live_cluster_id: stream.live_cluster_id.clone(),
        created_at: stream.created_at,
        ingest,
        playback: PlaybackEndpoints {
            cluster_id: preferred.to_string(),
            hls: format!("{play}/hls/index.m3u8"),
            dash: format!("{play}/dash/index.mpd"),
            whep: format!("{play}/whep"),
            info: play,
        },
    }
}

/// `POST /streams`: the stream key (once), playback id, ingest and playback URLs.
pub async fn create_stream(
    state: &AppState,
    caller: &Principal,
    input: CreateStream,
) -> Result<StreamView, ApiError> {
    let tenant = caller_tenant(state, caller).await?;
    let (stream, key) = state
        .registry
        .create_stream(&caller.tenant_id, &input.name)
        .await?;
    Ok(stream_view(
        &state.config.cluster.root_domain,
        &tenant,
        &stream,
        Some(key),
    ))
}

/// `GET /streams`: the tenant's streams, by name.
pub async fn list_streams(
    state: &AppState,
    caller: &Principal,
) -> Result<Vec<StreamView>, ApiError> {
    let tenant = caller_tenant(state, caller).await?;
    let streams = state.registry.streams_of_tenant(&tenant.id).await?;
    let root = &state.config.cluster.root_domain;
    Ok(streams
        .iter()
        .map(|s| stream_view(root, &tenant, s, None))
        .collect())
}

/// `GET /streams/{id}`: one of the tenant's streams; another tenant's answers 404.
pub async fn get_stream(
    state: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<StreamView, ApiError> {
    check_uuid("stream", id)?;
    let tenant = caller_tenant(state, caller).await?;
    let stream = state
        .registry
        .stream_of_tenant(&tenant.id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("stream {id:?} not found")))?;
    Ok(stream_view(
        &state.config.cluster.root_domain,
        &tenant,
        &stream,
        None,
    ))
}

/// `get_streaming_config`: one stream's URLs, or every stream's.
pub async fn streaming_config(
    state: &AppState,
    caller: &Principal,
    query: StreamingConfigQuery,
) -> Result<Vec<StreamView>, ApiError> {
    match query.stream_id {
        Some(id) => Ok(vec![get_stream(state, caller, &id).await?]),
        None => list_streams(state, caller).await,
    }
}
