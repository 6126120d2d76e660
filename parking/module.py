"""The parking module as the kernel sees it: routes, jobs, declarations."""

from __future__ import annotations

from pathlib import Path

import payments
from modules import LiveChannel, Module, NotificationCategory, ProblemType, Role, Template, Title
from parking import api, config, demo, jobs, service

# An owed fee is settled in the top-up's own transaction, the moment the wallet is credited (the 60 s job
# parking.settle_debts stays as the safety net).
payments.on_wallet_credited("parking", service.settle_debts_of)

module = Module(
    name="parking",
    title=Title(vi="Gửi xe", en="Parking"),
    icon="parking",
    routers=api.ROUTERS,
    migrations=Path(__file__).parent / "migrations",
    jobs=jobs.JOBS,
    seed=demo.seed,
    problems=[
        ProblemType("already-parked", 409, Title("Xe đang gửi, chưa lấy ra", "The vehicle is already parked")),
        ProblemType("not-parked", 409, Title("Xe chưa vào bãi", "The vehicle has not checked in")),
        ProblemType("plate-unreadable", 422, Title("Không đọc được biển số", "The plate cannot be read")),
        ProblemType("device-clock-skew", 422, Title("Đồng hồ thiết bị lệch", "The device's clock is off")),
        ProblemType("stay-too-long", 422, Title("Vượt thời gian gửi tối đa", "Longer than the maximum stay")),
        ProblemType("lot-full", 409, Title("Bãi đã hết chỗ", "The lot is full")),
        ProblemType("lot-closed", 409, Title("Bãi đang đóng cửa", "The lot is closed")),
        ProblemType("no-tariff", 422, Title("Chưa có biểu phí", "No tariff applies")),
    ],
    roles=[
        Role("parking_admin", Title("Quản lý bãi xe thành phố", "City parking administration"), "none",
             "no scope: creates lots and zones for any operator and sets the city's tariffs"),
        Role("parking_operator", Title("Đơn vị vận hành bãi xe", "Parking operator"), "record",
             "the operator's slug (a parking operator of payments): its lots and reconciliation"),
        Role("parking_gate", Title("Cổng / máy của nhân viên trông xe", "Parking gate or attendant device"), "record",
             "the operator's slug: check-in and check-out at that operator's lots (machine clients)"),
        Role("parking_enforcement", Title("Kiểm tra đỗ xe", "Parking enforcement"), "none",
             "no scope: looks plates up city-wide"),
    ],
    notification_categories=[NotificationCategory("parking", Title("Gửi xe", "Parking"), templates=[
        Template("parking.ending_soon", "Sắp hết giờ gửi xe",
                 "Xe {plate} tại {lot} hết giờ lúc {until} (còn {minutes} phút). Gia hạn trong ứng dụng.",
                 "Parking ends soon",
                 "{plate} at {lot} is paid until {until} ({minutes} min left). Extend in the app."),
        Template("parking.receipt", "Biên nhận phí gửi xe", "Đã thanh toán {amount_vi} đ cho xe {plate} tại {lot}.",
                 "Parking receipt", "Paid {amount_en} VND for {plate} at {lot}."),
        Template("parking.debt_recorded", "Phí gửi xe chưa thanh toán",
                 "Ví không đủ để trả {amount_vi} đ cho xe {plate} tại {lot}. Khoản nợ sẽ được trừ khi bạn nạp tiền.",
                 "Parking fee owed",
                 "Your wallet could not pay {amount_en} VND for {plate} at {lot}. It will be taken when you top up."),
        Template("parking.debt_settled", "Đã thanh toán phí gửi xe còn nợ",
                 "Đã trừ {amount_vi} đ phí gửi xe còn nợ của xe {plate}.",
                 "Parking debt settled", "The {amount_en} VND owed for {plate} has been paid."),
    ])],
    settings=config.SETTINGS,
    live=[LiveChannel("availability", "free spaces per lot and vehicle type after each check-in or check-out")],
)
