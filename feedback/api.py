"""Feedback endpoints: HTTP only; the rules are in service.py (steps), views.py (what each caller sees) and
workflow.py (which step from which status, by whom).

Residents send and follow reports, staff work their unit's queue, and anyone (signed in or not) sees
the public map, list, timelines and per-unit figures. Writes a phone may retry take an
`Idempotency-Key` (required to send a report; accepted on every other step), handled by the kernel.
"""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from app import idempotency, openapi, web
from app.identity import guards
from feedback import service, views
from feedback.config import feedback_settings
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
    Photo,
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
from feedback.workflow import STATUSES

PHOTO_BODY_LIMIT = service.PHOTO_MAX_BYTES + 64 * 1024  # our own check answers the precise message

staff_level = guards.level(2)  # staff act on residents' reports: a level-2 sign-in


def _ctx(state: State, language: web.Lang) -> Ctx:
    return Ctx(units=state.identity.units, language=language)


# Every feedback handler (and Open311's) may take `ctx`: the unit directory and the request's language.
Context = NamedDependency[Ctx]
DEPENDENCIES = {"ctx": Provide(_ctx, sync_to_thread=False)}



# The list filters as the document shows them, so a client (or a fuzzer) knows what is accepted.
_STATUS = "(?:" + "|".join(STATUSES) + ")"
StatusFilter = Annotated[str | None, QueryParameter(pattern=f"^{_STATUS}(?:,{_STATUS})*$",
                                                    description="one or more statuses, comma-separated")]
TextQuery = Annotated[str | None, QueryParameter(max_length=200, description="words, with or without diacritics")]
_NUMBER = r"-?\d{1,3}(?:\.\d+)?"
Box = Annotated[str | None, QueryParameter(
    pattern=f"^{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}$",
    description="two opposite corners of a map view, lng,lat,lng,lat in degrees (GeoJSON order: min_lng,min_lat,"
                "max_lng,max_lat; other orders are read as the same box); beyond the world's edges is read as up to "
                "them")]
ReportCursor = web.cursor_parameter(*views.CURSOR)

class CategoriesController(Controller):
    path = "/v1/feedback/categories"
    tags = ["Feedback"]
    dependencies = DEPENDENCIES

    @get("/", operation_id="ListFeedbackCategories", summary="Categories, their unit and deadlines")
    async def list(self, conn: web.Conn, ctx: Context) -> CategoryList:
        return CategoryList(categories=await views.list_categories(conn, ctx))

    @get("/{code:str}", operation_id="GetFeedbackCategory")
    async def get_one(self, code: FromPath[str], conn: web.Conn, ctx: Context) -> Category:
        return await views.get_category(conn, ctx, code)


