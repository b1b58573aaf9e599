-- The schema pg_billing owns, as text a diff can compare: every member object, and for
-- each what a fresh install and an upgraded database must agree on (columns in order,
-- defaults, constraints, indexes, triggers, views, function definitions, aggregates,
-- casts, sequences, table options, comments, grants, config dump registrations).
-- Tier 9 runs it in a freshly installed database and in one upgraded from the previous
-- release, and requires the two outputs to be identical.
\pset format unaligned
\pset tuples_only on
WITH members AS (
    SELECT d.classid, d.objid, d.objsubid
    FROM pg_catalog.pg_depend d
    WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
      AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pg_billing')
), relations AS (
    SELECT c.oid, c.relname FROM pg_catalog.pg_class c
    WHERE c.relnamespace = 'billing'::regnamespace
), routines AS (
    SELECT p.oid, p.oid::regprocedure::text AS signature, p.prokind FROM pg_catalog.pg_proc p
    WHERE p.pronamespace = 'billing'::regnamespace
)
SELECT line FROM (
    SELECT 'member ' || pg_catalog.pg_describe_object(classid, objid, objsubid) AS line FROM members
    UNION ALL
    SELECT format('column %s #%s %s %s not null %s default %s collation %s identity %s generated %s',
                  r.relname, row_number() OVER (PARTITION BY r.oid ORDER BY a.attnum), a.attname,
                  pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), a.attcollation::regcollation, a.attidentity, a.attgenerated)
    FROM relations r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid
    LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('relation %s kind %s persistence %s replica identity %s options %s acl %s row security %s',
                  r.relname, c.relkind, c.relpersistence, c.relreplident, c.reloptions, c.relacl, c.relrowsecurity)
    FROM relations r JOIN pg_catalog.pg_class c ON c.oid = r.oid
    UNION ALL
    SELECT format('constraint %s %s %s', r.relname, co.conname, pg_catalog.pg_get_constraintdef(co.oid))
    FROM relations r JOIN pg_catalog.pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT format('index %s', pg_catalog.pg_get_indexdef(i.indexrelid))
    FROM relations r JOIN pg_catalog.pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('trigger %s enabled %s', pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled)
    FROM relations r JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT format('view %s %s', r.relname, pg_catalog.pg_get_viewdef(r.oid))
    FROM relations r JOIN pg_catalog.pg_class c ON c.oid = r.oid AND c.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('sequence %s %s %s %s %s %s %s', r.relname, s.seqtypid::regtype, s.seqstart, s.seqincrement,
                  s.seqmax, s.seqmin, s.seqcycle)
    FROM relations r JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.oid
    UNION ALL
    SELECT format('routine %s acl %s definition %s', f.signature, p.proacl,
                  CASE WHEN f.prokind IN ('f', 'p') THEN pg_catalog.pg_get_functiondef(f.oid) END)
    FROM routines f JOIN pg_catalog.pg_proc p ON p.oid = f.oid
    UNION ALL
    SELECT format('aggregate %s %s %s %s %s %s', f.signature, ag.aggtransfn, ag.aggfinalfn, ag.aggtranstype::regtype,
                  ag.aggfinalmodify, ag.agginitval)
    FROM routines f JOIN pg_catalog.pg_aggregate ag ON ag.aggfnoid = f.oid
    UNION ALL
    SELECT format('type %s %s acl %s input %s output %s', t.oid::regtype, t.typtype, t.typacl, t.typinput, t.typoutput)
    FROM pg_catalog.pg_type t
    WHERE t.typnamespace = 'billing'::regnamespace AND t.typtype <> 'c' AND t.typelem = 0
    UNION ALL
    SELECT format('enum %s %s %s', e.enumtypid::regtype, e.enumsortorder, e.enumlabel)
    FROM pg_catalog.pg_enum e JOIN pg_catalog.pg_type t ON t.oid = e.enumtypid
    WHERE t.typnamespace = 'billing'::regnamespace
    UNION ALL
    SELECT format('cast %s as %s %s %s %s', ca.castsource::regtype, ca.casttarget::regtype, ca.castfunc::regprocedure,
                  ca.castcontext, ca.castmethod)
    FROM pg_catalog.pg_cast ca JOIN members m ON m.classid = 'pg_catalog.pg_cast'::regclass AND m.objid = ca.oid
    UNION ALL
    SELECT format('comment %s: %s', pg_catalog.pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
    FROM pg_catalog.pg_description d
    WHERE (d.classoid, d.objoid) IN (SELECT classid, objid FROM members)
    UNION ALL
    SELECT format('schema billing acl %s', n.nspacl) FROM pg_catalog.pg_namespace n WHERE n.nspname = 'billing'
    UNION ALL
    SELECT format('config dump %s %s', c.relname, e.extcondition[s.ordinality])
    FROM pg_catalog.pg_extension e, unnest(e.extconfig) WITH ORDINALITY s(relid, ordinality)
    JOIN pg_catalog.pg_class c ON c.oid = s.relid
    WHERE e.extname = 'pg_billing'
) snapshot
ORDER BY line COLLATE "C";
