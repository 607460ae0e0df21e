"""Shared fixtures: real PostgreSQL servers (tests/fixtures/postgres.py) and a real moto S3 server
(tests/fixtures/s3.py). Nothing here mocks psycopg, pg_dump, boto3 or the Kubernetes client."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.s3"]
