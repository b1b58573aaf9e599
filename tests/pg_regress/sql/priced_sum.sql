-- billing.priced_sum prices grouped usage in any query.
SET client_min_messages = warning;
CREATE TABLE usage_rows (customer text, metric text, qty numeric);
INSERT INTO usage_rows VALUES
  ('acme', 'tokens', 600000), ('acme', 'tokens', 500000), ('acme', 'seats', 7),
  ('globex', 'tokens', 250000), ('globex', 'seats', NULL), ('initech', 'seats', 5);
CREATE TABLE metric_prices (metric text PRIMARY KEY, price billing.price);
INSERT INTO metric_prices VALUES
  ('tokens', '{"charge_model":"graduated","properties":{"graduated_ranges":[{"from_value":0,"to_value":1000000,"per_unit_amount":"0.002","flat_amount":"0"},{"from_value":1000001,"to_value":null,"per_unit_amount":"0.0015","flat_amount":"0"}]}}'),
  ('seats', '{"charge_model":"package","properties":{"amount":"49","package_size":5,"free_units":0}}');

-- acme tokens: 1,000,000 × 0.002 + 100,000 × 0.0015 = 2150; acme seats: 2 packages = 98;
-- globex tokens: 500; globex seats: no values → NULL; initech seats: 1 package = 49.
SELECT u.customer, u.metric, sum(u.qty) AS units, billing.priced_sum(u.qty, p.price) AS amount
FROM usage_rows u JOIN metric_prices p USING (metric)
GROUP BY u.customer, u.metric ORDER BY u.customer, u.metric;

-- Rounded to the invoice currency.
SELECT u.customer, billing.round_money(sum(s.amount), 'USD') AS total
FROM (SELECT customer, metric, billing.priced_sum(qty, price) AS amount
      FROM usage_rows JOIN metric_prices USING (metric) GROUP BY customer, metric) s
JOIN (SELECT DISTINCT customer FROM usage_rows) u USING (customer)
GROUP BY u.customer ORDER BY u.customer;

-- A group whose rows carry different prices is refused.
SELECT billing.priced_sum(qty, price) FROM usage_rows JOIN metric_prices USING (metric) WHERE customer = 'acme';
\echo :LAST_ERROR_SQLSTATE
-- Rows without a price are refused rather than dropped.
SELECT billing.priced_sum(q, NULL::billing.price) FROM (VALUES (1)) v(q);
\echo :LAST_ERROR_SQLSTATE
