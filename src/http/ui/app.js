// The Foghorn dashboard. It calls only /api/v1 with the token the user pasted (kept in
// sessionStorage, sent as a bearer header), so it can do nothing the API refuses. Views are
// built with DOM calls (never innerHTML), so names coming from the API are text, not markup.
"use strict";

const TOKEN_KEY = "foghorn.token";
const EDGE_REFRESH_MS = 3000;
let refreshTimer = null;

// ---- helpers -------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function main() { return document.getElementById("main"); }

function show(...nodes) {
  const m = main();
  m.replaceChildren(...nodes);
}

function errorBox(id) { return h("p", { id, class: "error", role: "alert", hidden: true }); }

function setError(box, err) {
  box.textContent = err ? (err.message || String(err)) : "";
  box.hidden = !err;
}

class ApiError extends Error {}

// One API call. A 401 means the token is no longer good: back to sign-in with a message.
async function api(method, path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const init = { method, headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch("/api/v1" + path, init);
  } catch (e) {
    throw new ApiError("Foghorn could not be reached. Check your connection and try again.");
  }
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401) {
    signOut("Your token was not accepted (it may be expired or revoked). Sign in again.");
    throw new ApiError("signed out");
  }
  if (!res.ok) {
    const msg = data && data.error && data.error.message;
    throw new ApiError(msg || ("The request failed (" + res.status + ")."));
  }
  return data;
}

function price(c) {
  const model = c.pricing_model;
  if (model === "FREE_UNMETERED") return "Free";
  if (model === "TIER_INHERIT") return "Included in your tier";
  const amount = (c.price_cents / 100).toFixed(2);
  if (model === "MONTHLY") return "$" + amount + " / month";
  if (model === "METERED") return "$" + amount + " / GB";
  return model;
}

function pricingLabel(model) {
  return { FREE_UNMETERED: "Free (unmetered)", TIER_INHERIT: "Tier inherit", METERED: "Metered",
    MONTHLY: "Monthly" }[model] || model;
}

function badge(text, cls) { return h("span", { class: "badge " + (cls || text) }, text); }

function copyButton(getText, label) {
  const status = h("span", { class: "meta", "aria-live": "polite" });
  const btn = h("button", { type: "button", class: "secondary", onclick: async () => {
    const text = getText();
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = " Copied.";
    } catch (e) {
      status.textContent = " Select the text and copy it.";
    }
  } }, label || "Copy");
  return h("span", {}, btn, status);
}

function stopRefresh() {
  if (refreshTimer !== null) { clearInterval(refreshTimer); refreshTimer = null; }
}

// ---- sign-in -------------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopRefresh();
  if (location.hash !== "#signin") history.replaceState(null, "", "#signin");
  renderSignIn(message);
}

function renderSignIn(message) {
  document.getElementById("nav").hidden = true;
  const err = errorBox("signin-error");
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off",
    required: true, spellcheck: "false" });
  const form = h("form", { id: "signin-form", class: "card", onsubmit: async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) { setError(err, new Error("Paste your API token.")); return; }
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api("GET", "/tenant/network");
    } catch (e) {
      if (e.message !== "signed out") { sessionStorage.removeItem(TOKEN_KEY); setError(err, e); }
      return;
    }
    location.hash = "#marketplace";
    route();
  } },
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "meta" }, "The token stays in this browser tab only and is sent with each request."),
    h("button", { type: "submit", id: "signin-button" }, "Sign in"));
  const nodes = [h("h1", {}, "Sign in")];
  if (message) nodes.push(h("p", { id: "signin-message", class: "notice", role: "status" }, message));
  nodes.push(form, err);
  show(...nodes);
  input.focus();
}

// ---- marketplace ---------------------------------------------------------------------------

const filters = { pricing_model: "", tier: "", region: "" };

function select(id, label, options, value, onchange) {
  return h("div", {},
    h("label", { for: id }, label),
    h("select", { id, onchange }, options.map(([v, t]) => h("option", { value: v, selected: v === value }, t))));
}

