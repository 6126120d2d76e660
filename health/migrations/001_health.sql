-- Health: facilities, patients (a resident's record), FHIR resources encrypted at rest with the module's own
-- key, consents, share codes, emergency (break-glass) access, and the access log as a hash chain per patient.

CREATE TABLE health_facility (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9._-]{1,63}$'),  -- the scope of its roles
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind text NOT NULL CHECK (kind IN ('hospital', 'clinic', 'health_station', 'pharmacy', 'laboratory', 'other')),
    bhyt_code text NOT NULL UNIQUE CHECK (bhyt_code ~ '^[0-9]{5}$'),          -- mã cơ sở KCB BHYT
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A resident's health record. Matched by the personal ID number (through identity: resident_id) and by the
-- BHYT card number (a keyed hash; the number itself encrypted).
CREATE TABLE health_patient (
    id uuid PRIMARY KEY,                                   -- the FHIR Patient id
    resident_id uuid NOT NULL UNIQUE REFERENCES resident (id),
    bhyt_hash bytea UNIQUE,
    bhyt_enc bytea,
    access_seq bigint NOT NULL DEFAULT 0,                  -- the access log's head: rows appended so far
    access_head bytea,                                     -- and the hash of the last one
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((bhyt_hash IS NULL) = (bhyt_enc IS NULL))
);

-- Every FHIR resource of every patient, one partition per resource type (as Aidbox keeps one table per type).
-- `content` is the resource's JSON sealed with AES-GCM under the health key (its type and id bound as
-- associated data); the columns beside it are what search needs. Codes and facility identifiers are keyed
-- hashes, so a diagnosis code never lies in the clear either.
CREATE TABLE health_resource (
    resource_type text NOT NULL,
    id uuid NOT NULL,
    patient_id uuid NOT NULL REFERENCES health_patient (id),
    facility_id integer REFERENCES health_facility (id),    -- who wrote it (NULL: demo seed)
    source_hash bytea,                                      -- keyed hash of the facility's identifier system|value
    version integer NOT NULL DEFAULT 1 CHECK (version > 0),
    effective_at timestamptz NOT NULL,                      -- the clinical date `date` searches (else: recorded)
    category text[] NOT NULL DEFAULT '{}',                  -- category codes (laboratory, vital-signs, ...)
    codes bytea[] NOT NULL DEFAULT '{}',                    -- keyed hashes of "system|code" and "|code"
    status text,
    encounter_id uuid,                                      -- the visit it belongs to, when it says
    content bytea NOT NULL,
    last_updated timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resource_type, id),
    UNIQUE (resource_type, facility_id, source_hash)
) PARTITION BY LIST (resource_type);

CREATE TABLE health_resource_patient PARTITION OF health_resource FOR VALUES IN ('Patient');
CREATE TABLE health_resource_encounter PARTITION OF health_resource FOR VALUES IN ('Encounter');
CREATE TABLE health_resource_condition PARTITION OF health_resource FOR VALUES IN ('Condition');
CREATE TABLE health_resource_observation PARTITION OF health_resource FOR VALUES IN ('Observation');
CREATE TABLE health_resource_medication_request PARTITION OF health_resource FOR VALUES IN ('MedicationRequest');
CREATE TABLE health_resource_immunization PARTITION OF health_resource FOR VALUES IN ('Immunization');
CREATE TABLE health_resource_allergy_intolerance PARTITION OF health_resource FOR VALUES IN ('AllergyIntolerance');
CREATE TABLE health_resource_diagnostic_report PARTITION OF health_resource FOR VALUES IN ('DiagnosticReport');
CREATE TABLE health_resource_document_reference PARTITION OF health_resource FOR VALUES IN ('DocumentReference');

-- each partition holds one type, so (patient, date, id) serves a type's search and $everything's merge alike
CREATE INDEX health_resource_by_patient ON health_resource (patient_id, effective_at, id);
CREATE INDEX health_resource_by_update ON health_resource (patient_id, last_updated, id);
CREATE INDEX health_resource_by_code ON health_resource USING gin (codes);
CREATE INDEX health_resource_by_encounter ON health_resource (encounter_id) WHERE encounter_id IS NOT NULL;

-- The resident's consent: a facility (clinician_id NULL) or one clinician of it may read, for a time.
CREATE TABLE health_consent (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id uuid NOT NULL REFERENCES health_patient (id),
    facility_id integer NOT NULL REFERENCES health_facility (id),
    clinician_id uuid REFERENCES resident (id),
    via text NOT NULL CHECK (via IN ('app', 'share_code')),
    starts_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (expires_at > starts_at)
);
CREATE INDEX health_consent_live ON health_consent (patient_id, facility_id, expires_at) WHERE revoked_at IS NULL;

-- The short code (shown as a QR) a resident shows at a visit; a facility redeems it once for a consent.
CREATE TABLE health_share_code (
    code_hash bytea PRIMARY KEY,
    patient_id uuid NOT NULL REFERENCES health_patient (id),
    access_minutes integer NOT NULL CHECK (access_minutes > 0),
    expires_at timestamptz NOT NULL,
    redeemed_at timestamptz,
    consent_id bigint REFERENCES health_consent (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Emergency access without consent: allowed with a reason, for a short window, always told to the resident.
CREATE TABLE health_emergency_access (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id uuid NOT NULL REFERENCES health_patient (id),
    facility_id integer NOT NULL REFERENCES health_facility (id),
    actor text NOT NULL,
    reason_enc bytea NOT NULL,
    starts_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX health_emergency_live ON health_emergency_access (patient_id, facility_id, expires_at);

-- Who read or wrote a patient's record: append-only, each row holding the keyed hash of the one before.
CREATE TABLE health_access_log (
    patient_id uuid NOT NULL REFERENCES health_patient (id),
    seq bigint NOT NULL CHECK (seq > 0),
    at timestamptz NOT NULL,
    actor text NOT NULL,                                    -- client:<id> or resident:<uuid>
    actor_kind text NOT NULL CHECK (actor_kind IN ('facility', 'clinician', 'resident', 'app', 'system')),
    facility_id integer REFERENCES health_facility (id),
    action text NOT NULL,                                   -- read, search, everything, write, ...
    purpose text NOT NULL,                                  -- own, consent, emergency, visit, ...
    what text NOT NULL,                                     -- "Observation/<id>", "search Observation"
    reason_enc bytea,                                       -- an emergency's reason, sealed
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (patient_id, seq)
);

CREATE FUNCTION health_access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'health_access_log is append-only';
END $$;
CREATE TRIGGER health_access_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON health_access_log
    FOR EACH STATEMENT EXECUTE FUNCTION health_access_log_append_only();
