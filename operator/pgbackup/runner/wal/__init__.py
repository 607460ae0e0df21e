"""Continuous WAL archiving: segment arithmetic (xlog), the archive in storage (archive), WAL retention."""
