#!/usr/bin/env bash
# Re-creates test/fixtures/crds/ from pinned upstream releases (see its README.md): the
# CustomResourceDefinitions of what the chart and manifests/overlays/cert-manager render,
# so the real-API-server tests can prove the server accepts those objects.
#
#   bash scripts/vendor-crds.sh CERT_MANAGER_GIT PROMETHEUS_OPERATOR_GIT
#
# The two arguments are git clones (bare is fine) of github.com/cert-manager/cert-manager
# and github.com/prometheus-operator/prometheus-operator holding the tags below, e.g.
# `git clone --bare https://github.com/cert-manager/cert-manager`. HELM is the helm binary
# to render with; by default the one the tests use (test/support/k8s-tools.ts).
#
# cert-manager: its release manifest cert-manager.crds.yaml is `helm template` of its chart
# (deploy/charts/cert-manager) with crds.enabled=true and creator=static, after the release
# tool set the chart's version and appVersion; this does the same for the two CRDs used.
# prometheus-operator: example/prometheus-operator-crd/ holds the plain CRDs; copied as is.
set -euo pipefail
CERT_MANAGER_TAG=v1.21.1
PROMETHEUS_OPERATOR_TAG=v0.93.0
[ $# -eq 2 ] || { sed -n '6,8p' "$0" >&2; exit 2; }
cm_git=$1
po_git=$2
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/test/fixtures/crds"
if [ -z "${HELM:-}" ]; then
  HELM=$(cd "$root" && npx tsx -e "import('./test/support/k8s-tools.ts').then(async (m) => console.log(await m.helmPath()))")
fi
mkdir -p "$out"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$cm_git" archive "$CERT_MANAGER_TAG" deploy/charts/cert-manager | tar -x -C "$work"
chart="$work/deploy/charts/cert-manager"
# What the release tool does to Chart.yaml (make/manifests.mk): version and appVersion.
sed -i -e "s/^version: .*/version: $CERT_MANAGER_TAG/" -e "s/^appVersion: .*/appVersion: $CERT_MANAGER_TAG/" "$chart/Chart.yaml"
for crd in certificates issuers; do
  {
    echo "# cert-manager $CERT_MANAGER_TAG, deploy/charts/cert-manager/templates/crd-cert-manager.io_$crd.yaml,"
    echo "# rendered by scripts/vendor-crds.sh. Copyright The cert-manager Authors, Apache-2.0."
    # The same flags as the release's cert-manager.crds.yaml (make/manifests.mk); helm's
    # leading document marker and "# Source:" comment dropped.
    "$HELM" template cert-manager "$chart" --kube-version=1.29.0 --api-versions="" --namespace=cert-manager \
      --set=crds.enabled=true --set=creator=static --set=startupapicheck.enabled=false \
      --show-only "templates/crd-cert-manager.io_$crd.yaml" | sed -e '1{/^---$/d;}' -e '/^# Source: /d'
  } >"$out/cert-manager.io_$crd.yaml"
done

for crd in servicemonitors prometheusrules; do
  {
    echo "# prometheus-operator $PROMETHEUS_OPERATOR_TAG, example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml,"
    echo "# copied by scripts/vendor-crds.sh. Copyright The prometheus-operator Authors, Apache-2.0."
    git -C "$po_git" show "$PROMETHEUS_OPERATOR_TAG:example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml"
  } >"$out/monitoring.coreos.com_$crd.yaml"
done
echo "vendor-crds: wrote $(ls "$out"/*.yaml | wc -l) CRDs into test/fixtures/crds" >&2
