-- Descriptions of every public object of pg_billing (psql \dd, \df+ and BI catalogs show them).
COMMENT ON SCHEMA billing IS 'pg_billing: usage-based billing (metering, pricing, invoicing) in SQL';

COMMENT ON TYPE billing.price IS
  'A validated price {"charge_model": ..., "properties": {...}} in Lago''s spelling: standard, graduated, volume, package, percentage, graduated_percentage or dynamic. Text output is canonical JSON.';
COMMENT ON FUNCTION billing.price_in(cstring) IS 'Text input of billing.price: parses and validates the JSON (22P02 malformed, 22023 invalid properties).';
COMMENT ON FUNCTION billing.price_out(billing.price) IS 'Text output of billing.price: canonical JSON with normalised decimals.';
COMMENT ON FUNCTION billing.price(jsonb) IS 'Validates a jsonb price into billing.price; also the jsonb → billing.price assignment cast.';
COMMENT ON FUNCTION billing.price_to_jsonb(billing.price) IS 'The canonical jsonb form of a price; also the billing.price → jsonb cast.';
COMMENT ON CAST (jsonb AS billing.price) IS 'Validates a jsonb price (assignment cast).';
COMMENT ON CAST (billing.price AS jsonb) IS 'The canonical jsonb form of a price.';

COMMENT ON FUNCTION billing.amount(billing.price, numeric) IS
  'Exact, unrounded amount of a price for a number of units (negative amounts clamp to 0). Event-based models see the units as one event; dynamic reads them as cents.';
COMMENT ON FUNCTION billing.amount(billing.price, numeric[], text) IS
  'Exact, unrounded amount of a price for the period''s event values in timestamp order (units = their sum): percentage free units, fixed fees and per-transaction bounds apply per event; dynamic sums precise_total_amount_cents in the currency''s minor units.';
COMMENT ON FUNCTION billing.amount_details(billing.price, numeric) IS
  'The breakdown behind billing.amount: per tier from_value, to_value, units, per-unit total, flat and total; package and percentage free and paid units and events.';
COMMENT ON FUNCTION billing.amount_details(billing.price, numeric[], text) IS
  'The breakdown behind billing.amount for a list of event values.';
COMMENT ON FUNCTION billing.round_money(numeric, text) IS
  'Rounds half-up (away from zero) to the ISO 4217 currency''s minor units: 2 for USD/EUR, 0 for JPY, 3 for KWD/BHD.';
COMMENT ON FUNCTION billing.currency_minor_units(text) IS 'Number of minor-unit digits of an ISO 4217 currency (22023 for an unknown code).';
COMMENT ON AGGREGATE billing.priced_sum(numeric, billing.price) IS
  'billing.amount(price, sum(value)) per group; NULL values are skipped, a group whose rows carry different prices is an error (22023).';
COMMENT ON FUNCTION billing._priced_sum_step(internal, numeric, billing.price) IS 'Private: transition function of billing.priced_sum.';
COMMENT ON FUNCTION billing._priced_sum_final(internal) IS 'Private: final function of billing.priced_sum.';
