//! `redis.url`: which kind of Redis deployment the replicas share, and where it is.
//!
//! One server keeps the URL redis-rs itself reads (`redis://`, `rediss://`). Sentinel and Cluster
//! name several hosts in one URL, which redis-rs has no syntax for; they are split here into one
//! `redis://` URL per host, so the client parses each as it parses any other (credentials are
//! percent-decoded there, once) and the configuration is refused before start when a part is
//! missing.

use std::fmt;

/// How the replicas reach their Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisUrl {
    /// `redis://` or `rediss://`: one server, the URL as given.
    Server(String),
    /// `redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]`: the current
    /// master of `master`, as the sentinels at `nodes` know it.
    Sentinel { nodes: RedisNodes, master: String },
    /// `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]`: a Redis Cluster, found from
    /// any of `nodes`.
    Cluster { nodes: RedisNodes },
}

/// The hosts of a Sentinel or Cluster URL, and what applies to each of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisNodes {
    /// `rediss+...`: TLS to every node.
    pub tls: bool,
    /// `USER:PASSWORD@` as written (still percent-encoded), or empty.
    userinfo: String,
    /// `HOST:PORT` each, as written.
    pub hosts: Vec<String>,
    /// The database (Sentinel only; a Redis Cluster has database 0 alone).
    pub db: u32,
}

impl RedisNodes {
    /// `host` as a redis-rs URL, with the URL's credentials and database when `auth` (data nodes)
    /// and without (sentinels, which have credentials of their own, if any).
    pub fn url(&self, host: &str, auth: bool) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        if auth {
            format!("{scheme}://{}{host}/{}", self.userinfo, self.db)
        } else {
            format!("{scheme}://{host}/")
        }
    }

    /// Every host as a redis-rs URL (see [`RedisNodes::url`]).
    pub fn urls(&self, auth: bool) -> Vec<String> {
        self.hosts.iter().map(|h| self.url(h, auth)).collect()
    }
}

/// Why a `redis.url` was refused: says what the URL should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrlError(String);

impl fmt::Display for RedisUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedisUrlError {}

const SENTINEL_FORM: &str = "redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME";
const CLUSTER_FORM: &str = "redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]";

impl RedisUrl {
    /// Reads a non-empty `redis.url`.
    pub fn parse(url: &str) -> Result<RedisUrl, RedisUrlError> {
        let fail = |why: String| Err(RedisUrlError(why));
        let Some((scheme, rest)) = url.split_once("://") else {
            return fail(format!(
                "{url:?} must start with redis://, rediss://, redis+sentinel://, \
                 rediss+sentinel://, redis+cluster:// or rediss+cluster://"
            ));
        };
        let (tls, kind) = match scheme {
            "redis" | "rediss" => return Ok(RedisUrl::Server(url.to_string())),
            "redis+sentinel" => (false, Kind::Sentinel),
            "rediss+sentinel" => (true, Kind::Sentinel),
            "redis+cluster" => (false, Kind::Cluster),
            "rediss+cluster" => (true, Kind::Cluster),
            _ => {
                return fail(format!(
                    "{scheme:?} is not a Redis scheme (redis, rediss, redis+sentinel, \
                     rediss+sentinel, redis+cluster, rediss+cluster)"
                ))
            }
        };
        let form = match kind {
            Kind::Sentinel => SENTINEL_FORM,
            Kind::Cluster => CLUSTER_FORM,
        };
        if rest.contains(['?', '#']) {
            return fail(format!("{scheme}:// takes no query or fragment: {form}"));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
            None => (String::new(), authority),
        };
        let hosts = hosts
            .split(',')
            .map(|h| check_host(h).map(str::to_string))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| RedisUrlError(format!("{why}: {form}")))?;
        let mut nodes = RedisNodes {
            tls,
            userinfo,
            hosts,
            db: 0,
        };
        match kind {
            Kind::Cluster if path.is_empty() => Ok(RedisUrl::Cluster { nodes }),
            Kind::Cluster => fail(format!(
                "a Redis Cluster has no database or name to pick (\"/{path}\"): {form}"
            )),
            Kind::Sentinel => {
                let (master, db) = path.split_once('/').unwrap_or((path, ""));
                if master.is_empty() {
                    return fail(format!(
                        "the sentinels need the name of the master they monitor: {form}"
                    ));
                }
                if !db.is_empty() {
                    nodes.db = db.parse().map_err(|_| {
                        RedisUrlError(format!("{db:?} is not a database number: {form}[/DB]"))
                    })?;
                }
                Ok(RedisUrl::Sentinel {
                    nodes,
                    master: master.to_string(),
                })
            }
        }
    }
}

enum Kind {
    Sentinel,
    Cluster,
}

