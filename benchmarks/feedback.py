"""Feedback lists at scale: latency of the public map box, the staff queue and text search with N reports seeded,
against the very same SQL run directly through asyncpg in the same run.

    .venv/bin/python -m benchmarks.feedback [--reports 1000000] [--requests 300] [--concurrency 8] [--writes 2000]
                                            [--plans]

1. Creates a throw-away database on the PostgreSQL server of BENCH_DATABASE_URL / DATABASE_URL / the local
   default (Redis from BENCH_REDIS_URL / REDIS_URL / the local default; embedded ones if unreachable), applies the
   migrations with `ihanoi migrate` and seeds, set-based in SQL chunks: residents (reporters), N reports and a photo
   row for most of them (then VACUUM ANALYZE). The report indexes of the migration are dropped for the load and
   rebuilt from their own definitions afterwards (the usual bulk-load order; the definitions are not changed).
   The data: points over Hanoi, dense in the centre and thinning out to the outer communes, each in a ward or
   commune of app/identity/data/units.csv laid out in rings around Hoàn Kiếm; the 13 categories skewed (sanitation,
   urban order and roads first); the unit a ward for most, the category's department for some; about 13 % open
   (nearly half of them overdue), the rest answered, closed or rejected; 5 % private; sent over the last 2 years,
   more of them lately, and stored oldest first as a live table fills up (the planner's index costs depend on that
   order); Vietnamese descriptions with diacritics built from a vocabulary of street problems.
2. Starts one `ihanoi serve --workers 1` (IHANOI_ENV=test) on that database and gets a level-2 staff token for
   the busiest ward through the real login flow (`ihanoi token --role staff:<ward>`).
3. For each scenario (map box, staff queue, text search) builds --warmup + --requests parameter sets, varied (street,
   district and city boxes; queue pages with and without filters, overdue, newest first, page 2; search terms typed
   without diacritics, alone or with a box or a category). The SQL of each set is captured from feedback.views'
   own functions (public_reports, unit_queue: the ones the endpoints call) with a recording connection, so it is
   the statement the endpoint runs, with the same arguments. Before measuring, the ids the endpoint answers are
   checked against that SQL's rows for a few sets of each kind.
   Each scenario is then measured four ways: HTTP requests one at a time (client-side latency, keep-alive), the
   SQL one at a time on one asyncpg connection (prepared and cached, as the server's pool does), and both again
   with --concurrency requests in flight (8 connections). The same parameter sets, in the same order, every time.
   The one-at-a-time figures are the latency of a query; the in-flight ones show what 2 shared cores do under load.
4. Writes (--writes, default 2,000): reports sent through `POST /v1/feedback/reports` by four residents signed in
   with `ihanoi token`, each with its own Idempotency-Key and `duplicates_checked: true` (what the app sends once the
   resident has seen the nearby offer), --concurrency in flight; every one must be answered 201.
5. Per core: during the in-flight HTTP passes and the writes, the CPU time of `ihanoi serve` and of the database's
   PostgreSQL backends is read from /proc (benchmarks.common.CpuMeter); requests over those CPU seconds are the
   figures per core of the capacity sheet in the README.
6. With --plans, prints EXPLAIN (ANALYZE, BUFFERS) of every statement of one representative set of each scenario
   (the one at the SQL p95 of the one-at-a-time run). The report also says how often PostgreSQL used a generic
   plan for the cached statements of the SQL pass.

--keep-database keeps the seeded database; --reuse-database NAME measures it again without seeding (same
migrations: a changed migration file stops `ihanoi serve`).

Exits 1 on a failed check, a non-200 answer or an error, 130 on Ctrl-C. Everything it starts is stopped, and the
database and Redis keys it made are dropped, whatever happens (unless --keep-database).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import math
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from benchmarks.common import (
    HOST,  # every socket this script opens or serves is on the loopback interface
    REPO,
    BenchError,
    CpuMeter,
    Server,
    _die_with_parent,
    _percentile,
    create_database,
    delete_redis_prefix,
    drop_database,
    free_port,
    http_request,
    ihanoi_command,
    ratio,
    request_bytes,
    resolve_services,
    run_cleanup,
    run_in_child,
    run_main,
    safe_url,
    uvicorn_flavour,
    version,
    wait_until_ok,
    with_database,
)

TARGET_P95_MS = 50.0
LIMIT = 50  # the page size the requests ask for (the endpoints' default)
SEED_CHUNK = 100_000
STAFF_PERSONAL_ID = "001085012345"  # a well-formed test number; the stand-in signs it in at the level asked
LEVEL = 2
TOKEN_COMMAND_TIMEOUT = 120.0
TOKEN_MARGIN = 120.0  # seconds a token must have left before a measured pass that uses it
CHECKS_PER_VARIANT = 2
OPEN = ("submitted", "received", "in_progress")

# Hanoi in the migration's local metres (feedback_metres: centred on Hoàn Kiếm); the province's extent.
CENTRE_LAT, CENTRE_LNG = 21.0285, 105.8542
M_PER_DEG_LAT, M_PER_DEG_LNG = 110748.0, 103873.0
EXTENT_X = (-58_600.0, 17_200.0)  # 105.29 E .. 106.02 E
EXTENT_Y = (-51_900.0, 40_000.0)  # 20.56 N .. 21.39 N
# Where reports are: 55 % around the old quarter (sigma 2.5 km), 30 % over the inner districts (sigma 7 km), the
# rest anywhere in the province.
MIXTURE = ((0.55, 2_500.0), (0.85, 7_000.0))
# Wards in rings around Hoàn Kiếm (outer radius in metres, weight of the ward count), communes beyond.
WARD_RINGS = ((1_500.0, 3), (3_000.0, 8), (5_000.0, 12), (7_000.0, 14), (9_500.0, 14))
COMMUNE_RINGS = ((16_000.0, 20), (25_000.0, 25), (None, 30))

# (code, share of reports in %); the order is that of PROBLEMS below.
CATEGORIES = (
    ("ve-sinh-moi-truong", 20), ("trat-tu-do-thi", 15), ("ha-tang-giao-thong", 14), ("trat-tu-giao-thong", 10),
    ("cap-thoat-nuoc", 9), ("dien-chieu-sang", 8), ("trat-tu-xay-dung", 7), ("cay-xanh", 5), ("an-ninh-trat-tu", 4),
    ("khac", 3), ("an-toan-thuc-pham", 2), ("dat-dai", 2), ("dich-vu-cong", 1),
)
PROBLEMS = (  # six per category, in the order of CATEGORIES
    ("Rác thải đổ trộm", "Rác thải tồn đọng nhiều ngày", "Nước thải chảy tràn ra đường", "Khói bụi gây ô nhiễm",
     "Mùi hôi thối từ bãi rác", "Đốt rác gây khói"),
    ("Lấn chiếm vỉa hè để kinh doanh", "Hàng rong lấn chiếm lòng đường", "Biển quảng cáo treo sai quy định",
     "Trông giữ xe trái phép trên vỉa hè", "Quán ăn bày bàn ghế ra vỉa hè", "Dựng mái che lấn chiếm vỉa hè"),
    ("Đường hỏng nhiều ổ gà", "Ổ gà lớn giữa đường", "Vỉa hè bị vỡ, bong gạch", "Mặt đường sụt lún",
     "Nắp hố ga bị vỡ", "Đèn tín hiệu giao thông không hoạt động"),
    ("Ùn tắc giao thông kéo dài", "Ô tô đỗ xe sai quy định", "Xe máy đi ngược chiều", "Xe tải chở vật liệu rơi vãi",
     "Taxi dừng đỗ đón khách sai quy định", "Thiếu biển báo giao thông"),
    ("Ngập úng sau mưa", "Cống thoát nước bị tắc", "Mất nước sinh hoạt nhiều ngày", "Vỡ đường ống nước sạch",
     "Nắp cống bị mất", "Nước máy có mùi lạ"),
    ("Đèn đường không sáng", "Đèn đường hỏng nhiều ngày", "Dây điện võng thấp nguy hiểm", "Mất điện kéo dài",
     "Cột điện bị nghiêng", "Đèn chiếu sáng công viên hỏng"),
    ("Xây dựng trái phép", "Công trình không phép", "Vật liệu xây dựng để tràn ra đường",
     "Công trình gây nứt nhà bên cạnh", "Cơi nới trái phép", "Thi công gây tiếng ồn ban đêm"),
    ("Cây đổ chắn ngang đường", "Cành cây gãy treo lơ lửng", "Cây xanh cần cắt tỉa", "Cây chết khô nguy hiểm",
     "Rễ cây làm vỡ vỉa hè", "Chặt hạ cây xanh trái phép"),
    ("Nhóm thanh niên tụ tập gây rối", "Trộm cắp xe máy", "Đua xe trái phép ban đêm", "Đánh nhau gây mất trật tự",
     "Karaoke gây tiếng ồn sau 22 giờ", "Đối tượng nghi buôn bán ma túy"),
    ("Chó thả rông không rọ mõm", "Tiếng ồn từ quán bar", "Biển tên đường bị mất", "Ghế đá công viên bị hỏng",
     "Sân chơi trẻ em xuống cấp", "Nhà vệ sinh công cộng bẩn"),
    ("Thực phẩm bẩn bán ở chợ", "Cơ sở kinh doanh mất vệ sinh", "Nghi ngộ độc thực phẩm",
     "Bán hàng không rõ nguồn gốc", "Quán ăn không đảm bảo vệ sinh", "Giết mổ gia cầm trái phép"),
    ("Lấn chiếm đất công", "Tranh chấp ranh giới đất", "San lấp ao hồ trái phép", "Xây tường rào lấn đất công",
     "Đổ đất lấn chiếm lòng hồ", "Sử dụng đất sai mục đích"),
    ("Thủ tục hành chính chậm", "Thái độ phục vụ chưa tốt", "Hẹn trả kết quả quá hạn",
     "Yêu cầu nộp thêm giấy tờ không cần thiết", "Bộ phận một cửa đông, chờ lâu",
     "Hệ thống dịch vụ công trực tuyến bị lỗi"),
)
PLACES = ("đầu ngõ", "cuối ngõ", "trước cổng trường", "gần chợ", "tại ngã tư", "trước số nhà 15", "cạnh hồ",
          "gần trạm xe buýt", "trong khu tập thể", "dưới chân cầu", "trước cổng bệnh viện", "gần công viên",
          "trong ngách", "đối diện trụ sở phường")
STREETS = ("phố Hàng Bạc", "phố Huế", "đường Giải Phóng", "đường Láng", "phố Bạch Mai", "đường Nguyễn Trãi",
           "phố Kim Mã", "đường Trường Chinh", "phố Đội Cấn", "đường Phạm Văn Đồng", "đường Lạc Long Quân",
           "phố Tây Sơn", "đường Hoàng Quốc Việt", "phố Lò Đúc", "đường Xuân Thủy", "đường Nguyễn Chí Thanh",
           "đường Tam Trinh", "phố Minh Khai", "đường Lê Văn Lương", "phố Thái Hà", "đường Âu Cơ", "phố Hàng Bông",
           "đường Nguyễn Văn Cừ", "đường Quang Trung", "phố Chùa Bộc", "đường Cầu Giấy", "đường Kim Giang",
           "phố Đinh Tiên Hoàng", "đường Ngọc Hồi", "đường Phúc Diễn")
TAILS = ("kéo dài nhiều ngày", "gây nguy hiểm cho người đi đường", "bốc mùi khó chịu",
         "đề nghị cơ quan chức năng xử lý", "ảnh hưởng sinh hoạt của người dân", "nhất là vào giờ cao điểm",
         "đã phản ánh nhiều lần nhưng chưa được xử lý", "buổi tối rất nguy hiểm", "trẻ em đi học rất nguy hiểm",
         "người dân rất bức xúc")
EXTRAS = ("Đề nghị phường kiểm tra và xử lý sớm.", "Mong cơ quan chức năng sớm khắc phục.",
          "Tình trạng này đã diễn ra hơn một tuần.", "Xin cảm ơn.", "Khu vực này có nhiều người già và trẻ nhỏ.",
          "Trời mưa càng nghiêm trọng hơn.")
# What people type in the search box: mostly without diacritics, some with, one phrase, one OR.
SEARCH_TERMS = ("duong hong", "rac thai", "o ga", "den duong", "ngap", "cay do", "lan chiem via he",
                "xay dung trai phep", "tieng on", "mat nuoc", "nap cong", "trom cap", "karaoke", "cho tha rong",
                "ghe da", '"den duong" hong', "ngap or cong", "đèn đường", "Rác thải", "ùn tắc", "nut nha",
                "thu tuc cham")

# --------------------------------------------------------------------------------------------------
# Seeding

SEED_RESIDENTS = """
    INSERT INTO resident (id, personal_id_hash, personal_id_enc)
    SELECT md5('bench-resident-' || k)::uuid, decode(md5('bench-pid-' || k), 'hex'), '\\x00'::bytea
      FROM generate_series(1, $1::int) AS k
