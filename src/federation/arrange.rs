//! On-demand peering (DESIGN.md §7.2, tier 2), both sides: on the viewer path, the arrangement of
//! an origin pull of a stream live on a peer into one of this cluster's edges; and the answers
//! this cluster gives peers arranging the same (`QueryStream`, `NotifyOriginPull`).

use std::time::Duration;

use tokio::time::Instant;

use super::hub::Hub;
use super::ports::{
    LinkError, PullAnswer, PullNotice, QueryAnswer, RemotePull, StreamCandidate, StreamQuery,
};
use super::{is_peer_dtsc_url, is_valid_stream_name, peer_base_url, Origin};
use crate::routing::{dtsc_url, Ask, Candidate, Position};

/// Candidates a QueryStream answers.
const QUERY_CANDIDATES: usize = 5;
/// How long a refused or failed arrangement stands before a viewer tries again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a pull arranged into a peer's cluster is taken as standing without asking again: by
/// then the peer's summaries show its edges carrying the stream.
const REMOTE_PULL_TTL: Duration = Duration::from_secs(30);

/// What the viewer path should do for a stream live on another cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrangement {
    /// Route as usual: a local edge pulls the stream (arranged now or earlier), or the stream is
    /// not live anywhere else.
    Local,
    /// The peer refused the pull (or this cluster has no edge for it): send the viewer to this
    /// edge of the peer.
    Remote { base_url: String },
}

impl Hub {
    /// What is already settled for `stream`: pulled here, or refused/failed a moment ago.
    fn settled(&self, stream: &str) -> Option<Arrangement> {
        if self.peers.has_origin(stream) {
            return Some(Arrangement::Local);
        }
        let unarranged = self.unarranged.lock();
        let (at, url) = unarranged.get(stream)?;
        (at.elapsed() < RETRY_AFTER).then(|| match url {
            Some(base_url) => Arrangement::Remote {
                base_url: base_url.clone(),
            },
            None => Arrangement::Local,
        })
    }

    /// Arranges, once per stream, the origin pull of `stream` (live on `peer`) into one of this
    /// cluster's edges: keeps `peer` wanted (a channel opens), asks it where the stream is
    /// (`QueryStream`), picks the local edge for the viewer, tells the peer
    /// (`NotifyOriginPull`), and tells the edge to pull (`OriginPull`); `?source=` answers the
    /// peer's DTSC URL from then on. Later viewers find the arrangement and cost no
    /// cross-cluster call.
    pub async fn arrange(
        &self,
        peer: &str,
        tenant: &str,
        stream: &str,
        viewer: Option<Position>,
    ) -> Result<Arrangement, LinkError> {
        if let Some(done) = self.settled(stream) {
            return Ok(done);
        }
        let gate = self
            .arranging
            .lock()
            .entry(stream.to_string())
            .or_default()
            .clone();
        let _one_at_a_time = gate.lock().await;
        if let Some(done) = self.settled(stream) {
            return Ok(done); // settled while this request waited
        }
        let result = self.arrange_now(peer, tenant, stream, viewer).await;
        let unarranged = match &result {
            Ok(Arrangement::Remote { base_url }) => Some(Some(base_url.clone())),
            Ok(Arrangement::Local) if !self.peers.has_origin(stream) => Some(None),
            Err(_) => Some(None),
            Ok(Arrangement::Local) => None,
        };
        {
            let mut map = self.unarranged.lock();
            map.retain(|_, (at, _)| at.elapsed() < RETRY_AFTER);
            if let Some(url) = unarranged {
                map.insert(stream.to_string(), (Instant::now(), url));
            }
        }
        self.arranging.lock().remove(stream);
        result
    }

