"""``GET /docs``: the API reference as one HTML page built from the OpenAPI document.

No JavaScript and nothing fetched from elsewhere (FastAPI's Swagger UI and ReDoc load from a
CDN), so it works on a machine without internet access. ``/openapi.json`` is the document
itself, for Swagger UI, Postman or a client generator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from html import escape
from typing import Any

__all__ = ["docs_page"]

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
line-height:1.45;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2.5rem}
.route{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.method{font-weight:bold;font-family:monospace;padding:.1rem .4rem;border-radius:4px;
background:#e8eefc}
code,pre{font-family:ui-monospace,monospace;font-size:.9em}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;
text-align:left;vertical-align:top}
.text{white-space:pre-wrap}
"""


def _ref_name(schema: Mapping[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _schema_link(schema: Mapping[str, Any] | None) -> str:
    """A short description of a schema: a link to a named one, else its JSON."""
    if not schema:
        return ""
    name = _ref_name(schema)
    if name is not None:
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " | ".join(_schema_link(part) for part in schema[key])
    if schema.get("type") == "array" and isinstance(schema.get("items"), Mapping):
        return f"array of {_schema_link(schema['items'])}"
    return f"<code>{escape(json.dumps(schema, sort_keys=True))}</code>"


def _json_schema(content: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    media = (content or {}).get("application/json") or {}
    schema = media.get("schema")
    return schema if isinstance(schema, Mapping) else None


def _route(path: str, method: str, op: Mapping[str, Any]) -> Iterator[str]:
    anchor = escape(op.get("operationId", f"{method}-{path}"))
    yield f'<div class="route" id="{anchor}">'
    yield (
        f'<p><span class="method">{escape(method.upper())}</span> <code>{escape(path)}</code>'
        f" &mdash; {escape(op.get('summary', ''))}</p>"
    )
    auth = "an API key (Authorization: Bearer KEY)" if op.get("security") else "no API key"
    yield f"<p>Needs {auth}.</p>"
    if op.get("description"):
        yield f'<p class="text">{escape(op["description"])}</p>'
    params = op.get("parameters") or []
    if params:
        yield "<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th></tr>"
        for param in params:
            yield (
                f"<tr><td><code>{escape(param['name'])}</code></td><td>{escape(param['in'])}</td>"
                f"<td>{'yes' if param.get('required') else 'no'}</td>"
                f"<td>{_schema_link(param.get('schema'))}</td></tr>"
            )
        yield "</table>"
    body = op.get("requestBody")
    if body:
        schema = _json_schema(body.get("content"))
        required = "required" if body.get("required") else "optional"
        yield f"<p>JSON body ({required}): {_schema_link(schema)}</p>"
    yield "<table><tr><th>status</th><th>meaning</th><th>body</th></tr>"
    for status, response in (op.get("responses") or {}).items():
        yield (
            f"<tr><td>{escape(str(status))}</td><td>{escape(response.get('description', ''))}"
            f"</td><td>{_schema_link(_json_schema(response.get('content')))}</td></tr>"
        )
    yield "</table></div>"


def docs_page(openapi: Mapping[str, Any]) -> str:
    """The whole reference: the description, every route, every schema."""
    info = openapi.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>",
        f'<p class="text">{escape(info.get("description", ""))}</p>',
        '<p>The OpenAPI document: <a href="/openapi.json">/openapi.json</a>.</p><h2>Routes</h2>',
    ]
    for path, operations in (openapi.get("paths") or {}).items():
        for method, op in operations.items():
            parts.extend(_route(path, method, op))
    parts.append("<h2>Schemas</h2>")
    schemas = (openapi.get("components") or {}).get("schemas") or {}
    for name, schema in sorted(schemas.items()):
        text = json.dumps(schema, indent=2, sort_keys=True)
        parts.append(f'<h3 id="schema-{escape(name)}">{escape(name)}</h3><pre>{escape(text)}</pre>')
    parts.append("</body></html>")
    return "\n".join(parts)
