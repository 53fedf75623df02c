// The routes shown on /docs/api: read from an OpenAPI 3 document (drf-spectacular), or the built-in list
// of PROTOCOL §3.0. Pure functions (no DOM), so they can be tested outside a browser.

const METHODS = ["get", "post", "put", "patch", "delete"];
export const EXAMPLE_SESSION_ID = "550e8400-e29b-41d4-a716-446655440000";

/** The built-in list: the spec's routes (PROTOCOL §3.0), used when there is no /openapi.json. */
export function builtinRoutes(sessionId) {
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
export function exampleFor(doc, rawSchema, name = null, depth = 0) {
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

export function routesFromOpenApi(doc, sessionId) {
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
      const bodyMedia = op.requestBody?.content?.["application/json"];
      const body = mediaExample(doc, bodyMedia);
      const alternatives = Object.values(bodyMedia?.examples || {}).slice(1)
        .filter((example) => example?.value !== undefined)
        .map((example) => ({ label: example.summary || "Another request", body: example.value }));
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
        alternatives,
        response: ok ? mediaExample(doc, ok[1]?.content?.["application/json"]) : undefined,
        admin: security.some((requirement) => Object.keys(requirement || {}).length > 0),
        deprecated: Boolean(op.deprecated),
      });
    }
  }
  return routes;
}
