-- What each facility sent as a patient's Patient resource, kept apart (sealed with the health key, the patient and
-- facility bound as associated data), so that the Patient served is merged from all of them (identifiers of every
-- facility, VNeID-verified demographics first, any other element from the facility that sent it last) instead of
-- being whatever the last facility to write sent (service.merged_patient).
CREATE TABLE health_patient_source (
    patient_id uuid NOT NULL REFERENCES health_patient (id),
    facility_id integer NOT NULL REFERENCES health_facility (id),
    content bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (patient_id, facility_id)
);
