-- Each resource's line (what it is, a detail, its status and first code: health.display.Line) sealed beside its
-- content under the same key, written in the same statement as the content. The resident's summary and timeline
-- open these few dozen bytes per row rather than the whole resource. Rows written before this column have NULL
-- and are read from their content (health.store.line_of), so nothing needs rewriting here (the key is not the
-- database's to hold).
ALTER TABLE health_resource ADD COLUMN display bytea;
