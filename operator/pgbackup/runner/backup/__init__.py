"""Taking a backup: the run from claim to manifest and summary (run), pg_dump (logical), pg_basebackup (physical),
application volumes (volumes); after it, copies to other storages (copies), then housekeeping: retention of the
backups and the WAL archive, and removing what failed runs left (housekeeping)."""
