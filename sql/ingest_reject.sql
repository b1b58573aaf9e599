INSERT INTO billing.rejected_events (external_subscription_id, transaction_id, code, payload, sqlstate, reason)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::text[])
