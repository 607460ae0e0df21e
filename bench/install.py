"""Install from Debian what the benchmark needs and is missing (only as root; idempotent).

What cannot be installed is reported and the benchmark goes on: its tool becomes a row saying so.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from collections.abc import Iterable

# postgresql: Debian's default major (15 on bookworm), as the shared harness uses; stunnel4 + openssl: the TLS
# endpoint pgBackRest needs in front of moto.
PACKAGES = ("postgresql", "postgresql-contrib", "pgbackrest", "barman-cli-cloud", "stunnel4", "openssl", "gzip")


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return done.returncode == 0 and "install ok installed" in done.stdout


def available(package: str) -> bool:
    done = subprocess.run(["apt-cache", "show", package], capture_output=True, text=True)
    return done.returncode == 0 and bool(done.stdout.strip())


class Installer:
    def __init__(self) -> None:
        self.updated = False
        self.problems: list[str] = []

    def install(self, packages: Iterable[str]) -> None:
        missing = [p for p in packages if not installed(p)]
        if not missing:
            return
        if os.geteuid() != 0:
            self.problems.append(f"not root: cannot install {' '.join(missing)} (their rows will say so)")
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if not self.updated:
            say("apt-get update")
            subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
            self.updated = True
        say(f"apt-get install {' '.join(missing)}")
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            # one at a time, so one package apt cannot give does not block the others
            for package in missing:
                one = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if one.returncode != 0:
                    self.problems.append(f"apt-get install {package} failed: {one.stderr.strip()[-200:]}")


def ensure_tools() -> list[str]:
    """Install what is missing; return what could not be installed, one sentence each."""
    if not os.path.exists("/usr/bin/dpkg-query"):
        return ["not a Debian system: install PostgreSQL, pgBackRest, barman-cli-cloud and stunnel yourself"]
    installer = Installer()
    installer.install(PACKAGES)
    majors = sorted(int(p.split("/")[4]) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if majors:
        pgvector = f"postgresql-{majors[-1]}-pgvector"
        if installed(pgvector):
            pass
        elif available(pgvector):
            installer.install([pgvector])
        else:
            say(f"{pgvector} is not in the apt sources: the embedding column is real[] instead of vector(384)")
    for problem in installer.problems:
        say(problem)
    return installer.problems
