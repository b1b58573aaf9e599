-- Folds a batch's new events, already summed per day rollup, into billing.usage_rollups.
-- Rows come sorted by key, so concurrent writers lock rollup rows in one order.
INSERT INTO billing.usage_rollups AS r (customer_id, subscription_id, billable_metric_id, day, dims, slot,
                                        events_count, value_sum, value_max, latest_at, latest_event_id, latest_value)
SELECT n.customer_id, n.subscription_id, n.billable_metric_id, n.day, coalesce(n.dims::jsonb, '{}'),
       (pg_catalog.pg_backend_pid() % 8)::smallint, n.events_count, n.value_sum, n.value_max, n.latest_at,
       n.latest_event_id, n.latest_value
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::date[], $5::text[], $6::bigint[], $7::numeric[],
            $8::numeric[], $9::timestamptz[], $10::bigint[], $11::numeric[])
     AS n(customer_id, subscription_id, billable_metric_id, day, dims, events_count, value_sum, value_max,
          latest_at, latest_event_id, latest_value)
ON CONFLICT (customer_id, subscription_id, billable_metric_id, day, dims, slot) DO UPDATE SET
    events_count = r.events_count + excluded.events_count,
    value_sum = r.value_sum + excluded.value_sum,
    value_max = greatest(r.value_max, excluded.value_max),
    latest_at = greatest(r.latest_at, excluded.latest_at),
    latest_event_id = CASE WHEN (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
                           THEN excluded.latest_event_id ELSE r.latest_event_id END,
    latest_value = CASE WHEN (excluded.latest_at, excluded.latest_event_id) > (r.latest_at, r.latest_event_id)
                        THEN excluded.latest_value ELSE r.latest_value END
