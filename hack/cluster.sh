#!/usr/bin/env bash
# Local Kubernetes control plane for development and e2e tests: a real etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler (built from source
# by hack/build-binaries.sh) plus kwok, which plays the kubelet for fake nodes.
# Everything listens on 127.0.0.1 only, on non-default ports.
#
#   hack/cluster.sh up          start (or reuse) the cluster; prints the kubeconfig path
#   hack/cluster.sh down        stop every component and delete the state dir
#   hack/cluster.sh status      component liveness and /readyz (exit 1 if unhealthy)
#   hack/cluster.sh kubeconfig  print the kubeconfig path
#   hack/cluster.sh logs        last 40 lines of every component log
#   hack/cluster.sh outage NAME SECONDS
#                               kill -9 one component, keep it down SECONDS, start
#                               it again as it was started (reliability tests)
#
# State lives in $CLUSTER_DIR (default ${HEADROOM_CACHE:-~/.cache/headroom}/cluster):
# kubeconfig, pki/, etcd/, logs/<component>.log, pids/<component>.
# HEADROOM_KWOK_NODES=N starts N fake nodes (default 2); HEADROOM_AUDIT_USER=name
# writes a Metadata-level audit log of that user's requests to logs/audit.log
# (off by default; `make bench-scale` counts the operator's requests with it).
# Only the kubeconfig path goes to stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${HEADROOM_CACHE:-$HOME/.cache/headroom}
CLUSTER_DIR=${CLUSTER_DIR:-$CACHE/cluster}
KUBECONFIG_PATH=$CLUSTER_DIR/kubeconfig
LOG_DIR=$CLUSTER_DIR/logs
PID_DIR=$CLUSTER_DIR/pids
PKI=$CLUSTER_DIR/pki
MARKER=$CLUSTER_DIR/.headroom-cluster

# Ports (all on 127.0.0.1). Override to run a second cluster next to the first.
ETCD_CLIENT_PORT=${HEADROOM_ETCD_CLIENT_PORT:-23790}
ETCD_PEER_PORT=${HEADROOM_ETCD_PEER_PORT:-23800}
APISERVER_PORT=${HEADROOM_APISERVER_PORT:-16443}
KCM_PORT=${HEADROOM_KCM_PORT:-20257}
SCHEDULER_PORT=${HEADROOM_SCHEDULER_PORT:-20259}

SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16 # only used by kwok to invent pod IPs; nothing connects to them
SA_ISSUER=https://kubernetes.default.svc.cluster.local
NODES=()
for ((i = 0; i < ${HEADROOM_KWOK_NODES:-2}; i++)); do NODES+=("kwok-node-$i"); done
AUDIT_USER=${HEADROOM_AUDIT_USER:-}
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

START_TIMEOUT=${HEADROOM_CLUSTER_TIMEOUT:-120} # seconds, per wait step

log() { echo "cluster: [${SECONDS}s] $*" >&2; }

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- processes --

pid_of() { [[ -s "$PID_DIR/$1" ]] && cat "$PID_DIR/$1"; }

# alive NAME: the pid recorded for NAME runs and is still that component's
# binary (guards against pid reuse after a reboot or a crash).
alive() {
  local name=$1 pid exe
  pid=$(pid_of "$name") || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/cmdline ]]; then
    exe=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1) || return 1
    # setsid and nohup: caught between start() and the component's exec.
    case "${exe##*/}" in "$name" | setsid | nohup) ;; *) return 1 ;; esac
  fi
}

# running PID: the process exists and has not exited (a zombie waiting to be
# reaped counts as exited).
running() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [[ "$state" != Z ]]
}

kubectl_bin() {
  if [[ -s "$CLUSTER_DIR/bin-dir" && -x "$(cat "$CLUSTER_DIR/bin-dir")/kubectl" ]]; then
    echo "$(cat "$CLUSTER_DIR/bin-dir")/kubectl"
  elif [[ -n "${BIN:-}" ]]; then
    echo "$BIN/kubectl"
  else
    command -v kubectl || return 1
  fi
}

