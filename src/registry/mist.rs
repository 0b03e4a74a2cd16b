//! MistServer instances added through the balancer's `?addserver=`, per cluster, by the name given
//! there (the `mist_servers` module polls them).

use super::{now_ms, Registry, Result};

impl Registry {
    /// The names of the servers added to cluster `cluster_id`, oldest first.
    pub async fn mist_servers(&self, cluster_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM mist_servers WHERE cluster_id = $1 ORDER BY added_at, name",
        )
        .bind(cluster_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Adds server `name` to cluster `cluster_id`; false when it was already there.
    pub async fn add_mist_server(&self, cluster_id: &str, name: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO mist_servers (cluster_id, name, added_at) VALUES ($1, $2, $3) \
             ON CONFLICT (cluster_id, name) DO NOTHING",
        )
        .bind(cluster_id)
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes server `name` from cluster `cluster_id`; false when it was not there.
    pub async fn remove_mist_server(&self, cluster_id: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM mist_servers WHERE cluster_id = $1 AND name = $2")
            .bind(cluster_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
