-- Transit: fares as data (GTFS-Fares v2 vocabulary), rider-category applications, tickets and passes,
-- device keys per session, issuer keys, validators' taps and what reconciliation flags.

CREATE TABLE transit_operator (
    code smallint PRIMARY KEY CHECK (code > 0),      -- what the QR carries (u16)
    slug text NOT NULL UNIQUE,                       -- the payments operator charged for its fares
    name text NOT NULL
);

CREATE TABLE transit_route (
    id integer PRIMARY KEY CHECK (id > 0),           -- what the QR carries (u32); 0 means every route
    operator_slug text NOT NULL REFERENCES transit_operator (slug),
    short_name text NOT NULL,
    name text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('bus', 'metro')),
    length_km numeric(5, 1) NOT NULL CHECK (length_km > 0),
    tap_off boolean NOT NULL DEFAULT false,          -- riders also tap when getting off
    UNIQUE (operator_slug, short_name)
);

-- GTFS fare_media: type 4 = mobile app, 1 = paper ticket
CREATE TABLE transit_fare_media (
    id text PRIMARY KEY,
    name text NOT NULL,
    media_type smallint NOT NULL
);

-- GTFS rider_categories; eligibility says how the backend decides, never a form the rider fills in
CREATE TABLE transit_rider_category (
    id text PRIMARY KEY,
    code smallint NOT NULL UNIQUE,                   -- what the QR carries (u8)
    name_vi text NOT NULL,
    name_en text NOT NULL,
    is_default boolean NOT NULL DEFAULT false,
    eligibility text NOT NULL CHECK (eligibility IN ('none', 'age', 'proof')),
    min_age smallint,
    max_age smallint,                                -- exclusive: under max_age
    eligibility_url text
);

-- GTFS fare_products, one row per price period: a price change adds a row, history keeps its price
CREATE TABLE transit_fare_product (
    id serial PRIMARY KEY,
    code smallint NOT NULL CHECK (code > 0),         -- what the QR carries (u16), stable across prices
    product_id text NOT NULL,
    operator_slug text NOT NULL REFERENCES transit_operator (slug),
    name_vi text NOT NULL,
    name_en text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('single', 'day', 'monthly')),
    network boolean NOT NULL DEFAULT false,          -- a pass for every route of the operator
    min_km numeric(5, 1),                            -- single rides by distance band [min_km, max_km)
    max_km numeric(5, 1),
    rider_category_id text NOT NULL REFERENCES transit_rider_category (id),
    amount_vnd integer NOT NULL CHECK (amount_vnd >= 0),
    fare_media_id text NOT NULL REFERENCES transit_fare_media (id),
    effective_from date NOT NULL,
    effective_to date,                               -- exclusive; NULL = until further notice
    UNIQUE (product_id, rider_category_id, effective_from)
);
CREATE INDEX transit_fare_product_code ON transit_fare_product (code);

CREATE TABLE transit_application (
    id bigserial PRIMARY KEY,
    resident_id uuid NOT NULL,
    rider_category_id text NOT NULL REFERENCES transit_rider_category (id),
    operator_slug text NOT NULL REFERENCES transit_operator (slug),
    photo bytea NOT NULL,
    photo_type text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'refused')),
    note text,
    valid_until date,
    decided_by uuid,
    decided_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transit_application_queue ON transit_application (operator_slug, status, id);
CREATE INDEX transit_application_resident ON transit_application (resident_id, status);

