"""A self-contained API docs page at /schema.

The usual renderers (Swagger UI, Scalar, ReDoc) load their scripts from a CDN; this page needs
nothing but the service itself, so it works offline and calls no outside host.
"""

from __future__ import annotations

import html
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin

_PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1b1b1b}}
h2{{border-bottom:1px solid #ddd;padding-bottom:.3rem}}
details{{margin:.4rem 0;border:1px solid #e3e3e3;border-radius:6px}}
summary{{padding:.5rem;cursor:pointer}} .m{{display:inline-block;width:4.5rem;font-weight:600;text-transform:uppercase}}
.get{{color:#0a7d36}} .post{{color:#0b59b3}} .put,.patch{{color:#9a6700}} .delete{{color:#b3261e}}
pre{{background:#f6f8fa;padding:.6rem;overflow:auto;margin:0 .5rem .5rem}} code{{font-size:.9em}}
</style></head><body>
<h1>{title} <small>{version}</small></h1>
<p>OpenAPI 3.1: <a href="{json_url}">{json_url}</a></p>
<div id="ops"></div>
<script type="application/json" id="spec">{spec}</script>
<script>
const spec = JSON.parse(document.getElementById('spec').textContent);
const byTag = {{}};
for (const [path, item] of Object.entries(spec.paths || {{}})) {{
  for (const [method, op] of Object.entries(item)) {{
    if (typeof op !== 'object' || !op.responses) continue;
    const tag = (op.tags && op.tags[0]) || 'other';
    (byTag[tag] = byTag[tag] || []).push([method, path, op]);
  }}
}}
const root = document.getElementById('ops');
for (const tag of Object.keys(byTag).sort()) {{
  const h = document.createElement('h2'); h.textContent = tag; root.appendChild(h);
  for (const [method, path, op] of byTag[tag]) {{
    const d = document.createElement('details');
    const s = document.createElement('summary');
    s.innerHTML = '<span class="m ' + method + '">' + method + '</span> <code></code> ';
    s.querySelector('code').textContent = path;
    s.appendChild(document.createTextNode(op.summary || op.operationId || ''));
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify(op, null, 2);
    d.appendChild(s); d.appendChild(pre); root.appendChild(d);
  }}
}}
</script></body></html>"""


class OfflineDocsPlugin(OpenAPIRenderPlugin):
    def __init__(self, path: str = "/") -> None:
        super().__init__(path=path)

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        info = openapi_schema.get("info", {})
        spec = msgspec.json.encode(openapi_schema).decode().replace("</", "<\\/")
        return _PAGE.format(
            title=html.escape(info.get("title", "API")),
            version=html.escape(info.get("version", "")),
            json_url=html.escape(self.get_openapi_json_route(request)),
            spec=spec,
        ).encode()
