#!/usr/bin/env bash
# Installs what the integration tests run for real: Debian packages, and the real
# kube-apiserver and etcd built from their Go modules (scripts/build-kube.sh, cached
# outside the repository and reused). Safe to run repeatedly: does nothing when
# everything is there.
set -euo pipefail
here=$(dirname "$0")

# The real Kubernetes API server tier (test/real/). Without Go it cannot be built: say so
# loudly (those tests then skip loudly too; MIRRORGATE_REQUIRE_REAL_KUBE=1, as in CI, makes
# that a failure).
kube_status=0
bash "$here/build-kube.sh" >/dev/null || kube_status=$?
if [ "$kube_status" = 2 ]; then
  {
    echo
    echo "****************************************************************************"
    echo "* test-deps: Go is not installed: the real kube-apiserver and etcd cannot  *"
    echo "* be built, so the REAL KUBERNETES API SERVER TIER (test/real/) IS SKIPPED. *"
    echo "* Install Go 1.24+ (https://go.dev/dl/) and run make test again.            *"
    echo "****************************************************************************"
    echo
  } >&2
  if [ "${MIRRORGATE_REQUIRE_REAL_KUBE:-}" = 1 ]; then
    echo "test-deps: MIRRORGATE_REQUIRE_REAL_KUBE=1: the tier must run; stopping" >&2
    exit 1
  fi
elif [ "$kube_status" != 0 ]; then
  echo "test-deps: building kube-apiserver/etcd failed (scripts/build-kube.sh, output above)" >&2
  exit 1
fi

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
# The report page is tested in a real browser (driven by playwright-core).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "test-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
  exit 1
fi
echo "test-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
