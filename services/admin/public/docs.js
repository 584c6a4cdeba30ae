// The minimal /docs page: lists every operation of /openapi.json with its parameters, body and
// responses. Text only (no HTML from the document is interpreted).
const main = document.getElementById("main");

function h(tag, text, cls) {
  const n = document.createElement(tag);
  if (text !== undefined) n.textContent = text;
  if (cls) n.className = cls;
  return n;
}

const doc = await (await fetch("/openapi.json")).json();
main.replaceChildren(h("p", doc.info.description));
const byTag = new Map();
for (const [path, ops] of Object.entries(doc.paths)) {
  for (const [method, op] of Object.entries(ops)) {
    const tag = op.tags?.[0] ?? "other";
    if (!byTag.has(tag)) byTag.set(tag, []);
    byTag.get(tag).push({ path, method, op });
  }
}
for (const [tag, ops] of byTag) {
  const section = h("section");
  section.append(h("h2", tag));
  for (const { path, method, op } of ops) {
    const div = h("div", undefined, "op");
    div.append(h("h3", `${method.toUpperCase()} ${path}`), h("p", op.summary ?? ""));
    const params = op.parameters ?? [];
    if (params.length) {
      const ul = h("ul");
      for (const p of params)
        ul.append(
          h(
            "li",
            `${p.in} ${p.name}${p.required ? " (required)" : ""}: ${p.schema?.description ?? p.description ?? p.schema?.type ?? ""}${p.schema?.pattern ? ` — pattern ${p.schema.pattern}` : ""}`,
          ),
        );
      div.append(h("p", "Parameters:"), ul);
    }
    const body = op.requestBody?.content?.["application/json"]?.schema;
    if (body) div.append(h("p", "Body (JSON):"), h("pre", JSON.stringify(body, null, 2)));
    div.append(h("p", `Responses: ${Object.keys(op.responses ?? {}).join(", ")}`));
    section.append(div);
  }
  main.append(section);
}
