-- Descriptions of every public object of pg_billing (psql \dd, \df+ and BI catalogs show them).
COMMENT ON SCHEMA billing IS 'pg_billing: usage-based billing (metering, pricing, invoicing) in SQL';

COMMENT ON TYPE billing.price IS
  'A validated price {"charge_model": ..., "properties": {...}} in Lago''s spelling: standard, graduated, volume, package, percentage, graduated_percentage or dynamic; the argument type of the pricing functions. Text output is canonical JSON; pg_billing''s tables store that JSON as jsonb, never this type.';
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

-- Catalog
COMMENT ON TYPE billing.invoice_numbering IS 'How a billing entity numbers invoices: per_customer or per_entity.';
COMMENT ON TYPE billing.aggregation IS 'How a billable metric aggregates event values: count, sum, max, unique_count, latest or weighted_sum.';
COMMENT ON TYPE billing.rounding_function IS 'How a billable metric rounds its aggregated units before pricing: round, ceil or floor.';
COMMENT ON TYPE billing.billing_interval IS 'The length of a plan''s billing period: weekly, monthly, quarterly, semiannual or yearly.';
COMMENT ON TYPE billing.billing_time IS 'Where a subscription''s periods start: calendar (the first day of each period) or anniversary (the subscription''s start day).';
COMMENT ON TYPE billing.subscription_status IS 'A subscription''s state: pending (starts later), active or terminated.';
COMMENT ON COLUMN billing.charges.price IS 'The charge''s price as canonical JSON (what billing.price prints): {"charge_model": ..., "properties": {...}}, checked valid and canonical on every write.';
COMMENT ON COLUMN billing.charge_filters.price IS 'The filter''s price as canonical JSON, with the charge''s model and the filter''s properties, checked like billing.charges.price.';
COMMENT ON TABLE billing.billing_entities IS 'Issuers of invoices: name, address, tax id, default currency and time zone, invoice prefix and numbering, grace period and payment term. One ''default'' entity exists after CREATE EXTENSION.';
COMMENT ON TABLE billing.customers IS 'Customers: external id, currency (ISO 4217), time zone (IANA), billing entity, address, tax id, metadata.';
COMMENT ON TABLE billing.billable_metrics IS 'What is measured: aggregation (count, sum, max, unique_count, latest, weighted_sum) of an event property, recurring or metered, rounding, filters.';
COMMENT ON TABLE billing.plans IS 'Plans by code; their terms live in billing.plan_versions.';
COMMENT ON TABLE billing.plan_versions IS 'One version of a plan''s terms: interval, base amount, currency, pay in advance, trial, minimum commitment, usage thresholds. Changes create a new version.';
COMMENT ON TABLE billing.charges IS 'A billable metric priced on a plan version: price, pay in advance, prorated, invoiceable, minimum amount, pricing group keys.';
COMMENT ON TABLE billing.charge_filters IS 'Per-filter prices of a charge: events whose properties match the filter''s values use its price.';
COMMENT ON TABLE billing.subscriptions IS 'A customer on a plan version: external id (the key events carry), status, dates, calendar or anniversary billing.';
COMMENT ON TABLE billing.customer_directory IS 'Which customer each external customer id names: where that id is unique across all customers (a reference table on Citus). Written by billing.create_customer.';
COMMENT ON TABLE billing.subscription_directory IS 'Which customer and subscription each external subscription id names, with the time zone and active window ingestion checks events against: where that id is unique, and how an event is routed to its customer (a reference table on Citus). Kept in step by billing.create_subscription and billing.terminate_subscription.';
COMMENT ON FUNCTION billing.create_billing_entity(text, text, text, text, text, text, integer, integer, jsonb, text) IS 'Creates a billing entity (issuer of invoices).';
COMMENT ON FUNCTION billing.create_customer(text, text, text, text, text, text, jsonb, text, jsonb) IS 'Creates a customer; currency and time zone default to the billing entity''s.';
COMMENT ON FUNCTION billing.create_billable_metric(text, text, text, text, boolean, text, integer, jsonb) IS 'Creates a billable metric, validating aggregation, field, recurrence, rounding and filters.';
COMMENT ON FUNCTION billing.create_plan(text, text, text, numeric, text, jsonb, boolean, integer, numeric, jsonb) IS 'Creates a plan, or a new version of it when the code exists, with its charges and their filters.';
COMMENT ON FUNCTION billing.create_subscription(text, text, text, timestamptz, text, integer) IS 'Subscribes a customer to a plan (its latest version unless one is named); pending until subscription_at.';
COMMENT ON FUNCTION billing.activate_subscriptions(timestamptz) IS 'Marks pending subscriptions whose start has come as active and applies the plan changes whose instant has come; returns how many subscriptions it activated.';
COMMENT ON FUNCTION billing.terminate_subscription(text, timestamptz) IS 'Terminates a subscription; later events for it are rejected.';

