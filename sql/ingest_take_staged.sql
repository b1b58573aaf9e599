-- Takes up to $1 rows out of the COPY staging table, as one ingest_events batch (NULL when
-- nothing is left), with the position (ctid) of the last row taken. Each batch starts past
-- the previous one's position ($2), so a load is scanned once instead of once per batch
-- through the rows already taken. Rows a concurrent COPY writes behind that position stay
-- for the next call.
WITH taken AS (
    DELETE FROM billing.event_staging
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM billing.event_staging WHERE ctid > $2::text::tid
                            LIMIT $1 FOR UPDATE SKIP LOCKED))
    RETURNING ctid AS position, *
)
SELECT jsonb_agg(jsonb_build_object('external_subscription_id', external_subscription_id, 'code', code,
                                    'transaction_id', transaction_id, 'timestamp', "timestamp",
                                    'properties', properties,
                                    'precise_total_amount_cents', precise_total_amount_cents)),
       max(position)::text
FROM taken
