"""Shared fixtures: real PostgreSQL servers (tests/fixtures/postgres.py), a real moto S3 server
(tests/fixtures/s3.py), the runner's log in a file (tests/fixtures/runner_log.py) and a tiny tmpfs (tests/fixtures/disk.py). Nothing here mocks psycopg,
pg_dump, boto3 or the Kubernetes client."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.s3", "tests.fixtures.runner_log", "tests.fixtures.disk"]
