"""Feedback endpoints: HTTP only; the rules are in service.py (steps), views.py (what each caller sees) and
workflow.py (which step from which status, by whom).

Residents send and follow reports, staff work their unit's queue, and anyone (signed in or not) sees
the public map, list, timelines and per-unit figures. Writes a phone may retry take an
`Idempotency-Key` (required to send a report; accepted on every other write).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import asyncpg
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app import idempotency
from app.identity import guards
from app.identity.models import Principal
from feedback import service, views
from feedback.context import Ctx
from feedback.models import (
    AnswerCreate,
    AnswerTemplateList,
    Assign,
    Category,
    CategoryList,
    Following,
    Merge,
    Note,
    Rate,
    Receive,
    Reject,
    Reopen,
    Report,
    ReportCreate,
    ReportPage,
    Timeline,
    Transfer,
    UnitStatsList,
)

Conn = NamedDependency[asyncpg.Connection]
Me = NamedDependency[Principal]
Limit = Annotated[int, QueryParameter(ge=1, le=100)]
PHOTO_BODY_LIMIT = service.PHOTO_MAX_BYTES + 64 * 1024  # our own check answers the precise message

staff_level = guards.level(2)  # staff act on residents' reports: a level-2 sign-in


def ctx(request: Request, state: State) -> Ctx:
    language = "en" if request.headers.get("accept-language", "").lower().startswith("en") else "vi"
    return Ctx(units=state.identity.units, language=language)


def caller(request: Request) -> Principal | None:
    """The signed-in caller, or None: public pages work without signing in."""
    return request.scope.get("user")


async def once(request: Request, tx: asyncpg.Connection, principal: Principal, run: Callable[[], Awaitable[Any]],
               *, status: int = 200, required: bool = False) -> Response:
    async def run_with_status() -> tuple[int, Any]:
        return status, await run()

    return await idempotency.run_once(
        tx, request, owner=principal.sub, key=idempotency.key_of(request, required=required),
        body=await request.body(), run=run_with_status)


class CategoriesController(Controller):
    path = "/v1/feedback/categories"
    tags = ["Feedback"]

    @get("/", operation_id="ListFeedbackCategories", summary="Categories, their unit and deadlines")
    async def list(self, request: Request, state: State, conn: Conn) -> CategoryList:
        return CategoryList(categories=await views.list_categories(conn, ctx(request, state)))

    @get("/{code:str}", operation_id="GetFeedbackCategory")
    async def get_one(self, code: FromPath[str], request: Request, state: State, conn: Conn) -> Category:
        return await views.get_category(conn, ctx(request, state), code)


class PhotosController(Controller):
    path = "/v1/feedback/photos"
    tags = ["Feedback"]

    @post("/", operation_id="UploadFeedbackPhoto", guards=[guards.resident], status_code=201,
          request_max_body_size=PHOTO_BODY_LIMIT,
          summary="Upload one photo (the raw JPEG or PNG as the body); attach it to a report or answer by id")
    async def upload(self, request: Request, tx: Conn, principal: Me) -> Response:
        raw = await request.body()
        return await once(request, tx, principal, lambda: service.upload_photo(tx, principal, raw), status=201)

    @get("/{photo_id:str}", operation_id="GetFeedbackPhoto", summary="A photo, if the caller may see it")
    async def photo(self, photo_id: FromPath[str], request: Request, state: State, conn: Conn) -> Response:
        return await self._send(photo_id, request, state, conn, thumbnail=False)

    @get("/{photo_id:str}/thumbnail", operation_id="GetFeedbackPhotoThumbnail")
    async def thumbnail(self, photo_id: FromPath[str], request: Request, state: State, conn: Conn) -> Response:
        return await self._send(photo_id, request, state, conn, thumbnail=True)

    @staticmethod
    async def _send(photo_id: str, request: Request, state: State, conn: asyncpg.Connection, *,
                    thumbnail: bool) -> Response:
        content, media_type, digest = await views.photo_content(conn, ctx(request, state), caller(request),
                                                                  photo_id, thumbnail=thumbnail)
        etag = f'"{digest[:32]}{"t" if thumbnail else ""}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(b"", status_code=304, headers=headers)
        return Response(content, media_type=media_type, headers=headers)


class ReportsController(Controller):
    path = "/v1/feedback/reports"
    tags = ["Feedback"]

    @post("/", operation_id="SubmitReport", guards=[guards.resident], status_code=201,
          summary="Send a report (Idempotency-Key required); 409 possible-duplicates offers nearby open ones first")
    async def submit(self, data: JSONBody[ReportCreate], request: Request, state: State, tx: Conn,
                     principal: Me) -> Response:
        key = idempotency.key_of(request, required=True)
        return await once(request, tx, principal, lambda: service.submit(
            tx, ctx(request, state), principal, data, idempotency_key=key), status=201, required=True)

    @get("/{report_id:int}", operation_id="GetReport")
    async def get_one(self, report_id: FromPath[int], request: Request, state: State, conn: Conn) -> Report:
        return await views.get_report(conn, ctx(request, state), caller(request), report_id)

    @get("/{report_id:int}/timeline", operation_id="GetReportTimeline",
         summary="Every step and who took it (internal notes and assignments for staff only)")
    async def get_timeline(self, report_id: FromPath[int], request: Request, state: State, conn: Conn) -> Timeline:
        return await views.timeline(conn, ctx(request, state), caller(request), report_id)

    # ---- residents

    @post("/{report_id:int}/follow", operation_id="FollowReport", guards=[guards.resident], status_code=200)
    async def follow(self, report_id: FromPath[int], request: Request, state: State, tx: Conn,
                     principal: Me) -> Following:
        return await service.set_following(tx, ctx(request, state), principal, report_id, True)

    @delete("/{report_id:int}/follow", operation_id="UnfollowReport", guards=[guards.resident], status_code=200)
    async def unfollow(self, report_id: FromPath[int], request: Request, state: State, tx: Conn,
                       principal: Me) -> Following:
        return await service.set_following(tx, ctx(request, state), principal, report_id, False)

    @post("/{report_id:int}/close", operation_id="CloseReport", guards=[guards.resident],
          summary="The reporter accepts the answer")
    async def close(self, report_id: FromPath[int], request: Request, state: State, tx: Conn,
                    principal: Me) -> Response:
        return await once(request, tx, principal, lambda: service.close(tx, ctx(request, state), principal, report_id))

    @post("/{report_id:int}/rating", operation_id="RateAnswer", guards=[guards.resident],
          summary="The reporter rates the answer 1-5, with a comment")
    async def rate(self, report_id: FromPath[int], data: JSONBody[Rate], request: Request, state: State, tx: Conn,
                   principal: Me) -> Response:
        return await once(request, tx, principal,
                          lambda: service.rate(tx, ctx(request, state), principal, report_id, data))

    @post("/{report_id:int}/reopen", operation_id="ReopenReport", guards=[guards.resident],
          summary="The reporter, unsatisfied, reopens within 7 days of the answer")
    async def reopen(self, report_id: FromPath[int], data: JSONBody[Reopen], request: Request, state: State,
                     tx: Conn, principal: Me) -> Response:
        return await once(request, tx, principal,
                          lambda: service.reopen(tx, ctx(request, state), principal, report_id, data.reason))

    # ---- staff of the responsible unit

    @post("/{report_id:int}/receive", operation_id="ReceiveReport", guards=[guards.resident, staff_level])
    async def receive(self, report_id: FromPath[int], data: JSONBody[Receive], request: Request, state: State,
                      tx: Conn, principal: Me) -> Response:
        return await once(request, tx, principal,
                          lambda: service.receive(tx, ctx(request, state), principal, report_id, data.urgency))

    @post("/{report_id:int}/assign", operation_id="AssignReport", guards=[guards.resident, staff_level])
    async def assign(self, report_id: FromPath[int], data: JSONBody[Assign], request: Request, state: State,
                     tx: Conn, principal: Me) -> Response:
        return await once(request, tx, principal, lambda: service.assign(
            state.identity, tx, ctx(request, state), principal, report_id, data.assignee_id))

    @post("/{report_id:int}/start", operation_id="StartReport", guards=[guards.resident, staff_level])
    async def start(self, report_id: FromPath[int], request: Request, state: State, tx: Conn,
                    principal: Me) -> Response:
        return await once(request, tx, principal, lambda: service.start(tx, ctx(request, state), principal, report_id))

    @post("/{report_id:int}/answer", operation_id="AnswerReport", guards=[guards.resident, staff_level],
          summary="Answer with text (or a template and its values) and photos")
    async def answer(self, report_id: FromPath[int], data: JSONBody[AnswerCreate], request: Request, state: State,
                     tx: Conn, principal: Me) -> Response:
        return await once(request, tx, principal,
                          lambda: service.answer(tx, ctx(request, state), principal, report_id, data))

    @post("/{report_id:int}/reject", operation_id="RejectReport", guards=[guards.resident, staff_level])
    async def reject(self, report_id: FromPath[int], data: JSONBody[Reject], request: Request, state: State,
                     tx: Conn, principal: Me) -> Response:
        return await once(request, tx, principal,
                          lambda: service.reject(tx, ctx(request, state), principal, report_id, data))

    @post("/{report_id:int}/transfer", operation_id="TransferReport", guards=[guards.resident, staff_level])
    async def transfer(self, report_id: FromPath[int], data: JSONBody[Transfer], request: Request, state: State,
                       tx: Conn, principal: Me) -> Response:
        return await once(request, tx, principal,
                          lambda: service.transfer(tx, ctx(request, state), principal, report_id, data))

    @post("/{report_id:int}/notes", operation_id="AddReportNote", guards=[guards.resident, staff_level],
          summary="An internal note, never shown to residents")
    async def note(self, report_id: FromPath[int], data: JSONBody[Note], request: Request, state: State, tx: Conn,
                   principal: Me) -> Response:
        return await once(request, tx, principal,
                          lambda: service.add_note(tx, ctx(request, state), principal, report_id, data.text))

    @post("/{report_id:int}/merge", operation_id="MergeReport", guards=[guards.resident, staff_level],
          summary="Close as a duplicate of another report; its reporter and followers follow that one")
    async def merge(self, report_id: FromPath[int], data: JSONBody[Merge], request: Request, state: State,
                    tx: Conn, principal: Me) -> Response:
        return await once(request, tx, principal,
                          lambda: service.merge(tx, ctx(request, state), principal, report_id, data.into))


class MyReportsController(Controller):
    path = "/v1/feedback/me"
    tags = ["Feedback"]
    guards = [guards.resident]

    @get("/reports", operation_id="MyReports", summary="Reports I sent, private ones included")
    async def mine(self, request: Request, state: State, conn: Conn, principal: Me,
                   status: FromQuery[str | None] = None, cursor: FromQuery[str | None] = None,
                   limit: Limit = 20) -> ReportPage:
        return await views.my_reports(conn, ctx(request, state), principal, following=False, status=status,
                                        cursor=cursor, limit=limit)

    @get("/following", operation_id="ReportsIFollow")
    async def following(self, request: Request, state: State, conn: Conn, principal: Me,
                        status: FromQuery[str | None] = None, cursor: FromQuery[str | None] = None,
                        limit: Limit = 20) -> ReportPage:
        return await views.my_reports(conn, ctx(request, state), principal, following=True, status=status,
                                        cursor=cursor, limit=limit)


class UnitQueueController(Controller):
    path = "/v1/feedback/units/{unit:str}"
    tags = ["Feedback: staff"]
    guards = [guards.resident, staff_level]

    @get("/reports", operation_id="UnitQueue",
         summary="The unit's reports (open ones unless status says otherwise), by deadline or newest first")
    async def queue(self, unit: FromPath[str], request: Request, state: State, conn: Conn, principal: Me,
                    status: FromQuery[str | None] = None, category: FromQuery[str | None] = None,
                    overdue: FromQuery[bool | None] = None, ward: FromQuery[str | None] = None,
                    q: FromQuery[str | None] = None, assignee: FromQuery[str | None] = None,
                    order: FromQuery[Literal["deadline", "newest"]] = "deadline",
                    cursor: FromQuery[str | None] = None, limit: Limit = 50) -> ReportPage:
        return await views.unit_queue(conn, ctx(request, state), principal, unit, status=status, category=category,
                                        overdue=overdue, ward=ward, q=q, assignee=assignee, order=order,
                                        cursor=cursor, limit=limit)

    @get("/templates", operation_id="AnswerTemplates")
    async def templates(self, unit: FromPath[str], request: Request, state: State, conn: Conn,
                        principal: Me) -> AnswerTemplateList:
        return AnswerTemplateList(templates=await views.list_templates(conn, ctx(request, state), principal, unit))


class PublicController(Controller):
    path = "/v1/feedback/public"
    tags = ["Feedback: public"]

    @get("/reports", operation_id="PublicReports",
         summary="Public reports, newest first; bbox=min_lng,min_lat,max_lng,max_lat for a map; q searches "
                 "with or without diacritics")
    async def reports(self, request: Request, state: State, conn: Conn, bbox: FromQuery[str | None] = None,
                      category: FromQuery[str | None] = None, status: FromQuery[str | None] = None,
                      ward: FromQuery[str | None] = None, q: FromQuery[str | None] = None,
                      cursor: FromQuery[str | None] = None, limit: Limit = 50) -> ReportPage:
        return await views.public_reports(conn, ctx(request, state), bbox=bbox, category=category, status=status,
                                            ward=ward, q=q, cursor=cursor, limit=limit)

    @get("/stats", operation_id="FeedbackUnitStats",
         summary="Per unit: received, answered (on time), open, overdue and the average rating")
    async def stats(self, request: Request, state: State, conn: Conn,
                    days: Annotated[int, QueryParameter(ge=1, le=366)] = 90,
                    unit: FromQuery[str | None] = None) -> UnitStatsList:
        return await views.stats(conn, ctx(request, state), days=days, unit=unit, redis=state.redis)


ROUTERS = [CategoriesController, PhotosController, ReportsController, MyReportsController, UnitQueueController,
           PublicController]
