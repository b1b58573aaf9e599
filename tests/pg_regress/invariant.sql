-- The invariant of every finalized invoice, checked by billing.verify_invoice: total = Σ
-- rounded fees − progressive credit − coupons + taxes − credit notes − prepaid credits (and
-- each part equal to what its rows add up to); and its usage, recomputed from the raw events,
-- equal to what was billed for it.
SELECT count(*) AS finalized,
       count(*) FILTER (WHERE (v.report ->> 'totals_consistent')::boolean) AS totals_consistent,
       count(*) FILTER (WHERE jsonb_array_length(v.report -> 'drifting_lines') = 0) AS usage_as_billed
FROM billing.invoices i, LATERAL (SELECT billing.verify_invoice(i.id) AS report) v
WHERE i.status = 'finalized';
-- And of every wallet: its balance equals the sum of its settled ledger rows.
SELECT count(*) AS wallets, (SELECT count(*) FROM billing.wallet_discrepancies()) AS discrepancies FROM billing.wallets;
