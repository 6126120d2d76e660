-- Cards a resident holds for family members (a child rides free under 6, once a birth certificate is approved).
CREATE TABLE transit_card (
    id bigserial PRIMARY KEY,
    owner_id uuid NOT NULL,
    holder_name text NOT NULL,
    birth_date date NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transit_card_owner ON transit_card (owner_id);

ALTER TABLE transit_application ADD COLUMN card_id bigint REFERENCES transit_card (id);
ALTER TABLE transit_ticket ADD COLUMN card_id bigint REFERENCES transit_card (id);
