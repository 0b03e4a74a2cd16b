//! What federation needs from the registry (DESIGN.md §7): the credentials a cluster's Foghorns
//! present to each other, who may peer with whom, and where a peer listens.

use futures_util::future::BoxFuture;
use sqlx::Row as _;

use super::subscriptions::usable_by;
use super::{new_id, now_ms, Registry, RegistryError, Result};
use crate::federation::LinkError;
use crate::secret::{self, SecretKind};

/// A credential unused for this long is forgotten (a Foghorn whose data directory is gone).
const CREDENTIAL_IDLE_MS: i64 = 30 * 24 * 3_600_000;
/// How stale a credential's `last_used_at` may get before a use refreshes it.
const LAST_USED_PRECISION_MS: i64 = 3_600_000;

/// Where a cluster's Foghorns take gRPC, and the CA their certificate is signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEndpoint {
    /// `http://` or `https://` URL.
    pub grpc_addr: String,
    /// PEM; empty when the certificate is from a public CA (or the cluster never published one).
    pub tls_ca_pem: String,
}

/// Largest CA bundle a cluster may publish.
const MAX_CA_PEM: usize = 64 * 1024;

/// A cluster this one peers with, and where its Foghorns listen for gRPC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerCluster {
    pub cluster_id: String,
    pub grpc_addr: String,
}