-- a phone's key, registered for one session: logout ends it
CREATE TABLE transit_device (
    id bigserial PRIMARY KEY,
    resident_id uuid NOT NULL,
    session_id uuid NOT NULL,
    public_key bytea NOT NULL UNIQUE CHECK (length(public_key) = 33),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX transit_device_session ON transit_device (session_id) WHERE revoked_at IS NULL;
CREATE INDEX transit_device_revoked ON transit_device (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE transit_ticket (
    id bigserial PRIMARY KEY,
    resident_id uuid,                                -- NULL for a paper ticket sold at a kiosk
    operator_slug text NOT NULL REFERENCES transit_operator (slug),
    fare_product_id integer NOT NULL REFERENCES transit_fare_product (id),
    kind text NOT NULL,
    route_id integer REFERENCES transit_route (id),  -- NULL = every route
    rider_category_id text NOT NULL REFERENCES transit_rider_category (id),
    amount_vnd integer NOT NULL,
    charge_id bigint,                                -- the payments transaction
    valid_from timestamptz NOT NULL,
    valid_until timestamptz NOT NULL,
    paper boolean NOT NULL DEFAULT false,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'used', 'refunded', 'revoked')),
    status_at timestamptz,
    reminded boolean NOT NULL DEFAULT false,
    idempotency_key text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transit_ticket_resident ON transit_ticket (resident_id, kind, valid_until);
CREATE INDEX transit_ticket_revoked ON transit_ticket (status_at) WHERE status = 'revoked';
CREATE INDEX transit_ticket_renewal ON transit_ticket (valid_until) WHERE kind = 'monthly' AND NOT reminded;

-- issuer keys: the private half sealed with the master key; old keys verify for the overlap after retiring
CREATE TABLE transit_issuer_key (
    id integer PRIMARY KEY CHECK (id BETWEEN 1 AND 65535),
    public_key bytea NOT NULL,
    private_sealed bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz,                          -- no longer signs
    verify_until timestamptz                         -- no longer verifies
);

CREATE TABLE transit_tap (
    tap_id uuid PRIMARY KEY,                         -- unique forever: a batch sent twice counts once
    validator text NOT NULL,
    operator_slug text NOT NULL,
    ticket_id bigint NOT NULL,
    route_id integer NOT NULL,
    vehicle text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('on', 'off')),
    at timestamptz NOT NULL,
    accepted boolean NOT NULL,
    reason text,
    fingerprint bytea NOT NULL,                      -- the code's bytes, hashed: a screenshot has the same
    uploaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transit_tap_ticket ON transit_tap (ticket_id, at);
CREATE INDEX transit_tap_fingerprint ON transit_tap (fingerprint);
CREATE INDEX transit_tap_operator ON transit_tap (operator_slug, at);

CREATE TABLE transit_flag (
    id bigserial PRIMARY KEY,
    operator_slug text NOT NULL,
    ticket_id bigint NOT NULL,
    reason text NOT NULL CHECK (reason IN ('impossible-journey', 'replayed-code')),
    first_tap uuid NOT NULL REFERENCES transit_tap (tap_id),
    second_tap uuid NOT NULL REFERENCES transit_tap (tap_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (first_tap, second_tap, reason)
);

-- Hanoi's defaults (fares from 1 Nov 2024)
INSERT INTO transit_operator (code, slug, name) VALUES
    (1, 'hanoibus', 'Tổng công ty Vận tải Hà Nội (Transerco)'),
    (2, 'hanoi-metro', 'Công ty TNHH MTV Đường sắt Hà Nội (Hanoi Metro)');

INSERT INTO transit_route (id, operator_slug, short_name, name, mode, length_km, tap_off) VALUES
    (101, 'hanoibus', '01', 'Gia Lâm - Yên Nghĩa', 'bus', 28.5, false),
    (102, 'hanoibus', '02', 'Bác Cổ - Yên Nghĩa', 'bus', 13.4, false),
    (103, 'hanoibus', '03A', 'Giáp Bát - Gia Lâm', 'bus', 14.8, false),
    (186, 'hanoibus', '86', 'Ga Hà Nội - Sân bay Nội Bài', 'bus', 34.0, false),
    (201, 'hanoi-metro', '2A', 'Cát Linh - Yên Nghĩa', 'metro', 13.0, true),
    (203, 'hanoi-metro', '3', 'Nhổn - Ga Hà Nội', 'metro', 12.5, true);

INSERT INTO transit_fare_media (id, name, media_type) VALUES
    ('ihanoi-app', 'Ứng dụng iHaNoi (thẻ ảo)', 4),
    ('paper', 'Vé giấy có mã QR', 1);

INSERT INTO transit_rider_category (id, code, name_vi, name_en, is_default, eligibility, min_age, max_age, eligibility_url) VALUES
    ('regular', 1, 'Phổ thông', 'Regular', true, 'none', NULL, NULL, NULL),
    ('senior', 2, 'Người từ 60 tuổi', 'Aged 60 and over', false, 'age', 60, NULL, 'https://vneid.gov.vn'),
    ('child', 3, 'Trẻ em dưới 6 tuổi', 'Children under 6', false, 'age', NULL, 6, 'https://vneid.gov.vn'),
    ('student', 4, 'Học sinh, sinh viên', 'Students', false, 'proof', NULL, NULL, NULL),
    ('industrial-worker', 5, 'Công nhân khu công nghiệp', 'Industrial-zone workers', false, 'proof', NULL, NULL, NULL),
    ('disability', 6, 'Người khuyết tật', 'People with disabilities', false, 'proof', NULL, NULL, NULL),
    ('meritorious', 7, 'Người có công với cách mạng', 'Meritorious persons', false, 'proof', NULL, NULL, NULL),
    ('poor-household', 8, 'Hộ nghèo', 'Poor households', false, 'proof', NULL, NULL, NULL);

-- bus singles by distance band, then passes; priority groups pay half for passes; free groups ride free
INSERT INTO transit_fare_product (code, product_id, operator_slug, name_vi, name_en, kind, network, min_km, max_km,
                                  rider_category_id, amount_vnd, fare_media_id, effective_from)
SELECT p.code, p.product_id, p.operator_slug, p.name_vi, p.name_en, p.kind, p.network, p.min_km, p.max_km,
       c.id,
       CASE WHEN c.id IN ('senior', 'child', 'disability', 'meritorious', 'poor-household') THEN 0
            WHEN c.id IN ('student', 'industrial-worker') AND p.kind <> 'single' THEN p.priority
            ELSE p.amount END,
       'ihanoi-app', DATE '2024-11-01'
FROM (VALUES
    (1, 'bus-single-0-15', 'hanoibus', 'Vé lượt dưới 15 km', 'Single ride, under 15 km', 'single', false, 0, 15, 8000, 8000),
    (2, 'bus-single-15-25', 'hanoibus', 'Vé lượt 15-25 km', 'Single ride, 15-25 km', 'single', false, 15, 25, 10000, 10000),
    (3, 'bus-single-25-30', 'hanoibus', 'Vé lượt 25-30 km', 'Single ride, 25-30 km', 'single', false, 25, 30, 12000, 12000),
    (4, 'bus-single-30-40', 'hanoibus', 'Vé lượt 30-40 km', 'Single ride, 30-40 km', 'single', false, 30, 40, 15000, 15000),
    (5, 'bus-single-40', 'hanoibus', 'Vé lượt từ 40 km', 'Single ride, 40 km and over', 'single', false, 40, NULL, 20000, 20000),
    (10, 'bus-monthly-route', 'hanoibus', 'Vé tháng một tuyến', 'Monthly pass, one route', 'monthly', false, NULL, NULL, 140000, 70000),
    (11, 'bus-monthly-network', 'hanoibus', 'Vé tháng liên tuyến', 'Monthly pass, all routes', 'monthly', true, NULL, NULL, 280000, 140000),
    (20, 'metro-single', 'hanoi-metro', 'Vé lượt metro', 'Metro single ride', 'single', false, NULL, NULL, 15000, 15000),
    (21, 'metro-day', 'hanoi-metro', 'Vé ngày metro', 'Metro day pass', 'day', true, NULL, NULL, 30000, 15000),
    (22, 'metro-monthly', 'hanoi-metro', 'Vé tháng metro', 'Metro monthly pass', 'monthly', true, NULL, NULL, 200000, 100000)
) AS p(code, product_id, operator_slug, name_vi, name_en, kind, network, min_km, max_km, amount, priority)
CROSS JOIN transit_rider_category c;

-- paper single rides sold at kiosks: regular fare only
INSERT INTO transit_fare_product (code, product_id, operator_slug, name_vi, name_en, kind, network, min_km, max_km,
                                  rider_category_id, amount_vnd, fare_media_id, effective_from)
VALUES (30, 'bus-paper-single', 'hanoibus', 'Vé lượt giấy (quầy)', 'Paper single ride (kiosk)', 'single', true,
        NULL, NULL, 'regular', 8000, 'paper', DATE '2024-11-01'),
       (31, 'metro-paper-single', 'hanoi-metro', 'Vé lượt giấy metro', 'Metro paper single ride', 'single', true,
        NULL, NULL, 'regular', 15000, 'paper', DATE '2024-11-01');
