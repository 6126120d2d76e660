-- The outbox of finished visits for the social-insurance endpoint (Vietnam Social Security).
--
-- A row is added by a trigger in the very transaction that stores an Encounter with status `finished`, whatever
-- path wrote it (a facility's transaction Bundle, an update, a seed), so a committed finished visit always has
-- its row and a rolled-back one never does. Only the visit's id is kept here: the claim is built from the
-- sealed record when it is sent, so no health data lies in the clear in this table.
CREATE TABLE health_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination text NOT NULL DEFAULT 'social_insurance' CHECK (destination IN ('social_insurance')),
    encounter_id uuid NOT NULL,
    patient_id uuid NOT NULL REFERENCES health_patient (id),
    visit_key text NOT NULL,                      -- the receiver's idempotency key
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status integer,                          -- the receiver's last HTTP status (NULL: no answer)
    last_error text,                              -- why the last try failed (never health data)
    receipt text,                                 -- the receiver's receipt number once delivered
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    UNIQUE (destination, encounter_id),
    UNIQUE (destination, visit_key),
    CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
);
CREATE INDEX health_outbox_due ON health_outbox (next_attempt_at) WHERE state = 'pending';

CREATE FUNCTION health_outbox_finished_visit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO health_outbox (encounter_id, patient_id, visit_key)
    VALUES (NEW.id, NEW.patient_id, 'ihanoi-visit:' || NEW.id::text)
    ON CONFLICT DO NOTHING;  -- a visit is sent once; later amendments are not sent again
    RETURN NULL;
END $$;

-- on the partition that holds Encounters: the other types never fire it
CREATE TRIGGER health_outbox_finished_visit
    AFTER INSERT OR UPDATE OF status ON health_resource_encounter
    FOR EACH ROW WHEN (NEW.status = 'finished')
    EXECUTE FUNCTION health_outbox_finished_visit();
