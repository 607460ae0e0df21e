# One image for the operator (`pgbackup-operator`, the default command) and for the backup, restore and
# verification Jobs it creates (`pgbackup ...`). Build: `make image`.
FROM python:3.12-slim-bookworm

# pg_dump must be at least as new as the server it dumps, so the image carries the newest PostgreSQL major.
ARG PG_MAJOR=18
ARG VERSION=0.1.0
ARG DEBIAN_FRONTEND=noninteractive

LABEL org.opencontainers.image.title="pgbackup-operator" \
      org.opencontainers.image.description="Declarative, verified PostgreSQL backups for Kubernetes: operator and backup runner" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.pgbackup.postgresql-major="${PG_MAJOR}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# PostgreSQL client and server binaries (the server restores backups to verify them) from the PostgreSQL
# project's apt repository, set up with Debian's own postgresql-common script and the signing key it ships;
# no cluster is created. Plus `age` (encryption) and `zstd` (compression) for manual emergency restores, and
# libnss-wrapper: initdb needs a passwd entry, which a pod run under another UID (OpenShift's restricted SCC, a
# runAsUser override) lacks; the runner then preloads the wrapper into its throwaway server's programs only.
# Versions follow the repositories (a rebuild picks up security fixes); PG_MAJOR pins the major.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-common \
 && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
 && sed -ri 's/#(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
 && apt-get install -y --no-install-recommends \
      "postgresql-${PG_MAJOR}" \
      "postgresql-client-${PG_MAJOR}" \
      "postgresql-${PG_MAJOR}-pgvector" \
      age \
      zstd \
      libnss-wrapper \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && pg_dump --version && initdb --version && age --version && zstd --version

# The user of the operator and of every Job; the chart and the Job builders run as uid/gid 65532.
RUN groupadd --system --gid 65532 pgbackup \
 && useradd --system --uid 65532 --gid 65532 --home-dir /home/pgbackup --create-home \
      --shell /usr/sbin/nologin pgbackup

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install --no-cache-dir . \
 && python -c "import pgbackup.api" \
 && command -v pgbackup-operator pgbackup \
 && rm -rf /src

WORKDIR /home/pgbackup
ENV HOME=/home/pgbackup
USER 65532:65532

# 8080: kopf liveness endpoint (/healthz); 9090: Prometheus metrics.
EXPOSE 8080 9090

CMD ["pgbackup-operator"]
