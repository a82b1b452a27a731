-- Schema and generator of the reference trace dataset (specification: dataset.md).
--
-- Idempotent: safe to run again on a database that already has it. Runnable as one multi-statement
-- script over the simple query protocol (tokio-postgres `batch_execute`, psql -f): no meta-commands.
--
--   SELECT trace_seed(114000);   -- truncates the five tables and loads containers 1..114000
--
-- Every table is keyed by (container_id, seq); the primary key is the lookup index.

CREATE TABLE IF NOT EXISTS history (
    container_id text        NOT NULL,
    seq          int         NOT NULL,
    workcenter   text        NOT NULL,
    step         text        NOT NULL,
    equipment    text        NOT NULL,
    qty_in       int         NOT NULL,
    qty_out      int         NOT NULL,
    move_in      timestamptz NOT NULL,
    move_out     timestamptz NOT NULL,
    CONSTRAINT history_pkey PRIMARY KEY (container_id, seq)
);

CREATE TABLE IF NOT EXISTS materials (
    container_id text          NOT NULL,
    seq          int           NOT NULL,
    material_lot text          NOT NULL,
    part_no      text          NOT NULL,
    qty          numeric(12,3) NOT NULL,
    consumed_at  timestamptz   NOT NULL,
    CONSTRAINT materials_pkey PRIMARY KEY (container_id, seq)
);

CREATE TABLE IF NOT EXISTS rejects (
    container_id text        NOT NULL,
    seq          int         NOT NULL,
    workcenter   text        NOT NULL,
    reason_code  text        NOT NULL,
    qty          int         NOT NULL,
    rejected_at  timestamptz NOT NULL,
    CONSTRAINT rejects_pkey PRIMARY KEY (container_id, seq)
);

CREATE TABLE IF NOT EXISTS holds (
    container_id text        NOT NULL,
    seq          int         NOT NULL,
    hold_reason  text        NOT NULL,
    hold_at      timestamptz NOT NULL,
    release_at   timestamptz,
    CONSTRAINT holds_pkey PRIMARY KEY (container_id, seq)
);

CREATE TABLE IF NOT EXISTS jobs (
    container_id text        NOT NULL,
    seq          int         NOT NULL,
    equipment    text        NOT NULL,
    job_id       text        NOT NULL,
    recipe       text        NOT NULL,
    start_at     timestamptz NOT NULL,
    end_at       timestamptz NOT NULL,
    CONSTRAINT jobs_pkey PRIMARY KEY (container_id, seq)
);

