-- Takes up to $1 rows out of the COPY staging table, as one ingest_events batch (NULL when
-- the table is empty).
WITH taken AS (
    DELETE FROM billing.event_staging
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM billing.event_staging LIMIT $1 FOR UPDATE SKIP LOCKED))
    RETURNING *
)
SELECT jsonb_agg(jsonb_build_object('external_subscription_id', external_subscription_id, 'code', code,
                                    'transaction_id', transaction_id, 'timestamp', "timestamp",
                                    'properties', properties,
                                    'precise_total_amount_cents', precise_total_amount_cents))
FROM taken
