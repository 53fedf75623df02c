// /docs/api: every HTTP route with a curl example. Built from the host's OpenAPI 3 document when it
// serves one (drf-spectacular), else from the routes of PROTOCOL §3.0. Try-it buttons for the safe ones.
import { byTestId, codeBox, el, fetchJson, formatMs, prettyJson, readJsonScript } from "./dom.js";
import { Header, curlFor } from "./panels.js";

const METHODS = ["get", "post", "put", "patch", "delete"];
const EXAMPLE_SESSION_ID = "550e8400-e29b-41d4-a716-446655440000";

/** The built-in list: the spec's routes (PROTOCOL §3.0), used when there is no /openapi.json. */
function builtinRoutes(sessionId) {
  const session = { session_id: sessionId, messages: [], trace: [], turn: 1 };
  return [
    { method: "POST", path: "/input", summary: "Run one turn and return its result.",
      description: "Omit session for a new conversation; pass back the session of the previous response to continue it. Optional images (data URLs) and files ({name, data}).",
      body: { prompt: "Translate hello to Spanish" },
      alternatives: [
        { label: "Continue a conversation", body: { prompt: "What is my name?", session } },
        { label: "With an image and a file", body: { prompt: "Describe these",
          images: ["data:image/png;base64,iVBORw0KGgo..."],
          files: [{ name: "notes.txt", data: "data:text/plain;base64,aGVsbG8=" }] } },
      ],
      response: { session_id: sessionId, status: "done", result: "Hola", duration_ms: 1250, session } },
    { method: "GET", path: "/sessions/{session_id}", params: { session_id: sessionId },
      summary: "The stored result of one session.", response: { session_id: sessionId, status: "done", result: "Hola", duration_ms: 1250 } },
    { method: "GET", path: "/sessions", summary: "Recent sessions you may read, newest first.",
      response: { sessions: [{ session_id: sessionId, status: "done", created: 1702234567 }] } },
    { method: "GET", path: "/health", summary: "Health check for load balancers.",
      response: { status: "healthy", agent: "translator", uptime: 3600 } },
    { method: "GET", path: "/info", summary: "Name, address, tools, model, trust level and accepted inputs with their limits." },
    { method: "GET", path: "/", summary: "Index of the routes." },
    { method: "GET", path: "/docs", summary: "The interactive chat page.", html: true },
    { method: "GET", path: "/admin/logs", summary: "The agent's activity log (plain text).", admin: true },
    { method: "GET", path: "/admin/sessions", summary: "Evaluation sessions from .co/evals as JSON.", admin: true },
  ];
}

// ---- OpenAPI → routes ------------------------------------------------------------------------------

function resolve(doc, schema, depth = 0) {
  if (!schema || depth > 8) return schema || {};
  if (schema.$ref && schema.$ref.startsWith("#/")) {
    const target = schema.$ref.slice(2).split("/").reduce((node, key) => node?.[key.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
    return resolve(doc, target, depth + 1);
  }
  if (Array.isArray(schema.allOf) && schema.allOf.length) {
    return schema.allOf.reduce((merged, part) => {
      const r = resolve(doc, part, depth + 1);
      return { ...merged, ...r, properties: { ...merged.properties, ...r.properties },
        required: [...(merged.required || []), ...(r.required || [])] };
    }, {});
  }
  if (Array.isArray(schema.oneOf || schema.anyOf)) return resolve(doc, (schema.oneOf || schema.anyOf)[0], depth + 1);
  return schema;
}

const NAMED_EXAMPLES = { prompt: "Hello", session_id: EXAMPLE_SESSION_ID, name: "notes.txt" };

/** An example value for a JSON schema: its own example, else one made from its type (required keys only). */
function exampleFor(doc, rawSchema, name = null, depth = 0) {
  const schema = resolve(doc, rawSchema);
  if (schema.example !== undefined) return schema.example;
  if (Array.isArray(schema.examples) && schema.examples.length) return schema.examples[0];
  if (schema.default !== undefined) return schema.default;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  if (depth > 5) return null;
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  if (type === "object" || schema.properties) {
    const properties = schema.properties || {};
    const required = new Set(schema.required || []);
    const keys = Object.keys(properties).filter((key) => required.size === 0 || required.has(key));
    return Object.fromEntries(keys.map((key) => [key, exampleFor(doc, properties[key], key, depth + 1)]));
  }
  if (type === "array") return [exampleFor(doc, schema.items || {}, null, depth + 1)];
  if (type === "integer") return 0;
  if (type === "number") return 0;
  if (type === "boolean") return true;
  if (type === "string") {
    if (name && NAMED_EXAMPLES[name]) return NAMED_EXAMPLES[name];
    if (schema.format === "date-time") return new Date(0).toISOString();
    if (schema.format === "uuid") return EXAMPLE_SESSION_ID;
    return "string";
  }
  return null;
}

function mediaExample(doc, media) {
  if (!media) return undefined;
  if (media.example !== undefined) return media.example;
  const first = media.examples && Object.values(media.examples)[0];
  if (first && first.value !== undefined) return first.value;
  return media.schema ? exampleFor(doc, media.schema) : undefined;
}

function routesFromOpenApi(doc, sessionId) {
  const routes = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const op = item?.[method];
      if (!op) continue;
      const params = {};
      const query = [];
      for (const rawParam of [...(item.parameters || []), ...(op.parameters || [])]) {
        const param = resolve(doc, rawParam);
        const value = param.example ?? (param.name === "session_id" ? sessionId : exampleFor(doc, param.schema || {}, param.name));
        if (param.in === "path") params[param.name] = value;
        else if (param.in === "query" && param.required) query.push([param.name, String(value)]);
      }
      const body = mediaExample(doc, op.requestBody?.content?.["application/json"]);
      const ok = Object.entries(op.responses || {}).find(([code]) => /^2/.test(code));
      const security = op.security ?? doc.security ?? [];
      routes.push({
        method: method.toUpperCase(),
        path,
        params,
        query,
        summary: op.summary || "",
        description: op.description || "",
        body: body === undefined ? null : body,
        response: ok ? mediaExample(doc, ok[1]?.content?.["application/json"]) : undefined,
        admin: security.some((requirement) => Object.keys(requirement || {}).length > 0),
        deprecated: Boolean(op.deprecated),
      });
    }
  }
  return routes;
}

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