class PhotosController(Controller):
    path = "/v1/feedback/photos"
    tags = ["Feedback"]
    dependencies = DEPENDENCIES

    @post("/", operation_id="UploadFeedbackPhoto", guards=[guards.resident], status_code=201,
          dependencies=web.IDEMPOTENT, request_max_body_size=PHOTO_BODY_LIMIT,
          summary="Upload one photo (the raw JPEG or PNG as the body); attach it to a report or answer by id",
          description="Each resident may upload IHANOI_FEEDBACK_PHOTOS_PER_HOUR photos an hour (default 30).",
          responses={413: openapi.problem(413), 429: openapi.problem(429)},
          opt={"body": openapi.photo_body(service.PHOTO_MAX_BYTES)})
    async def upload(self, request: Request, state: State, tx: web.Tx, principal: web.Caller) -> Photo:
        # an idempotent replay is answered before this runs, so it does not count
        await service.count_photo_upload(state.redis, principal, feedback_settings(state.settings).photos_per_hour)
        return await service.upload_photo(tx, principal, await request.body())

    @get("/{photo_id:str}", operation_id="GetFeedbackPhoto", summary="A photo, if the caller may see it",
         media_type="image/*", response_description="the JPEG or PNG")
    async def photo(self, photo_id: web.UUIDPath, request: Request, conn: web.Conn, viewer: web.Viewer,
                    ctx: Context) -> Response[bytes]:
        content, media_type, digest = await views.photo_content(conn, ctx, viewer, photo_id, thumbnail=False)
        return self._send(request, content, media_type, f'"{digest[:32]}"')

    @get("/{photo_id:str}/thumbnail", operation_id="GetFeedbackPhotoThumbnail", media_type="image/jpeg",
         response_description="a JPEG")
    async def thumbnail(self, photo_id: web.UUIDPath, request: Request, conn: web.Conn, viewer: web.Viewer,
                        ctx: Context) -> Response[bytes]:
        content, media_type, digest = await views.photo_content(conn, ctx, viewer, photo_id, thumbnail=True)
        return self._send(request, content, media_type, f'"{digest[:32]}t"')

    @staticmethod
    def _send(request: Request, content: bytes, media_type: str, etag: str) -> Response[bytes]:
        headers = {"ETag": etag, "Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(b"", status_code=304, headers=headers)
        return Response(content, media_type=media_type, headers=headers)


class ReportsController(Controller):
    path = "/v1/feedback/reports"
    tags = ["Feedback"]
    dependencies = DEPENDENCIES

    @post("/", operation_id="SubmitReport", guards=[guards.resident], status_code=201,
          dependencies=web.IDEMPOTENT_REQUIRED,
          summary="Send a report (Idempotency-Key required); 409 possible-duplicates offers nearby open ones first")
    async def submit(self, data: JSONBody[ReportCreate], request: Request, tx: web.Tx, principal: web.Caller,
                     ctx: Context) -> Report:
        # the report keeps the key too, for longer than the kernel's record (see service.submit)
        key = idempotency.key_of(request, required=True)
        return await service.submit(tx, ctx, principal, data, idempotency_key=key)

    @get("/{report_id:int}", operation_id="GetReport")
    async def get_one(self, report_id: web.Id, conn: web.Conn, viewer: web.Viewer, ctx: Context) -> Report:
        return await views.get_report(conn, ctx, viewer, report_id)

    @get("/{report_id:int}/timeline", operation_id="GetReportTimeline",
         summary="Every step and who took it (internal notes and assignments for staff only)")
    async def get_timeline(self, report_id: web.Id, conn: web.Conn, viewer: web.Viewer, ctx: Context) -> Timeline:
        return await views.timeline(conn, ctx, viewer, report_id)

    # ---- residents

    @post("/{report_id:int}/follow", operation_id="FollowReport", guards=[guards.resident], status_code=200)
    async def follow(self, report_id: web.Id, tx: web.Tx, principal: web.Caller, ctx: Context) -> Following:
        return await service.set_following(tx, ctx, principal, report_id, True)

    @delete("/{report_id:int}/follow", operation_id="UnfollowReport", guards=[guards.resident], status_code=200)
    async def unfollow(self, report_id: web.Id, tx: web.Tx, principal: web.Caller, ctx: Context) -> Following:
        return await service.set_following(tx, ctx, principal, report_id, False)

    @post("/{report_id:int}/close", operation_id="CloseReport", guards=[guards.resident], status_code=200,
          dependencies=web.IDEMPOTENT, summary="The reporter accepts the answer")
    async def close(self, report_id: web.Id, tx: web.Tx, principal: web.Caller, ctx: Context) -> Report:
        return await service.close(tx, ctx, principal, report_id)

    @post("/{report_id:int}/rating", operation_id="RateAnswer", guards=[guards.resident], status_code=200,
          dependencies=web.IDEMPOTENT, summary="The reporter rates the answer 1-5, with a comment")
    async def rate(self, report_id: web.Id, data: JSONBody[Rate], tx: web.Tx, principal: web.Caller,
                   ctx: Context) -> Report:
        return await service.rate(tx, ctx, principal, report_id, data)

    @post("/{report_id:int}/reopen", operation_id="ReopenReport", guards=[guards.resident], status_code=200,
          dependencies=web.IDEMPOTENT, summary="The reporter, unsatisfied, reopens within 7 days of the answer")
    async def reopen(self, report_id: web.Id, data: JSONBody[Reopen], tx: web.Tx, principal: web.Caller,
                     ctx: Context) -> Report:
        return await service.reopen(tx, ctx, principal, report_id, data.reason)

    # ---- staff of the responsible unit

    @post("/{report_id:int}/receive", operation_id="ReceiveReport", guards=[guards.resident, staff_level],
          status_code=200, dependencies=web.IDEMPOTENT)
    async def receive(self, report_id: web.Id, data: JSONBody[Receive], tx: web.Tx, principal: web.Caller,
                      ctx: Context) -> Report:
        return await service.receive(tx, ctx, principal, report_id, data.urgency)

    @post("/{report_id:int}/assign", operation_id="AssignReport", guards=[guards.resident, staff_level],
          status_code=200, dependencies=web.IDEMPOTENT)
    async def assign(self, report_id: web.Id, data: JSONBody[Assign], state: State, tx: web.Tx,
                     principal: web.Caller, ctx: Context) -> Report:
        return await service.assign(state.identity, tx, ctx, principal, report_id, data.assignee_id)

    @post("/{report_id:int}/start", operation_id="StartReport", guards=[guards.resident, staff_level],
          status_code=200, dependencies=web.IDEMPOTENT)
    async def start(self, report_id: web.Id, tx: web.Tx, principal: web.Caller, ctx: Context) -> Report:
        return await service.start(tx, ctx, principal, report_id)

    @post("/{report_id:int}/answer", operation_id="AnswerReport", guards=[guards.resident, staff_level],
          status_code=200, dependencies=web.IDEMPOTENT,
          summary="Answer with text (or a template and its values) and photos")
    async def answer(self, report_id: web.Id, data: JSONBody[AnswerCreate], tx: web.Tx, principal: web.Caller,
                     ctx: Context) -> Report:
        return await service.answer(tx, ctx, principal, report_id, data)

    @post("/{report_id:int}/reject", operation_id="RejectReport", guards=[guards.resident, staff_level],
          status_code=200, dependencies=web.IDEMPOTENT)
    async def reject(self, report_id: web.Id, data: JSONBody[Reject], tx: web.Tx, principal: web.Caller,
                     ctx: Context) -> Report:
        return await service.reject(tx, ctx, principal, report_id, data)

    @post("/{report_id:int}/transfer", operation_id="TransferReport", guards=[guards.resident, staff_level],
          status_code=200, dependencies=web.IDEMPOTENT)
    async def transfer(self, report_id: web.Id, data: JSONBody[Transfer], tx: web.Tx, principal: web.Caller,
                       ctx: Context) -> Report:
        return await service.transfer(tx, ctx, principal, report_id, data)

    @post("/{report_id:int}/notes", operation_id="AddReportNote", guards=[guards.resident, staff_level],
          status_code=200, dependencies=web.IDEMPOTENT, summary="An internal note, never shown to residents")
    async def note(self, report_id: web.Id, data: JSONBody[Note], tx: web.Tx, principal: web.Caller,
                   ctx: Context) -> Timeline:
        return await service.add_note(tx, ctx, principal, report_id, data.text)

    @post("/{report_id:int}/merge", operation_id="MergeReport", guards=[guards.resident, staff_level],
          status_code=200, dependencies=web.IDEMPOTENT,
          summary="Close as a duplicate of another report; its reporter and followers follow that one")
    async def merge(self, report_id: web.Id, data: JSONBody[Merge], tx: web.Tx, principal: web.Caller,
                    ctx: Context) -> Report:
        return await service.merge(tx, ctx, principal, report_id, data.into)


class MyReportsController(Controller):
    path = "/v1/feedback/me"
    tags = ["Feedback"]
    guards = [guards.resident]
    dependencies = DEPENDENCIES

    @get("/reports", operation_id="MyReports", summary="Reports I sent, private ones included")
    async def mine(self, conn: web.Conn, principal: web.Caller, ctx: Context, status: StatusFilter = None,
                   cursor: ReportCursor = None, limit: web.Limit = 20) -> ReportPage:
        return await views.my_reports(conn, ctx, principal, following=False, status=status, cursor=cursor,
                                      limit=limit)

    @get("/following", operation_id="ReportsIFollow")
    async def following(self, conn: web.Conn, principal: web.Caller, ctx: Context,
                        status: StatusFilter = None, cursor: ReportCursor = None,
                        limit: web.Limit = 20) -> ReportPage:
        return await views.my_reports(conn, ctx, principal, following=True, status=status, cursor=cursor,
                                      limit=limit)


class UnitQueueController(Controller):
    path = "/v1/feedback/units/{unit:str}"
    tags = ["Feedback: staff"]
    guards = [guards.resident, staff_level]
    dependencies = DEPENDENCIES

    @get("/reports", operation_id="UnitQueue",
         summary="The unit's reports (open ones unless status says otherwise), by deadline or newest first")
    async def queue(self, unit: FromPath[str], conn: web.Conn, principal: web.Caller, ctx: Context,
                    status: StatusFilter = None, category: FromQuery[str | None] = None,
                    overdue: FromQuery[bool | None] = None, ward: FromQuery[str | None] = None,
                    q: TextQuery = None, assignee: FromQuery[str | None] = None,
                    order: FromQuery[Literal["deadline", "newest"]] = "deadline",
                    cursor: ReportCursor = None, limit: web.Limit = 50) -> ReportPage:
        return await views.unit_queue(conn, ctx, principal, unit, status=status, category=category, overdue=overdue,
                                      ward=ward, q=q, assignee=assignee, order=order, cursor=cursor, limit=limit)

    @get("/templates", operation_id="AnswerTemplates")
    async def templates(self, unit: FromPath[str], conn: web.Conn, principal: web.Caller,
                        ctx: Context) -> AnswerTemplateList:
        return AnswerTemplateList(templates=await views.list_templates(conn, ctx, principal, unit))


class PublicController(Controller):
    path = "/v1/feedback/public"
    tags = ["Feedback: public"]
    dependencies = DEPENDENCIES

    @get("/reports", operation_id="PublicReports",
         summary="Public reports, newest first; bbox=min_lng,min_lat,max_lng,max_lat for a map; q searches "
                 "with or without diacritics")
    async def reports(self, read_conn: web.ReadConn, ctx: Context, bbox: Box = None,
                      category: FromQuery[str | None] = None, status: StatusFilter = None,
                      ward: FromQuery[str | None] = None, q: TextQuery = None,
                      cursor: ReportCursor = None, limit: web.Limit = 50) -> ReportPage:
        # the replica's (when there is one): a report sent a moment ago may show a moment later
        return await views.public_reports(read_conn, ctx, bbox=bbox, category=category, status=status, ward=ward, q=q,
                                          cursor=cursor, limit=limit)

    @get("/stats", operation_id="FeedbackUnitStats", responses={404: openapi.problem(404)},
         summary="Per unit: received, answered (on time), open, overdue and the average rating")
    async def stats(self, state: State, read_conn: web.ReadConn, ctx: Context,
                    days: Annotated[int, QueryParameter(ge=1, le=366)] = 90,
                    unit: FromQuery[str | None] = None) -> UnitStatsList:
        return await views.stats(read_conn, ctx, days=days, unit=unit, redis=state.redis)


ROUTERS = [CategoriesController, PhotosController, ReportsController, MyReportsController, UnitQueueController,
           PublicController]
