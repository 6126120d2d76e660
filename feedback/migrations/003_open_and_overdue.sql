-- "Open" and "overdue", defined once. Every query of feedback that asks either (the lists' overdue flag and the
-- staff queue's filter, the per-unit figures, the escalation scan, duplicate suggestions, Open311's open/closed)
-- calls these, so the public figures and the staff queue count the same reports.
--
-- Open: the unit still owes the resident an answer. Overdue: open and past the answer deadline, or not yet
-- received and past the receipt deadline. `as_of` is the caller's clock (one moment for a whole request).
--
-- Plain SQL expressions, IMMUTABLE and not STRICT, so the planner inlines them: a query calling them is planned
-- as if it spelled the expression out, and the partial indexes of 001 (WHERE status IN ('submitted', 'received',
-- 'in_progress'), the same list) still match it. The indexes spell the list themselves rather than call this
-- function: an index must never depend on a function that a later migration could redefine.
CREATE FUNCTION feedback_report_is_open(status text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN status IN ('submitted', 'received', 'in_progress');

CREATE FUNCTION feedback_report_is_overdue(status text, receive_due_at timestamptz, answer_due_at timestamptz,
                                           as_of timestamptz) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN feedback_report_is_open(status)
           AND (answer_due_at < as_of OR (status = 'submitted' AND receive_due_at < as_of));