    async fn call<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, LinkError>>,
    ) -> Result<T, LinkError> {
        self.count_rpc(what, "out");
        tokio::time::timeout(self.config.rpc_timeout, call)
            .await
            .map_err(|_| LinkError::TimedOut(format!("{what} took too long")))?
    }

    async fn arrange_now(
        &self,
        peer: &str,
        tenant: &str,
        stream: &str,
        viewer: Option<Position>,
    ) -> Result<Arrangement, LinkError> {
        let query = StreamQuery {
            stream: stream.to_string(),
            tenant_id: tenant.to_string(),
            viewer,
            source_selection: false,
        };
        let found = self
            .call("query_stream", self.link.query_stream(peer, query))
            .await?;
        if !found.live {
            return Ok(Arrangement::Local);
        }
        self.want(peer, stream);
        let remote = || {
            found
                .candidates
                .iter()
                .find(|c| crate::names::is_valid_node_id(&c.node_id))
                .map(|c| Arrangement::Remote {
                    base_url: peer_base_url(&c.base_url, &c.node_id, peer, &self.root),
                })
                .unwrap_or(Arrangement::Local)
        };
        let snapshot = self.router.snapshot();
        let Some(edge) = snapshot
            .decide_best(viewer, Ask::local_viewer(stream), Instant::now())
            .map(|p| snapshot.candidate(&p).clone())
        else {
            return Ok(remote());
        };
        let notice = PullNotice {
            stream: stream.to_string(),
            tenant_id: tenant.to_string(),
            destination_cluster_id: self.me.clone(),
            destination_node_id: edge.node_id.to_string(),
        };
        let answer = self
            .call(
                "notify_origin_pull",
                self.link.notify_origin_pull(peer, notice),
            )
            .await?;
        if !answer.accepted || !is_peer_dtsc_url(&answer.dtsc_url, peer, &self.root) {
            tracing::info!(%peer, %stream, reason = %answer.reason, "origin pull refused; sending the viewer to the peer's edge");
            return Ok(remote());
        }
        self.adopt(
            stream,
            Origin {
                peer: peer.to_string(),
                dtsc_url: answer.dtsc_url,
                node_id: edge.node_id.to_string(),
            },
        );
        Ok(Arrangement::Local)
    }

    /// Keeps `peer` wanted (a channel open) while `stream` is live there.
    fn want(&self, peer: &str, stream: &str) {
        self.peers.want(peer, stream);
        if let Some(relay) = self.relay.as_ref().filter(|_| !self.leadership.is_leader()) {
            // Only the leader dials: it opens the channel this stream needs.
            relay.want(peer, stream);
        }
    }

    /// Takes `origin` as where this cluster's edges pull `stream` from: every replica answers
    /// `?source=` with it (until the peer's adverts stop listing the stream), and the edge is
    /// told to pull now (by the replica holding its control stream).
    fn adopt(&self, stream: &str, origin: Origin) {
        self.peers.set_origin(stream, origin.clone());
        if let Some(relay) = &self.relay {
            relay.origin(stream, &origin);
        }
        let told = self
            .edge_commands
            .origin_pull(&origin.node_id, stream, &origin.dtsc_url);
        tracing::info!(peer = %origin.peer, %stream, node = %origin.node_id, source = %origin.dtsc_url, told, "cross-cluster origin pull arranged");
    }

    /// Whether viewers of `stream` may go to edges of `peer` that lack it: `Some(true)` while a
    /// pull into `peer` arranged here stands, `Some(false)` for a moment after `peer` refused or
    /// failed, `None` when `peer` must be asked ([`Hub::arrange_remote`]).
    pub fn remote_pull(&self, peer: &str, stream: &str) -> Option<bool> {
        let pulls = self.remote_pulls.lock();
        let (at, arranged) = pulls.get(stream)?.get(peer)?;
        let ttl = if *arranged {
            REMOTE_PULL_TTL
        } else {
            RETRY_AFTER
        };
        (at.elapsed() < ttl).then_some(*arranged)
    }

    /// Before the first viewer of `stream` (live on cluster `live`) goes to `node`, an edge of
    /// `peer` that lacks it: asks `peer` to arrange the pull (`ArrangeOriginPull`), giving this
    /// cluster's origin when the stream is live here. Once per stream and peer; whether viewers
    /// may go there is then [`Hub::remote_pull`]'s.
    pub async fn arrange_remote(
        &self,
        peer: &str,
        tenant: &str,
        stream: &str,
        live: &str,
        node: &str,
    ) -> bool {
        if let Some(settled) = self.remote_pull(peer, stream) {
            return settled;
        }
        let key = format!("{peer} {stream}");
        let gate = self
            .arranging
            .lock()
            .entry(key.clone())
            .or_default()
            .clone();
        let _one_at_a_time = gate.lock().await;
        if let Some(settled) = self.remote_pull(peer, stream) {
            return settled; // settled while this request waited
        }
        let arranged = match self.ask_remote(peer, tenant, stream, live, node).await {
            Ok(answer) if answer.accepted => true,
            Ok(answer) => {
                tracing::info!(%peer, %stream, reason = %answer.reason, "the peer will not pull the stream; its edges are left out for it");
                false
            }
            Err(e) => {
                tracing::warn!(%peer, %stream, error = %e, "could not arrange the pull into the peer; its edges are left out for the stream");
                false
            }
        };
        {
            let mut pulls = self.remote_pulls.lock();
            pulls.retain(|_, by_peer| {
                by_peer.retain(|_, (at, ok)| {
                    at.elapsed() < if *ok { REMOTE_PULL_TTL } else { RETRY_AFTER }
                });
                !by_peer.is_empty()
            });
            pulls
                .entry(stream.to_string())
                .or_default()
                .insert(peer.to_string(), (Instant::now(), arranged));
        }
        self.arranging.lock().remove(&key);
        arranged
    }

    async fn ask_remote(
        &self,
        peer: &str,
        tenant: &str,
        stream: &str,
        live: &str,
        node: &str,
    ) -> Result<PullAnswer, LinkError> {
        let source_dtsc_url = if live == self.me {
            let here = self.origin_here(stream);
            if !here.accepted {
                return Ok(here);
            }
            here.dtsc_url
        } else {
            String::new()
        };
        let pull = RemotePull {
            stream: stream.to_string(),
            tenant_id: tenant.to_string(),
            source_cluster_id: live.to_string(),
            source_dtsc_url,
            destination_node_id: node.to_string(),
        };
        self.call(
            "arrange_origin_pull",
            self.link.arrange_origin_pull(peer, pull),
        )
        .await
    }

    /// The calling cluster may act for `tenant` on `stream` here: the tenant may use both
    /// clusters and owns the stream.
    async fn check_tenant(
        &self,
        caller: &str,
        tenant: &str,
        stream: &str,
    ) -> Result<(), LinkError> {
        if !is_valid_stream_name(stream) {
            return Err(LinkError::Malformed("malformed stream name".into()));
        }
        let me = &self.me;
        if !self
            .directory
            .tenant_may_use_both(tenant, caller, me)
            .await?
        {
            return Err(self.refuse(LinkError::Refused(format!(
                "the tenant may not use both cluster {caller:?} and cluster {me:?}"
            ))));
        }
        let owned = self
            .directory
            .stream_owner(stream)
            .await?
            .is_some_and(|owner| owner == tenant);
        if !owned {
            return Err(LinkError::NotFound("no such stream of this tenant".into()));
        }
        Ok(())
    }

    /// Answers `caller`'s `QueryStream`: whether the stream is live here and the edges that would
    /// serve the viewer (or the best source edge).
    pub async fn answer_query(
        &self,
        caller: &str,
        query: &StreamQuery,
    ) -> Result<QueryAnswer, LinkError> {
        self.count_rpc("query_stream", "in");
        self.check_tenant(caller, &query.tenant_id, &query.stream)
            .await?;
        let snapshot = self.router.snapshot();
        let now = Instant::now();
        let origin = snapshot.best_source(&query.stream, None, query.viewer, now);
        let live = origin.is_some();
        let candidate = |c: &Candidate, score: u64| StreamCandidate {
            node_id: c.node_id.to_string(),
            base_url: c.base_url.to_string(),
            dtsc_url: dtsc_url(&c.base_url, &query.stream),
            score,
        };
        let candidates = if query.source_selection {
            origin.map(|c| candidate(c, 0)).into_iter().collect()
        } else if live {
            snapshot
                .decide(
                    query.viewer,
                    Ask::local_viewer(&query.stream),
                    QUERY_CANDIDATES,
                    now,
                )
                .iter()
                .map(|p| candidate(snapshot.candidate(p), p.parts.total))
                .collect()
        } else {
            Vec::new()
        };
        Ok(QueryAnswer { live, candidates })
    }

    /// Answers `caller`'s `NotifyOriginPull`: the DTSC URL of the best source edge here.
    pub async fn answer_pull(
        &self,
        caller: &str,
        notice: &PullNotice,
    ) -> Result<PullAnswer, LinkError> {
        self.count_rpc("notify_origin_pull", "in");
        if notice.destination_cluster_id != caller {
            return Err(self.refuse(LinkError::Refused(format!(
                "cluster {caller:?} may only arrange pulls into its own edges"
            ))));
        }
        self.check_tenant(caller, &notice.tenant_id, &notice.stream)
            .await?;
        let answer = self.origin_here(&notice.stream);
        if answer.accepted {
            tracing::info!(stream = %notice.stream, peer = %caller, node = %notice.destination_node_id, "origin pull into a peer cluster accepted");
        }
        Ok(answer)
    }

    /// Where edges pull `stream` from this cluster: the DTSC URL of its best source edge, or
    /// why not (it is not live here).
    fn origin_here(&self, stream: &str) -> PullAnswer {
        let snapshot = self.router.snapshot();
        match snapshot.best_source(stream, None, None, Instant::now()) {
            Some(origin) => PullAnswer {
                accepted: true,
                dtsc_url: dtsc_url(&origin.base_url, stream),
                reason: String::new(),
            },
            None => PullAnswer {
                reason: format!("stream is not live on cluster {:?}", self.me),
                ..PullAnswer::default()
            },
        }
    }

    /// Answers `caller`'s `ArrangeOriginPull`: `caller` sends viewers of a stream live on
    /// `pull.source_cluster_id` to this cluster's edge `pull.destination_node_id`. The pull is
    /// arranged as for a viewer here: from the caller's origin when the caller is the source,
    /// else through the source's own `NotifyOriginPull`; the edge is told to pull and every
    /// edge's `?source=` answers the origin.
    pub async fn answer_arrange(
        &self,
        caller: &str,
        pull: &RemotePull,
    ) -> Result<PullAnswer, LinkError> {
        self.count_rpc("arrange_origin_pull", "in");
        self.check_tenant(caller, &pull.tenant_id, &pull.stream)
            .await?;
        let (stream, node, source) = (
            pull.stream.as_str(),
            pull.destination_node_id.as_str(),
            pull.source_cluster_id.as_str(),
        );
        if !crate::names::is_valid_node_id(node) || !crate::config::is_valid_label(source) {
            return Err(self.refuse(LinkError::Malformed(
                "malformed destination node or source cluster".into(),
            )));
        }
        if source == self.me {
            // Live here, as far as the caller knows: the edge pulls from this cluster's origin.
            return Ok(self.origin_here(stream));
        }
        let known = self.peers.origin(stream).filter(|o| o.peer == source);
        let dtsc_url = if let Some(known) = known {
            known.dtsc_url // arranged already (for a viewer here or another peer)
        } else if source == caller {
            if !is_peer_dtsc_url(&pull.source_dtsc_url, caller, &self.root) {
                return Err(self.refuse(LinkError::Malformed(
                    "the source DTSC URL is not on an edge of the calling cluster".into(),
                )));
            }
            pull.source_dtsc_url.clone()
        } else {
            // A third cluster: only one the tenant may use is ever called on a peer's word.
            if !self
                .directory
                .tenant_may_use_both(&pull.tenant_id, &self.me, source)
                .await?
            {
                return Err(self.refuse(LinkError::Refused(format!(
                    "the tenant may not use both cluster {:?} and cluster {source:?}",
                    self.me
                ))));
            }
            let notice = PullNotice {
                stream: stream.to_string(),
                tenant_id: pull.tenant_id.clone(),
                destination_cluster_id: self.me.clone(),
                destination_node_id: node.to_string(),
            };
            let answer = self
                .call(
                    "notify_origin_pull",
                    self.link.notify_origin_pull(source, notice),
                )
                .await?;
            if !answer.accepted || !is_peer_dtsc_url(&answer.dtsc_url, source, &self.root) {
                return Ok(PullAnswer {
                    reason: format!(
                        "cluster {source:?} would not let this cluster pull: {}",
                        answer.reason
                    ),
                    ..PullAnswer::default()
                });
            }
            answer.dtsc_url
        };
        self.want(source, stream);
        self.adopt(
            stream,
            Origin {
                peer: source.to_string(),
                dtsc_url: dtsc_url.clone(),
                node_id: node.to_string(),
            },
        );
        Ok(PullAnswer {
            accepted: true,
            dtsc_url,
            reason: String::new(),
        })
    }
}
