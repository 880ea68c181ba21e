-- Captured from PostgreSQL 15 (DateStyle ISO, TimeZone UTC) with:
--   psql -f pg15_edge_values.sql
--   psql -Atc "select lsn, encode(data, 'hex') from pg_logical_slot_peek_binary_changes('s', NULL, NULL,
--     'proto_version', '1', 'publication_names', 'pub', 'messages', 'true')" > pg15_edge_values.txt
SET TimeZone = 'UTC';
CREATE TABLE edge (
  id int8 PRIMARY KEY, b bool, i2 int2, i4 int4, f4 float4, f8 float8, n numeric, t text, vc varchar(10),
  bp char(3), nm name, by bytea, j json, jb jsonb, u uuid, d date, tm time, ts timestamp, tstz timestamptz,
  iv interval, arr int4[], big text, o oid
);
ALTER TABLE edge ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE PUBLICATION pub FOR TABLE edge;
SELECT pg_create_logical_replication_slot('s', 'pgoutput');
INSERT INTO edge VALUES
 (1, true, -32768, 2147483647, 'NaN', '-0', (repeat('9',1000) || '.' || repeat('1', 50))::numeric, 'héllo', 'vc', 'ab', 'nm', '\x00ff', '{"a": 1}', '{"b": [1, 2]}',
  'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '4713-01-01 BC', '24:00:00', '294276-12-31 23:59:59.999999', '2024-02-29 12:00:00.5+05:30',
  '1 year 2 mons 3 days 04:05:06.789', '{1,2,NULL}', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g), 4294967295),
 (2, false, 0, 0, 'Infinity', '1e308', 'NaN', '', NULL, NULL, NULL, '\x', 'null', 'null', NULL, 'infinity', '00:00:00.000001', '-infinity', '1970-01-01 00:00:00+00',
  '-1 days +02:03:00', '{}', 'small', 0),
 (3, NULL, NULL, NULL, '-Infinity', '1.5e-7', '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2024-02-29', '23:59:59.123', '2000-01-01 00:00:00.1', '0044-03-15 12:00:00+00 BC',
  '00:00:00', NULL, NULL, NULL);
UPDATE edge SET t = 'changed' WHERE id = 1;
UPDATE edge SET id = 10 WHERE id = 2;
ALTER TABLE edge ADD COLUMN extra int4;
INSERT INTO edge (id, extra) VALUES (4, 44);
DELETE FROM edge WHERE id = 3;
TRUNCATE edge;
SELECT pg_logical_emit_message(false, 'hb', 'beat');