-- Metering
COMMENT ON TABLE billing.events IS 'Stored usage events, exactly once per (subscription, transaction_id).';
COMMENT ON TABLE billing.usage_rollups IS 'Per customer-local day partial aggregates of events, kept current at ingestion so current usage does not scan events.';
COMMENT ON TABLE billing.rejected_events IS 'Events refused at ingestion, with their payload, SQLSTATE and reason: nothing sent is lost.';
COMMENT ON TABLE billing.event_staging IS 'COPY target for bulk loads; billing.ingest_staged() validates, deduplicates and moves its rows.';
COMMENT ON TABLE billing.event_intake IS 'COPY (or INSERT) target that validates, deduplicates and stores events while the COPY runs (it keeps no rows); billing.last_intake() gives the counts.';
COMMENT ON FUNCTION billing._intake_start() IS 'Private: statement trigger starting a load into billing.event_intake.';
COMMENT ON FUNCTION billing._intake_row() IS 'Private: row trigger taking a row sent to billing.event_intake (which keeps none) and ingesting every 10,000.';
COMMENT ON FUNCTION billing._intake_end() IS 'Private: statement trigger ingesting the rows left when a load into billing.event_intake ends.';
COMMENT ON FUNCTION billing.last_intake() IS 'Counts (accepted, duplicates, conflicts, rejected) of the session''s last COPY or INSERT into billing.event_intake.';
COMMENT ON FUNCTION billing._stored_day(timestamptz, integer) IS 'Private: ts''s UTC day plus margin; raw reads bound events'' stored local day with it (any time zone is within two days).';
COMMENT ON FUNCTION billing._catalog_changed() IS 'Private: statement trigger on the catalog tables; queues the invalidation that empties every backend''s cached ingestion catalog once the change commits.';
COMMENT ON FUNCTION billing.ingest_event(text, text, text, timestamptz, jsonb, numeric) IS 'Records one event in the caller''s transaction; returns accepted, duplicate or conflict; raises on invalid input and writes nothing.';
COMMENT ON FUNCTION billing.ingest_events(jsonb) IS 'Records a JSON array of events; one (index, transaction_id, status, reason) row per event. Rejected events go to billing.rejected_events.';
COMMENT ON FUNCTION billing.direct_write_status() IS 'Whether ingestion stores batches in billing.events directly (as COPY does) in this session, and if not, why (the setting, the isolation level, a privilege, or a change to the table''s shape).';
COMMENT ON FUNCTION billing.ingest_staged(integer) IS 'Validates, deduplicates and moves the rows of billing.event_staging; returns accepted, duplicate, conflict and rejected counts.';

