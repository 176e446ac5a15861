"""Answers kept out of caches: every service can hold health data, so every answer says
`Cache-Control: no-store` (RFC 9111 5.2.2.5), unless its route set a Cache-Control of its own.
The runtime installs it for every service (`Runtime.create_app`)."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NO_STORE = (b"cache-control", b"no-store")


class NoStore:
    """Keeps every answer out of caches, unless a route says otherwise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request; its answer says `Cache-Control: no-store`."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(k.lower() == NO_STORE[0] for k, _ in headers):
                    headers.append(NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, no_store)
