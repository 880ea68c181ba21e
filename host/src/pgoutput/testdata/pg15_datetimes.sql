-- Captured with: psql -At -F "|" -f pg15_datetimes.sql | grep -v "^$" > pg15_datetimes.txt
-- Random date/time values printed by PostgreSQL 15 next to the numbers
-- PostgreSQL itself computes for them (days / microseconds since 1970).
SET DateStyle = ISO; SET IntervalStyle = postgres; SELECT setseed(0.42);
CREATE TEMP TABLE s AS
SELECT g,
  -- Uniform over PostgreSQL's whole timestamp range, µs resolution.
  (timestamp '4713-11-24 00:00:00 BC' + ((random() * CASE WHEN g % 3 = 0 THEN 4714 ELSE 294276 END * 366) * interval '1 day') + (floor(random() * 86400e6) * interval '1 microsecond')) AS ts,
  (timestamp '1900-01-01' + ((random() * 200 * 366) * interval '1 day') + (floor(random() * 1e6) * interval '1 microsecond')) AS recent,
  make_interval(0, (floor(random() * 4000) - 2000)::int, 0, (floor(random() * 80000) - 40000)::int, 0, 0,
    (floor(random() * 2e11) - 1e11) / 1e6) AS iv
FROM generate_series(1, 400) g;
SELECT 'date', ts::date::text, ((ts::date - date '1970-01-01'))::text FROM s
UNION ALL
SELECT 'timestamp', ts::text, (extract(epoch from ts) * 1000000)::numeric(30,0)::text FROM s
UNION ALL
SELECT 'time', ts::time::text, (extract(epoch from ts::time) * 1000000)::numeric(30,0)::text FROM s
UNION ALL
SELECT 'interval', iv::text, (extract(year from iv) * 12 + extract(month from iv))::text || ' ' || extract(day from iv)::text || ' ' ||
   (extract(hour from iv) * 3600000000 + extract(minute from iv) * 60000000 + extract(microseconds from iv))::numeric(30,0)::text FROM s;
SET TimeZone = 'Asia/Kolkata';
SELECT 'timestamptz', recent::timestamptz::text, (extract(epoch from recent::timestamptz) * 1000000)::numeric(30,0)::text FROM s WHERE g <= 100;
SET TimeZone = 'Europe/Amsterdam';
SELECT 'timestamptz', recent::timestamptz::text, (extract(epoch from recent::timestamptz) * 1000000)::numeric(30,0)::text FROM s WHERE g > 100 AND g <= 200;
SET TimeZone = 'America/St_Johns';
SELECT 'timestamptz', recent::timestamptz::text, (extract(epoch from recent::timestamptz) * 1000000)::numeric(30,0)::text FROM s WHERE g > 200 AND g <= 300;
SET TimeZone = 'UTC';
SELECT 'timestamptz', ts::timestamptz::text, (extract(epoch from ts::timestamptz) * 1000000)::numeric(30,0)::text FROM s WHERE g > 300;
