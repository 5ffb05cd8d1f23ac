#!/usr/bin/env bash
# The Keycloak suite in one command: fetches Keycloak and points the tests at it
# (install.sh), then runs the suite's tests, which plain `cargo test` reports as ignored.
# Arguments are test-name filters, e.g. `tests/keycloak/run.sh a_revoked_token`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# shellcheck source=install.sh
. tests/keycloak/install.sh
exec cargo test --all-features --test keycloak -- --ignored "$@"
