"""Restore verification: restore a backup into a throwaway server and check it (run), the NOLOGIN roles a backup
without globals needs there (roles), and the verification.json record left beside the manifest (record)."""
