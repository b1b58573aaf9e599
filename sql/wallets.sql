-- Prepaid credits: wallets of credits per customer, an append-only ledger of what came in
-- and went out, top-ups (manual, on an interval, at a threshold), consumption by invoices
-- at finalization, direct deduction by applications, and spend caps checked before usage
-- is recorded (billing.authorize).
--
-- A wallet's balance (credits_balance) moves only with its ledger: billing._apply_to_balance
-- applies each settled row to it in the same transaction, counting the posting (postings),
-- and the wallet refuses a change of its balance that counts none; billing.wallet_discrepancies()
-- lists wallets whose balance and settled ledger sum differ (none, ever). The balance never
-- goes below zero: the row lock of the update orders concurrent consumers, and each sees
-- what the one before it left. (Functions, not triggers, keep the balance: on Citus a
-- trigger runs on a worker, where it could neither update another shard's rows of the
-- transaction nor announce an event.)

CREATE TYPE billing.wallet_status AS ENUM ('active', 'terminated');
CREATE TYPE billing.wallet_transaction_type AS ENUM ('inbound', 'outbound');
CREATE TYPE billing.wallet_transaction_status AS ENUM ('pending', 'settled', 'failed');
-- What a ledger row is: inbound purchased (paid), granted (free), restored (given back by a
-- voided invoice); outbound invoiced (paid an invoice), deducted (billing.deduct_credits),
-- consumed (burned down by usage as it was ingested, one row per wallet and day), voided
-- (taken away), expired (left at the wallet's expiry).
CREATE TYPE billing.wallet_transaction_kind AS ENUM ('purchased', 'granted', 'restored', 'invoiced', 'deducted', 'consumed', 'voided', 'expired');
CREATE TYPE billing.wallet_top_up_source AS ENUM ('manual', 'interval', 'threshold');
CREATE TYPE billing.top_up_trigger AS ENUM ('interval', 'threshold');
CREATE TYPE billing.top_up_method AS ENUM ('fixed', 'target');

CREATE TABLE billing.wallets (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL REFERENCES billing.customers,
    -- The wallet's name for applications (billing.deduct_credits), unique across customers
    -- through billing.wallet_directory.
    external_id text NOT NULL,
    code text NOT NULL,
    name text,
    currency text NOT NULL,
    -- 1 credit = rate_amount units of the currency.
    rate_amount numeric NOT NULL CHECK (rate_amount > 0),
    -- Lower first when invoices consume credits.
    priority integer NOT NULL DEFAULT 50 CHECK (priority BETWEEN 1 AND 50),
    status billing.wallet_status NOT NULL DEFAULT 'active',
    expiration_at timestamptz,
    -- Limits (NULL: none): the fee types and the metrics whose fees the wallet may pay.
    applies_to_fee_types billing.fee_type[],
    applies_to_metric_ids bigint[],
    paid_top_up_min_credits numeric,
    paid_top_up_max_credits numeric,
    -- Purchased credits settle when their invoice is paid (true) or finalized (false).
    invoice_requires_successful_payment boolean NOT NULL DEFAULT false,
    -- Real-time burn-down: ingestion takes the price of each event of a usage charge from
    -- the wallet as it stores the event (billing._burn).
    burn_down boolean NOT NULL DEFAULT false,
    credits_balance numeric NOT NULL DEFAULT 0 CONSTRAINT wallets_never_overdrawn CHECK (credits_balance >= 0),
    -- How many ledger postings moved the balance (each moves it once).
    postings bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    terminated_at timestamptz,
    PRIMARY KEY (customer_id, id),
    UNIQUE (customer_id, code),
    UNIQUE (customer_id, external_id),
    CHECK (paid_top_up_min_credits IS NULL OR paid_top_up_max_credits IS NULL OR paid_top_up_min_credits <= paid_top_up_max_credits)
);

-- Which customer's wallet an external wallet id names: the one place that id is unique.
CREATE TABLE billing.wallet_directory (
    external_id text PRIMARY KEY,
    customer_id bigint NOT NULL,
    wallet_id bigint NOT NULL,
    UNIQUE (customer_id, wallet_id)
);

-- The ledger. Rows are never deleted; a pending row (purchased credits waiting for their
-- invoice) becomes settled or failed once, and nothing else of a row ever changes.
CREATE TABLE billing.wallet_transactions (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    wallet_id bigint NOT NULL,
    transaction_type billing.wallet_transaction_type NOT NULL,
    transaction_status billing.wallet_transaction_kind NOT NULL,
    status billing.wallet_transaction_status NOT NULL,
    source billing.wallet_top_up_source NOT NULL DEFAULT 'manual',
    credits numeric NOT NULL CHECK (credits > 0),
    -- The credits' worth in the wallet's currency, in whole minor units.
    amount numeric NOT NULL CHECK (amount >= 0),
    -- The credit-purchase invoice of purchased credits; the invoice paid (invoiced) or voided
    -- (restored).
    invoice_id bigint,
    idempotency_key text,
    reason text,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz,
    PRIMARY KEY (customer_id, id),
    CONSTRAINT wallet_transactions_idempotency_key UNIQUE (customer_id, wallet_id, idempotency_key),
    FOREIGN KEY (customer_id, wallet_id) REFERENCES billing.wallets (customer_id, id),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id),
    CHECK ((transaction_type = 'inbound') = (transaction_status IN ('purchased', 'granted', 'restored'))),
    CHECK ((status = 'settled') = (settled_at IS NOT NULL))
);
CREATE INDEX wallet_transactions_by_invoice ON billing.wallet_transactions (customer_id, invoice_id) WHERE invoice_id IS NOT NULL;

-- Automatic top-ups: on an interval from started_at, or when the wallet's ongoing balance
-- falls to threshold_credits (once per crossing: the rule is armed again when the ongoing
-- balance is above the threshold). fixed tops up paid_credits and granted_credits; target
-- buys what brings the ongoing balance up to target_ongoing_balance.
CREATE TABLE billing.wallet_recurring_rules (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    wallet_id bigint NOT NULL,
    trigger billing.top_up_trigger NOT NULL,
    method billing.top_up_method NOT NULL DEFAULT 'fixed',
    "interval" billing.billing_interval,
    started_at timestamptz,
    threshold_credits numeric,
    paid_credits numeric NOT NULL DEFAULT 0 CHECK (paid_credits >= 0),
    granted_credits numeric NOT NULL DEFAULT 0 CHECK (granted_credits >= 0),
    target_ongoing_balance numeric,
    armed boolean NOT NULL DEFAULT true,
    last_fired_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, wallet_id) REFERENCES billing.wallets (customer_id, id),
    CHECK ((trigger = 'interval') = ("interval" IS NOT NULL AND started_at IS NOT NULL)),
    CHECK ((trigger = 'threshold') = (threshold_credits IS NOT NULL)),
    CHECK ((method = 'target') = (target_ongoing_balance IS NOT NULL))
);

-- A subscription's hard spend cap: the most its usage may cost in one billing period
-- (billing.authorize refuses usage beyond it). reached_period_from records the period for
-- which spend_cap.reached was announced.
CREATE TABLE billing.spend_caps (
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    -- NULL: no cap (only the prepaid balance is enforced).
    amount numeric CHECK (amount >= 0),
    -- Ingestion itself refuses events beyond the cap or the prepaid balance (23514).
    enforce_on_ingestion boolean NOT NULL DEFAULT false,
    reached_period_from timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, subscription_id),
    CHECK (amount IS NOT NULL OR enforce_on_ingestion)
);

-- What burn-down took from each wallet for each line of usage (the line of
-- billing.in_advance_usage whose marks price it), and what of it an invoice counted as paid:
-- at the finalization of the line's period, up to the line's fee; the rest goes back.
CREATE TABLE billing.burned_usage (
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    charge_id bigint NOT NULL,
    charge_filter_id bigint NOT NULL,
    grouped_by jsonb NOT NULL,
    period_from timestamptz NOT NULL,
    wallet_id bigint NOT NULL,
    credits numeric NOT NULL,
    amount numeric NOT NULL,
    invoice_id bigint,
    applied_amount numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from, wallet_id),
    FOREIGN KEY (customer_id, wallet_id) REFERENCES billing.wallets (customer_id, id)
);
CREATE INDEX burned_usage_by_invoice ON billing.burned_usage (customer_id, invoice_id) WHERE invoice_id IS NOT NULL;

