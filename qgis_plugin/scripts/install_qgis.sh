#!/usr/bin/env bash
# Install QGIS (Debian's packages: QGIS 3.22 on bookworm) for the QGIS plugin's tests.
#
# Idempotent: does nothing when qgis_process.bin and QGIS's Python bindings are present.
# Where it cannot install (no apt-get, or not root and no password-less sudo) it says so in one
# line and exits 0: the QGIS tests then skip with that reason. Where it can and apt-get fails,
# it exits 1, so that CI fails instead of passing with the QGIS tests skipped. Grass and other
# "recommended" extras are not installed: the plugin and its tests need only QGIS core, its
# Python bindings and the data providers.
set -u

if command -v qgis_process.bin >/dev/null 2>&1 &&
    /usr/bin/python3 -c "import qgis.core" >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_qgis: no apt-get on this machine; install QGIS 3.22+ yourself (the QGIS tests skip)"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "install_qgis: not root and no password-less sudo; install qgis python3-qgis qgis-providers yourself (the QGIS tests skip)"
    exit 0
fi

log="$(mktemp -t install_qgis.XXXXXX.log)"
start=$SECONDS
if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1 &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends qgis python3-qgis qgis-providers >>"$log" 2>&1; then
    version="$(dpkg-query -W -f='${Version}' python3-qgis 2>/dev/null)"
    echo "install_qgis: installed QGIS ${version} in $((SECONDS - start)) s (log: $log)"
else
    # Here QGIS could have been installed and was not: fail loudly, or CI would pass with the
    # QGIS tests skipped.
    tail -n 5 "$log"
    echo "install_qgis: apt-get failed after $((SECONDS - start)) s (log: $log)"
    exit 1
fi
exit 0
