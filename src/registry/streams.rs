//! Streams: stream keys (secret, for publishers), playback ids (public, for viewers), and where a
//! stream is live right now.

use serde::Serialize;
use sqlx::Row as _;

use super::subscriptions::usable_by;
use super::{new_id, now_ms, Registry, RegistryError, Result};
use crate::secret::{self, SecretKind};

/// A stream row (never the key).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Stream {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub key_lookup: String,
    /// Public, url-safe, 20 characters; what viewers use.
    pub playback_id: String,
    /// MistServer's name for the stream (`live+...`); what edges report.
    pub internal_name: String,
    pub live_cluster_id: Option<String>,
    pub live_node_id: Option<String>,
    pub live_since: Option<i64>,
    pub created_at: i64,
}

const STREAM_COLUMNS: &str = "id, tenant_id, name, key_lookup, playback_id, internal_name, \
     live_cluster_id, live_node_id, live_since, created_at";

/// The answer to a publish attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestVerdict {
    /// Known key, allowed here: the edge runs it under `stream.internal_name`.
    Accept(Box<Stream>),
    /// Unknown or malformed stream key.
    UnknownKey,
    /// The key is valid but its tenant may not publish on this (private) cluster.
    NotPermitted,
}

impl Registry {
    /// Creates a stream for a tenant; the stream key is returned once and stored only hashed.
    pub async fn create_stream(&self, tenant_id: &str, name: &str) -> Result<(Stream, String)> {
        let name = name.trim();
        if name.is_empty()
            || name.len() > 100
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        {
            return Err(RegistryError::Invalid(
                "stream name must be 1 to 100 letters, digits, spaces, '-', '_' or '.'".into(),
            ));
        }
        if self.tenant(tenant_id).await?.is_none() {
            return Err(RegistryError::Invalid(format!(
                "tenant {tenant_id:?} does not exist"
            )));
        }
        let key = secret::mint(SecretKind::StreamKey);
        let id = new_id();
        sqlx::query(
            "INSERT INTO streams (id, tenant_id, name, key_lookup, key_hash, playback_id, \
             internal_name, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(name)
        .bind(&key.lookup)
        .bind(&key.hash)
        .bind(secret::random_hex(10))
        .bind(format!("live+{}", secret::random_hex(8)))
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| RegistryError::unique(e, format!("stream {name:?} already exists")))?;
        let stream = self
            .stream(&id)
            .await?
            .ok_or(RegistryError::NotFound("stream"))?;
        Ok((stream, key.plain))
    }

    /// The stream with this id, if any.
    pub async fn stream(&self, id: &str) -> Result<Option<Stream>> {
        self.stream_where("id", id).await
    }

    /// The stream `id` if it belongs to `tenant_id`; `None` for another tenant's stream too.
    pub async fn stream_of_tenant(&self, tenant_id: &str, id: &str) -> Result<Option<Stream>> {
        Ok(self.stream(id).await?.filter(|s| s.tenant_id == tenant_id))
    }

    /// The stream with this public playback id, if any.
    pub async fn stream_by_playback_id(&self, playback_id: &str) -> Result<Option<Stream>> {
        self.stream_where("playback_id", playback_id).await
    }

    /// The stream with this internal (MistServer) name, if any.
    pub async fn stream_by_internal_name(&self, internal_name: &str) -> Result<Option<Stream>> {
        self.stream_where("internal_name", internal_name).await
    }

    async fn stream_where(&self, column: &'static str, value: &str) -> Result<Option<Stream>> {
        let sql = format!("SELECT {STREAM_COLUMNS} FROM streams WHERE {column} = $1");
        Ok(sqlx::query_as(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Checks a stream key for an ingest on `cluster_id`, without writing anything.
    ///
    /// A tenant publishes only on clusters it may use: its own, its official cluster, and those
    /// it is actively subscribed to (a pending or rejected subscription is not enough).
    pub async fn check_ingest(&self, stream_key: &str, cluster_id: &str) -> Result<IngestVerdict> {
        let Some(row) = self
            .find_by_secret(
                SecretKind::StreamKey,
                stream_key,
                "SELECT id, key_hash AS secret_hash FROM streams WHERE key_lookup = $1",
            )
            .await?
        else {
            return Ok(IngestVerdict::UnknownKey);
        };
        let id: String = row.try_get("id")?;
        let stream = self
            .stream(&id)
            .await?
            .ok_or(RegistryError::NotFound("stream"))?;
        if self.cluster(cluster_id).await?.is_none() {
            return Err(RegistryError::NotFound("cluster"));
        }
        let sql = format!(
            "SELECT COUNT(*) FROM clusters c WHERE c.id = $2 AND {}",
            usable_by("$1")
        );
        let usable: i64 = sqlx::query_scalar(&sql)
            .bind(&stream.tenant_id)
            .bind(cluster_id)
            .fetch_one(&self.pool)
            .await?;
        if usable == 0 {
            return Ok(IngestVerdict::NotPermitted);
        }
        Ok(IngestVerdict::Accept(Box::new(stream)))
    }

    /// Records that an accepted stream is live on `(cluster_id, node_id)`. The latest publisher
    /// wins: a stream live elsewhere moves here (a publisher that reconnected through another edge).
    pub async fn mark_live(&self, stream_id: &str, cluster_id: &str, node_id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE streams SET live_cluster_id = $1, live_node_id = $2, live_since = $3 \
             WHERE id = $4",
        )
        .bind(cluster_id)
        .bind(node_id)
        .bind(now_ms())
        .bind(stream_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records `internal_name` as live on this node when an edge reports it as an origin in its
    /// stats but the registry does not know it live anywhere (after a reconnect, or when recording
    /// the ingest failed). Never takes a stream that is live on another node, nor one whose tenant
    /// may not use this cluster (the rule of [`Registry::check_ingest`]). Returns whether a row was
    /// claimed.
    pub async fn claim_live(
        &self,
        internal_name: &str,
        cluster_id: &str,
        node_id: &str,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE streams SET live_cluster_id = $1, live_node_id = $2, live_since = $3 \
             WHERE internal_name = $4 AND live_node_id IS NULL \
             AND EXISTS (SELECT 1 FROM clusters c WHERE c.id = $1 AND {})",
            usable_by("streams.tenant_id")
        );
        let done = sqlx::query(&sql)
            .bind(cluster_id)
            .bind(node_id)
            .bind(now_ms())
            .bind(internal_name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Clears every stream recorded live on `node_id` (its control stream closed); returns how many.
    pub async fn end_streams_of_node(&self, node_id: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE streams SET live_cluster_id = NULL, live_node_id = NULL, live_since = NULL \
             WHERE live_node_id = $1",
        )
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Clears the live location of `internal_name` if it is live on `node_id`; returns whether it was.
    ///
    /// Scoped to the node so an edge can only end its own ingests, never another edge's.
    pub async fn end_stream(&self, internal_name: &str, node_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE streams SET live_cluster_id = NULL, live_node_id = NULL, live_since = NULL \
             WHERE internal_name = $1 AND live_node_id = $2",
        )
        .bind(internal_name)
        .bind(node_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Streams of a tenant, by name.
    pub async fn streams_of_tenant(&self, tenant_id: &str) -> Result<Vec<Stream>> {
        let sql =
            format!("SELECT {STREAM_COLUMNS} FROM streams WHERE tenant_id = $1 ORDER BY name");
        Ok(sqlx::query_as(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?)
    }
}
