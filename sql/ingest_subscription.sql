-- The one subscription a single event refers to ($1[1]): a direct index probe, where the
-- generic plan of the batch form would scan every subscription to match one id.
SELECT w.external_id, w.id, w.customer_id, w.plan_version_id, w.timezone, w.active_from, w.active_until
FROM billing._ingest_windows w WHERE w.external_id = ($1::text[])[1]