async function renderMarketplace() {
  const err = errorBox("marketplace-error");
  const list = h("div", { id: "marketplace-list", class: "cards", "aria-live": "polite" });
  const reload = () => loadMarketplace(list, err);
  const region = h("input", { id: "filter-region", value: filters.region, placeholder: "any" });
  const form = h("form", { class: "filters card", "aria-label": "Filters", onsubmit: (ev) => {
    ev.preventDefault(); filters.region = region.value.trim(); reload();
  } },
    select("filter-pricing", "Pricing model", [["", "Any"], ["FREE_UNMETERED", "Free (unmetered)"],
      ["TIER_INHERIT", "Tier inherit"], ["METERED", "Metered"], ["MONTHLY", "Monthly"]],
      filters.pricing_model, (ev) => { filters.pricing_model = ev.target.value; reload(); }),
    select("filter-tier", "Tier", [["", "Any"], ["shared-community", "shared-community"],
      ["shared-lb", "shared-lb"], ["dedicated", "dedicated"]],
      filters.tier, (ev) => { filters.tier = ev.target.value; reload(); }),
    h("div", {}, h("label", { for: "filter-region" }, "Region"), region),
    h("div", {}, h("button", { type: "submit", id: "filter-apply" }, "Apply filters")));
  show(h("h1", {}, "Infrastructure → Marketplace"), form, err, list);
  await reload();
}

async function loadMarketplace(list, err) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  q.set("limit", "200");
  try {
    const page = await api("GET", "/marketplace?" + q.toString());
    setError(err, null);
    list.replaceChildren(...(page.clusters.length ? page.clusters.map((c) => clusterCard(c, list, err))
      : [h("p", { class: "meta" }, "No cluster matches these filters.")]));
  } catch (e) { setError(err, e); }
}

