#!/usr/bin/env bash
# Installs what the integration tests run for real: Debian packages (a distribution
# registry, htpasswd, wrk) and, built from Go modules into a cache outside the
# repository, kube-apiserver and etcd for the real-server tier (scripts/build-kube.sh).
# Safe to run repeatedly: does nothing when everything is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
    exit 1
  fi
  echo "test-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The real Kubernetes API server tier. Without Go it is skipped, loudly; under CI=true
# a skip is an error (the tests themselves fail too).
if command -v go >/dev/null 2>&1; then
  bash "$here/build-kube.sh" >/dev/null
else
  cat >&2 <<'MSG'
************************************************************************************
test-deps: Go is not installed: kube-apiserver and etcd cannot be built, and the
REAL KUBERNETES API SERVER TIER WILL BE SKIPPED. Install Go (1.24+) to run it.
************************************************************************************
MSG
  if [ "${CI:-}" = true ]; then
    echo "test-deps: CI=true: the real-server tier must run; failing" >&2
    exit 1
  fi
fi
