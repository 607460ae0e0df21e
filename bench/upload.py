"""`python -m bench.upload FILE ENDPOINT BUCKET KEY`: the `aws s3 cp` step of the cron script, as its own
process so its time and memory are measured like any tool's (boto3 upload_file defaults: 8 MiB parts, 10
threads, the same as the AWS CLI). Credentials come from the environment."""

from __future__ import annotations

import sys

import boto3


def main(argv: list[str]) -> int:
    path, endpoint, bucket, key = argv
    boto3.client("s3", endpoint_url=endpoint).upload_file(path, bucket, key)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
