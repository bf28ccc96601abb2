"""The demo page's static files, shipped inside the wheel (``broadcaster/static/``).

:func:`lookup` maps a request path to ``(status, content type, body)``. Only the files listed in
:data:`FILES` are served, looked up by exact name, so a path can never leave the directory
(``/static/../cdc/...`` is simply not a name). ``/`` and ``/index.html`` are the page; everything
else under ``/static/`` is one of its assets. The page itself needs no build step: the official
``@supabase/realtime-js`` client is vendored as one ES module (``realtime-js.mjs``, rebuilt with
``.ci/build-demo-client``).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

__all__ = ["FILES", "NOT_FOUND", "lookup"]

FILES: Final[dict[str, str]] = {
    "index.html": "text/html; charset=utf-8",
    "demo.js": "text/javascript; charset=utf-8",
    "demo.css": "text/css; charset=utf-8",
    "realtime-js.mjs": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
NOT_FOUND: Final = (404, "application/json", b'{"error":"Not found"}')
_ALIASES: Final[dict[str, str]] = {
    "/": "index.html",
    "/index.html": "index.html",
    "/favicon.ico": "favicon.svg",
}


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("broadcaster").joinpath("static", name).read_bytes()


def lookup(path: str) -> tuple[int, str, bytes]:
    """The response for ``path`` (already stripped of its query string)."""
    name = _ALIASES.get(path)
    if name is None and path.startswith("/static/"):
        name = path.removeprefix("/static/")
    if name is None or name not in FILES:
        return NOT_FOUND
    return 200, FILES[name], _read(name)