function clusterCard(c, list, err) {
  const u = c.utilization;
  const pct = u ? Math.max(0, Math.min(100, Math.round(u.bandwidth_utilization * 100))) : 0;
  const status = c.subscription_status || (c.owned ? "owned" : null);
  const cardErr = h("p", { class: "error", role: "alert", hidden: true });
  const actions = h("div", { class: "row" });
  const subscribe = async (btn, invite) => {
    btn.disabled = true;
    try {
      const body = { cluster_id: c.id };
      if (invite) body.invite_token = invite;
      await api("POST", "/subscriptions", body);
      await loadMarketplace(list, err);
    } catch (e) { btn.disabled = false; setError(cardErr, e); }
  };
  if (status === "active" || c.owned) {
    actions.append(h("span", { class: "meta" }, c.owned ? "Your cluster" : "Connected"));
  } else if (status === "pending") {
    actions.append(h("button", { type: "button", disabled: true, class: "secondary" }, "Pending..."));
  } else {
    const label = c.requires_approval ? "Request Access" : "Connect";
    const btn = h("button", { type: "button", class: "subscribe", onclick: () => subscribe(btn, null) }, label);
    const inviteId = "invite-" + c.id;
    const invite = h("input", { id: inviteId, class: "invite", autocomplete: "off" });
    const use = h("button", { type: "button", class: "secondary", onclick: () => {
      if (!invite.value.trim()) { setError(cardErr, new Error("Paste the invite token first.")); return; }
      subscribe(use, invite.value.trim());
    } }, "Use invite");
    actions.append(btn, h("div", {}, h("label", { for: inviteId }, "Invite token"), invite), use);
  }
  return h("article", { class: "card cluster", "data-cluster-id": c.id, "aria-label": c.name },
    h("h2", {}, c.name),
    h("div", {}, badge(pricingLabel(c.pricing_model), "pricing"), badge(c.tier, "tier"),
      status ? badge(status, "status " + status) : null),
    h("dl", {},
      h("dt", {}, "Region"), h("dd", { class: "region" }, c.region || "—"),
      h("dt", {}, "Price"), h("dd", { class: "price" }, price(c)),
      h("dt", {}, "Edges"), h("dd", { class: "edges" }, u ? (u.healthy_edges + " healthy of " + u.edges) : "—"),
      h("dt", {}, "Utilization"), h("dd", {}, u ? pct + "% of bandwidth" : "not shared")),
    h("div", { class: "bar", role: "progressbar", "aria-label": "Utilization of " + c.name,
      "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct }, h("span", { style: null })),
    c.description ? h("p", { class: "meta" }, c.description) : null,
    actions, cardErr);
}

// The bar's width is set through CSSOM (allowed by the CSP, unlike a style attribute).
function fillBars(root) {
  for (const bar of root.querySelectorAll(".bar[aria-valuenow]")) {
    bar.firstChild.style.width = bar.getAttribute("aria-valuenow") + "%";
  }
}

// ---- my network ----------------------------------------------------------------------------

async function renderNetwork() {
  const err = errorBox("network-error");
  const body = h("div", { id: "network" });
  show(h("h1", {}, "Infrastructure → My Network"), err, body);
  let net;
  try { net = await api("GET", "/tenant/network"); } catch (e) { setError(err, e); return; }
  const cards = net.clusters.map((c) => networkCard(c, err));
  body.replaceChildren(
    h("p", { class: "meta" }, "Billing tier: ", h("strong", {}, net.billing_tier)),
    h("div", { class: "cards" }, cards));
  const owned = net.clusters.filter((c) => c.owned);
  if (owned.length) {
    body.append(h("h2", {}, "Your clusters"));
    for (const c of owned) body.append(ownedSection(c));
    await refreshOwned(owned);
    stopRefresh();
    refreshTimer = setInterval(() => refreshOwned(owned), EDGE_REFRESH_MS);
  }
}

function networkCard(c, err) {
  const cardErr = h("p", { class: "error", role: "alert", hidden: true });
  const preferred = c.roles.includes("preferred");
  const btn = preferred ? null : h("button", { type: "button", class: "secondary set-preferred", onclick: async () => {
    btn.disabled = true;
    try { await api("PUT", "/tenant/preferred-cluster", { cluster_id: c.id }); await renderNetwork(); }
    catch (e) { btn.disabled = false; setError(cardErr, e); }
  } }, "Set as Preferred");
  return h("article", { class: "card network-cluster", "data-cluster-id": c.id, "aria-label": c.name },
    h("h2", {}, c.name),
    h("div", { class: "roles" }, c.roles.map((r) => badge(r, "role"))),
    h("dl", {},
      h("dt", {}, "Region"), h("dd", {}, c.region || "—"),
      h("dt", {}, "Tier"), h("dd", {}, c.tier),
      h("dt", {}, "Peering"), h("dd", { class: "peering" }, c.peering),
      h("dt", {}, "Channel"), h("dd", { class: "channel" }, badge(c.channel)),
      h("dt", {}, "Edges scored here"), h("dd", {}, c.edges_scored ? "yes" : "no")),
    btn, cardErr);
}

function ownedSection(c) {
  return h("section", { class: "card owned", "data-cluster-id": c.id, "aria-label": "Edges of " + c.name },
    h("h2", {}, c.name),
    h("h3", {}, "Edges"),
    h("p", { class: "meta" }, "Live load, refreshed every few seconds."),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Node", "Status", "Mode", "Connected", "Routable", "CPU", "RAM", "Bandwidth", "Viewers", "Last seen"]
        .map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", { class: "edges-body" }))),
    h("p", { class: "meta edges-updated", "aria-live": "off" }),
    h("h3", {}, "Access requests"),
    h("div", { class: "requests" }),
    h("p", { class: "error owned-error", role: "alert", hidden: true }));
}

function gib(v) { return (v / (1 << 30)).toFixed(1) + " GiB"; }

function bytesPerSecond(v) {
  if (v === null || v === undefined) return "—";
  const units = ["B/s", "KB/s", "MB/s", "GB/s"];
  let i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return v.toFixed(i ? 1 : 0) + " " + units[i];
}

async function refreshOwned(owned) {
  for (const c of owned) {
    const sec = document.querySelector('section.owned[data-cluster-id="' + CSS.escape(c.id) + '"]');
    if (!sec) { stopRefresh(); return; }
    const err = sec.querySelector(".owned-error");
    try {
      const [nodes, requests] = await Promise.all([
        api("GET", "/clusters/" + encodeURIComponent(c.id) + "/nodes"),
        api("GET", "/clusters/" + encodeURIComponent(c.id) + "/subscription-requests")]);
      setError(err, null);
      sec.querySelector(".edges-body").replaceChildren(...(nodes.length ? nodes.map((n) => h("tr", { "data-node-id": n.node_id },
        h("td", { class: "mono" }, n.node_id), h("td", {}, n.status), h("td", { class: "mode" }, n.mode || "—"),
        h("td", { class: "connected" }, n.connected === null ? "—" : (n.connected ? "yes" : "no")),
        h("td", {}, n.routable === null ? "—" : (n.routable ? "yes" : "no")),
        h("td", { class: "cpu" }, n.cpu_tenths === null ? "—" : (n.cpu_tenths / 10).toFixed(1) + "%"),
        h("td", { class: "ram" }, n.ram_used_bytes === null ? "—" : gib(n.ram_used_bytes) + " / " + gib(n.ram_max_bytes)),
        h("td", { class: "bandwidth" }, bytesPerSecond(n.bandwidth_used)),
        h("td", { class: "viewers" }, n.viewers === null ? "—" : n.viewers),
        h("td", {}, n.last_seen_at ? new Date(n.last_seen_at).toLocaleTimeString() : "—")))
        : [h("tr", {}, h("td", { colspan: 10 }, "No edges yet. Create an enrollment token and provision one."))]));
      sec.querySelector(".edges-updated").textContent = "Updated " + new Date().toLocaleTimeString();
      renderRequests(sec.querySelector(".requests"), c, requests, err, owned);
    } catch (e) { if (e.message !== "signed out") setError(err, e); }
  }
}

function renderRequests(box, c, requests, err, owned) {
  const pending = requests.filter((r) => r.status === "pending");
  if (!pending.length) { box.replaceChildren(h("p", { class: "meta" }, "No pending requests.")); return; }
  box.replaceChildren(...pending.map((r) => {
    const act = (verb) => async (ev) => {
      ev.target.disabled = true;
      try {
        await api("POST", "/clusters/" + encodeURIComponent(c.id) + "/subscription-requests/" +
          encodeURIComponent(r.tenant_id) + "/" + verb);
        await refreshOwned(owned);
      } catch (e) { ev.target.disabled = false; setError(err, e); }
    };
    return h("div", { class: "row request", "data-tenant-id": r.tenant_id },
      h("span", {}, r.tenant_name, " ", h("span", { class: "meta" }, "(" + r.tenant_id + ")")),
      h("button", { type: "button", class: "approve", onclick: act("approve") }, "Approve " + r.tenant_name),
      h("button", { type: "button", class: "secondary reject", onclick: act("reject") }, "Reject " + r.tenant_name));
  }));
}

// ---- create private cluster ----------------------------------------------------------------

function renderPrivate() {
  const err = errorBox("private-error");
  const result = h("div", { id: "private-result", "aria-live": "polite" });
  const name = h("input", { id: "private-name", required: true, autocomplete: "off" });
  const region = h("input", { id: "private-region", autocomplete: "off" });
  const submit = h("button", { type: "submit", id: "private-create" }, "Create cluster");
  const form = h("form", { class: "card", onsubmit: async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    try {
      const body = { name: name.value.trim() };
      if (region.value.trim()) body.region = region.value.trim();
      const made = await api("POST", "/private-clusters", body);
      setError(err, null);
      form.reset();
      const t = made.enrollment_token;
      result.replaceChildren(h("section", { class: "card" },
        h("h2", {}, "Cluster " + made.cluster.name + " created"),
        h("p", { class: "notice" }, "This bootstrap token is shown once. Copy it now: it is never shown again."),
        h("label", { for: "bootstrap-token" }, "Bootstrap token"),
        h("div", { id: "bootstrap-token", class: "secret", tabindex: 0 }, t.token),
        copyButton(() => t.token, "Copy token"),
        h("label", { for: "provision-command" }, "Provision an edge with"),
        h("div", { id: "provision-command", class: "secret", tabindex: 0 }, t.provision_command),
        copyButton(() => t.provision_command, "Copy command")));
    } catch (e) { setError(err, e); } finally { submit.disabled = false; }
  } },
    h("label", { for: "private-name" }, "Cluster name"), name,
    h("label", { for: "private-region" }, "Region (optional)"), region,
    h("p", {}, submit));
  show(h("h1", {}, "Infrastructure → Create Private Cluster"), form, err, result);
}

// ---- streams -------------------------------------------------------------------------------

function endpoints(s) {
  return [
    h("h3", {}, "Ingest"),
    ...s.ingest.map((i) => h("div", { class: "ingest", "data-cluster-id": i.cluster_id },
      h("p", {}, h("strong", { class: "ingest-label" }, i.label), " ", h("span", { class: "meta" }, "(" + i.cluster_id + ")")),
      h("dl", {}, h("dt", {}, "RTMP"), h("dd", { class: "mono" }, i.rtmp),
        h("dt", {}, "SRT"), h("dd", { class: "mono" }, i.srt),
        h("dt", {}, "WHIP"), h("dd", { class: "mono" }, i.whip)))),
    h("h3", {}, "Playback"),
    h("dl", { class: "playback" }, h("dt", {}, "HLS"), h("dd", { class: "mono" }, s.playback.hls),
      h("dt", {}, "DASH"), h("dd", { class: "mono" }, s.playback.dash),
      h("dt", {}, "WHEP"), h("dd", { class: "mono" }, s.playback.whep),
      h("dt", {}, "Info"), h("dd", { class: "mono" }, s.playback.info))];
}

async function renderStreams() {
  const err = errorBox("streams-error");
  const result = h("div", { id: "stream-result", "aria-live": "polite" });
  const list = h("div", { id: "stream-list" });
  const name = h("input", { id: "stream-name", required: true, autocomplete: "off" });
  const submit = h("button", { type: "submit", id: "stream-create" }, "Create stream");
  const form = h("form", { class: "card", onsubmit: async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    try {
      const s = await api("POST", "/streams", { name: name.value.trim() });
      setError(err, null);
      form.reset();
      result.replaceChildren(h("section", { class: "card", "data-stream-id": s.id },
        h("h2", {}, "Stream " + s.name + " created"),
        h("p", { class: "notice" }, "The stream key is shown once. Copy it now: it is never shown again."),
        h("label", { for: "stream-key" }, "Stream key"),
        h("div", { id: "stream-key", class: "secret", tabindex: 0 }, s.stream_key || ""),
        copyButton(() => s.stream_key || "", "Copy stream key"),
        endpoints(s)));
      await loadStreams(list, err);
    } catch (e) { setError(err, e); } finally { submit.disabled = false; }
  } },
    h("label", { for: "stream-name" }, "Stream name"), name, h("p", {}, submit));
  show(h("h1", {}, "Streams"), form, err, result, h("h2", {}, "Your streams"), list);
  await loadStreams(list, err);
}

