-- The stored payload of keys that already existed ($4: each key's position in the batch),
-- which the caller compares with the replay.
SELECT i.ord, e.billable_metric_id, e."timestamp", e.properties, e.precise_total_amount_cents
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::integer[]) AS i(customer_id, subscription_id, transaction_id, ord)
JOIN billing.events e ON e.customer_id = i.customer_id AND e.subscription_id = i.subscription_id
                     AND e.transaction_id = i.transaction_id
