"""Security headers on every HTTP response, as a plain ASGI middleware.

- ``X-Content-Type-Options: nosniff`` — a JSON answer is never run as a script.
- ``Content-Security-Policy`` — scripts, styles and sockets from this origin only,
  images also from the configured tile servers; ``frame-ancestors 'none'`` (no page
  may frame the desk: clickjacking an acknowledgement).
- ``Referrer-Policy: no-referrer`` — tile servers never see the desk's addresses.
- ``Cache-Control: no-store`` on ``/api/`` — tokens, positions and user lists stay
  out of browser and proxy caches (the login answer holds a token).
- No ``Server`` banner: the HTTP server is started with :data:`HTTP_SERVER_OPTIONS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.config import TileConfig

__all__ = ["HTTP_SERVER_OPTIONS", "SecurityHeaders", "content_security_policy"]

#: Options for ``uvicorn.Config`` wherever the web app is served: no ``Server: uvicorn``
#: banner naming the server software to a stranger.
HTTP_SERVER_OPTIONS: dict[str, Any] = {"server_header": False}


def tile_sources(tiles: Sequence[TileConfig]) -> list[str]:
    """CSP sources of the tile servers: ``https://{s}.tile.x.org/...`` → ``https://*.tile.x.org``.

    A templated first host label (``t{s}.tianditu.gov.cn``) becomes ``*``; a template
    anywhere else in the host leaves only the scheme (CSP allows no other wildcard).
    """
    out: list[str] = []
    urls = [u for t in tiles for u in (t.url, str(getattr(t, "labels_url", "") or "")) if u]
    for url in urls:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        labels = (parts.netloc.rsplit("@", 1)[-1]).split(".")
        if labels and ("{" in labels[0] or "*" in labels[0]):
            labels[0] = "*"
        netloc = ".".join(labels)
        if scheme not in ("http", "https"):
            continue
        if not netloc or any(c in netloc[1:] for c in "{}*") or " " in netloc:
            src = f"{scheme}:"
        else:
            src = f"{scheme}://{netloc}"
        if src not in out:
            out.append(src)
    return out


def content_security_policy(tiles: Sequence[TileConfig]) -> str:
    img = " ".join(["'self'", "data:", "blob:", *tile_sources(tiles)])
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            # Leaflet and component libraries set inline style attributes
            "style-src 'self' 'unsafe-inline'",
            f"img-src {img}",
            "connect-src 'self' ws: wss:",
            "font-src 'self' data:",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class SecurityHeaders:
    """Adds the headers above to each HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp, csp: str) -> None:
        self.app = app
        self._common = [
            (b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", csp.encode()),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                have = {bytes(k).lower() for k, _ in headers}
                extra = [(k, v) for k, v in self._common if k not in have]
                if api:
                    headers = [(k, v) for k, v in headers if bytes(k).lower() != b"cache-control"]
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)
