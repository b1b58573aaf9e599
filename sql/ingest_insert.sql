-- Stores new events; returns the id and local day of those it stored (keys that already
-- existed are skipped). The caller sends the rows in one global key order, so
-- overlapping concurrent batches wait on each other instead of deadlocking, with ids ($11)
-- it took from the id sequence in the order the events were sent. Events without
-- properties (or without usage-splitting keys) arrive as NULL and are stored as {}.
INSERT INTO billing.events AS e (id, customer_id, subscription_id, transaction_id, billable_metric_id, "timestamp",
                                 local_day, properties, value, precise_total_amount_cents, dims)
OVERRIDING SYSTEM VALUE
SELECT i.id, i.customer_id, i.subscription_id, i.transaction_id, i.billable_metric_id, i.ts,
       (i.ts AT TIME ZONE i.timezone)::date, coalesce(i.properties, '{}'), i.value, i.precise_total_amount_cents,
       coalesce(i.dims::jsonb, '{}')
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::timestamptz[], $6::jsonb[],
            $7::numeric[], $8::numeric[], $9::text[], $10::text[], $11::bigint[])
     AS i(customer_id, subscription_id, transaction_id, billable_metric_id, ts, properties, value,
          precise_total_amount_cents, dims, timezone, id)
ON CONFLICT ON CONSTRAINT events_idempotency_key DO NOTHING
RETURNING e.id, e.local_day
