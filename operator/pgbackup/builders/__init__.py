"""Pure functions: validated specs -> Kubernetes manifests and status, as plain dicts. No I/O, no kopf."""
