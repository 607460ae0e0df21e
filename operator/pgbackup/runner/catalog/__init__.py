"""What storage holds: the manifest format (manifest), the catalog of backups read from storage (catalog), re-reading
a backup's objects (check), the claim a run takes on its backup id (claim), the retention rules (retention) and
registering an existing dump (importer)."""
