-- The subscriptions a batch refers to ($1: its distinct external ids).
SELECT w.external_id, w.id, w.customer_id, w.plan_version_id, w.timezone, w.active_from, w.active_until
FROM unnest($1::text[]) AS wanted(external_id) JOIN billing._ingest_windows w USING (external_id)
