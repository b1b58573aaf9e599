-- The billable metrics a batch refers to ($1: codes).
SELECT m.code, m.id, m.aggregation, m.field_name FROM billing.billable_metrics m WHERE m.code = ANY ($1)
