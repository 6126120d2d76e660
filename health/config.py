"""The health module's settings."""

from __future__ import annotations

from typing import Annotated

import msgspec

from modules import Settings

Rate = Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]*/[1-9][0-9]*$")]  # COUNT/SECONDS, as app.ratelimit reads it


class HealthSettings(msgspec.Struct, frozen=True, kw_only=True):
    data_key: str | None = None
    share_code_seconds: int = 300
    share_access_minutes: int = 240
    emergency_minutes: int = 60
    consent_max_days: int = 366
    max_bundle_bytes: int = 5 * 1024 * 1024
    max_bundle_entries: int = 1000
    page_max: int = 200
    social_insurance_url: str | None = None
    outbox_max_attempts: int = 12
    outbox_backoff_seconds: int = 30
    outbox_backoff_max_seconds: int = 6 * 3600
    display_grant_max_days: int = 366
    access_log_retention_months: int = 0
    rate_share_redeem_failed: Rate = "20/300"
    rate_share_redeem_failed_address: Rate = "60/300"


SETTINGS = Settings(HealthSettings, {
    "IHANOI_HEALTH_DATA_KEY": ("data_key", "32 random bytes, base64: encrypts health records at rest, their own key apart from IHANOI_MASTER_KEY (prod: required; dev/test derive one from the master key)"),
    "IHANOI_HEALTH_SHARE_CODE_SECONDS": ("share_code_seconds", "seconds the share code (QR) a resident shows at a visit may be redeemed (default 300)"),
    "IHANOI_HEALTH_SHARE_ACCESS_MINUTES": ("share_access_minutes", "minutes a facility may read the record after redeeming a share code (default 240)"),
    "IHANOI_HEALTH_EMERGENCY_MINUTES": ("emergency_minutes", "minutes an emergency (break-glass) access lasts (default 60)"),
    "IHANOI_HEALTH_CONSENT_MAX_DAYS": ("consent_max_days", "longest consent a resident may give a facility or clinician, in days (default 366)"),
    "IHANOI_HEALTH_MAX_BUNDLE_BYTES": ("max_bundle_bytes", "largest FHIR transaction Bundle accepted, in bytes (default 5 MiB)"),
    "IHANOI_HEALTH_MAX_BUNDLE_ENTRIES": ("max_bundle_entries", "most entries in one FHIR transaction Bundle (default 1000)"),
    "IHANOI_HEALTH_PAGE_MAX": ("page_max", "largest `_count` of a FHIR search page (default 200)"),
    "IHANOI_HEALTH_SOCIAL_INSURANCE_URL": ("social_insurance_url", "base URL of the social-insurance (VSS) visit endpoint finished visits are sent to (dev/test default: the local stand-in at /stand-in/social-insurance; prod: visits wait in the outbox until set)"),
    "IHANOI_HEALTH_OUTBOX_MAX_ATTEMPTS": ("outbox_max_attempts", "tries of one finished visit before it is marked failed for a person to look at (default 12)"),
    "IHANOI_HEALTH_OUTBOX_BACKOFF_SECONDS": ("outbox_backoff_seconds", "seconds before the first retry of a visit the receiver did not take; doubled at each try, with jitter (default 30)"),
    "IHANOI_HEALTH_OUTBOX_BACKOFF_MAX_SECONDS": ("outbox_backoff_max_seconds", "longest wait between two tries of a visit, in seconds (default 21600)"),
    "IHANOI_HEALTH_DISPLAY_GRANT_MAX_DAYS": ("display_grant_max_days", "longest a resident may let an app (the VNeID display) read their health summary, in days (default 366)"),
    "IHANOI_HEALTH_RATE_SHARE_REDEEM_FAILED": ("rate_share_redeem_failed", "failed share-code redemptions per caller (a facility's system or a clinician), `COUNT/SECONDS`; past it 429 with Retry-After, even for a right code; a hospital system serves every counter, so typos count too (default 20/300)"),
    "IHANOI_HEALTH_RATE_SHARE_REDEEM_FAILED_ADDRESS": ("rate_share_redeem_failed_address", "failed share-code redemptions per client address, whoever the caller, `COUNT/SECONDS` (default 60/300)"),
    "IHANOI_HEALTH_ACCESS_LOG_RETENTION_MONTHS": ("access_log_retention_months", "months of the access log kept attached to `health_access_log`; older months are detached (kept as their own tables for archiving, never dropped); 0 keeps every month (default 0)"),
})


def of(settings) -> HealthSettings:
    return settings.of("health")
