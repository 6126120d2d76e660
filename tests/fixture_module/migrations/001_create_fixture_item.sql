-- Slow on purpose: concurrent `ihanoi migrate` runs must overlap while this one holds the lock.
SELECT pg_sleep(1);

CREATE TABLE fixture_item (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name     text    NOT NULL UNIQUE,
    quantity integer NOT NULL
);
