"""The health module as the kernel sees it: routes, declarations, settings."""

from __future__ import annotations

from pathlib import Path

from health import api, config, demo, store
from health.cli import cli
from health.outbound import jobs as outbound_jobs
from health.outbound import stand_in as outbound_stand_in
from health.resident import api as resident_api
from modules import Module, NotificationCategory, Role, Template, TimePartitions, Title

module = Module(
    name="health",
    title=Title(vi="Sức khỏe", en="Health"),
    icon="health",
    routers=[*api.ROUTERS, *resident_api.ROUTERS],
    jobs=outbound_jobs.JOBS,
    dev_routers=[outbound_stand_in.create_router()],
    migrations=Path(__file__).parent / "migrations",
    min_identity_level=2,
    roles=[
        Role("health_facility", Title("Hệ thống cơ sở y tế", "Health facility system"), "record",
             "the facility's code: its system (a machine client) writes visits over FHIR and reads what "
             "residents shared with the facility"),
        Role("health_clinician", Title("Nhân viên y tế", "Clinician"), "record",
             "the facility's code: a resident who treats patients there reads what they shared with the "
             "facility or with them, and may open a record in an emergency"),
        Role("health_display", Title("Ứng dụng hiển thị sổ sức khỏe (VNeID)", "Health summary display (VNeID)"), "none",
             "no scope: an app (a machine client) that shows a resident's health summary, only while that "
             "resident has granted it"),
        Role("health_admin", Title("Quản lý y tế thành phố", "City health administration"), "none",
             "no scope: registers facilities"),
    ],
    notification_categories=[NotificationCategory("health", Title("Sức khỏe", "Health"), templates=[
        Template("health.emergency_access", "Hồ sơ sức khỏe được mở khẩn cấp",
                 "{facility} đã mở hồ sơ sức khỏe của bạn lúc {at_vi} trong tình huống khẩn cấp. Lý do: {reason}",
                 "Your health record was opened in an emergency",
                 "{facility} opened your health record at {at_en} in an emergency. Reason: {reason}"),
    ])],
    settings=config.SETTINGS,
    seed=demo.seed,
    cli=cli,
    # every read of every record appends a row: monthly partitions; past retention, months are detached, never
    # dropped (the access log is the resident's proof of who read their record); the chain's anchors are saved
    # first, so verify-log still walks the live log from them
    partitions=[TimePartitions("health_access_log", "at", ahead=3,
                               retention_setting="access_log_retention_months", expire="detach",
                               before_expire=store.save_chain_anchors)],
)
