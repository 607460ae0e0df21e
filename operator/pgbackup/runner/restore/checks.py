"""The checks after a RestoreRequest's restore, run in what was restored before anything is swapped in: row counts
against the manifest, extensions, and the request's SQL checks."""

from __future__ import annotations

from pgbackup.api.policy import SqlCheck
from pgbackup.api.restore import CheckResult, RestoreRequestSpec
from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.postgres.checks import check_extensions, compare_row_counts, failed, run_sql_checks
from pgbackup.runner.restore.plan import PlannedRestore


class ChecksFailed(RunnerError):
    reason = "CheckFailed"


def _rename_check_names(results: list[CheckResult], temp: str, final: str) -> list[CheckResult]:
    if temp == final:
        return results
    return [r.model_copy(update={"name": r.name.replace(f":{temp}.", f":{final}.", 1)}) for r in results]


def run_checks(spec: RestoreRequestSpec, planned: PlannedRestore, actual_rows: dict[str, dict[str, int]]
                ) -> tuple[list[CheckResult], dict[str, int]]:
    target = planned.target
    checks: list[CheckResult] = []
    row_counts: dict[str, int] = {}
    for step in planned.databases:
        actual = actual_rows[step.source]
        row_counts.update({f"{step.target}.{table}": count for table, count in actual.items()})
        if not planned.manifest.imported:  # an imported dump recorded no row counts to compare with
            checks += compare_row_counts(step.expected_rows, actual, database=step.target)
        checks += _rename_check_names(check_extensions(target, step.restore_into, spec.extensions),
                                      step.restore_into, step.target)
    # A check naming the backup's database (or the target name) runs in what was restored, before any swap.
    into = {name: step.restore_into for step in planned.databases for name in (step.source, step.target)}
    mapped = [SqlCheck(name=c.name, database=into.get(c.database, c.database), sql=c.sql) for c in spec.checks]
    checks += run_sql_checks(target, mapped)
    return checks, row_counts


def raise_on_failed(results: list[CheckResult], suffix: str = "", *, rowcount_reason: bool = True) -> None:
    """ChecksFailed listing the first failed checks (reason RowCountMismatch when only row counts differ)."""
    bad = failed(results)
    if not bad:
        return
    rowcount_only = rowcount_reason and all(c.name.startswith("rowcount:") for c in bad)
    listing = "; ".join(f"{c.name}: {c.message}" for c in bad[:10])
    raise ChecksFailed(f"{len(bad)} of {len(results)} post-restore check(s) failed: {listing}{suffix}",
                       reason="RowCountMismatch" if rowcount_only else "CheckFailed")