"""

# One statement per chunk. The CTE holds the random draws of each row (volatile, so it is computed once per row
# and not inlined); everything else is derived from them in LATERAL steps. Ages: a truncated exponential (more
# reports lately), by quantile of n, so that rows go in oldest first as a live table fills up (its physical order
# follows submitted_at, which the planner's index costs depend on). Deadlines in calendar time: 8 working hours ~ a
# day (x3), 40 ~ a week (x4.2).
SEED_REPORTS = """
WITH src AS (
    SELECT n, random() AS u_mix, random() AS g1, random() AS g2, random() AS ux, random() AS uy, random() AS u_cat,
           random() AS u_status, random() AS u_sub, random() AS u_re, random() AS u_t1,
           random() AS u_t2, random() AS u_t3, random() AS u_vis, random() AS u_unit, random() AS u_res,
           random() AS u_noise, random() AS u_d1, random() AS u_d2, random() AS u_d3, random() AS u_d4,
           random() AS u_d5, random() AS u_d6, random() AS u_close, random() AS u_reason, random() AS u_rate,
           random() AS u_follow, random() AS u_misc
      FROM generate_series($1::int, $2::int) AS n
)
INSERT INTO report (reporter_id, idempotency_key, reporter_name, hide_name, visibility, source, category_code, urgency,
                    description, latitude, longitude, address, ward_code, unit_code, status, submitted_at, routed_at,
                    received_at, receive_due_at, answer_due_at, answered_at, answered_on_time, answer_text, closed_at,
                    close_reason, updated_at, escalation_level, reopen_count, rating, rated_at, follower_count)
