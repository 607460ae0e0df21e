"""Talking to PostgreSQL: connections (pg), the client and server programs (tools), what the manifest records about
a server and its databases (facts), client programs as child processes (children), throwaway servers (instance,
with the account they run as and their settings: account, server_settings), post-restore checks (checks)."""
