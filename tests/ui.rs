//! The dashboard at `/ui` in a real headless Chromium (chromedriver on a free port, driven by
//! fantoccini) against a real Foghorn on PostgreSQL: sign-in, Marketplace (Connect, Request
//! Access → Pending...), approval by the owner in a second browser, Set as Preferred, Create
//! Private Cluster (token once), Streams (both clusters' ingest URLs), isolation, a revoked
//! token. The same test makes the screenshots of `docs/screenshots/` (see [`shot_path`]).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, register_with_token, stats_frame_at_cpu, Db, EdgeConn, TestServer};
use fantoccini::{Client, ClientBuilder, Locator};
use foghorn::registry::{NewCluster, Role};

const WAIT: Duration = Duration::from_secs(20);

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (scripts/test installs chromium-driver)");
        let driver = Driver { child, port };
        common::eventually(WAIT, "chromedriver listens", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        driver
    }

    /// A new browser session (its own sessionStorage) of `width` x `height`.
    async fn browser(&self, width: u32, height: u32) -> Client {
        let mut options = serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", format!("--window-size={width},{height}")],
        });
        // Chromium's windows are at least 500 px wide; a phone's width is emulated.
        if width < 500 {
            options["mobileEmulation"] = serde_json::json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0 },
            });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the screenshots go: the folder `FOGHORN_SCREENSHOTS` names (relative to this repository;
/// `docs/screenshots` renews the README's), else a scratch folder, so that a test run leaves the
/// tree as it was.
fn shot_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("FOGHORN_SCREENSHOTS") {
        Some(dir) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir),
        None => std::env::temp_dir().join("foghorn-screenshots"),
    };
    dir.join(format!("{name}.png"))
}

async fn screenshot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(shot_path(name).parent().expect("parent")).expect("dir");
    std::fs::write(shot_path(name), png).expect("write screenshot");
}

/// Waits for the element at `css` whose text contains `text`, and returns its text.
async fn wait_text(b: &Client, css: &str, text: &str) -> String {
    wait_text_without(b, css, text, None).await
}

