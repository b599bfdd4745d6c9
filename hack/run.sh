#!/usr/bin/env bash
# `make run`: install the CRD, start the operator in the background (webhook on
# 127.0.0.1), deploy the demo app and the shop ScalingProfile, wait until it is
# Ready and print its status. Works against the local control plane or any
# cluster in $KUBECONFIG (then the webhook must be reachable at 127.0.0.1,
# i.e. the API server runs on this machine; otherwise deploy manifests/).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KUBECONFIG:?KUBECONFIG must point at the cluster}"
state=${HEADROOM_CACHE:-$HOME/.cache/headroom}/run
mkdir -p "$state"

if command -v kubectl >/dev/null && [[ -z ${CLUSTER_DIR:-} || $KUBECONFIG != "$CLUSTER_DIR/kubeconfig" ]]; then
  kubectl=(kubectl)
else
  kubectl=("$(hack/build-binaries.sh)/kubectl")
fi
k() { "${kubectl[@]}" --kubeconfig "$KUBECONFIG" "$@"; }

echo "== CRD and the operator namespace (its Lease)"
k apply --server-side --field-manager=headroom-run -f manifests/namespace.yaml
k apply --server-side --force-conflicts --field-manager=headroom-run -f crds/
k wait --for=condition=Established crd/scalingprofiles.headroom.dev --timeout=60s >/dev/null

echo "== operator"
if [[ -f $state/operator.pid ]] && kill -0 "$(cat "$state/operator.pid")" 2>/dev/null; then
  kill "$(cat "$state/operator.pid")"; sleep 1
fi
HEADROOM_METRICS_ADDR=127.0.0.1 HEADROOM_HEALTH_ADDR=127.0.0.1 \
  nohup setsid .venv/bin/headroom run >"$state/operator.log" 2>&1 &
echo $! >"$state/operator.pid"
for _ in $(seq 1 60); do
  k get validatingwebhookconfiguration headroom.dev >/dev/null 2>&1 && break
  kill -0 "$(cat "$state/operator.pid")" || { tail -30 "$state/operator.log"; exit 1; }
  sleep 1
done
echo "   pid $(cat "$state/operator.pid"), log $state/operator.log, metrics http://127.0.0.1:8000/metrics"

echo "== demo app and profile"
k apply --server-side --field-manager=headroom-run -f examples/demo/app.yaml
k apply -n headroom-demo -f examples/shop.yaml
k wait --for=condition=Ready scalingprofile/shop -n headroom-demo --timeout=180s
echo
k get scalingprofiles -n headroom-demo
echo
echo "== status.conditions of shop"
k get scalingprofile shop -n headroom-demo \
  -o jsonpath='{range .status.conditions[*]}{.type}{"\t"}{.status}{"\t"}{.reason}{"\t"}{.message}{"\n"}{end}' |
  awk -F'\t' '{printf "%-18s %-8s %-20s %s\n", $1, $2, $3, $4}'
echo
echo "== status.budget of shop"
k get scalingprofile shop -n headroom-demo -o jsonpath='{.status.budget}' | python3 -m json.tool
echo
k get deploy,svc,pdb,configmap,secret -n headroom-demo -l app.kubernetes.io/managed-by=headroom
echo
echo "The operator keeps running (pid $(cat "$state/operator.pid")); stop it with: kill \$(cat $state/operator.pid)"
