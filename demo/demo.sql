-- pg_billing demo: the pricing sheet of an AI platform, priced for three customers.
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_billing CASCADE;
CREATE EXTENSION pg_billing;

\echo
\echo '== The pricing sheet: $99/month platform fee, tokens in graduated tiers, image packs, payments at 2.9 % + 0.30'
CREATE TEMP TABLE pricing_sheet (charge text PRIMARY KEY, price billing.price NOT NULL);
INSERT INTO pricing_sheet VALUES
  ('platform fee', '{"charge_model":"standard","properties":{"amount":"99"}}'),
  ('tokens', '{"charge_model":"graduated","properties":{"graduated_ranges":[
      {"from_value":0,"to_value":1000000,"per_unit_amount":"0.002","flat_amount":"0"},
      {"from_value":1000001,"to_value":10000000,"per_unit_amount":"0.0015","flat_amount":"0"},
      {"from_value":10000001,"to_value":null,"per_unit_amount":"0.001","flat_amount":"0"}]}}'),
  ('image packs', '{"charge_model":"package","properties":{"amount":"10","package_size":100,"free_units":20}}'),
  ('payments', '{"charge_model":"percentage","properties":{"rate":"2.9","fixed_amount":"0.30"}}');
SELECT charge, price::jsonb -> 'charge_model' AS model, price::jsonb -> 'properties' AS properties
FROM pricing_sheet ORDER BY charge;

\echo '== A month of usage for three customers'
CREATE TEMP TABLE usage (customer text, charge text, event_values numeric[]);
INSERT INTO usage VALUES
  ('starter-labs', 'platform fee', ARRAY[1]),
  ('starter-labs', 'tokens', ARRAY[120000, 80000]),
  ('starter-labs', 'image packs', ARRAY[15]),
  ('starter-labs', 'payments', ARRAY[25.00, 40.00]),
  ('growth-ai', 'platform fee', ARRAY[1]),
  ('growth-ai', 'tokens', ARRAY[900000, 1100000, 500000]),
  ('growth-ai', 'image packs', ARRAY[200, 140]),
  ('growth-ai', 'payments', ARRAY[120.00, 80.00, 310.50, 99.99]),
  ('scale-corp', 'platform fee', ARRAY[1]),
  ('scale-corp', 'tokens', ARRAY[9000000, 16000000]),
  ('scale-corp', 'image packs', ARRAY[2500]),
  ('scale-corp', 'payments', ARRAY[1500.00, 2200.00, 980.25]);

SELECT customer,
       sum(units) FILTER (WHERE charge = 'tokens') AS tokens,
       billing.round_money(sum(amount) FILTER (WHERE charge = 'platform fee'), 'USD') AS platform,
       billing.round_money(sum(amount) FILTER (WHERE charge = 'tokens'), 'USD') AS tokens_usd,
       billing.round_money(sum(amount) FILTER (WHERE charge = 'image packs'), 'USD') AS images_usd,
       billing.round_money(sum(amount) FILTER (WHERE charge = 'payments'), 'USD') AS payments_usd,
       sum(billing.round_money(amount, 'USD')) AS total_usd
FROM (SELECT u.customer, u.charge, (SELECT sum(v) FROM unnest(u.event_values) v) AS units,
             billing.amount(p.price, u.event_values) AS amount
      FROM usage u JOIN pricing_sheet p USING (charge)) priced
GROUP BY customer ORDER BY total_usd;

\echo '== Token tiers behind growth-ai''s bill (billing.amount_details)'
SELECT t.from_value, t.to_value, t.units, t.per_unit_amount, t.per_unit_total_amount AS amount
FROM usage u JOIN pricing_sheet p USING (charge),
     jsonb_to_recordset(billing.amount_details(p.price, u.event_values) -> 'graduated_ranges')
       AS t(from_value numeric, to_value numeric, units numeric, per_unit_amount numeric, per_unit_total_amount numeric)
WHERE u.customer = 'growth-ai' AND u.charge = 'tokens' ORDER BY t.from_value;

\echo '== Payments charge behind scale-corp''s bill'
SELECT d ->> 'events' AS events, d ->> 'units' AS volume, d ->> 'per_unit_total_amount' AS percent_part,
       d ->> 'fixed_fee_total_amount' AS fixed_part, d ->> 'amount' AS amount
FROM usage u JOIN pricing_sheet p USING (charge), billing.amount_details(p.price, u.event_values) d
WHERE u.customer = 'scale-corp' AND u.charge = 'payments';

\echo '== The same figures with one aggregate: billing.priced_sum(value, price) ... GROUP BY'
SELECT u.customer, billing.round_money(billing.priced_sum(v, p.price), 'USD') AS tokens_usd
FROM usage u JOIN pricing_sheet p USING (charge), unnest(u.event_values) v
WHERE u.charge = 'tokens' GROUP BY u.customer ORDER BY tokens_usd;
