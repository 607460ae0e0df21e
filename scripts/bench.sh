#!/usr/bin/env bash
# `make bench-shared`: run ../shared/bench (the team's benchmark harness; `make bench` runs our own, bench/) with the pgbackup runner as candidates, side by side with
# pg_dump | gzip + upload, pg_dump -Fc/-Fd, pg_basebackup, pgBackRest and barman-cloud on the same dataset.
#   scripts/bench.sh                     # scale 50 (harness default), table on stdout
#   scripts/bench.sh --scale 5 --json /tmp/bench.json
# Extra arguments go to run_bench.py (see ../shared/bench/README.md). Candidates:
#   pgbackup-s3        logical, pg_dump -Fc streamed -> zstd -> moto S3
#   pgbackup-fd-s3     logical, pg_dump -Fd -j2 in scratch -> tar -> zstd -> moto S3
#   pgbackup-vol       logical, custom format to a local directory (volume backend)
#   pgbackup-phys-vol  physical, pg_basebackup -Ft -X fetch -> zstd -> local directory
#   pgbackup-phys-s3   physical, same to moto S3
# and restores of pgbackup-s3 / pgbackup-fd-s3 into the harness's empty database.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="${BENCH_DIR:-$ROOT/../shared/bench}"
PGBACKUP="$ROOT/.venv/bin/pgbackup"
PYTHON="$ROOT/.venv/bin/python"
[ -x "$PGBACKUP" ] || { echo "scripts/bench.sh: $PGBACKUP missing: run 'make deps' first" >&2; exit 1; }
[ -f "$BENCH/bench.sh" ] || { echo "scripts/bench.sh: no harness at $BENCH (set BENCH_DIR; make bench runs the repository's own benchmark, bench/)" >&2; exit 1; }

HELPERS="$(mktemp -d "${TMPDIR:-/tmp}/pgbackup-bench-XXXXXX")"
chmod 755 "$HELPERS"
trap 'rm -rf "$HELPERS"' EXIT

# policy.py MODE: prints the policy JSON for the harness's env (PGHOST/PGPORT/PGDATABASE, BENCH_S3_*, BENCH_OUT_DIR).
cat >"$HELPERS/policy.py" <<'PY'
import json, os, sys
mode = sys.argv[1]
spec = {
    "database": {"host": os.environ.get("PGHOST", "127.0.0.1"), "port": int(os.environ.get("PGPORT", "5432")),
                 "databases": [os.environ.get("PGDATABASE", "bench")], "credentialsSecret": {"name": "bench"},
                 "sslMode": "disable"},
    "schedule": "0 2 * * *",
    "retention": {"keepLast": 100},
    "compression": {"algorithm": "zstd", "level": 3},
    "method": "physical" if "phys" in mode else "logical",
    "logical": {"format": "directory", "jobs": 2} if "fd" in mode else {"format": "custom"},
}
if mode.endswith("s3"):
    spec["storage"] = {"s3": {"bucket": os.environ["BENCH_S3_BUCKET"], "endpoint": os.environ["BENCH_S3_ENDPOINT"],
                              "forcePathStyle": True, "prefix": "pgbackup", "partSizeMib": 16}}
else:
    spec["storage"] = {"volume": {"claimName": "bench", "path": ""}}
print(json.dumps({"name": f"bench-{mode}", "namespace": "bench", "spec": spec}))
PY

# run.sh MODE COMMAND...: the runner with the policy and env a Job would give it.
cat >"$HELPERS/run.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
mode="\$1"; shift
export PGBACKUP_POLICY="\$("$PYTHON" "$HELPERS/policy.py" "\$mode")"
export PGBACKUP_VOLUME_ROOT="\${BENCH_OUT_DIR}" PGBACKUP_SCRATCH="\${BENCH_OUT_DIR}" PGBACKUP_SUMMARY_FILE=/dev/null
export PGUSER="\${PGUSER:-postgres}"
exec "$PGBACKUP" "\$@" 2>>"\${BENCH_OUT_DIR}/pgbackup.log"
SH
chmod 755 "$HELPERS/run.sh" "$HELPERS/policy.py"
RUN="$HELPERS/run.sh"

args=(
  --candidate "pgbackup-s3=$RUN s3 backup >/dev/null"
  --candidate "pgbackup-fd-s3=$RUN fd-s3 backup >/dev/null"
  --candidate "pgbackup-vol=$RUN vol backup >/dev/null"
  --candidate "pgbackup-phys-vol=$RUN phys-vol backup >/dev/null"
  --candidate "pgbackup-phys-s3=$RUN phys-s3 backup >/dev/null"
  --candidate-restore "pgbackup-s3=$RUN s3 restore latest --target-database \"\$PGDATABASE\" --allow-empty-target >/dev/null"
  --candidate-restore "pgbackup-fd-s3=$RUN fd-s3 restore latest --target-database \"\$PGDATABASE\" --allow-empty-target --jobs 2 >/dev/null"
)
bash "$BENCH/bench.sh" "${args[@]}" "$@"
