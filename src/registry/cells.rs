//! Cells: a Foghorn deployment (one or more replicas sharing one Redis) is named by its home
//! cluster and serves that cluster plus every cluster assigned to it here (`clusters.cell_id`).
//! The leading replica of each cell writes the cell's row every `cluster.report_interval`: whether
//! it takes tenants' private clusters and how many edges it holds. A cell not heard from for
//! [`CELL_TTL_MS`] is not live and gets no new cluster.

use super::{now_ms, Cluster, Registry, RegistryError, Result, Tier};
use crate::routing::Position;

/// A cell is live while its last report is at most this old.
pub const CELL_TTL_MS: i64 = 30_000;

/// A live cell, with its home cluster (region, position, addresses).
#[derive(Debug, Clone)]
pub struct Cell {
    pub home: Cluster,
    /// Whether it takes tenants' private clusters (not a dedicated cluster's own Foghorn).
    pub hosts_private: bool,
    /// Edges connected to it, over every cluster it serves.
    pub edges: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

impl Cell {
    pub fn id(&self) -> &str {
        &self.home.id
    }

    fn position(&self) -> Option<Position> {
        Position::from_degrees(self.home.latitude?, self.home.longitude?)
    }
}

/// What a cell reports of itself.
#[derive(Debug, Clone, Copy)]
pub struct CellReport<'a> {
    /// Its home cluster.
    pub id: &'a str,
    pub edges: i64,
    pub started_at: i64,
}

/// Where a new private cluster should be served, most binding first.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// This cell, or none.
    pub cell: Option<String>,
    /// Cells whose home cluster is in this region come first.
    pub region: Option<String>,
    /// Then the cells nearest this point (the caller's address, from GeoIP).
    pub near: Option<Position>,
    /// Then cells in this region (the tenant's preferred cluster's).
    pub fallback_region: Option<String>,
}

/// The cell `placement` picks among `cells` (the live ones): an explicit cell if it is among
/// them and takes private clusters; else, among those that do, the first by: in the asked
/// region, nearest to the caller, in the fallback region, fewest edges, oldest, id.
pub fn choose_cell<'a>(cells: &'a [Cell], placement: &Placement) -> Option<&'a Cell> {
    let hosting = cells.iter().filter(|c| c.hosts_private);
    if let Some(wanted) = &placement.cell {
        return hosting.into_iter().find(|c| c.id() == wanted);
    }
    let in_region = |c: &Cell, region: &Option<String>| {
        region
            .as_deref()
            .is_some_and(|r| !r.is_empty() && c.home.region.eq_ignore_ascii_case(r))
    };
    // Nearer is a larger cosine of the angle; cells without a position come after any with one.
    let nearness = |c: &Cell| match (placement.near, c.position()) {
        (Some(near), Some(at)) => near.cos_angle(&at),
        _ => -2.0,
    };
    hosting.min_by(|a, b| {
        in_region(b, &placement.region)
            .cmp(&in_region(a, &placement.region))
            .then_with(|| nearness(b).total_cmp(&nearness(a)))
            .then_with(|| {
                in_region(b, &placement.fallback_region)
                    .cmp(&in_region(a, &placement.fallback_region))
            })
            .then_with(|| a.edges.cmp(&b.edges))
            .then_with(|| a.started_at.cmp(&b.started_at))
            .then_with(|| a.id().cmp(b.id()))
    })
}

