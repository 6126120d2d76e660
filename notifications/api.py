"""Notifications endpoints: HTTP only; the rules are in service.py (inbox, devices, preferences) and broadcasts.py.

Plumbing comes from the kernel's toolkit (`app.web`): connections, the caller, the language, path ids, paging
and Idempotency-Key, declared on the route.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from app import idempotency, web
from app.identity import Principal, guards
from notifications import broadcasts, live, service
from notifications.models import (
    Broadcast,
    BroadcastCreate,
    BroadcastList,
    Device,
    DeviceRegistration,
    InboxPage,
    Preferences,
    PreferencesView,
    UnreadCount,
)

KEEPALIVE_SECONDS = 15


def _resident(principal: Principal) -> uuid.UUID:
    return uuid.UUID(principal.sub)


InboxCursor = web.cursor_parameter(int)

class NotificationsController(Controller):
    path = "/v1/notifications"
    tags = ["Notifications"]
    guards = [guards.resident]

    @put("/devices", operation_id="RegisterDevice", status_code=200,
         summary="Register or refresh this phone's FCM token (idempotent by token)")
    async def register_device(self, data: JSONBody[DeviceRegistration], tx: web.Tx,
                              principal: web.Caller) -> Device:
        return await service.register_device(tx, _resident(principal), principal.session_id, data)

    @get("/devices", operation_id="ListDevices", summary="The resident's phones that receive pushes")
    async def list_devices(self, conn: web.Conn, principal: web.Caller) -> list[Device]:
        return await service.list_devices(conn, _resident(principal))

    @delete("/devices/{device_id:str}", operation_id="UnregisterDevice", status_code=204)
    async def unregister_device(self, device_id: web.UUIDPath, tx: web.Tx, principal: web.Caller) -> None:
        await service.unregister_device(tx, _resident(principal), device_id)

    @get("/", operation_id="ListInbox", summary="The inbox, newest first, cursor-paginated")
    async def inbox(
        self, conn: web.Conn, principal: web.Caller, language: web.Lang,
        cursor: InboxCursor = None, limit: web.Limit = 20,
    ) -> InboxPage:
        return await service.inbox(conn, _resident(principal), cursor=cursor, limit=limit, language=language)

    @get("/unread-count", operation_id="UnreadCount")
    async def unread(self, conn: web.Conn, principal: web.Caller) -> UnreadCount:
        return UnreadCount(unread=await service.unread_count(conn, _resident(principal)))

    @post("/{notification_id:int}/read", operation_id="MarkRead", status_code=204)
    async def mark_read(self, notification_id: web.Id, tx: web.Tx, principal: web.Caller) -> None:
        await service.mark_read(tx, _resident(principal), notification_id)

    @post("/read-all", operation_id="MarkAllRead", status_code=200)
    async def mark_all_read(self, tx: web.Tx, principal: web.Caller) -> UnreadCount:
        await service.mark_all_read(tx, _resident(principal))
        return UnreadCount(unread=0)

    @post("/{notification_id:int}/archive", operation_id="Archive", status_code=204)
    async def archive(self, notification_id: web.Id, tx: web.Tx, principal: web.Caller) -> None:
        await service.archive(tx, _resident(principal), notification_id)

    @get("/preferences", operation_id="GetPreferences")
    async def get_preferences(self, conn: web.Conn, principal: web.Caller) -> PreferencesView:
        return await service.get_preferences(conn, _resident(principal))

    @put("/preferences", operation_id="PutPreferences",
         summary="Push per category, quiet hours (Asia/Ho_Chi_Minh) and the home ward")
    async def put_preferences(self, data: JSONBody[Preferences], state: State, tx: web.Tx,
                              principal: web.Caller) -> PreferencesView:
        units = state.identity.units
        return await service.put_preferences(
            tx, _resident(principal), data,
            known_unit=lambda code: (u := units.get(code)) is not None and u.kind in ("ward", "commune"),
        )

    @get("/stream", operation_id="InboxStream", summary="New inbox items as server-sent events",
         responses={200: ResponseSpec(data_container=str, media_type="text/event-stream",
                                      description="events `ready`, `notification` (an inbox item as JSON) and "
                                                  "`broadcast` (a city broadcast reaching the home ward), and "
                                                  "keep-alive comments every 15 s")})
    async def stream(self, state: State, principal: web.Caller, language: web.Lang) -> ServerSentEvent:
        channel = live.inbox_channel(state.redis, principal.sub)
        city_channel = live.broadcasts_channel(state.redis)
        async with state.pool.acquire() as conn:  # read once: the stream must not hold a connection
            home = await service.home_unit(conn, _resident(principal))
        units = state.identity.units

        async def events() -> AsyncIterator[ServerSentEventMessage]:
            pubsub = state.redis.client.pubsub()
            # city broadcasts come as one event on a shared channel, not one per resident
            await pubsub.subscribe(channel, city_channel)
            try:
                yield ServerSentEventMessage(event="ready", data="{}")
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=KEEPALIVE_SECONDS)
                    if message is None:
                        yield ServerSentEventMessage(comment="keep-alive")
                        continue
                    item = json.loads(message["data"])
                    item["title"], item["body"] = item["title"][language], item["body"][language]
                    if "broadcast_id" in item:
                        if broadcasts.broadcast_reaches(units, item["target_unit"], home):
                            yield ServerSentEventMessage(event="broadcast", data=json.dumps(item, ensure_ascii=False),
                                                         id=f"b{item['broadcast_id']}")
                        continue
                    yield ServerSentEventMessage(event="notification", data=json.dumps(item, ensure_ascii=False),
                                                 id=str(item["id"]))
            finally:
                await pubsub.unsubscribe(channel, city_channel)
                await pubsub.aclose()
                await asyncio.sleep(0)

        return ServerSentEvent(events())


class BroadcastsController(Controller):
    path = "/v1/broadcasts"
    tags = ["Notifications: city broadcasts"]
    # writing to thousands of phones is a sensitive act: level 2, signed in within 15 minutes
    guards = [guards.resident, guards.level(2, max_auth_age=900)]

    @post("/", operation_id="CreateBroadcast", summary="Announce to a ward, a unit's area or (admins) the city",
          dependencies=web.IDEMPOTENT_REQUIRED,
          responses={200: ResponseSpec(Broadcast, generate_examples=False,
                                       description="the broadcast this author already made with this key")})
    async def create(self, data: JSONBody[BroadcastCreate], request: Request, state: State, tx: web.Tx,
                     principal: web.Caller) -> Response[Broadcast]:
        # The kernel answers a retry with the first answer; the broadcast also keeps the key (unique per author),
        # so the same key still finds it after the kernel's record of the request has expired.
        key = idempotency.key_of(request, required=True)
        broadcast, created = await broadcasts.create_broadcast(tx, state.identity, principal, data, key)
        return Response(broadcast, status_code=201 if created else 200)

    @get("/", operation_id="ListBroadcasts", summary="Broadcasts I wrote")
    async def mine(self, conn: web.Conn, principal: web.Caller) -> BroadcastList:
        return BroadcastList(broadcasts=await broadcasts.list_broadcasts(conn, principal))

    @get("/{broadcast_id:int}", operation_id="GetBroadcast", summary="Status, progress and delivery counts")
    async def get_one(self, broadcast_id: web.Id, state: State, conn: web.Conn, principal: web.Caller) -> Broadcast:
        return await broadcasts.get_broadcast(conn, state.identity, principal, broadcast_id)

    @post("/{broadcast_id:int}/approve", operation_id="ApproveBroadcast", status_code=200,
          summary="A second admin approves a city-wide broadcast", dependencies=web.IDEMPOTENT)
    async def approve(self, broadcast_id: web.Id, state: State, tx: web.Tx, principal: web.Caller) -> Broadcast:
        return await broadcasts.approve_broadcast(tx, state.identity, principal, broadcast_id)

    @post("/{broadcast_id:int}/cancel", operation_id="CancelBroadcast", status_code=200,
          summary="Stop a scheduled or running broadcast", dependencies=web.IDEMPOTENT)
    async def cancel(self, broadcast_id: web.Id, state: State, tx: web.Tx, principal: web.Caller) -> Broadcast:
        return await broadcasts.cancel_broadcast(tx, state.identity, principal, broadcast_id)
