#!/usr/bin/env bash
# The fair baseline for `perimeter audit`: what an operator would script to get
# the same core answer (every listener, its process, the package behind it)
# from standard tools. List listeners with their processes, take every pid,
# resolve each one's executable, and ask dpkg which package owns each distinct
# executable, one `dpkg -S` per executable.
#
# It does strictly less than perimeter (no accounts, no cgroups, no deleted or
# world-writable executables, no service or firewall checks), so it is a lower
# bound on the work, not an equal.
set -euo pipefail

ss -tulpnH \
    | grep -o 'pid=[0-9]*' \
    | cut -d= -f2 \
    | sort -un \
    | while read -r pid; do
        # A process that exited since ss saw it has no exe; skip it as
        # perimeter does.
        readlink "/proc/$pid/exe" 2>/dev/null || true
    done \
    | sed 's/ (deleted)$//' \
    | sort -u \
    | while read -r exe; do
        # An unpackaged executable makes dpkg -S exit 1: that is an answer.
        dpkg -S "$exe" || true
    done