SELECT md5('bench-resident-' || (1 + floor(s.u_res * s.u_res * $15::int))::int)::uuid,
       'bench-' || s.n, 'Cư dân thử nghiệm', s.u_misc < 0.2,
       CASE WHEN s.u_vis < 0.05 THEN 'private' ELSE 'public' END,
       CASE WHEN s.u_misc > 0.97 THEN 'open311:hanoi-smartcity' ELSE 'app' END,
       c.code, c.urgency,
       ($10::text[])[CASE WHEN s.u_noise < 0.15 THEN 1 + floor(s.u_d1 * cardinality($10::text[]))::int
                          ELSE (k.cat - 1) * 6 + 1 + floor(s.u_d1 * 6)::int END]
           || ' ' || ($11::text[])[1 + floor(s.u_d2 * cardinality($11::text[]))::int] || ' ' || w.street || ', '
           || ($13::text[])[1 + floor(s.u_d4 * cardinality($13::text[]))::int] || '.'
           || CASE WHEN s.u_d5 < 0.35
                   THEN ' ' || ($14::text[])[1 + floor(s.u_d5 / 0.35 * cardinality($14::text[]))::int] ELSE '' END,
       $16::float8 + p.y / $18::float8, $17::float8 + p.x / $19::float8,
       'Số ' || (1 + floor(s.u_d6 * 300))::int || ' ' || w.street,
       w.ward,
       CASE WHEN c.default_unit = 'ward' OR s.u_unit < 0.3 THEN w.ward ELSE c.default_unit END,
       st.status, t0.submitted_at, t1.routed_at,
       CASE WHEN st.status IN ('submitted', 'rejected') THEN NULL ELSE t2.received_at END,
       t2.receive_due_at, t2.answer_due_at, t3.answered_at, t3.answered_at <= t2.answer_due_at,
       CASE WHEN t3.answered_at IS NOT NULL
            THEN 'Cảm ơn Ông/Bà đã phản ánh. Đơn vị đã kiểm tra hiện trường và khắc phục xong.' END,
       t4.closed_at,
       CASE st.status WHEN 'closed' THEN st.reason WHEN 'rejected' THEN 'rejected' END,
       greatest(t1.routed_at, CASE WHEN st.status IN ('submitted', 'rejected') THEN NULL ELSE t2.received_at END,
                t3.answered_at, t4.closed_at),
       CASE WHEN o.open AND t2.answer_due_at < $9::timestamptz THEN 2
            WHEN o.open AND st.status = 'submitted' AND t2.receive_due_at < $9::timestamptz THEN 1 ELSE 0 END,
       CASE WHEN rr.rerouted AND s.u_re < 0.2 THEN 1 ELSE 0 END,
       CASE WHEN st.status = 'closed' AND st.reason = 'rated' THEN least(5, 1 + floor(power(s.u_rate, 0.6) * 5)) END,
       CASE WHEN st.status = 'closed' AND st.reason = 'rated' THEN t4.closed_at END,
       floor(power(s.u_follow, 6) * 25)::int
  FROM src s
 CROSS JOIN LATERAL (
       SELECT greatest($20::float8, least($21::float8, CASE
                  WHEN s.u_mix < $24::float8 THEN $26::float8 * sqrt(-2 * ln(1 - s.g1)) * cos(2 * pi() * s.g2)
                  WHEN s.u_mix < $25::float8 THEN $27::float8 * sqrt(-2 * ln(1 - s.g1)) * cos(2 * pi() * s.g2)
                  ELSE $20::float8 + s.ux * ($21::float8 - $20::float8) END)) AS x,
              greatest($22::float8, least($23::float8, CASE
                  WHEN s.u_mix < $24::float8 THEN $26::float8 * sqrt(-2 * ln(1 - s.g1)) * sin(2 * pi() * s.g2)
                  WHEN s.u_mix < $25::float8 THEN $27::float8 * sqrt(-2 * ln(1 - s.g1)) * sin(2 * pi() * s.g2)
                  ELSE $22::float8 + s.uy * ($23::float8 - $22::float8) END)) AS y) p
 CROSS JOIN LATERAL (
       SELECT width_bucket(sqrt(p.x * p.x + p.y * p.y), $3::float8[]) + 1 AS ring,
              (atan2(p.y, p.x) + pi()) / (2 * pi()) AS ang) g
 CROSS JOIN LATERAL (
       SELECT ($4::text[])[($5::int[])[g.ring] + least(($6::int[])[g.ring] - 1,
                                                        floor(g.ang * ($6::int[])[g.ring])::int) + 1] AS ward,
              ($12::text[])[1 + floor(s.u_d3 * cardinality($12::text[]))::int] AS street) w
 CROSS JOIN LATERAL (SELECT width_bucket(s.u_cat, $7::float8[]) + 1 AS cat) k
  JOIN feedback_category c ON c.code = ($8::text[])[k.cat]
  JOIN feedback_deadline d ON d.urgency = c.urgency
 CROSS JOIN LATERAL (
       SELECT -240 * ln(1 - (($28::int - s.n + 0.5) / $28::int)::float8 * (1 - exp(-730 / 240.0))) AS age,
              d.answer_hours * 4.2 / 24 AS answer_days, d.receive_hours * 3 / 24.0 AS receive_days) a
 CROSS JOIN LATERAL (
       SELECT a.age < a.answer_days AS recent,
              CASE WHEN a.age < a.answer_days THEN s.u_status < 0.9 ELSE s.u_status < 0.105 END AS open) o
 CROSS JOIN LATERAL (SELECT o.open AND NOT o.recent AND s.u_re < 0.4 AS rerouted) rr
 CROSS JOIN LATERAL (
       SELECT CASE WHEN o.open THEN
                       CASE WHEN rr.rerouted THEN CASE WHEN s.u_sub < 0.4 THEN 'received' ELSE 'in_progress' END
                            WHEN o.recent AND a.age < a.receive_days AND s.u_sub < 0.7 THEN 'submitted'
                            WHEN NOT o.recent AND s.u_sub < 0.15 THEN 'submitted'
                            WHEN s.u_sub < 0.55 THEN 'received' ELSE 'in_progress' END
                   WHEN o.recent THEN CASE WHEN s.u_sub < 0.8 THEN 'answered' ELSE 'rejected' END
                   WHEN s.u_close < 0.03 THEN 'answered'
                   WHEN s.u_close < 0.10 THEN 'rejected'
                   ELSE 'closed' END AS status,
              CASE WHEN s.u_reason < 0.40 THEN 'accepted' WHEN s.u_reason < 0.70 THEN 'rated'
                   WHEN s.u_reason < 0.95 THEN 'expired' ELSE 'duplicate' END AS reason) st
 CROSS JOIN LATERAL (SELECT $9::timestamptz - a.age * interval '1 day' AS submitted_at) t0
 CROSS JOIN LATERAL (
       SELECT CASE WHEN rr.rerouted THEN $9::timestamptz - s.u_t1 * a.answer_days * 0.9 * interval '1 day'
                   ELSE t0.submitted_at END AS routed_at) t1
 CROSS JOIN LATERAL (
       SELECT least($9::timestamptz, t1.routed_at + s.u_t3 * a.receive_days * 1.2 * interval '1 day') AS received_at,
              t1.routed_at + d.receive_hours * interval '3 hours' AS receive_due_at,
              t1.routed_at + d.answer_hours * interval '4.2 hours' AS answer_due_at) t2
 CROSS JOIN LATERAL (
       SELECT CASE WHEN st.status = 'answered' AND o.recent
                   THEN least($9::timestamptz - interval '1 minute',
                              t2.received_at + s.u_t2 * a.answer_days * interval '1 day')
                   WHEN st.status = 'answered'
                   THEN greatest(t2.received_at, $9::timestamptz - s.u_t2 * interval '7 days')
                   WHEN st.status = 'closed' AND st.reason <> 'duplicate'
                   THEN least($9::timestamptz - interval '1 minute',
                              t2.received_at + s.u_t2 * a.answer_days * 1.3 * interval '1 day') END AS answered_at) t3
 CROSS JOIN LATERAL (
       SELECT CASE WHEN st.status = 'closed' AND st.reason = 'duplicate'
                   THEN least($9::timestamptz, t0.submitted_at + s.u_t1 * interval '2 days')
                   WHEN st.status = 'closed' THEN least($9::timestamptz, t3.answered_at + s.u_t1 * interval '7 days')
                   WHEN st.status = 'rejected'
                   THEN least($9::timestamptz, t1.routed_at + s.u_t1 * a.receive_days * interval '1 day')
                   END AS closed_at) t4
 ORDER BY s.n
"""

SEED_PHOTOS = """
    INSERT INTO report_photo (id, owner_id, report_id, position, public, content_type, width, height, byte_size,
                              sha256, data, thumbnail, created_at)
    SELECT gen_random_uuid(), r.reporter_id, r.id, 1, true, 'image/jpeg', 1280, 960, 180000, md5(r.id::text),
           '\\x'::bytea, '\\x'::bytea, r.submitted_at
      FROM report r WHERE r.id BETWEEN $1 AND $2 AND r.id % 100 < $3
"""

# Indexes of these tables not backing a constraint: dropped for the load, rebuilt from their definitions after it.
BULK_INDEXES = """
    SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
      FROM pg_index i
     WHERE i.indrelid = ANY (ARRAY['report'::regclass, 'report_photo'::regclass])
       AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
     ORDER BY 1
"""


def distribute(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainders), at least 1 each."""
    raw = [total * w / sum(weights) for w in weights]
    counts = [max(1, math.floor(r)) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - math.floor(raw[i]), reverse=True)
    i = 0
    while sum(counts) < total:
        counts[by_remainder[i % len(raw)]] += 1
        i += 1
    while sum(counts) > total:
        j = max(range(len(counts)), key=lambda k: counts[k])
        counts[j] -= 1
    return counts


@dataclass
class Layout:
    """Wards and communes as cells of rings around Hoàn Kiếm: ring r has sectors[r] cells from offsets[r] on."""

    bounds: list[float]  # outer radius of every ring but the last, in metres
    offsets: list[int]
    sectors: list[int]
    codes: list[str]
    wards: list[str]
    departments: list[str]