impl Registry {
    /// Writes a cell's report: it is live for [`CELL_TTL_MS`] from now, and takes private
    /// clusters unless its home cluster is `dedicated` (read in the same statement, so a tier
    /// changed by an operator applies at the next report).
    pub async fn report_cell(&self, report: &CellReport<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO cells (id, hosts_private, edges, started_at, heartbeat_at) \
             SELECT id, CASE WHEN tier = $2 THEN 0 ELSE 1 END, $3, $4, $5 \
             FROM clusters WHERE id = $1 \
             ON CONFLICT (id) DO UPDATE SET hosts_private = excluded.hosts_private, \
             edges = excluded.edges, started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at",
        )
        .bind(report.id)
        .bind(Tier::Dedicated.as_str())
        .bind(report.edges)
        .bind(report.started_at)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The cells heard from within [`CELL_TTL_MS`], by id.
    pub async fn live_cells(&self) -> Result<Vec<Cell>> {
        let sql = format!(
            "SELECT {}, cells.hosts_private AS cell_hosts_private, cells.edges AS cell_edges, \
             cells.started_at AS cell_started_at, cells.heartbeat_at AS cell_heartbeat_at \
             FROM cells JOIN clusters c ON c.id = cells.id \
             WHERE cells.heartbeat_at >= $1 ORDER BY c.id",
            super::marketplace::cluster_columns_of_c()
        );
        let rows = sqlx::query(&sql)
            .bind(now_ms() - CELL_TTL_MS)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                use sqlx::Row;
                Ok(Cell {
                    home: sqlx::FromRow::from_row(row)?,
                    hosts_private: row.try_get::<i64, _>("cell_hosts_private")? != 0,
                    edges: row.try_get("cell_edges")?,
                    started_at: row.try_get("cell_started_at")?,
                    heartbeat_at: row.try_get("cell_heartbeat_at")?,
                })
            })
            .collect()
    }

    /// The clusters assigned to cell `id` (its home cluster not included), by id.
    pub async fn cell_clusters(&self, id: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM clusters WHERE cell_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Assigns `cluster` to cell `cell` (the cell's home cluster id), or with `None` gives it back
    /// to a Foghorn of its own. A cell is a cluster served by nobody else, and a cluster that
    /// serves others as a cell stays one.
    pub async fn assign_cell(&self, cluster: &str, cell: Option<&str>) -> Result<()> {
        let cell_of = |id: &str| {
            let id = id.to_string();
            async move {
                sqlx::query_as::<_, (Option<String>,)>("SELECT cell_id FROM clusters WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
            }
        };
        if cell_of(cluster).await?.is_none() {
            return Err(RegistryError::NotFound("cluster"));
        }
        if let Some(cell) = cell {
            match cell_of(cell).await? {
                None => return Err(RegistryError::NotFound("cell")),
                Some((Some(other),)) => {
                    return Err(RegistryError::Invalid(format!(
                        "{cell:?} is served by cell {other:?}; assign the cluster to {other:?}"
                    )))
                }
                Some((None,)) if cell == cluster => {
                    return Err(RegistryError::Invalid(format!(
                        "a cluster is its own cell without one: leave out the cell of {cluster:?}"
                    )))
                }
                Some((None,)) => {}
            }
            let served = self.cell_clusters(cluster).await?;
            if !served.is_empty() {
                return Err(RegistryError::Conflict(format!(
                    "{cluster:?} serves {} cluster(s) as a cell; move them first",
                    served.len()
                )));
            }
        }
        sqlx::query("UPDATE clusters SET cell_id = $1 WHERE id = $2")
            .bind(cell)
            .bind(cluster)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The cell serving `cluster`: the cell it is assigned to, else the cluster itself (a home
    /// cluster); `None` for an unknown cluster.
    pub async fn serving_cell(&self, cluster: &str) -> Result<Option<String>> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT id, cell_id FROM clusters WHERE id = $1")
                .bind(cluster)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, cell)| cell.unwrap_or(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::NewCluster;

    fn cell(id: &str, region: &str, at: Option<(f64, f64)>, edges: i64, started_at: i64) -> Cell {
        let mut home = NewCluster::platform(id, id).to_cluster(0);
        home.region = region.into();
        home.latitude = at.map(|p| p.0);
        home.longitude = at.map(|p| p.1);
        Cell {
            home,
            hosts_private: true,
            edges,
            started_at,
            heartbeat_at: 0,
        }
    }

    fn chosen(cells: &[Cell], placement: &Placement) -> Option<String> {
        choose_cell(cells, placement).map(|c| c.id().to_string())
    }

    #[test]
    fn cells_are_chosen_by_region_then_distance_then_load_then_age() {
        let paris = Position::from_degrees(48.85, 2.35);
        let cells = vec![
            cell("eu-1", "eu-west", Some((50.11, 8.68)), 10, 5),
            cell("us-1", "us-east", Some((40.71, -74.0)), 0, 1),
            cell("eu-2", "eu-west", Some((51.5, -0.12)), 10, 3),
            cell("ap-1", "ap-south", None, 0, 0),
        ];
        // No hint at all: fewest edges, then the oldest.
        assert_eq!(chosen(&cells, &Placement::default()), Some("ap-1".into()));
        // Near Paris: London is nearer than Frankfurt.
        let near = Placement {
            near: paris,
            ..Placement::default()
        };
        assert_eq!(chosen(&cells, &near), Some("eu-2".into()));
        // An asked region beats distance.
        let region = Placement {
            region: Some("US-EAST".into()),
            near: paris,
            ..Placement::default()
        };
        assert_eq!(chosen(&cells, &region), Some("us-1".into()));
        // Without a position, the preferred cluster's region, then load and age.
        let fallback = Placement {
            fallback_region: Some("eu-west".into()),
            ..Placement::default()
        };
        assert_eq!(chosen(&cells, &fallback), Some("eu-2".into()));
        // An explicit cell, only when live and hosting.
        let explicit = |id: &str| Placement {
            cell: Some(id.into()),
            ..Placement::default()
        };
        assert_eq!(chosen(&cells, &explicit("eu-1")), Some("eu-1".into()));
        assert_eq!(chosen(&cells, &explicit("gone")), None);
        let mut dedicated = cells.clone();
        dedicated
            .iter_mut()
            .for_each(|c| c.hosts_private = c.id() != "eu-1");
        assert_eq!(chosen(&dedicated, &explicit("eu-1")), None);
        dedicated.iter_mut().for_each(|c| c.hosts_private = false);
        assert_eq!(chosen(&dedicated, &Placement::default()), None);
    }
}