-- Applies a settled ledger row to its wallet's balance (23514, naming the balance, if an
-- outbound row would overdraw it). Spending (an invoice, a deduction) that empties a wallet
-- announces wallet.depleted; a top-up, wallet.topped_up.
-- A burn-down day row applies what it grew by (`credits`).
CREATE FUNCTION billing._apply_to_balance(posted billing.wallet_transactions, credits numeric DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    delta numeric := CASE posted.transaction_type WHEN 'inbound' THEN 1 ELSE -1 END * coalesce(credits, posted.credits);
    balance numeric;
    w billing.wallets;
BEGIN
    UPDATE billing.wallets wl SET credits_balance = wl.credits_balance + delta, postings = wl.postings + 1
    WHERE wl.customer_id = posted.customer_id AND wl.id = posted.wallet_id AND wl.credits_balance + delta >= 0
    RETURNING wl.credits_balance INTO balance;
    IF NOT FOUND THEN
        SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = posted.customer_id AND wl.id = posted.wallet_id;
        PERFORM billing._raise('23514', format('wallet %s has %s credits: taking %s would overdraw it', w.external_id,
                                               trim_scale(w.credits_balance), trim_scale(-delta)),
            format('balance %s credits (%s %s), asked %s credits', trim_scale(w.credits_balance),
                   billing._credits_worth(w.credits_balance, w.rate_amount, w.currency), w.currency, trim_scale(-delta)),
            'top the wallet up with billing.top_up, or take at most its balance');
    END IF;
    IF delta > 0 THEN
        PERFORM billing._emit(posted.customer_id, 'wallet.topped_up', billing._wallet_event(posted.customer_id, posted.wallet_id)
                                                                      || jsonb_build_object('credits', posted.credits, 'transaction_id', posted.id));
    ELSIF balance = 0 AND posted.transaction_status IN ('invoiced', 'deducted', 'consumed') THEN
        PERFORM billing._emit(posted.customer_id, 'wallet.depleted', billing._wallet_event(posted.customer_id, posted.wallet_id));
    END IF;
END $$;

-- Append-only: a pending row may settle or fail, once; a burn-down day row grows; nothing
-- else changes.
CREATE FUNCTION billing._wallet_transaction_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status = 'pending' AND NEW.status <> 'pending'
       AND (to_jsonb(NEW) - ARRAY['status', 'settled_at']) = (to_jsonb(OLD) - ARRAY['status', 'settled_at']) THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.transaction_status = 'consumed' AND NEW.credits > OLD.credits
       AND (to_jsonb(NEW) - ARRAY['credits', 'amount']) = (to_jsonb(OLD) - ARRAY['credits', 'amount']) THEN
        RETURN NEW;
    END IF;
    PERFORM billing._raise('55000', format('wallet transaction %s is part of the ledger and cannot be changed', OLD.id),
        format('%s of a %s transaction', TG_OP, OLD.status),
        'correct a wallet with a new transaction: billing.top_up, billing.void_credits');
    RETURN NULL;
END $$;
CREATE TRIGGER wallet_transactions_immutable BEFORE UPDATE OR DELETE ON billing.wallet_transactions
FOR EACH ROW EXECUTE FUNCTION billing._wallet_transaction_immutable();

-- A wallet's balance changes only with a ledger posting (billing._apply_to_balance counts it).
CREATE FUNCTION billing._wallet_balance_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.credits_balance IS DISTINCT FROM OLD.credits_balance AND NEW.postings IS DISTINCT FROM OLD.postings + 1 THEN
        PERFORM billing._raise('55000', format('wallet %s''s balance moves only with its ledger', OLD.external_id),
            format('credits_balance set from %s to %s', OLD.credits_balance, NEW.credits_balance),
            'use billing.top_up, billing.deduct_credits or billing.void_credits');
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER wallets_balance_guard BEFORE UPDATE ON billing.wallets
FOR EACH ROW EXECUTE FUNCTION billing._wallet_balance_guard();

-- Credits' worth in the wallet's currency, in whole minor units (half-up): 1,034 credits at
-- 0.001 are 1.03.
CREATE FUNCTION billing._credits_worth(credits numeric, rate_amount numeric, currency text) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT billing.round_money(credits * rate_amount, currency)
$$;

-- A wallet's ongoing balance in credits: its balance less the credits its share of usage not
-- yet invoiced (billing._ongoing_usage) would take.
CREATE FUNCTION billing._ongoing_credits(credits_balance numeric, rate_amount numeric, usage_amount numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT trim_scale(greatest(credits_balance - round(coalesce(usage_amount, 0) / rate_amount, 5), 0))
$$;

-- What a wallet can pay, in whole minor units: its balance's worth rounded down, so that
-- paying it never takes more credits than the wallet holds.
CREATE FUNCTION billing._spendable(credits_balance numeric, rate_amount numeric, currency text) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT trunc(credits_balance * rate_amount, billing.currency_minor_units(currency))
$$;

-- The credits an amount of currency takes from a wallet.
CREATE FUNCTION billing._credits_for(amount numeric, credits_balance numeric, rate_amount numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    -- Rounded up at the 25th decimal, so that the credits taken are worth at least the amount
    -- (a rate such as 0.003 divides into endless decimals); never more than the balance.
    SELECT least(credits_balance, trim_scale(ceil(round(amount, 30) / rate_amount * 1e25) * 1e-25))
$$;

-- Whether a wallet may pay a fee of this type and metric (its limits).
CREATE FUNCTION billing._wallet_pays(
    applies_to_fee_types billing.fee_type[], applies_to_metric_ids bigint[], fee_type billing.fee_type, metric_id bigint
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (applies_to_fee_types IS NULL OR fee_type = ANY (applies_to_fee_types))
       AND (applies_to_metric_ids IS NULL OR metric_id = ANY (applies_to_metric_ids))
$$;

CREATE FUNCTION billing._wallet_event(customer_id bigint, wallet_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    RETURN (SELECT jsonb_build_object('wallet_id', w.id, 'external_id', w.external_id, 'code', w.code,
                                      'customer_external_id', c.external_id, 'credits_balance', w.credits_balance,
                                      'balance_amount', billing._credits_worth(w.credits_balance, w.rate_amount, w.currency), 'currency', w.currency)
            FROM billing.wallets w JOIN billing.customers c ON c.id = w.customer_id
            WHERE w.customer_id = customer_id AND w.id = wallet_id);
END $$;

-- The wallet with this external id, locked, or 23503.
CREATE FUNCTION billing._wallet(external_id text) RETURNS billing.wallets
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entry billing.wallet_directory;
    found_wallet billing.wallets;
BEGIN
    SELECT * INTO entry FROM billing.wallet_directory d WHERE d.external_id = external_id;
    SELECT * INTO found_wallet FROM billing.wallets w WHERE w.customer_id = entry.customer_id AND w.id = entry.wallet_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM billing._unknown('wallet', external_id, 'create it with billing.create_wallet');
    END IF;
    RETURN found_wallet;
END $$;

-- Raises 55000 unless the wallet takes transactions (active, not past its expiry).
CREATE FUNCTION billing._require_active(w billing.wallets, action text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    IF w.status = 'terminated' OR w.expiration_at <= now() THEN
        PERFORM billing._raise('55000', format('wallet %s is %s', w.external_id,
                                               CASE w.status WHEN 'terminated' THEN 'terminated' ELSE 'expired' END),
            format('%s on a wallet %s', action, CASE w.status WHEN 'terminated' THEN format('terminated at %s', w.terminated_at)
                                                                 ELSE format('that expired at %s', w.expiration_at) END),
            'create a new wallet with billing.create_wallet');
    END IF;
END $$;

-- A positive, finite number of credits, or 22023.
CREATE FUNCTION billing._check_credits(what text, credits numeric, may_be_zero boolean) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
#variable_conflict use_variable
BEGIN
    IF credits IS NULL OR NOT (credits > 0 OR (may_be_zero AND credits = 0)) OR credits >= 'Infinity' THEN
        PERFORM billing._invalid(format('%s must be %s number of credits', what, CASE WHEN may_be_zero THEN 'a finite, non-negative' ELSE 'a positive, finite' END),
            format('got %s', credits), format('give %s as a number such as 100 or 12.5', what));
    END IF;
    RETURN credits;
END $$;

-- Writes a ledger row for a wallet (its amount the credits' worth unless given).
CREATE FUNCTION billing._post(
    w billing.wallets, kind billing.wallet_transaction_kind, status billing.wallet_transaction_status, credits numeric,
    source billing.wallet_top_up_source DEFAULT 'manual', invoice_id bigint DEFAULT NULL, amount numeric DEFAULT NULL,
    reason text DEFAULT NULL, metadata jsonb DEFAULT '{}'
) RETURNS billing.wallet_transactions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    posted billing.wallet_transactions;
BEGIN
    INSERT INTO billing.wallet_transactions (customer_id, wallet_id, transaction_type, transaction_status, status, source, credits, amount,
                                             invoice_id, reason, metadata, settled_at)
    VALUES (w.customer_id, w.id, CASE WHEN kind IN ('purchased', 'granted', 'restored') THEN 'inbound' ELSE 'outbound' END::billing.wallet_transaction_type,
            kind, status, source, credits, coalesce(amount, billing._credits_worth(credits, w.rate_amount, w.currency)), invoice_id, reason, coalesce(metadata, '{}'),
            CASE WHEN status = 'settled' THEN now() END)
    RETURNING * INTO posted;
    IF status = 'settled' THEN
        PERFORM billing._apply_to_balance(posted);
    END IF;
    RETURN posted;
END $$;

-- Paid and granted credits into a wallet: granted ones settle at once; paid ones are billed
-- on a credit-purchase invoice (finalized at once) and settle with it (billing._settle_purchase).
CREATE FUNCTION billing._top_up(
    w billing.wallets, paid_credits numeric, granted_credits numeric, source billing.wallet_top_up_source, metadata jsonb
) RETURNS SETOF billing.wallet_transactions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cust billing.customers;
    invoice_id bigint;
    purchase billing.wallet_transactions;
    inv billing.invoices;
    at timestamptz := now();
BEGIN
    IF granted_credits > 0 THEN
        RETURN NEXT billing._post(w, 'granted', 'settled', granted_credits, source, metadata => metadata);
    END IF;
    IF paid_credits > 0 THEN
        SELECT * INTO cust FROM billing.customers c WHERE c.id = w.customer_id;
        INSERT INTO billing.invoices (customer_id, invoice_type, billing_entity_id, currency, timezone, billing_at, issuing_date)
        VALUES (cust.id, 'credit', cust.billing_entity_id, w.currency, cust.timezone, at, (at AT TIME ZONE cust.timezone)::date)
        RETURNING id INTO invoice_id;
        -- Credits are not taxed: the fee names no tax.
        INSERT INTO billing.fees (customer_id, invoice_id, fee_type, fee_key, description, units, precise_unit_amount, precise_amount,
                                  amount, from_datetime, to_datetime, tax_ids)
        VALUES (cust.id, invoice_id, 'credit', format('credit:%s', invoice_id), format('Prepaid credits (%s)', coalesce(w.name, w.code)),
                paid_credits, w.rate_amount, paid_credits * w.rate_amount, billing._credits_worth(paid_credits, w.rate_amount, w.currency), at, at, '{}');
        purchase := billing._post(w, 'purchased', 'pending', paid_credits, source, invoice_id, metadata => metadata);
        -- Its totals are its one fee's: no tax, coupon, credit note or prepaid credit applies.
        UPDATE billing.invoices i
        SET fees_amount = fee.amount, sub_total_excluding_taxes = fee.amount, sub_total_including_taxes = fee.amount, total_amount = fee.amount
        FROM (SELECT billing._credits_worth(paid_credits, w.rate_amount, w.currency) AS amount) fee
        WHERE i.customer_id = cust.id AND i.id = invoice_id
        RETURNING i.* INTO inv;
        PERFORM billing._emit(cust.id, 'invoice.created', billing._invoice_event(inv));
        PERFORM billing._finalize(inv);
        RETURN QUERY SELECT * FROM billing.wallet_transactions t WHERE t.customer_id = cust.id AND t.id = purchase.id;
    END IF;
END $$;

-- Settles (or fails) the purchased credits of a credit-purchase invoice: at finalization,
-- unless the wallet waits for the payment; on a successful payment (a failed payment leaves
-- them pending: a retried one settles them); failed by a voided invoice, or when their
-- wallet ended before they settled.
CREATE FUNCTION billing._settle_purchase(inv billing.invoices) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    settled billing.wallet_transactions;
    -- (A variable, not now() in the CASE: Citus evaluates no volatile function in a CASE of
    -- a statement on its shards.)
    settled_now timestamptz := now();
BEGIN
    IF inv.invoice_type <> 'credit' THEN
        RETURN;
    END IF;
    FOR settled IN
    UPDATE billing.wallet_transactions t
    SET status = CASE WHEN inv.status = 'voided' OR w.status = 'terminated' THEN 'failed' ELSE 'settled' END::billing.wallet_transaction_status,
        settled_at = CASE WHEN inv.status = 'voided' OR w.status = 'terminated' THEN NULL ELSE settled_now END
    FROM billing.wallets w
    WHERE t.customer_id = inv.customer_id AND t.invoice_id = inv.id AND t.transaction_status = 'purchased' AND t.status = 'pending'
      AND w.customer_id = t.customer_id AND w.id = t.wallet_id
      AND (inv.status = 'voided' OR inv.payment_status = 'succeeded' OR NOT w.invoice_requires_successful_payment)
    RETURNING t.*
    LOOP
        IF settled.status = 'settled' THEN
            PERFORM billing._apply_to_balance(settled);
        END IF;
    END LOOP;
END $$;

-- Whether ingestion prices a subscription's events as it stores them: its customer has an
-- active wallet burned down in real time, or its cap is enforced at ingestion.
CREATE FUNCTION billing._realtime(customer_id bigint, subscription_id bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    RETURN EXISTS (SELECT 1 FROM billing.wallets w WHERE w.customer_id = customer_id AND w.burn_down AND w.status = 'active')
        OR EXISTS (SELECT 1 FROM billing.spend_caps sc
                   WHERE sc.customer_id = customer_id AND sc.subscription_id = subscription_id AND sc.enforce_on_ingestion);
END $$;

-- Keeps the directory's realtime flag of a customer's subscriptions in step.
CREATE FUNCTION billing._refresh_realtime(customer_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entry record;
    flag boolean;
BEGIN
    FOR entry IN SELECT d.subscription_id, d.realtime FROM billing.subscription_directory d WHERE d.customer_id = customer_id ORDER BY 1 LOOP
        flag := billing._realtime(customer_id, entry.subscription_id);
        CONTINUE WHEN flag = entry.realtime;
        UPDATE billing.subscription_directory d SET realtime = flag WHERE d.customer_id = customer_id AND d.subscription_id = entry.subscription_id;
    END LOOP;
END $$;

-- Real-time burn-down: takes `amount` (the price an event added to a line of usage) from the
-- customer's burn-down wallets that may pay the metric, by priority, each up to its balance,
-- into one consumed ledger row per wallet and (customer-local) day, and records it against
-- the line (billing.burned_usage). Returns what it took.
CREATE FUNCTION billing._burn(
    sub billing.subscriptions, cust billing.customers, charge_id bigint, metric_id bigint, filter_id bigint, grouped jsonb,
    period_from timestamptz, amount numeric
) RETURNS numeric
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets;
    left_to_take numeric := amount;
    credits numeric;
    taken numeric;
    day date := (now() AT TIME ZONE cust.timezone)::date;
    posted billing.wallet_transactions;
BEGIN
    -- Locked in id order, as every lock of a customer's wallets is taken, then read by priority.
    PERFORM 1 FROM billing.wallets wl WHERE wl.customer_id = sub.customer_id AND wl.burn_down AND wl.status = 'active' ORDER BY wl.id FOR UPDATE;
    FOR w IN
        SELECT * FROM billing.wallets wl
        WHERE wl.customer_id = sub.customer_id AND wl.burn_down AND wl.status = 'active' AND wl.currency = cust.currency
          AND (wl.expiration_at IS NULL OR wl.expiration_at > now())
        ORDER BY wl.priority, wl.created_at, wl.id
    LOOP
        EXIT WHEN left_to_take <= 0;
        CONTINUE WHEN w.credits_balance <= 0 OR NOT billing._wallet_pays(w.applies_to_fee_types, w.applies_to_metric_ids, 'charge', metric_id);
        credits := billing._credits_for(left_to_take, w.credits_balance, w.rate_amount);
        taken := least(left_to_take, credits * w.rate_amount);
        INSERT INTO billing.wallet_transactions AS t (customer_id, wallet_id, transaction_type, transaction_status, status, credits, amount,
                                                      idempotency_key, reason, settled_at)
        VALUES (w.customer_id, w.id, 'outbound', 'consumed', 'settled', credits, billing._credits_worth(credits, w.rate_amount, w.currency),
                'pg_billing burn-down ' || day, format('usage of %s burned down as ingested', day), now())
        ON CONFLICT ON CONSTRAINT wallet_transactions_idempotency_key DO UPDATE
        SET credits = t.credits + excluded.credits, amount = billing._credits_worth(t.credits + excluded.credits, w.rate_amount, w.currency)
        RETURNING * INTO posted;
        PERFORM billing._apply_to_balance(posted, credits);
        INSERT INTO billing.burned_usage AS b (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from, wallet_id,
                                               credits, amount)
        VALUES (sub.customer_id, sub.id, charge_id, filter_id, grouped, period_from, w.id, credits, taken)
        ON CONFLICT ON CONSTRAINT burned_usage_pkey DO UPDATE SET credits = b.credits + excluded.credits, amount = b.amount + excluded.amount;
        left_to_take := left_to_take - taken;
    END LOOP;
    RETURN amount - left_to_take;
END $$;

-- Locks a subscription's spend cap row and its customer's active wallets (in id order), the
-- order every spend check takes them in; returns the cap (none: NULL).
CREATE FUNCTION billing._lock_spend_control(customer_id bigint, subscription_id bigint) RETURNS billing.spend_caps
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cap billing.spend_caps;
BEGIN
    SELECT * INTO cap FROM billing.spend_caps sc WHERE sc.customer_id = customer_id AND sc.subscription_id = subscription_id FOR UPDATE;
    PERFORM 1 FROM billing.wallets wl WHERE wl.customer_id = customer_id AND wl.status = 'active' ORDER BY wl.id FOR UPDATE;
    RETURN cap;
END $$;

-- Raises 23514: a subscription's usage this period would pass its cap.
CREATE FUNCTION billing._over_cap(external_subscription_id text, spent numeric, cap numeric, currency text, detail text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM billing._raise('23514', format('subscription %s would spend %s %s of its %s %s cap this period', external_subscription_id,
                                           billing.round_money(spent, currency), currency, cap, currency),
        detail, 'raise the cap with billing.set_spend_cap, or wait for the next period');
END $$;

-- Ingestion refusing what a subscription's spend control forbids (its cap enforced at
-- ingestion): after its events were stored and priced, 23514 (the whole call fails) when
-- its usage this period passes the cap, when burn-down could not take an event's price
-- (`short`), or when its customer's wallets do not cover the usage not yet invoiced they may
-- pay. The cap and the wallets are locked first, so concurrent ingestions take turns and
-- each sees what the one before committed.
CREATE FUNCTION billing._enforce_spend(customer_id bigint, subscription_id bigint, short numeric) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cap billing.spend_caps;
    sub billing.subscriptions;
    spent numeric;
    uncovered numeric;
    currency text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM billing.spend_caps sc
                   WHERE sc.customer_id = customer_id AND sc.subscription_id = subscription_id AND sc.enforce_on_ingestion) THEN
        RETURN;
    END IF;
    SELECT * INTO cap FROM billing._lock_spend_control(customer_id, subscription_id);
    SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = customer_id AND s.id = subscription_id;
    SELECT c.currency INTO currency FROM billing.customers c WHERE c.id = customer_id;
    SELECT coalesce(sum(u.amount), 0) INTO spent FROM billing.current_usage(sub.external_id) u;
    IF spent > cap.amount THEN
        PERFORM billing._over_cap(sub.external_id, spent, cap.amount, currency, 'its cap is enforced at ingestion: the events were refused');
    END IF;
    IF short > 0 THEN
        PERFORM billing._raise('23514', format('the burn-down wallets of subscription %s''s customer do not cover %s %s of its events',
                                               sub.external_id, short, currency),
            'its spend is enforced at ingestion: the events were refused', 'top the customer''s wallet up with billing.top_up');
    END IF;
    SELECT coalesce(sum(u.usage_amount), 0) INTO uncovered FROM billing._ongoing_usage(customer_id) u WHERE u.wallet_id IS NULL;
    IF uncovered > 0 THEN
        PERFORM billing._raise('23514', format('the prepaid balance of subscription %s''s customer does not cover its usage: %s %s short',
                                               sub.external_id, billing.round_money(uncovered, currency), currency),
            'its spend is enforced at ingestion: the events were refused', 'top the customer''s wallet up with billing.top_up');
    END IF;
END $$;

CREATE FUNCTION billing.create_wallet(
    customer text, code text, rate_amount numeric DEFAULT 1, name text DEFAULT NULL, priority integer DEFAULT 50,
    expiration_at timestamptz DEFAULT NULL, applies_to jsonb DEFAULT NULL,
    paid_top_up_min_credits numeric DEFAULT NULL, paid_top_up_max_credits numeric DEFAULT NULL,
    invoice_requires_successful_payment boolean DEFAULT false, burn_down boolean DEFAULT false,
    paid_credits numeric DEFAULT 0, granted_credits numeric DEFAULT 0, external_id text DEFAULT NULL
) RETURNS billing.wallets
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cust billing.customers := billing._customer(customer);
    fee_types billing.fee_type[];
    metric_ids bigint[];
    created billing.wallets;
BEGIN
    IF coalesce(btrim(code), '') = '' THEN
        PERFORM billing._invalid('a wallet needs a code', format('got "%s"', code), 'billing.create_wallet(''acme'', ''main'')');
    END IF;
    IF rate_amount IS NULL OR NOT (rate_amount > 0 AND rate_amount < 'Infinity') THEN
        PERFORM billing._invalid('rate_amount must be positive: 1 credit is worth rate_amount of the currency',
            format('got %s', rate_amount), 'give 1 for credits worth one unit each, 0.001 for a thousandth');
    END IF;
    IF priority IS NULL OR priority NOT BETWEEN 1 AND 50 THEN
        PERFORM billing._invalid('priority must be between 1 and 50 (lower pays first)', format('got %s', priority), 'leave the default, 50');
    END IF;
    IF expiration_at <= now() THEN
        PERFORM billing._invalid('expiration_at must be in the future', format('got %s', expiration_at), 'give a later instant, or NULL');
    END IF;
    PERFORM billing._check_credits('paid_top_up_min_credits', coalesce(paid_top_up_min_credits, 0), true);
    PERFORM billing._check_credits('paid_top_up_max_credits', coalesce(paid_top_up_max_credits, 1), false);
    IF paid_top_up_min_credits > paid_top_up_max_credits THEN
        PERFORM billing._invalid('paid_top_up_min_credits is above paid_top_up_max_credits',
            format('got %s and %s', paid_top_up_min_credits, paid_top_up_max_credits), 'give a minimum at most the maximum');
    END IF;
    IF applies_to IS NOT NULL THEN
        IF jsonb_typeof(applies_to) <> 'object' OR EXISTS (SELECT 1 FROM jsonb_object_keys(applies_to) k WHERE k NOT IN ('fee_types', 'billable_metric_codes'))
           OR jsonb_typeof(coalesce(applies_to -> 'fee_types', '[]')) <> 'array'
           OR jsonb_typeof(coalesce(applies_to -> 'billable_metric_codes', '[]')) <> 'array' THEN
            PERFORM billing._invalid('applies_to must be {"fee_types": [...], "billable_metric_codes": [...]}', format('got %s', applies_to),
                'write {"billable_metric_codes": ["tokens"]} or {"fee_types": ["charge"]}');
        END IF;
        IF jsonb_array_length(coalesce(applies_to -> 'fee_types', '[0]')) = 0
           OR jsonb_array_length(coalesce(applies_to -> 'billable_metric_codes', '[0]')) = 0 THEN
            PERFORM billing._invalid('applies_to lists at least one fee type or metric in each list it gives', format('got %s', applies_to),
                'leave applies_to NULL for a wallet that pays everything');
        END IF;
        IF applies_to ? 'fee_types' THEN
            PERFORM billing._check_label('fee type', t, enum_range(NULL::billing.fee_type)::text[])
            FROM jsonb_array_elements_text(applies_to -> 'fee_types') t;
            SELECT array_agg(DISTINCT t::billing.fee_type) INTO fee_types FROM jsonb_array_elements_text(applies_to -> 'fee_types') t;
        END IF;
        IF applies_to ? 'billable_metric_codes' THEN
            PERFORM billing._unknown('metric', c, 'create it with billing.create_billable_metric')
            FROM jsonb_array_elements_text(applies_to -> 'billable_metric_codes') c
            WHERE NOT EXISTS (SELECT 1 FROM billing.billable_metrics m WHERE m.code = c);
            SELECT array_agg(DISTINCT m.id) INTO metric_ids FROM jsonb_array_elements_text(applies_to -> 'billable_metric_codes') c
            JOIN billing.billable_metrics m ON m.code = c;
        END IF;
    END IF;
    external_id := coalesce(external_id, customer || '/' || code);
    IF EXISTS (SELECT 1 FROM billing.wallet_directory d WHERE d.external_id = external_id)
       OR EXISTS (SELECT 1 FROM billing.wallets w WHERE w.customer_id = cust.id AND w.code = code) THEN
        PERFORM billing._raise('23505', format('wallet "%s" exists already', external_id),
            format('customer %s, code %s', customer, code), 'give the wallet another code or external_id');
    END IF;
    INSERT INTO billing.wallets (customer_id, external_id, code, name, currency, rate_amount, priority, expiration_at, applies_to_fee_types,
                                 applies_to_metric_ids, paid_top_up_min_credits, paid_top_up_max_credits, invoice_requires_successful_payment,
                                 burn_down)
    VALUES (cust.id, external_id, code, name, cust.currency, rate_amount, priority, expiration_at, fee_types, metric_ids,
            paid_top_up_min_credits, paid_top_up_max_credits, invoice_requires_successful_payment, coalesce(burn_down, false))
    RETURNING * INTO created;
    INSERT INTO billing.wallet_directory (external_id, customer_id, wallet_id) VALUES (external_id, cust.id, created.id);
    IF created.burn_down THEN
        PERFORM billing._refresh_realtime(cust.id);
    END IF;
    PERFORM billing._emit(cust.id, 'wallet.created', billing._wallet_event(cust.id, created.id));
    IF coalesce(paid_credits, 0) <> 0 OR coalesce(granted_credits, 0) <> 0 THEN
        PERFORM billing.top_up(external_id, paid_credits, granted_credits);
    END IF;
    SELECT * INTO created FROM billing.wallets w WHERE w.customer_id = cust.id AND w.id = created.id;
    RETURN created;
END $$;

-- A manual top-up: paid credits (billed, within the wallet's paid top-up limits) and
-- granted credits (free). Returns the ledger rows written.
CREATE FUNCTION billing.top_up(wallet text, paid_credits numeric DEFAULT 0, granted_credits numeric DEFAULT 0, metadata jsonb DEFAULT '{}')
RETURNS SETOF billing.wallet_transactions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets := billing._wallet(wallet);
BEGIN
    PERFORM billing._require_active(w, 'a top-up');
    PERFORM billing._check_credits('paid_credits', paid_credits, true);
    PERFORM billing._check_credits('granted_credits', granted_credits, true);
    IF paid_credits = 0 AND granted_credits = 0 THEN
        PERFORM billing._invalid('a top-up needs paid or granted credits', 'got 0 and 0', 'give paid_credits, granted_credits or both');
    END IF;
    IF paid_credits > 0 AND (paid_credits < w.paid_top_up_min_credits OR paid_credits > w.paid_top_up_max_credits) THEN
        PERFORM billing._invalid(format('wallet %s takes paid top-ups of %s to %s credits', w.external_id,
                                        coalesce(w.paid_top_up_min_credits::text, '0'), coalesce(w.paid_top_up_max_credits::text, 'any number of')),
            format('got %s', paid_credits), 'give paid_credits within the wallet''s limits');
    END IF;
    IF paid_credits > 0 AND billing._credits_worth(paid_credits, w.rate_amount, w.currency) = 0 THEN
        PERFORM billing._invalid(format('%s paid credits are worth less than the smallest amount of %s', paid_credits, w.currency),
            format('rate %s', w.rate_amount), 'buy more credits, or grant them');
    END IF;
    RETURN QUERY SELECT * FROM billing._top_up(w, paid_credits, granted_credits, 'manual', metadata);
END $$;

-- Takes credits away (an outbound voided row).
CREATE FUNCTION billing.void_credits(wallet text, credits numeric, reason text DEFAULT NULL)
RETURNS billing.wallet_transactions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets := billing._wallet(wallet);
BEGIN
    PERFORM billing._check_credits('credits', credits, false);
    RETURN billing._post(w, 'voided', 'settled', credits, reason => reason);
END $$;

-- Ends a wallet: what is left goes out as `kind` (voided when terminated, expired at the
-- expiry), pending purchases stay to settle or fail with their invoice, rules stop.
CREATE FUNCTION billing._end_wallet(w billing.wallets, kind billing.wallet_transaction_kind, at timestamptz) RETURNS billing.wallets
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    ended billing.wallets;
BEGIN
    IF w.credits_balance > 0 THEN
        PERFORM billing._post(w, kind, 'settled', w.credits_balance);
    END IF;
    DELETE FROM billing.wallet_recurring_rules r WHERE r.customer_id = w.customer_id AND r.wallet_id = w.id;
    UPDATE billing.wallets wl SET status = 'terminated', terminated_at = at
    WHERE wl.customer_id = w.customer_id AND wl.id = w.id RETURNING * INTO ended;
    IF w.burn_down THEN
        PERFORM billing._refresh_realtime(w.customer_id);
    END IF;
    PERFORM billing._emit(w.customer_id, CASE kind WHEN 'expired' THEN 'wallet.expired' ELSE 'wallet.terminated' END,
                          billing._wallet_event(w.customer_id, w.id) || jsonb_build_object('credits_left', w.credits_balance));
    RETURN ended;
END $$;

CREATE FUNCTION billing.terminate_wallet(wallet text) RETURNS billing.wallets
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets := billing._wallet(wallet);
BEGIN
    IF w.status = 'terminated' THEN
        RETURN w;
    END IF;
    RETURN billing._end_wallet(w, 'voided', now());
END $$;

-- Deducts credits for an application, in the caller's transaction. The idempotency key
-- makes a replay return the first deduction (23505 if it asked for another number of
-- credits); a deduction that would overdraw the wallet raises 23514 naming the balance.
-- Security definer: billing_writer may call it without any right on the ledger.
CREATE FUNCTION billing.deduct_credits(wallet text, credits numeric, idempotency_key text, reason text DEFAULT NULL)
RETURNS billing.wallet_transactions
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    entry billing.wallet_directory;
    posted billing.wallet_transactions;
    w billing.wallets;
BEGIN
    PERFORM billing._check_credits('credits', credits, false);
    IF coalesce(idempotency_key, '') = '' THEN
        PERFORM billing._invalid('a deduction needs an idempotency key', 'got an empty key',
            'give the id of the request the credits pay for, so that a retry deducts nothing again');
    END IF;
    IF idempotency_key LIKE 'pg_billing burn-down %' THEN
        PERFORM billing._invalid('idempotency keys starting with "pg_billing burn-down " are reserved', format('got %s', idempotency_key),
            'use the id of the request the credits pay for');
    END IF;
    SELECT * INTO entry FROM billing.wallet_directory d WHERE d.external_id = wallet;
    IF NOT FOUND THEN
        PERFORM billing._unknown('wallet', wallet, 'create it with billing.create_wallet');
    END IF;
    SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = entry.customer_id AND wl.id = entry.wallet_id;
    -- (VALUES computed beforehand: Citus cannot return the no row of a conflicting
    -- INSERT ... SELECT.)
    IF w.status = 'active' AND (w.expiration_at IS NULL OR w.expiration_at > now()) THEN
        INSERT INTO billing.wallet_transactions AS t (customer_id, wallet_id, transaction_type, transaction_status, status, credits, amount,
                                                      idempotency_key, reason, settled_at)
        VALUES (w.customer_id, w.id, 'outbound', 'deducted', 'settled', credits, billing._credits_worth(credits, w.rate_amount, w.currency),
                idempotency_key, reason, now())
        ON CONFLICT ON CONSTRAINT wallet_transactions_idempotency_key DO NOTHING
        RETURNING * INTO posted;
    END IF;
    IF posted.id IS NOT NULL THEN
        PERFORM billing._apply_to_balance(posted);
    ELSE
        SELECT * INTO posted FROM billing.wallet_transactions t
        WHERE t.customer_id = entry.customer_id AND t.wallet_id = entry.wallet_id AND t.idempotency_key = idempotency_key;
        IF NOT FOUND THEN
            PERFORM billing._require_active(w, 'a deduction');
        ELSIF posted.credits <> credits THEN
            PERFORM billing._raise('23505', format('idempotency key "%s" deducted %s credits, not %s', idempotency_key, trim_scale(posted.credits), credits),
                format('wallet %s, transaction %s', wallet, posted.id), 'a retry asks for the same credits; a new deduction needs a new key');
        END IF;
        RETURN posted;
    END IF;
    IF EXISTS (SELECT 1 FROM billing.wallet_recurring_rules r WHERE r.customer_id = entry.customer_id AND r.trigger = 'threshold') THEN
        PERFORM billing._check_threshold_rules(entry.customer_id);
    END IF;
    RETURN posted;
END $$;

-- Takes up to `cap` from lines of usage or fees (their types, metrics and amounts left),
-- only those the wallet may pay, in order: returns what it took and the lines' amounts left.
-- A wallet without limits takes `cap` whatever the lines add up to (they only say which
-- fees later limited wallets may still pay).
CREATE FUNCTION billing._take_from_lines(
    w billing.wallets, line_types billing.fee_type[], line_metrics bigint[], INOUT line_left numeric[], cap numeric, OUT taken numeric
)
LANGUAGE plpgsql IMMUTABLE AS $$
#variable_conflict use_variable
DECLARE
    limited boolean := w.applies_to_fee_types IS NOT NULL OR w.applies_to_metric_ids IS NOT NULL;
    rest numeric;
    part numeric;
BEGIN
    IF limited THEN
        SELECT coalesce(sum(l.amount_left), 0) INTO rest FROM unnest(line_types, line_metrics, line_left) l(fee_type, metric_id, amount_left)
        WHERE billing._wallet_pays(w.applies_to_fee_types, w.applies_to_metric_ids, l.fee_type, l.metric_id);
        taken := least(cap, billing.round_money(rest, w.currency));
    ELSE
        taken := cap;
    END IF;
    rest := taken;
    FOR n IN 1 .. coalesce(cardinality(line_left), 0) LOOP
        EXIT WHEN rest <= 0;
        CONTINUE WHEN NOT billing._wallet_pays(w.applies_to_fee_types, w.applies_to_metric_ids, line_types[n], line_metrics[n]) OR line_left[n] <= 0;
        part := least(rest, line_left[n]);
        line_left[n] := line_left[n] - part;
        rest := rest - part;
    END LOOP;
END $$;

-- Gives credits back to a wallet (a restored row), unless it ended meanwhile.
CREATE FUNCTION billing._restore(customer_id bigint, wallet_id bigint, credits numeric, amount numeric, invoice_id bigint, reason text)
RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets;
BEGIN
    SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = customer_id AND wl.id = wallet_id FOR UPDATE;
    IF w.status = 'active' THEN
        PERFORM billing._post(w, 'restored', 'settled', credits, invoice_id => invoice_id, amount => amount, reason => reason);
    END IF;
END $$;

-- What burn-down took for the usage a finalizing subscription invoice bills counts as paid
-- (before the wallets pay the rest): for each of its usage fees, up to the fee (less its
-- progressive-billing credit and coupon share), in whole minor units, and up to what is left
-- to pay. What burn-down took beyond that, and for lines of its usage window that the invoice
-- does not bill, goes back to the wallets (restored). Returns whether any counted.
CREATE FUNCTION billing._apply_burned_credits(inv billing.invoices) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    burned record;
    left_to_pay numeric;
    fee_left numeric;
    last_fee bigint;
    applied numeric;
    applied_any boolean := false;
BEGIN
    IF inv.invoice_type <> 'subscription' OR inv.charges_from IS NULL THEN
        RETURN false;
    END IF;
    SELECT i.total_amount INTO left_to_pay FROM billing.invoices i WHERE i.customer_id = inv.customer_id AND i.id = inv.id;
    FOR burned IN
        SELECT b.charge_id, b.charge_filter_id, b.grouped_by, b.period_from, b.wallet_id, b.credits, b.amount, fe.id AS fee_id,
               billing.round_money(fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount, inv.currency) AS fee_net
        FROM billing.burned_usage b
        LEFT JOIN billing.fees fe ON fe.customer_id = b.customer_id AND fe.invoice_id = inv.id AND fe.fee_type = 'charge' AND fe.invoiceable
         AND fe.charge_id = b.charge_id AND coalesce(fe.charge_filter_id, 0) = b.charge_filter_id
         AND coalesce(fe.grouped_by, '{}'::jsonb) = b.grouped_by AND fe.from_datetime = b.period_from
        WHERE b.customer_id = inv.customer_id AND b.subscription_id = inv.subscription_id AND b.invoice_id IS NULL
          AND b.period_from >= inv.charges_from AND b.period_from <= inv.charges_to
        ORDER BY fe.id, b.wallet_id
    LOOP
        IF burned.fee_id IS NULL THEN
            fee_left := 0;
        ELSIF burned.fee_id IS DISTINCT FROM last_fee THEN
            fee_left := burned.fee_net;
            last_fee := burned.fee_id;
        END IF;
        applied := greatest(least(trunc(burned.amount, billing.currency_minor_units(inv.currency)), fee_left, left_to_pay), 0);
        fee_left := fee_left - applied;
        left_to_pay := left_to_pay - applied;
        UPDATE billing.burned_usage b SET invoice_id = inv.id, applied_amount = applied
        WHERE b.customer_id = inv.customer_id AND b.subscription_id = inv.subscription_id AND b.charge_id = burned.charge_id
          AND b.charge_filter_id = burned.charge_filter_id AND b.grouped_by = burned.grouped_by AND b.period_from = burned.period_from
          AND b.wallet_id = burned.wallet_id;
        applied_any := applied_any OR applied > 0;
        CONTINUE WHEN burned.amount <= applied;
        PERFORM billing._restore(inv.customer_id, burned.wallet_id, trim_scale(round(burned.credits * (burned.amount - applied) / burned.amount, 10)),
                                 billing.round_money(burned.amount - applied, inv.currency), inv.id,
                                 format('burned down beyond what invoice %s bills', inv.id));
    END LOOP;
    RETURN applied_any;
END $$;

-- Prepaid credits pay a finalizing invoice (pricing.md, invoice arithmetic 6): what is left
-- after credit notes, from the customer's active wallets in the invoice's currency by
-- priority, each within its limits (the fees' tax-inclusive amounts it may pay) and its
-- balance. Credit-purchase invoices are paid in money. Returns whether any wallet paid.
CREATE FUNCTION billing._apply_prepaid_credits(inv billing.invoices) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets;
    left_to_pay numeric;
    line_types billing.fee_type[];
    line_metrics bigint[];
    line_left numeric[];
    pay numeric;
    paid_any boolean := false;
BEGIN
    IF inv.invoice_type = 'credit' THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM billing.wallets wl WHERE wl.customer_id = inv.customer_id AND wl.status = 'active' AND wl.currency = inv.currency
    ORDER BY wl.id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT i.total_amount INTO left_to_pay FROM billing.invoices i WHERE i.customer_id = inv.customer_id AND i.id = inv.id;
    SELECT array_agg(f.fee_type ORDER BY f.id), array_agg(f.metric_id ORDER BY f.id), array_agg(f.amount_left ORDER BY f.id)
    INTO line_types, line_metrics, line_left
    FROM (SELECT fe.id, fe.fee_type, ch.billable_metric_id AS metric_id,
                 fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount
                 + coalesce((SELECT sum(ft.precise_amount) FROM billing.fee_taxes ft WHERE ft.customer_id = fe.customer_id AND ft.fee_id = fe.id), 0)
                 -- What burn-down paid of the fee is paid.
                 - coalesce((SELECT sum(b.applied_amount) FROM billing.burned_usage b
                             WHERE b.customer_id = fe.customer_id AND b.invoice_id = fe.invoice_id AND b.charge_id = fe.charge_id
                               AND b.charge_filter_id = coalesce(fe.charge_filter_id, 0) AND b.grouped_by = coalesce(fe.grouped_by, '{}'::jsonb)
                               AND b.period_from = fe.from_datetime), 0)
                 AS amount_left
          FROM billing.fees fe LEFT JOIN billing.charges ch ON ch.id = fe.charge_id
          WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable) f;
    FOR w IN
        SELECT * FROM billing.wallets wl
        WHERE wl.customer_id = inv.customer_id AND wl.status = 'active' AND wl.currency = inv.currency AND wl.credits_balance > 0
          AND (wl.expiration_at IS NULL OR wl.expiration_at > now())
        ORDER BY wl.priority, wl.created_at, wl.id
    LOOP
        EXIT WHEN left_to_pay <= 0;
        SELECT t.line_left, t.taken INTO line_left, pay FROM billing._take_from_lines(w, line_types, line_metrics, line_left,
                                                                                      least(left_to_pay, billing._spendable(w.credits_balance, w.rate_amount, w.currency))) t;
        CONTINUE WHEN pay <= 0;
        PERFORM billing._post(w, 'invoiced', 'settled', billing._credits_for(pay, w.credits_balance, w.rate_amount), invoice_id => inv.id, amount => pay);
        left_to_pay := left_to_pay - pay;
        paid_any := true;
    END LOOP;
    RETURN paid_any;
END $$;

-- The prepaid credits an invoice consumed, in currency: what wallets paid at its
-- finalization and what burn-down had taken for its usage.
CREATE FUNCTION billing._prepaid_credits_paid(customer_id bigint, invoice_id bigint) RETURNS numeric
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    paid numeric;
BEGIN
    SELECT coalesce(sum(t.amount), 0) + coalesce((SELECT sum(b.applied_amount) FROM billing.burned_usage b
                                                  WHERE b.customer_id = customer_id AND b.invoice_id = invoice_id), 0)
    INTO paid FROM billing.wallet_transactions t
    WHERE t.customer_id = customer_id AND t.invoice_id = invoice_id AND t.transaction_status = 'invoiced' AND t.status = 'settled';
    RETURN paid;
END $$;

-- What voiding an invoice does to wallets: the credits it consumed, and what burn-down took
-- for the usage it counted as paid, come back (restored);
-- the credits a voided credit-purchase invoice bought fail if pending, or are taken away
-- again if they had settled (23514 if they were spent meanwhile).
CREATE FUNCTION billing._void_wallet_transactions(inv billing.invoices) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    consumed billing.wallet_transactions;
    burned record;
    w billing.wallets;
BEGIN
    FOR consumed IN
        SELECT * FROM billing.wallet_transactions t
        WHERE t.customer_id = inv.customer_id AND t.invoice_id = inv.id AND t.transaction_status = 'purchased' AND t.status = 'settled'
        ORDER BY t.id
    LOOP
        SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = consumed.customer_id AND wl.id = consumed.wallet_id FOR UPDATE;
        PERFORM billing._post(w, 'voided', 'settled', consumed.credits, invoice_id => inv.id, amount => consumed.amount,
                              reason => format('credit purchase invoice %s voided', inv.number));
    END LOOP;
    PERFORM billing._settle_purchase(inv);
    FOR burned IN
        SELECT b.wallet_id, sum(b.credits * b.applied_amount / b.amount) AS credits, sum(b.applied_amount) AS amount
        FROM billing.burned_usage b WHERE b.customer_id = inv.customer_id AND b.invoice_id = inv.id AND b.applied_amount > 0
        GROUP BY 1 ORDER BY 1
    LOOP
        PERFORM billing._restore(inv.customer_id, burned.wallet_id, trim_scale(round(burned.credits, 10)), burned.amount, inv.id,
                                 format('invoice %s voided', inv.number));
    END LOOP;
    FOR consumed IN
        SELECT * FROM billing.wallet_transactions t
        WHERE t.customer_id = inv.customer_id AND t.invoice_id = inv.id AND t.transaction_status = 'invoiced' AND t.status = 'settled'
        ORDER BY t.id
    LOOP
        PERFORM billing._restore(inv.customer_id, consumed.wallet_id, consumed.credits, consumed.amount, inv.id, format('invoice %s voided', inv.number));
    END LOOP;
END $$;

-- What the customer's usage not yet paid for would take from each active wallet: the
-- current usage of its subscriptions' open periods (charges billed in arrears, less what
-- burn-down took for it) and the fees of its draft invoices, each line taken by priority
-- from the wallets that may pay it, each wallet up to its balance's worth. Amounts before
-- tax. A caller that has one subscription's current usage already gives it.
CREATE FUNCTION billing._ongoing_usage(customer_id bigint, known_subscription_id bigint DEFAULT NULL, known_lines billing.usage_line[] DEFAULT NULL)
RETURNS TABLE (wallet_id bigint, usage_amount numeric)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets;
    active_wallets billing.wallets[] := '{}';
    sub record;
    lines billing.usage_line[];
    line_types billing.fee_type[];
    line_metrics bigint[];
    line_left numeric[];
    burned_charges bigint[];
    burned_filters bigint[];
    burned_groups jsonb[];
    burned_periods timestamptz[];
    burned_amounts numeric[];
    taken numeric;
    uncovered numeric := 0;
BEGIN
    SELECT array_agg(f.fee_type), array_agg(f.metric_id), array_agg(f.unpaid)
    INTO line_types, line_metrics, line_left
    FROM (SELECT fe.fee_type, ch.billable_metric_id AS metric_id,
                 fe.amount - coalesce((SELECT sum(b.amount) FROM billing.burned_usage b
                                       WHERE b.customer_id = fe.customer_id AND b.subscription_id = fe.subscription_id AND b.invoice_id IS NULL
                                         AND b.charge_id = fe.charge_id AND b.charge_filter_id = coalesce(fe.charge_filter_id, 0)
                                         AND b.grouped_by = coalesce(fe.grouped_by, '{}'::jsonb) AND b.period_from = fe.from_datetime
                                         AND fe.fee_type = 'charge'), 0) AS unpaid
          FROM billing.invoices i
          JOIN billing.fees fe ON fe.customer_id = i.customer_id AND fe.invoice_id = i.id AND fe.invoiceable
          LEFT JOIN billing.charges ch ON ch.id = fe.charge_id
          WHERE i.customer_id = customer_id AND i.status = 'draft' AND i.invoice_type <> 'credit') f
    WHERE f.unpaid > 0;
    -- (Each subscription's usage on its own: on Citus, current usage reads the customer's
    -- shards and cannot run inside a query over them.) Usage already burned down is paid.
    FOR sub IN SELECT s.id, s.external_id FROM billing.subscriptions s WHERE s.customer_id = customer_id AND s.status = 'active' ORDER BY s.id LOOP
        SELECT array_agg(b.charge_id), array_agg(b.charge_filter_id), array_agg(b.grouped_by), array_agg(b.period_from), array_agg(b.amount)
        INTO burned_charges, burned_filters, burned_groups, burned_periods, burned_amounts
        FROM billing.burned_usage b WHERE b.customer_id = customer_id AND b.subscription_id = sub.id AND b.invoice_id IS NULL;
        IF sub.id = known_subscription_id THEN
            lines := known_lines;
        ELSE
            SELECT array_agg(u) INTO lines FROM billing.current_usage(sub.external_id) u;
        END IF;
        SELECT coalesce(line_types, '{}') || coalesce(array_agg('charge'::billing.fee_type), '{}'),
               coalesce(line_metrics, '{}') || coalesce(array_agg(ch.billable_metric_id), '{}'),
               coalesce(line_left, '{}') || coalesce(array_agg(u.unpaid), '{}')
        INTO line_types, line_metrics, line_left
        FROM (SELECT u.charge_id, u.amount - coalesce((SELECT sum(x.amount) FROM unnest(burned_charges, burned_filters, burned_groups, burned_periods, burned_amounts)
                                                              x(charge_id, filter_id, grouped_by, period_from, amount)
                                                       WHERE x.charge_id = u.charge_id AND x.filter_id = coalesce(u.filter_id, 0)
                                                         AND x.grouped_by = u.grouped_by AND x.period_from = u.from_datetime), 0) AS unpaid
              FROM unnest(lines) u) u
        JOIN billing.charges ch ON ch.id = u.charge_id
        WHERE NOT ch.pay_in_advance AND ch.invoiceable AND u.unpaid > 0;
    END LOOP;
    FOR w IN
        SELECT * FROM billing.wallets wl WHERE wl.customer_id = customer_id AND wl.status = 'active' ORDER BY wl.priority, wl.created_at, wl.id
    LOOP
        SELECT t.line_left, t.taken INTO line_left, taken
        FROM billing._take_from_lines(w, line_types, line_metrics, line_left,
                                      least(billing._spendable(w.credits_balance, w.rate_amount, w.currency), coalesce((SELECT sum(x) FROM unnest(line_left) x), 0))) t;
        active_wallets := active_wallets || w;
        wallet_id := w.id; usage_amount := taken;
        RETURN NEXT;
    END LOOP;
    -- And, with wallet_id NULL, the usage left that a wallet may pay but none covers.
    IF cardinality(active_wallets) > 0 THEN
        FOR n IN 1 .. coalesce(cardinality(line_left), 0) LOOP
            CONTINUE WHEN line_left[n] <= 0;
            FOREACH w IN ARRAY active_wallets LOOP
                IF billing._wallet_pays(w.applies_to_fee_types, w.applies_to_metric_ids, line_types[n], line_metrics[n]) THEN
                    uncovered := uncovered + line_left[n];
                    EXIT;
                END IF;
            END LOOP;
        END LOOP;
        wallet_id := NULL; usage_amount := uncovered;
        RETURN NEXT;
    END IF;
END $$;

-- What the customer's usage not yet paid would take from one wallet (billing._ongoing_usage).
CREATE FUNCTION billing._wallet_ongoing_usage(customer_id bigint, wallet_id bigint) RETURNS numeric
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    usage_amount numeric;
BEGIN
    SELECT coalesce(max(u.usage_amount), 0) INTO usage_amount FROM billing._ongoing_usage(customer_id) u WHERE u.wallet_id = wallet_id;
    RETURN usage_amount;
END $$;

-- A wallet's balance now, and its ongoing balance: the balance less what the customer's
-- usage not yet invoiced would take from it (billing._ongoing_usage).
CREATE FUNCTION billing.wallet_balance(wallet text)
RETURNS TABLE (external_id text, status text, currency text, rate_amount numeric, credits_balance numeric, balance_amount numeric,
               ongoing_usage_amount numeric, ongoing_balance_amount numeric, credits_ongoing_balance numeric)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entry billing.wallet_directory;
    w billing.wallets;
BEGIN
    SELECT * INTO entry FROM billing.wallet_directory d WHERE d.external_id = wallet;
    SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = entry.customer_id AND wl.id = entry.wallet_id;
    IF NOT FOUND THEN
        PERFORM billing._unknown('wallet', wallet, 'create it with billing.create_wallet');
    END IF;
    external_id := w.external_id; status := w.status; currency := w.currency; rate_amount := w.rate_amount;
    credits_balance := trim_scale(w.credits_balance);
    balance_amount := billing._credits_worth(w.credits_balance, w.rate_amount, w.currency);
    ongoing_usage_amount := billing._wallet_ongoing_usage(w.customer_id, w.id);
    ongoing_balance_amount := balance_amount - ongoing_usage_amount;
    credits_ongoing_balance := billing._ongoing_credits(w.credits_balance, w.rate_amount, ongoing_usage_amount);
    RETURN NEXT;
END $$;

-- Fires the customer's threshold rules whose wallet's ongoing balance is at or below the
-- threshold and that are armed (each fires once per crossing), and arms again those above.
CREATE FUNCTION billing._check_threshold_rules(customer_id bigint) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    rule record;
    ongoing numeric;
    fired integer := 0;
BEGIN
    FOR rule IN
        SELECT r.id, r.wallet_id, r.armed, r.threshold_credits, w.credits_balance, w.rate_amount
        FROM billing.wallet_recurring_rules r
        JOIN billing.wallets w ON w.customer_id = r.customer_id AND w.id = r.wallet_id AND w.status = 'active'
        WHERE r.customer_id = customer_id AND r.trigger = 'threshold'
        ORDER BY r.id
    LOOP
        ongoing := billing._ongoing_credits(rule.credits_balance, rule.rate_amount, billing._wallet_ongoing_usage(customer_id, rule.wallet_id));
        IF ongoing <= rule.threshold_credits AND rule.armed THEN
            UPDATE billing.wallet_recurring_rules r SET armed = false, last_fired_at = now() WHERE r.customer_id = customer_id AND r.id = rule.id;
            PERFORM billing._fire_rule(customer_id, rule.id, ongoing);
            fired := fired + 1;
        ELSIF ongoing > rule.threshold_credits AND NOT rule.armed THEN
            UPDATE billing.wallet_recurring_rules r SET armed = true WHERE r.customer_id = customer_id AND r.id = rule.id;
        END IF;
    END LOOP;
    RETURN fired;
END $$;

-- Tops a wallet up by one of its rules: fixed credits, or (target) the paid credits that
-- bring the ongoing balance to the target; paid credits within the wallet's paid top-up
-- limits (raised to the minimum, cut to the maximum).
CREATE FUNCTION billing._fire_rule(customer_id bigint, rule_id bigint, ongoing_credits numeric) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    rule billing.wallet_recurring_rules;
    w billing.wallets;
    paid numeric;
BEGIN
    SELECT * INTO rule FROM billing.wallet_recurring_rules r WHERE r.customer_id = customer_id AND r.id = rule_id;
    SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = customer_id AND wl.id = rule.wallet_id FOR UPDATE;
    paid := CASE rule.method WHEN 'target' THEN greatest(rule.target_ongoing_balance - ongoing_credits, 0) ELSE rule.paid_credits END;
    IF paid > 0 THEN
        paid := least(greatest(paid, coalesce(w.paid_top_up_min_credits, paid)), coalesce(w.paid_top_up_max_credits, paid));
    END IF;
    IF billing._credits_worth(paid, w.rate_amount, w.currency) = 0 THEN
        paid := 0;
    END IF;
    PERFORM billing._top_up(w, paid, CASE rule.method WHEN 'fixed' THEN rule.granted_credits ELSE 0 END,
                            rule.trigger::text::billing.wallet_top_up_source, jsonb_build_object('rule_id', rule.id));
END $$;

-- A rule of automatic top-ups on a wallet. trigger 'interval' needs `interval` (weekly,
-- monthly, quarterly, semiannual, yearly) and fires at started_at plus each whole interval;
-- 'threshold' needs threshold_credits. method 'fixed' tops up paid_credits and
-- granted_credits; 'target' needs target_ongoing_balance.
CREATE FUNCTION billing.add_top_up_rule(
    wallet text, trigger text, method text DEFAULT 'fixed', paid_credits numeric DEFAULT 0, granted_credits numeric DEFAULT 0,
    "interval" text DEFAULT NULL, started_at timestamptz DEFAULT now(), threshold_credits numeric DEFAULT NULL,
    target_ongoing_balance numeric DEFAULT NULL
) RETURNS billing.wallet_recurring_rules
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets := billing._wallet(wallet);
    created billing.wallet_recurring_rules;
BEGIN
    PERFORM billing._require_active(w, 'a top-up rule');
    PERFORM billing._check_label('top-up trigger', trigger, enum_range(NULL::billing.top_up_trigger)::text[]);
    PERFORM billing._check_label('top-up method', method, enum_range(NULL::billing.top_up_method)::text[]);
    PERFORM billing._check_credits('paid_credits', paid_credits, true);
    PERFORM billing._check_credits('granted_credits', granted_credits, true);
    IF trigger = 'interval' THEN
        PERFORM billing._check_label('interval', "interval", enum_range(NULL::billing.billing_interval)::text[]);
        IF NOT (started_at > '-infinity' AND started_at < 'infinity') THEN
            PERFORM billing._invalid('an interval rule needs a finite started_at', format('got %s', started_at), 'leave the default, now()');
        END IF;
    ELSIF "interval" IS NOT NULL THEN
        PERFORM billing._invalid('a threshold rule takes no interval', format('got %s', "interval"), 'leave interval NULL');
    END IF;
    IF (trigger = 'threshold') <> (threshold_credits IS NOT NULL) THEN
        PERFORM billing._invalid('threshold_credits is for threshold rules, and they need it', format('got %s for a %s rule', threshold_credits, trigger),
            'give threshold_credits with trigger ''threshold'' only');
    END IF;
    IF threshold_credits IS NOT NULL THEN
        PERFORM billing._check_credits('threshold_credits', threshold_credits, true);
    END IF;
    IF method = 'target' THEN
        PERFORM billing._check_credits('target_ongoing_balance', target_ongoing_balance, false);
        IF paid_credits > 0 OR granted_credits > 0 THEN
            PERFORM billing._invalid('a target rule buys what reaches its target: it takes no paid or granted credits',
                format('got %s and %s', paid_credits, granted_credits), 'give target_ongoing_balance only');
        END IF;
    ELSIF target_ongoing_balance IS NOT NULL OR (paid_credits = 0 AND granted_credits = 0) THEN
        PERFORM billing._invalid('a fixed rule tops up paid_credits and granted_credits (not both 0) and has no target',
            format('got %s paid, %s granted, target %s', paid_credits, granted_credits, target_ongoing_balance),
            'give paid_credits or granted_credits');
    END IF;
    INSERT INTO billing.wallet_recurring_rules (customer_id, wallet_id, trigger, method, "interval", started_at, threshold_credits,
                                                paid_credits, granted_credits, target_ongoing_balance)
    VALUES (w.customer_id, w.id, trigger::billing.top_up_trigger, method::billing.top_up_method, "interval"::billing.billing_interval,
            CASE WHEN trigger = 'interval' THEN started_at END, threshold_credits, paid_credits, granted_credits, target_ongoing_balance)
    RETURNING * INTO created;
    IF trigger = 'threshold' THEN
        PERFORM billing._check_threshold_rules(w.customer_id);
        SELECT * INTO created FROM billing.wallet_recurring_rules r WHERE r.customer_id = w.customer_id AND r.id = created.id;
    END IF;
    RETURN created;
END $$;

CREATE FUNCTION billing.remove_top_up_rule(rule_id bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    DELETE FROM billing.wallet_recurring_rules r WHERE r.id = rule_id;
    RETURN FOUND;
END $$;

-- The last instant at or before as_of at which an interval rule fires (started_at plus a
-- whole number, at least one, of intervals), NULL before the first.
CREATE FUNCTION billing._last_interval_instant("interval" billing.billing_interval, started_at timestamptz, as_of timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT max(started_at + n * step)
    FROM (SELECT CASE "interval" WHEN 'weekly' THEN interval '1 week' WHEN 'monthly' THEN interval '1 month'
                                 WHEN 'quarterly' THEN interval '3 months' WHEN 'semiannual' THEN interval '6 months'
                                 ELSE interval '1 year' END AS step) s,
         generate_series(1, greatest(0, ((extract(epoch FROM as_of - started_at) / 86400) / 7)::integer + 1)) n
    WHERE started_at + n * step <= as_of
$$;

-- Subscriptions whose usage of the open period reached their spend cap, announced once per
-- period (spend_cap.reached).
CREATE FUNCTION billing._announce_spend_caps(as_of timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cap record;
    spent numeric;
    period_from timestamptz;
    announced integer := 0;
BEGIN
    FOR cap IN
        SELECT sc.customer_id, sc.subscription_id, sc.amount, sc.reached_period_from, s.external_id
        FROM billing.spend_caps sc JOIN billing.subscriptions s ON s.customer_id = sc.customer_id AND s.id = sc.subscription_id
        WHERE s.status = 'active'
    LOOP
        SELECT coalesce(sum(u.amount), 0), min(u.from_datetime) INTO spent, period_from FROM billing.current_usage(cap.external_id) u;
        CONTINUE WHEN spent < cap.amount OR cap.reached_period_from IS NOT DISTINCT FROM period_from;
        UPDATE billing.spend_caps sc SET reached_period_from = period_from
        WHERE sc.customer_id = cap.customer_id AND sc.subscription_id = cap.subscription_id;
        PERFORM billing._emit(cap.customer_id, 'spend_cap.reached',
            jsonb_build_object('external_subscription_id', cap.external_id, 'cap_amount', cap.amount, 'spent_amount', spent,
                               'period_from', period_from));
        announced := announced + 1;
    END LOOP;
    RETURN announced;
END $$;

-- The wallets' periodic work, as of an instant: expires wallets past their expiry, fires the
-- interval rules due (once per rule however many instants passed), checks the threshold
-- rules, and announces spend caps reached. Called by billing.run_billing and scheduled with
-- it; each wallet's work is in the caller's transaction.
CREATE FUNCTION billing.run_wallets(as_of timestamptz DEFAULT now())
RETURNS TABLE (expired integer, interval_top_ups integer, threshold_top_ups integer, spend_caps_reached integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets;
    expiring record;
    rule record;
    customer bigint;
BEGIN
    expired := 0; interval_top_ups := 0; threshold_top_ups := 0;
    -- Found across customers, then each locked in its own customer's rows.
    FOR expiring IN SELECT wl.customer_id, wl.id FROM billing.wallets wl WHERE wl.status = 'active' AND wl.expiration_at <= as_of ORDER BY 1, 2 LOOP
        SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = expiring.customer_id AND wl.id = expiring.id AND wl.status = 'active' FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        PERFORM billing._end_wallet(w, 'expired', w.expiration_at);
        expired := expired + 1;
    END LOOP;
    FOR rule IN
        SELECT r.customer_id, r.id, r.wallet_id, due.at FROM billing.wallet_recurring_rules r
        CROSS JOIN LATERAL (SELECT billing._last_interval_instant(r."interval", r.started_at, as_of) AS at) due
        WHERE r.trigger = 'interval' AND due.at IS NOT NULL AND due.at > coalesce(r.last_fired_at, '-infinity')
        ORDER BY r.customer_id, r.id
    LOOP
        UPDATE billing.wallet_recurring_rules r SET last_fired_at = rule.at WHERE r.customer_id = rule.customer_id AND r.id = rule.id;
        SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = rule.customer_id AND wl.id = rule.wallet_id;
        PERFORM billing._fire_rule(rule.customer_id, rule.id, billing._ongoing_credits(w.credits_balance, w.rate_amount,
                                                                                      billing._wallet_ongoing_usage(w.customer_id, w.id)));
        interval_top_ups := interval_top_ups + 1;
    END LOOP;
    FOR customer IN SELECT DISTINCT r.customer_id FROM billing.wallet_recurring_rules r WHERE r.trigger = 'threshold' ORDER BY 1 LOOP
        threshold_top_ups := threshold_top_ups + billing._check_threshold_rules(customer);
    END LOOP;
    spend_caps_reached := billing._announce_spend_caps(as_of);
    RETURN NEXT;
END $$;

-- Sets a subscription's spend cap per billing period (NULL: none) and whether ingestion
-- itself enforces it and the prepaid balance; with neither, removes the row.
CREATE FUNCTION billing.set_spend_cap(external_subscription_id text, amount numeric, enforce_on_ingestion boolean DEFAULT false)
RETURNS billing.spend_caps
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    cap billing.spend_caps;
BEGIN
    IF amount IS NOT NULL AND (NOT (amount >= 0 AND amount < 'Infinity')
                               OR amount <> billing.round_money(amount, (SELECT c.currency FROM billing.customers c WHERE c.id = sub.customer_id))) THEN
        PERFORM billing._invalid('a spend cap is an amount of 0 or more in whole minor units of the currency', format('got %s', amount),
            'give the most a period''s usage may cost, such as 100.00');
    END IF;
    IF amount IS NULL AND NOT coalesce(enforce_on_ingestion, false) THEN
        DELETE FROM billing.spend_caps sc WHERE sc.customer_id = sub.customer_id AND sc.subscription_id = sub.id RETURNING * INTO cap;
    ELSE
        INSERT INTO billing.spend_caps AS sc (customer_id, subscription_id, amount, enforce_on_ingestion)
        VALUES (sub.customer_id, sub.id, amount, coalesce(enforce_on_ingestion, false))
        ON CONFLICT (customer_id, subscription_id) DO UPDATE SET amount = excluded.amount, enforce_on_ingestion = excluded.enforce_on_ingestion
        RETURNING * INTO cap;
    END IF;
    PERFORM billing._refresh_realtime(sub.customer_id);
    RETURN cap;
END $$;

-- The price of `quantity` more units of a metric on a subscription now (on each charge of
-- the plan in force that prices the metric: price(units + quantity) - price(units), units
-- being the open period's usage of the charge), or 23514 if it would take the period's usage
-- above the subscription's spend cap, or above what the customer's wallets that may pay it
-- hold beyond the usage not yet invoiced. Nothing is written; the subscription's cap and the
-- customer's wallets stay locked until the caller's transaction ends, so that the usage it
-- records next is seen by the next authorize (which waits): concurrent callers cannot
-- together pass a cap or a balance that each alone respects.
CREATE FUNCTION billing.authorize(external_subscription_id text, code text, quantity numeric) RETURNS numeric
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    metric billing.billable_metrics;
    currency text;
    price numeric := 0;
    spent numeric;
    cap numeric;
    available numeric;
    lines billing.usage_line[];
    ch record;
    has_wallets boolean;
    w billing.wallets;
    usage_wallets bigint[];
    usage_amounts numeric[];
BEGIN
    SELECT * INTO metric FROM billing.billable_metrics m WHERE m.code = code;
    IF NOT FOUND THEN
        PERFORM billing._unknown('metric', code, 'check the metric''s code');
    END IF;
    IF quantity IS NULL OR NOT (quantity >= 0 AND quantity < 'Infinity') THEN
        PERFORM billing._invalid('quantity must be a finite number of 0 or more', format('got %s', quantity), 'give the units the operation will use');
    END IF;
    IF sub.status = 'terminated' THEN
        PERFORM billing._raise('55000', format('subscription %s is terminated', external_subscription_id),
            format('terminated at %s', sub.terminated_at), 'authorize usage of an active subscription');
    END IF;
    -- The locks first: the usage read below is then the one their holders committed.
    cap := (billing._lock_spend_control(sub.customer_id, sub.id)).amount;
    has_wallets := EXISTS (SELECT 1 FROM billing.wallets wl WHERE wl.customer_id = sub.customer_id AND wl.status = 'active');
    SELECT array_agg(u) INTO lines FROM billing.current_usage(external_subscription_id) u;
    SELECT c.currency INTO currency FROM billing.customers c WHERE c.id = sub.customer_id;
    FOR ch IN
        SELECT c.id, c.price, c.price ->> 'charge_model' AS model, coalesce(sum(l.units), 0) AS units
        FROM billing.charges c LEFT JOIN unnest(lines) l ON l.charge_id = c.id
        WHERE c.id IN (SELECT l2.charge_id FROM unnest(lines) l2) AND c.billable_metric_id = metric.id AND c.invoiceable
        GROUP BY c.id, c.price
    LOOP
        IF ch.model IN ('percentage', 'dynamic') THEN
            PERFORM billing._raise('0A000', format('billing.authorize prices units, not the %s model', ch.model),
                format('charge %s of metric %s', ch.id, code), 'authorize metrics priced per unit (standard, graduated, volume, package, graduated_percentage)');
        END IF;
        price := price + billing._price_rise(ch.price::billing.price, metric.rounding_function::text, metric.rounding_precision,
                                             ch.units, ch.units + quantity, false);
    END LOOP;
    -- Compared exactly (many small prices that round to 0 still add up); returned rounded.
    IF price = 0 THEN
        RETURN 0;
    END IF;
    IF cap IS NOT NULL THEN
        SELECT coalesce(sum(l.amount), 0) INTO spent FROM unnest(lines) l;
        IF billing.round_money(spent + price, currency) > cap THEN
            PERFORM billing._over_cap(external_subscription_id, spent + price, cap, currency,
                                      format('spent %s, this usage %s (%s %s)', billing.round_money(spent, currency), billing.round_money(price, currency), quantity, code));
        END IF;
    END IF;
    IF has_wallets THEN
        SELECT array_agg(u.wallet_id), array_agg(u.usage_amount) INTO usage_wallets, usage_amounts
        FROM billing._ongoing_usage(sub.customer_id, sub.id, lines) u;
        available := 0;
        FOR w IN SELECT * FROM billing.wallets wl WHERE wl.customer_id = sub.customer_id AND wl.status = 'active' AND wl.currency = currency ORDER BY wl.id LOOP
            CONTINUE WHEN NOT billing._wallet_pays(w.applies_to_fee_types, w.applies_to_metric_ids, 'charge', metric.id);
            available := available + billing._spendable(w.credits_balance, w.rate_amount, w.currency)
                         - coalesce(usage_amounts[array_position(usage_wallets, w.id)], 0);
        END LOOP;
        IF price > available THEN
            PERFORM billing._raise('23514', format('the prepaid balance of %s %s does not cover %s %s', available, currency,
                                                   billing.round_money(price, currency), currency),
                format('%s %s on subscription %s', quantity, code, external_subscription_id),
                'top the customer''s wallet up with billing.top_up');
        END IF;
    END IF;
    RETURN billing.round_money(price, currency);
END $$;

-- Wallets whose balance differs from their settled ledger (the invariant: none).
CREATE FUNCTION billing.wallet_discrepancies()
RETURNS TABLE (external_id text, credits_balance numeric, settled_ledger_credits numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT w.external_id, w.credits_balance, coalesce(l.credits, 0)
    FROM billing.wallets w
    LEFT JOIN (SELECT t.customer_id, t.wallet_id,
                      sum(CASE t.transaction_type WHEN 'inbound' THEN t.credits ELSE -t.credits END) AS credits
               FROM billing.wallet_transactions t WHERE t.status = 'settled' GROUP BY 1, 2) l
      ON l.customer_id = w.customer_id AND l.wallet_id = w.id
    WHERE w.credits_balance <> coalesce(l.credits, 0)
    ORDER BY w.external_id;
END $$;

REVOKE ALL ON FUNCTION billing._apply_to_balance(billing.wallet_transactions, numeric), billing._realtime(bigint, bigint), billing._refresh_realtime(bigint),
    billing._burn(billing.subscriptions, billing.customers, bigint, bigint, bigint, jsonb, timestamptz, numeric), billing._enforce_spend(bigint, bigint, numeric),
    billing._lock_spend_control(bigint, bigint), billing._over_cap(text, numeric, numeric, text, text),
    billing._apply_burned_credits(billing.invoices), billing._restore(bigint, bigint, numeric, numeric, bigint, text), billing._wallet_transaction_immutable(), billing._wallet_balance_guard(),
    billing._credits_worth(numeric, numeric, text), billing._ongoing_credits(numeric, numeric, numeric), billing._spendable(numeric, numeric, text), billing._credits_for(numeric, numeric, numeric),
    billing._wallet_pays(billing.fee_type[], bigint[], billing.fee_type, bigint), billing._wallet_event(bigint, bigint), billing._wallet(text),
    billing._require_active(billing.wallets, text), billing._check_credits(text, numeric, boolean),
    billing._post(billing.wallets, billing.wallet_transaction_kind, billing.wallet_transaction_status, numeric, billing.wallet_top_up_source, bigint, numeric, text, jsonb),
    billing._top_up(billing.wallets, numeric, numeric, billing.wallet_top_up_source, jsonb), billing._settle_purchase(billing.invoices),
    billing.create_wallet(text, text, numeric, text, integer, timestamptz, jsonb, numeric, numeric, boolean, boolean, numeric, numeric, text),
    billing.top_up(text, numeric, numeric, jsonb), billing.void_credits(text, numeric, text),
    billing._end_wallet(billing.wallets, billing.wallet_transaction_kind, timestamptz), billing.terminate_wallet(text),
    billing.deduct_credits(text, numeric, text, text),
    billing._take_from_lines(billing.wallets, billing.fee_type[], bigint[], numeric[], numeric),
    billing._apply_prepaid_credits(billing.invoices), billing._prepaid_credits_paid(bigint, bigint), billing._void_wallet_transactions(billing.invoices), billing._ongoing_usage(bigint, bigint, billing.usage_line[]), billing._wallet_ongoing_usage(bigint, bigint),
    billing.wallet_balance(text), billing._check_threshold_rules(bigint), billing._fire_rule(bigint, bigint, numeric),
    billing.add_top_up_rule(text, text, text, numeric, numeric, text, timestamptz, numeric, numeric), billing.remove_top_up_rule(bigint),
    billing._last_interval_instant(billing.billing_interval, timestamptz, timestamptz), billing._announce_spend_caps(timestamptz),
    billing.run_wallets(timestamptz), billing.set_spend_cap(text, numeric, boolean), billing.authorize(text, text, numeric),
    billing.wallet_discrepancies() FROM PUBLIC;

-- pg_dump keeps the rows (the tables belong to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.wallets', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallets_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallet_directory', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallet_transactions', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallet_transactions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallet_recurring_rules', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallet_recurring_rules_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.spend_caps', '');
SELECT pg_catalog.pg_extension_config_dump('billing.burned_usage', '');
