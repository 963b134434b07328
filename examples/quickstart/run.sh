#!/usr/bin/env bash
# Runs Sluice on examples/quickstart with real echo pods behind it (Ctrl-C stops both).
set -euo pipefail
cd "$(dirname "$0")/../.."
# --workspace: the same feature set as the tests, so nothing is compiled twice.
cargo build --quiet --workspace --bin sluice --bin echo-pods
target/debug/echo-pods 127.0.0.2:18081 127.0.0.3:18081 127.0.0.4:18081 127.0.0.5:18082 &
pods=$!
trap 'kill $pods 2>/dev/null' EXIT
cat <<'TRY'

Sluice is starting on http://127.0.0.1:8080 (admin on 127.0.0.1:9090). Try:
  curl -H 'Host: shop.example.com' http://127.0.0.1:8080/        # web pods 127.0.0.2/.3, never .4 (not ready)
  curl -H 'Host: shop.example.com' http://127.0.0.1:8080/api/v1  # api pod 127.0.0.5
  curl -i -H 'Host: legacy.example.com' http://127.0.0.1:8080/store/cart  # as /cart, with a sticky cookie
  curl http://127.0.0.1:9090/config                              # the active routes, backends, errors
Edit examples/quickstart/manifests.yaml and the routes change live.

TRY
target/debug/sluice serve --manifests examples/quickstart --http 127.0.0.1:8080 --https 127.0.0.1:8443 --admin 127.0.0.1:9090
