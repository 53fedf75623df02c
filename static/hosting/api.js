// /docs/api: every HTTP route with a curl example. Built from the host's OpenAPI 3 document when it
// serves one (drf-spectacular), else from the routes of PROTOCOL §3.0. Try-it buttons for the safe ones.
import { byTestId, codeBox, el, fetchJson, formatMs, prettyJson, readJsonScript } from "./dom.js";
import { EXAMPLE_SESSION_ID, builtinRoutes, routesFromOpenApi } from "./openapi.js";
import { Header, curlFor } from "./panels.js";

// ---- rendering -------------------------------------------------------------------------------------

function concretePath(route) {
  let path = route.path.replace(/\{([^}]+)\}/g, (_, name) => encodeURIComponent(String(route.params?.[name] ?? name)));
  if (route.query?.length) path += `?${new URLSearchParams(route.query)}`;
  return path;
}

function curlCommand(route, body = route.body) {
  let command = curlFor(route.method, `${location.origin}${concretePath(route)}`, body ?? null);
  if (route.admin) command += ` \\\n  -H "Authorization: Bearer $OPENONION_API_KEY"`;
  return command;
}

function tryPanel(route) {
  const safe = (route.method === "GET" && !route.admin && !route.html) || (route.method === "POST" && route.path === "/input");
  if (!safe) return null;
  const output = el("pre", { class: "code code-scroll", testid: "try-output", "aria-label": "Response" });
  const status = el("span", { class: "dim", role: "status" });
  let editor = null;
  if (route.body != null) {
    const id = `body-${route.method}-${route.path}`.replace(/[^A-Za-z0-9_-]/g, "_");
    editor = el("textarea", { id, class: "input mono", rows: 4, testid: "try-body", spellcheck: "false" });
    editor.value = prettyJson(route.body);
  }
  const button = el("button", { type: "button", class: "btn btn-primary btn-small", testid: "try-button", text: "Try it" });
  button.addEventListener("click", async () => {
    const options = { method: route.method };
    if (editor) {
      try {
        JSON.parse(editor.value);
      } catch (error) {
        status.textContent = `The body is not JSON: ${error.message}`;
        return;
      }
      options.headers = { "Content-Type": "application/json" };
      options.body = editor.value;
    }
    button.disabled = true;
    status.textContent = "waiting…";
    const reply = await fetchJson(concretePath(route), options);
    button.disabled = false;
    status.textContent = reply.status === 0 ? `failed: ${reply.error}` : `HTTP ${reply.status} · ${formatMs(reply.ms)}`;
    output.textContent = prettyJson(reply.body);
  });
  return el("div", { class: "try" },
    editor && el("label", { for: editor.id, class: "label", text: "Body" }), editor,
    el("div", { class: "actions" }, button, status), output);
}

function endpointCard(route) {
  const methodClass = `method method-${route.method.toLowerCase()}`;
  return el("section", { class: "endpoint", testid: "endpoint", dataset: { method: route.method, path: route.path } },
    el("h3", { class: "endpoint-head" },
      el("span", { class: methodClass, text: route.method }),
      el("span", { class: "endpoint-path", text: route.path }),
      route.admin && el("span", { class: "badge", text: "admin" }),
      route.deprecated && el("span", { class: "badge", text: "deprecated" })),
    route.summary && el("p", { text: route.summary }),
    route.description && route.description !== route.summary && el("p", { class: "dim", text: route.description }),
    codeBox(curlCommand(route), { testid: "curl" }),
    (route.alternatives || []).flatMap((alt) => [el("h4", { class: "label", text: alt.label }), codeBox(curlCommand(route, alt.body), { testid: "curl" })]),
    route.response !== undefined && route.response !== null && el("details", {},
      el("summary", { class: "dim", text: "Example response" }), el("pre", { class: "code", text: prettyJson(route.response) })),
    tryPanel(route));
}

function websocketCard() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const snippet = [
    `const ws = new WebSocket(${JSON.stringify(url)});`,
    `ws.onopen = () => ws.send(JSON.stringify({ type: "INIT" }));`,
    `ws.onmessage = (e) => {`,
    `  const msg = JSON.parse(e.data);`,
    `  if (msg.type === "CONNECTED") ws.send(JSON.stringify({ type: "INPUT", prompt: "Hello" }));`,
    `  else if (msg.type === "PING") ws.send(JSON.stringify({ type: "PONG" }));`,
    `  else if (msg.type === "OUTPUT") console.log(msg.result);`,
    `  else console.log(msg.type, msg);`,
    `};`,
  ].join("\n");
  return el("section", { class: "endpoint", testid: "endpoint", dataset: { method: "WS", path: "/ws" } },
    el("h3", { class: "endpoint-head" }, el("span", { class: "method method-ws", text: "WS" }), el("span", { class: "endpoint-path", text: "/ws" })),
    el("p", { text: "Real-time chat: INIT (or ATTACH to resume), then INPUT; events stream until OUTPUT. Answer PING with PONG." }),
    codeBox(snippet, { testid: "ws-snippet" }));
}

function recentSessionId(agent) {
  try {
    const saved = JSON.parse(localStorage.getItem(`connectonion.docs.${agent.address || "agent"}`) || "null");
    return saved?.session_id || EXAMPLE_SESSION_ID;
  } catch {
    return EXAMPLE_SESSION_ID;
  }
}

async function main() {
  const agent = readJsonScript("agent-data") || {};
  const header = new Header(agent);
  header.startHealth();
  fetchJson("/info").then((reply) => reply.ok && reply.body && typeof reply.body === "object" && header.apply(reply.body));
  const sessionId = recentSessionId(agent);
  const source = byTestId("api-source");
  const list = byTestId("endpoint-list");
  const openapiUrl = document.body.dataset.openapiUrl || "/openapi.json";
  const reply = await fetchJson(openapiUrl);
  let routes;
  if (reply.ok && reply.body && typeof reply.body === "object" && reply.body.paths) {
    routes = routesFromOpenApi(reply.body, sessionId);
    const title = reply.body.info?.title ? `${reply.body.info.title} ${reply.body.info.version ?? ""}`.trim() : "OpenAPI";
    source.textContent = `From ${openapiUrl} (${title}, OpenAPI ${reply.body.openapi ?? "3"}).`;
    source.append(" ", el("a", { href: openapiUrl, text: "Download the document" }));
  } else {
    routes = builtinRoutes(sessionId);
    source.textContent = `This host serves no ${openapiUrl}; showing the routes of the ConnectOnion host protocol.`;
  }
  list.replaceChildren(...routes.map(endpointCard), websocketCard());
}

main();
