"""A report's life as one table: from which status, which action leads to which status, and who may take it.

Every step in service.py and jobs.py asks `check` before it changes anything; no other code decides whether a
step is allowed. Who: STAFF is staff or the head of the report's unit or of a unit above it, REPORTER the
resident who sent the report, SYSTEM the worker. A step that leaves the status as it is (assign, note,
escalate) is listed from every status it is allowed in. Rules that are not about the status (an answer is
reopened within 7 days, rated once) stay with the step in service.py.

Which statuses count as open, and when a report is overdue, is defined once in SQL
(migrations/003_open_and_overdue.sql): the lists and figures ask the database, not this table.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal, NamedTuple, get_args

from app.errors import Forbidden, InvalidTransition
from feedback.models import Status

Actor = Literal["staff", "reporter", "system"]
STAFF: Actor = "staff"
REPORTER: Actor = "reporter"
SYSTEM: Actor = "system"

STATUSES: tuple[str, ...] = get_args(Status)
# An answer may be reopened by its reporter for this many days; one nobody reopened or rated by then is closed.
REOPEN_DAYS = 7


class Step(NamedTuple):
    from_status: str
    action: str
    to_status: str
    actor: Actor


TRANSITIONS: tuple[Step, ...] = (
    #     from           action       to             who
    Step("submitted",   "receive",   "received",    STAFF),
    Step("received",    "start",     "in_progress", STAFF),
    Step("received",    "answer",    "answered",    STAFF),
    Step("in_progress", "answer",    "answered",    STAFF),
    Step("submitted",   "assign",    "submitted",   STAFF),
    Step("received",    "assign",    "received",    STAFF),
    Step("in_progress", "assign",    "in_progress", STAFF),
    Step("submitted",   "reject",    "rejected",    STAFF),
    Step("received",    "reject",    "rejected",    STAFF),
    Step("in_progress", "reject",    "rejected",    STAFF),
    # to another unit, which receives it afresh with new deadlines
    Step("submitted",   "transfer",  "submitted",   STAFF),
    Step("received",    "transfer",  "submitted",   STAFF),
    Step("in_progress", "transfer",  "submitted",   STAFF),
    # closed as a duplicate of another report
    Step("submitted",   "merge",     "closed",      STAFF),
    Step("received",    "merge",     "closed",      STAFF),
    Step("in_progress", "merge",     "closed",      STAFF),
    # internal notes, in any status
    Step("submitted",   "note",      "submitted",   STAFF),
    Step("received",    "note",      "received",    STAFF),
    Step("in_progress", "note",      "in_progress", STAFF),
    Step("answered",    "note",      "answered",    STAFF),
    Step("closed",      "note",      "closed",      STAFF),
    Step("rejected",    "note",      "rejected",    STAFF),
    # the reporter accepts the answer, rates it (which closes it), or reopens it
    Step("answered",    "close",     "closed",      REPORTER),
    Step("answered",    "rate",      "closed",      REPORTER),
    Step("closed",      "rate",      "closed",      REPORTER),
    Step("answered",    "reopen",    "in_progress", REPORTER),
    Step("closed",      "reopen",    "in_progress", REPORTER),
    # the worker: an answer nobody reopened or rated is final; a report past a deadline goes up a level
    Step("answered",    "expire",    "closed",      SYSTEM),
    Step("submitted",   "escalate",  "submitted",   SYSTEM),
    Step("received",    "escalate",  "received",    SYSTEM),
    Step("in_progress", "escalate",  "in_progress", SYSTEM),
)

_STEPS = {(s.from_status, s.action): s for s in TRANSITIONS}
ACTORS: dict[str, Actor] = {s.action: s.actor for s in TRANSITIONS}  # one per action (tests/feedback check it)

# how an action reads in "cannot ... a report that is ..."
_VERBS = {"start": "start handling"}


def check(report: Mapping[str, Any], action: str, standing: Collection[Actor]) -> Step:
    """The step `action` takes from the report's status, if the caller stands as the one who may take it.

    `standing` is what the caller is to this report (STAFF, REPORTER, both or neither). Who comes first:
    someone who may never take the step is refused (403) whatever the status; then a step the status does not
    allow is a conflict (409) naming the statuses it is allowed in.
    """
    actor = ACTORS[action]
    if actor not in standing:
        if actor == STAFF:
            raise Forbidden(f"report {report['id']} belongs to {report['unit_code']}; only its staff may act on it")
        raise Forbidden("only the resident who sent the report may do this")
    status = report["status"]
    step = _STEPS.get((status, action))
    if step is None:
        allowed = [s for s in STATUSES if (s, action) in _STEPS]
        raise InvalidTransition(f"cannot {_VERBS.get(action, action)} a report that is {status} "
                                f"(only when {' or '.join(allowed)})", status=status)
    return step


STATUS_LABELS = {
    "submitted": ("Chờ tiếp nhận", "Waiting to be received"),
    "received": ("Đã tiếp nhận", "Received"),
    "in_progress": ("Đang xử lý", "In progress"),
    "answered": ("Đã trả lời", "Answered"),
    "closed": ("Đã đóng", "Closed"),
    "rejected": ("Từ chối tiếp nhận", "Rejected"),
}
EVENT_LABELS = {
    "submitted": ("Gửi phản ánh", "Report sent"),
    "received": ("Đơn vị đã tiếp nhận", "Received by the unit"),
    "assigned": ("Giao cán bộ xử lý", "Assigned to a clerk"),
    "started": ("Bắt đầu xử lý", "Handling started"),
    "answered": ("Đã trả lời", "Answered"),
    "closed": ("Đã đóng", "Closed"),
    "rejected": ("Từ chối tiếp nhận", "Rejected"),
    "transferred": ("Chuyển đơn vị xử lý", "Transferred to another unit"),
    "reopened": ("Người phản ánh mở lại", "Reopened by the reporter"),
    "rated": ("Người phản ánh đánh giá", "Rated by the reporter"),
    "escalated": ("Quá hạn, đã báo cấp trên", "Overdue, escalated"),
    "merged": ("Gộp vào phản ánh trùng", "Merged into a duplicate report"),
    "note": ("Ghi chú nội bộ", "Internal note"),
    "urgency_changed": ("Đổi mức độ", "Urgency changed"),
}
