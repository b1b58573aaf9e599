-- The catalog rows a batch refers to: $1 external subscription ids, $2 metric codes.
SELECT 's' AS kind, s.external_id AS key, s.id, s.customer_id, s.plan_version_id, c.timezone,
       (extract(epoch FROM coalesce(s.started_at, CASE WHEN s.status <> 'pending' THEN s.subscription_at END) - '2000-01-01 UTC'::timestamptz) * 1000000)::bigint AS active_from,
       (extract(epoch FROM s.terminated_at - '2000-01-01 UTC'::timestamptz) * 1000000)::bigint AS active_until,
       NULL::text AS aggregation, NULL::text AS field_name, NULL::text[] AS dimension_keys
FROM billing.subscriptions s JOIN billing.customers c ON c.id = s.customer_id
WHERE s.external_id = ANY($1)
UNION ALL
SELECT 'm', m.code, m.id, NULL, NULL, NULL, NULL, NULL, m.aggregation, m.field_name, NULL
FROM billing.billable_metrics m WHERE m.code = ANY($2)
UNION ALL
SELECT 'd', NULL, ch.billable_metric_id, NULL, ch.plan_version_id, NULL, NULL, NULL, NULL, NULL,
       ARRAY(SELECT DISTINCT k FROM (
           SELECT unnest(ch2.pricing_group_keys) AS k FROM billing.charges ch2
            WHERE ch2.plan_version_id = ch.plan_version_id AND ch2.billable_metric_id = ch.billable_metric_id
           UNION
           SELECT jsonb_object_keys(f."values") FROM billing.charge_filters f JOIN billing.charges ch3 ON ch3.id = f.charge_id
            WHERE ch3.plan_version_id = ch.plan_version_id AND ch3.billable_metric_id = ch.billable_metric_id) keys ORDER BY k)
FROM (SELECT DISTINCT c.plan_version_id, c.billable_metric_id FROM billing.charges c
      JOIN billing.subscriptions s ON s.plan_version_id = c.plan_version_id
      WHERE s.external_id = ANY($1)) ch
