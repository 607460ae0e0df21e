"""Where backups live: the Storage interface and its errors (base), a filesystem/volume (fs) and S3 (s3; its retries logged
and counted by s3_retries), opening the
storage a policy or a copy names (factory), and the stream every object passes through: pipeline (compress ->
encrypt -> checksum on the way in), readback (verify -> decrypt -> decompress on the way out), identity (age keys)."""