kc() { "$(kubectl_bin)" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

readyz() { [[ -s "$KUBECONFIG_PATH" ]] && kc get --raw /readyz --request-timeout=5s >/dev/null 2>&1; }

healthy() {
  [[ -f "$MARKER" && -s "$KUBECONFIG_PATH" ]] || return 1
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  readyz
}

# stop_all: TERM every component's process group, wait, then KILL leftovers.
stop_all() {
  [[ -d "$PID_DIR" ]] || return 0
  local c pid pids=() i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[i]}
    pid=$(pid_of "$c") || continue
    if kill -0 "$pid" 2>/dev/null && ! alive "$c"; then
      continue # the pid now belongs to somebody else
    fi
    # Components are started with setsid, so pid == pgid.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  local deadline=$((SECONDS + 20)) left
  while :; do
    left=()
    for pid in "${pids[@]}"; do
      if kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null; then left+=("$pid"); fi
    done
    ((${#left[@]} == 0)) && break
    if ((SECONDS >= deadline)); then
      log "force-killing ${left[*]}"
      for pid in "${left[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_DIR"/*
}

remove_dir() {
  [[ -e "$CLUSTER_DIR" ]] || return 0
  if [[ ! -f "$MARKER" ]] && [[ -n "$(ls -A "$CLUSTER_DIR" 2>/dev/null)" ]]; then
    log "refusing to delete $CLUSTER_DIR: not a hack/cluster.sh state dir (no $MARKER)"
    exit 1
  fi
  rm -rf "$CLUSTER_DIR"
}

tail_logs() { # tail_logs LINES
  local c
  for c in "${COMPONENTS[@]}"; do
    [[ -f "$LOG_DIR/$c.log" ]] || continue
    echo "===== $c ($LOG_DIR/$c.log) ====="
    tail -n "$1" "$LOG_DIR/$c.log"
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------- pki --

gen_pki() {
  mkdir -p "$PKI"
  (
    cd "$PKI"
    umask 077
    serial() { echo "0x$(openssl rand -hex 16)"; }
    cat >ca.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = headroom-local-ca
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
EOF
    # ECDSA P-256 throughout: key generation is instant, RSA-2048 takes
    # seconds on a loaded 2-core machine.
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
    openssl req -x509 "${ec[@]}" -nodes -sha256 -days 3650 -set_serial "$(serial)" \
      -keyout ca.key -out ca.crt -config ca.cnf -extensions v3_ca 2>/dev/null

    # sign NAME SUBJECT EXTENSIONS
    sign() {
      openssl req -new "${ec[@]}" -nodes -sha256 -keyout "$1.key" -out "$1.csr" \
        -subj "$2" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -sha256 -days 3650 -in "$1.csr" -CA ca.crt -CAkey ca.key \
        -set_serial "$(serial)" -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr"
    }
    sign apiserver "/CN=kube-apiserver" "basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1"
    local client="basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid"
    sign admin "/O=system:masters/CN=admin" "$client"
    # Aggregation-layer identity; also lets controller-manager and scheduler
    # load a requestheader CA instead of logging errors about a missing one.
    sign front-proxy-client "/CN=front-proxy-client" "$client"

    # Service-account token signing key (ES256).
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

b64() { openssl base64 -A <"$1"; }

write_kubeconfig() {
  umask 077
  cat >"$KUBECONFIG_PATH" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: headroom
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: headroom
  context:
    cluster: headroom
    user: admin
current-context: headroom
EOF
}

# -------------------------------------------------------------------- start --

start() { # start NAME CMD...
  local name=$1
  shift
  # setsid: own session/process group (so `down` can kill the whole group and
  # the component survives the shell that started it); nohup: ignore SIGHUP.
  # In a non-interactive script a background child is never a group leader, so
  # setsid does not fork and $! is the component's pid.
  # 9>&-: do not leak the flock fd, or the daemons would hold the lock forever.
  mkdir -p "$CLUSTER_DIR/cmd"
  printf '%s\0' "$@" >"$CLUSTER_DIR/cmd/$name" # for `outage`: start it the same way
  setsid nohup "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$PID_DIR/$name"
  STARTED+=("$name")
}

STARTED=()

fail() {
  log "ERROR: $*"
  {
    echo "----- last 25 lines of each component log -----"
    tail_logs 25
  } >&2
  exit 1
}

# wait_until TIMEOUT WHAT CMD...: poll CMD until it succeeds; fail early if a
# started component died; fail with the log tails when TIMEOUT passes.
wait_until() {
  local timeout=$1 what=$2 c
  shift 2
  local deadline=$((SECONDS + timeout))
  while ! "$@" >/dev/null 2>&1; do
    # Only "still running" here, not alive()'s name check: right after
    # start the pid is still setsid or nohup on its way to exec'ing the
    # component, and a slow machine can be caught in that window.
    for c in "${STARTED[@]}"; do
      running "$(pid_of "$c")" || fail "$c exited while waiting for $what (log: $LOG_DIR/$c.log)"
    done
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what"
    sleep 0.25
  done
}

nodes_ready() { # nodes_ready [any-taints]
  local out want_taints=${1:-}
  out=$(kc get nodes "${NODES[@]}" -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}{"\n"}{end}' 2>/dev/null) || return 1
  local n
  for n in "${NODES[@]}"; do
    # Ready and no taints left (TaintNodesByCondition adds not-ready on create;
    # the node lifecycle controller removes it once kwok reports Ready).
    if [[ -n "$want_taints" ]]; then
      grep -q "^$n=True/" <<<"$out" || return 1
    else
      grep -qx "$n=True/" <<<"$out" || return 1
    fi
  done
}

apply_nodes() {
  local n manifest=""
  for n in "${NODES[@]}"; do
    manifest+="---
apiVersion: v1
kind: Node
metadata:
  name: $n
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    type: kwok
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $n
    node-role.kubernetes.io/agent: \"\"
status:
  allocatable: {cpu: \"64\", memory: 256Gi, pods: \"500\", ephemeral-storage: 1Ti}
  capacity: {cpu: \"64\", memory: 256Gi, pods: \"500\", ephemeral-storage: 1Ti}
"
  done
  kc apply -f - >/dev/null <<<"$manifest"
}

# The default StorageClass: claims get a hostPath volume from the controller
# manager's development-only provisioner (--enable-hostpath-provisioner), so a
# Redis with persistence goes Ready here. Nothing reads or writes the data:
# kwok runs no containers.
apply_storage_class() {
  kc apply -f - >/dev/null <<'YAML'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML
}

post_start() { # post_start [reuse]
  apply_nodes || fail "could not create the kwok nodes"
  apply_storage_class || fail "could not create the default StorageClass"
  if [[ -n "${1:-}" ]]; then # a test may have cordoned or tainted a node since
    wait_until "$START_TIMEOUT" "nodes ${NODES[*]} to be Ready" nodes_ready any-taints
  else
    wait_until "$START_TIMEOUT" "nodes ${NODES[*]} to be Ready and untainted" nodes_ready
  fi
  wait_until "$START_TIMEOUT" "ServiceAccount default/default" kc get serviceaccount default -n default
}

cmd_up() {
  local t0=$SECONDS
  mkdir -p "$(dirname "$CLUSTER_DIR")"
  exec 9>"$CLUSTER_DIR.lock"
  flock -w 600 9 || { log "another hack/cluster.sh holds $CLUSTER_DIR.lock"; exit 1; }

  BIN=$("$here/build-binaries.sh")
  [[ -x "$BIN/kube-apiserver" ]] || { log "build-binaries.sh gave no binaries in '$BIN'"; exit 1; }

  if healthy; then
    STARTED=("${COMPONENTS[@]}")
    post_start reuse
    log "reusing the running cluster in $CLUSTER_DIR ($((SECONDS - t0))s)"
    echo "$KUBECONFIG_PATH"
    return 0
  fi
  if [[ -e "$CLUSTER_DIR" ]]; then
    log "cluster in $CLUSTER_DIR is not healthy; tearing it down and starting afresh"
    stop_all
    remove_dir
  fi

  local p
  for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT" "$SCHEDULER_PORT"; do
    if port_in_use "$p"; then
      log "127.0.0.1:$p is already in use (another cluster? try: CLUSTER_DIR=... hack/cluster.sh down," \
        "or set HEADROOM_*_PORT)"
      exit 1
    fi
  done

  mkdir -p "$CLUSTER_DIR" "$LOG_DIR" "$PID_DIR" "$CLUSTER_DIR/kwok"
  chmod 700 "$CLUSTER_DIR"
  mkdir -m 700 "$CLUSTER_DIR/etcd"
  touch "$MARKER"
  echo "$BIN" >"$CLUSTER_DIR/bin-dir"
  cp "$here/kwok/stages.yaml" "$CLUSTER_DIR/kwok/stages.yaml"
  cat >"$CLUSTER_DIR/ports.env" <<EOF
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
EOF

  # If anything below fails, stop what was started (logs stay for `logs`).
  trap 'rc=$?; if ((rc != 0)); then log "start failed; stopping components (logs kept in $LOG_DIR)"; stop_all; fi' EXIT

  log "generating certificates"
  gen_pki
  write_kubeconfig

  local etcd_url=http://127.0.0.1:$ETCD_CLIENT_PORT peer_url=http://127.0.0.1:$ETCD_PEER_PORT
  log "starting etcd on $etcd_url"
  start etcd "$BIN/etcd" \
    --name=headroom --data-dir="$CLUSTER_DIR/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="$peer_url" --initial-advertise-peer-urls="$peer_url" \
    --initial-cluster="headroom=$peer_url" --initial-cluster-state=new \
    --unsafe-no-fsync --auto-compaction-mode=periodic --auto-compaction-retention=5m \
    --log-level=warn
  wait_until 30 "etcd to listen on $etcd_url" port_in_use "$ETCD_CLIENT_PORT"

  local audit_flags=()
  if [[ -n "$AUDIT_USER" ]]; then
    cat >"$CLUSTER_DIR/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    users: ["$AUDIT_USER"]
  - level: None
EOF
    audit_flags=(--audit-policy-file="$CLUSTER_DIR/audit-policy.yaml"
      --audit-log-path="$LOG_DIR/audit.log" --audit-log-format=json --audit-log-maxsize=0)
  fi
  log "starting kube-apiserver on https://127.0.0.1:$APISERVER_PORT"
  # --endpoint-reconciler-type=none: the advertise address is 127.0.0.1 and
  # Endpoints validation rejects loopback IPs, so the default reconciler would
  # log "unable to sync kubernetes service" forever. Nothing here needs the
  # default/kubernetes Endpoints (no real pods run); the Service still exists.
  # Default admission plugins (PodSecurity, ServiceAccount, ...) stay enabled.
  start kube-apiserver "$BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --etcd-servers="$etcd_url" \
    --cert-dir="$PKI/kube-apiserver" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer="$SA_ISSUER" \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --requestheader-client-ca-file="$PKI/ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    "${audit_flags[@]}" \
    --profiling=false
  wait_until "$START_TIMEOUT" "kube-apiserver /readyz" readyz

  log "starting kube-controller-manager, kube-scheduler and kwok"
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$KUBECONFIG_PATH" \
    --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$PKI/kube-controller-manager" \
    --leader-elect=false \
    --controllers='*' \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --kube-api-qps=200 --kube-api-burst=400 \
    --node-monitor-grace-period=180s \
    --flex-volume-plugin-dir="$CLUSTER_DIR/flexvolume" \
    --enable-hostpath-provisioner \
    --profiling=false
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$KUBECONFIG_PATH" \
    --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$PKI/kube-scheduler" \
    --leader-elect=false \
    --profiling=false
  # KWOK_WORKDIR keeps kwok from also loading the user's ~/.kwok/kwok.yaml.
  # The plain kwok binary has no built-in stages; hack/kwok/stages.yaml holds the
  # kwokctl defaults (node init + lease heartbeat, pod ready/complete/delete).
  # No --server-address/--node-port: kwok opens no port at all.
  start kwok env KWOK_WORKDIR="$CLUSTER_DIR/kwok" "$BIN/kwok" \
    --kubeconfig="$KUBECONFIG_PATH" \
    --config="$CLUSTER_DIR/kwok/stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 \
    --node-ip=127.0.0.1 --node-name=localhost \
    --cidr="$POD_CIDR"

  post_start
  trap - EXIT
  log "cluster up in $((SECONDS - t0))s; export KUBECONFIG=$KUBECONFIG_PATH"
  echo "$KUBECONFIG_PATH"
}

cmd_down() {
  mkdir -p "$(dirname "$CLUSTER_DIR")"
  exec 9>"$CLUSTER_DIR.lock"
  flock -w 600 9 || { log "another hack/cluster.sh holds $CLUSTER_DIR.lock"; exit 1; }
  if [[ ! -e "$CLUSTER_DIR" ]]; then
    log "no cluster in $CLUSTER_DIR"
    return 0
  fi
  [[ -f "$MARKER" ]] || remove_dir # refuses (and exits) for foreign dirs
  stop_all
  remove_dir
  log "cluster in $CLUSTER_DIR stopped and removed"
}

cmd_status() {
  if [[ ! -f "$MARKER" ]]; then
    echo "no cluster in $CLUSTER_DIR"
    return 1
  fi
  local c ok=0 pid
  for c in "${COMPONENTS[@]}"; do
    pid=$(pid_of "$c" || echo -)
    if alive "$c"; then
      printf '%-24s alive (pid %s)\n' "$c" "$pid"
    else
      printf '%-24s DEAD  (pid %s)\n' "$c" "$pid"
      ok=1
    fi
  done
  if readyz; then
    printf '%-24s ok\n' "readyz"
  else
    printf '%-24s FAILING\n' "readyz"
    ok=1
  fi
  echo "kubeconfig: $KUBECONFIG_PATH"
  return $ok
}

cmd_outage() { # cmd_outage NAME SECONDS
  local name=${1:?component} downtime=${2:?seconds} pid cmd=()
  [[ -s "$CLUSTER_DIR/cmd/$name" ]] || { log "no recorded command for $name"; exit 1; }
  pid=$(pid_of "$name") || { log "no pid for $name"; exit 1; }
  alive "$name" || { log "$name is not running"; exit 1; }
  mapfile -d '' -t cmd <"$CLUSTER_DIR/cmd/$name"
  log "killing $name (pid $pid) for ${downtime}s"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  sleep "$downtime"
  STARTED=()
  start "$name" "${cmd[@]}"
  if [[ $name == kube-apiserver ]]; then
    wait_until "$START_TIMEOUT" "kube-apiserver /readyz" readyz
  fi
  log "$name is back"
}

cmd_logs() {
  if [[ ! -d "$LOG_DIR" ]]; then
    log "no logs in $LOG_DIR"
    return 1
  fi
  tail_logs 40
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kubeconfig) echo "$KUBECONFIG_PATH" ;;
  logs) cmd_logs ;;
  outage) shift; cmd_outage "$@" ;;
  *) usage ;;
esac
