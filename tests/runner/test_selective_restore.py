"""Selective restore (`pgbackup restore --table/--schema`, RestoreRequest spec.include) against real PostgreSQL 15
and a volume: only the chosen tables (with their sequences, indexes and constraints) arrive, an existing
database keeps every other table as it was, unknown names are refused before anything changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgbackup.api import jobenv
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.cli.main import main
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.restore.run import run_restore_request
from pgbackup.runner.restore.selective import ObjectNotInBackup, Selection, parse_toc, restore_selected
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.storage.fs import FilesystemStorage
from tests.fixtures.postgres import PgServer, backup_policy, load_sample, runner_env, table_digest

SOURCE_DB = "shop"


@pytest.fixture(scope="module")
def shop_backup(pg15: PgServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    load_sample(pg15, SOURCE_DB)
    root = tmp_path_factory.mktemp("selective-volume")
    document = backup_policy(pg15, {"volume": {"claimName": "backups", "path": "orders"}}, databases=[SOURCE_DB],
                             logical={"globals": False})
    with pytest.MonkeyPatch.context() as patch:
        runner_env(pg15, patch, tmp_path_factory.mktemp("selective-env"))
        patch.setenv("PGBACKUP_VOLUME_ROOT", str(root))
        code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    return root, document, str(summary.backup_id)


def conn_params(server: PgServer) -> ConnParams:
    return ConnParams(host=server.host, port=server.port, user=server.user, password=server.password)


def catalog_of(root: Path) -> Catalog:
    return Catalog(FilesystemStorage(root / "orders"))


def relations(server: PgServer, dbname: str) -> set[str]:
    """Tables, sequences and indexes of the user schemas, 'kind:schema.name'."""
    rows = server.query("SELECT c.relkind, n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', "
                        "'pg_toast') AND c.relkind IN ('r', 'S', 'i')", dbname)
    return {f"{kind}:{name}" for kind, name in rows}


def databases(server: PgServer) -> set[str]:
    return {r[0] for r in server.query("SELECT datname FROM pg_database")}


def test_one_table_into_a_new_database_brings_its_sequence_and_indexes_only(
        shop_backup: tuple[Path, dict[str, Any], str], pg15: PgServer, tmp_path: Path) -> None:
    root, _, backup_id = shop_backup
    report = restore_selected(catalog_of(root), backup_id, conn_params(pg15), "sel_customers",
                              Selection.parse([], ["customers"]), scratch=tmp_path)
    assert report.ok and [(t.table, t.expected, t.actual) for t in report.tables] == [("public.customers", 200, 200)]
    assert relations(pg15, "sel_customers") == {"r:public.customers", "S:public.customers_id_seq",
                                                "i:public.customers_pkey"}
    assert table_digest(pg15, "sel_customers")["public.customers"] == table_digest(pg15, SOURCE_DB)["public.customers"]
    # the serial keeps counting where the source was
    assert pg15.query("SELECT nextval('customers_id_seq')", "sel_customers") == [(201,)]


def test_a_table_whose_foreign_key_target_is_left_out_restores_without_that_key(
        shop_backup: tuple[Path, dict[str, Any], str], pg15: PgServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    root, document, backup_id = shop_backup
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(document))
    with pytest.MonkeyPatch.context() as patch:
        runner_env(pg15, patch, tmp_path)
        patch.setenv("PGBACKUP_VOLUME_ROOT", str(root))
        code = main(["restore", backup_id, "--target-database", "sel_sales", "--schema", "sales", "--json",
                     "--policy", str(policy)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [t["table"] for t in out["tables"]] == ["sales.orders"] and out["ok"]
    assert relations(pg15, "sel_sales") == {"r:sales.orders", "S:sales.orders_id_seq", "i:sales.orders_pkey"}
    assert pg15.query("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", "sel_sales") == [(0,)]


def test_unknown_table_is_refused_before_anything_changes(
        shop_backup: tuple[Path, dict[str, Any], str], pg15: PgServer, tmp_path: Path) -> None:
    root, _, backup_id = shop_backup
    before = databases(pg15)
    with pytest.raises(ObjectNotInBackup) as refused:
        restore_selected(catalog_of(root), backup_id, conn_params(pg15), "sel_nothing",
                         Selection.parse(["nosuchschema"], ["sales.invoices"]), scratch=tmp_path)
    assert "has no schema 'nosuchschema', table sales.invoices" in str(refused.value)
    assert "public.customers" in str(refused.value)  # says what the backup does hold
    assert databases(pg15) == before


def request_doc(root: Path, document: dict[str, Any], server: PgServer, backup_id: str, **spec: Any) -> dict[str, Any]:
    return {"name": "sel-1", "namespace": "shop",
            "spec": {"policyRef": {"name": document["name"]}, "backup": backup_id,
                     "target": {"host": server.host, "port": server.port, **spec.pop("target", {})}, **spec},
            "policy": {"name": document["name"], "spec": document["spec"]}}


def run_request(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: PgServer, root: Path,
                request: dict[str, Any]) -> tuple[int, Any]:
    runner_env(server, monkeypatch, tmp_path)
    monkeypatch.setenv("PGBACKUP_VOLUME_ROOT", str(root))
    monkeypatch.setenv(jobenv.ENV_RESTORE, json.dumps(request))
    return run_restore_request()


@pytest.fixture
def live(pg15: PgServer) -> str:
    """An existing 'application' database: a copy of shop that has moved on since the backup."""
    name = "shop_live"
    pg15.query(f"DROP DATABASE IF EXISTS {name}")
    pg15.query(f"CREATE DATABASE {name} TEMPLATE {SOURCE_DB}")
    with pg15.connect(name) as conn:
        conn.execute("DELETE FROM docs WHERE id > 100")  # the damage to undo
        conn.execute("UPDATE docs SET body = 'overwritten' WHERE id <= 10")
        conn.execute("INSERT INTO customers (name) VALUES ('new since the backup')")
        conn.execute("INSERT INTO sales.orders (customer_id, amount) VALUES (1, 9.99)")
        conn.execute("CREATE TABLE audit (id int, what text)")
        conn.execute("INSERT INTO audit VALUES (1, 'kept')")
    return name


def test_overwrite_replaces_only_the_included_table(
        shop_backup: tuple[Path, dict[str, Any], str], pg15: PgServer, live: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root, document, backup_id = shop_backup
    before = table_digest(pg15, live)
    code, summary = run_request(monkeypatch, tmp_path, pg15, root, request_doc(
        root, document, pg15, backup_id, include={"tables": ["public.docs"]},
        target={"database": live, "overwrite": True}))
    assert code == 0, summary.error
    after = table_digest(pg15, live)
    assert after["public.docs"] == table_digest(pg15, SOURCE_DB)["public.docs"] != before["public.docs"]
    assert {k: v for k, v in after.items() if k != "public.docs"} == {k: v for k, v in before.items()
                                                                      if k != "public.docs"}
    assert "i:public.docs_body_trgm" in relations(pg15, live) and "S:public.docs_id_seq" in relations(pg15, live)
    assert [c.name for c in summary.result.checks if c.name.startswith("rowcount:")] == [f"rowcount:{live}.public.docs"]
    assert summary.result.pre_restore_backup  # the old contents are in the safety backup
    assert not [d for d in databases(pg15) if "__pgbackup_restore_" in d]  # the temporary database is gone
    assert any("keep only public.docs" in step for step in summary.plan.steps)
    assert any("drop the included tables" in step for step in summary.plan.steps)


def test_overwrite_of_a_table_others_depend_on_rolls_back_and_changes_nothing(
        shop_backup: tuple[Path, dict[str, Any], str], pg15: PgServer, live: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root, document, backup_id = shop_backup
    before = table_digest(pg15, live)
    code, summary = run_request(monkeypatch, tmp_path, pg15, root, request_doc(
        root, document, pg15, backup_id, include={"tables": ["customers"]},
        target={"database": live, "overwrite": True, "preRestoreBackup": False}))
    assert code == jobenv.EXIT_FAILED
    assert "rolled back" in str(summary.error) and "depends on a replaced table" in str(summary.error)
    assert table_digest(pg15, live) == before


def test_request_restores_a_schema_into_a_new_database(
        shop_backup: tuple[Path, dict[str, Any], str], pg15: PgServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root, document, backup_id = shop_backup
    code, summary = run_request(monkeypatch, tmp_path, pg15, root, request_doc(
        root, document, pg15, backup_id, include={"schemas": ["sales"], "tables": ["blobs"]},
        target={"database": "sel_rr_new"}))
    assert code == 0, summary.error
    assert {r for r in relations(pg15, "sel_rr_new") if r.startswith("r:")} == {"r:sales.orders", "r:public.blobs"}
    assert summary.result.row_counts == {"sel_rr_new.public.blobs": 3, "sel_rr_new.sales.orders": 1000}
    assert all(c.passed for c in summary.result.checks) and summary.result.pre_restore_backup is None


def test_unknown_table_in_a_request_is_refused_with_object_not_in_backup(
        shop_backup: tuple[Path, dict[str, Any], str], pg15: PgServer, live: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root, document, backup_id = shop_backup
    before_dbs, before = databases(pg15), table_digest(pg15, live)
    backups_before = len(catalog_of(root).ids())
    code, summary = run_request(monkeypatch, tmp_path, pg15, root, request_doc(
        root, document, pg15, backup_id, include={"tables": ["public.nope"]},
        target={"database": live, "overwrite": True}))
    assert code == jobenv.EXIT_USAGE and summary.reason == "ObjectNotInBackup"
    assert databases(pg15) == before_dbs and table_digest(pg15, live) == before
    assert len(catalog_of(root).ids()) == backups_before  # not even a safety backup was taken


def test_toc_lines_with_multi_word_types_parse() -> None:
    toc = parse_toc("; comment\n3380; 0 16468 TABLE DATA public blobs admin\n"
                    "3212; 2606 16475 FK CONSTRAINT sales orders orders_customer_id_fkey admin\n"
                    "3390; 0 0 SEQUENCE SET public customers_id_seq admin\n")
    assert [(e.desc, e.schema, e.tag) for e in toc] == [
        ("TABLE DATA", "public", "blobs"), ("FK CONSTRAINT", "sales", "orders orders_customer_id_fkey"),
        ("SEQUENCE SET", "public", "customers_id_seq")]


@pytest.mark.parametrize("include, says", [
    ({}, "name at least one schema or table"),
    ({"tables": ["a.b.c"]}, "should match pattern"),
    ({"tables": [""]}, "at least 1 character"),
    ({"schemas": ["s" * 64]}, "at most 63 characters"),
    ({"table": ["customers"]}, "Extra inputs are not permitted"),
])
def test_include_refuses_invalid_values(include: dict[str, Any], says: str) -> None:
    from pydantic import ValidationError

    from pgbackup.api.restore import RestoreRequestSpec

    with pytest.raises(ValidationError) as refused:
        RestoreRequestSpec.model_validate({"policyRef": {"name": "orders-db"}, "include": include})
    assert says in str(refused.value) and "include" in str(refused.value)


def test_a_table_using_extensions_restores_on_postgresql_18(pg18: PgServer, tmp_path: Path) -> None:
    """docs has a pgvector column and a pg_trgm index: the extensions come along, nothing else does."""
    load_sample(pg18, SOURCE_DB)
    document = backup_policy(pg18, {"volume": {"claimName": "backups", "path": "orders"}}, databases=[SOURCE_DB],
                             logical={"globals": False})
    with pytest.MonkeyPatch.context() as patch:
        runner_env(pg18, patch, tmp_path)
        patch.setenv("PGBACKUP_VOLUME_ROOT", str(tmp_path))
        code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    report = restore_selected(catalog_of(tmp_path), str(summary.backup_id), conn_params(pg18), "sel_docs18",
                              Selection.parse([], ["public.docs"]), scratch=tmp_path)
    assert report.ok and [t.table for t in report.tables] == ["public.docs"]
    assert relations(pg18, "sel_docs18") == {"r:public.docs", "S:public.docs_id_seq", "i:public.docs_pkey",
                                             "i:public.docs_body_trgm"}
    assert table_digest(pg18, "sel_docs18")["public.docs"] == table_digest(pg18, SOURCE_DB)["public.docs"]