def cell_layout(units) -> Layout:
    wards = [u.code for u in units.units.values() if u.kind == "ward"]
    communes = [u.code for u in units.units.values() if u.kind == "commune"]
    if not wards or not communes:
        raise BenchError("the units directory has no wards or no communes")
    departments = [u.code for u in units.units.values() if u.kind not in ("ward", "commune")]
    bounds: list[float] = []
    sectors: list[int] = []
    codes: list[str] = []
    for rings, names in ((WARD_RINGS, wards), (COMMUNE_RINGS, communes)):
        counts = distribute(len(names), [w for _, w in rings])
        it = iter(names)
        for (outer, _), count in zip(rings, counts, strict=True):
            sectors.append(count)
            codes.extend(next(it) for _ in range(count))
            if outer is not None:
                bounds.append(outer)
    offsets = [sum(sectors[:i]) for i in range(len(sectors))]
    return Layout(bounds, offsets, sectors, codes, wards, departments)


@dataclass
class SeedInfo:
    rows_s: float = 0.0
    photos_s: float = 0.0
    index_s: float = 0.0
    vacuum_s: float = 0.0
    total_s: float = 0.0
    photos: int = 0
    table_mb: float = 0.0
    index_mb: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


async def seed(database_url: str, args: argparse.Namespace, layout: Layout, now: dt.datetime) -> SeedInfo:
    from app import db

    info = SeedInfo()
    started = time.monotonic()
    conn = await db.connect(database_url)
    try:
        # Only this session, only this throw-away database: no waiting for the WAL flush of every chunk.
        await conn.execute("SET synchronous_commit = off; SET maintenance_work_mem = '512MB'; SET jit = off")
        await conn.execute(f"SELECT setseed({(args.seed % 1000) / 1000.0})")  # the same data for the same --seed
        await conn.execute(SEED_RESIDENTS, args.residents)
        print(f"  {args.residents:,} residents ({time.monotonic() - started:.1f} s)", flush=True)
        indexes = await conn.fetch(BULK_INDEXES)
        for row in indexes:
            await conn.execute(f"DROP INDEX {row['name']}")

        cumulative, total = [], 0
        for _, share in CATEGORIES[:-1]:
            total += share
            cumulative.append(total / sum(s for _, s in CATEGORIES))
        (mix_core, sigma_core), (mix_inner, sigma_inner) = MIXTURE
        params = [
            layout.bounds, layout.codes, layout.offsets, layout.sectors, cumulative, [c for c, _ in CATEGORIES], now,
            [p for group in PROBLEMS for p in group], list(PLACES), list(STREETS), list(TAILS), list(EXTRAS),
            args.residents, CENTRE_LAT, CENTRE_LNG, M_PER_DEG_LAT, M_PER_DEG_LNG, *EXTENT_X, *EXTENT_Y,
            mix_core, mix_inner, sigma_core, sigma_inner, args.reports,
        ]
        rows_started = time.monotonic()
        for low in range(1, args.reports + 1, args.chunk):
            high = min(args.reports, low + args.chunk - 1)
            await conn.execute(SEED_REPORTS, low, high, *params, timeout=600)
            print(f"  reports {high:>10,}/{args.reports:,} ({time.monotonic() - started:6.1f} s)", flush=True)
        info.rows_s = time.monotonic() - rows_started

        photos_started = time.monotonic()
        first, last = await conn.fetchrow("SELECT min(id), max(id) FROM report")
        if args.photos > 0 and first is not None:
            for low in range(first, last + 1, args.chunk * 2):
                await conn.execute(SEED_PHOTOS, low, low + args.chunk * 2 - 1, round(args.photos * 100), timeout=600)
        info.photos = await conn.fetchval("SELECT count(*) FROM report_photo")
        info.photos_s = time.monotonic() - photos_started
        print(f"  {info.photos:,} photo rows ({time.monotonic() - started:.1f} s)", flush=True)

        index_started = time.monotonic()
        for row in indexes:
            one = time.monotonic()
            await conn.execute(row["definition"], timeout=1800)
            print(f"  index {row['name']} built in {time.monotonic() - one:.1f} s", flush=True)
        info.index_s = time.monotonic() - index_started

        vacuum_started = time.monotonic()
        # What autovacuum would have done by then: statistics, the visibility map, hint bits.
        await conn.execute("VACUUM (ANALYZE) report, report_photo, resident", timeout=1800)
        info.vacuum_s = time.monotonic() - vacuum_started
        info.total_s = time.monotonic() - started
        await describe(conn, info, now)
        return info
    finally:
        await conn.close()


async def describe(conn, info: SeedInfo, now: dt.datetime) -> None:
    info.table_mb = await conn.fetchval("SELECT pg_table_size('report') / 1048576.0")
    for row in await conn.fetch("SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) / 1048576.0 "
                                "AS mb FROM pg_index WHERE indrelid = 'report'::regclass ORDER BY 1"):
        info.index_mb[row["name"]] = row["mb"]
    row = await conn.fetchrow(
        """SELECT count(*) AS reports,
                  count(*) FILTER (WHERE visibility = 'private') AS private,
                  count(*) FILTER (WHERE status IN ('submitted', 'received', 'in_progress')) AS open,
                  count(*) FILTER (WHERE status IN ('submitted', 'received', 'in_progress') AND (answer_due_at < $1
                                   OR (status = 'submitted' AND receive_due_at < $1))) AS overdue,
                  count(*) FILTER (WHERE status = 'answered') AS answered,
                  count(*) FILTER (WHERE status = 'closed') AS closed,
                  count(*) FILTER (WHERE status = 'rejected') AS rejected,
                  count(*) FILTER (WHERE submitted_at > $1 - interval '30 days') AS last_30_days,
                  count(DISTINCT reporter_id) AS reporters,
                  count(DISTINCT ward_code) AS wards
             FROM report""", now)
    info.counts = dict(row)


# --------------------------------------------------------------------------------------------------
# Parameter sets, and the SQL each one runs


@dataclass
class Case:
    scenario: str
    variant: str
    path: str  # with its query string
    staff: bool  # needs the staff token
    call: tuple  # ("public" | "queue", kwargs) for feedback.views
    page: int = 1  # 2: the cursor of page 1 is added when the SQL is captured
    statements: list = field(default_factory=list)  # (method, sql, args) of every statement the service ran

    @property
    def sql(self) -> str:  # the list query: the last fetch
        return [s for m, s, _ in self.statements if m == "fetch"][-1]

    @property
    def args(self) -> tuple:
        return [a for m, _, a in self.statements if m == "fetch"][-1]