-- Usage
COMMENT ON FUNCTION billing.period_bounds(text, text, date, timestamptz, text) IS 'The billing period containing as_of for an interval and billing time (calendar or anniversary from anchor), in a time zone.';
COMMENT ON TYPE billing.usage_line IS 'One line of usage: a charge, filter and pricing group of a subscription in a window, with units, events and the exact amount.';
COMMENT ON FUNCTION billing.usage(text, timestamptz, timestamptz) IS 'Usage of a subscription in a window, per charge, filter and group: units, events and amount.';
COMMENT ON FUNCTION billing.current_usage(text) IS 'Usage of a subscription''s open billing period, per charge, filter and group.';
COMMENT ON FUNCTION billing.distribute(integer) IS 'On a Citus coordinator: distributes pg_billing by customer in one call (customers, subscriptions, events, usage_rollups, invoices, fees, billed_windows, billing_failures, outbox, customer_taxes, fee_taxes, applied_coupons, invoice_coupons, invoice_verifications, applied_usage_thresholds, subscription_fixed_charge_units and the credit note tables distributed and colocated, shard_count shards each, default citus.shard_count; the catalog, the taxes and their attachments, the coupons and their limits, the add-ons, the usage thresholds, the fixed charges, the directories and invoice_sequences as reference tables; rejected_events and the COPY tables local). Returns each table with its placement. 55000 without Citus or when already distributed.';
COMMENT ON SCHEMA billing_bi IS 'pg_billing for BI tools: views with plain typed columns and stable names; billing_reader may read them and nothing else.';
COMMENT ON VIEW billing_bi.customers IS 'One row per customer: external id, name, email, currency, time zone, billing entity, creation time.';
COMMENT ON VIEW billing_bi.subscriptions IS 'One row per subscription: its customer, plan code and version, interval, plan amount and currency, status, billing time and dates.';
COMMENT ON VIEW billing_bi.usage_by_day IS 'Usage per customer-local day, subscription and metric, from the day rollups: events, sum and maximum of the values.';
COMMENT ON VIEW billing_bi.ingestion_health IS 'What ingestion did with the events sent, per UTC day of ingestion: stored events per metric (outcome accepted) and rejects per metric code, SQLSTATE and reason (outcome rejected). Duplicates are not stored again and not counted.';
COMMENT ON FUNCTION billing.schedule(text) IS 'Creates (or replaces) pg_billing''s pg_cron jobs on the cron schedule billing_cron (default ''5 * * * *''): the billing run, the activation of pending subscriptions and the finalization of drafts whose grace period is over. Needs pg_cron in this database (55000 otherwise; 22023 for an invalid schedule). Returns the jobs.';
COMMENT ON FUNCTION billing.unschedule() IS 'Removes pg_billing''s pg_cron jobs; returns how many it removed. Needs pg_cron in this database (55000 otherwise).';
COMMENT ON VIEW billing_bi.invoices IS 'One row per invoice (draft, finalized or voided): number, customer, subscription, plan, type, status, payment status, currency, dates, charges period and totals.';
COMMENT ON VIEW billing_bi.invoice_lines IS 'One row per invoice line (invoiceable fee): invoice, fee type, description, metric, charge model, filter, group, units, events, unit amount, exact and rounded amount, period.';
COMMENT ON VIEW billing_bi.revenue_by_month IS 'Finalized invoices per month of issuing date and currency: count, fees, taxes and totals (voided invoices excluded).';
COMMENT ON VIEW billing_bi.revenue_by_customer IS 'Finalized invoices per month of issuing date, customer and currency: count, fees and totals.';
COMMENT ON VIEW billing_bi.revenue_by_plan IS 'Invoiced fees of finalized invoices per month of issuing date, plan and currency: base fees, usage (and minimums) and both together.';
COMMENT ON VIEW billing_bi.revenue_by_metric IS 'Invoiced usage fees of finalized invoices per month of issuing date, metric and currency: units, events, amount.';
COMMENT ON VIEW billing_bi.mrr IS 'Monthly recurring revenue of active subscriptions per plan and currency: the plan amounts brought to a month.';
COMMENT ON VIEW billing_bi.draft_invoices IS 'Drafts not yet finalized: customer, subscription, issuing date, when the grace period ends, the total as last refreshed.';

