-- The stored payload of keys that already existed ($4: each key's position in the batch),
-- which the caller compares with the replay.
SELECT i.ord, e.billable_metric_id, e."timestamp", e.properties, e.precise_total_amount_cents
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::integer[]) AS i(transaction_id, subscription_id, customer_id, ord)
JOIN billing.events e ON e.transaction_id = i.transaction_id AND e.subscription_id = i.subscription_id
                        AND e.customer_id = i.customer_id
