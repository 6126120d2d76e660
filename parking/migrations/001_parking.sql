-- Parking: lots and on-street zones, tariffs with effective dates, sessions, debts, permits, vehicles.
--
-- Places are in metres on a local plane around Hoàn Kiếm (as feedback does: no PostGIS on the embedded
-- server), so the built-in point type and a GiST index answer "within r metres" and "nearest first".
CREATE FUNCTION parking_metres(lat double precision, lng double precision) RETURNS point
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN point((lng - 105.8542) * 103873.0, (lat - 21.0285) * 110748.0);

CREATE TABLE parking_lot (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code               text        NOT NULL UNIQUE CHECK (code ~ '^[a-z][a-z0-9-]{1,62}$'),
    name               text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind               text        NOT NULL CHECK (kind IN ('lot', 'street')),
    operator_slug      text        NOT NULL REFERENCES payment_operator (slug),
    address            text        NOT NULL DEFAULT '' CHECK (length(address) <= 300),
    latitude           double precision NOT NULL CHECK (latitude BETWEEN 20.5 AND 21.5),
    longitude          double precision NOT NULL CHECK (longitude BETWEEN 105.2 AND 106.1),
    location           point       GENERATED ALWAYS AS (parking_metres(latitude, longitude)) STORED,
    capacity_motorbike integer     NOT NULL DEFAULT 0 CHECK (capacity_motorbike >= 0),
    capacity_car       integer     NOT NULL DEFAULT 0 CHECK (capacity_car >= 0),
    capacity_large     integer     NOT NULL DEFAULT 0 CHECK (capacity_large >= 0),
    -- local opening hours; both NULL means always open; closes < opens runs past midnight
    opens_at           time,
    closes_at          time,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((opens_at IS NULL) = (closes_at IS NULL))
);
CREATE INDEX parking_lot_location_idx ON parking_lot USING gist (location);
CREATE INDEX parking_lot_operator_idx ON parking_lot (operator_slug);

-- A tariff applies from effective_from to the next tariff's effective_from for the same lot (or the city
-- default, lot_id NULL) and vehicle. Rows are never updated: a new price is a new row, and a session keeps
-- the tariff it checked in under, so past sessions are never repriced.
CREATE TABLE parking_tariff (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot_id         bigint      REFERENCES parking_lot (id),
    vehicle        text        NOT NULL CHECK (vehicle IN ('motorbike', 'car', 'large')),
    effective_from timestamptz NOT NULL,
    mode           text        NOT NULL CHECK (mode IN ('turn', 'hourly')),
    day_vnd        integer     NOT NULL DEFAULT 0 CHECK (day_vnd >= 0),
    night_vnd      integer     NOT NULL DEFAULT 0 CHECK (night_vnd >= 0),
    day_night_vnd  integer     NOT NULL DEFAULT 0 CHECK (day_night_vnd >= 0),
    hour_rates     integer[]   NOT NULL DEFAULT '{}',
    month_vnd      integer     CHECK (month_vnd > 0),
    day_starts     time        NOT NULL DEFAULT '06:00',
    day_ends       time        NOT NULL DEFAULT '18:00',
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (mode <> 'hourly' OR cardinality(hour_rates) BETWEEN 1 AND 48),
    CHECK (day_starts < day_ends)
);
CREATE UNIQUE INDEX parking_tariff_key_idx ON parking_tariff (coalesce(lot_id, 0), vehicle, effective_from);

INSERT INTO parking_tariff (lot_id, vehicle, effective_from, mode, day_vnd, night_vnd, day_night_vnd, month_vnd)
VALUES (NULL, 'motorbike', '2017-01-01+07', 'turn', 5000, 8000, 12000, 120000);
INSERT INTO parking_tariff (lot_id, vehicle, effective_from, mode, hour_rates)
VALUES (NULL, 'car', '2017-01-01+07', 'hourly', '{25000,25000,35000,35000,45000}'),
       (NULL, 'large', '2017-01-01+07', 'hourly', '{35000,35000,45000,45000,55000}');

