-- A visit that changes after it was sent is sent again, as a new revision (the receiver keeps the highest revision
-- of a visit_key and is idempotent on (visit_key, revision)).
--
-- Each outbox row is now one revision of one visit: at most one pending per visit (the claim is built from the
-- record when it is sent, so one waiting revision carries every change made meanwhile). A change to a finished
-- visit (its Encounter, or a Condition or MedicationRequest of it) queues a new revision once the last one has
-- left the pending state; a change while one is in flight bumps `changes`, and `delivered` queues another revision
-- when the count moved while the claim was on its way. A revision whose claim is the same as the one delivered
-- before (a facility sending the same visit again) is not sent: state 'unchanged'.
ALTER TABLE health_outbox ADD COLUMN revision integer NOT NULL DEFAULT 1 CHECK (revision > 0);
ALTER TABLE health_outbox ADD COLUMN changes integer NOT NULL DEFAULT 0;   -- writes to the visit while pending
ALTER TABLE health_outbox ADD COLUMN claim_hash bytea;                     -- keyed hash of the claim delivered
ALTER TABLE health_outbox DROP CONSTRAINT health_outbox_destination_encounter_id_key;
ALTER TABLE health_outbox DROP CONSTRAINT health_outbox_destination_visit_key_key;
ALTER TABLE health_outbox DROP CONSTRAINT health_outbox_state_check;
ALTER TABLE health_outbox ADD CONSTRAINT health_outbox_state_check
    CHECK (state IN ('pending', 'delivered', 'failed', 'unchanged'));
CREATE UNIQUE INDEX health_outbox_revision ON health_outbox (destination, encounter_id, revision);
CREATE UNIQUE INDEX health_outbox_one_pending ON health_outbox (destination, encounter_id) WHERE state = 'pending';

-- Queue (a new revision of) a visit, unless one is waiting: that one then counts the change.
CREATE FUNCTION health_outbox_queue(visit uuid, patient uuid) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE health_outbox SET changes = changes + 1
     WHERE destination = 'social_insurance' AND encounter_id = visit AND state = 'pending';
    IF NOT FOUND THEN
        INSERT INTO health_outbox (encounter_id, patient_id, visit_key, revision)
        SELECT visit, patient, 'ihanoi-visit:' || visit::text, coalesce(max(revision), 0) + 1
          FROM health_outbox WHERE destination = 'social_insurance' AND encounter_id = visit
        ON CONFLICT DO NOTHING;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION health_outbox_finished_visit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM health_outbox_queue(NEW.id, NEW.patient_id);
    RETURN NULL;
END $$;

DROP TRIGGER health_outbox_finished_visit ON health_resource_encounter;
-- any write of a finished visit (not only its status): an amended visit is a changed claim
CREATE TRIGGER health_outbox_finished_visit
    AFTER INSERT OR UPDATE ON health_resource_encounter
    FOR EACH ROW WHEN (NEW.status = 'finished')
    EXECUTE FUNCTION health_outbox_finished_visit();

-- the claim lists the visit's diagnoses and medicines: a change to one of them changes a finished visit's claim
CREATE FUNCTION health_outbox_visit_part() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    visit record;
BEGIN
    SELECT id, patient_id INTO visit FROM health_resource_encounter WHERE id = NEW.encounter_id AND status = 'finished';
    IF FOUND THEN
        PERFORM health_outbox_queue(visit.id, visit.patient_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER health_outbox_visit_part AFTER INSERT OR UPDATE ON health_resource_condition
    FOR EACH ROW WHEN (NEW.encounter_id IS NOT NULL) EXECUTE FUNCTION health_outbox_visit_part();
CREATE TRIGGER health_outbox_visit_part AFTER INSERT OR UPDATE ON health_resource_medication_request
    FOR EACH ROW WHEN (NEW.encounter_id IS NOT NULL) EXECUTE FUNCTION health_outbox_visit_part();