-- Invoicing
COMMENT ON TYPE billing.invoice_type IS 'What an invoice bills: subscription (a subscription''s periods), one_off (one-off items), progressive_billing (usage past a threshold), pay_in_advance (a day''s events of charges paid in advance).';
COMMENT ON TYPE billing.invoice_status IS 'An invoice''s lifecycle: draft (recomputable), finalized (numbered, immutable), voided.';
COMMENT ON TYPE billing.payment_status IS 'What the application reports of an invoice''s payment: pending, succeeded, failed.';
COMMENT ON TYPE billing.fee_type IS 'What a fee bills: subscription (base fee), charge (usage, in arrears or paid in advance), charge_minimum (a charge''s minimum spend true-up), commitment (the plan''s minimum commitment true-up), adjustment (late usage of a finalized period), add_on (a one-off item), fixed_charge (units of an add-on on a plan).';
COMMENT ON TABLE billing.invoices IS 'One invoice per subscription and billing instant (billing_at: a period''s close, the start, a trial''s end or the termination), unique on (customer_id, subscription_id, billing_at); totals are sums of rounded fees. Finalized and voided invoices are immutable but for payment_status and voiding.';
COMMENT ON TABLE billing.fees IS 'What an invoice bills, one row per fee: exact amount (precise_amount) and amount rounded half-up to the currency; fee_key is unique per subscription, so nothing is billed twice. invoiceable = false fees are kept but not invoiced.';
COMMENT ON TABLE billing.billed_windows IS 'The usage windows each invoice computed and the events they held just before: how the billing run finds events that arrived for an already finalized period.';
COMMENT ON TABLE billing.invoice_sequences IS 'The last invoice number given per billing entity and month (entities numbering per_entity); locked while a number is taken, so numbers are gapless.';
COMMENT ON TABLE billing.billing_failures IS 'Subscriptions the billing run could not bill, with as_of, SQLSTATE, message and detail; a later successful billing of the subscription removes its rows.';
COMMENT ON TABLE billing.outbox IS 'Billing events for applications (invoice.created, invoice.finalized, invoice.voided, invoice.payment_status_updated), written in the transaction of the change and announced by pg_notify(''pg_billing'', id). Consume with DELETE ... RETURNING.';
COMMENT ON PROCEDURE billing.run_billing(timestamptz) IS 'The billing run: activates pending subscriptions, bills every subscription due as of as_of (one transaction each; a failure is recorded in billing.billing_failures and the run goes on), then finalizes drafts whose grace period is over. Call it outside a transaction block. A second run while one is in progress returns at once.';
COMMENT ON PROCEDURE billing.finalize_drafts(timestamptz) IS 'Refreshes and finalizes every draft whose billing entity''s grace period is over as of as_of, one transaction each.';
COMMENT ON FUNCTION billing.bill_subscription(text, timestamptz) IS 'Bills one subscription up to as_of in the caller''s transaction (what the billing run does for each); returns the invoices created. 23503 for an unknown subscription.';
COMMENT ON FUNCTION billing.refresh_invoice(bigint) IS 'Recomputes a draft''s fees and totals from the usage as it is now (late events within the period land there). 55000 unless the invoice is a draft.';
COMMENT ON FUNCTION billing.finalize_invoice(bigint) IS 'Refreshes a draft, then finalizes it: number, due date, immutable from then on. 55000 unless the invoice is a draft.';
COMMENT ON FUNCTION billing.void_invoice(bigint) IS 'Voids a finalized invoice that is not paid; its fees stay billed (never billed again). 55000 otherwise.';
COMMENT ON FUNCTION billing.set_payment_status(bigint, text) IS 'Records a finalized invoice''s payment status: pending, succeeded or failed. 22023 for another word, 55000 unless finalized.';
COMMENT ON FUNCTION billing.invoice_document(bigint) IS 'Everything needed to render or send an invoice, as one JSON document (issuer, customer, subscription, periods, lines with tier details, totals, number, dates; shape in docs/reference/invoicing.md).';
COMMENT ON FUNCTION billing._invoice_immutable() IS 'Private: trigger refusing changes to finalized and voided invoices (55000), but for payment_status and voiding.';
COMMENT ON FUNCTION billing._fee_immutable() IS 'Private: trigger refusing changes to the fees of finalized and voided invoices, and to their taxes (55000).';

