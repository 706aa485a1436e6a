#!/usr/bin/env bash
# Run the e2e suites (e2e-cli/README.md).
#
# When Segment's shared harness is checked out beside this repo
# (E2E_TESTS_DIR, default ../sdk-e2e-tests), run it against this SDK's driver
# with e2e-cli/e2e-config.json; otherwise run this repo's own scenario suites
# (e2e-cli/scenarios) against the bundled mock Tracking API.
#
# Environment:
#   E2E_TESTS_DIR   where the shared harness is (default: <repo>/../sdk-e2e-tests)
#   E2E_TESTS_CMD   command to run inside E2E_TESTS_DIR instead of ./run.sh (optional)
#   E2E_CLI         command that runs the driver (default: "<python> <repo>/e2e-cli/cli.py")
#   PYTHON          interpreter (default: python on PATH, else python3)
# Extra arguments go to e2e-cli/runner.py when the local suites run (e.g. -k 429 -v).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
E2E_TESTS_DIR="${E2E_TESTS_DIR:-$REPO/../sdk-e2e-tests}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
CONFIG="$HERE/e2e-config.json"
SUITES="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["test_suites"])' "$CONFIG")"

if [ -d "$E2E_TESTS_DIR" ]; then
    E2E_TESTS_DIR="$(cd "$E2E_TESTS_DIR" && pwd)"
    export E2E_CLI="${E2E_CLI:-$PYTHON $HERE/cli.py}"
    export SDK="python" SDK_DIR="$REPO" E2E_CONFIG="$CONFIG" TEST_SUITES="$SUITES"
    # the "env" of e2e-config.json (AUTH_HEADER=true: the harness checks the Authorization header)
    eval "$("$PYTHON" - "$CONFIG" <<'PY'
import json, shlex, sys
for key, value in (json.load(open(sys.argv[1])).get("env") or {}).items():
    print(f"export {key}={shlex.quote(str(value))}")
PY
)"
    echo "run-e2e: shared harness at $E2E_TESTS_DIR, suites $SUITES, driver: $E2E_CLI" >&2
    cd "$E2E_TESTS_DIR"
    if [ -n "${E2E_TESTS_CMD:-}" ]; then
        exec bash -c "$E2E_TESTS_CMD"
    elif [ -x ./run.sh ]; then
        exec ./run.sh --sdk-dir "$REPO" --cli "$E2E_CLI" --config "$CONFIG" --suites "$SUITES"
    else
        echo "run-e2e: $E2E_TESTS_DIR has no executable run.sh; set E2E_TESTS_CMD to the command that runs it" \
             "(E2E_CLI, SDK_DIR, E2E_CONFIG and TEST_SUITES are exported), or unset E2E_TESTS_DIR / move it" \
             "away to run this repo's own suites" >&2
        exit 2
    fi
fi

echo "run-e2e: no shared harness at $E2E_TESTS_DIR; running e2e-cli/scenarios ($SUITES) against the local mock" >&2
exec "$PYTHON" "$HERE/runner.py" --suite "$SUITES" "$@"
