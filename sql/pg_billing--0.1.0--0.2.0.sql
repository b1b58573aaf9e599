-- pg_billing 0.1.0 → 0.2.0. Every schema change after the first release is added here,
-- in the order it was made, until 0.2.0 is released; from then on this file is frozen
-- too and the next version gets its own. Test tier 9 checks that a database upgraded
-- through it has exactly the schema of a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION pg_billing UPDATE TO '0.2.0'" to load this file. \quit