class Recorder:
    """Passes every call on to a real connection, and records it: what the endpoint's service function runs."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.calls: list[tuple[str, str, tuple]] = []

    async def _run(self, method: str, sql: str, args: tuple, kwargs: dict):
        self.calls.append((method, sql, args))
        return await getattr(self.conn, method)(sql, *args, **kwargs)

    async def fetch(self, sql: str, *args, **kwargs):
        return await self._run("fetch", sql, args, kwargs)

    async def fetchrow(self, sql: str, *args, **kwargs):
        return await self._run("fetchrow", sql, args, kwargs)

    async def fetchval(self, sql: str, *args, **kwargs):
        return await self._run("fetchval", sql, args, kwargs)

    async def execute(self, sql: str, *args, **kwargs):
        return await self._run("execute", sql, args, kwargs)


async def capture(conn, kind: str, kwargs: dict, ctx, principal, unit: str) -> list[tuple[str, str, tuple]]:
    """The statements feedback.views runs for these parameters (store.list_reports, and whatever else it runs
    first), with their arguments."""
    from feedback import views

    recorder = Recorder(conn)
    if kind == "public":
        await views.public_reports(recorder, ctx, **kwargs)
    else:
        await views.unit_queue(recorder, ctx, principal, unit, assignee=None, **kwargs)
    if not any(method == "fetch" for method, _, _ in recorder.calls):
        raise BenchError(f"views.{kind} ran no list query: {recorder.calls}")
    return recorder.calls


def sample_point(rng: random.Random) -> tuple[float, float]:
    """(lat, lng) drawn like the seeded reports: where people look is where the reports are."""
    u = rng.random()
    if u < MIXTURE[1][0]:
        sigma = MIXTURE[0][1] if u < MIXTURE[0][0] else MIXTURE[1][1]
        x, y = rng.gauss(0, sigma), rng.gauss(0, sigma)
    else:
        x, y = rng.uniform(*EXTENT_X), rng.uniform(*EXTENT_Y)
    x, y = min(max(x, EXTENT_X[0]), EXTENT_X[1]), min(max(y, EXTENT_Y[0]), EXTENT_Y[1])
    return CENTRE_LAT + y / M_PER_DEG_LAT, CENTRE_LNG + x / M_PER_DEG_LNG


BOX_SIZES = {"street": (300.0, 800.0), "district": (2_500.0, 5_000.0), "city": (15_000.0, 40_000.0)}


def random_box(rng: random.Random, size: str) -> str:
    """min_lng,min_lat,max_lng,max_lat of a phone-shaped map view (1.8 times as tall as wide)."""
    if size == "city":  # a whole-city view: around the centre
        lat, lng = CENTRE_LAT + rng.gauss(0, 0.02), CENTRE_LNG + rng.gauss(0, 0.02)
    else:
        lat, lng = sample_point(rng)
    width = rng.uniform(*BOX_SIZES[size])
    half_w, half_h = width / 2 / M_PER_DEG_LNG, width * 0.9 / M_PER_DEG_LAT
    return f"{lng - half_w:.6f},{lat - half_h:.6f},{lng + half_w:.6f},{lat + half_h:.6f}"


def weighted(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


MAP_VARIANTS = (("street box", 30), ("district box", 25), ("city box", 20), ("box + category", 15),
                ("box page 2", 10))
QUEUE_VARIANTS = (("open by deadline", 25), ("overdue", 15), ("newest", 15), ("category", 15),
                  ("answered/closed", 10), ("search", 10), ("page 2", 10))
SEARCH_VARIANTS = (("text", 60), ("text + district box", 20), ("text + city box", 10), ("text + category", 10))


def plan_cases(rng: random.Random, count: int, busy_ward: str, queue_categories: list[str]) -> list[Case]:
    """Parameter sets for the three scenarios (count each), as (path, service call); SQL captured later."""
    categories = [c for c, _ in CATEGORIES]
    shares = [s for _, s in CATEGORIES]
    cases: list[Case] = []

    def public(scenario: str, variant: str, **params) -> Case:
        query = {k: v for k, v in params.items() if v is not None and k != "page"}
        kwargs = {"bbox": None, "category": None, "status": None, "ward": None, "q": None, "cursor": None,
                  "limit": LIMIT} | {k: v for k, v in params.items() if k != "page"}
        return Case(scenario, variant, "/v1/feedback/public/reports?" + urlencode(query | {"limit": LIMIT}), False,
                    ("public", kwargs), params.get("page", 1))

    for _ in range(count):
        variant = weighted(rng, MAP_VARIANTS)
        size = {"street box": "street", "district box": "district", "city box": "city"}.get(
            variant, rng.choice(("street", "district", "district", "city")))
        category = rng.choices(categories, weights=shares)[0] if variant == "box + category" else None
        cases.append(public("map box", variant, bbox=random_box(rng, size), category=category,
                            page=2 if variant == "box page 2" else 1))

    for _ in range(count):
        variant = weighted(rng, QUEUE_VARIANTS)
        params: dict = {"status": None, "category": None, "overdue": None, "ward": None, "q": None,
                        "order": "deadline", "cursor": None, "limit": LIMIT}
        page = 1
        if variant == "overdue":
            params["overdue"] = True
        elif variant == "newest":
            params["order"] = "newest"
        elif variant == "category":
            params["category"] = rng.choice(queue_categories)
        elif variant == "answered/closed":
            params["status"] = rng.choice(("answered", "closed", "rejected", "answered,closed"))
            params["order"] = "newest"
        elif variant == "search":
            params["q"] = rng.choice(SEARCH_TERMS)
        elif variant == "page 2":
            params["order"] = rng.choice(("deadline", "newest"))
            page = 2
        query = {k: ("true" if v is True else v) for k, v in params.items() if v is not None}
        cases.append(Case("staff queue", variant, f"/v1/feedback/units/{busy_ward}/reports?" + urlencode(query),
                          True, ("queue", params), page))

    for _ in range(count):
        variant = weighted(rng, SEARCH_VARIANTS)
        bbox = (random_box(rng, "district") if variant == "text + district box"
                else random_box(rng, "city") if variant == "text + city box" else None)
        category = rng.choices(categories, weights=shares)[0] if variant == "text + category" else None
        cases.append(public("text search", variant, q=rng.choice(SEARCH_TERMS), bbox=bbox, category=category))
    return cases


async def prepare_sql(database_url: str, cases: list[Case], busy_ward: str) -> None:
    """Capture each case's SQL; for page 2, run page 1 and take the cursor the endpoint would give."""
    from app import db, web
    from app.identity.models import Principal
    from app.identity.units import load_units
    from feedback.context import Ctx

    ctx = Ctx(units=load_units())
    principal = Principal(sub=str(uuid.uuid4()), kind="resident", roles=(f"staff:{busy_ward}",), level=LEVEL)
    conn = await db.connect(database_url)
    try:
        for case in cases:
            kind, kwargs = case.call
            if case.page > 1 and kwargs.get("cursor") is None:
                first = Case(case.scenario, case.variant, case.path, case.staff, case.call,
                             statements=await capture(conn, kind, kwargs, ctx, principal, busy_ward))
                rows = await conn.fetch(first.sql, *first.args)
                if len(rows) > LIMIT:
                    last = rows[LIMIT - 1]
                    newest = kind == "public" or kwargs.get("order") == "newest"
                    cursor = web.encode_cursor(last["submitted_at"] if newest else last["answer_due_at"],
                                                   last["id"])
                    kwargs["cursor"] = cursor
                    case.path += "&" + urlencode({"cursor": cursor})
                else:  # a short list: page 1 is all there is; measure that
                    case.variant += " (one page)"
            case.statements = await capture(conn, kind, kwargs, ctx, principal, busy_ward)
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------------
# Measuring, in processes of their own (fork, like the load generators of common.py)


async def _http_pass(port: int, warmup: list[bytes], measured: list[bytes], concurrency: int) -> dict:
    """Send every request on `concurrency` keep-alive connections; latency of each, from write to last byte."""
    latencies: list[float] = [math.nan] * len(measured)
    statuses: dict[int, int] = {}
    clock = time.perf_counter

    async def exchange(reader, writer, request: bytes) -> tuple[int, bool]:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        at = lowered.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError("response without Content-Length")
        at += len(b"\r\ncontent-length:")
        length = int(lowered[at:lowered.index(b"\r\n", at)])
        if length:
            await reader.readexactly(length)
        return status, b"\r\nconnection: close" not in lowered

    async def run(requests: list[bytes], record: bool) -> None:
        position = 0

        async def worker() -> None:
            nonlocal position
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                while position < len(requests):
                    i = position
                    position += 1
                    started = clock()
                    status, keep = await exchange(reader, writer, requests[i])
                    if record:
                        latencies[i] = clock() - started
                    if status != 200:
                        statuses[status] = statuses.get(status, 0) + 1
                    if not keep:
                        writer.close()
                        reader, writer = await asyncio.open_connection(HOST, port)
            finally:
                writer.close()

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))

    await run(warmup, False)
    started = clock()
    await run(measured, True)
    return {"latencies": latencies, "seconds": clock() - started, "non_200": statuses}


async def _sql_pass(database_url: str, warmup: list[list[tuple]], measured: list[list[tuple]],
                    concurrency: int) -> dict:
    """The same statements through asyncpg: prepared and cached per connection, as in the server's pool."""
    from app import db

    conns = [await db.connect(database_url) for _ in range(concurrency)]
    latencies: list[float] = [math.nan] * len(measured)
    rows: list[int] = [0] * len(measured)
    clock = time.perf_counter
    try:
        async def run(statements, record: bool) -> None:
            position = 0

            async def worker(conn) -> None:
                nonlocal position
                while position < len(statements):
                    i = position
                    position += 1
                    started = clock()
                    for method, sql, args in statements[i]:  # what the endpoint runs, in order
                        result = await getattr(conn, method)(sql, *args)
                    if record:
                        latencies[i] = clock() - started
                        rows[i] = len(result)

            await asyncio.gather(*(worker(c) for c in conns[:max(1, min(concurrency, len(statements)))]))

        await run(warmup, False)
        started = clock()
        await run(measured, True)
        seconds = clock() - started
        generic = custom = 0
        for conn in conns:
            for row in await conn.fetch("SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                                        "WHERE statement LIKE '%FROM report r JOIN feedback_category%'"):
                generic += row["generic_plans"]
                custom += row["custom_plans"]
        return {"latencies": latencies, "rows": rows, "seconds": seconds, "generic": generic, "custom": custom}
    finally:
        for conn in conns:
            await conn.close()


@dataclass
class Pass:
    latencies_ms: list[float]
    seconds: float
    load: tuple[float, float]  # 1-minute load average before and after
    non_200: dict[int, int] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)
    generic: int = 0
    custom: int = 0

    def pct(self, q: float) -> float:
        return _percentile(sorted(self.latencies_ms), q)

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0


