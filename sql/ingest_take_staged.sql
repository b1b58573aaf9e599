-- Takes up to $1 rows out of the COPY staging table.
DELETE FROM billing.event_staging
WHERE ctid = ANY (ARRAY(SELECT ctid FROM billing.event_staging LIMIT $1 FOR UPDATE SKIP LOCKED))
RETURNING external_subscription_id, code, transaction_id, "timestamp", properties, precise_total_amount_cents
