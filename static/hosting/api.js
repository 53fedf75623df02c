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

/** Text with `backtick` spans shown as code (the OpenAPI descriptions are written that way), as nodes. */
function withCode(text) {
  return String(text).split("`").map((part, i) => (i % 2 ? el("code", { text: part }) : part));
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
    route.description && route.description !== route.summary && el("p", { class: "dim", testid: "endpoint-description" }, ...withCode(route.description)),
    codeBox(curlCommand(route), { testid: "curl" }),
    (route.alternatives || []).flatMap((alt) => [el("h4", { class: "label", text: alt.label }), codeBox(curlCommand(route, alt.body), { testid: "curl" })]),
    route.response !== undefined && route.response !== null && el("details", {},
      el("summary", { class: "dim", text: "Example response" }), el("pre", { class: "code", text: prettyJson(route.response) })),
    tryPanel(route));
}

function messageList(doc, channel, label) {
  const refs = doc?.channels?.["/ws"]?.[channel]?.message?.oneOf || [];
  const items = refs.map((ref) => doc.components?.messages?.[String(ref.$ref).split("/").pop()]).filter(Boolean);
  if (!items.length) return null;
  return el("div", { class: "ws-messages" },
    el("h4", { class: "label", text: label }),
    el("dl", { testid: `ws-${channel}` }, items.flatMap((message) => [
      el("dt", {}, el("code", { text: message.name })), el("dd", { text: message.summary || "" })])));
}

function websocketCard(asyncapi) {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const snippet = [
    `const ws = new WebSocket(${JSON.stringify(url)});`,
    `ws.onopen = () => ws.send(JSON.stringify({ type: "INPUT", prompt: "quiz me" }));`,
    `ws.onmessage = (e) => {`,
    `  const msg = JSON.parse(e.data);`,
    `  if (msg.type === "ask_user") {          // the agent asks you: answer with its id`,
    `    ws.send(JSON.stringify({ type: "ASK_USER_RESPONSE", answer: "Paris", request_id: msg.id }));`,
    `  } else if (msg.type === "approval_needed") {  // a tool waits for your permission`,
    `    ws.send(JSON.stringify({ type: "APPROVAL_RESPONSE", approved: true, scope: "once", request_id: msg.id }));`,
    `  } else if (msg.type === "PING") ws.send(JSON.stringify({ type: "PONG" }));`,
    `  else if (msg.type === "OUTPUT" || msg.type === "ERROR") console.log(msg.result ?? msg.message);`,
    `  else console.log(msg.type, msg);`,
    `};`,
  ].join("\n");
  return el("section", { class: "endpoint", testid: "endpoint", dataset: { method: "WS", path: "/ws" } },
    el("h3", { class: "endpoint-head" }, el("span", { class: "method method-ws", text: "WS" }), el("span", { class: "endpoint-path", text: "/ws" })),
    el("p", { text: "Real-time chat: send INPUT; events stream until OUTPUT. Questions (ask_user) and approvals (approval_needed) wait for your answer, which names the event's id as request_id. INTERRUPT stops the turn; ATTACH with last_msg_id resumes after a disconnect. Answer PING with PONG." }),
    el("p", { testid: "ws-runtime-input", text: "Steering: an INPUT sent while the turn runs goes to that turn when its agent takes runtime input (answered RUNTIME_INPUT_ACK; the agent reports reading it as a user_input event with runtime_input true). Otherwise it is refused with ERROR code RUNTIME_INPUT_REJECTED, retryable, and the turn goes on: send it again after the OUTPUT. Try the demo's \"count slowly until I say stop\", then send \"count by 10\" or \"stop\"." }),
    codeBox(snippet, { testid: "ws-snippet" }),
    asyncapi && messageList(asyncapi, "publish", "You send"),
    asyncapi && messageList(asyncapi, "subscribe", "You receive"),
    asyncapi && el("p", { class: "dim" }, "Every message's fields: ", el("a", { href: "/asyncapi.json", text: "/asyncapi.json" }), " (AsyncAPI 2.6)."));
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
    const info = reply.body.info || {};
    const title = info.title ? `${info.title}${info.version ? `, version ${info.version}` : ""}` : "OpenAPI";
    source.textContent = `From ${openapiUrl} (${title}, OpenAPI ${reply.body.openapi ?? "3"}).`;
    source.append(" ", el("a", { href: openapiUrl, text: "Download the document" }));
  } else {
    routes = builtinRoutes(sessionId);
    source.textContent = `This host serves no ${openapiUrl}; showing the routes of the ConnectOnion host protocol.`;
  }
  const asyncapi = await fetchJson("/asyncapi.json");
  const wsDoc = asyncapi.ok && asyncapi.body && typeof asyncapi.body === "object" ? asyncapi.body : null;
  list.replaceChildren(...routes.map(endpointCard), websocketCard(wsDoc));
}

main();