/// Waits for the element at `css` whose text contains `text` and, when `absent` is given, not
/// that (a list that has been redrawn, not the one before it), and returns its text.
async fn wait_text_without(b: &Client, css: &str, text: &str, absent: Option<&str>) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        if let Ok(els) = b.find_all(Locator::Css(css)).await {
            for el in els {
                if let Ok(t) = el.text().await {
                    if t.contains(text) && absent.is_none_or(|a| !t.contains(a)) {
                        return t;
                    }
                    last = t;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {css} with {text:?} and without {absent:?} within {WAIT:?} (last text: {last:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scrolls the first element at `css` to the top of the window (for a screenshot).
async fn scroll_to(b: &Client, css: &str) {
    b.execute(
        "document.querySelector(arguments[0]).scrollIntoView()",
        vec![serde_json::json!(css)],
    )
    .await
    .expect("scroll");
}

async fn click(b: &Client, css: &str) {
    b.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn sign_in(b: &Client, server: &TestServer, token: &str) {
    b.goto(&server.http("/ui")).await.expect("goto /ui");
    let input = b
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("token"))
        .await
        .expect("token field");
    input.send_keys(token).await.expect("type token");
    click(b, "#signin-button").await;
    wait_text(b, "h1", "Marketplace").await;
}

/// A tenant of this server's cluster with a tenant token: (tenant id, token id, token).
async fn tenant(server: &TestServer, name: &str) -> (String, String, String) {
    let registry = server.registry();
    let tenant = registry.create_tenant(name, "test").await.expect("tenant");
    let (api_token, token) = registry
        .create_api_token(&tenant.id, Role::Tenant)
        .await
        .expect("token");
    (tenant.id, api_token.id, token)
}

fn card(id: &str) -> String {
    format!("article.cluster[data-cluster-id=\"{id}\"]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser() {
    let server = TestServer::start(Db::Postgres).await;
    let (owner_id, _, owner_token) = tenant(&server, "Owner Org").await;
    let (acme_id, token_id, token) = tenant(&server, "Acme").await;
    let registry = server.registry();
    registry
        .create_cluster(&NewCluster {
            region: "eu".into(),
            description: "Free community edges".into(),
            ..NewCluster::platform("eu-free", "EU Free")
        })
        .await
        .expect("free cluster");
    registry
        .create_cluster(&NewCluster {
            region: "us".into(),
            requires_approval: true,
            owner_tenant_id: Some(owner_id.clone()),
            ..NewCluster::platform("us-approval", "US Approval")
        })
        .await
        .expect("approval cluster");

    // The page itself: served by Foghorn with its security headers, not read as a stream name.
    let res = reqwest::get(server.http("/ui")).await.expect("GET /ui");
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert!(res.text().await.expect("body").contains("/ui/app.js"));

    let driver = Driver::start().await;
    let b = driver.browser(1280, 900).await;

    // Sign-in: a wrong token stays on sign-in with the API's refusal.
    b.goto(&server.http("/ui")).await.expect("goto");
    screenshot(&b, "sign-in").await;
    let input = b.find(Locator::Id("token")).await.expect("token field");
    input.send_keys("fh_not_a_token").await.expect("type");
    click(&b, "#signin-button").await;
    wait_text(&b, "#signin-message", "not accepted").await;

    sign_in(&b, &server, &token).await;

    // Marketplace: connect to the free cluster, request access to the approval one.
    wait_text(&b, &card("eu-free"), "Free").await;
    wait_text(&b, &card("us-approval"), "Request Access").await;
    click(&b, &format!("{} button.subscribe", card("eu-free"))).await;
    wait_text(&b, &card("eu-free"), "Connected").await;
    click(&b, &format!("{} button.subscribe", card("us-approval"))).await;
    wait_text(&b, &card("us-approval"), "Pending...").await;
    screenshot(&b, "marketplace").await;

    // Filters: by region only the US cluster.
    let region = b.find(Locator::Id("filter-region")).await.expect("region");
    region.send_keys("us").await.expect("type region");
    click(&b, "#filter-apply").await;
    // The list is redrawn when the filtered answer arrives: wait for it, not the list before.
    wait_text_without(&b, "#marketplace-list", "US Approval", Some("EU Free")).await;

    // The owner, in another browser session, approves on My Network.
    let owner = driver.browser(1280, 1100).await;
    sign_in(&owner, &server, &owner_token).await;
    owner
        .goto(&server.http("/ui#network"))
        .await
        .expect("network");
    wait_text(&owner, "section.owned .requests", "Acme").await;
    scroll_to(&owner, "section.owned").await;
    screenshot(&owner, "my-network-owner").await;
    click(&owner, "section.owned button.approve").await;
    wait_text(&owner, "section.owned .requests", "No pending requests").await;
    owner.close().await.expect("close owner");

    // Back as the tenant: the approval cluster is active; set it as preferred.
    b.goto(&server.http("/ui#network")).await.expect("network");
    let us = "article.network-cluster[data-cluster-id=\"us-approval\"]";
    wait_text(&b, us, "subscribed").await;
    click(&b, &format!("{us} button.set-preferred")).await;
    let text = wait_text(&b, us, "preferred").await;
    assert!(
        text.contains("always-on"),
        "peering of the preferred: {text}"
    );
    let official = wait_text(
        &b,
        "article.network-cluster[data-cluster-id=\"test\"]",
        "official",
    )
    .await;
    assert!(official.contains("always-on"), "official: {official}");
    screenshot(&b, "my-network").await;

    // Create a private cluster: the token once, gone after a reload.
    b.goto(&server.http("/ui#private")).await.expect("private");
    let name = b
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("private-name"))
        .await
        .expect("name field");
    name.send_keys("Acme Home").await.expect("type name");
    click(&b, "#private-create").await;
    let command = wait_text(&b, "#provision-command", "frameworks edge provision").await;
    let shown = b
        .find(Locator::Id("bootstrap-token"))
        .await
        .expect("token")
        .text()
        .await
        .expect("text");
    assert!(
        shown.len() > 10 && command.contains(&shown),
        "{shown} / {command}"
    );
    screenshot(&b, "create-private-cluster").await;
    b.refresh().await.expect("reload");
    wait_text(&b, "h1", "Create Private Cluster").await;
    let source = b.source().await.expect("source");
    assert!(
        !source.contains(&shown),
        "the token is shown again after a reload"
    );

    // My Network: the private cluster's edges with live load, refreshed without a reload.
    b.goto(&server.http("/ui#network")).await.expect("network");
    wait_text(&b, "section.owned", "No edges yet").await;
    let mut edge = EdgeConn::open(&server.grpc_url(), register_with_token(&shown)).await;
    let node_id = edge.seed().await.node_id;
    edge.send(stats_frame_at_cpu(420, vec![])).await;
    let row = format!("section.owned tr[data-node-id=\"{node_id}\"]");
    let text = wait_text(&b, &row, "42.0%").await;
    assert!(
        text.contains("normal") && text.contains("4.0 GiB / 16.0 GiB"),
        "{text}"
    );
    scroll_to(&b, "section.owned").await;
    screenshot(&b, "my-network-edges").await;
    edge.send(stats_frame_at_cpu(730, vec![])).await;
    wait_text(&b, &row, "73.0%").await;

    // Streams: key once, ingest URLs of the preferred and the official cluster, labelled.
    b.goto(&server.http("/ui#streams")).await.expect("streams");
    let name = b
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("stream-name"))
        .await
        .expect("stream name");
    name.send_keys("launch").await.expect("type");
    click(&b, "#stream-create").await;
    let result = wait_text(&b, "#stream-result", "Stream key").await;
    assert!(
        result.contains("us-approval") && result.contains("(test)"),
        "{result}"
    );
    let key = b
        .find(Locator::Id("stream-key"))
        .await
        .expect("key")
        .text()
        .await
        .expect("key text");
    assert!(!key.is_empty());
    assert!(result.contains("rtmp://"), "{result}");
    screenshot(&b, "streams").await;

    // Isolation: another tenant never sees Acme's private cluster.
    let (_, _, other_token) = tenant(&server, "Other").await;
    let other = driver.browser(360, 800).await;
    sign_in(&other, &server, &other_token).await;
    let list = wait_text(&other, "#marketplace-list", "EU Free").await;
    assert!(!list.contains("Acme Home"), "{list}");
    screenshot(&other, "marketplace-360px").await;
    other.goto(&server.http("/ui#network")).await.expect("net");
    let net = wait_text(&other, "#network", "official").await;
    assert!(!net.contains("Acme Home"), "{net}");
    other.close().await.expect("close other");

    // A revoked token sends the signed-in tab back to sign-in with a message.
    server
        .registry()
        .revoke_api_token(&acme_id, &token_id)
        .await
        .expect("revoke");
    b.goto(&server.http("/ui#marketplace")).await.expect("mp");
    wait_text(&b, "#signin-message", "expired or revoked").await;

    b.close().await.expect("close");
    drop(edge);
    drop(driver);
    server.stop().await;
}
