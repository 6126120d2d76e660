-- Text search in a map box or a category: one GIN index holds each report's words and its tags (the map cells it
-- lies in, its category), so that "these words in these cells" or "in this category" is one index scan that skips
-- through the lists together (GIN's fast scan), instead of every report with the words read from the table to
-- find the few in the box or the category (a rare word in a district: thousands of rows read for a few dozen;
-- benchmarks/feedback.py).
--
-- A report lies in two cells, squares of 2 km and of 16 km in the local metres of feedback_metres; a cell is
-- numbered (floor(x / size) * 100000 + floor(y / size)) * 10 + 2 or 6 (for 2 or 16 km). feedback.store.box_cells numbers a
-- box's cells the same way: the two must agree (tests/feedback/test_search_cells.py checks it). A category's tag
-- ends in 0. Like the functions of 003, never redefine these: the index depends on them; a new numbering is a
-- new function and a new index.
CREATE FUNCTION feedback_category_tag(code text) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN ('x' || substr(md5(code), 1, 14))::bit(56)::bigint * 10;

CREATE FUNCTION feedback_tags(p point, category_code text) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN ARRAY[(floor(p[0] / 2000)::bigint * 100000 + floor(p[1] / 2000)::bigint) * 10 + 2,
                 (floor(p[0] / 16000)::bigint * 100000 + floor(p[1] / 16000)::bigint) * 10 + 6,
                 feedback_category_tag(category_code)];

-- It replaces the index of words alone: a search without a box or a category scans the first column only, as
-- that one did; and with one index of words the planner cannot pick the words alone for a box (it would: it takes
-- the words of a phrase as independent, so a phrase looks rare enough to read every match from the table).
CREATE INDEX report_search_tags_idx ON report USING gin (search, feedback_tags(location, category_code));
DROP INDEX report_search_idx;
