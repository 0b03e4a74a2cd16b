//! The tenant API end to end over real HTTP (and gRPC for PreRegisterEdge), on PostgreSQL and
//! SQLite: marketplace, subscriptions, approval, invites, preferred cluster, network, private
//! clusters, enrollment, streams, billing tiers, isolation and bad input, the OpenAPI document.

#[macro_use]
mod common;

use std::time::Duration;

use common::{eventually, Db, TestServer};
use foghorn::registry::{NewCluster, PricingModel, Role, Tier, Visibility};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A client of `/api/v1` holding one bearer token.
#[derive(Clone)]
struct Api {
    base: String,
    token: String,
}

impl Api {
    fn new(server: &TestServer, token: &str) -> Api {
        Api {
            base: server.http("/api/v1"),
            token: token.to_string(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status} {path}: not JSON ({e}): {text}"));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// The marketplace's cluster ids (first page of 200).
    async fn marketplace_ids(&self) -> Vec<String> {
        let (status, page) = self.get("/marketplace?limit=200").await;
        assert_eq!(status, 200, "{page}");
        ids(&page["clusters"])
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect()
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// A tenant whose official cluster is this server's (`test`), with a token of `role`.
async fn tenant(server: &TestServer, name: &str, role: Role) -> (String, Api) {
    let registry = server.registry();
    let tenant = registry.create_tenant(name, "test").await.expect("tenant");
    let (_, token) = registry
        .create_api_token(&tenant.id, role)
        .await
        .expect("token");
    (tenant.id, Api::new(server, &token))
}

async fn cluster(server: &TestServer, new: NewCluster) {
    server
        .registry()
        .create_cluster(&new)
        .await
        .expect("cluster");
}

fn platform(id: &str) -> NewCluster {
    NewCluster {
        region: "eu".into(),
        ..NewCluster::platform(id, id.to_uppercase())
    }
}

/// Browse → connect → preferred → stream → URLs for both clusters; filters and pages; the
/// preferred rule; cancelling the preferred cluster's subscription falls back to the official one.
async fn browse_connect_prefer_stream(db: Db) {
    let server = TestServer::start(db).await;
    cluster(&server, platform("eu-west")).await;
    cluster(
        &server,
        NewCluster {
            tier: Tier::Dedicated,
            pricing_model: PricingModel::Monthly,
            region: "us".into(),
            ..platform("us-dedicated")
        },
    )
    .await;
    cluster(
        &server,
        NewCluster {
            visibility: Visibility::Unlisted,
            ..platform("unlisted-one")
        },
    )
    .await;
    cluster(
        &server,
        NewCluster {
            visibility: Visibility::Private,
            ..platform("private-one")
        },
    )
    .await;
    let (_, api) = tenant(&server, "Acme", Role::Tenant).await;

    // Visibility: public clusters only (the official one is public too).
    assert_eq!(
        api.marketplace_ids().await,
        ["eu-west", "test", "us-dedicated"]
    );
    let (_, page) = api.get("/marketplace").await;
    let local = page["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["id"] == "test")
        .expect("the local cluster");
    assert_eq!(local["utilization"]["source"], "live");
    assert_eq!(local["utilization"]["edges"], 0);
    assert!(local.get("subscription_status").is_none());

    // Filters and pages.
    let (_, page) = api.get("/marketplace?tier=dedicated").await;
    assert_eq!(ids(&page["clusters"]), ["us-dedicated"]);
    let (_, page) = api
        .get("/marketplace?pricing_model=MONTHLY&region=us")
        .await;
    assert_eq!(ids(&page["clusters"]), ["us-dedicated"]);
    let (_, page) = api.get("/marketplace?region=eu").await;
    assert_eq!(ids(&page["clusters"]), ["eu-west"]);
    let (_, first) = api.get("/marketplace?limit=2").await;
    assert_eq!(ids(&first["clusters"]), ["eu-west", "test"]);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = api
        .get(&format!("/marketplace?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(ids(&second["clusters"]), ["us-dedicated"]);
    assert!(second.get("next_cursor").is_none(), "last page");
    for bad in [
        "/marketplace?tier=gold",
        "/marketplace?limit=0",
        "/marketplace?limit=x",
        "/marketplace?colour=red",
        "/marketplace?region=%00",
    ] {
        let (status, body) = api.get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(error_code(&body), "bad_request");
    }
    // Hidden clusters are not found by id either.
    for hidden in ["unlisted-one", "private-one", "no-such-cluster"] {
        let (status, _) = api.get(&format!("/clusters/{hidden}")).await;
        assert_eq!(status, 404, "{hidden}");
    }

    // Preferred: refused until subscribed.
    let (status, body) = api
        .put(
            "/tenant/preferred-cluster",
            json!({ "cluster_id": "eu-west" }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("subscribe"),
        "{body}"
    );

    // Connect.
    let (status, sub) = api
        .post("/subscriptions", json!({ "cluster_id": "eu-west" }))
        .await;
    assert_eq!(status, 201, "{sub}");
    assert_eq!(sub["status"], "active");
    let (status, again) = api
        .post("/subscriptions", json!({ "cluster_id": "eu-west" }))
        .await;
    assert_eq!((status, &again["changed"]), (StatusCode::OK, &json!(false)));
    let (_, page) = api.get("/marketplace?region=eu").await;
    assert_eq!(page["clusters"][0]["subscription_status"], "active");

    let (status, network) = api
        .put(
            "/tenant/preferred-cluster",
            json!({ "cluster_id": "eu-west" }),
        )
        .await;
    assert_eq!(status, 200, "{network}");
    assert_eq!(network["preferred_cluster_id"], "eu-west");
    assert_eq!(network["official_cluster_id"], "test");
    for c in network["clusters"].as_array().expect("clusters") {
        assert_eq!(c["peering"], "always-on", "{c}");
        // Seen from cluster "test"; "eu-west" has no Foghorn running, and of the pair the
        // cluster with the lower id ("eu-west") is the one that dials.
        let channel = if c["id"] == "test" { "local" } else { "none" };
        assert_eq!(c["channel"], channel, "{c}");
    }
    assert_eq!(ids(&network["clusters"]), ["eu-west", "test"]);

    // A stream: key once, URLs for the preferred and the official cluster.
    let (status, stream) = api.post("/streams", json!({ "name": "main" })).await;
    assert_eq!(status, 201, "{stream}");
    let key = stream["stream_key"].as_str().expect("key shown once");
    assert!(key.starts_with("sk_"));
    let pid = stream["playback_id"].as_str().expect("playback id");
    assert_eq!(stream["ingest"][0]["label"], "preferred");
    assert_eq!(
        stream["ingest"][0]["rtmp"],
        format!("rtmp://edge-ingest.eu-west.example.net:1935/live/{key}")
    );
    assert_eq!(
        stream["ingest"][0]["whip"],
        format!("https://edge-ingest.eu-west.example.net/webrtc/{key}")
    );
    assert_eq!(stream["ingest"][1]["label"], "official");
    assert_eq!(
        stream["ingest"][1]["rtmp"],
        format!("rtmp://edge-ingest.test.example.net:1935/live/{key}")
    );
    assert_eq!(
        stream["playback"]["hls"],
        format!("https://foghorn.eu-west.example.net/play/{pid}/hls/index.m3u8")
    );
    assert_eq!(
        stream["playback"]["dash"],
        format!("https://foghorn.eu-west.example.net/play/{pid}/dash/index.mpd")
    );
    assert_eq!(
        stream["playback"]["whep"],
        format!("https://foghorn.eu-west.example.net/play/{pid}/whep")
    );
    let id = stream["id"].as_str().expect("id");
    let (status, read) = api.get(&format!("/streams/{id}")).await;
    assert_eq!(status, 200);
    assert!(read.get("stream_key").is_none(), "the key is shown once");
    assert_eq!(
        read["ingest"][0]["rtmp"],
        "rtmp://edge-ingest.eu-west.example.net:1935/live/{stream_key}"
    );
    let (_, list) = api.get("/streams").await;
    assert_eq!(ids(&list), [id]);

    let (status, dup) = api.post("/streams", json!({ "name": "main" })).await;
    assert_eq!(status, 409, "{dup}");
    // JSON labelled as a form, the way `curl -d` sends it, is read as JSON.
    let res = reqwest::Client::new()
        .post(format!("{}/streams", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"name": "from-curl"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);

    // The playback id resolves here (no edge yet: 503, not 404).
    let res = reqwest::get(server.http(&format!("/play/{pid}/hls/index.m3u8")))
        .await
        .expect("play");
    assert_eq!(res.status(), 503);

    // Cancelling the preferred cluster's subscription falls back to the official cluster, and
    // the URLs follow at once; the playback id stays the same.
    let (status, cancelled) = api.delete("/subscriptions/eu-west").await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (_, network) = api.get("/tenant/network").await;
    assert_eq!(network["preferred_cluster_id"], "test");
    assert_eq!(network["clusters"][0]["peering"], "none");
    let (_, read) = api.get(&format!("/streams/{id}")).await;
    assert_eq!(read["playback_id"], pid);
    assert_eq!(read["ingest"].as_array().expect("ingest").len(), 1);
    assert_eq!(read["ingest"][0]["label"], "preferred+official");
    assert_eq!(
        read["playback"]["hls"],
        format!("https://foghorn.test.example.net/play/{pid}/hls/index.m3u8")
    );
    let (status, _) = api.delete("/subscriptions/eu-west").await;
    assert_eq!(status, 404, "nothing left to cancel");
    let (_, subs) = api.get("/subscriptions").await;
    assert_eq!(subs[0]["status"], "cancelled");
    server.stop().await;
}

/// Request access → pending → approve → active; reject; who may decide.
async fn approval_flow(db: Db) {
    let server = TestServer::start(db).await;
    let (owner_id, owner) = tenant(&server, "Owner", Role::Tenant).await;
    cluster(
        &server,
        NewCluster {
            requires_approval: true,
            owner_tenant_id: Some(owner_id.clone()),
            ..platform("owned-eu")
        },
    )
    .await;
    cluster(
        &server,
        NewCluster {
            requires_approval: true,
            ..platform("platform-eu")
        },
    )
    .await;
    let (a_id, a) = tenant(&server, "A", Role::Tenant).await;
    let (c_id, c) = tenant(&server, "C", Role::Tenant).await;
    let (_, operator) = tenant(&server, "Ops", Role::Operator).await;

    let (status, sub) = a
        .post("/subscriptions", json!({ "cluster_id": "owned-eu" }))
        .await;
    assert_eq!(
        (status, &sub["status"]),
        (StatusCode::CREATED, &json!("pending"))
    );
    assert!(
        sub["message"]
            .as_str()
            .is_some_and(|m| m.contains("its owner must approve it")),
        "{sub}"
    );
    let (status, _) = a
        .put(
            "/tenant/preferred-cluster",
            json!({ "cluster_id": "owned-eu" }),
        )
        .await;
    assert_eq!(status, 409, "pending is not subscribed");

    // Only the owner decides for its cluster; an operator does not, a tenant does not.
    let requests = "/clusters/owned-eu/subscription-requests";
    for outsider in [&a, &c, &operator] {
        let (status, body) = outsider.get(requests).await;
        assert_eq!(status, 403, "{body}");
        let (status, _) = outsider
            .post(&format!("{requests}/{a_id}/approve"), json!({}))
            .await;
        assert_eq!(status, 403);
    }
    // An action without input takes no body, or `{}`: a field that would change it is refused,
    // not ignored, and nothing is decided.
    for body in [json!({ "reject": true }), json!(["x"]), json!(null)] {
        let (status, refused) = owner
            .post(&format!("{requests}/{a_id}/approve"), body.clone())
            .await;
        assert_eq!(status, 400, "{body}: {refused}");
    }
    let (status, pending) = owner.get(requests).await;
    assert_eq!(status, 200);
    assert_eq!(pending[0]["tenant_id"], a_id.as_str());
    assert_eq!(pending[0]["tenant_name"], "A");
    assert_eq!(pending[0]["status"], "pending", "{pending}");
    let (status, approved) = owner
        .post(&format!("{requests}/{a_id}/approve"), json!({}))
        .await;
    assert_eq!(
        (status, &approved["status"]),
        (StatusCode::OK, &json!("active"))
    );
    let (status, body) = owner
        .post(&format!("{requests}/{a_id}/approve"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = a
        .put(
            "/tenant/preferred-cluster",
            json!({ "cluster_id": "owned-eu" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, pending) = owner.get(requests).await;
    assert_eq!(pending, json!([]));

    // Reject.
    c.post("/subscriptions", json!({ "cluster_id": "owned-eu" }))
        .await;
    let (status, rejected) = owner
        .post(&format!("{requests}/{c_id}/reject"), json!({}))
        .await;
    assert_eq!(
        (status, &rejected["status"]),
        (StatusCode::OK, &json!("rejected"))
    );
    let (_, subs) = c.get("/subscriptions").await;
    assert_eq!(subs[0]["status"], "rejected");
    // A rejection stands, and asking again says so instead of "access requested".
    let (status, again) = c
        .post("/subscriptions", json!({ "cluster_id": "owned-eu" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a rejection stands: {again}");
    let message = again["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("rejected") && message.contains("invite from its owner"),
        "{message}"
    );
    let (_, subs) = c.get("/subscriptions").await;
    assert_eq!(subs[0]["status"], "rejected");
    let (_, pending) = owner.get(requests).await;
    assert_eq!(
        pending,
        json!([]),
        "and does not come back to the owner's queue"
    );
    let (status, _) = c
        .put(
            "/tenant/preferred-cluster",
            json!({ "cluster_id": "owned-eu" }),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = owner
        .post(
            &format!("{requests}/{}/approve", uuid::Uuid::new_v4()),
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "no such request");

    // A platform cluster's requests are decided by a platform operator, not by tenants, and the
    // answer says so (a platform cluster has no owner).
    let platform_requests = "/clusters/platform-eu/subscription-requests";
    let (status, asked) = a
        .post("/subscriptions", json!({ "cluster_id": "platform-eu" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let message = asked["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("a platform operator must approve it") && !message.contains("owner"),
        "{message}"
    );
    let (status, asked) = a
        .post("/subscriptions", json!({ "cluster_id": "platform-eu" }))
        .await;
    assert_eq!(status, StatusCode::OK, "already pending: {asked}");
    assert!(
        asked["message"]
            .as_str()
            .is_some_and(|m| m.contains("already requested")),
        "{asked}"
    );
    let (status, _) = owner
        .post(&format!("{platform_requests}/{a_id}/approve"), json!({}))
        .await;
    assert_eq!(status, 403);
    let (status, body) = operator
        .post(&format!("{platform_requests}/{a_id}/approve"), json!({}))
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("active")),
        "{body}"
    );
    server.stop().await;
}

/// Invites: bound and unbound, single use, revocable, and the only way into a private cluster.
async fn invites(db: Db) {
    let server = TestServer::start(db).await;
    let (_, owner) = tenant(&server, "Owner", Role::Tenant).await;
    let (_, a) = tenant(&server, "A", Role::Tenant).await;
    let (b_id, b) = tenant(&server, "B", Role::Tenant).await;
    let (_, c) = tenant(&server, "C", Role::Tenant).await;

    let (status, created) = owner
        .post(
            "/private-clusters",
            json!({ "name": "Owner Studio", "region": "berlin" }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["cluster"]["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("owner-studio-"), "{id}");
    assert_eq!(created["cluster"]["visibility"], "private");
    assert_eq!(created["cluster"]["tier"], "shared-lb");
    assert_eq!(created["cluster"]["owned"], true);
    assert_eq!(created["subscription"]["status"], "active");
    let enroll = created["enrollment_token"]["token"]
        .as_str()
        .expect("token");
    assert!(enroll.starts_with("enroll_"));
    let cell = created["foghorn"]["grpc_addr"]
        .as_str()
        .expect("cell address");
    assert_eq!(
        created["enrollment_token"]["provision_command"],
        format!("frameworks edge provision --foghorn {cell} --enrollment-token {enroll} --ssh user@host")
    );
    assert!(owner.marketplace_ids().await.contains(&id));

    // Not visible, not subscribable without an invite.
    assert!(!a.marketplace_ids().await.contains(&id));
    let (status, _) = a.get(&format!("/clusters/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = a.post("/subscriptions", json!({ "cluster_id": id })).await;
    assert_eq!(status, 404);
    let (status, _) = a
        .post(
            "/subscriptions",
            json!({ "cluster_id": id, "invite_token": "inv_0000000000000000000000000000000000" }),
        )
        .await;
    assert_eq!(status, 404, "a bogus invite reveals nothing");

    // An invite bound to B: B sees the cluster and joins without approval; A cannot use it.
    let invites = format!("/clusters/{id}/invites");
    let (status, bound) = owner
        .post(&invites, json!({ "tenant_id": b_id, "ttl": "2d" }))
        .await;
    assert_eq!(status, 201, "{bound}");
    let bound_token = bound["token"].as_str().expect("token").to_string();
    assert!(bound_token.starts_with("inv_"));
    assert!(b.marketplace_ids().await.contains(&id));
    let (status, _) = a
        .post(
            "/subscriptions",
            json!({ "cluster_id": id, "invite_token": bound_token }),
        )
        .await;
    assert_eq!(status, 404);
    let (status, joined) = b
        .post(
            "/subscriptions",
            json!({ "cluster_id": id, "invite_token": bound_token }),
        )
        .await;
    assert_eq!(
        (status, &joined["status"]),
        (StatusCode::CREATED, &json!("active")),
        "{joined}"
    );
    assert_eq!(joined["via_invite"], true);
    let (_, listed) = owner.get(&invites).await;
    assert_eq!(listed[0]["status"], "used");
    assert!(listed[0].get("token").is_none(), "tokens are never listed");

    // An unbound invite is single use: A joins, C cannot reuse it.
    let (_, open) = owner.post(&invites, json!({})).await;
    let open_token = open["token"].as_str().expect("token").to_string();
    let (status, _) = a
        .post(
            "/subscriptions",
            json!({ "cluster_id": id, "invite_token": open_token }),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = c
        .post(
            "/subscriptions",
            json!({ "cluster_id": id, "invite_token": open_token }),
        )
        .await;
    assert_eq!(status, 404);

    // A revoked invite is dead; revoking twice is a conflict.
    let (_, revoked) = owner.post(&invites, json!({})).await;
    let revoked_id = revoked["invite"]["id"].as_str().expect("id");
    let (status, body) = owner.delete(&format!("{invites}/{revoked_id}")).await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("revoked"))
    );
    let (status, _) = owner.delete(&format!("{invites}/{revoked_id}")).await;
    assert_eq!(status, 409);
    let (status, _) = c
        .post(
            "/subscriptions",
            json!({ "cluster_id": id, "invite_token": revoked["token"] }),
        )
        .await;
    assert_eq!(status, 404);

    // Invites need a sane lifetime; only the owner makes them.
    let (status, _) = owner.post(&invites, json!({ "ttl": "5s" })).await;
    assert_eq!(status, 400);
    let (status, _) = owner.post(&invites, json!({ "ttl": "soon" })).await;
    assert_eq!(status, 400);
    let (status, _) = a.post(&invites, json!({})).await;
    assert_eq!(
        status, 403,
        "a subscriber sees the cluster but does not manage it"
    );
    server.stop().await;
}

/// Private cluster → enrollment token → PreRegisterEdge → a simulated edge registers with the
/// reserved node id on the private cluster's own Foghorn, shows in the nodes list and in the
/// marketplace utilization, live there and as reported on the platform cluster's Foghorn.
async fn private_cluster_enrollment(db: Db) {
    let platform = TestServer::start_with(db, |c| {
        c.cluster.report_interval = Duration::from_millis(200);
    })
    .await;
    let (_, owner) = tenant(&platform, "Owner", Role::Tenant).await;
    let (_, other) = tenant(&platform, "Other", Role::Tenant).await;
    let (_, created) = owner
        .post("/private-clusters", json!({ "name": "Home Lab" }))
        .await;
    let id = created["cluster"]["id"].as_str().expect("id").to_string();

    let tokens = format!("/clusters/{id}/enrollment-tokens");
    let (status, token) = owner
        .post(
            &tokens,
            json!({ "ttl": "1h", "usage_limit": 2, "expected_cidr": "127.0.0.0/8" }),
        )
        .await;
    assert_eq!(status, 201, "{token}");
    assert_eq!(token["usage_limit"], 2);
    let secret = token["token"].as_str().expect("secret").to_string();
    for bad in [
        json!({ "expected_cidr": "not-a-net" }),
        json!({ "usage_limit": 0 }),
        json!({ "ttl": "400d" }),
    ] {
        let (status, body) = owner.post(&tokens, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = other.post(&tokens, json!({})).await;
    assert_eq!(
        status, 404,
        "another tenant cannot even see the private cluster"
    );

    // PreRegisterEdge on the platform's Foghorn: validates without consuming.
    let channel = tonic::transport::Endpoint::from_shared(platform.grpc_url())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut provisioning =
        foghorn::proto::edge_provisioning_client::EdgeProvisioningClient::new(channel);
    let ask = |token: &str, ip: &str| foghorn::proto::PreRegisterEdgeRequest {
        enrollment_token: token.into(),
        external_ip: ip.into(),
        preferred_node_id: String::new(),
        host_fingerprint: "machine-id-hash-1".into(),
    };
    let reserved = provisioning
        .pre_register_edge(ask(&secret, "127.0.0.1"))
        .await
        .expect("pre-register")
        .into_inner();
    let node_id = reserved.node_id.clone();
    assert_eq!(node_id.len(), 12);
    assert!(node_id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    assert_eq!(reserved.cluster_id, id);
    assert_eq!(
        reserved.edge_domain,
        format!("edge-{node_id}.{id}.example.net")
    );
    assert_eq!(reserved.pool_domain, format!("edge.{id}.example.net"));
    // The cluster has no Foghorn of its own: its edges dial the cell serving it, this one.
    let cell = platform
        .registry()
        .cluster("test")
        .await
        .expect("cluster")
        .expect("exists")
        .grpc_addr;
    assert_eq!(reserved.foghorn_grpc_addr, cell);
    let again = provisioning
        .pre_register_edge(ask(&secret, "127.0.0.1"))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(again.node_id, node_id, "repeating is safe");
    for (token, ip, code) in [
        ("enroll_nope", "127.0.0.1", tonic::Code::Unauthenticated),
        (
            secret.as_str(),
            "203.0.113.9",
            tonic::Code::PermissionDenied,
        ),
        (secret.as_str(), "not-an-ip", tonic::Code::InvalidArgument),
        ("", "127.0.0.1", tonic::Code::InvalidArgument),
    ] {
        let err = provisioning
            .pre_register_edge(ask(token, ip))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{token} from {ip}: {err}");
    }
    let token_id = token["id"].as_str().expect("id");
    let stored = platform
        .registry()
        .enrollment_token(token_id)
        .await
        .expect("read")
        .expect("token");
    assert_eq!(stored.usage_count, 0, "pre-registration consumes nothing");

    // The private cluster gets a Foghorn of its own (as an operator gives a dedicated cluster
    // one): the platform's cell, which served it since it was created, stops serving it.
    assert!(platform.server().cell.serves(&id));
    platform
        .registry()
        .assign_cell(&id, None)
        .await
        .expect("own Foghorn");
    eventually(
        Duration::from_secs(10),
        "the platform's cell retires the cluster",
        || async { !platform.server().cell.serves(&id) },
    )
    .await;
    // A simulated edge enrolls there with the reserved id.
    let private = platform
        .replica(|c| {
            c.cluster.id = id.clone();
            c.redis.url = String::new();
        })
        .await;
    let sim = tokio::spawn(foghorn::sim::run(foghorn::sim::SimArgs {
        grpc: private.grpc_url(),
        enrollment_token: Some(secret.clone()),
        pre_registered_node_id: Some(node_id.clone()),
        edges: 1,
        first_edge: 0,
        local_address: None,
        state_dir: None,
        region_center: (52.52, 13.40),
        region_radius_km: 10.0,
        publish: None,
        publish_for: None,
        interval: Some(Duration::from_millis(200)),
        reconnect_every: None,
        ca: None,
        tls_domain: None,
        seed: Some(3),
    }));
    let owner_there = Api::new(&private, &owner.token);
    let nodes = format!("/clusters/{id}/nodes");
    eventually(Duration::from_secs(10), "the edge routable", || {
        let owner_there = owner_there.clone();
        let nodes = nodes.clone();
        async move {
            let (_, list) = owner_there.get(&nodes).await;
            list[0]["routable"] == true
        }
    })
    .await;
    let (_, list) = owner_there.get(&nodes).await;
    assert_eq!(list.as_array().expect("nodes").len(), 1);
    assert_eq!(list[0]["node_id"], node_id.as_str());
    assert_eq!(list[0]["connected"], true);
    assert!(list[0]["bandwidth_used"].as_u64().expect("load") > 0);
    let stored = platform
        .registry()
        .enrollment_token(token_id)
        .await
        .expect("read")
        .expect("token");
    assert_eq!(stored.usage_count, 1, "registering consumed one use");

    // Live utilization on the private cluster's Foghorn.
    let (_, page) = owner_there.get("/marketplace").await;
    let entry = page["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["id"] == id.as_str())
        .expect("own private cluster listed")
        .clone();
    assert_eq!(entry["utilization"]["source"], "live");
    assert_eq!(entry["utilization"]["edges"], 1);
    assert_eq!(entry["utilization"]["healthy_edges"], 1);
    assert!(
        entry["utilization"]["bandwidth_limit"]
            .as_i64()
            .expect("limit")
            > 0
    );

    // As published, on the platform's Foghorn; the node list there comes from the registry.
    eventually(Duration::from_secs(10), "the load reported", || {
        let owner = owner.clone();
        let id = id.clone();
        async move {
            let (_, page) = owner.get("/marketplace").await;
            page["clusters"]
                .as_array()
                .expect("clusters")
                .iter()
                .any(|c| {
                    c["id"] == id.as_str()
                        && c["utilization"]["source"] == "reported"
                        && c["utilization"]["healthy_edges"] == 1
                        && c["utilization"]["bandwidth_used"].as_i64().unwrap_or(0) > 0
                })
        }
    })
    .await;
    let (_, list) = owner.get(&nodes).await;
    assert_eq!(list[0]["node_id"], node_id.as_str());
    assert_eq!(
        list[0]["connected"],
        Value::Null,
        "not this Foghorn's cluster"
    );
    let (status, _) = other.get(&nodes).await;
    assert_eq!(status, 404);

    sim.abort();
    private.stop().await;
    platform.stop().await;
}

/// The official cluster follows the billing tier; only operators change it.
async fn billing_tier_moves_the_official_cluster(db: Db) {
    let server = TestServer::start(db).await;
    cluster(
        &server,
        NewCluster {
            official_for_tiers: vec!["pro".into(), "enterprise".into()],
            ..platform("pro-eu")
        },
    )
    .await;
    let (a_id, a) = tenant(&server, "A", Role::Tenant).await;
    let (_, operator) = tenant(&server, "Ops", Role::Operator).await;
    let path = format!("/tenants/{a_id}/billing-tier");

    let (status, _) = a.put(&path, json!({ "billing_tier": "pro" })).await;
    assert_eq!(status, 403);
    let (status, tenant) = operator.put(&path, json!({ "billing_tier": "pro" })).await;
    assert_eq!(status, 200, "{tenant}");
    assert_eq!(tenant["official_cluster_id"], "pro-eu");
    let (_, network) = a.get("/tenant/network").await;
    assert_eq!(network["official_cluster_id"], "pro-eu");
    assert_eq!(network["preferred_cluster_id"], "pro-eu");
    let (_, stream) = a.post("/streams", json!({ "name": "s" })).await;
    assert_eq!(stream["ingest"][0]["cluster_id"], "pro-eu");

    let (status, body) = operator.put(&path, json!({ "billing_tier": "gold" })).await;
    assert_eq!(status, 409, "no cluster is official for gold: {body}");
    // The advice names a command that marks an existing cluster official.
    let advice = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        advice.contains("foghorn admin cluster update --id")
            && advice.contains("--official-for gold"),
        "{advice}"
    );
    let (status, _) = operator
        .put(
            &format!("/tenants/{}/billing-tier", uuid::Uuid::new_v4()),
            json!({ "billing_tier": "pro" }),
        )
        .await;
    assert_eq!(status, 404);
    let (_, network) = a.get("/tenant/network").await;
    assert_eq!(
        network["billing_tier"], "pro",
        "a refused change changes nothing"
    );
    server.stop().await;
}

/// A tenant never reaches another's streams, clusters, subscriptions, tokens or nodes, by listing
/// or by guessing ids; malformed input is a JSON 4xx and writes nothing.
async fn isolation_and_bad_input(db: Db) {
    let server = TestServer::start(db).await;
    let (a_id, a) = tenant(&server, "A", Role::Tenant).await;
    let (b_id, b) = tenant(&server, "B", Role::Tenant).await;
    let (_, stream) = a.post("/streams", json!({ "name": "secret-show" })).await;
    let stream_id = stream["id"].as_str().expect("id");
    let (_, created) = a
        .post("/private-clusters", json!({ "name": "A Private" }))
        .await;
    let private = created["cluster"]["id"].as_str().expect("id");
    let (_, invite) = a
        .post(&format!("/clusters/{private}/invites"), json!({}))
        .await;
    let invite_id = invite["invite"]["id"].as_str().expect("id");

    // B, by id and by guessing.
    let guessed = uuid::Uuid::new_v4().to_string();
    for path in [
        format!("/streams/{stream_id}"),
        format!("/streams/{guessed}"),
        format!("/clusters/{private}"),
        format!("/clusters/{private}/nodes"),
        format!("/clusters/{private}/invites"),
        format!("/clusters/{private}/subscription-requests"),
    ] {
        let (status, body) = b.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(error_code(&body), "not_found");
    }
    for (path, body) in [
        (format!("/clusters/{private}/invites"), json!({})),
        (format!("/clusters/{private}/enrollment-tokens"), json!({})),
        (
            format!("/clusters/{private}/subscription-requests/{b_id}/approve"),
            json!({}),
        ),
        (
            "/subscriptions".to_string(),
            json!({ "cluster_id": private }),
        ),
    ] {
        let (status, answer) = b.post(&path, body).await;
        assert_eq!(status, 404, "{path}: {answer}");
    }
    for path in [
        format!("/clusters/{private}/invites/{invite_id}"),
        format!("/subscriptions/{private}"),
    ] {
        let (status, _) = b.delete(&path).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = b
        .put(
            "/tenant/preferred-cluster",
            json!({ "cluster_id": private }),
        )
        .await;
    assert_eq!(status, 409);
    let (_, streams) = b.get("/streams").await;
    assert_eq!(streams, json!([]));
    let (_, subs) = b.get("/subscriptions").await;
    assert_eq!(subs, json!([]));
    assert!(!b.marketplace_ids().await.contains(&private.to_string()));
    let (_, network) = b.get("/tenant/network").await;
    assert_eq!(network["tenant_id"], b_id.as_str());
    assert_eq!(ids(&network["clusters"]), ["test"]);
    // A's invite is still open after all that.
    let (_, listed) = a.get(&format!("/clusters/{private}/invites")).await;
    assert_eq!(listed[0]["status"], "open");

    // Bad ids.
    for path in [
        "/streams/not-a-uuid",
        "/clusters/UPPER",
        "/clusters/a%20b/nodes",
    ] {
        let (status, body) = b.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(error_code(&body), "bad_request");
    }

    // Bad bodies: each a JSON 4xx, none writes anything.
    let raw = |body: &'static str, kind: &'static str| {
        let url = b.base.clone() + "/streams";
        let token = b.token.clone();
        async move {
            let res = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("content-type", kind)
                .body(body)
                .send()
                .await
                .expect("send");
            let status = res.status();
            let body: Value = res.json().await.expect("JSON error body");
            (status, body)
        }
    };
    for (body, kind, expected) in [
        ("{\"name\": ", "application/json", 400),
        (
            "{\"name\": \"x\", \"owner\": \"a\"}",
            "application/json",
            400,
        ),
        ("{\"name\": 7}", "application/json", 400),
        ("[]", "application/json", 400),
        ("{\"name\": \"x\"} trailing", "application/json", 400),
        ("name=x", "application/x-www-form-urlencoded", 415),
        ("<name>x</name>", "text/xml", 415),
    ] {
        let (status, answer) = raw(body, kind).await;
        assert_eq!(status.as_u16(), expected, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let huge = json!({ "name": "x".repeat(70_000) });
    let (status, body) = b.post("/streams", huge).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");
    let (status, _) = b.post("/streams", json!({ "name": "../../etc" })).await;
    assert_eq!(status, 400);
    for body in [
        json!({ "name": "" }),
        json!({ "name": "nul\u{0}byte" }),
        json!({ "name": "ok", "description": "bell\u{7}" }),
    ] {
        let (status, answer) = b.post("/private-clusters", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (_, streams) = b.get("/streams").await;
    assert_eq!(streams, json!([]), "nothing was written");
    let (_, network) = b.get("/tenant/network").await;
    assert_eq!(
        ids(&network["clusters"]),
        ["test"],
        "no private cluster was created"
    );

    // Tokens.
    for token in [
        "",
        "nonsense",
        "fhk_0000000000000000000000000000000000000000",
    ] {
        let anon = Api {
            base: a.base.clone(),
            token: token.into(),
        };
        let (status, body) = anon.get("/streams").await;
        assert_eq!(status, 401, "{token:?}: {body}");
    }
    let (status, _) = a.get("/edges").await;
    assert_eq!(status, 403, "operators only");
    let (status, _) = a
        .put(
            &format!("/tenants/{a_id}/billing-tier"),
            json!({ "billing_tier": "free" }),
        )
        .await;
    assert_eq!(status, 403, "a tenant cannot change its own tier");
    server.stop().await;
}

/// Issue 14 item 9: a cluster's price, location and capacity can be set (they were always 0 or
/// empty): by its owner, or by a platform operator for a platform cluster; absent fields stay,
/// `null` clears the nullable ones.
async fn owners_set_price_location_and_capacity(db: Db) {
    let server = TestServer::start(db).await;
    cluster(&server, platform("eu-west")).await;
    let (_, owner) = tenant(&server, "Owner", Role::Tenant).await;
    let (_, other) = tenant(&server, "Other", Role::Tenant).await;
    let (_, operator) = tenant(&server, "Ops", Role::Operator).await;
    let (_, created) = owner
        .post("/private-clusters", json!({ "name": "Berlin Lab" }))
        .await;
    let id = created["cluster"]["id"].as_str().expect("id").to_string();
    let path = format!("/clusters/{id}");

    let (status, body) = owner
        .call(
            Method::PATCH,
            &path,
            Some(json!({
                "pricing_model": "MONTHLY", "price_cents": 1500,
                "latitude": 52.52, "longitude": 13.405,
                "max_edges": 20, "max_bandwidth": 1_250_000_000i64,
                "description": "two racks",
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = owner.get(&path).await;
    assert_eq!(shown, body, "stored as answered");
    for (field, value) in [
        ("pricing_model", json!("MONTHLY")),
        ("price_cents", json!(1500)),
        ("latitude", json!(52.52)),
        ("longitude", json!(13.405)),
        ("max_edges", json!(20)),
        ("max_bandwidth", json!(1_250_000_000i64)),
        ("description", json!("two racks")),
        ("name", json!("Berlin Lab")),
    ] {
        assert_eq!(shown[field], value, "{field}: {shown}");
    }

    // Nullable fields clear with null; the others refuse it; the location goes in one piece.
    let (status, body) = owner
        .call(Method::PATCH, &path, Some(json!({ "max_edges": null })))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["max_edges"], Value::Null);
    assert_eq!(body["price_cents"], 1500, "absent fields stay");
    for bad in [
        json!({}),
        json!({ "name": null }),
        json!({ "price_cents": null }),
        json!({ "price_cents": -1 }),
        json!({ "latitude": 10.0 }),
        json!({ "latitude": 91.0, "longitude": 0.0 }),
        json!({ "max_bandwidth": 0 }),
        json!({ "pricing_model": "FREE" }),
    ] {
        let (status, answer) = owner.call(Method::PATCH, &path, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    let (status, body) = owner
        .call(
            Method::PATCH,
            &path,
            Some(json!({ "latitude": null, "longitude": null })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["latitude"], &body["longitude"]),
        (&Value::Null, &Value::Null)
    );

    // Who may: not another tenant (404: the cluster is private), not a tenant on a platform
    // cluster (403), a platform operator there.
    let change = json!({ "price_cents": 9 });
    let (status, _) = other.call(Method::PATCH, &path, Some(change.clone())).await;
    assert_eq!(status, 404);
    let (status, _) = owner
        .call(Method::PATCH, "/clusters/eu-west", Some(change.clone()))
        .await;
    assert_eq!(status, 403);
    let (status, body) = operator
        .call(Method::PATCH, "/clusters/eu-west", Some(change))
        .await;
    assert_eq!((status, &body["price_cents"]), (StatusCode::OK, &json!(9)));
    let (_, page) = other.get("/marketplace?limit=200").await;
    let listed = page["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["id"] == "eu-west")
        .expect("eu-west listed");
    assert_eq!(listed["price_cents"], 9, "the marketplace shows it");
    server.stop().await;
}

/// What a tenant can read back of its own state, to show that refused calls wrote nothing.
async fn everything_of(api: &Api, private: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in [
        "/streams".to_string(),
        "/subscriptions".to_string(),
        "/tenant/network".to_string(),
        format!("/clusters/{private}"),
        format!("/clusters/{private}/invites"),
        format!("/clusters/{private}/subscription-requests"),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        seen.push(body);
    }
    seen
}

/// Issue 14 item 4, for every documented body at once: an array (serde would read it field by
/// field), a scalar, an unknown field or a missing required field is a 400 and writes nothing;
/// each body schema says so (an object, no other properties). Clearing the preferred cluster
/// takes an explicit `null`; `{}` is refused.
async fn bodies_are_objects_of_known_fields(db: Db) {
    let server = TestServer::start(db).await;
    cluster(&server, platform("eu-west")).await;
    let (a_id, a) = tenant(&server, "A", Role::Admin).await;
    let (_, created) = a
        .post("/private-clusters", json!({ "name": "A Lab" }))
        .await;
    let private = created["cluster"]["id"].as_str().expect("id").to_string();
    let (status, _) = a
        .post("/subscriptions", json!({ "cluster_id": "eu-west" }))
        .await;
    assert_eq!(status, 201);
    let (status, _) = a
        .put(
            "/tenant/preferred-cluster",
            json!({ "cluster_id": "eu-west" }),
        )
        .await;
    assert_eq!(status, 200);
    let before = everything_of(&a, &private).await;

    let doc: Value = reqwest::get(server.http("/api/v1/openapi.json"))
        .await
        .expect("GET openapi.json")
        .json()
        .await
        .expect("JSON");
    let mut checked = 0;
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        for (method, op) in methods.as_object().expect("methods") {
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            if schema.is_null() {
                continue;
            }
            checked += 1;
            let schema = match schema["$ref"].as_str() {
                Some(r) => {
                    &doc["components"]["schemas"]
                        [r.strip_prefix("#/components/schemas/").expect("component")]
                }
                None => schema,
            };
            let what = format!("{} {path}", method.to_uppercase());
            assert_eq!(schema["type"], "object", "{what}: {schema}");
            assert_eq!(schema["additionalProperties"], false, "{what}: {schema}");
            let concrete = path
                .replace("{cluster_id}", &private)
                .replace("{tenant_id}", &a_id)
                .replace("{invite_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{stream_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{node_id}", "0123456789ab");
            let method: Method = method.to_uppercase().parse().expect("method");
            let mut bodies = vec![
                (json!(["x"]), "JSON object"),
                (json!([null, null]), "JSON object"),
                (json!(null), "JSON object"),
                (json!("x"), "JSON object"),
                (json!(7), "JSON object"),
                (json!({ "zz_unknown": 1 }), "unknown field"),
            ];
            if schema["required"].as_array().is_some_and(|r| !r.is_empty()) {
                bodies.push((json!({}), "missing field"));
            }
            for (body, why) in bodies {
                let (status, answer) = a.call(method.clone(), &concrete, Some(body.clone())).await;
                assert_eq!(status, 400, "{what} {body}: {answer}");
                assert_eq!(error_code(&answer), "bad_request", "{what} {body}");
                let message = answer["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains(why), "{what} {body}: {message}");
            }
        }
    }
    assert!(checked >= 7, "every body was checked ({checked})");
    assert_eq!(
        everything_of(&a, &private).await,
        before,
        "refused bodies wrote nothing"
    );

    // `{}` used to put the official cluster back silently; only an explicit null does.
    let schema = &doc["components"]["schemas"]["SetPreferredCluster"];
    assert_eq!(schema["required"], json!(["cluster_id"]), "{schema}");
    let (status, answer) = a.put("/tenant/preferred-cluster", json!({})).await;
    assert_eq!(status, 400, "{answer}");
    let (_, network) = a.get("/tenant/network").await;
    assert_eq!(network["preferred_cluster_id"], "eu-west");
    let (status, network) = a
        .put("/tenant/preferred-cluster", json!({ "cluster_id": null }))
        .await;
    assert_eq!(status, 200, "{network}");
    assert_eq!(network["preferred_cluster_id"], "test");
    server.stop().await;
}

/// Every operation in the OpenAPI document is routed (a token-less call answers 401, not "no such
/// route"), and the document lists every operation the issue names.
async fn openapi_matches_routes(db: Db) {
    let server = TestServer::start(db).await;
    let doc: Value = reqwest::get(server.http("/api/v1/openapi.json"))
        .await
        .expect("GET openapi.json")
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, methods) in paths {
        for (method, op) in methods.as_object().expect("methods") {
            operations.push(format!("{} {path}", method.to_uppercase()));
            let concrete = path
                .replace("{cluster_id}", "some-cluster")
                .replace("{tenant_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{invite_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{stream_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{node_id}", "0123456789ab");
            assert!(!concrete.contains('{'), "unfilled parameter in {path}");
            let res = reqwest::Client::new()
                .request(
                    method.to_uppercase().parse().expect("method"),
                    server.http(&format!("/api/v1{concrete}")),
                )
                .send()
                .await
                .expect("send");
            assert_eq!(
                res.status(),
                401,
                "{method} {path} is routed and authenticated"
            );
            // Every $ref points at a component.
            for schema in [
                &op["requestBody"]["content"]["application/json"]["schema"],
                &op["responses"]
                    .as_object()
                    .expect("responses")
                    .values()
                    .next()
                    .expect("a success response")["content"]["application/json"]["schema"],
            ] {
                if let Some(reference) = schema["$ref"].as_str() {
                    let name = reference
                        .strip_prefix("#/components/schemas/")
                        .expect("component ref");
                    assert!(
                        doc["components"]["schemas"][name].is_object(),
                        "{reference} is defined"
                    );
                }
            }
        }
    }
    for expected in [
        "GET /marketplace",
        "POST /subscriptions",
        "GET /subscriptions",
        "DELETE /subscriptions/{cluster_id}",
        "GET /clusters/{cluster_id}/subscription-requests",
        "POST /clusters/{cluster_id}/subscription-requests/{tenant_id}/approve",
        "POST /clusters/{cluster_id}/subscription-requests/{tenant_id}/reject",
        "POST /clusters/{cluster_id}/invites",
        "DELETE /clusters/{cluster_id}/invites/{invite_id}",
        "PUT /tenant/preferred-cluster",
        "GET /tenant/network",
        "POST /private-clusters",
        "POST /clusters/{cluster_id}/enrollment-tokens",
        "GET /clusters/{cluster_id}/nodes",
        "DELETE /clusters/{cluster_id}/nodes/{node_id}",
        "POST /streams",
        "GET /streams",
        "GET /streams/{stream_id}",
        "PUT /tenants/{tenant_id}/billing-tier",
        "PATCH /clusters/{cluster_id}",
    ] {
        assert!(
            operations.iter().any(|o| o == expected),
            "{expected} documented"
        );
    }
    // The subscribe body schema refuses unknown fields, as the route does.
    let subscribe = &doc["components"]["schemas"]["Subscribe"];
    assert_eq!(subscribe["additionalProperties"], false, "{subscribe}");
    let res = reqwest::get(server.http("/api/v1/no-such-thing"))
        .await
        .expect("send");
    assert_eq!(res.status(), 404);
    server.stop().await;
}

/// A private cluster goes to a live Foghorn cell: this server's own (the cell reports itself),
/// one asked for by id or by region when it is live, never one that is not (503, nothing
/// created). The answer names the cell's addresses and the exact provision command.
async fn private_clusters_go_to_a_live_cell(db: Db) {
    let server = TestServer::start_with(db, |c| {
        c.cluster.report_interval = Duration::from_millis(200);
    })
    .await;
    let registry = server.registry();
    eventually(
        Duration::from_secs(10),
        "this Foghorn reports its cell",
        || async {
            registry
                .live_cells()
                .await
                .expect("cells")
                .iter()
                .any(|c| c.id() == "test" && c.hosts_private)
        },
    )
    .await;
    let (owner_id, owner) = tenant(&server, "Owner", Role::Tenant).await;

    let (status, created) = owner
        .post("/private-clusters", json!({ "name": "Home Lab" }))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["cluster"]["id"].as_str().expect("id").to_string();
    let grpc = registry
        .cluster("test")
        .await
        .expect("cluster")
        .expect("exists")
        .grpc_addr;
    assert!(!grpc.is_empty(), "the Foghorn publishes its gRPC address");
    assert_eq!(created["foghorn"]["cell"], "test", "{created}");
    assert_eq!(created["foghorn"]["grpc_addr"], grpc.as_str());
    // The cell publishes its HTTP listener too.
    assert_eq!(
        created["foghorn"]["http_url"],
        format!("https://{}", server.server().http_addr),
        "{created}"
    );
    assert_eq!(
        created["foghorn"]["viewer_url"],
        format!("https://foghorn.{id}.example.net")
    );
    let secret = created["enrollment_token"]["token"]
        .as_str()
        .expect("token");
    assert_eq!(
        created["enrollment_token"]["provision_command"],
        format!("frameworks edge provision --foghorn {grpc} --enrollment-token {secret} --ssh user@host")
    );
    // The command handed out is one the CLI takes: it runs the pipeline, whose first step
    // finds no SSH server at the (loopback) host it is given.
    let command = created["enrollment_token"]["provision_command"]
        .as_str()
        .expect("command")
        .replace("user@host", "user@127.0.0.1:1");
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[0], "frameworks");
    let home = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frameworks"))
        .args(&words[1..])
        .env("FRAMEWORKS_CONFIG_DIR", home.path())
        .output()
        .expect("run frameworks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("[127.0.0.1] [1/7] Preflight ... FAILED")
            && stdout.contains("nothing answers SSH there")
            && stdout.contains("Succeeded 0/1"),
        "{stdout}"
    );
    assert_eq!(
        registry.serving_cell(&id).await.expect("cell"),
        Some("test".into())
    );
    assert_eq!(
        registry.serving_cell("test").await.expect("cell"),
        Some("test".into())
    );
    assert_eq!(
        registry.cell_clusters("test").await.expect("served"),
        std::slice::from_ref(&id)
    );
    // Later tokens of the cluster name the same Foghorn.
    let (status, token) = owner
        .post(&format!("/clusters/{id}/enrollment-tokens"), json!({}))
        .await;
    assert_eq!(status, 201, "{token}");
    assert!(token["provision_command"]
        .as_str()
        .expect("command")
        .starts_with(&format!("frameworks edge provision --foghorn {grpc} ")));

    // Another live cell, in region "us": asked by id, or by region.
    cluster(
        &server,
        NewCluster {
            region: "us".into(),
            grpc_addr: "https://foghorn.far.example.net:18019".into(),
            ..platform("far")
        },
    )
    .await;
    let report = foghorn::registry::CellReport {
        id: "far",
        edges: 5,
        started_at: 1,
    };
    registry.report_cell(&report).await.expect("report");
    let far = "https://foghorn.far.example.net:18019";
    for body in [
        json!({ "name": "By Id", "cell": "far" }),
        json!({ "name": "By Region", "region": "US" }),
    ] {
        let (status, created) = owner.post("/private-clusters", body.clone()).await;
        assert_eq!(status, 201, "{body}: {created}");
        assert_eq!(created["foghorn"]["cell"], "far", "{body}: {created}");
        assert_eq!(created["foghorn"]["grpc_addr"], far);
        // Any Foghorn of the platform sends the cluster's edges to the cell serving it.
        let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let reserved =
            foghorn::proto::edge_provisioning_client::EdgeProvisioningClient::new(channel)
                .pre_register_edge(foghorn::proto::PreRegisterEdgeRequest {
                    enrollment_token: created["enrollment_token"]["token"]
                        .as_str()
                        .expect("token")
                        .into(),
                    external_ip: "127.0.0.1".into(),
                    preferred_node_id: String::new(),
                    host_fingerprint: "machine-1".into(),
                })
                .await
                .expect("pre-register")
                .into_inner();
        assert_eq!(reserved.foghorn_grpc_addr, far);
        // An edge that comes here with it anyway is told where to go.
        let token = created["enrollment_token"]["token"]
            .as_str()
            .expect("token");
        let mut edge =
            common::EdgeConn::open(&server.grpc_url(), common::register_with_token(token)).await;
        let (code, message) = edge.error_frame().await;
        assert_eq!(code, foghorn::proto::ErrorCode::EnrollmentFailed);
        assert!(
            message.ends_with(&format!("; connect to its Foghorn at {far}")),
            "{message}"
        );
    }
    // One assigned to this Foghorn's own cell: served since its creation answered, so its
    // token enrolls an edge here.
    let mut edge =
        common::EdgeConn::open(&server.grpc_url(), common::register_with_token(secret)).await;
    assert_eq!(edge.seed().await.cluster_id, id);
    // Without a hint: the cell with fewer edges (this one has none).
    let (_, created) = owner
        .post("/private-clusters", json!({ "name": "Any" }))
        .await;
    assert_eq!(created["foghorn"]["cell"], "test", "{created}");

    // A cell that is not live (or not a cell at all): 503, and nothing is created.
    let owned = || async {
        registry
            .usable_clusters(&owner_id)
            .await
            .expect("clusters")
            .len()
    };
    let before = owned().await;
    for cell in ["gone", "eu-west"] {
        let (status, body) = owner
            .post(
                "/private-clusters",
                json!({ "name": "Nowhere", "cell": cell }),
            )
            .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(error_code(&body), "unavailable");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("message")
                .contains(cell),
            "{body}"
        );
    }
    assert_eq!(owned().await, before, "nothing half-created");
    let (status, body) = owner
        .post(
            "/private-clusters",
            json!({ "name": "Bad", "cell": "Not A Cell!" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}

/// Without a cell or region asked for, a private cluster goes to the live cell nearest to the
/// caller, placed by GeoIP of its address: from a New York address to the New York cell, from a
/// Paris address to the Paris one (the test database maps 127.0.0.6 and 127.0.0.5 there).
async fn private_clusters_go_to_the_nearest_cell(db: Db) {
    let mmdb =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geoip-test.mmdb");
    let server = TestServer::start_with(db, |c| {
        c.geoip.mmdb_path = mmdb.display().to_string();
    })
    .await;
    let registry = server.registry();
    for (id, at) in [("ny", (40.7, -74.0)), ("paris", (48.85, 2.35))] {
        cluster(&server, platform(id)).await;
        let changes = foghorn::registry::ClusterChanges {
            location: Some(Some(at)),
            ..Default::default()
        };
        registry
            .update_cluster(id, &changes)
            .await
            .expect("location");
        let report = foghorn::registry::CellReport {
            id,
            edges: 100,
            started_at: 1,
        };
        registry.report_cell(&report).await.expect("report");
    }
    let (_, owner) = tenant(&server, "Owner", Role::Tenant).await;
    for (from, cell) in [("127.0.0.6", "ny"), ("127.0.0.5", "paris")] {
        let client = reqwest::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().expect("ip"))
            .build()
            .expect("client");
        let created: Value = client
            .post(format!("{}/private-clusters", owner.base))
            .bearer_auth(&owner.token)
            .json(&json!({ "name": "Near" }))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(created["foghorn"]["cell"], cell, "from {from}: {created}");
    }
    server.stop().await;
}

/// A private cluster assigned to the cell of the Foghorn that answers the creation is served by
/// it when the answer comes, not at the cell's next poll of its assignments: the token works the
/// moment the tenant has it. (The poll here is ten minutes away.)
async fn a_created_private_cluster_is_served_before_the_answer(db: Db) {
    let server = TestServer::start_with(db, |c| {
        c.federation.topology_poll = Duration::from_secs(600);
    })
    .await;
    let (owner_id, owner) = tenant(&server, "Owner", Role::Tenant).await;
    // The follower's first poll, at start, is behind it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for name in ["Home Lab", "Second Lab"] {
        let (status, created) = owner
            .post("/private-clusters", json!({ "name": name }))
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["cluster"]["id"].as_str().expect("id");
        assert!(server.server().cell.serves(id), "{name} served at once");
    }
    assert_eq!(server.server().cell.len(), 3);

    // One assigned to this cell elsewhere (another Foghorn's API, an operator's command): until
    // the cell's next poll, its edges are told to retry, not sent away.
    let registry = server.registry();
    let elsewhere = registry
        .create_private_cluster(&foghorn::registry::NewPrivateCluster {
            tenant_id: owner_id,
            name: "Third Lab".into(),
            region: String::new(),
            description: String::new(),
            enrollment_expires_at: foghorn::registry::now_ms() + 3_600_000,
            cell_id: "test".into(),
        })
        .await
        .expect("private cluster");
    let token = common::register_with_token(&elsewhere.enrollment_secret);
    let mut edge = common::EdgeConn::open(&server.grpc_url(), token).await;
    let (code, message) = edge.error_frame().await;
    assert_eq!(code, foghorn::proto::ErrorCode::EnrollmentFailed);
    assert!(
        message.contains("just assigned to this Foghorn's cell"),
        "{message}"
    );
    server.stop().await;
}

on_both!(
    a_created_private_cluster_is_served_before_the_answer,
    browse_connect_prefer_stream,
    approval_flow,
    invites,
    private_cluster_enrollment,
    private_clusters_go_to_a_live_cell,
    private_clusters_go_to_the_nearest_cell,
    billing_tier_moves_the_official_cluster,
    isolation_and_bad_input,
    bodies_are_objects_of_known_fields,
    owners_set_price_location_and_capacity,
    openapi_matches_routes,
);
