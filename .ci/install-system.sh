#!/usr/bin/env bash
# Installs the system packages the tests need, when they are missing (Debian/Ubuntu, apt-get).
# - OpenSSH server: the remote-storage tests start a real sshd on 127.0.0.1.
# - PostgreSQL server binaries (initdb, pg_ctl): the SQL catalog tests start a real server.
# - SLURM (slurmctld, slurmd, client commands) and munge: tests/slurm start a one-node cluster.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-system.sh: not root and no sudo; cannot install system packages" >&2
    fi
fi

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/slurmd ] || ! command -v sbatch >/dev/null 2>&1; then
    missing+=(slurm-wlm)
fi
[ -x /usr/sbin/munged ] || missing+=(munge)

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-system.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
        $SUDO apt-get update -q
        $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
    fi
fi

# sshd started as root insists on its privilege-separation directory (the tests create it too)
if [ "$(id -u)" -eq 0 ]; then mkdir -p /run/sshd && chmod 755 /run/sshd; fi

# strax (a benchmark peer and the writer of the strax-data tests) pins zarr < 3: it is installed
# with --no-deps by its own script.
if [ -f "$(dirname "$0")/install-strax.sh" ]; then bash "$(dirname "$0")/install-strax.sh"; fi