COMMENT ON TABLE billing.taxes IS 'Taxes: code, name, rate in percent (0 to 100) and description. A rate change applies to invoices whose totals are computed afterwards, never to finalized ones.';
COMMENT ON TABLE billing.billing_entity_taxes IS 'The default taxes of a billing entity''s customers (the last in precedence: charge, plan, customer, billing entity).';
COMMENT ON TABLE billing.plan_taxes IS 'The taxes of a plan''s fees (base, usage without charge taxes, minimums and commitment), before the customer''s and the entity''s.';
COMMENT ON TABLE billing.charge_taxes IS 'The taxes of a charge''s fees, first in precedence.';
COMMENT ON TABLE billing.customer_taxes IS 'The taxes of a customer''s fees when neither their charge nor their plan has taxes.';
COMMENT ON TABLE billing.fee_taxes IS 'Each tax on each invoiced fee, with the tax''s code, name and rate when the invoice''s totals were computed; base_amount is the rounded fee, precise_amount = base_amount x rate / 100 exactly. The invoice rounds each tax''s sum once. Immutable once the invoice is finalized.';
COMMENT ON FUNCTION billing.create_tax(text, text, numeric, text) IS 'Creates a tax: code (unique), name, rate in percent (0 to 100; 22023 otherwise), description. 23505 if the code exists.';
COMMENT ON FUNCTION billing.update_tax(text, numeric, text, text) IS 'Changes a tax''s rate, name or description (what is NULL stays). Invoices whose totals are computed afterwards use it: new invoices, drafts refreshed or finalized; never finalized ones. 23503 unknown tax, 22023 bad rate.';
COMMENT ON FUNCTION billing.set_taxes(text, text, text[]) IS 'Sets the taxes of a billing_entity (by code), customer (by external id), plan (by code), charge (by id) or add_on (by code), replacing those it had (an empty array removes them); returns the codes now set. 22023 unknown target kind, 23503 unknown target or tax.';
COMMENT ON FUNCTION billing._tax(text) IS 'Private: the tax with this code, or 23503.';
COMMENT ON FUNCTION billing._check_tax_rate(numeric) IS 'Private: the rate if it is a percentage from 0 to 100, else 22023.';
COMMENT ON FUNCTION billing._tax_fees(bigint, bigint) IS 'Private: taxes a draft''s invoiced fees anew (charge taxes, else the first set of plan, customer and billing entity) and returns the invoice''s tax total, each tax''s exact sum rounded once.';
COMMENT ON TYPE billing.coupon_type IS 'fixed_amount (an amount in a currency) or percentage (a rate in percent).';
COMMENT ON TYPE billing.coupon_frequency IS 'once (one invoice; a fixed amount carries its remainder to the next ones), recurring (frequency_duration invoices) or forever.';
COMMENT ON TYPE billing.applied_coupon_status IS 'active or terminated (used up, expired in its duration, or terminated by billing.terminate_coupon).';
COMMENT ON TABLE billing.coupons IS 'Coupons: code, name, fixed_amount (amount, currency) or percentage (percentage_rate), frequency once / recurring (frequency_duration invoices) / forever, expires_at (no longer applicable to customers after it).';
COMMENT ON TABLE billing.coupon_plans IS 'The plans a coupon is limited to: it covers the invoices of subscriptions to them.';
COMMENT ON TABLE billing.coupon_billable_metrics IS 'The billable metrics a coupon is limited to: it covers the fees of charges on them.';
COMMENT ON TABLE billing.applied_coupons IS 'Coupons applied to customers, with what is left: amount_remaining of a once fixed_amount coupon, frequency_duration_remaining of a recurring one; status active or terminated.';
COMMENT ON TABLE billing.invoice_coupons IS 'What each coupon took off each finalized invoice, rounded to the currency; the fees carry its spread in precise_coupons_amount.';
COMMENT ON COLUMN billing.fees.precise_coupons_amount IS 'The fee''s share of the invoice''s coupons, pro rata to what was left of the fee, with 5 decimals; set at finalization. Taxes apply to amount - precise_coupons_amount.';
COMMENT ON FUNCTION billing.create_coupon(text, text, text, numeric, text, numeric, text, integer, timestamptz, text[], text[]) IS 'Creates a coupon: fixed_amount (amount, currency) or percentage (percentage_rate), frequency once / recurring (frequency_duration) / forever, optional expiry, limited to plans or to billable metrics (not both). 22023 bad input, 23503 unknown plan or metric, 23505 existing code.';
COMMENT ON FUNCTION billing.apply_coupon(text, text, numeric) IS 'Applies a coupon to a customer (amount overrides a fixed coupon''s); it comes off the customer''s invoices at finalization. 23503 unknown customer or coupon, 55000 expired coupon, 23505 already active for the customer, 22023 currency or amount mismatch.';
COMMENT ON FUNCTION billing.terminate_coupon(text, text) IS 'Ends a customer''s active application of a coupon. 23503 when the customer has none.';
COMMENT ON FUNCTION billing._coupon(text) IS 'Private: the coupon with this code, or 23503.';
COMMENT ON FUNCTION billing._apply_coupons(billing.invoices) IS 'Private: takes the customer''s active coupons off an invoice being finalized (metric-limited, then plan-limited, then the rest, by application order): records each amount, spreads it over the covered fees and uses the coupons up.';
COMMENT ON FUNCTION billing.preview_invoice(text, timestamptz, text) IS 'The invoice document the subscription would get at the end of the billing period holding as_of, from the usage so far, finalized as the run would (coupons, taxes), optionally under another plan''s current version; computed by the billing code and rolled back, writing nothing. status is preview; no id or number. NULL when nothing is left to invoice. 23503 unknown subscription or plan, 22023 a plan in another currency.';
COMMENT ON VIEW billing_bi.taxes_collected IS 'Taxes of finalized invoices per month of issuing date, currency and tax (code, name, rate as invoiced): invoices, taxed base and amount (each invoice''s tax rounded once).';
COMMENT ON VIEW billing_bi.coupons_redeemed IS 'What coupons took off finalized invoices per month of issuing date, currency and coupon: invoices, customers, amount.';
COMMENT ON VIEW billing_bi.invoices_to_verify IS 'Finalized invoices never verified by billing.verify_invoice (verification unverified), or whose latest verification found drifting lines or inconsistent totals (verification drift).';
COMMENT ON TABLE billing.invoice_verifications IS 'Each billing.verify_invoice of an invoice: when, how many usage lines drift, whether the totals are consistent, and the whole report.';
COMMENT ON FUNCTION billing.verify_invoice(bigint) IS 'Recomputes a finalized invoice''s usage lines from the raw events on the plan version they were billed on, compares them with everything billed for them (fee and later adjustments), checks the totals'' arithmetic, records and returns the report (drifting_lines empty and totals_consistent true when all is right). 23503 unknown invoice, 55000 not finalized.';
COMMENT ON TABLE billing.add_ons IS 'Add-ons: one-off items with a default price (amount in currency) for one-off invoices.';
COMMENT ON TABLE billing.add_on_taxes IS 'The taxes of an add-on''s items when the item names none (before the customer''s and the billing entity''s).';
COMMENT ON COLUMN billing.fees.add_on_id IS 'The add-on a one-off item bills (NULL otherwise).';
COMMENT ON COLUMN billing.fees.tax_ids IS 'Taxes named for this fee (a one-off item''s or its add-on''s), which replace the precedence of charge, plan, customer and billing entity; NULL: by precedence.';
COMMENT ON FUNCTION billing.create_add_on(text, text, numeric, text, text) IS 'Creates an add-on: code (unique), name, default amount (0 or more, with the currency''s decimals), currency, description. 22023 bad input, 23505 existing code.';
COMMENT ON FUNCTION billing.create_one_off_invoice(text, jsonb) IS 'An invoice of one-off items for a customer, finalized at once: items [{"add_on_code"?, "description"?, "units"? (1), "unit_amount"?, "tax_codes"?}], an add-on giving the default description and unit amount; taxes: the item''s, else its add-on''s, else the customer''s, else the entity''s. 23503 unknown customer, add-on or tax; 22023 bad items or an add-on in another currency.';
COMMENT ON TYPE billing.credit_note_reason IS 'Why a credit note was issued: duplicated_charge, product_unsatisfactory, order_change, order_cancellation, fraudulent_charge or other.';
COMMENT ON TYPE billing.credit_status IS 'available (credit left for later invoices), consumed (none left) or voided (given up).';
COMMENT ON TABLE billing.credit_notes IS 'Credit notes of finalized invoices, numbered <invoice number>-CN<n>: items total (before tax), taxes, total = refund + credit, balance_amount (credit left for later invoices), credit_status.';
COMMENT ON TABLE billing.credit_note_items IS 'What a credit note credits of each fee, before tax; never more than the fee less its coupon share less earlier credit notes.';
COMMENT ON TABLE billing.credit_note_taxes IS 'Each tax a credit note gives back: the items'' exact tax (item x rate) and the amount, rounded on the running sum of the invoice''s credit notes so that crediting everything gives back the invoice''s taxes.';
COMMENT ON TABLE billing.invoice_credit_notes IS 'The credit each invoice consumed at finalization, per credit note (oldest first, after tax, before prepaid credits).';
COMMENT ON FUNCTION billing.create_credit_note(bigint, jsonb, text, numeric, numeric, text) IS 'Credits a finalized invoice: items [{"fee_id", "amount"}] before tax, at most what is left creditable of each fee (23514); taxes in proportion; refund (a paid invoice only, 55000) + credit (default: the rest) = total. 23503 unknown invoice or fee, 22023 bad items, reason or amounts, 55000 invoice not finalized.';
COMMENT ON FUNCTION billing.void_credit_note(bigint) IS 'Gives up what is left of a credit note''s credit. 23503 unknown credit note, 55000 no credit left.';
COMMENT ON FUNCTION billing._creditable(bigint, bigint) IS 'Private: what is left creditable of each invoiced fee of an invoice (before tax).';
COMMENT ON FUNCTION billing._apply_credit_notes(billing.invoices) IS 'Private: consumes the customer''s available credit notes, oldest first, on an invoice being finalized, up to its sub-total including taxes; returns whether any was used.';
COMMENT ON VIEW billing_bi.credit_notes IS 'One row per credit note: number, invoice number, customer, reason, currency, totals before and with tax, refund, credit, the credit left and its status.';
COMMENT ON FUNCTION billing._credit_unused_days(billing.subscriptions, billing.customers, bigint, timestamptz, date) IS 'Private: once per base fee paid in advance whose plan ended early (termination, upgrade), a credit note for its unused days (plan amount / period days x days, less the coupon share, with taxes, at most what is left creditable).';
COMMENT ON TABLE billing.usage_thresholds IS 'Progressive billing: the usage thresholds of a plan version (amount; recurring or not, at most one recurring), compared by the billing run with each subscription''s lifetime usage amount.';
COMMENT ON TABLE billing.applied_usage_thresholds IS 'Each threshold level a subscription crossed, known by kind (recurring) and level (a fixed threshold''s amount, or the highest fixed amount plus a multiple of the recurring one), with the lifetime usage amount then and the progressive-billing invoice it issued.';
COMMENT ON COLUMN billing.fees.progressive_credit_amount IS 'On a subscription invoice''s usage fee: what the period''s progressive-billing invoices billed of this usage line, deducted before coupons and tax (at most the fee).';
COMMENT ON FUNCTION billing.set_usage_thresholds(text, jsonb) IS 'Replaces the usage thresholds of a plan''s current version: [{"amount", "recurring"?, "name"?}], amounts with the currency''s decimals, at most one recurring; returns how many. 23503 unknown plan, 22023 bad thresholds.';
COMMENT ON FUNCTION billing._lifetime_usage(billing.subscriptions, billing.customers, timestamptz, timestamptz) IS 'Private: a subscription''s lifetime usage amount: the usage of its subscription invoices before window_from (voided ones aside) plus the open period''s usage to as_of.';
COMMENT ON FUNCTION billing._bill_usage_thresholds(billing.subscriptions, billing.customers, timestamptz) IS 'Private: checks a subscription''s usage thresholds at as_of; if it crossed new levels, creates the progressive-billing invoice (the open period''s usage less what earlier ones billed) and records the levels; returns its id or NULL.';
COMMENT ON FUNCTION billing._credit_progressive_billing(bigint, bigint) IS 'Private: sets the progressive-billing credit of a subscription invoice''s usage fees: what the period''s progressive invoices billed of each line, at most the fee.';
COMMENT ON TABLE billing.fixed_charges IS 'Fixed charges of a plan version: units of an add-on no event measures, priced standard, graduated or volume (canonical JSON price), default units, in advance or in arrears, prorated or not.';
COMMENT ON TABLE billing.subscription_fixed_charge_units IS 'A subscription''s own units of a fixed charge from effective_at on (the latest at or before an instant is in force); before any, the plan''s default.';
COMMENT ON FUNCTION billing.add_fixed_charge(text, text, text, jsonb, numeric, boolean, boolean) IS 'Adds a fixed charge to a plan''s current version: an add-on''s units priced with standard, graduated or volume and its properties; default units, pay_in_advance, prorated. 23503 unknown plan or add-on, 22023 bad model, price, units or currency, 23505 the add-on is charged already.';
COMMENT ON FUNCTION billing.set_fixed_charge_units(text, text, numeric, timestamptz) IS 'Sets a subscription''s units of a fixed charge (by add-on code) from at on; a change during a period is prorated when the charge is. 23503 unknown subscription or fixed charge, 22023 bad units or instant.';
COMMENT ON FUNCTION billing._add_fixed_charge_fees(billing.subscriptions, billing.customers, bigint, boolean, date, date, timestamptz, timestamptz, text) IS 'Private: the fees of a subscription''s fixed charges paid in advance or in arrears for one period: units in force (or, prorated, each count weighted by its days over the period''s days), priced, with the add-on''s taxes.';
COMMENT ON FUNCTION billing._fixed_charge_units(bigint, bigint, bigint, timestamptz) IS 'Private: a subscription''s own units of a fixed charge set at or before an instant, oldest first.';
COMMENT ON FUNCTION billing._customer(text) IS 'Private: the customer with this external id, or 23503.';
COMMENT ON FUNCTION billing._plan_version(text) IS 'Private: the current (latest) version of the plan with this code, or 23503.';
COMMENT ON FUNCTION billing._invoice_taxes_amount(bigint, bigint, text) IS 'Private: an invoice''s tax total from its fees'' taxes, each tax''s exact sum rounded once to the currency.';
COMMENT ON TYPE billing.plan_change_kind IS 'A plan change: upgrade (the new plan costs at least as much per year; effective at once) or downgrade (effective at the end of the current period).';
COMMENT ON TABLE billing.plan_changes IS 'Each change of a subscription''s plan: from effective_at on it is billed on to_plan_version_id; pending until that instant (billing.cancel_plan_change removes it).';
COMMENT ON COLUMN billing.subscription_directory.plan_version_ids IS 'Every plan version the subscription is billed on (past, current and pending): ingestion keeps the event properties any of them splits usage by.';
COMMENT ON FUNCTION billing.change_plan(text, text, timestamptz) IS 'Moves a subscription to another plan''s current version: an upgrade (yearly-equivalent amount at least the old one''s) at `at`, billed at once when it has happened, with a credit note for an in-advance fee''s unused days; a downgrade at the end of the current period, pending until then. Replaces a pending change. 23503 unknown subscription or plan; 22023 same plan, other currency, bad instant; 55000 terminated at or before `at`, or `at` within an invoiced period or before the last change.';
COMMENT ON FUNCTION billing.cancel_plan_change(text) IS 'Cancels a subscription''s pending plan change (the latest) and returns it. 23503 unknown subscription, 55000 nothing pending or the change invoiced already.';
COMMENT ON FUNCTION billing._plan_segments(billing.subscriptions) IS 'Private: the plans of a subscription, oldest first, each with the instant it took effect and the next one''s (pending ones included).';
COMMENT ON FUNCTION billing._in_force(billing.subscriptions, timestamptz) IS 'Private: the subscription row with the plan version in force at an instant, and the instant that plan took effect.';
COMMENT ON FUNCTION billing._yearly_amount(billing.plan_versions) IS 'Private: a plan''s amount per year (weekly x 52, monthly x 12, quarterly x 4, semiannual x 2), which decides upgrade or downgrade.';
COMMENT ON FUNCTION billing._apply_plan_changes(timestamptz, bigint, bigint) IS 'Private: points subscriptions and the directory at the plan of the latest change whose instant has come (never ahead of now); returns how many changed.';
COMMENT ON FUNCTION billing._note_plan_versions(billing.subscriptions) IS 'Private: records in the directory every plan version a subscription is billed on, for ingestion.';
COMMENT ON FUNCTION billing._bill_plan_periods(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, boolean, date, timestamptz, timestamptz, timestamptz) IS 'Private: bills the periods of one plan of a subscription for the time it was in force (through the day before a change), on the invoices of their billing instants.';
COMMENT ON VIEW billing_bi.plan_changes IS 'One row per plan change: subscription, customer, upgrade or downgrade, the plans and versions on both sides, the instant it takes effect, pending or effective.';
COMMENT ON FUNCTION billing._credit_ended_plans(billing.subscriptions, billing.customers, timestamptz[], bigint[], timestamptz) IS 'Private: the credit notes for the unused days of plans paid in advance that ended early by as_of (upgrades, a termination); once per fee.';
COMMENT ON TABLE billing.in_advance_usage IS 'Charges paid in advance: per subscription, charge, filter (0: the default bucket), pricing group and period, the units so far, the high-water mark billed, the events, the amount billed, what the latest event raised the mark by and billed, and (models priced per event) the values billed; its row lock orders concurrent events of one line.';
COMMENT ON FUNCTION billing._check_pay_in_advance(integer, billing.billable_metrics) IS 'Private: raises 22023 unless a charge paid in advance prices a count or sum metric that resets every period.';
COMMENT ON FUNCTION billing._in_advance_invoice(billing.subscriptions, billing.customers) IS 'Private: the subscription''s draft pay_in_advance invoice of the current customer-local day (billed at its end; after that one was finalized, one of the instant it is needed), locked, created if needed, and whether it was.';
COMMENT ON FUNCTION billing._bill_in_advance(bigint[], bigint[], bigint[], timestamptz[], numeric[], jsonb[], bigint[], numeric[]) IS 'Private: called by ingestion, as the extension''s owner, for the events just stored of charges paid in advance (with the plan version when the subscription has one): each bills price(high-water mark after) - price(before) on its subscription''s day invoice.';
