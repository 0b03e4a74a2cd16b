//! ACME state shared by the replicas of a cell and kept across restarts (issue 21): accounts,
//! certificates (keys sealed by the caller) and the DNS-01 challenge values being validated.

use sqlx::Row as _;

use super::{now_ms, Registry, Result};

/// A cluster's certificate as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCertificate {
    pub cluster_id: String,
    pub cert_chain_pem: String,
    /// The private key, sealed by the ACME client with a key from the cell's secret.
    pub key_sealed: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix milliseconds; tells one issuance from the next.
    pub issued_at: i64,
}

impl Registry {
    /// The (sealed) account credentials for ACME directory `directory`, if one was made.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query("SELECT credentials FROM acme_accounts WHERE directory = $1")
                .bind(directory)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("credentials"))
                .transpose()?,
        )
    }

    /// Keeps the account made for `directory`; the first one kept wins (two leaders racing at a
    /// failover), and it is returned.
    pub async fn keep_acme_account(&self, directory: &str, credentials: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO acme_accounts (directory, credentials, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (directory) DO NOTHING",
        )
        .bind(directory)
        .bind(credentials)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(self
            .acme_account(directory)
            .await?
            .unwrap_or_else(|| credentials.to_string()))
    }

    /// Replaces the account kept for `directory` (the CA no longer knows the one kept).
    pub async fn replace_acme_account(&self, directory: &str, credentials: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO acme_accounts (directory, credentials, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (directory) DO UPDATE SET credentials = excluded.credentials, \
             created_at = excluded.created_at",
        )
        .bind(directory)
        .bind(credentials)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every stored certificate's version: `(cluster id, issued_at, not_after)`.
    pub async fn acme_certificate_versions(&self) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query("SELECT cluster_id, issued_at, not_after FROM acme_certificates")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("cluster_id")?,
                    r.try_get("issued_at")?,
                    r.try_get("not_after")?,
                ))
            })
            .collect()
    }

    /// The stored certificate of `cluster_id`.
    pub async fn acme_certificate(&self, cluster_id: &str) -> Result<Option<StoredCertificate>> {
        let row = sqlx::query(
            "SELECT cluster_id, cert_chain_pem, key_sealed, not_after, issued_at \
             FROM acme_certificates WHERE cluster_id = $1",
        )
        .bind(cluster_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StoredCertificate {
                cluster_id: r.try_get("cluster_id")?,
                cert_chain_pem: r.try_get("cert_chain_pem")?,
                key_sealed: r.try_get("key_sealed")?,
                not_after: r.try_get("not_after")?,
                issued_at: r.try_get("issued_at")?,
            })
        })
        .transpose()
    }

    /// Stores (or replaces) a cluster's certificate.
    pub async fn store_acme_certificate(&self, cert: &StoredCertificate) -> Result<()> {
        sqlx::query(
            "INSERT INTO acme_certificates (cluster_id, cert_chain_pem, key_sealed, not_after, \
             issued_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (cluster_id) DO UPDATE SET \
             cert_chain_pem = excluded.cert_chain_pem, key_sealed = excluded.key_sealed, \
             not_after = excluded.not_after, issued_at = excluded.issued_at",
        )
        .bind(&cert.cluster_id)
        .bind(&cert.cert_chain_pem)
        .bind(&cert.key_sealed)
        .bind(cert.not_after)
        .bind(cert.issued_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Publishes `values` as the `_acme-challenge` TXT of `cluster_id` until `expires_at` (Unix
    /// ms), replacing what it had; an empty list removes them.
    pub async fn set_acme_challenges(
        &self,
        cluster_id: &str,
        values: &[String],
        expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM acme_challenges WHERE cluster_id = $1")
            .bind(cluster_id)
            .execute(&mut *tx)
            .await?;
        for value in values {
            sqlx::query(
                "INSERT INTO acme_challenges (cluster_id, value, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (cluster_id, value) DO NOTHING",
            )
            .bind(cluster_id)
            .bind(value)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every challenge value not expired, as `(cluster id, value)`, by cluster.
    pub async fn acme_challenges(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT cluster_id, value FROM acme_challenges WHERE expires_at > $1 \
             ORDER BY cluster_id, value",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("cluster_id")?, r.try_get("value")?)))
            .collect()
    }
}
