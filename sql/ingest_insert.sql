-- Stores new events and folds them into the day rollups, in one statement; returns the
-- keys that were stored (the others already existed). The caller sends the rows sorted by
-- key, so every writer takes the key locks in one order and overlapping concurrent batches
-- wait on each other instead of deadlocking.
-- Events without properties (or without usage-splitting keys) arrive as NULL and are stored as {}.
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::timestamptz[], $6::jsonb[],
                         $7::numeric[], $8::numeric[], $9::text[], $10::text[])
        AS i(customer_id, subscription_id, transaction_id, billable_metric_id, ts, properties, value,
             precise_total_amount_cents, dims, timezone)
), inserted AS (
    INSERT INTO billing.events AS e (customer_id, subscription_id, transaction_id, billable_metric_id, "timestamp",
                                     local_day, properties, value, precise_total_amount_cents, dims)
    SELECT customer_id, subscription_id, transaction_id, billable_metric_id, ts, (ts AT TIME ZONE timezone)::date,
           coalesce(properties, '{}'), value, precise_total_amount_cents, coalesce(dims::jsonb, '{}')
    FROM input
    ON CONFLICT ON CONSTRAINT events_idempotency_key DO NOTHING
    RETURNING e.id, e.customer_id, e.subscription_id, e.transaction_id, e.billable_metric_id, e."timestamp",
              e.local_day, e.value, e.dims
), rolled_up AS (
    INSERT INTO billing.usage_rollups AS r (customer_id, subscription_id, billable_metric_id, day, dims, slot,
                                            events_count, value_sum, value_max, latest_at, latest_event_id, latest_value)
    SELECT n.customer_id, n.subscription_id, n.billable_metric_id, n.local_day, n.dims,
           (pg_catalog.pg_backend_pid() % 8)::smallint,
           count(*), coalesce(sum(n.value), 0), max(n.value),
           max(n."timestamp"),
           (array_agg(n.id ORDER BY n."timestamp" DESC, n.id DESC))[1],
           (array_agg(n.value ORDER BY n."timestamp" DESC, n.id DESC))[1]
    FROM inserted n
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (customer_id, subscription_id, billable_metric_id, day, dims, slot) DO UPDATE SET
        events_count = r.events_count + excluded.events_count,
        value_sum = r.value_sum + excluded.value_sum,
        value_max = greatest(r.value_max, excluded.value_max),
        latest_at = greatest(r.latest_at, excluded.latest_at),
        latest_event_id = CASE WHEN (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
                               THEN excluded.latest_event_id ELSE r.latest_event_id END,
        latest_value = CASE WHEN (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
                            THEN excluded.latest_value ELSE r.latest_value END
)
SELECT subscription_id, transaction_id FROM inserted
