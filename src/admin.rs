//! `foghorn admin ...`: create clusters, tenants, tokens and streams without writing SQL.
//!
//! Acts on the registry named by the same configuration as the server (file, env, flags), and
//! migrates it first, so it works before the server has ever started.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::config::Config;
use crate::registry::{ClusterChanges, NewCluster, NewEnrollmentToken, Registry, Role};

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Clusters.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Enrollment tokens for self-hosted edges.
    EnrollmentToken {
        #[command(subcommand)]
        command: EnrollmentTokenCommand,
    },
    /// Streams.
    Stream {
        #[command(subcommand)]
        command: StreamCommand,
    },
}

// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Create a cluster.
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        region: String,
        /// shared-community | shared-lb | dedicated
        #[arg(long, default_value = "shared-community")]
        tier: String,
        /// FREE_UNMETERED | TIER_INHERIT | METERED | MONTHLY
        #[arg(long, default_value = "FREE_UNMETERED")]
        pricing: String,
        /// public | unlisted | private
        #[arg(long, default_value = "public")]
        visibility: String,
        /// Foghorn gRPC address of the cluster, e.g. foghorn.eu.example.com:18019
        #[arg(long, default_value = "")]
        grpc_addr: String,
        /// Foghorn HTTP base URL of the cluster
        #[arg(long, default_value = "")]
        http_url: String,
        /// Subscriptions wait for the owner's (or an operator's) approval.
        #[arg(long)]
        requires_approval: bool,
        /// Tenant that owns the cluster (none: a platform cluster).
        #[arg(long)]
        owner: Option<String>,
        /// Billing tiers this cluster is the official cluster of, e.g. free,pro
        #[arg(long, value_delimiter = ',')]
        official_for: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Change a cluster: description, pricing, location, capacity, visibility, approval, official
    /// tiers. What is not given stays as it is.
    Update {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Where the cluster is, as LAT,LON (e.g. 48.85,2.35 or -33.87,151.21)
        #[arg(long, value_parser = crate::sim::parse_lat_lon, allow_hyphen_values = true)]
        location: Option<(f64, f64)>,
        /// Forget the cluster's location.
        #[arg(long, conflicts_with = "location")]
        no_location: bool,
        /// FREE_UNMETERED | TIER_INHERIT | METERED | MONTHLY
        #[arg(long)]
        pricing: Option<String>,
        /// Price in cents: per GB for METERED, per month for MONTHLY.
        #[arg(long)]
        price_cents: Option<i64>,
        /// Capacity hint: most edges the cluster takes.
        #[arg(long)]
        max_edges: Option<i64>,
        /// Forget the edge capacity hint.
        #[arg(long, conflicts_with = "max_edges")]
        no_max_edges: bool,
        /// Capacity hint: bandwidth the cluster can serve, bytes per second (1250000000 = 10 Gbit/s).
        #[arg(long)]
        max_bandwidth: Option<i64>,
        /// Forget the bandwidth capacity hint.
        #[arg(long, conflicts_with = "max_bandwidth")]
        no_max_bandwidth: bool,
        /// public | unlisted | private
        #[arg(long)]
        visibility: Option<String>,
        /// Whether subscriptions wait for approval: true | false
        #[arg(long)]
        requires_approval: Option<bool>,
        /// Billing tiers this cluster is the official cluster of, e.g. free,pro (replaces the
        /// list; "" for none). Tenants move when their tier changes.
        #[arg(long)]
        official_for: Option<String>,
    },
    /// Create a tenant's private cluster, as the tenant API does: assigned to a live Foghorn
    /// cell (the one given, else one in the region given, else one in the region of the
    /// tenant's preferred cluster), with the tenant's owner subscription and a first enrollment
    /// token (shown once).
    CreatePrivate {
        /// The tenant that owns it.
        #[arg(long)]
        tenant: String,
        /// Display name; the cluster id is derived from it.
        #[arg(long)]
        name: String,
        #[arg(long)]
        region: Option<String>,
        /// The cell to serve it (a cell is named by its home cluster's id).
        #[arg(long)]
        cell: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Assign a cluster to the Foghorn cell that serves it (a cell is named by its home
    /// cluster's id), or give it back a Foghorn of its own.
    Assign {
        #[arg(long)]
        id: String,
        /// The cell to serve it.
        #[arg(long, required_unless_present = "own_foghorn")]
        cell: Option<String>,
        /// The cluster has a Foghorn of its own (its own cell).
        #[arg(long, conflicts_with = "cell")]
        own_foghorn: bool,
    },
    /// List clusters.
    List,
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant; prints its id.
    Create {
        #[arg(long)]
        name: String,
        /// Official cluster; by default the cluster official for --tier (refused when there is
        /// none, as the API refuses such a tier).
        #[arg(long)]
        official_cluster: Option<String>,
        /// Billing tier (used to find the official cluster when --official-cluster is not given).
        #[arg(long, default_value = "free")]
        tier: String,
    },
    /// Change a tenant's billing tier; its official cluster follows.
    SetTier {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        tier: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token; prints it once.
    Create {
        #[arg(long)]
        tenant: String,
        /// tenant | operator | admin
        #[arg(long, default_value = "tenant")]
        role: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum EnrollmentTokenCommand {
    /// Create an enrollment token; prints it once.
    Create {
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 1)]
        usage_limit: i64,
        /// Lifetime, e.g. 30d, 12h
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Only edges connecting from this network may use it, e.g. 203.0.113.0/24
        #[arg(long)]
        expected_cidr: Option<ipnet::IpNet>,
    },
}

#[derive(Subcommand, Debug)]
pub enum StreamCommand {
    /// Create a stream; prints its stream key once and its playback id.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
    },
}

/// Runs one admin command and prints its result (JSON with `json`). The registry is the one the
/// server with this configuration uses, and its name goes to stderr first: run from another
/// directory, `./data` is another registry. An SQLite registry that does not exist yet is only
/// created with `create` (`--create-registry`), together with this Foghorn's own cluster, as the
/// server would on its first start.
pub async fn run(
    config: &Config,
    command: AdminCommand,
    json: bool,
    create: bool,
) -> anyhow::Result<()> {
    let url = config.database_url();
    let missing = crate::registry::sqlite_file(&url)
        .map(|file| std::path::absolute(&file).unwrap_or(file))
        .filter(|file| !file.exists());
    let shown = match &missing {
        Some(file) => format!("sqlite://{}", file.display()),
        None => match crate::registry::sqlite_file(&url) {
            Some(file) => format!(
                "sqlite://{}",
                std::path::absolute(&file).unwrap_or(file).display()
            ),
            None => crate::logging::redact(&url),
        },
    };
    if let (Some(file), false) = (&missing, create) {
        anyhow::bail!(
            "no registry at {} (server.data_dir {}): run `foghorn admin` with the server's \
             configuration (its directory, --data-dir, --database-url or FOGHORN_DATABASE_URL), \
             or add --create-registry to make a new one there",
            file.display(),
            config.server.data_dir.display()
        );
    }
    eprintln!(
        "registry: {shown}{}",
        if missing.is_some() { " (created)" } else { "" }
    );
    let registry = Registry::open(&url, 2, config.database.connect_timeout)
        .await
        .context("opening the registry")?;
    if missing.is_some() {
        registry
            .register_own_cluster(config)
            .await
            .context("registering this cluster in the new registry")?;
    }
    let out = execute(
        &registry,
        &config.cluster.id,
        &config.cluster.root_domain,
        command,
    )
    .await;
    registry.close().await;
    let (value, human) = out?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}", human.out);
        if let Some(note) = human.note {
            eprintln!("{note}");
        }
    }
    Ok(())
}

