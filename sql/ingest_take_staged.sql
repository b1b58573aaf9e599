-- Takes up to $1 rows out of the COPY staging table, each with its position (ctid). Each
-- batch starts past the previous one's last position ($2), so a load is scanned once
-- instead of once per batch through the rows already taken. Rows a concurrent COPY writes
-- behind that position stay for the next call.
DELETE FROM billing.event_staging
WHERE ctid = ANY (ARRAY(SELECT ctid FROM billing.event_staging WHERE ctid > $2::text::tid
                        LIMIT $1 FOR UPDATE SKIP LOCKED))
RETURNING ctid::text, external_subscription_id, code, transaction_id, "timestamp", properties,
          precise_total_amount_cents
