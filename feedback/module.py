"""The feedback module as the kernel sees it."""

from __future__ import annotations

from pathlib import Path

from feedback import api, demo, jobs
from feedback.open311 import api as open311_api
from modules import Module, NotificationCategory, ProblemType, Title

module = Module(
    name="feedback",
    title=Title(vi="Phản ánh hiện trường", en="Report a problem"),
    icon="megaphone",
    routers=[*api.ROUTERS, *open311_api.ROUTERS],
    migrations=Path(__file__).parent / "migrations",
    jobs=jobs.JOBS,
    seed=demo.seed,
    problems=[ProblemType("possible-duplicates", 409, Title("Đã có phản ánh tương tự gần đây",
                                                            "Similar reports were sent nearby"))],
    notification_categories=[NotificationCategory("feedback", Title("Phản ánh hiện trường", "Reports"))],
)