/// A nullable field of `cluster update`: `--no-…` clears it, a value sets it, neither leaves it.
fn nullable<T>(value: Option<T>, clear: bool) -> Option<Option<T>> {
    if clear {
        Some(None)
    } else {
        value.map(Some)
    }
}

/// `-` for an empty value.
fn or_dash(value: &str) -> &str {
    if value.is_empty() {
        "-"
    } else {
        value
    }
}

/// One line per cluster fact an operator sets with `cluster update`.
fn describe_cluster(c: &crate::registry::Cluster) -> String {
    let or_none = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    format!(
        "cluster {} ({})\n  pricing       {} {} cents\n  location      {}\n  capacity      {} edges, {} bytes/s\n  visibility    {}{}\n  official for  {}",
        c.id,
        c.name,
        c.pricing_model,
        c.price_cents,
        c.latitude
            .zip(c.longitude)
            .map_or_else(|| "-".to_string(), |(lat, lon)| format!("{lat},{lon}")),
        or_none(c.max_edges),
        or_none(c.max_bandwidth),
        c.visibility,
        if c.requires_approval {
            ", approval required"
        } else {
            ""
        },
        if c.official_for_tiers.is_empty() {
            "-".to_string()
        } else {
            c.official_for_tiers.join(",")
        },
    )
}

