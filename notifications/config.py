"""The notifications module's settings: where pushes go and how hard the worker pushes."""

from __future__ import annotations

import msgspec

from modules import Settings


class PushSettings(msgspec.Struct, frozen=True, kw_only=True):
    fcm_project: str = "ihanoi-dev"
    fcm_endpoint: str | None = None
    fcm_concurrency: int = 16
    push_lease_seconds: int = 60
    google_credentials: str | None = None  # read by firebase-admin itself; documented here
    delivery_retention_months: int = 0

    def __post_init__(self) -> None:
        if self.delivery_retention_months == 1:  # a delivery of last month's last day may still be due
            raise msgspec.ValidationError("IHANOI_PUSH_DELIVERY_RETENTION_MONTHS must be 0 (keep all) or at least 2")


SETTINGS = Settings(PushSettings, {
    "IHANOI_FCM_PROJECT": ("fcm_project", "Firebase project id the pushes are sent for"),
    "IHANOI_FCM_ENDPOINT": ("fcm_endpoint", "FCM base URL; dev/test default: the local FCM stand-in at `/stand-in/fcm`; prod: Google"),
    "IHANOI_FCM_CONCURRENCY": ("fcm_concurrency", "FCM requests in flight per worker, over as many keep-alive connections (default 16; more helps over a slow network)"),
    "IHANOI_PUSH_LEASE": ("push_lease_seconds", "seconds before a push claimed by a worker that died is sent again (default 60)"),
    "IHANOI_PUSH_DELIVERY_RETENTION_MONTHS": ("delivery_retention_months", "months of push deliveries kept in `notification_delivery`; older months are dropped (the inbox items and broadcast counts stay); 0 keeps every month, else at least 2 (default 0)"),
    "GOOGLE_APPLICATION_CREDENTIALS": ("google_credentials", "prod: service-account file firebase-admin signs in with"),
})


def push_settings(settings) -> PushSettings:
    return settings.of("notifications")


def fcm_endpoint_url(settings) -> str | None:
    """Where pushes go: the configured endpoint, the local stand-in in dev/test, else Google."""
    own = push_settings(settings)
    if own.fcm_endpoint:
        return own.fcm_endpoint.rstrip("/")
    return settings.base_url() + "/stand-in/fcm" if settings.stand_in_enabled else None