/// `HOST:PORT`, with the port spelled out (neither a sentinel's nor a cluster node's port is
/// Redis's default one, in general).
fn check_host(host: &str) -> Result<&str, String> {
    if host.is_empty() {
        return Err("a host is missing".into());
    }
    let parsed = url::Url::parse(&format!("redis://{host}/"))
        .map_err(|e| format!("{host:?} is not HOST:PORT ({e})"))?;
    let whole = parsed.host().is_some()
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.path() == "/"
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if !whole {
        return Err(format!("{host:?} is not HOST:PORT"));
    }
    // `url` leaves the default port out; `redis` has none, so any written port is kept.
    if parsed.port().is_none() {
        return Err(format!("{host:?} needs a port"));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node_set(tls: bool, userinfo: &str, hosts: &[&str], db: u32) -> RedisNodes {
        RedisNodes {
            tls,
            userinfo: userinfo.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            db,
        }
    }

    #[test]
    fn each_kind_is_read() {
        assert_eq!(
            RedisUrl::parse("redis://h:6379/2"),
            Ok(RedisUrl::Server("redis://h:6379/2".into()))
        );
        assert_eq!(
            RedisUrl::parse("redis+sentinel://a:26379,10.0.0.2:26380,[::1]:26381/mymaster"),
            Ok(RedisUrl::Sentinel {
                nodes: node_set(false, "", &["a:26379", "10.0.0.2:26380", "[::1]:26381"], 0),
                master: "mymaster".into()
            })
        );
        let sentinel = RedisUrl::parse("rediss+sentinel://:p%40ss@a:1/m/3").expect("valid");
        let RedisUrl::Sentinel { nodes, master } = sentinel else {
            panic!("{sentinel:?}")
        };
        assert_eq!(master, "m");
        assert_eq!(nodes.url("a:1", true), "rediss://:p%40ss@a:1/3");
        assert_eq!(nodes.url("a:1", false), "rediss://a:1/");
        assert_eq!(
            RedisUrl::parse("redis+cluster://u:p@a:7000,b:7001"),
            Ok(RedisUrl::Cluster {
                nodes: node_set(false, "u:p@", &["a:7000", "b:7001"], 0)
            })
        );
        assert_eq!(
            RedisUrl::parse("rediss+cluster://a:7000/"),
            Ok(RedisUrl::Cluster {
                nodes: node_set(true, "", &["a:7000"], 0)
            })
        );
    }

    #[test]
    fn what_is_missing_is_said() {
        for (url, says) in [
            ("redis+sentinel://a:26379", "name of the master"),
            ("redis+sentinel://a:26379/", "name of the master"),
            ("redis+sentinel://a:26379/m/x", "not a database number"),
            ("redis+sentinel://a/m", "needs a port"),
            ("redis+sentinel://a:1,,b:2/m", "a host is missing"),
            ("redis+sentinel:///m", "a host is missing"),
            ("redis+cluster://a:1,b", "needs a port"),
            ("redis+cluster://a:1/0", "no database"),
            ("redis+cluster://a:1?x=1", "no query"),
            ("redis+cluster://a:99999", "not HOST:PORT"),
            ("redis+cluster://a b:1", "not HOST:PORT"),
            ("redis+sentinels://a:1/m", "not a Redis scheme"),
            ("h:6379", "must start with"),
        ] {
            let e = RedisUrl::parse(url).expect_err(url).to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text is read or refused without panicking; written URLs read back to their parts.
        #[test]
        fn urls_read_back(
            text in "\\PC{0,40}",
            cluster in any::<bool>(),
            tls in any::<bool>(),
            hosts in proptest::collection::vec(("[a-z][a-z0-9.-]{0,12}", 1u16..), 1..4),
            master in "[A-Za-z0-9_.-]{1,12}",
            db in 0u32..16,
        ) {
            let _ = RedisUrl::parse(&text);
            let _ = RedisUrl::parse(&format!("redis+sentinel://{text}"));
            let _ = RedisUrl::parse(&format!("redis+cluster://{text}"));
            let hosts: Vec<String> = hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect();
            let scheme = match (tls, cluster) {
                (false, false) => "redis+sentinel",
                (true, false) => "rediss+sentinel",
                (false, true) => "redis+cluster",
                (true, true) => "rediss+cluster",
            };
            let path = if cluster { String::new() } else { format!("/{master}/{db}") };
            let url = format!("{scheme}://{}{path}", hosts.join(","));
            let expected = RedisNodes {
                tls,
                userinfo: String::new(),
                hosts,
                db: if cluster { 0 } else { db },
            };
            let parsed = RedisUrl::parse(&url);
            if cluster {
                prop_assert_eq!(parsed, Ok(RedisUrl::Cluster { nodes: expected }));
            } else {
                prop_assert_eq!(parsed, Ok(RedisUrl::Sentinel { nodes: expected, master }));
            }
        }
    }
}
