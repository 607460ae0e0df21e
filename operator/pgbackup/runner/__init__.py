"""The backup runner: what the backup image does inside every Job (`pgbackup` CLI)."""

import os

# psycopg's C wait loop runs Python signal handlers only when a query returns, so a SIGTERM (pod deadline, node
# drain) during a long query would be ignored until it finished. Its pure-Python poll loop lets the handler run
# at once, so uploads are aborted and throwaway servers stopped. Must be set before psycopg is first imported.
os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_poll")
