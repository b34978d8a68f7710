#!/usr/bin/env bash
#
# interop/run.sh - registration interoperability check against the reference oneM2M CSE
# (ACME, PyPI package "acmecse", pinned below), on loopback only.
#
#   A. our MN-CSE (/id-mn, cse-mn) registers to the reference IN-CSE (/id-in, cse-in):
#      both <remoteCSE>s exist with the expected attributes, the reference's liveliness
#      probes of our CSEBase succeed and it keeps our CSR, and a SIGTERM of our MN removes
#      both CSRs (ours deletes its CSR on the reference and its local registrar CSR).
#   B. the reference MN-CSE registers to our IN-CSE: both CSRs, our IN's liveliness probes
#      of the reference MN, graceful stop (SIGINT) of the reference MN removes its CSR on our
#      IN; after a hard kill our IN removes the CSR after its liveliness rounds.
#
# Prints one PASS/FAIL line per check and a summary; exits 1 when a check failed, 0 when all
# passed, and 0 with "SKIP: ..." when python3, venv or the acmecse install is not available.
#
# Environment:
#   INTEROP_ACMECSE_VERSION  reference version to install (default: the pinned one below)
#   INTEROP_VENV             use/create the venv here instead of a throw-away one
#   INTEROP_NO_BUILD=1       do not run "cargo build" (use the existing target/debug/acme-cse)
#   INTEROP_KEEP=1           keep the work directory (configs, logs) for inspection
#   INTEROP_WAIT             bound of every wait in seconds (default 60)
#
set -u