-- A resident's saved vehicles; an RFID tag names one of them.
CREATE TABLE parking_vehicle (
    resident_id uuid        NOT NULL REFERENCES resident (id),
    plate       text        NOT NULL,
    vehicle     text        NOT NULL CHECK (vehicle IN ('motorbike', 'car', 'large')),
    rfid_tag    text        UNIQUE CHECK (rfid_tag ~ '^[0-9A-F]{8,32}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resident_id, plate)
);
CREATE INDEX parking_vehicle_plate_idx ON parking_vehicle (plate);

-- The short-lived QR a resident's app shows at a gate: used once.
CREATE TABLE parking_pass_code (
    code        text        PRIMARY KEY,
    resident_id uuid        NOT NULL REFERENCES resident (id),
    plate       text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE TABLE parking_session (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot_id       bigint      NOT NULL REFERENCES parking_lot (id),
    plate        text        NOT NULL,
    vehicle      text        NOT NULL CHECK (vehicle IN ('motorbike', 'car', 'large')),
    via          text        NOT NULL CHECK (via IN ('plate', 'rfid', 'qr', 'app')),
    resident_id  uuid        REFERENCES resident (id),
    tariff_id    bigint      NOT NULL REFERENCES parking_tariff (id),
    started_at   timestamptz NOT NULL,
    -- on-street sessions are bought for a duration; gate sessions are open-ended
    paid_until   timestamptz,
    ended_at     timestamptz,
    fee_vnd      integer     CHECK (fee_vnd >= 0),
    charged_vnd  integer     NOT NULL DEFAULT 0 CHECK (charged_vnd >= 0),
    device_in    text,
    device_out   text,
    photo_in     bytea,
    photo_out    bytea,
    reminded_at  timestamptz,
    CHECK (ended_at IS NULL OR ended_at >= started_at),
    CHECK ((ended_at IS NULL) = (fee_vnd IS NULL) OR via = 'app')
);
-- one open session per vehicle, whichever lot: the second check-in of a parked vehicle is refused here too
CREATE UNIQUE INDEX parking_session_open_idx ON parking_session (plate) WHERE ended_at IS NULL;
CREATE INDEX parking_session_lot_open_idx ON parking_session (lot_id, vehicle) WHERE ended_at IS NULL;
CREATE INDEX parking_session_lot_ended_idx ON parking_session (lot_id, ended_at);
CREATE INDEX parking_session_resident_idx ON parking_session (resident_id, id) WHERE resident_id IS NOT NULL;

-- Every charge of a session (check-out, an on-street purchase or extension, a settled debt)
CREATE TABLE parking_charge (
    session_id     bigint NOT NULL REFERENCES parking_session (id),
    transaction_id bigint NOT NULL UNIQUE REFERENCES payment_transaction (id),
    amount_vnd     integer NOT NULL CHECK (amount_vnd > 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parking_charge_session_idx ON parking_charge (session_id);

-- What a session's fee could not take from an empty wallet; settled by the worker once the wallet holds it
CREATE TABLE parking_debt (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id     bigint      NOT NULL UNIQUE REFERENCES parking_session (id),
    resident_id    uuid        REFERENCES resident (id),
    plate          text        NOT NULL,
    amount_vnd     integer     NOT NULL CHECK (amount_vnd > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    settled_at     timestamptz,
    transaction_id bigint      REFERENCES payment_transaction (id),
    attempts       integer     NOT NULL DEFAULT 0,
    CHECK ((settled_at IS NULL) = (transaction_id IS NULL))
);
CREATE INDEX parking_debt_open_idx ON parking_debt (created_at) WHERE settled_at IS NULL;
CREATE INDEX parking_debt_plate_idx ON parking_debt (plate) WHERE settled_at IS NULL;

CREATE TABLE parking_permit (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot_id         bigint      NOT NULL REFERENCES parking_lot (id),
    plate          text        NOT NULL,
    vehicle        text        NOT NULL,
    resident_id    uuid        NOT NULL REFERENCES resident (id),
    month          date        NOT NULL CHECK (extract(day FROM month) = 1),
    amount_vnd     integer     NOT NULL CHECK (amount_vnd > 0),
    transaction_id bigint      NOT NULL REFERENCES payment_transaction (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (lot_id, plate, month)
);
CREATE INDEX parking_permit_plate_idx ON parking_permit (plate, month);