async function loadStreams(list, err) {
  try {
    const streams = await api("GET", "/streams");
    list.replaceChildren(...(streams.length ? streams.map((s) => h("details", { class: "card stream", "data-stream-id": s.id },
      h("summary", {}, s.name, " ", badge(s.status, "status")), h("p", { class: "meta" }, "Playback ID ", h("code", {}, s.playback_id)),
      endpoints(s))) : [h("p", { class: "meta" }, "No streams yet.")]));
  } catch (e) { setError(err, e); }
}

// ---- routing -------------------------------------------------------------------------------

const views = { marketplace: renderMarketplace, network: renderNetwork, private: renderPrivate, streams: renderStreams };

async function route() {
  stopRefresh();
  if (!sessionStorage.getItem(TOKEN_KEY)) { renderSignIn(null); return; }
  let name = location.hash.replace(/^#/, "");
  if (!views[name]) { name = "marketplace"; history.replaceState(null, "", "#marketplace"); }
  document.getElementById("nav").hidden = false;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.id === "nav-" + name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  try { await views[name](); } catch (e) { if (!(e instanceof ApiError)) throw e; }
  fillBars(main());
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", () => signOut("You are signed out."));
  window.addEventListener("hashchange", route);
  new MutationObserver(() => fillBars(main())).observe(main(), { childList: true, subtree: true });
  route();
});