def http_pass(port: int, cases: list[Case], warm: list[Case], token: str | None, concurrency: int,
              timeout: float) -> Pass:
    def encode(c: Case) -> bytes:
        return request_bytes(c.path, token if c.staff else None)

    load = os.getloadavg()[0]
    out = run_in_child(_http_pass, (port, [encode(c) for c in warm], [encode(c) for c in cases], concurrency),
                       "bench-http", "the HTTP client", timeout, uvloop=True)
    return Pass([x * 1000 for x in out["latencies"]], out["seconds"], (load, os.getloadavg()[0]), out["non_200"])


def sql_pass(database_url: str, cases: list[Case], warm: list[Case], concurrency: int, timeout: float) -> Pass:
    load = os.getloadavg()[0]
    out = run_in_child(_sql_pass, (database_url, [c.statements for c in warm], [c.statements for c in cases],
                                   concurrency), "bench-sql", "the SQL client", timeout, uvloop=True)
    return Pass([x * 1000 for x in out["latencies"]], out["seconds"], (load, os.getloadavg()[0]), rows=out["rows"],
                generic=out["generic"], custom=out["custom"])


# --------------------------------------------------------------------------------------------------
# Token and checks


def fetch_token(env: dict[str, str], ward: str | None, personal_id: str = STAFF_PERSONAL_ID) -> tuple[str, float]:
    """A level-2 access token through the real login flow, for a staff member of `ward` (None: a resident with no
    role); (token, expiry)."""
    command = [*ihanoi_command(), "token", "--personal-id", personal_id, "--level", str(LEVEL),
               *(["--role", f"staff:{ward}"] if ward else [])]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TOKEN_COMMAND_TIMEOUT, check=False, preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`ihanoi token` did not finish within {TOKEN_COMMAND_TIMEOUT:.0f}s") from None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise BenchError(f"`ihanoi token` failed with exit code {done.returncode}; its output ends with:\n{output}")
    token = lines[-1]
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError) as exc:
        raise BenchError(f"`ihanoi token` printed something that is not a JWT ({exc})") from None
    return token, float(claims.get("exp", 0))


WRITERS = ("001090011111", "001090022222", "001090033333", "001090044444")  # residents sending the written reports


