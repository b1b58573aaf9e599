-- Plan changes. A subscription keeps its id, external id and events through a change of
-- plan; what changes is the plan version in force, from an instant on. Billing walks the
-- subscription's plans one after the other (billing._plan_segments): each is billed on its
-- own terms for the time it was in force, so usage is billed on the plan version in force
-- when it happened, and the periods keep the subscription's original anniversary.
CREATE TYPE billing.plan_change_kind AS ENUM ('upgrade', 'downgrade');

-- Each change: from `effective_at` on, the subscription is billed on `to_plan_version_id`.
-- A change whose instant has not come yet is pending (billing.cancel_plan_change removes it).
CREATE TABLE billing.plan_changes (
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    effective_at timestamptz NOT NULL,
    from_plan_version_id bigint NOT NULL REFERENCES billing.plan_versions,
    to_plan_version_id bigint NOT NULL REFERENCES billing.plan_versions,
    kind billing.plan_change_kind NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, subscription_id, effective_at),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES billing.subscriptions (customer_id, id)
);

-- The plans of a subscription, oldest first: each version with the instant it took effect
-- and the instant the next one did (NULL for the last), pending ones included.
CREATE FUNCTION billing._plan_segments(sub billing.subscriptions)
RETURNS TABLE (plan_version_id bigint, from_at timestamptz, until_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    -- (Scalars: Citus plans no query with a whole row of a distributed table as a value.)
    customer_id bigint := sub.customer_id;
    subscription_id bigint := sub.id;
    instants timestamptz[];
    from_versions bigint[];
    to_versions bigint[];
BEGIN
    SELECT coalesce(array_agg(pc.effective_at ORDER BY pc.effective_at), '{}'),
           coalesce(array_agg(pc.from_plan_version_id ORDER BY pc.effective_at), '{}'),
           coalesce(array_agg(pc.to_plan_version_id ORDER BY pc.effective_at), '{}')
    INTO instants, from_versions, to_versions
    FROM billing.plan_changes pc WHERE pc.customer_id = customer_id AND pc.subscription_id = subscription_id;
    RETURN QUERY
    SELECT coalesce(from_versions[1], sub.plan_version_id), coalesce(sub.started_at, sub.subscription_at), instants[1]
    UNION ALL
    SELECT c.to_version, c.instant, instants[(c.n + 1)::integer]
    FROM unnest(instants, to_versions) WITH ORDINALITY c(instant, to_version, n);
END $$;

-- The subscription as billed at an instant: its row with the plan version in force then, and
-- the instant that plan took effect.
CREATE FUNCTION billing._in_force(sub billing.subscriptions, at timestamptz, OUT billed billing.subscriptions, OUT since timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    segment record;
BEGIN
    billed := sub;
    SELECT * INTO segment FROM billing._plan_segments(sub) s WHERE s.from_at <= at ORDER BY s.from_at DESC LIMIT 1;
    IF FOUND THEN
        billed.plan_version_id := segment.plan_version_id;
        since := segment.from_at;
    ELSE
        since := coalesce(sub.started_at, sub.subscription_at);
    END IF;
END $$;

-- A plan's price over a year, which decides whether a change is an upgrade (pricing.md).
CREATE FUNCTION billing._yearly_amount(plan billing.plan_versions) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT plan.amount * CASE plan.interval WHEN 'weekly' THEN 52 WHEN 'monthly' THEN 12 WHEN 'quarterly' THEN 4
                                            WHEN 'semiannual' THEN 2 ELSE 1 END
$$;

-- Keeps the subscription row and the directory in step with the plan changes whose instant
-- has come by as_of: the subscription names the plan in force, and ingestion splits events
-- by the property keys of every plan the subscription has had or will have. Returns how
-- many subscriptions changed plan.
CREATE FUNCTION billing._apply_plan_changes(as_of timestamptz, only_customer_id bigint DEFAULT NULL, only_subscription_id bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    customers bigint[];
    subscriptions bigint[];
    versions bigint[];
    customer_id bigint;
    subscription_id bigint;
    version bigint;
    applied integer := 0;
BEGIN
    -- Never ahead of time: a pending change stays cancellable until its instant.
    as_of := least(as_of, now());
    -- What is due is read first and each subscription then updated by its key (on Citus, one
    -- statement per shard: a statement over every shard may not precede the directory's
    -- update in a transaction).
    IF only_customer_id IS NOT NULL THEN
        SELECT array_agg(d.customer_id), array_agg(d.subscription_id), array_agg(d.to_plan_version_id)
        INTO customers, subscriptions, versions
        FROM (SELECT pc.customer_id, pc.subscription_id, pc.to_plan_version_id FROM billing.plan_changes pc
              WHERE pc.customer_id = only_customer_id AND pc.subscription_id = only_subscription_id AND pc.effective_at <= as_of
              ORDER BY pc.effective_at DESC LIMIT 1) d;
    ELSE
        SELECT array_agg(d.customer_id), array_agg(d.subscription_id), array_agg(d.to_plan_version_id)
        INTO customers, subscriptions, versions
        FROM (SELECT DISTINCT ON (pc.customer_id, pc.subscription_id) pc.customer_id, pc.subscription_id, pc.to_plan_version_id
              FROM billing.plan_changes pc WHERE pc.effective_at <= as_of
              ORDER BY pc.customer_id, pc.subscription_id, pc.effective_at DESC) d;
    END IF;
    FOR n IN 1 .. coalesce(cardinality(customers), 0) LOOP
        -- (Scalars: an array element as a parameter of a statement on a distributed table
        -- crashes Citus 13.2's router planner.)
        customer_id := customers[n];
        subscription_id := subscriptions[n];
        version := versions[n];
        UPDATE billing.subscriptions s SET plan_version_id = version
        WHERE s.customer_id = customer_id AND s.id = subscription_id AND s.plan_version_id <> version;
        CONTINUE WHEN NOT FOUND;
        UPDATE billing.subscription_directory d SET plan_version_id = version
        WHERE d.customer_id = customer_id AND d.subscription_id = subscription_id;
        applied := applied + 1;
    END LOOP;
    RETURN applied;
END $$;

-- The directory's list of the plan versions ingestion splits a subscription's events for.
CREATE FUNCTION billing._note_plan_versions(sub billing.subscriptions) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    versions bigint[];
BEGIN
    versions := ARRAY(SELECT DISTINCT s.plan_version_id FROM billing._plan_segments(sub) s ORDER BY 1);
    UPDATE billing.subscription_directory d SET plan_version_ids = versions
    WHERE d.customer_id = sub.customer_id AND d.subscription_id = sub.id AND d.plan_version_ids <> versions;
END $$;

-- Moves a subscription to another plan (its current version). An upgrade (the new plan
-- costs at least as much per year) takes effect at `at`: the old plan is billed through the
-- day before, the new one from the change day, on one invoice (created at once when `at` has
-- come), and an old plan paid in advance gets a credit note for its unused days from the
-- change day on. A downgrade takes effect at the end of the current period and is pending
-- until then. A change replaces a pending one.
CREATE FUNCTION billing.change_plan(external_subscription_id text, plan text, at timestamptz DEFAULT now())
RETURNS billing.plan_changes
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    cust billing.customers;
    current_plan billing.plan_versions;
    new_plan billing.plan_versions;
    last_billed timestamptz;
    last_change timestamptz;
    period record;
    change billing.plan_changes;
BEGIN
    -- The directory row, then the subscription: the order billing.terminate_subscription locks them in.
    PERFORM 1 FROM billing.subscription_directory d WHERE d.external_id = external_subscription_id FOR UPDATE;
    SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = sub.customer_id AND s.id = sub.id FOR UPDATE;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = sub.customer_id;
    new_plan := billing._plan_version(plan);
    IF at IS NULL OR NOT isfinite(at) THEN
        PERFORM billing._invalid('at must be an instant', format('got %s', at), 'give the instant of the change, or leave it to now()');
    END IF;
    IF sub.terminated_at <= at THEN
        PERFORM billing._raise('55000', format('subscription "%s" is terminated', external_subscription_id),
            format('terminated at %s', sub.terminated_at), 'create a new subscription on the plan');
    END IF;
    IF at < coalesce(sub.started_at, sub.subscription_at) THEN
        PERFORM billing._invalid('the plan change is before the subscription started',
            format('got %s, started %s', at, coalesce(sub.started_at, sub.subscription_at)), 'change the plan at or after the start');
    END IF;
    SELECT max(i.billing_at) INTO last_billed FROM billing.invoices i
    WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.invoice_type = 'subscription';
    IF at <= last_billed THEN
        PERFORM billing._raise('55000', format('subscription "%s" is invoiced through %s', external_subscription_id, last_billed),
            format('got a plan change at %s', at), 'change the plan at a later instant; correct billed periods with a credit note');
    END IF;
    IF new_plan.currency <> cust.currency THEN
        PERFORM billing._invalid(format('plan "%s" is priced in %s, but customer "%s" is billed in %s', plan, new_plan.currency,
                                        cust.external_id, cust.currency),
            format('got plan %s', plan), format('change to a plan priced in %s', cust.currency));
    END IF;
    -- A change that has taken effect stays; pending ones give way to this one.
    SELECT max(pc.effective_at) INTO last_change FROM billing.plan_changes pc
    WHERE pc.customer_id = sub.customer_id AND pc.subscription_id = sub.id AND pc.effective_at <= now();
    IF at <= last_change THEN
        PERFORM billing._raise('55000', format('subscription "%s" changed plan at %s', external_subscription_id, last_change),
            format('got a plan change at %s', at), 'change the plan after the last change that took effect');
    END IF;
    DELETE FROM billing.plan_changes pc WHERE pc.customer_id = sub.customer_id AND pc.subscription_id = sub.id AND pc.effective_at >= at;
    SELECT * INTO current_plan FROM billing.plan_versions v WHERE v.id = ((billing._in_force(sub, at)).billed).plan_version_id;
    IF new_plan.id = current_plan.id THEN
        PERFORM billing._invalid(format('subscription "%s" is already on plan "%s"', external_subscription_id, plan),
            format('plan "%s" version %s is the plan in force at the change', plan, new_plan.version), 'name another plan');
    END IF;
    change := ROW(sub.customer_id, sub.id, at, current_plan.id, new_plan.id, 'upgrade'::billing.plan_change_kind, now());
    IF billing._yearly_amount(new_plan) < billing._yearly_amount(current_plan) THEN
        SELECT * INTO period FROM billing.period_bounds(current_plan.interval::text, sub.billing_time::text,
            (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date, at, cust.timezone) pb;
        change.effective_at := period.to_datetime + interval '1 microsecond';
        change.kind := 'downgrade';
        IF sub.terminated_at <= change.effective_at THEN
            PERFORM billing._raise('55000', format('subscription "%s" ends before the downgrade would take effect', external_subscription_id),
                format('terminated at %s; the current period ends at %s', sub.terminated_at, period.to_datetime),
                'a downgrade takes effect at the end of the current period');
        END IF;
    END IF;
    INSERT INTO billing.plan_changes (customer_id, subscription_id, effective_at, from_plan_version_id, to_plan_version_id, kind, requested_at)
    VALUES (sub.customer_id, sub.id, change.effective_at, current_plan.id, new_plan.id, change.kind, change.requested_at);
    PERFORM billing._note_plan_versions(sub);
    PERFORM billing._emit(sub.customer_id, 'subscription.plan_changed',
        jsonb_build_object('subscription_external_id', sub.external_id, 'customer_external_id', cust.external_id,
                           'kind', change.kind, 'effective_at', change.effective_at,
                           'from_plan_code', (SELECT p.code FROM billing.plans p WHERE p.id = current_plan.plan_id), 'to_plan_code', plan));
    IF change.effective_at <= now() THEN
        PERFORM billing._apply_plan_changes(now(), sub.customer_id, sub.id);
        -- An upgrade that has happened is billed at once, up to its instant: the invoice
        -- with the old plan's last fees and the new plan's first fees paid in advance.
        IF change.kind = 'upgrade' THEN
            PERFORM billing._bill_subscription(sub.customer_id, sub.id, change.effective_at);
        END IF;
    END IF;
    RETURN change;
END $$;

-- Cancels a subscription's pending plan change (a scheduled downgrade, or an upgrade at a
-- later instant; the latest if there are several); returns it.
CREATE FUNCTION billing.cancel_plan_change(external_subscription_id text)
RETURNS billing.plan_changes
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    canceled billing.plan_changes;
    last_billed timestamptz;
BEGIN
    PERFORM 1 FROM billing.subscription_directory d WHERE d.external_id = external_subscription_id FOR UPDATE;
    PERFORM 1 FROM billing.subscriptions s WHERE s.customer_id = sub.customer_id AND s.id = sub.id FOR UPDATE;
    SELECT max(i.billing_at) INTO last_billed FROM billing.invoices i
    WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.invoice_type = 'subscription';
    DELETE FROM billing.plan_changes pc
    WHERE pc.customer_id = sub.customer_id AND pc.subscription_id = sub.id
      AND pc.effective_at = (SELECT max(p.effective_at) FROM billing.plan_changes p
                             WHERE p.customer_id = sub.customer_id AND p.subscription_id = sub.id AND p.effective_at > now())
    RETURNING * INTO canceled;
    IF canceled.effective_at IS NULL THEN
        PERFORM billing._raise('55000', format('subscription "%s" has no pending plan change', external_subscription_id),
            'no change of its plan takes effect after now', 'list changes in billing_bi.plan_changes');
    END IF;
    -- A change billed ahead of time (billing as of a later instant) stands.
    IF canceled.effective_at <= last_billed THEN
        PERFORM billing._raise('55000', format('the pending plan change of subscription "%s" is invoiced already', external_subscription_id),
            format('it takes effect at %s; the subscription is invoiced through %s', canceled.effective_at, last_billed),
            'change the plan again after that instant');
    END IF;
    PERFORM billing._note_plan_versions(sub);
    RETURN canceled;
END $$;

REVOKE ALL ON FUNCTION billing._plan_segments(billing.subscriptions), billing._in_force(billing.subscriptions, timestamptz),
    billing._yearly_amount(billing.plan_versions), billing._apply_plan_changes(timestamptz, bigint, bigint),
    billing._note_plan_versions(billing.subscriptions), billing.change_plan(text, text, timestamptz),
    billing.cancel_plan_change(text) FROM PUBLIC;

-- pg_dump keeps the rows (the table belongs to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.plan_changes', '');
