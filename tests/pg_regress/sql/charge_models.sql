-- Every charge model against amounts worked out by hand from the pricing rules; `ok` compares
-- the engine's amount with the expected one.
SET client_min_messages = warning;

-- graduated, integer style: 0–10 @10 +2, 11–20 @5 +3, 21–∞ @5 +3.
SELECT units, billing.amount(p, units) AS amount, expected, billing.amount(p, units) = expected AS ok
FROM (VALUES (0, 2), (1, 12), (10, 102), (10.5, 107.5), (11, 110), (20, 155), (21, 163), (100, 558)) v(units, expected),
     (SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[
        {"from_value":0,"to_value":10,"per_unit_amount":"10","flat_amount":"2"},
        {"from_value":11,"to_value":20,"per_unit_amount":"5","flat_amount":"3"},
        {"from_value":21,"to_value":null,"per_unit_amount":"5","flat_amount":"3"}]}}'::billing.price AS p) price
ORDER BY units;

-- graduated, adjacent style: 0–0.1 @10, 0.1–1 @5 +1, 1–∞ @2.
SELECT units, billing.amount(p, units) AS amount, expected, billing.amount(p, units) = expected AS ok
FROM (VALUES (0, 0), (0.05, 0.5), (0.1, 1), (0.5, 4), (1, 6.5), (3, 10.5)) v(units, expected),
     (SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[
        {"from_value":0,"to_value":0.1,"per_unit_amount":"10","flat_amount":"0"},
        {"from_value":0.1,"to_value":1,"per_unit_amount":"5","flat_amount":"1"},
        {"from_value":1,"to_value":null,"per_unit_amount":"2","flat_amount":"0"}]}}'::billing.price AS p) price
ORDER BY units;

-- volume: 0–100 @2 +10, 101–200 @1, 201–∞ @0.5 +50.
SELECT units, billing.amount(p, units) AS amount, expected, billing.amount(p, units) = expected AS ok
FROM (VALUES (0, 10), (1, 12), (100, 210), (100.5, 100.5), (200, 200), (201, 150.5), (300, 200)) v(units, expected),
     (SELECT '{"charge_model":"volume","properties":{"volume_ranges":[
        {"from_value":0,"to_value":100,"per_unit_amount":"2","flat_amount":"10"},
        {"from_value":101,"to_value":200,"per_unit_amount":"1","flat_amount":"0"},
        {"from_value":201,"to_value":null,"per_unit_amount":"0.5","flat_amount":"50"}]}}'::billing.price AS p) price
ORDER BY units;

-- package: 100 per started package of 10, then with 5 free units.
SELECT units, billing.amount(p, units) AS amount, expected, billing.amount(p, units) = expected AS ok
FROM (VALUES (0, 0), (1, 100), (10, 100), (10.5, 200), (121, 1300)) v(units, expected),
     (SELECT '{"charge_model":"package","properties":{"amount":"100","package_size":10,"free_units":0}}'::billing.price AS p) price
ORDER BY units;
SELECT units, billing.amount(p, units) AS amount, expected, billing.amount(p, units) = expected AS ok
FROM (VALUES (5, 0), (6, 100), (15, 100), (16, 200)) v(units, expected),
     (SELECT '{"charge_model":"package","properties":{"amount":"100","package_size":10,"free_units":5}}'::billing.price AS p) price
ORDER BY units;

-- percentage over event values.
SELECT label, billing.amount(p::billing.price, events) AS amount, expected, billing.amount(p::billing.price, events) = expected AS ok
FROM (VALUES
  ('rate 1.3 + 2 per event', '{"charge_model":"percentage","properties":{"rate":"1.3","fixed_amount":"2"}}', ARRAY[100, 200, 300, 200]::numeric[], 18.4),
  ('2 free events', '{"charge_model":"percentage","properties":{"rate":"2","fixed_amount":"1","free_units_per_events":2}}', ARRAY[100, 50, 30], 1.6),
  ('120 free units', '{"charge_model":"percentage","properties":{"rate":"2","fixed_amount":"1","free_units_per_total_aggregation":"120"}}', ARRAY[100, 50, 30], 3.2),
  ('N 3 and T 10000', '{"charge_model":"percentage","properties":{"rate":"2.99","free_units_per_events":3,"free_units_per_total_aggregation":"10000"}}', ARRAY[10, 80, 10000], 2.691),
  ('min 1.75 max 12', '{"charge_model":"percentage","properties":{"rate":"2.99","free_units_per_events":3,"free_units_per_total_aggregation":"10000","per_transaction_min_amount":"1.75","per_transaction_max_amount":"12"}}', ARRAY[10, 80, 10000], 2.691),
  ('clamped per event', '{"charge_model":"percentage","properties":{"rate":"1","fixed_amount":"0.1","per_transaction_min_amount":"0.5","per_transaction_max_amount":"3"}}', ARRAY[10, 100, 1000], 4.6),
  ('no units, no fixed fee', '{"charge_model":"percentage","properties":{"rate":"1","fixed_amount":"2"}}', ARRAY[0, 0], 0)
) v(label, p, events, expected)
ORDER BY label;

-- graduated_percentage: 0–100 at 10 % +1, 101–∞ at 5 % +2.
SELECT units, billing.amount(p, units) AS amount, expected, billing.amount(p, units) = expected AS ok
FROM (VALUES (0, 1), (50, 6), (100, 11), (150, 15.5)) v(units, expected),
     (SELECT '{"charge_model":"graduated_percentage","properties":{"graduated_percentage_ranges":[
        {"from_value":0,"to_value":100,"rate":"10","flat_amount":"1"},
        {"from_value":101,"to_value":null,"rate":"5","flat_amount":"2"}]}}'::billing.price AS p) price
ORDER BY units;

-- dynamic: the events' own amounts in minor units.
SELECT currency, billing.amount('{"charge_model":"dynamic"}', ARRAY[150, 250, 1], currency) AS amount
FROM (VALUES ('USD'), ('JPY'), ('KWD')) c(currency) ORDER BY currency;

-- standard, and the clamp of a negative fee to 0.
SELECT units, billing.amount('{"charge_model":"standard","properties":{"amount":"0.002"}}', units) AS amount
FROM (VALUES (0), (1000), (1234.5), (-500)) v(units) ORDER BY units;

-- Breakdowns.
SELECT jsonb_pretty(billing.amount_details('{"charge_model":"graduated","properties":{"graduated_ranges":[
        {"from_value":0,"to_value":10,"per_unit_amount":"10","flat_amount":"2"},
        {"from_value":11,"to_value":null,"per_unit_amount":"5","flat_amount":"3"}]}}', 11));
SELECT jsonb_pretty(billing.amount_details('{"charge_model":"package","properties":{"amount":"100","package_size":10,"free_units":5}}', 121));
SELECT jsonb_pretty(billing.amount_details('{"charge_model":"percentage","properties":{"rate":"2","fixed_amount":"1","free_units_per_events":2}}', ARRAY[100, 50, 30]));

-- Numeric inputs that cannot be priced exactly.
SELECT billing.amount('{"charge_model":"standard","properties":{"amount":"1"}}', 'NaN'::numeric);
\echo :LAST_ERROR_SQLSTATE
SELECT billing.amount('{"charge_model":"standard","properties":{"amount":"1"}}', 1e40);
\echo :LAST_ERROR_SQLSTATE
SELECT billing.amount('{"charge_model":"standard","properties":{"amount":"1"}}', ARRAY[1, NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT billing.amount('{"charge_model":"dynamic"}', ARRAY[1], 'ABC');
\echo :LAST_ERROR_SQLSTATE
