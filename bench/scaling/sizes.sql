-- Bytes per row of each table of the book and of each of its indexes, as loaded by load.sql.
\set ON_ERROR_STOP on
WITH t AS (
  SELECT c.oid, c.relname, (SELECT count(*) FROM phones) AS n FROM pg_class c
  WHERE c.relname = 'phones'
  UNION ALL SELECT c.oid, c.relname, (SELECT count(*) FROM sessions) FROM pg_class c
  WHERE c.relname = 'sessions'
  UNION ALL SELECT c.oid, c.relname, (SELECT count(*) FROM session_events) FROM pg_class c
  WHERE c.relname = 'session_events'
)
SELECT t.relname AS relation, t.n AS rows,
       pg_relation_size(t.oid) / t.n AS heap_bytes_per_row,
       pg_indexes_size(t.oid) / t.n AS index_bytes_per_row,
       pg_total_relation_size(t.oid) / t.n AS total_bytes_per_row
FROM t ORDER BY 1;
SELECT i.indrelid::regclass AS table_name, i.indexrelid::regclass AS index_name,
       pg_relation_size(i.indexrelid) / greatest(c.reltuples, 1)::bigint AS bytes_per_row
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
WHERE c.relname IN ('phones', 'sessions', 'session_events') ORDER BY 1, 2;
SELECT pg_total_relation_size('usage_rollups') AS usage_rollups_bytes,
       (SELECT count(*) FROM usage_rollups) AS usage_rollup_rows;
