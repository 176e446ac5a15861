"""The page the treating physician's emailed link opens. The physician has no account: the
secret of the link is what opens the case's latest report, as reports checks it (it keeps only
a keyed digest). The right secret shows the report (its PDF, streamed through, never cached);
past the link's window, a page in plain words, in the physician's language (the link says
which), that it expired (410); a wrong secret, another case or no report, the same not-found
page as anywhere else (404). Never a service's raw problem body. Reports records each read in
the case's access trail, as when the link opened its API."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from avis.shared.events import Language
from avis.web import rules
from avis.web.api import CaseId, Pages
from avis.web.service import Refused, physician_report

router = APIRouter(include_in_schema=False)

# The secret as intake mints it, within the bounds reports takes; nothing else reaches reports.
Secret = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,128}$")]
# The physician's language, which notify writes into the link (else the browser's).
Lang = Annotated[str | None, Query(alias="lang", max_length=8)]


@router.get("/physician/{case_id}/{secret}")
async def physician_page(
    request: Request, web: Pages, case_id: CaseId, secret: Secret, lang: Lang = None
) -> Response:
    """The report for the physician whose link this is, or why not, in plain words."""
    language = Language(lang) if lang in rules.LANGUAGES else None
    try:
        download = await physician_report(web.platform, case_id=case_id, secret=secret)
    except Refused as exc:
        status = exc.status if exc.status in (404, 410, 503) else 502
        message = rules.problem_message(exc.status, exc.problem_type)
        if exc.status in (401, 403, 404):  # the same not-found page as anywhere, whatever why
            status, message = 404, rules.problem_message(404, None)
        return web.render(request, "error.html", status, page_language=language, message=message)
    headers = download.headers | {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return StreamingResponse(download.chunks, media_type=download.content_type, headers=headers)
