# One image for the operator (`pgbackup-operator`, the default command) and for the backup, restore and
# verification Jobs it creates (`pgbackup ...`). Build: `make image`.
FROM python:3.12-slim-bookworm

# Every supported PostgreSQL major: physical verification and point-in-time recovery start a server of the
# backup's own major (the runner picks /usr/lib/postgresql/<major>/bin from the manifest's server version); pg_dump
# and pg_restore of the server's major (or newer) do logical work. PG_MAJOR, the newest, is the one on PATH.
ARG PG_MAJORS="14 15 16 17 18"
ARG PG_MAJOR=18
ARG VERSION=0.1.0
ARG DEBIAN_FRONTEND=noninteractive

LABEL org.opencontainers.image.title="pgbackup-operator" \
      org.opencontainers.image.description="Declarative, verified PostgreSQL backups for Kubernetes: operator and backup runner" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.pgbackup.postgresql-major="${PG_MAJOR}" \
      dev.pgbackup.postgresql-majors="${PG_MAJORS}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# PostgreSQL client and server binaries of every major in PG_MAJORS (the server restores backups to verify them;
# contrib is part of the server package) from the PostgreSQL project's apt repository, set up with Debian's own
# postgresql-common script and the signing key it ships; no cluster is created. pgvector for each major: a
# restored cluster (physical verification, PITR) or a dump using it needs the library of its own major. Other
# extensions' libraries are not carried (build on this image to add them). The JIT's bitcode (about 26 MB per
# major) is removed: it only serves inlining, which throwaway servers do not need. Plus `age` (encryption) and
# `zstd` (compression) for manual emergency restores, and libnss-wrapper: initdb needs a passwd entry, which a
# pod run under another UID (OpenShift's restricted SCC, a runAsUser override) lacks; the runner then preloads
# the wrapper into its throwaway server's programs only.
# Versions follow the repositories (a rebuild picks up security fixes); PG_MAJORS pins the majors.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-common \
 && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
 && sed -ri 's/#(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
 && read -ra majors <<< "${PG_MAJORS}" \
 && packages=() \
 && for major in "${majors[@]}"; do packages+=("postgresql-${major}" "postgresql-${major}-pgvector"); done \
 && apt-get install -y --no-install-recommends \
      "${packages[@]}" \
      "postgresql-client-${PG_MAJOR}" \
      age \
      zstd \
      libnss-wrapper \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /usr/lib/postgresql/*/lib/bitcode \
 && for major in "${majors[@]}"; do "/usr/lib/postgresql/${major}/bin/initdb" --version; done \
 && pg_dump --version && age --version && zstd --version

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
