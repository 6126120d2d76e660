-- Occupied spaces per lot and vehicle type kept as a counter, changed by the same statements that open and
-- close sessions (store.py: count_in, end_session, close_expired_street), as notifications keeps broadcast
-- counts: near-me and the gate read one row instead of counting open sessions, and the check-in's
-- `occupied < capacity` test and its +1 are one statement, so two gates cannot both take the last space.
CREATE TABLE parking_occupancy (
    lot_id   bigint  NOT NULL REFERENCES parking_lot (id),
    vehicle  text    NOT NULL CHECK (vehicle IN ('motorbike', 'car', 'large')),
    occupied integer NOT NULL DEFAULT 0 CHECK (occupied >= 0),
    PRIMARY KEY (lot_id, vehicle)
);

-- Sessions open before this migration: counted once, here.
INSERT INTO parking_occupancy (lot_id, vehicle, occupied)
SELECT lot_id, vehicle, count(*) FROM parking_session WHERE ended_at IS NULL GROUP BY lot_id, vehicle;

-- Evidence photos of a session at the gate, cleaned by app.images (pixels only: no EXIF/GPS, no device
-- details) before they are stored; read back by the operator and the city's parking staff. Photos taken
-- before this migration stay in parking_session.photo_in/photo_out as uploaded and are cleaned when read.
CREATE TABLE parking_photo (
    session_id   bigint      NOT NULL REFERENCES parking_session (id),
    side         text        NOT NULL CHECK (side IN ('in', 'out')),
    content_type text        NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png')),
    content      bytea       NOT NULL,
    thumbnail    bytea       NOT NULL,
    sha256       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, side)
);

-- A gate stay longer than the maximum (IHANOI_PARKING_GATE_MAX_STAY_DAYS) is flagged at check-out for staff:
-- the vehicle still leaves and pays the tariff's fee.
ALTER TABLE parking_session ADD COLUMN overstay boolean NOT NULL DEFAULT false;
CREATE INDEX parking_session_overstay_idx ON parking_session (lot_id, ended_at) WHERE overstay;

-- Every edit of a lot (name, address, capacity, hours, a tariff assigned): who, when, each field before and
-- after. Sessions are never rewritten: they keep the tariff they checked in under.
CREATE TABLE parking_lot_change (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot_id     bigint      NOT NULL REFERENCES parking_lot (id),
    changed_by text        NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    changes    jsonb       NOT NULL
);
CREATE INDEX parking_lot_change_lot_idx ON parking_lot_change (lot_id, id);
