-- Per charge of the batch's plan versions ($1), the property keys that split its usage (its
-- pricing group keys and its filters' keys), and whether it is paid in advance.
SELECT c.plan_version_id, c.billable_metric_id,
       c.pricing_group_keys || ARRAY(SELECT jsonb_object_keys(f."values") FROM billing.charge_filters f WHERE f.charge_id = c.id),
       c.pay_in_advance
FROM billing.charges c WHERE c.plan_version_id = ANY ($1)
