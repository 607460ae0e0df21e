"""Continuous WAL archiving: the only owner of LSN and segment arithmetic (xlog); the archive in storage with
wal-push/wal-fetch, i.e. shipping a WAL segment (archive), what listings of it show (listing) and can recover
(window); WAL retention (retention); pg_receivewal streaming (stream) through its replication slots (slots),
reporting to an observer (observer) that keeps the state (status) served over HTTP (status_server)."""