-- mix(x): the dataset's 32-bit integer hash, in plain 64-bit arithmetic (`#` is xor):
--   a = x mod 2^32;  b = ((a # (a >> 16)) * 73244475) mod 2^32;  c = ((b # (b >> 16)) * 73244475) mod 2^32;
--   mix = c # (c >> 16)
-- Every intermediate is non-negative and below 2^59 (a, b, c < 2^32, the multiplier < 2^27).
-- Defined for x >= 0 (the generator calls it with 8i + 1 .. 8i + 5). Written as one expression, with
-- a, b and c spelled out, so that the planner inlines it (a SQL function with a FROM clause is not
-- inlined and costs several microseconds a call).
CREATE OR REPLACE FUNCTION trace_mix(x bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT
        -- c # (c >> 16), with c = ((b # (b >> 16)) * 73244475) % 2^32
        (((((((x % 4294967296) # ((x % 4294967296) >> 16)) * 73244475) % 4294967296)
           # (((((x % 4294967296) # ((x % 4294967296) >> 16)) * 73244475) % 4294967296) >> 16))
          * 73244475) % 4294967296)
      # ((((((((x % 4294967296) # ((x % 4294967296) >> 16)) * 73244475) % 4294967296)
           # (((((x % 4294967296) # ((x % 4294967296) >> 16)) * 73244475) % 4294967296) >> 16))
          * 73244475) % 4294967296) >> 16)
$$;

-- Loads containers 1..n (truncating the five tables first), set-based: one INSERT … SELECT per table,
-- rows inserted in (container_id, seq) order. The primary keys are dropped for the load and built
-- afterwards: measured on 114,000 ids that takes ~13 s against ~27 s with the keys in place.
-- JIT is off for the call: the planner cannot estimate the per-container generate_series and overprices
-- every INSERT, so JIT compiled each one (~0.3 s apiece, most of the time of a 10,000-id load) for no
-- measurable gain on large loads.
-- Limited to n <= 9,999,999: container ids have 7 digits (and int arithmetic stays in range).
CREATE OR REPLACE FUNCTION trace_seed(n integer) RETURNS void
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    t0 CONSTANT timestamptz := '2025-01-01 00:00:00+00';
BEGIN
    IF n IS NULL OR n < 0 OR n > 9999999 THEN
        RAISE EXCEPTION 'trace_seed: n must be between 0 and 9999999, got %', n;
    END IF;

    TRUNCATE history, materials, rejects, holds, jobs;
    ALTER TABLE history   DROP CONSTRAINT IF EXISTS history_pkey;
    ALTER TABLE materials DROP CONSTRAINT IF EXISTS materials_pkey;
    ALTER TABLE rejects   DROP CONSTRAINT IF EXISTS rejects_pkey;
    ALTER TABLE holds     DROP CONSTRAINT IF EXISTS holds_pkey;
    ALTER TABLE jobs      DROP CONSTRAINT IF EXISTS jobs_pkey;

    INSERT INTO history (container_id, seq, workcenter, step, equipment, qty_in, qty_out, move_in, move_out)
    SELECT 'CID-' || lpad(i::text, 7, '0'),
           s,
           'WC-' || lpad(((i + 7 * s) % 40)::text, 2, '0'),
           'STEP-' || lpad(s::text, 3, '0'),
           'EQ-' || lpad(((13 * i + 29 * s) % 500)::text, 4, '0'),
           500 + (i % 500) - s,
           500 + (i % 500) - s - ((i + s) % 4),
           t0 + (97 * i + 3600 * s) * interval '1 second',
           t0 + (97 * i + 3600 * s + 600 + (i * s) % 3000) * interval '1 second'
    FROM generate_series(1, n) AS i,
         generate_series(1, 1 + (trace_mix(8 * i::bigint + 1) % 39)::int) AS s;

    INSERT INTO materials (container_id, seq, material_lot, part_no, qty, consumed_at)
    SELECT 'CID-' || lpad(i::text, 7, '0'),
           s,
           'ML-' || lpad(((31 * i::bigint + s) % 10000000)::text, 7, '0'),
           'PN-' || lpad(((i + 11 * s) % 2000)::text, 5, '0'),
           ((i::bigint * s) % 100000) / 100.0,
           t0 + (97 * i + 1800 * s) * interval '1 second'
    FROM generate_series(1, n) AS i,
         generate_series(1, (trace_mix(8 * i::bigint + 2) % 17)::int) AS s;

    INSERT INTO rejects (container_id, seq, workcenter, reason_code, qty, rejected_at)
    SELECT 'CID-' || lpad(i::text, 7, '0'),
           s,
           'WC-' || lpad(((i + 7 * k) % 40)::text, 2, '0'),
           'RC-' || lpad(((3 * i + 5 * s) % 25)::text, 2, '0'),
           1 + (i + 7 * s) % 20,
           t0 + (97 * i + 3600 * k + 1800) * interval '1 second'
    FROM generate_series(1, n) AS i,
         LATERAL (SELECT 1 + (trace_mix(8 * i::bigint + 1) % 39)::int AS hc,
                         (trace_mix(8 * i::bigint + 3) % 5)::int AS cnt) AS c,
         generate_series(1, c.cnt) AS s,
         LATERAL (SELECT 1 + (7 * i + 3 * s) % c.hc AS k) AS r;

    INSERT INTO holds (container_id, seq, hold_reason, hold_at, release_at)
    SELECT 'CID-' || lpad(i::text, 7, '0'),
           s,
           'HR-' || lpad(((i + s) % 12)::text, 2, '0'),
           t0 + (97 * i + 7200 * s) * interval '1 second',
           CASE WHEN (i + s) % 10 = 0 THEN NULL
                ELSE t0 + (97 * i + 7200 * s + 60 + (i * s) % 86400) * interval '1 second' END
    FROM generate_series(1, n) AS i,
         generate_series(1, (trace_mix(8 * i::bigint + 4) % 3)::int) AS s;

    INSERT INTO jobs (container_id, seq, equipment, job_id, recipe, start_at, end_at)
    SELECT 'CID-' || lpad(i::text, 7, '0'),
           s,
           'EQ-' || lpad(((17 * i + 23 * s) % 500)::text, 4, '0'),
           'JOB-' || lpad((100 * i::bigint + s)::text, 10, '0'),
           'RCP-' || lpad(((i * s) % 300)::text, 3, '0'),
           t0 + (97 * i + 2400 * s) * interval '1 second',
           t0 + (97 * i + 2400 * s + 300 + (i * s) % 2000) * interval '1 second'
    FROM generate_series(1, n) AS i,
         generate_series(1, (trace_mix(8 * i::bigint + 5) % 21)::int) AS s;

    ALTER TABLE history   ADD CONSTRAINT history_pkey   PRIMARY KEY (container_id, seq);
    ALTER TABLE materials ADD CONSTRAINT materials_pkey PRIMARY KEY (container_id, seq);
    ALTER TABLE rejects   ADD CONSTRAINT rejects_pkey   PRIMARY KEY (container_id, seq);
    ALTER TABLE holds     ADD CONSTRAINT holds_pkey     PRIMARY KEY (container_id, seq);
    ALTER TABLE jobs      ADD CONSTRAINT jobs_pkey      PRIMARY KEY (container_id, seq);
    ANALYZE history, materials, rejects, holds, jobs;
END
$$;
