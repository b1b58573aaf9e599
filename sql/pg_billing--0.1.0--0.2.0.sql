-- pg_billing 0.1.0 → 0.2.0. Every schema change after the first release is added here,
-- in the order it was made, until 0.2.0 is released; from then on this file is frozen
-- too and the next version gets its own. Test tier 9 checks that a database upgraded
-- through it has exactly the schema of a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION pg_billing UPDATE TO '0.2.0'" to load this file. \quit

-- Raises an error with pg_billing's shape from PL/pgSQL (lowercase message, DETAIL with the
-- offending value, HINT with the fix), as the Rust side raises its own.
CREATE FUNCTION billing._raise(sqlstate text, message text, detail text, hint text) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail, HINT = hint;
END $$;

CREATE OR REPLACE FUNCTION billing._invalid(message text, detail text, hint text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM billing._raise('22023', message, detail, hint);
END $$;

CREATE OR REPLACE FUNCTION billing._unknown(kind text, key text, hint text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM billing._raise('23503', format('unknown %s "%s"', kind, key),
                           format('no %s has the code or external id %s', kind, key), hint);
END $$;

CREATE OR REPLACE FUNCTION billing.terminate_subscription(external_id text, terminated_at timestamptz DEFAULT now())
RETURNS billing.subscriptions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    subscription billing.subscriptions;
BEGIN
    SELECT * INTO subscription FROM billing.subscriptions s WHERE s.external_id = terminate_subscription.external_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM billing._unknown('subscription', external_id, 'check the external_id');
    END IF;
    IF subscription.status = 'terminated' THEN
        PERFORM billing._raise('55000', format('subscription "%s" is already terminated', external_id),
                               format('terminated at %s', subscription.terminated_at), 'create a new subscription');
    END IF;
    IF terminated_at < subscription.subscription_at THEN
        PERFORM billing._invalid('terminated_at is before the subscription started',
            format('got %s, started %s', terminated_at, subscription.subscription_at), 'terminate at or after the start');
    END IF;
    UPDATE billing.subscriptions s SET status = 'terminated', terminated_at = terminate_subscription.terminated_at,
        started_at = coalesce(s.started_at, s.subscription_at)
    WHERE s.id = subscription.id RETURNING * INTO subscription;
    RETURN subscription;
END $$;

REVOKE ALL ON FUNCTION billing._raise(text, text, text, text) FROM PUBLIC;
