#!/usr/bin/env bash
# A localhost deployment of the app on real Flower processes: one SuperLink and N SuperNodes, each
# with its own budget, secured with TLS and SuperNode authentication (Flower's own mechanisms).
#
#   deploy/localhost.sh start [--insecure]   # credentials, SuperLink, register keys, SuperNodes
#   flwr run . rabo-local --stream           # submit (then: flwr list rabo-local --run-id <id>)
#   flwr log <id> rabo-local                 # follow a run's logs (--show: print them once)
#   deploy/localhost.sh stop                 # stop every process by its PID
#
# Settings (environment): DEPLOY_DIR (.deploy), SUPERLINK_PORT (9200), SUPERNODE_PORT (9210; node i
# uses SUPERNODE_PORT+i), BUDGETS (one node config per SuperNode, ';'-separated; default three
# nodes with ratios 1, 1/2 and a 16 MB memory budget). --insecure (no TLS, no authentication) is
# for localhost demos only. Every process gets FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1.
# The SuperLink keeps its state in $DIR/state/superlink.db: runs (and their logs) outlive a restart;
# remove that directory for a fresh start.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DEPLOY_DIR:-.deploy}
LINK_PORT=${SUPERLINK_PORT:-9200}
NODE_PORT=${SUPERNODE_PORT:-9210}
IFS=';' read -r -a BUDGETS <<< "${BUDGETS:-resource-ratio=1.0;resource-ratio=0.5;memory-mb=16}"
export FLWR_HOME=${FLWR_HOME:-$HOME/.flwr} FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1

# A PID from our files is ours only if that process is still a Flower process we started.
ours() {
  local pid=$1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && ps -p "$pid" -o command= 2>/dev/null | grep -q -E 'flower-(superlink|supernode)'
}

start() {
  local insecure=${1:-} pid_file
  for pid_file in "$DIR"/pids/*.pid; do  # double-start guard
    [[ -f $pid_file ]] || continue
    if ours "$(cat "$pid_file")"; then
      echo "already running ($pid_file): run '$0 stop' first" >&2; exit 1
    fi
    rm -f "$pid_file"  # stale: that process is gone
  done
  mkdir -p "$DIR/pids" "$DIR/logs" "$DIR/state" "$FLWR_HOME"
  local n=${#BUDGETS[@]} names=() link_tls=() node_tls=() cli_tls=() i
  for ((i = 0; i < n; i++)); do names+=("sn$i"); done
  if [[ $insecure == --insecure ]]; then
    link_tls=(--insecure); node_tls=(--insecure); cli_tls=(--insecure)
  else
    python deploy/credentials.py "$DIR" "${names[@]}"
    link_tls=(--ssl-ca-certfile "$DIR/certs/ca.crt" --ssl-certfile "$DIR/certs/server.pem"
              --ssl-keyfile "$DIR/certs/server.key" --enable-supernode-auth)
    cli_tls=(--root-certificates "$DIR/certs/ca.crt")
  fi
  # The flwr CLI's connection (flwr run . rabo-local), before any process starts: a config.toml that
  # is not valid TOML stops here with one message. Every other entry of the file is kept.
  python deploy/flwr_config.py "$FLWR_HOME/config.toml" rabo-local "127.0.0.1:$LINK_PORT" "${cli_tls[@]}"
  # Runs, registered SuperNodes and logs live in the database, so a restarted SuperLink keeps them.
  flower-superlink "${link_tls[@]}" --host 127.0.0.1 --port "$LINK_PORT" \
    --database "$DIR/state/superlink.db" > "$DIR/logs/superlink.log" 2>&1 &
  echo $! > "$DIR/pids/superlink.pid"
  local scheme=https curl_tls=(--cacert "$DIR/certs/ca.crt")
  [[ $insecure == --insecure ]] && { scheme=http; curl_tls=(); }
  local healthy=""
  for _ in $(seq 1 100); do
    if curl -sf "${curl_tls[@]}" "$scheme://127.0.0.1:$LINK_PORT/health" > /dev/null; then
      healthy=1; break
    fi
    sleep 0.3
  done
  if [[ -z $healthy ]]; then  # fail loudly, not with SuperNodes that cannot connect
    echo "the SuperLink did not become healthy on port $LINK_PORT within 30 s; its log:" >&2
    tail -n 20 "$DIR/logs/superlink.log" >&2
    stop > /dev/null
    exit 1
  fi
  # Restarted on the same database: the previous start's keys were replaced, so unregister its nodes.
  for id_file in "$DIR"/state/sn*.node-id; do
    [[ -f $id_file ]] || continue
    flwr supernode unregister "$(cat "$id_file")" rabo-local > /dev/null 2>&1 || true
    rm -f "$id_file"
  done
  for ((i = 0; i < n; i++)); do
    if [[ $insecure != --insecure ]]; then
      if ! flwr supernode register "$DIR/keys/sn$i.pub" rabo-local --format json | python -c '
import json, sys
reply = json.load(sys.stdin)
sys.exit(reply.get("error-message", "no reply")) if not reply.get("success") else print(reply["node-id"])
' > "$DIR/state/sn$i.node-id"; then
        echo "registering sn$i with the SuperLink failed (above); stopping" >&2
        stop > /dev/null
        exit 1
      fi
      node_tls=(--root-certificates "$DIR/certs/ca.crt" --auth-supernode-private-key "$DIR/keys/sn$i")
    fi
    flower-supernode "${node_tls[@]}" --superlink "127.0.0.1:$LINK_PORT" --port $((NODE_PORT + i)) \
      --node-config "partition-id=$i num-partitions=$n ${BUDGETS[$i]}" > "$DIR/logs/sn$i.log" 2>&1 &
    echo $! > "$DIR/pids/sn$i.pid"
  done
  echo "SuperLink on 127.0.0.1:$LINK_PORT and $n SuperNodes started (logs and PIDs in $DIR)."
  echo "Submit: flwr run . rabo-local --stream    Status: flwr list rabo-local --format json"
  echo "Logs of a run: flwr log <run-id> rabo-local"
}

stop() {
  local pid_file pid children=()
  for pid_file in "$DIR"/pids/sn*.pid "$DIR"/pids/superlink.pid; do  # SuperNodes first
    [[ -f $pid_file ]] || continue
    pid=$(cat "$pid_file")
    rm -f "$pid_file"
    if ! ours "$pid"; then  # gone, or the PID now belongs to another program: leave it alone
      echo "skipping $pid_file: process $pid is not a running Flower process" >&2
      continue
    fi
    children+=($(pgrep -P "$pid" || true))  # their flower-superexec helpers
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 1
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  echo "stopped"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop ;;
  *) echo "usage: $0 start [--insecure] | stop" >&2; exit 2 ;;
esac
