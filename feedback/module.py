"""The feedback module as the kernel sees it."""

from __future__ import annotations

from pathlib import Path

from feedback import api, config, demo, jobs
from feedback.open311 import api as open311_api
from modules import Module, NotificationCategory, ProblemType, Template, TimePartitions, Title

module = Module(
    name="feedback",
    title=Title(vi="Phản ánh hiện trường", en="Report a problem"),
    icon="megaphone",
    routers=[*api.ROUTERS, *open311_api.ROUTERS],
    migrations=Path(__file__).parent / "migrations",
    jobs=jobs.JOBS,
    seed=demo.seed,
    settings=config.SETTINGS,
    # a step for every action on every report: monthly partitions; past the retention (default none) a month is
    # detached, never dropped (a report's history is a public record)
    partitions=[TimePartitions("report_event", "at", ahead=3, retention_setting="event_retention_months",
                               expire="detach")],
    problems=[ProblemType("possible-duplicates", 409, Title("Đã có phản ánh tương tự gần đây",
                                                            "Similar reports were sent nearby"))],
    notification_categories=[NotificationCategory("feedback", Title("Phản ánh hiện trường", "Reports"), templates=[
        # a step on a report the resident sent or follows (service.add_event)
        Template("feedback.status", "Phản ánh #{id}: {status_vi}", "{message_vi}",
                 "Report #{id}: {status_en}", "{message_en}"),
        # a deadline passed, to the unit's staff and heads (jobs.escalate_overdue)
        Template("feedback.escalated", "Phản ánh #{id} quá hạn {deadline_vi}",
                 "Phản ánh “{category_vi}” tại {unit_vi} đã quá hạn {deadline_vi} lúc {due_local}.",
                 "Report #{id} is past its {deadline_en} deadline",
                 "The “{category_en}” report at {unit_en} passed its {deadline_en} deadline at {due_local}."),
    ])],
)
