-- The billable metrics a batch refers to ($1: distinct codes).
SELECT m.code, m.id, m.aggregation::text, m.field_name
FROM unnest($1::text[]) AS wanted(code)
JOIN billing.billable_metrics m ON m.code = wanted.code
