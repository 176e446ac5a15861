"""Sign-in steps are limited per caller (AVIS_WEB_SIGNIN_RATE_LIMIT): past the limit, a 429
problem with Retry-After, before any call to the provider; the sign-in page itself is not
counted, and another caller is not held back."""

from typing import Any

import httpx

from avis.web.main import create_app
from avis.web.settings import Settings


def web() -> Any:
    settings = Settings(
        avis_env="development",
        jwt_secret="s" * 40,
        signin="oidc",
        signin_rate_limit="3/minute",
        live_events=False,
    )
    return create_app(settings)


def browser_of(app: Any, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://web")


def csrf(page: httpx.Response) -> str:
    return page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def test_a_caller_past_the_limit_gets_a_429_with_retry_after() -> None:
    app = web()
    async with browser_of(app, "10.0.0.1") as browser:
        token = csrf(await browser.get("/signin"))
        answers: list[Any] = []
        for _ in range(4):
            answers.append(await browser.post("/signin", data={"csrf": token}))
            # The page alone is not a step.
            assert (await browser.get("/signin")).status_code == 200
        assert [a.status_code for a in answers] == [303, 303, 303, 429]
        assert answers[0].headers["location"].startswith("http://127.0.0.1:4444/oauth2/auth?")
        refused = answers[-1]
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith("/too-many-requests")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # The provider's login request counts as a step too.
        assert (await browser.get("/oidc/login?login_challenge=x")).status_code == 429
    async with browser_of(app, "10.0.0.2") as other:
        token = csrf(await other.get("/signin"))
        assert (await other.post("/signin", data={"csrf": token})).status_code == 303
