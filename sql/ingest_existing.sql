-- For keys that were already stored: does the stored event carry the same payload?
SELECT i.ord,
       e.billable_metric_id = i.billable_metric_id AND e.properties = coalesce(i.properties, '{}')
       AND e.precise_total_amount_cents IS NOT DISTINCT FROM i.precise_total_amount_cents
       AND (NOT i.timestamp_given OR e."timestamp" = i.ts) AS same_payload
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::timestamptz[], $6::jsonb[], $7::numeric[],
            $8::boolean[], $9::integer[])
     AS i(customer_id, subscription_id, transaction_id, billable_metric_id, ts, properties, precise_total_amount_cents,
          timestamp_given, ord)
JOIN billing.events e ON e.customer_id = i.customer_id AND e.subscription_id = i.subscription_id
                     AND e.transaction_id = i.transaction_id