impl Registry {
    /// Registers `plain` as the credential `cluster_id` presents to `peer_cluster_id` (or
    /// refreshes it), and forgets the pair's credentials nobody has used or refreshed for a month.
    pub async fn register_peer_credential(
        &self,
        cluster_id: &str,
        peer_cluster_id: &str,
        plain: &str,
    ) -> Result<()> {
        let Some(lookup) = secret::lookup_prefix(SecretKind::PeerCredential, plain) else {
            return Err(super::RegistryError::Invalid(
                "a peer credential is fpc_ followed by 48 hex characters".into(),
            ));
        };
        let now = now_ms();
        if let Some(id) = self
            .find_peer_credential(cluster_id, peer_cluster_id, plain)
            .await?
        {
            sqlx::query("UPDATE peer_credentials SET last_used_at = $2 WHERE id = $1")
                .bind(&id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO peer_credentials (id, cluster_id, peer_cluster_id, lookup, \
                 secret_hash, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(new_id())
            .bind(cluster_id)
            .bind(peer_cluster_id)
            .bind(&lookup)
            .bind(secret::hash(plain))
            .bind(now)
            .execute(&self.pool)
            .await?;
        }
        sqlx::query(
            "DELETE FROM peer_credentials WHERE cluster_id = $1 AND peer_cluster_id = $2 \
             AND last_used_at < $3",
        )
        .bind(cluster_id)
        .bind(peer_cluster_id)
        .bind(now - CREDENTIAL_IDLE_MS)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The id of the credential row of `cluster_id` towards `peer_cluster_id` that `plain`
    /// matches (hashes compared in constant time).
    async fn find_peer_credential(
        &self,
        cluster_id: &str,
        peer_cluster_id: &str,
        plain: &str,
    ) -> Result<Option<String>> {
        let Some(lookup) = secret::lookup_prefix(SecretKind::PeerCredential, plain) else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT id, secret_hash FROM peer_credentials \
             WHERE lookup = $1 AND cluster_id = $2 AND peer_cluster_id = $3",
        )
        .bind(&lookup)
        .bind(cluster_id)
        .bind(peer_cluster_id)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            if secret::verify(plain, &row.try_get::<String, _>("secret_hash")?) {
                return Ok(Some(row.try_get("id")?));
            }
        }
        Ok(None)
    }

    /// Whether `plain` is the credential `cluster_id` presents to `callee` (this cluster).
    pub async fn authenticate_peer(
        &self,
        cluster_id: &str,
        callee: &str,
        plain: &str,
    ) -> Result<bool> {
        let Some(id) = self.find_peer_credential(cluster_id, callee, plain).await? else {
            return Ok(false);
        };
        let now = now_ms();
        sqlx::query(
            "UPDATE peer_credentials SET last_used_at = $2 WHERE id = $1 AND last_used_at < $3",
        )
        .bind(&id)
        .bind(now)
        .bind(now - LAST_USED_PRECISION_MS)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// Whether some tenant may use both clusters (owns, is official on, or is actively subscribed
    /// to each): the only reason two clusters may peer.
    pub async fn clusters_share_a_tenant(&self, a: &str, b: &str) -> Result<bool> {
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM tenants shared WHERE \
             EXISTS (SELECT 1 FROM clusters c WHERE c.id = $1 AND {usable}) \
             AND EXISTS (SELECT 1 FROM clusters c WHERE c.id = $2 AND {usable}) LIMIT 1) one",
            // Not `t`: `usable_by` reads the tenants table under that alias itself.
            usable = usable_by("shared.id")
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(a)
            .bind(b)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Whether tenant `tenant_id` may use both clusters `a` and `b` (one query).
    pub async fn tenant_may_use_both(&self, tenant_id: &str, a: &str, b: &str) -> Result<bool> {
        let sql = format!(
            "SELECT COUNT(*) FROM clusters c WHERE (c.id = $2 OR c.id = $3) AND {}",
            usable_by("$1")
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(tenant_id)
            .bind(a)
            .bind(b)
            .fetch_one(&self.pool)
            .await?;
        Ok(n == if a == b { 1 } else { 2 })
    }

    /// The ids of the clusters a tenant may use, sorted.
    pub async fn usable_cluster_ids(&self, tenant_id: &str) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT c.id FROM clusters c WHERE {} ORDER BY c.id",
            usable_by("$1")
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The always-on peers of `cluster_id` (DESIGN.md §7.2): the other cluster of every tenant
    /// whose preferred cluster differs from its official one, when one of the two is this one.
    pub async fn always_on_peers(&self, cluster_id: &str) -> Result<Vec<PeerCluster>> {
        let rows = sqlx::query(
            "SELECT DISTINCT c.id, c.grpc_addr FROM tenants t JOIN clusters c ON \
             (c.id = t.preferred_cluster_id AND t.official_cluster_id = $1) \
             OR (c.id = t.official_cluster_id AND t.preferred_cluster_id = $1) \
             WHERE t.preferred_cluster_id IS NOT NULL \
             AND t.preferred_cluster_id <> t.official_cluster_id AND c.id <> $1 ORDER BY c.id",
        )
        .bind(cluster_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PeerCluster {
                    cluster_id: r.try_get("id")?,
                    grpc_addr: r.try_get("grpc_addr")?,
                })
            })
            .collect()
    }

    /// Every always-on pair of the platform, each once: the preferred and the official cluster
    /// of some tenant, when they differ.
    pub async fn always_on_pairs(&self) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT preferred_cluster_id, official_cluster_id FROM tenants \
             WHERE preferred_cluster_id IS NOT NULL AND official_cluster_id IS NOT NULL \
             AND preferred_cluster_id <> official_cluster_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The topology counter: raised by the registry's own triggers whenever tenants' official or
    /// preferred clusters, subscriptions or clusters change, whoever changed them.
    pub async fn topology_version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM topology_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("version")?)
    }

    /// Where `cluster_id` is served over gRPC and what to trust there: what its cell published
    /// when it is assigned to one (an address it published itself before is stale), else what
    /// its own Foghorns published; `None` for no such cluster.
    pub async fn peer_endpoint(&self, cluster_id: &str) -> Result<Option<PeerEndpoint>> {
        let row = sqlx::query(
            "SELECT COALESCE(h.grpc_addr, c.grpc_addr) AS grpc_addr, \
             COALESCE(h.tls_ca_pem, c.tls_ca_pem) AS tls_ca_pem \
             FROM clusters c LEFT JOIN clusters h ON h.id = c.cell_id WHERE c.id = $1",
        )
        .bind(cluster_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(PeerEndpoint {
                grpc_addr: r.try_get("grpc_addr")?,
                tls_ca_pem: r.try_get("tls_ca_pem")?,
            })
        })
        .transpose()
    }

    /// Publishes `url` as where this cluster's Foghorn takes HTTP (the address a private
    /// cluster's creation answer names for its cell), unless an operator set one
    /// (`foghorn admin cluster create --http-url`): theirs is kept.
    pub async fn publish_http_url(&self, cluster_id: &str, url: &str) -> Result<()> {
        super::check_text("HTTP URL", url, 300)?;
        sqlx::query("UPDATE clusters SET http_url = $2 WHERE id = $1 AND http_url = ''")
            .bind(cluster_id)
            .bind(url)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Publishes where this cluster's Foghorns take gRPC and the CA that signs their certificate,
    /// together: replicas publishing at once never leave one's address with another's CA.
    pub async fn set_cluster_endpoint(
        &self,
        cluster_id: &str,
        endpoint: &PeerEndpoint,
    ) -> Result<()> {
        super::check_text("gRPC address", &endpoint.grpc_addr, 300)?;
        let ca_pem = endpoint.tls_ca_pem.as_str();
        if ca_pem.len() > MAX_CA_PEM {
            return Err(super::RegistryError::Invalid(format!(
                "a CA bundle must be at most {MAX_CA_PEM} bytes"
            )));
        }
        if !(ca_pem.is_empty() || ca_pem.contains("-----BEGIN CERTIFICATE-----")) {
            return Err(super::RegistryError::Invalid(
                "a CA bundle is PEM certificates".into(),
            ));
        }
        sqlx::query("UPDATE clusters SET grpc_addr = $2, tls_ca_pem = $3 WHERE id = $1")
            .bind(cluster_id)
            .bind(&endpoint.grpc_addr)
            .bind(ca_pem)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The registry as federation's directory. Its errors reach the logs, never a peer.
impl crate::federation::PeerDirectory for Registry {
    fn topology_version(&self) -> BoxFuture<'_, std::result::Result<i64, LinkError>> {
        Box::pin(async move { Registry::topology_version(self).await.map_err(unavailable) })
    }

    fn always_on_peers<'a>(
        &'a self,
        me: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Vec<String>, LinkError>> {
        Box::pin(async move {
            let peers = Registry::always_on_peers(self, me)
                .await
                .map_err(unavailable)?;
            Ok(peers.into_iter().map(|p| p.cluster_id).collect())
        })
    }

    fn share_a_tenant<'a>(
        &'a self,
        a: &'a str,
        b: &'a str,
    ) -> BoxFuture<'a, std::result::Result<bool, LinkError>> {
        Box::pin(async move {
            self.clusters_share_a_tenant(a, b)
                .await
                .map_err(unavailable)
        })
    }

    fn tenant_may_use_both<'a>(
        &'a self,
        tenant: &'a str,
        a: &'a str,
        b: &'a str,
    ) -> BoxFuture<'a, std::result::Result<bool, LinkError>> {
        Box::pin(async move {
            Registry::tenant_may_use_both(self, tenant, a, b)
                .await
                .map_err(unavailable)
        })
    }

    fn stream_owner<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<String>, LinkError>> {
        Box::pin(async move {
            Ok(self
                .stream_by_internal_name(stream)
                .await
                .map_err(unavailable)?
                .map(|s| s.tenant_id))
        })
    }
}

/// A registry failure as federation sees it: logged here with its detail; what may reach a peer
/// says only that the registry is unavailable.
fn unavailable(e: RegistryError) -> LinkError {
    tracing::warn!(error = %e, "registry unavailable for federation");
    LinkError::Unavailable("registry unavailable, retry later".into())
}