/// What a command prints without `--json`: its answer on stdout, and a reminder (a secret is
/// shown once) on stderr, so `TOKEN=$(foghorn admin token create ...)` holds the secret alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Human {
    pub out: String,
    pub note: Option<String>,
}

impl From<String> for Human {
    fn from(out: String) -> Self {
        Human { out, note: None }
    }
}

/// Executes a command; returns the JSON result and its human rendering. `local_cluster` is the
/// cluster of the configured Foghorn, `root_domain` its root domain.
pub async fn execute(
    registry: &Registry,
    local_cluster: &str,
    root_domain: &str,
    command: AdminCommand,
) -> anyhow::Result<(Value, Human)> {
    Ok(match command {
        AdminCommand::Cluster {
            command:
                ClusterCommand::Create {
                    id,
                    name,
                    region,
                    tier,
                    pricing,
                    visibility,
                    grpc_addr,
                    http_url,
                    requires_approval,
                    owner,
                    official_for,
                    description,
                },
        } => {
            let new = NewCluster {
                region,
                requires_approval,
                owner_tenant_id: owner,
                official_for_tiers: official_for,
                description,
                tier: tier.parse().context("--tier")?,
                pricing_model: pricing.parse().context("--pricing")?,
                visibility: visibility.parse().context("--visibility")?,
                grpc_addr,
                http_url,
                ..NewCluster::platform(id, name)
            };
            let cluster = registry.create_cluster(&new).await?;
            let human = format!("created cluster {} ({})", cluster.id, cluster.name);
            (serde_json::to_value(cluster)?, human.into())
        }
        AdminCommand::Cluster {
            command:
                ClusterCommand::Update {
                    id,
                    name,
                    region,
                    description,
                    location,
                    no_location,
                    pricing,
                    price_cents,
                    max_edges,
                    no_max_edges,
                    max_bandwidth,
                    no_max_bandwidth,
                    visibility,
                    requires_approval,
                    official_for,
                },
        } => {
            let changes = ClusterChanges {
                name,
                region,
                description,
                location: nullable(location, no_location),
                pricing_model: pricing
                    .map(|p| p.parse())
                    .transpose()
                    .context("--pricing")?,
                price_cents,
                max_edges: nullable(max_edges, no_max_edges),
                max_bandwidth: nullable(max_bandwidth, no_max_bandwidth),
                visibility: visibility
                    .map(|v| v.parse())
                    .transpose()
                    .context("--visibility")?,
                requires_approval,
                official_for_tiers: official_for.map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect()
                }),
            };
            anyhow::ensure!(
                !changes.is_empty(),
                "nothing to change: give at least one of the flags of `foghorn admin cluster update --help`"
            );
            let cluster = registry.update_cluster(&id, &changes).await?;
            let human = describe_cluster(&cluster);
            (serde_json::to_value(cluster)?, human.into())
        }
        AdminCommand::Cluster {
            command:
                ClusterCommand::CreatePrivate {
                    tenant,
                    name,
                    region,
                    cell,
                    description,
                },
        } => {
            let input = crate::api::CreatePrivateCluster {
                name,
                region,
                description,
                cell,
            };
            let created =
                crate::api::create_private_cluster_for(registry, root_domain, &tenant, input, None)
                    .await?;
            let (cluster, at, token) = (
                &created.cluster,
                &created.foghorn,
                &created.enrollment_token,
            );
            let human = Human {
                out: format!(
                    "private cluster {} ({}), served by cell {}\n  edges dial    {}\n  viewers       {}\n  enrollment    {}\n  provision     {}",
                    cluster.id,
                    cluster.name,
                    at.cell,
                    or_dash(&at.grpc_addr),
                    at.viewer_url,
                    token.token,
                    token.provision_command,
                ),
                note: Some("(the enrollment token is shown once)".into()),
            };
            (serde_json::to_value(&created)?, human)
        }
        AdminCommand::Cluster {
            command: ClusterCommand::Assign { id, cell, .. },
        } => {
            registry.assign_cell(&id, cell.as_deref()).await?;
            let cell = registry.serving_cell(&id).await?.unwrap_or_default();
            let human = if cell == id {
                format!("cluster {id} has a Foghorn of its own")
            } else {
                format!("cluster {id} is served by cell {cell}")
            };
            (json!({ "cluster_id": id, "cell": cell }), human.into())
        }
        AdminCommand::Cluster {
            command: ClusterCommand::List,
        } => {
            let clusters = registry.clusters().await?;
            let human = clusters
                .iter()
                .map(|c| format!("{}\t{}\t{}\t{}", c.id, c.tier, c.visibility, c.name))
                .collect::<Vec<_>>()
                .join("\n");
            (serde_json::to_value(clusters)?, human.into())
        }
        AdminCommand::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    official_cluster,
                    tier,
                },
        } => {
            let tenant = match official_cluster {
                Some(cluster) => registry.create_tenant_on(&name, &tier, &cluster).await?,
                // The rule of `PUT /tenants/{id}/billing-tier`: a tier without an official
                // cluster is refused, not served by whichever cluster is at hand.
                None => {
                    let official = registry
                        .official_cluster_for_tier(&tier)
                        .await?
                        .with_context(|| {
                            format!(
                                "no cluster is official for billing tier {tier:?}: name one with \
                                 --official-cluster (e.g. --official-cluster {local_cluster}), or \
                                 mark one with `foghorn admin cluster update --id \
                                 {local_cluster} --official-for {tier}`"
                            )
                        })?;
                    registry.create_tenant_on(&name, &tier, &official).await?
                }
            };
            let human = tenant.id.clone();
            (serde_json::to_value(tenant)?, human.into())
        }
        AdminCommand::Tenant {
            command: TenantCommand::SetTier { tenant, tier },
        } => {
            let tenant = registry.set_billing_tier(&tenant, &tier).await?;
            let human = format!(
                "tenant {} is on tier {}; official cluster {}",
                tenant.id, tenant.billing_tier, tenant.official_cluster_id
            );
            (serde_json::to_value(tenant)?, human.into())
        }
        AdminCommand::Token {
            command: TokenCommand::Create { tenant, role },
        } => {
            let role: Role = role.parse().context("--role")?;
            let (token, plain) = registry.create_api_token(&tenant, role).await?;
            let mut value = serde_json::to_value(&token)?;
            value["token"] = json!(plain);
            let human = Human {
                out: plain,
                note: Some(format!("(shown once: store it now; role {role})")),
            };
            (value, human)
        }
        AdminCommand::EnrollmentToken {
            command:
                EnrollmentTokenCommand::Create {
                    cluster,
                    tenant,
                    usage_limit,
                    ttl,
                    expected_cidr,
                },
        } => {
            let ttl_ms = i64::try_from(ttl.as_millis()).context("--ttl is too long")?;
            let new = NewEnrollmentToken {
                cluster_id: cluster,
                tenant_id: tenant,
                usage_limit,
                expires_at: crate::registry::now_ms().saturating_add(ttl_ms),
                expected_cidr,
            };
            let (token, plain) = registry.create_enrollment_token(&new).await?;
            let mut value = serde_json::to_value(&token)?;
            value["token"] = json!(plain);
            let human = Human {
                out: plain,
                note: Some(format!(
                    "(shown once; {} use(s), expires in {})",
                    token.usage_limit,
                    humantime::format_duration(ttl)
                )),
            };
            (value, human)
        }
        AdminCommand::Stream {
            command: StreamCommand::Create { tenant, name },
        } => {
            let (stream, key) = registry.create_stream(&tenant, &name).await?;
            let mut value = serde_json::to_value(&stream)?;
            value["stream_key"] = json!(key);
            let human = format!(
                "stream key:   {key}   (shown once)\nplayback id:  {}\ninternal name: {}",
                stream.playback_id, stream.internal_name
            );
            (value, human.into())
        }
    })
}