def write_requests(args: argparse.Namespace, layout: Layout, tokens: list[str]) -> list[bytes]:
    """--writes POSTs of new reports: a point drawn like the seeded ones, a ward, a category and its problem text,
    each with its own Idempotency-Key, from the writers in turn."""
    rng = random.Random(args.seed + 1)
    codes = [c for c, _ in CATEGORIES]
    requests = []
    for n in range(args.writes):
        lat, lng = sample_point(rng)
        category = rng.randrange(len(codes))
        body = json.dumps({
            "category": codes[category], "ward": rng.choice(layout.wards), "latitude": round(lat, 6),
            "longitude": round(lng, 6), "description": f"{rng.choice(PROBLEMS[category])} (benchmark {n})",
            "address": "Số 1 phố Tràng Tiền", "duplicates_checked": True,
        }, ensure_ascii=False).encode()
        requests.append(
            f"POST /v1/feedback/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens[n % len(tokens)]}\r\n"
            f"Idempotency-Key: bench-{secrets.token_hex(8)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return requests


async def _fetch_ids(database_url: str, statements: list[tuple[str, tuple]]) -> list[list[int]]:
    from app import db

    conn = await db.connect(database_url)
    try:
        return [[r["id"] for r in await conn.fetch(sql, *args)][:LIMIT] for sql, args in statements]
    finally:
        await conn.close()


def check_cases(port: int, database_url: str, cases: list[Case], token: str, busy_ward: str) -> int:
    """For a few cases of each variant: the endpoint answers 200 and the ids of the SQL, in the same order."""
    picked: dict[tuple[str, str], list[Case]] = defaultdict(list)
    for case in cases:
        if len(picked[(case.scenario, case.variant)]) < CHECKS_PER_VARIANT:
            picked[(case.scenario, case.variant)].append(case)
    chosen = [c for group in picked.values() for c in group]
    answers = []
    for case in chosen:
        status, body = http_request(port, case.path, token if case.staff else None, timeout=30.0)
        if status != 200:
            raise BenchError(f"check failed: GET {case.path} answered {status}: {body[:300]!r}")
        answers.append([item["id"] for item in json.loads(body)["items"]])
    # The SQL captured again now, with about the `now` of the requests just made (overdue moves with the clock);
    # page 2 keeps the cursor it got.
    fresh = [Case(c.scenario, c.variant, c.path, c.staff, c.call, c.page) for c in chosen]
    asyncio.run(prepare_sql(database_url, fresh, busy_ward))
    expected = asyncio.run(_fetch_ids(database_url, [(c.sql, c.args) for c in fresh]))
    for case, got, want in zip(chosen, answers, expected, strict=True):
        if got != want:
            raise BenchError(f"check failed: GET {case.path} answered ids {got[:5]}... but its SQL gives "
                             f"{want[:5]}... ({len(got)} vs {len(want)} items)")
    return len(chosen)


# --------------------------------------------------------------------------------------------------
# Plans


async def _explain(database_url: str, cases: list[Case]) -> list[list[str]]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement of each case (a probe the service runs first, the list)."""
    from app import db

    conn = await db.connect(database_url)
    try:
        plans = []
        for case in cases:
            plans.append([])
            for _, sql, args in case.statements:
                rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
                plans[-1].append("\n".join(r[0] for r in rows))
        return plans
    finally:
        await conn.close()


def one_line(sql: str, args: tuple) -> str:
    text = " ".join(sql.split())
    shown = ", ".join(f"${i}={a.isoformat() if isinstance(a, dt.datetime) else a!r}" for i, a in enumerate(args, 1))
    return f"{text}\n    -- {shown}"


# --------------------------------------------------------------------------------------------------
# Report

SCENARIOS = ("map box", "staff queue", "text search")


def verdict(p95: float) -> str:
    return "ok" if p95 <= TARGET_P95_MS else f"OVER {TARGET_P95_MS:.0f} ms"


def print_results(results: dict[tuple[str, str], Pass], cases: dict[str, list[Case]], concurrency: int) -> None:
    print(f"\n  {'scenario':<13}{'mode':<12}{'n':>5} | {'HTTP p50':>9}{'p95':>8}{'p99':>8}{'req/s':>7} | "
          f"{'SQL p50':>8}{'p95':>8}{'p99':>8}{'q/s':>7} | {'HTTP/SQL p50':>12}{'p95':>7} | {'load':>9}  target")
    for scenario in SCENARIOS:
        for mode in ("1 at a time", f"{concurrency} in flight"):
            h, s = results[(scenario, "http " + mode)], results[(scenario, "sql " + mode)]
            load = f"{min(h.load + s.load):.1f}-{max(h.load + s.load):.1f}"
            print(f"  {scenario:<13}{mode:<12}{len(h.latencies_ms):>5} | {h.pct(.5):>9.1f}{h.pct(.95):>8.1f}"
                  f"{h.pct(.99):>8.1f}{h.rps:>7.0f} | {s.pct(.5):>8.1f}{s.pct(.95):>8.1f}{s.pct(.99):>8.1f}"
                  f"{s.rps:>7.0f} | {ratio(h.pct(.5), s.pct(.5)):>12}{ratio(h.pct(.95), s.pct(.95)):>7} | "
                  f"{load:>9}  {verdict(h.pct(.95)) if mode == '1 at a time' else ''}")
    print("  (ms; client-side, from request write to last byte; SQL = the same statement and arguments through "
          "asyncpg; load = 1-minute load average before/after the passes, this benchmark's own processes included)")

    print(f"\n  by kind of request, one at a time ({'ms':}):")
    print(f"  {'scenario':<13}{'kind':<28}{'n':>5} | {'HTTP p50':>9}{'p95':>8}{'max':>8} | {'SQL p50':>8}{'p95':>8}"
          f"{'max':>8} | {'rows':>5}")
    for scenario in SCENARIOS:
        h, s = results[(scenario, "http 1 at a time")], results[(scenario, "sql 1 at a time")]
        by_variant: dict[str, list[int]] = defaultdict(list)
        for i, case in enumerate(cases[scenario]):
            by_variant[case.variant].append(i)
        for variant, idx in sorted(by_variant.items(), key=lambda kv: -len(kv[1])):
            hl = sorted(h.latencies_ms[i] for i in idx)
            sl = sorted(s.latencies_ms[i] for i in idx)
            mean_rows = statistics.mean(s.rows[i] for i in idx) if s.rows else 0
            print(f"  {scenario:<13}{variant:<28}{len(idx):>5} | {_percentile(hl, .5):>9.1f}"
                  f"{_percentile(hl, .95):>8.1f}{hl[-1]:>8.1f} | {_percentile(sl, .5):>8.1f}"
                  f"{_percentile(sl, .95):>8.1f}{sl[-1]:>8.1f} | {mean_rows:>5.0f}")
    print("  (rows: rows the statement returned, the page size + 1 at most)")
    plans = []
    for scenario in SCENARIOS:
        s = results[(scenario, "sql 1 at a time")]
        total = s.generic + s.custom
        plans.append(f"{scenario} {s.generic}/{total} generic" if total else f"{scenario} n/a")
    print(f"\n  plans of the cached statements (direct connection, warm-up included): {', '.join(plans)}")


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=1_000_000, help="reports to seed")
    parser.add_argument("--residents", type=int, default=50_000, help="residents the reporters are drawn from")
    parser.add_argument("--photos", type=float, default=0.6, help="share of reports with a (tiny) photo row")
    parser.add_argument("--requests", type=int, default=300, help="measured requests per scenario and mode")
    parser.add_argument("--warmup", type=int, default=30, help="requests before each measured pass (not counted)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight in the concurrent passes")
    parser.add_argument("--seed", type=int, default=42, help="seed of the data and of the parameter sets")
    parser.add_argument("--chunk", type=int, default=SEED_CHUNK, help="reports per seeding statement")
    parser.add_argument("--writes", type=int, default=2000,
                        help="reports sent through POST /v1/feedback/reports after the reads (0: none)")
    parser.add_argument("--plans", action="store_true",
                        help="print EXPLAIN (ANALYZE, BUFFERS) of one representative query per scenario")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the database (to look at it)")
    parser.add_argument("--reuse-database", metavar="NAME",
                        help="measure an already seeded database (from --keep-database) instead of making one")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds the server may take to start")
    args = parser.parse_args(argv)
    if args.reports < 1000 or args.residents < 1 or args.requests < 10 or args.warmup < 0 or args.concurrency < 1:
        parser.error("--reports >= 1000, --residents >= 1, --requests >= 10, --warmup >= 0, --concurrency >= 1")
    if not 0 <= args.photos <= 1:
        parser.error("--photos is a share between 0 and 1")
    return args


def migrate(env: dict[str, str]) -> None:
    try:
        done = subprocess.run([*ihanoi_command(), "migrate"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300, check=False, preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        raise BenchError("`ihanoi migrate` did not finish in time") from None
    if done.returncode != 0:
        raise BenchError(f"`ihanoi migrate` failed ({done.returncode}):\n{done.stdout}{done.stderr}")


async def _busiest(database_url: str, wards: list[str]) -> tuple[str, int, int, list[str]]:
    """The ward or commune with the most open reports: (code, open, all, its categories by count)."""
    from app import db

    conn = await db.connect(database_url)
    try:
        row = await conn.fetchrow(
            """SELECT unit_code, count(*) AS open FROM report
                WHERE status IN ('submitted', 'received', 'in_progress') AND unit_code = ANY($1::text[])
                GROUP BY unit_code ORDER BY count(*) DESC LIMIT 1""", wards)
        if row is None:
            raise BenchError("no open report in any ward")
        total = await conn.fetchval("SELECT count(*) FROM report WHERE unit_code = $1", row["unit_code"])
        categories = [r[0] for r in await conn.fetch(
            "SELECT category_code FROM report WHERE unit_code = $1 GROUP BY 1 ORDER BY count(*) DESC",
            row["unit_code"])]
        return row["unit_code"], row["open"], total, categories
    finally:
        await conn.close()


async def _prepare_reused(database_url: str) -> SeedInfo:
    from app import db

    conn = await db.connect(database_url)
    try:
        # Its signing keys are encrypted under the master key of the run that made it, and the staff member it
        # signed in is known by a personal-ID hash keyed by it: this run has a new key, so both go.
        await conn.execute("DELETE FROM signing_key")
        await conn.execute("UPDATE resident SET idp_subject = NULL WHERE idp_subject IS NOT NULL")
        info = SeedInfo()
        await describe(conn, info, dt.datetime.now(dt.UTC))
        return info
    finally:
        await conn.close()


def run(args: argparse.Namespace) -> int:
    from app.identity.units import load_units

    layout = cell_layout(load_units())
    cleanup: list = []  # run in reverse order, whatever happens
    notes: list[str] = []
    results: dict[tuple[str, str], Pass] = {}
    by_scenario: dict[str, list[Case]] = {}
    plans: list[tuple[Case, str]] = []
    per_core: dict[str, str] = {}
    writes: Pass | None = None
    loads = [os.getloadavg()]
    try:
        admin_database_url, redis_url, origin = resolve_services(cleanup)
        workdir = Path(tempfile.mkdtemp(prefix="ihanoi-bench-feedback-"))
        cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))

        redis_prefix = f"bench:{secrets.token_hex(6)}:"

        def clean_redis() -> None:
            notes.append(f"deleted {delete_redis_prefix(redis_url, redis_prefix)} Redis key(s) under {redis_prefix}")

        cleanup.append(clean_redis)
        if args.reuse_database:
            database_name = args.reuse_database
        else:
            database_name = f"ihanoi_bench_{secrets.token_hex(5)}"
            create_database(admin_database_url, database_name)
            if args.keep_database:
                cleanup.append(lambda: notes.append(f"kept database {database_name} (--keep-database)"))
            else:
                def clean_database() -> None:
                    drop_database(admin_database_url, database_name, timeout=120)
                    notes.append(f"dropped database {database_name}")

                cleanup.append(clean_database)
        database_url = with_database(admin_database_url, database_name)

        port = free_port()
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "IHANOI_ENV": "test",
               # JSON log lines to a file would otherwise be part of what is measured.
               "IHANOI_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
               "IHANOI_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
               "IHANOI_RATE_LOGIN": "100000/60", "IHANOI_REDIS_PREFIX": redis_prefix,
               # The token's `iss` is this URL: the server and `ihanoi token` must agree on it.
               "IHANOI_PUBLIC_URL": f"http://{HOST}:{port}",
               # `feedback` (like the other modules) from this checkout, whatever the venv has installed
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        for name in ("PROMETHEUS_MULTIPROC_DIR", "IHANOI_OIDC_ISSUER", "IHANOI_OIDC_REDIRECT_URI",
                     "IHANOI_REDIS_CLUSTER", "IHANOI_EXTRA_MODULES", "IHANOI_MODULES_DISABLED", "IHANOI_UNITS_FILE"):
            env.pop(name, None)  # one process, the local stand-in, plain Redis, the shipped modules and units

        now = dt.datetime.now(dt.UTC)
        if args.reuse_database:
            print(f"reusing database {database_name} ...", flush=True)
            info = asyncio.run(_prepare_reused(database_url))
        else:
            print(f"database {safe_url(database_url)}: migrating ...", flush=True)
            migrate(env)
            print(f"seeding {args.reports:,} reports (chunks of {args.chunk:,}) ...", flush=True)
            info = asyncio.run(seed(database_url, args, layout, now))
            print(f"seeded in {info.total_s:.1f} s", flush=True)

        busy_ward, busy_open, busy_all, busy_categories = asyncio.run(_busiest(database_url, layout.wards))
        command = [*ihanoi_command(), "serve", "--host", HOST, "--port", str(port), "--workers", "1"]
        print(f"starting ihanoi serve on port {port} ...", flush=True)
        server = Server("ihanoi", command, env, workdir / "ihanoi.log")
        cleanup.append(server.stop)
        wait_until_ok(server, port, "/readyz", args.startup_timeout)

        token_state: dict = {"value": None, "expires": 0.0, "fetched": 0}

        def token() -> str:
            if token_state["value"] is None or token_state["expires"] - time.time() < TOKEN_MARGIN + 300:
                print(f"signing in a staff member of {busy_ward} (`ihanoi token`, level {LEVEL}) ...", flush=True)
                token_state["value"], token_state["expires"] = fetch_token(env, busy_ward)
                token_state["fetched"] += 1
            return token_state["value"]

        rng = random.Random(args.seed)
        per = args.warmup + args.requests
        all_cases = plan_cases(rng, per, busy_ward, busy_categories[:8])
        print(f"capturing the SQL of {len(all_cases)} parameter sets from feedback.views ...", flush=True)
        asyncio.run(prepare_sql(database_url, all_cases, busy_ward))
        checked = check_cases(port, database_url, all_cases, token(), busy_ward)
        print(f"checks passed: {checked} requests answered 200 with the ids of their SQL, in order", flush=True)

        pass_timeout = 1800.0
        for scenario in SCENARIOS:
            cases = [c for c in all_cases if c.scenario == scenario]
            by_scenario[scenario] = cases[args.warmup:]
        # Every scenario one at a time first, then in flight: the load average the one-at-a-time passes report is
        # then not this benchmark's own concurrent passes still decaying.
        for mode, concurrency in (("1 at a time", 1), (f"{args.concurrency} in flight", args.concurrency)):
            for scenario in SCENARIOS:
                cases = [c for c in all_cases if c.scenario == scenario]
                warm, measured = cases[:args.warmup], cases[args.warmup:]
                print(f"{scenario}: {len(measured)} requests {mode}, HTTP then SQL ...", flush=True)
                value = token() if scenario == "staff queue" else None
                meter = CpuMeter({"ihanoi serve": server.pid}, database=database_name).start()
                results[(scenario, "http " + mode)] = http_pass(port, measured, warm, value, concurrency,
                                                                pass_timeout)
                meter.stop()
                if concurrency > 1:  # the server kept busy: its CPU per request (warm-up included on both sides)
                    per_core[scenario] = meter.describe(len(warm) + len(measured), "reads")
                if not server.alive():
                    raise BenchError(f"the server exited during the run:\n{server.log_tail()}")
                results[(scenario, "sql " + mode)] = sql_pass(database_url, measured, warm, concurrency,
                                                              pass_timeout)
                loads.append(os.getloadavg())

        if args.writes:
            print(f"writes: {args.writes} reports through POST /v1/feedback/reports, {args.concurrency} in flight "
                  "...", flush=True)
            bodies = write_requests(args, layout, [fetch_token(env, None, pid)[0] for pid in WRITERS])
            meter = CpuMeter({"ihanoi serve": server.pid}, database=database_name).start()
            load = os.getloadavg()[0]
            out = run_in_child(_http_pass, (port, [], bodies, args.concurrency), "bench-http", "the HTTP client",
                               pass_timeout, uvloop=True)
            meter.stop()
            writes = Pass([x * 1000 for x in out["latencies"]], out["seconds"], (load, os.getloadavg()[0]),
                          out["non_200"])
            per_core["writes"] = meter.describe(writes.non_200.get(201, 0), "reports")

        if args.plans:
            picks = []
            for scenario in SCENARIOS:
                s = results[(scenario, "sql 1 at a time")]
                order = sorted(range(len(s.latencies_ms)), key=lambda i: s.latencies_ms[i])
                picks.append(by_scenario[scenario][order[min(len(order) - 1, math.ceil(0.95 * len(order)) - 1)]])
            plans = list(zip(picks, asyncio.run(_explain(database_url, picks)), strict=True))
        pg_version = asyncio.run(_pg_version(database_url))
    finally:
        run_cleanup(cleanup)  # a second Ctrl-C must not leave the server running: it finishes first

    print("\niHaNoi feedback list benchmark")
    if info.total_s:
        print(f"  seeding         {info.total_s:.1f} s: rows {info.rows_s:.1f} s, photo rows {info.photos_s:.1f} s, "
              f"indexes {info.index_s:.1f} s, VACUUM ANALYZE {info.vacuum_s:.1f} s (set-based SQL, chunks of "
              f"{args.chunk:,}; not measured)")
    c = info.counts
    print(f"  data            {c['reports']:,} reports ({c['private']:,} private), {c['open']:,} open "
          f"({c['overdue']:,} overdue), {c['answered']:,} answered, {c['closed']:,} closed, {c['rejected']:,} "
          f"rejected; {c['last_30_days']:,} in the last 30 days; {c['reporters']:,} reporters, {c['wards']} wards "
          f"and communes")
    print(f"  sizes           table {info.table_mb:,.0f} MB; indexes "
          + ", ".join(f"{name} {mb:,.0f}" for name, mb in info.index_mb.items()) + " MB")
    print(f"  staff queue     {busy_ward} (the busiest ward: {busy_open:,} open of {busy_all:,}), a level-{LEVEL} "
          f"staff token from `ihanoi token` ({token_state['fetched']} fetched)")
    print(f"  requests        {args.requests} measured per scenario and mode after {args.warmup} warm-up ones, "
          f"page size {LIMIT}; the same parameter sets over HTTP and in SQL; seed {args.seed}")
    print(f"  modes           one at a time (latency), and {args.concurrency} in flight on {args.concurrency} "
          "connections (HTTP keep-alive / asyncpg)")
    print("  server          `ihanoi serve --workers 1`, IHANOI_ENV=test, IHANOI_LOG_LEVEL=WARNING, asyncpg pool")
    print(f"  services        {origin}: {safe_url(admin_database_url)} (throw-away database {database_name}), "
          f"{safe_url(redis_url)} (prefix {redis_prefix})")
    print(f"  versions        Python {platform.python_version()}, PostgreSQL {pg_version}, "
          f"Litestar {version('litestar')}, uvicorn {version('uvicorn')} ({uvicorn_flavour()}), "
          f"asyncpg {version('asyncpg')}")
    print(f"  machine         {os.cpu_count()} CPUs shared by server, PostgreSQL and clients; load average "
          f"(1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in loads[0])}, at the end "
          f"{'/'.join(f'{x:.2f}' for x in loads[-1])}")
    for note in notes:
        print(f"  cleanup         {note}")
    print_results(results, by_scenario, args.concurrency)
    if writes is not None:
        created = writes.non_200.get(201, 0)
        print(f"\n  writes          {created:,} reports created of {len(writes.latencies_ms):,} sent "
              f"({args.concurrency} in flight, duplicates_checked=true: the resident has seen the nearby offer): "
              f"{writes.rps:,.0f}/s, p50 {writes.pct(.5):.1f} ms, p95 {writes.pct(.95):.1f} ms; answers "
              f"{dict(sorted(writes.non_200.items()))}")
    print("\n  per core (CPU of `ihanoi serve` and of the database's PostgreSQL backends, from /proc):")
    for what, text in per_core.items():
        print(f"  {what:<13} {text}")

    for case, case_plans in plans:
        print(f"\n--- plan: {case.scenario}, {case.variant} (the SQL p95 request): GET {case.path}")
        for (_, sql, args), plan in zip(case.statements, case_plans, strict=True):
            print(f"    {one_line(sql, args)}")
            print("\n".join("    " + line for line in plan.splitlines()))

    failed = {key: p.non_200 for key, p in results.items() if p.non_200}
    if writes is not None and set(writes.non_200) != {201}:
        failed[("writes", "http")] = writes.non_200
    if failed:
        print(f"\nFAILED: requests did not get a 200: {failed}", file=sys.stderr)
        return 1
    over = [s for s in SCENARIOS if results[(s, "http 1 at a time")].pct(.95) > TARGET_P95_MS]
    print(f"\n  target p95 <= {TARGET_P95_MS:.0f} ms one at a time: "
          + ("met by every scenario" if not over else "NOT met by " + ", ".join(over)))
    return 0


async def _pg_version(database_url: str) -> str:
    from app import db

    conn = await db.connect(database_url)
    try:
        return (await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    return run_main(run, parse_args(argv), "processes stopped, database dropped")


if __name__ == "__main__":
    sys.exit(main())
