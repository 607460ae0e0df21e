"""The project's backup benchmark: the pgbackup runner side by side with the tools users would otherwise pick.

`python -m bench --scale 5` (or `make bench`) starts a throwaway PostgreSQL and a moto S3 server on 127.0.0.1,
loads pgbench data plus a table of embeddings with a pg_trgm index, then times `pg_dump | gzip` + upload (the
cron baseline), `pg_dump -Fc/-Fd`, `pg_basebackup`, pgBackRest, barman-cloud and the runner on that same data,
and prints a Markdown table (JSON with --json). Modules, one job each:

- procs: run a command, wall time and peak RSS of its whole process tree
- postgres: the throwaway cluster; s3: the moto server (and a TLS front for pgBackRest)
- dataset: the data; anchors: the other tools; candidates: the pgbackup runner
- report: rows, ratios, the table; install: what is missing, from apt; cli: argument parsing and the run order
"""