ACMECSE_VERSION=${INTEROP_ACMECSE_VERSION:-2026.5.3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/debug/acme-cse"
HOST=127.0.0.1
WAIT=${INTEROP_WAIT:-60}
CHECK_INTERVAL=2          # seconds, both sides
T_START=$(date +%s)

mkdir -p "$ROOT/target"
WORK=$(mktemp -d "$ROOT/target/interop.XXXXXX") || { echo "FAIL: cannot create a work directory"; exit 1; }

PASSED=0
FAILED=0
PIDS=()

pass() { echo "PASS: $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }
note() { echo "  .. $*"; }

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
    fi
  done
  if [ "${INTEROP_KEEP:-0}" = 1 ] || [ "$FAILED" -gt 0 ]; then
    echo "interop: logs and configs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------------------------------
# Prerequisites: python3, a venv with the pinned acmecse (SKIP when unavailable), curl, our binary
# ----------------------------------------------------------------------------------------
if ! command -v python3 >/dev/null 2>&1; then
  echo "SKIP: python3 is not available; the reference CSE (acmecse) cannot run"; exit 0
fi
if ! command -v curl >/dev/null 2>&1; then
  echo "SKIP: curl is not available"; exit 0
fi
VENV=${INTEROP_VENV:-$WORK/venv}
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  if ! python3 -m venv "$VENV" >"$WORK/venv.log" 2>&1; then
    echo "SKIP: cannot create a Python venv (python3 -m venv failed: $(tail -1 "$WORK/venv.log"))"; exit 0
  fi
fi
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('acmecse') != '$ACMECSE_VERSION')" 2>/dev/null; then
  echo "interop: installing acmecse==$ACMECSE_VERSION into $VENV"
  if ! "$PY" -m pip install -q --disable-pip-version-check "acmecse==$ACMECSE_VERSION" >"$WORK/pip.log" 2>&1; then
    echo "SKIP: could not pip install acmecse==$ACMECSE_VERSION ($(grep -m1 -iE 'error' "$WORK/pip.log" || tail -1 "$WORK/pip.log"))"; exit 0
  fi
fi
echo "interop: reference CSE acmecse $("$PY" -c "import importlib.metadata as m; print(m.version('acmecse'))")"

if [ "${INTEROP_NO_BUILD:-0}" != 1 ]; then
  echo "interop: cargo build"
  if ! (cd "$ROOT" && cargo build --quiet) >"$WORK/build.log" 2>&1; then
    fail "cargo build (see $WORK/build.log)"; tail -20 "$WORK/build.log"; exit 1
  fi
fi
[ -x "$BIN" ] || { fail "no binary at $BIN"; exit 1; }

# two distinct free loopback ports
read -r IN_PORT MN_PORT < <("$PY" - <<'PY'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
[ -n "${MN_PORT:-}" ] || { fail "could not pick free ports"; exit 1; }
echo "interop: IN on $HOST:$IN_PORT, MN on $HOST:$MN_PORT, check interval ${CHECK_INTERVAL}s, work dir $WORK"

# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------

# http_get <url> <outfile> -> prints the HTTP status code ("000" when unreachable)
http_get() {
  curl -s -m 5 -o "$2" -w '%{http_code}' -H 'X-M2M-Origin: CAdmin' -H "X-M2M-RI: interop-$RANDOM" \
    -H 'X-M2M-RVI: 4' -H 'Accept: application/json' "$1" 2>/dev/null || true
}

# wait_code <url> <code> <seconds> [pid]: 0 once GET <url> answers HTTP <code>
wait_code() {
  local url=$1 want=$2 t=$3 pid=${4:-} deadline code
  deadline=$(($(date +%s) + t))
  while :; do
    code=$(http_get "$url" /dev/null)
    [ "$code" = "$want" ] && return 0
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.2
  done
}

# wait_exit <pid> <seconds>: 0 when the process ended in time
wait_exit() {
  local pid=$1 deadline=$(($(date +%s) + $2))
  while kill -0 "$pid" 2>/dev/null; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
  wait "$pid" 2>/dev/null
  return 0
}

# stop_pid <pid> <signal> <seconds>: signal, wait, escalate to KILL; sets HOW to how it ended
# (not meant for $(...): the process must be reaped by this shell, its parent)
stop_pid() {
  local pid=$1 sig=$2 t=$3
  kill -0 "$pid" 2>/dev/null || { HOW=gone; return 0; }
  kill -s "$sig" "$pid" 2>/dev/null
  if wait_exit "$pid" "$t"; then HOW=$sig; return 0; fi
  kill -KILL "$pid" 2>/dev/null; wait_exit "$pid" 5
  HOW="$sig-timeout,KILL"; return 1
}

# check_csr <json file> <rn> <csi> <cb>: validates a CSR body per remote-cse.md §15
check_csr() {
  "$PY" - "$@" <<'PY'
import json, sys
path, rn, csi, cb = sys.argv[1:5]
try:
    body = json.load(open(path))
except Exception as e:
    print(f"body is not JSON: {e}"); sys.exit(1)
csr = body.get("m2m:csr")
if not isinstance(csr, dict):
    print(f"no m2m:csr in {str(body)[:200]}"); sys.exit(1)
problems = []
def want(name, value):
    if csr.get(name) != value:
        problems.append(f"{name}={csr.get(name)!r} (expected {value!r})")
want("ty", 16); want("rn", rn); want("ri", rn); want("csi", csi); want("cb", cb)
poa = csr.get("poa")
if not (isinstance(poa, list) and poa and all(isinstance(p, str) and p for p in poa)):
    problems.append(f"poa={poa!r} (expected a non-empty list of URLs)")
if csr.get("rr") is not True:
    problems.append(f"rr={csr.get('rr')!r} (expected true)")
if not (isinstance(csr.get("srv"), list) and csr.get("srv")):
    problems.append(f"srv={csr.get('srv')!r} (expected a non-empty list)")
if problems:
    print("; ".join(problems)); sys.exit(1)
print(f"ty=16 rn=ri={rn} csi={csi} cb={cb} poa={poa} srv={csr['srv']}")
PY
}

# count_lines <file> <extended regex>: matching lines after removing ANSI colour codes
count_lines() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null | grep -cE "$2" || true
}

# wait_count <file> <regex> <n> <seconds>: 0 once at least n lines match
wait_count() {
  local deadline=$(($(date +%s) + $4))
  while [ "$(count_lines "$1" "$2")" -lt "$3" ]; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

# ---- the reference CSE ----

# ref_start <IN|MN> <dir>: starts ACME, sets REF_PID; 0 when its CSEBase answers
ref_start() {
  local kind=$1 d=$2 cseid rn port
  if [ "$kind" = IN ]; then cseid=id-in; rn=cse-in; port=$IN_PORT; else cseid=id-mn; rn=cse-mn; port=$MN_PORT; fi
  mkdir -p "$d/logs" "$d/data"
  {
    echo "[basic.config]"
    echo "cseType=$kind"
    echo "cseID=$cseid"
    echo "cseName=$rn"
    echo "adminID=CAdmin"
    echo "serviceProviderID=//acme.example.com"
    echo "cseHost=$HOST"
    echo "httpPort=$port"
    echo "networkInterface=$HOST"
    echo "databaseType=memory"
    echo "logLevel=debug"
    echo "consoleTheme=dark"
    echo "consoleType=simple"
    if [ "$kind" = MN ]; then
      echo "registrarCseHost=$HOST"
      echo "registrarCsePort=$IN_PORT"
      echo "registrarCseID=id-in"
      echo "registrarCseName=cse-in"
    fi
    echo
    echo "[cse.registration]"
    echo "allowedCSROriginators=/id-in,/id-mn*,/id-asn*"
    echo "checkInterval=$CHECK_INTERVAL"
    echo
    echo "[logging]"
    echo "enableFileLogging=true"
    echo "enableScreenLogging=false"
    echo
    echo "[console]"
    echo "headless=true"
    echo
    echo "[textui]"
    echo "startWithTUI=false"
  } >"$d/acme.ini"
  # ACME shuts down gracefully (and deregisters) only on SIGINT; a non-interactive shell starts
  # background jobs with SIGINT ignored, so a small exec wrapper restores the default first
  # (the PID stays the same through both exec's).
  ( cd "$d" && exec "$PY" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
      "$PY" -m acmecse --base-directory "$d" --config acme.ini --headless \
      --http-port "$port" --network-interface "$HOST" --db-type memory --log-level debug \
      </dev/null >"$d/stdout.log" 2>&1 ) &
  REF_PID=$!
  PIDS+=("$REF_PID")
  disown "$REF_PID" 2>/dev/null   # no "Killed" job notices; the shell still reaps it
  # ACME must not get requests before it printed "CSE started" (a request during its route
  # set-up aborts the start), so wait for that first.
  local deadline=$(($(date +%s) + WAIT))
  until grep -q 'CSE started' "$d/stdout.log" 2>/dev/null; do
    kill -0 "$REF_PID" 2>/dev/null || { note "reference $kind exited: $(tail -3 "$d/stdout.log")"; return 1; }
    [ "$(date +%s)" -ge "$deadline" ] && { note "reference $kind did not start within ${WAIT}s"; return 1; }
    sleep 0.2
  done
  wait_code "http://$HOST:$port/$rn" 200 "$WAIT" "$REF_PID"
}

# ---- notifications ----

# receiver_start <dir>: a notification receiver on loopback that answers 2000 and appends
# each request (path, originator, body) as a JSON line to <dir>/received.jsonl; sets
# RECEIVER_URL and RECEIVER_PID
receiver_start() {
  local d=$1
  mkdir -p "$d"
  "$PY" - "$d" >"$d/port" 2>"$d/stderr.log" <<'PY' &
import http.server, json, sys, socketserver
out = sys.argv[1] + "/received.jsonl"
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try: content = json.loads(body)
        except Exception: content = None
        with open(out, "a") as f:
            f.write(json.dumps({"path": self.path, "from": self.headers.get("X-M2M-Origin"), "body": content}) + "\n")
        self.send_response(200)
        self.send_header("X-M2M-RSC", "2000")
        self.send_header("X-M2M-RI", self.headers.get("X-M2M-RI") or "")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args): pass
server = socketserver.TCPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
  RECEIVER_PID=$!
  PIDS+=("$RECEIVER_PID")
  disown "$RECEIVER_PID" 2>/dev/null
  local deadline=$(($(date +%s) + 10))
  until [ -s "$d/port" ]; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.1
  done
  RECEIVER_URL="http://127.0.0.1:$(cat "$d/port")"
}

# post <url> <originator> <ty> <json> -> prints the X-M2M-RSC of the answer
post() {
  curl -s -m 10 -o /dev/null -D - -H "X-M2M-Origin: $2" -H "X-M2M-RI: interop-$RANDOM" -H 'X-M2M-RVI: 4' \
    -H "Content-Type: application/json;ty=$3" -d "$4" "$1" 2>/dev/null | tr -d '\r' | awk -F': ' 'tolower($1)=="x-m2m-rsc" {print $2}'
}

# put <url> <originator> <json> -> prints the X-M2M-RSC of the answer
put() {
  curl -s -m 10 -o /dev/null -D - -X PUT -H "X-M2M-Origin: $2" -H "X-M2M-RI: interop-$RANDOM" -H 'X-M2M-RVI: 4' \
    -H "Content-Type: application/json" -d "$3" "$1" 2>/dev/null | tr -d '\r' | awk -F': ' 'tolower($1)=="x-m2m-rsc" {print $2}'
}

# wait_received <file> <python expression over the list `lines`> <seconds>
wait_received() {
  local deadline=$(($(date +%s) + $3))
  until "$PY" -c "import json,sys; lines=[json.loads(l) for l in open('$1')] if __import__('os').path.exists('$1') else []; sys.exit(0 if ($2) else 1)" 2>/dev/null; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

# wait_received_copy <url> <text> <seconds>: 0 once GET <url> answers a body containing <text>
wait_received_copy() {
  local deadline=$(($(date +%s) + $3))
  until http_get "$1" "$WORK/copy-poll.json" >/dev/null && grep -q "$2" "$WORK/copy-poll.json" 2>/dev/null; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}

# ---- our CSE ----

# our_start <IN|MN> <dir>: writes the config, starts our CSE, sets OUR_PID
our_start() {
  local kind=$1 d=$2 port rn
  mkdir -p "$d"
  if [ "$kind" = IN ]; then
    port=$IN_PORT; rn=cse-in
    cat >"$d/acme.toml" <<TOML
[cse]
type = "IN"
cse_id = "/id-in"
resource_name = "cse-in"

[cse.registration]
check_interval = "${CHECK_INTERVAL}s"
allowed_csr_originators = ["/id-mn*", "/id-asn*"]

[http]
listen = "$HOST:$IN_PORT"

[database]
in_memory = true
TOML
  else
    port=$MN_PORT; rn=cse-mn
    # a database file, so that the local registrar CSR can be checked after the stop
    cat >"$d/acme.toml" <<TOML
[cse]
type = "MN"
cse_id = "/id-mn"
resource_name = "cse-mn"

[cse.registration]
check_interval = "${CHECK_INTERVAL}s"
allowed_csr_originators = ["/id-in"]

[cse.registrar]
address = ["http://$HOST:$IN_PORT"]
cse_id = "/id-in"
resource_name = "cse-in"

[http]
listen = "$HOST:$MN_PORT"

[database]
in_memory = false
path = "$d/data/acme.db"
TOML
  fi
  (cd "$d" && RUST_LOG=acme_cse=debug exec "$BIN" --config "$d/acme.toml" --init-dir "$ROOT/init" \
      </dev/null >"$d/acme-cse.log" 2>&1) &
  OUR_PID=$!
  PIDS+=("$OUR_PID")
  disown "$OUR_PID" 2>/dev/null
  wait_code "http://$HOST:$port/$rn" 200 "$WAIT" "$OUR_PID"
}

# ========================================================================================
# A. our MN -> reference IN
# ========================================================================================
echo "== A: our MN-CSE registers to the reference IN-CSE"
REF_IN_DIR="$WORK/ref-in"
OUR_MN_DIR="$WORK/our-mn"
CSR_ON_REF="http://$HOST:$IN_PORT/cse-in/id-mn"
CSR_ON_OURS="http://$HOST:$MN_PORT/cse-mn/id-in"

if ! ref_start IN "$REF_IN_DIR"; then
  fail "A: reference IN did not start (see $REF_IN_DIR/stdout.log)"
else
  pass "A: reference IN up on $HOST:$IN_PORT"
  if ! our_start MN "$OUR_MN_DIR"; then
    fail "A: our MN did not start (see $OUR_MN_DIR/acme-cse.log)"; tail -5 "$OUR_MN_DIR/acme-cse.log"
  else
    pass "A: our MN up on $HOST:$MN_PORT"
    if wait_code "$CSR_ON_REF" 200 "$WAIT" "$OUR_PID"; then
      code=$(http_get "$CSR_ON_REF" "$WORK/a-csr-ref.json")
      if out=$(check_csr "$WORK/a-csr-ref.json" id-mn /id-mn /id-mn/cse-mn); then
        pass "A: CSR cse-in/id-mn on the reference IN: $out"
      else
        fail "A: CSR cse-in/id-mn on the reference IN (HTTP $code): $out"
      fi
    else
      fail "A: CSR cse-in/id-mn did not appear on the reference IN within ${WAIT}s (last HTTP $(http_get "$CSR_ON_REF" /dev/null))"
    fi
    if wait_code "$CSR_ON_OURS" 200 "$WAIT" "$OUR_PID"; then
      code=$(http_get "$CSR_ON_OURS" "$WORK/a-csr-ours.json")
      if out=$(check_csr "$WORK/a-csr-ours.json" id-in /id-in /id-in/cse-in); then
        pass "A: CSR cse-mn/id-in on our MN: $out"
      else
        fail "A: CSR cse-mn/id-in on our MN (HTTP $code): $out"
      fi
    else
      fail "A: CSR cse-mn/id-in did not appear on our MN within ${WAIT}s"
    fi

    # announcement: an AE of our MN announced to the reference IN (below our CSR there),
    # kept current, withdrawn on delete
    MN_URL="http://$HOST:$MN_PORT"
    a1=$(post "$MN_URL/cse-mn" Cannc 2 '{"m2m:ae": {"rn": "annc", "api": "Nannc", "rr": false, "srv": ["3"], "at": ["/id-in"], "lbl": ["before"]}}')
    copy=""
    deadline=$(($(date +%s) + WAIT))
    while [ -z "$copy" ] && [ "$(date +%s)" -lt "$deadline" ]; do
      http_get "$MN_URL/cse-mn/annc" "$WORK/a-annc.json" >/dev/null
      copy=$("$PY" -c 'import json,sys; at=json.load(open(sys.argv[1]))["m2m:ae"].get("at") or [""]; print(at[0] if at[0].startswith("/id-in/") else "")' "$WORK/a-annc.json" 2>/dev/null)
      [ -n "$copy" ] || sleep 0.2
    done
    ae_ri=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["m2m:ae"]["ri"])' "$WORK/a-annc.json" 2>/dev/null)
    code=$(http_get "http://$HOST:$IN_PORT/~$copy" "$WORK/a-annc-copy.json")
    if [ "$a1" = 2001 ] && [ -n "$copy" ] && [ "$code" = 200 ] && "$PY" - "$WORK/a-annc-copy.json" "$ae_ri" <<'PY'
import json, sys
copy = json.load(open(sys.argv[1]))["m2m:aeA"]
assert copy["ty"] == 10002 and copy["lnk"] == "/id-mn/" + sys.argv[2] and copy["lbl"] == ["before"] and copy["pi"] == "id-mn", copy
PY
    then
      u1=$(put "$MN_URL/cse-mn/annc" Cannc '{"m2m:ae": {"lbl": ["after"]}}')
      if [ "$u1" = 2004 ] && wait_received_copy "http://$HOST:$IN_PORT/~$copy" '"after"' 10; then
        d1=$(curl -s -m 10 -o /dev/null -D - -X DELETE -H 'X-M2M-Origin: Cannc' -H 'X-M2M-RI: annc-del' -H 'X-M2M-RVI: 4' "$MN_URL/cse-mn/annc" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-m2m-rsc" {print $2}')
        if [ "$d1" = 2002 ] && wait_code "http://$HOST:$IN_PORT/~$copy" 404 10; then
          pass "A: our MN announced an AE to the reference IN ($copy below our CSR), updated it and withdrew it"
        else
          fail "A: the announced AE on the reference IN was not withdrawn (DELETE $d1, copy HTTP $(http_get "http://$HOST:$IN_PORT/~$copy" /dev/null))"
        fi
      else
        fail "A: the announced AE on the reference IN did not follow the update (UPDATE $u1): $(cat "$WORK/a-annc-copy.json")"
      fi
    else
      fail "A: announcement to the reference IN: CREATE $a1, at entry '$copy', copy HTTP $code: $(head -c 400 "$WORK/a-annc-copy.json" 2>/dev/null)"
    fi

    # liveliness: the reference IN probes our CSEBase as /id-in every round; our debug log
    # has one "done rsc=2000" line per answered request
    probe_re='RETRIEVE.* to=/id-mn/cse-mn .*fr=Some\("/id-in"\).*rsc=2000'
    before=$(count_lines "$OUR_MN_DIR/acme-cse.log" "$probe_re")
    if wait_count "$OUR_MN_DIR/acme-cse.log" "$probe_re" $((before + 3)) $((6 * CHECK_INTERVAL + 10)); then
      if [ "$(http_get "$CSR_ON_REF" /dev/null)" = 200 ]; then
        pass "A: reference IN probed our CSEBase $(count_lines "$OUR_MN_DIR/acme-cse.log" "$probe_re") times (2000) and keeps our CSR"
      else
        fail "A: reference IN dropped our CSR after its liveliness probes"
      fi
    else
      fail "A: fewer than 3 successful liveliness probes of our CSEBase by the reference IN within $((6 * CHECK_INTERVAL + 10))s ($(count_lines "$OUR_MN_DIR/acme-cse.log" 'to=/id-mn/cse-mn .*fr=Some\("/id-in"\)') seen)"
    fi

    # graceful stop: SIGTERM; our MN deletes its CSR on the reference and its local CSR
    stop_pid "$OUR_PID" TERM 20; how=$HOW
    if [ "$how" = TERM ]; then pass "A: our MN stopped on SIGTERM"; else fail "A: our MN did not stop on SIGTERM within 20s ($how)"; fi
    code=$(http_get "$CSR_ON_REF" /dev/null)
    if [ "$code" = 404 ]; then
      pass "A: our CSR is gone from the reference IN after the stop (404)"
    else
      fail "A: our CSR is still on the reference IN after the stop (HTTP $code)"
    fi
    left=$("$PY" - "$OUR_MN_DIR/data/acme.db" <<'PY'
import sqlite3, sys
try:
    con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
    print(",".join(r[0] for r in con.execute("SELECT path FROM resources WHERE ty = 16")) or "none")
except Exception as e:
    print(f"error: {e}")
PY
)
    if [ "$left" = none ]; then
      pass "A: local registrar CSR cse-mn/id-in deleted from our MN's database"
    else
      fail "A: our MN's database still holds CSRs after the stop: $left"
    fi
  fi
  stop_pid "$REF_PID" INT 20; how=$HOW
  [ "$how" = INT ] || note "reference IN stop: $how"
fi

# ========================================================================================
# B. reference MN -> our IN
# ========================================================================================
echo "== B: the reference MN-CSE registers to our IN-CSE"
OUR_IN_DIR="$WORK/our-in"
REF_MN_DIR="$WORK/ref-mn"
CSR_ON_OURS="http://$HOST:$IN_PORT/cse-in/id-mn"
CSR_ON_REF="http://$HOST:$MN_PORT/cse-mn/id-in"

if ! our_start IN "$OUR_IN_DIR"; then
  fail "B: our IN did not start (see $OUR_IN_DIR/acme-cse.log)"; tail -5 "$OUR_IN_DIR/acme-cse.log"
else
  pass "B: our IN up on $HOST:$IN_PORT"
  OUR_IN_PID=$OUR_PID
  if ! ref_start MN "$REF_MN_DIR"; then
    fail "B: reference MN did not start (see $REF_MN_DIR/stdout.log)"
  else
    pass "B: reference MN up on $HOST:$MN_PORT"
    if wait_code "$CSR_ON_OURS" 200 "$WAIT" "$REF_PID"; then
      code=$(http_get "$CSR_ON_OURS" "$WORK/b-csr-ours.json")
      if out=$(check_csr "$WORK/b-csr-ours.json" id-mn /id-mn /id-mn/cse-mn); then
        pass "B: CSR cse-in/id-mn on our IN: $out"
      else
        fail "B: CSR cse-in/id-mn on our IN (HTTP $code): $out"
      fi
    else
      fail "B: CSR cse-in/id-mn did not appear on our IN within ${WAIT}s"
    fi
    if wait_code "$CSR_ON_REF" 200 "$WAIT" "$REF_PID"; then
      code=$(http_get "$CSR_ON_REF" "$WORK/b-csr-ref.json")
      if out=$(check_csr "$WORK/b-csr-ref.json" id-in /id-in /id-in/cse-in); then
        pass "B: CSR cse-mn/id-in on the reference MN: $out"
      else
        fail "B: CSR cse-mn/id-in on the reference MN (HTTP $code): $out"
      fi
    else
      fail "B: CSR cse-mn/id-in did not appear on the reference MN within ${WAIT}s"
    fi

    # liveliness: our IN probes the reference MN's CSEBase as /id-in every round; the
    # reference's debug log has one line per received RETRIEVE
    REF_LOG=$(ls "$REF_MN_DIR"/logs/*.log 2>/dev/null | head -1)
    probe_re='Process RETRIEVE request for id: id-mn\|cse-mn Originator: /id-in'
    before=$(count_lines "$REF_LOG" "$probe_re")
    if [ -n "$REF_LOG" ] && wait_count "$REF_LOG" "$probe_re" $((before + 3)) $((6 * CHECK_INTERVAL + 10)); then
      if [ "$(http_get "$CSR_ON_OURS" /dev/null)" = 200 ] \
         && [ "$(count_lines "$OUR_IN_DIR/acme-cse.log" 'probe failed|did not answer')" = 0 ]; then
        pass "B: our IN probed the reference MN's CSEBase $(count_lines "$REF_LOG" "$probe_re") times without a failure and keeps its CSR"
      else
        fail "B: our IN's liveliness probes of the reference MN failed: $(sed 's/\x1b\[[0-9;]*m//g' "$OUR_IN_DIR/acme-cse.log" | grep -m1 -E 'probe failed|did not answer')"
      fi
    else
      fail "B: fewer than 3 liveliness probes of the reference MN by our IN within $((6 * CHECK_INTERVAL + 10))s"
    fi

    # announcement: the reference MN announces an AE to our IN (below its announced
    # CSEBase there, the reference's placement); our IN serves the copy and the original
    # through it (rcn=7), and removes both when the reference MN's CSR goes
    b1_out="$WORK/b-annc.json"
    b1=$(curl -s -m 10 -o "$b1_out" -D - -H 'X-M2M-Origin: Crefannc' -H 'X-M2M-RI: b-annc' -H 'X-M2M-RVI: 4' \
      -H 'Content-Type: application/json;ty=2' -d '{"m2m:ae": {"rn": "refannc", "api": "Nrefannc", "rr": false, "srv": ["3"], "at": ["/id-in"], "lbl": ["ref"]}}' \
      "http://$HOST:$MN_PORT/cse-mn" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-m2m-rsc" {print $2}')
    copy=$("$PY" -c 'import json,sys; at=json.load(open(sys.argv[1]))["m2m:ae"].get("at") or [""]; print(at[0])' "$b1_out" 2>/dev/null)
    code=$(http_get "http://$HOST:$IN_PORT/${copy#/id-in/}" "$WORK/b-annc-copy.json")
    if [ "$b1" = 2001 ] && [ "$code" = 200 ] && "$PY" - "$WORK/b-annc-copy.json" <<'PY'
import json, sys
copy = json.load(open(sys.argv[1]))["m2m:aeA"]
assert copy["ty"] == 10002 and copy["lnk"].startswith("/id-mn/") and copy["lbl"] == ["ref"], copy
PY
    then
      anchor=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["m2m:aeA"]["pi"])' "$WORK/b-annc-copy.json")
      pass "B: the reference MN announced an AE to our IN ($copy below its announced CSEBase $anchor)"
    else
      fail "B: announcement from the reference MN: CREATE $b1 (at '$copy'), copy on our IN HTTP $code: $(head -c 400 "$WORK/b-annc-copy.json" 2>/dev/null) $(head -c 300 "$b1_out")"
      anchor=""
    fi

    # notifications both ways while the reference MN is registered to our IN
    if receiver_start "$WORK/receiver"; then
      IN_URL="http://$HOST:$IN_PORT"
      MN_URL="http://$HOST:$MN_PORT"
      RECEIVED="$WORK/receiver/received.jsonl"
      # (1) the reference hosts the subscription; an AE on our IN gets its notifications
      #     through our IN (which must let /id-mn notify the AE)
      r1=$(post "$IN_URL/cse-in" Cinterop 2 '{"m2m:ae": {"rn": "interop", "api": "Ninterop", "rr": true, "srv": ["3"], "poa": ["'"$RECEIVER_URL"'"]}}')
      r2=$(post "$IN_URL/cse-in/interop" Cinterop 1 '{"m2m:acp": {"rn": "notifiers", "pv": {"acr": [{"acor": ["/id-mn"], "acop": 16}]}, "pvs": {"acr": [{"acor": ["Cinterop"], "acop": 63}]}}}')
      r3=$(put "$IN_URL/cse-in/interop" Cinterop '{"m2m:ae": {"acpi": ["'"$(curl -s -H 'X-M2M-Origin: Cinterop' -H 'X-M2M-RI: a' -H 'X-M2M-RVI: 4' "$IN_URL/cse-in/interop/notifiers" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["m2m:acp"]["ri"])')"'"]}}')
      r4=$(post "$MN_URL/cse-mn" CAdmin 3 '{"m2m:cnt": {"rn": "box"}}')
      r5=$(post "$MN_URL/cse-mn/box" CAdmin 23 '{"m2m:sub": {"rn": "tous", "nu": ["/id-in/Cinterop"], "enc": {"net": [3]}}}')
      r6=$(post "$MN_URL/cse-mn/box" CAdmin 4 '{"m2m:cin": {"con": "from the reference"}}')
      if [ "$r1 $r2 $r3 $r4 $r5 $r6" = "2001 2001 2004 2001 2001 2001" ] \
         && wait_received "$RECEIVED" "any(((l['body'] or {}).get('m2m:sgn') or {}).get('nev', {}).get('rep', {}).get('m2m:cin', {}).get('con') == 'from the reference' for l in lines)" 15; then
        pass "B: a subscription on the reference MN notified an AE on our IN through our IN (verification and event)"
      else
        fail "B: reference-hosted subscription to an AE on our IN: AE $r1, ACP $r2, acpi $r3, CNT $r4, SUB $r5, CIN $r6; received: $(cat "$RECEIVED" 2>/dev/null | head -c 600)"
      fi
      # (2) our IN hosts the subscription; an AE on the reference MN gets its notifications
      #     through the reference MN
      : >"$RECEIVED"
      s1=$(post "$MN_URL/cse-mn" Crefae 2 '{"m2m:ae": {"rn": "refae", "api": "Nrefae", "rr": true, "srv": ["3"], "poa": ["'"$RECEIVER_URL"'"]}}')
      s2=$(post "$MN_URL/cse-mn/refae" Crefae 1 '{"m2m:acp": {"rn": "notifiers", "pv": {"acr": [{"acor": ["/id-in"], "acop": 16}]}, "pvs": {"acr": [{"acor": ["Crefae"], "acop": 63}]}}}')
      acp_ri=$(curl -s -H 'X-M2M-Origin: Crefae' -H 'X-M2M-RI: b' -H 'X-M2M-RVI: 4' "$MN_URL/cse-mn/refae/notifiers" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["m2m:acp"]["ri"])' 2>/dev/null)
      s3=$(put "$MN_URL/cse-mn/refae" Crefae '{"m2m:ae": {"acpi": ["'"$acp_ri"'"]}}')
      s4=$(post "$IN_URL/cse-in" CAdmin 3 '{"m2m:cnt": {"rn": "box"}}')
      s5=$(post "$IN_URL/cse-in/box" CAdmin 23 '{"m2m:sub": {"rn": "toref", "nu": ["/id-mn/Crefae"], "enc": {"net": [3]}}}')
      s6=$(post "$IN_URL/cse-in/box" CAdmin 4 '{"m2m:cin": {"con": "from our IN"}}')
      if [ "$s1 $s2 $s3 $s4 $s5 $s6" = "2001 2001 2004 2001 2001 2001" ] \
         && wait_received "$RECEIVED" "any(((l['body'] or {}).get('m2m:sgn') or {}).get('vrq') for l in lines) and any(((l['body'] or {}).get('m2m:sgn') or {}).get('nev', {}).get('rep', {}).get('m2m:cin', {}).get('con') == 'from our IN' for l in lines)" 15; then
        pass "B: a subscription on our IN notified an AE on the reference MN through it (verification and event)"
      else
        fail "B: our subscription to an AE on the reference MN: AE $s1, ACP $s2, acpi $s3, CNT $s4, SUB $s5, CIN $s6; received: $(cat "$RECEIVED" 2>/dev/null | head -c 600)"
      fi
    else
      fail "B: the notification receiver did not start"
    fi

    # graceful stop of the reference MN (SIGINT): it deletes its CSR on our IN
    stop_pid "$REF_PID" INT 20; how=$HOW
    [ "$how" = INT ] || note "reference MN stop: $how"
    code=$(http_get "$CSR_ON_OURS" /dev/null)
    if [ "$code" = 404 ]; then
      pass "B: the reference MN's CSR is gone from our IN after its graceful stop (404)"
      if [ -n "$anchor" ]; then
        if [ "$(http_get "http://$HOST:$IN_PORT/$anchor" /dev/null)" = 404 ] && [ "$(http_get "http://$HOST:$IN_PORT/${copy#/id-in/}" /dev/null)" = 404 ]; then
          pass "B: what the reference MN announced to our IN went with its registration (anchor and copy 404)"
        else
          fail "B: the reference MN's announced CSEBase $anchor or copy $copy is still on our IN after it deregistered"
        fi
      fi
    else
      fail "B: the reference MN's CSR is still on our IN after its graceful stop (HTTP $code)"
    fi
  fi

  # hard kill of the reference MN: our IN removes the CSR after liveliness_failures (2) rounds
  if ref_start MN "$REF_MN_DIR-2"; then
    if wait_code "$CSR_ON_OURS" 200 "$WAIT" "$REF_PID"; then
      kill -KILL "$REF_PID" 2>/dev/null; wait_exit "$REF_PID" 5
      t0=$(date +%s.%N)
      # 2 rounds + 2 probe time-outs (3 s each) + slack
      bound=$((2 * CHECK_INTERVAL + 2 * 3 + 4))
      if wait_code "$CSR_ON_OURS" 404 "$bound"; then
        pass "B: our IN removed the killed reference MN's CSR after $("$PY" -c "import time; print(round(time.time() - $t0, 1))")s (check interval ${CHECK_INTERVAL}s, 2 failed probes)"
      else
        fail "B: our IN still holds the killed reference MN's CSR after ${bound}s"
      fi
    else
      fail "B: the restarted reference MN did not register to our IN within ${WAIT}s"
    fi
  else
    fail "B: the reference MN did not start a second time (see $REF_MN_DIR-2/stdout.log)"
  fi

  stop_pid "$OUR_IN_PID" TERM 20; how=$HOW
  if [ "$how" = TERM ]; then pass "B: our IN stopped on SIGTERM"; else fail "B: our IN did not stop on SIGTERM within 20s ($how)"; fi
fi

echo "interop: $(( $(date +%s) - T_START ))s, acmecse $ACMECSE_VERSION"
echo "interop: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
