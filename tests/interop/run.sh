#!/usr/bin/env bash
# The interop suite in one command: installs the pinned oidc-provider (`npm ci`), then runs the
# suite's tests against it (plain `cargo test` reports them as ignored). Arguments are
# test-name filters, e.g.
#   tests/interop/run.sh a_revoked_token   (one test)
# Needs Node.js >= 20.18 and npm; INTEROP_NODE=/path/to/node picks another Node.js for the tests.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
node="${INTEROP_NODE:-node}"
for tool in "$node" npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "interop: \`$tool\` not found; Node.js >= 20.18 and npm are needed (tests/interop/README.md)" >&2
    exit 1
  fi
done

(cd "$root/tests/interop" && npm ci --no-audit --no-fund --loglevel=error)
cd "$root"
exec cargo test --all-features --test interop -- --ignored "$@"
