-- A run row's `data` leaves out what its columns hold for good (id, task, queue, priority,
-- queued, end): about 150 bytes of a finished no-op run. Existing rows keep those keys, which
-- win over the columns on reading (they agree), so no row is rewritten here. The claim now
-- returns the columns a record is rebuilt from.
DROP FUNCTION claim_runs(
    DOUBLE PRECISION, TEXT[], INTEGER, TEXT, DOUBLE PRECISION, TEXT, TEXT, JSONB
);
CREATE FUNCTION claim_runs(
    p_now DOUBLE PRECISION, p_queues TEXT[], p_limit INTEGER, p_worker TEXT,
    p_expires DOUBLE PRECISION, p_start TEXT, p_token TEXT, p_task_limits JSONB
) RETURNS TABLE (
    id TEXT, lease_token TEXT, priority_rank SMALLINT, due DOUBLE PRECISION, task TEXT,
    queue TEXT, created DOUBLE PRECISION, ended DOUBLE PRECISION, data JSONB,
    retry_at DOUBLE PRECISION
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_paused TEXT[];
    v_queue_limits JSONB;
    v_held JSONB := '{}';
    v_count INTEGER := 0;
    v_scanned INTEGER := 0;
    v_retry DOUBLE PRECISION;
    v_wait DOUBLE PRECISION;
    v_starts DOUBLE PRECISION[];
    v_keys TEXT[];
    v_specs JSONB[];
    v_k INTEGER;
    v_n INTEGER;
    v_per DOUBLE PRECISION;
    v_m INTEGER;
    v_held_ids TEXT[] := '{}';
    v_held_at DOUBLE PRECISION[] := '{}';
    cand RECORD;
BEGIN
    SELECT coalesce(array_agg(s.name) FILTER (WHERE s.paused), '{}'),
           coalesce(jsonb_object_agg(s.name, jsonb_build_array(s.rate_count, s.rate_per))
                    FILTER (WHERE s.rate_count IS NOT NULL), '{}')
    INTO v_paused, v_queue_limits FROM queue_settings AS s;

    IF p_task_limits = '{}'::jsonb AND v_queue_limits = '{}'::jsonb THEN
        RETURN QUERY
        WITH picked AS (
            SELECT r.id FROM runs AS r
            WHERE r.state = 'queued'
              AND (r.execute_after IS NULL OR r.execute_after <= p_now)
              AND (p_queues IS NULL OR r.queue = ANY(p_queues))
              AND NOT (r.queue = ANY(v_paused))
            ORDER BY r.priority_rank, r.due, r.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ), upd AS (
            UPDATE runs AS r
            SET state = 'running', worker = p_worker, lease_token = p_token || r.id,
                lease_expires = p_expires, created = COALESCE(r.created, p_now),
                data = r.data || jsonb_build_object('state', 'running', 'worker', p_worker)
                       || CASE WHEN r.data -> 'start' IS NULL OR r.data -> 'start' = 'null'::jsonb
                               THEN jsonb_build_object('start', p_start) ELSE '{}'::jsonb END
            FROM picked
            WHERE r.id = picked.id
            RETURNING r.id, r.lease_token, r.priority_rank, r.due, r.task, r.queue, r.created,
                      r.ended, r.data
        )
        SELECT upd.id, upd.lease_token, upd.priority_rank, upd.due, upd.task, upd.queue,
               upd.created, upd.ended, upd.data, NULL::DOUBLE PRECISION
        FROM upd;
        RETURN;
    END IF;

    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || ':rate-windows', 0));
    FOR cand IN
        SELECT r.id, r.task, r.queue FROM runs AS r
        WHERE r.state = 'queued'
          AND (r.execute_after IS NULL OR r.execute_after <= p_now)
          AND (p_queues IS NULL OR r.queue = ANY(p_queues))
          AND NOT (r.queue = ANY(v_paused))
        ORDER BY r.priority_rank, r.due, r.id
        LIMIT 200  -- then the worker claims again at once (retry_at = now)
        FOR UPDATE SKIP LOCKED
    LOOP
        EXIT WHEN v_count >= p_limit;
        v_scanned := v_scanned + 1;
        v_keys := '{}';
        v_specs := '{}';
        IF p_task_limits ? cand.task THEN
            v_keys := v_keys || ('task:' || cand.task);
            v_specs := v_specs || (p_task_limits -> cand.task);
        END IF;
        IF v_queue_limits ? cand.queue THEN
            v_keys := v_keys || ('queue:' || cand.queue);
            v_specs := v_specs || (v_queue_limits -> cand.queue);
        END IF;
        v_wait := NULL;
        FOR i IN 1 .. coalesce(array_length(v_keys, 1), 0) LOOP
            v_n := (v_specs[i] ->> 0)::INTEGER;
            v_per := (v_specs[i] ->> 1)::DOUBLE PRECISION;
            SELECT ARRAY(SELECT x FROM unnest(w.starts) AS x WHERE x > p_now - v_per ORDER BY x)
            INTO v_starts FROM rate_windows AS w WHERE w.key = v_keys[i];
            v_m := coalesce(array_length(v_starts, 1), 0);
            IF v_m >= v_n THEN
                v_k := coalesce((v_held ->> v_keys[i])::INTEGER, 0);
                v_held := v_held || jsonb_build_object(v_keys[i], v_k + 1);
                v_wait := greatest(v_wait,
                    v_starts[v_m - v_n + (v_k % v_n) + 1] + v_per * (v_k / v_n + 1));
            END IF;
        END LOOP;
        IF v_wait IS NOT NULL THEN
            v_retry := least(v_retry, v_wait);
            v_held_ids := v_held_ids || cand.id;
            v_held_at := v_held_at || v_wait;
            CONTINUE;
        END IF;
        FOR i IN 1 .. coalesce(array_length(v_keys, 1), 0) LOOP
            v_per := (v_specs[i] ->> 1)::DOUBLE PRECISION;
            INSERT INTO rate_windows AS w (key, starts) VALUES (v_keys[i], ARRAY[p_now])
            ON CONFLICT (key) DO UPDATE SET starts = ARRAY(
                SELECT x FROM unnest(w.starts) AS x WHERE x > p_now - v_per ORDER BY x
            ) || p_now;
        END LOOP;
        v_count := v_count + 1;
        RETURN QUERY
        UPDATE runs AS r
        SET state = 'running', worker = p_worker, lease_token = p_token || r.id,
            lease_expires = p_expires, created = COALESCE(r.created, p_now),
            data = r.data || jsonb_build_object('state', 'running', 'worker', p_worker)
                   || CASE WHEN r.data -> 'start' IS NULL OR r.data -> 'start' = 'null'::jsonb
                           THEN jsonb_build_object('start', p_start) ELSE '{}'::jsonb END
        WHERE r.id = cand.id
        RETURNING r.id, r.lease_token, r.priority_rank, r.due, r.task, r.queue, r.created,
                  r.ended, r.data, NULL::DOUBLE PRECISION;
    END LOOP;
    -- the runs held back, in one statement: the claim holds the rate lock, keep it short
    UPDATE runs AS r
    SET execute_after = h.at, due = h.at,
        data = jsonb_set(r.data, '{execute_after}', to_jsonb(to_char(
            to_timestamp(h.at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
    FROM unnest(v_held_ids, v_held_at) AS h(id, at)
    WHERE r.id = h.id;
    IF v_scanned >= 200 AND v_count < p_limit THEN
        v_retry := p_now;  -- more may be due behind the runs held back: claim again
    END IF;
    IF v_retry IS NOT NULL THEN
        RETURN QUERY SELECT NULL::TEXT, NULL::TEXT, NULL::SMALLINT, NULL::DOUBLE PRECISION,
                            NULL::TEXT, NULL::TEXT, NULL::DOUBLE PRECISION,
                            NULL::DOUBLE PRECISION, NULL::JSONB, v_retry;
    END IF;
END;
$$;

-- Tagged runs only: GIN kept an entry for every untagged run's empty array.
DROP INDEX runs_tags_idx;
CREATE INDEX runs_tags_idx ON runs USING gin (tags) WHERE tags <> '{}'::text[];
