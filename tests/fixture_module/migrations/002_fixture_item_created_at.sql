ALTER TABLE fixture_item ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
