"""HTTP delivery (webhook, WeCom, DingTalk, SMS) over httpx: the one place that talks HTTP.

Foreign exceptions end here: a timeout, a refused connection or a bad answer
becomes :class:`~notify.channels.DeliveryFailed`.
"""

from __future__ import annotations

import httpx

from notify.channels import DeliveryFailed, HttpRequest, check_http_response

__all__ = ["HttpTransport"]


class HttpTransport:
    """Sends :class:`HttpRequest` objects; one connection pool for every channel."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._own = client is None
        self._client = client or httpx.AsyncClient(
            headers={"User-Agent": "FleetWatch-notify/1"}, follow_redirects=False
        )

    async def send(self, req: HttpRequest) -> None:
        try:
            resp = await self._client.request(
                req.method,
                req.url,
                content=req.body or None,
                headers=dict(req.headers),
                timeout=req.timeout_s,
            )
        except httpx.TimeoutException as exc:
            raise DeliveryFailed(req.channel, f"timeout after {req.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise DeliveryFailed(req.channel, f"{type(exc).__name__}: {exc}") from exc
        check_http_response(req, resp.status_code, resp.content)

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()
