"""Restoring: a logical backup into a new database (logical), a physical one into a data directory (physical),
application volumes (volumes), only some tables (selective), a point in time (pitr). Shared: reading and checking
the backup's objects (reading), staging a dump in scratch for `pg_restore -j` (staging) with the data offsets a
piped dump lacks (dump_offsets), the database DDL of a restore (ddl: made aside, dropped, renamed), safe tar
extraction (safetar). A RestoreRequest: what it says (request), end to end (run), planned before anything changes
(plan), carried out (execute), checked (checks), preceded by a safety backup (safety)."""
