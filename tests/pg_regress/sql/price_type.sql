-- billing.price: validated input, canonical output, casts, and the error of each rule.
SET client_min_messages = warning;
\set VERBOSITY default

-- Canonical output: fixed key order, normalised decimals, absent optionals omitted.
SELECT '{"properties":{"amount":"0.0020"},"charge_model":"standard"}'::billing.price;
SELECT '{"charge_model":"percentage","properties":{"rate":"2.90","fixed_amount":"0.30","free_units_per_events":null}}'::billing.price;
SELECT '{"charge_model":"dynamic"}'::billing.price;

-- jsonb → price (assignment cast) and price → jsonb.
CREATE TABLE plan_prices (code text PRIMARY KEY, price billing.price NOT NULL);
INSERT INTO plan_prices VALUES
  ('tokens', '{"charge_model":"graduated","properties":{"graduated_ranges":[{"from_value":0,"to_value":1000000,"per_unit_amount":"0.002","flat_amount":"0"},{"from_value":1000001,"to_value":null,"per_unit_amount":"0.0015","flat_amount":"0"}]}}'::jsonb),
  ('seats', '{"charge_model":"package","properties":{"amount":"49","package_size":5,"free_units":0}}'::jsonb);
SELECT code, price::jsonb -> 'charge_model' AS model, price FROM plan_prices ORDER BY code;

-- Every validation rule: message, DETAIL, HINT and SQLSTATE.
SELECT '{"charge_model":'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"flat","properties":{}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"properties":{"amount":"1"}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"standard","properties":{"amount":"1"},"currency":"USD"}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"standard","properties":{}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"standard","properties":{"amount":"-0.5"}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"standard","properties":{"amount":"1e3"}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"standard","properties":{"amount":true}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"standard","properties":{"amount":"12345678901234567890123456789"}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"standard","properties":{"amount":"1","per_unit_amount":"1"}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
-- graduated: first from_value, continuity, to_value > from_value, only the last open.
SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[{"from_value":5,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[{"from_value":0,"to_value":10,"per_unit_amount":"1","flat_amount":"0"},{"from_value":12,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[{"from_value":0,"to_value":10,"per_unit_amount":"1","flat_amount":"0"},{"from_value":11,"to_value":11,"per_unit_amount":"1","flat_amount":"0"},{"from_value":12,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[{"from_value":0,"to_value":null,"per_unit_amount":"1","flat_amount":"0"},{"from_value":1,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[{"from_value":0,"to_value":10,"per_unit_amount":"1","flat_amount":"0"}]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[{"from_value":0,"to_value":null,"per_unit_amount":"1"}]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
-- volume: the next range starts at to_value + 1 or + 2, never at to_value.
SELECT '{"charge_model":"volume","properties":{"volume_ranges":[{"from_value":0,"to_value":100,"per_unit_amount":"1","flat_amount":"0"},{"from_value":100,"to_value":null,"per_unit_amount":"1","flat_amount":"0"}]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
-- package: a positive size.
SELECT '{"charge_model":"package","properties":{"amount":"10","package_size":0}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"package","properties":{"amount":"10","package_size":10,"free_units":-1}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
-- percentage: a rate, whole free events, min ≤ max.
SELECT '{"charge_model":"percentage","properties":{"fixed_amount":"1"}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"percentage","properties":{"rate":"1","free_units_per_events":2.5}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"percentage","properties":{"rate":"1","per_transaction_min_amount":"5","per_transaction_max_amount":"1"}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
-- graduated_percentage: the same range rules, with rate instead of per_unit_amount.
SELECT '{"charge_model":"graduated_percentage","properties":{"graduated_percentage_ranges":[{"from_value":0,"to_value":10,"per_unit_amount":"1","flat_amount":"0"}]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
-- dynamic takes no properties.
SELECT '{"charge_model":"dynamic","properties":{"amount":"1"}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
-- The jsonb cast validates the same way.
SELECT '{"charge_model":"standard","properties":{"amount":"x"}}'::jsonb::billing.price;
\echo :LAST_ERROR_SQLSTATE
