#!/usr/bin/env bash
# Schemathesis over every operation of the OpenAPI document, `--checks all`, without and with a token (issue 15).
#
#   benchmarks/schemathesis_run.sh [extra schemathesis options...]
#
# Schemathesis is not a project dependency: install it in a venv of its own and point ST at it, e.g.
#   python3 -m venv /tmp/st && /tmp/st/bin/pip install schemathesis   (then ST=/tmp/st/bin/schemathesis, the default)
#
# It creates a throw-away database on ADMIN_DATABASE_URL's server (default the local one) and a Redis key prefix,
# starts `ihanoi serve` (IHANOI_ENV=test, one worker) on a free port, mints an admin + ward staff token through the
# real sign-in (`ihanoi token ... --json`) and runs:
#   1. without a token: every operation;
#   2. with the token: every operation except those that end the token's own session (logout, revoking
#      sessions): the fuzzer calls them early and every later case of the run would then be a 401 (ST103);
#   3. those session-ending operations alone, each run with a token of its own (a fresh sign-in per run).
# Reports land in $OUT (default /tmp/ihanoi-schemathesis). The database and the Redis keys are dropped at the end;
# the exit status is non-zero if any run found a failure.
set -uo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
ST="${ST:-/tmp/st/bin/schemathesis}"
PY="${PY:-$REPO/.venv/bin/python}"
IHANOI="${IHANOI:-$REPO/.venv/bin/ihanoi}"
ADMIN_DATABASE_URL="${ADMIN_DATABASE_URL:-postgresql://127.0.0.1:5432/postgres}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
OUT="${OUT:-/tmp/ihanoi-schemathesis}"
MAX_EXAMPLES="${MAX_EXAMPLES:-20}"
PERSONAL_ID="${PERSONAL_ID:-001080033333}"

[ -x "$ST" ] || { echo "schemathesis not found at $ST (set ST=...)" >&2; exit 2; }
mkdir -p "$OUT"

suffix="$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
db="ihanoi_st_$suffix"
base_url="${ADMIN_DATABASE_URL%/*}"
export DATABASE_URL="$base_url/$db"
export REDIS_URL
export IHANOI_REDIS_PREFIX="st_$suffix:"
export IHANOI_ENV=test
export IHANOI_LOG_LEVEL="${IHANOI_LOG_LEVEL:-WARNING}"
# the server and `ihanoi token` must share the signing keys' master key (dev/test keep one per data folder)
export IHANOI_DATA_DIR="$OUT/data-$suffix"
export IHANOI_MASTER_KEY="$("$PY" -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())')"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export IHANOI_PORT="$PORT" IHANOI_PUBLIC_URL="http://127.0.0.1:$PORT"

server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill -TERM -- "-$server_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$server_pid" 2>/dev/null
    fi
    rm -rf "$IHANOI_DATA_DIR"
    "$PY" - <<EOF
import asyncio, asyncpg, redis
async def drop():
    conn = await asyncpg.connect("$ADMIN_DATABASE_URL")
    await conn.execute('DROP DATABASE IF EXISTS "$db" WITH (FORCE)')
    await conn.close()
asyncio.run(drop())
client = redis.Redis.from_url("$REDIS_URL")
keys = list(client.scan_iter(match="$IHANOI_REDIS_PREFIX*", count=500))
for start in range(0, len(keys), 500):
    client.delete(*keys[start:start + 500])
EOF
}
trap cleanup EXIT
mkdir -p "$IHANOI_DATA_DIR"
trap 'exit 130' INT TERM

"$PY" -c "import asyncio, asyncpg
async def make():
    conn = await asyncpg.connect('$ADMIN_DATABASE_URL')
    await conn.execute('CREATE DATABASE \"$db\"')
    await conn.close()
asyncio.run(make())" || exit 2

# its own process group, so that stopping it stops its workers too
setsid "$IHANOI" serve --migrate --workers 1 --port "$PORT" >"$OUT/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 240); do
    curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { echo "server exited:" >&2; tail -30 "$OUT/server.log" >&2; exit 2; }
    sleep 0.5
done
curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "server not ready" >&2; exit 2; }

mint() {
    "$IHANOI" token --personal-id "$PERSONAL_ID" --role admin --role staff:phuong-hoan-kiem --level 2 --json \
        2>>"$OUT/token.log" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

SCHEMA="http://127.0.0.1:$PORT/schema/openapi.json"
# Operations that end the caller's own session: run apart, each with a fresh token (see above).
SESSION_ENDING='^(Logout|RevokeSession)$'
common=(--checks all --max-examples "$MAX_EXAMPLES" --exclude-path /v1/notifications/stream --seed 15
        --suppress-health-check all "$@")
status=0

run() {
    cd "$OUT" || exit 2  # schemathesis keeps its own files (.schemathesis/) in the folder it runs in
    local name="$1"; shift
    echo "=== $name"
    "$ST" --config-file "$REPO/benchmarks/schemathesis.toml" run "$SCHEMA" "${common[@]}" --report junit --report-junit-path "$OUT/$name.xml" "$@" 2>&1 \
        | tee "$OUT/$name.log" | tail -25
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

for name in ${RUNS:-without-token with-token session-ending}; do  # RUNS="session-ending" runs that one alone
    case $name in
        without-token) run without-token ;;
        with-token)
            token="$(mint)"
            [ -n "$token" ] || { echo "no token, see $OUT/token.log" >&2; exit 2; }
            run with-token -H "Authorization: Bearer $token" --exclude-operation-id-regex "$SESSION_ENDING" ;;
        session-ending)
            # one run per operation, each with a token of its own: in one shared run the first operation (Logout)
            # ends the session and the other would only ever see 401
            for op in Logout RevokeSession; do
                token="$(mint)"
                [ -n "$token" ] || { echo "no token, see $OUT/token.log" >&2; exit 2; }
                run "session-ending-$op" -H "Authorization: Bearer $token" --include-operation-id-regex "^$op\$"
            done ;;
    esac
done
exit $status
