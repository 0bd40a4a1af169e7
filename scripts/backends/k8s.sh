#!/usr/bin/env bash
# Kubernetes test backend (single node, v1.20.2): k8s.sh build|up|down|status
#
# build  build kube-apiserver, kube-controller-manager, kube-scheduler and kubelet from Debian
#        bookworm's own source package (it ships vendor/, so only Debian's archive is reached)
#        with Debian's Go, plus a 4-hunk kubelet patch for this sandbox (k8s/kubelet-sandbox.patch:
#        no CAP_SYS_RESOURCE, a loopback node IP, never touch host sysctls). Cached by version
#        and patch hash in $CUBERUN_BACKENDS_CACHE (default /var/cache/cuberun-backends), reused
#        when present (~11 min cold on 2 quiet cores, 0 s warm).
# up     build (when needed), then start a private dockerd (no bridge), etcd, kube-apiserver,
#        controller-manager, scheduler and a kubelet (dockershim on that dockerd), all on
#        127.0.0.1 with state in $STATE/k8s; import local/pause:1.0, local/busybox:1.0 and the
#        base image into that dockerd; write $STATE/k8s/admin.kubeconfig; wait for the node to
#        be Ready and run a smoke Job; print the details JSON.
# down   stop what `up` started (recorded PIDs, cmdline checked), remove the kubelet's
#        containers and its entries under /var/log/{pods,containers}.
# status exit 0 when the API server answers and the node is Ready.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
LOG_TAG=k8s
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

K8S_VERSION=1.20.2
DEB_VERSION=1.20.5+really1.20.2
SRC_SHA256=b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc
PATCH="$HERE/k8s/kubelet-sandbox.patch"
BUILD_REV=1  # bump when the build steps change
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
BIN_CACHE="$CACHE_DIR/k8s-$K8S_VERSION"
BIN="$BIN_CACHE/bin"

D="$STATE/k8s"
KUBECONFIG_PATH="$D/admin.kubeconfig"
API_PORT=16443
ETCD_CLIENT=12379
ETCD_PEER=12380
ETCD_METRICS=12381
KCM_PORT=20257
SCHED_PORT=20259
KUBELET_PORT=20250
KUBELET_HEALTHZ=20248
NODE=cuberun-node1
SOCK="$D/docker.sock"
DOCKER_NAME=k8s-dockerd

cache_key() {
    printf 'k8s %s rev %s patch %s\n' "$K8S_VERSION" "$BUILD_REV" "$(sha256_of "$PATCH")"
}

# ---------------------------------------------------------------- build

do_build() {
    local key work tarball src gopath pkg ld c start t0
    key="$(cache_key)"
    if cache_valid "$BIN_CACHE" "$key"; then
        log "binaries cached in $BIN_CACHE"
        return 0
    fi
    t0=$SECONDS
    apt_install golang-go golang-github-modern-go-reflect2-dev curl ca-certificates patch make rsync
    mkdir -p "$CACHE_DIR/src"
    tarball="$CACHE_DIR/src/kubernetes_$DEB_VERSION.orig.tar.gz"
    fetch_verified "$(debian_mirror)/pool/main/k/kubernetes/kubernetes_$DEB_VERSION.orig.tar.gz" "$tarball" "$SRC_SHA256"
    work="$CACHE_DIR/k8s-build.partial"
    cache_rm_tree "$work"
    mkdir -p "$work"
    log "unpacking the source"
    tar -C "$work" -xzf "$tarball"
    src="$work/kubernetes-$K8S_VERSION"
    [[ -d "$src" ]] || die "the source tarball has no kubernetes-$K8S_VERSION/"
    # the vendored reflect2 1.0.1 crashes under Go >= 1.18; Debian's 1.0.2 has the same API
    local r="$src/vendor/github.com/modern-go/reflect2" deb=/usr/share/gocode/src/github.com/modern-go/reflect2
    rm -rf "$r" && mkdir -p "$r"
    cp -L "$deb"/*.go "$deb"/*.s "$r"/
    (cd "$src" && patch -p1 --quiet <"$PATCH") || die "the kubelet patch does not apply"
    export GOCACHE="$work/gocache" CGO_ENABLED=0 GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
    start=$SECONDS
    log "make generated_files (code generators; GOPATH mode as in Debian's build)"
    (cd "$src" && make generated_files) >"$LOG_DIR/k8s-build.log" 2>&1 ||
        { tail -n 30 "$LOG_DIR/k8s-build.log" >&2; die "make generated_files failed (log: $LOG_DIR/k8s-build.log)"; }
    log "generated files in $(( SECONDS - start ))s"
    gopath="$work/gopath"
    mkdir -p "$gopath/src/k8s.io"
    ln -sfn "$src" "$gopath/src/k8s.io/kubernetes"
    pkg=k8s.io/kubernetes/vendor/k8s.io
    ld="-s -w -X $pkg/component-base/version.gitVersion=v$K8S_VERSION -X $pkg/component-base/version.gitMajor=1"
    ld="$ld -X $pkg/component-base/version.gitMinor=20 -X $pkg/component-base/version.gitTreeState=clean"
    ld="$ld -X $pkg/client-go/pkg/version.gitVersion=v$K8S_VERSION -X $pkg/client-go/pkg/version.gitMajor=1"
    ld="$ld -X $pkg/client-go/pkg/version.gitMinor=20"
    mkdir -p "$work/out/bin"
    for c in "${COMPONENTS[@]}"; do
        start=$SECONDS
        (cd "$gopath/src/k8s.io/kubernetes" && GOPATH="$gopath" GO111MODULE=off \
            go build -p 2 -ldflags "$ld" -o "$work/out/bin/$c" "./cmd/$c") >>"$LOG_DIR/k8s-build.log" 2>&1 ||
            { tail -n 30 "$LOG_DIR/k8s-build.log" >&2; die "go build $c failed (log: $LOG_DIR/k8s-build.log)"; }
        log "built $c in $(( SECONDS - start ))s"
    done
    "$work/out/bin/kube-apiserver" --version | grep -q "v$K8S_VERSION" || die "the built kube-apiserver reports a wrong version"
    cache_rm_tree "$BIN_CACHE"
    mv "$work/out" "$BIN_CACHE"
    cache_seal "$BIN_CACHE" "$key"
    cache_rm_tree "$work"  # ~3 GB of sources and Go build cache
    log "Kubernetes $K8S_VERSION built in $(( SECONDS - t0 ))s; binaries in $BIN"
}

cmd_build() {
    require_root
    ensure_state_dirs
    mkdir -p "$CACHE_DIR"
    with_lock "$CACHE_DIR/k8s.lock" 3600 do_build
}

# ---------------------------------------------------------------- cluster

api() {  # api PATH: GET an API path with the admin token
    curl -fsS -m 10 -k -H "Authorization: Bearer $(cat "$D/certs/token")" "https://127.0.0.1:$API_PORT$1"
}

api_ready() {
    [[ "$(api /readyz 2>/dev/null)" == ok ]]
}

node_ready() {
    api "/api/v1/nodes/$NODE" 2>/dev/null | "$PY" -c '
import json, sys
node = json.load(sys.stdin)
ok = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
sys.exit(0 if ok else 1)'
}

sa_ready() {
    api /api/v1/namespaces/default/serviceaccounts/default >/dev/null 2>&1
}

# start_daemon NAME PATTERN CMD...: start CMD detached unless our recorded NAME is alive.
start_daemon() {
    local name=$1 pattern=$2 pid
    shift 2
    pid="$(recorded_pid "$name")"
    if [[ -n "$pid" ]] && pid_matches "$pid" "$pattern" "$D"; then
        log "our $name (pid $pid) is running; reusing it"
        return 0
    fi
    setsid nohup "$@" </dev/null >>"$D/logs/$name.log" 2>&1 3>&- &
    record_pid "$name" "$!"
    log "$name started (pid $!)"
}

ensure_images() {
    local img="$D/img" bb
    export DOCKER_HOST="unix://$SOCK"
    if ! docker image inspect local/pause:1.0 >/dev/null 2>&1; then
        apt_install gcc libc6-dev
        mkdir -p "$img/pause"
        cat >"$img/pause.c" <<'C'
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
static void done(int s) { (void)s; exit(0); }
int main(void) { signal(SIGINT, done); signal(SIGTERM, done); for (;;) pause(); }
C
        gcc -static -O2 -o "$img/pause/pause" "$img/pause.c"
        tar -C "$img/pause" -c . | docker import -c 'ENTRYPOINT ["/pause"]' - local/pause:1.0 >/dev/null
        log "imported local/pause:1.0"
    fi
    if ! docker image inspect local/busybox:1.0 >/dev/null 2>&1; then
        apt_install busybox-static
        bb="$img/bb"
        rm -rf "$bb" && mkdir -p "$bb/bin" "$bb/tmp" "$bb/etc"
        cp /bin/busybox "$bb/bin/busybox"
        "$bb/bin/busybox" --list | while read -r a; do [[ "$a" == busybox ]] || ln -sf busybox "$bb/bin/$a"; done
        tar -C "$bb" -c . | docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - local/busybox:1.0 >/dev/null
        log "imported local/busybox:1.0"
    fi
    if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        ensure_rootfs
        rootfs_tar | docker import "${IMPORT_CHANGES[@]}" - "$BASE_IMAGE" >/dev/null
        log "imported $BASE_IMAGE"
    fi
}

write_kubeconfig() {
    local token
    mkdir -p "$D/certs"
    if [[ ! -s "$D/certs/sa.key" ]]; then
        openssl genrsa -out "$D/certs/sa.key" 2048 2>/dev/null
        openssl rsa -in "$D/certs/sa.key" -pubout -out "$D/certs/sa.pub" 2>/dev/null
    fi
    if [[ ! -s "$D/certs/token" ]]; then
        (umask 077 && openssl rand -hex 16 >"$D/certs/token")
    fi
    token="$(cat "$D/certs/token")"
    printf '%s,admin,admin,system:masters\n' "$token" | write_if_changed "$D/certs/tokens.csv" 600 || true
    write_if_changed "$KUBECONFIG_PATH" 600 <<EOF || true
apiVersion: v1
kind: Config
clusters: [{name: cuberun-k8s, cluster: {server: "https://127.0.0.1:$API_PORT", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: $token}}]
contexts: [{name: cuberun-k8s, context: {cluster: cuberun-k8s, user: admin, namespace: default}}]
current-context: cuberun-k8s
EOF
}

smoke() {
    local out
    out="$("$PY" - "$D" "$API_PORT" <<'EOF'
import json, ssl, sys, time, urllib.request
d, port = sys.argv[1], sys.argv[2]
token = open(f"{d}/certs/token").read().strip()
ctx = ssl._create_unverified_context()
base = f"https://127.0.0.1:{port}/apis/batch/v1/namespaces/default/jobs"
def call(method, url, body=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return json.load(r)
name = f"cuberun-smoke-{int(time.time())}"
job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
       "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                "containers": [{"name": "c", "image": "local/busybox:1.0", "imagePullPolicy": "Never", "command": ["true"]}]}}}}
call("POST", base, job)
ok = False
try:
    for _ in range(120):
        status = call("GET", f"{base}/{name}").get("status", {})
        if status.get("succeeded") or status.get("failed"):
            ok = bool(status.get("succeeded"))
            break
        time.sleep(1)
finally:
    call("DELETE", f"{base}/{name}", {"propagationPolicy": "Background"})
print("ok" if ok else "failed")
EOF
)" || return 1
    [[ "$out" == ok ]]
}

cmd_up() {
    require_root
    ensure_state_dirs
    cmd_build
    apt_install docker.io etcd-server openssl curl
    mkdir -p "$D"/{etcd,certs,kubelet,logs,volume-plugins}
    start_private_dockerd "$DOCKER_NAME" "$D"
    ensure_images
    write_kubeconfig
    start_daemon etcd etcd /usr/bin/etcd --name cuberun-k8s --data-dir "$D/etcd/data" \
        --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
        --initial-cluster "cuberun-k8s=http://127.0.0.1:$ETCD_PEER" --listen-metrics-urls "http://127.0.0.1:$ETCD_METRICS"
    start_daemon kube-apiserver kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_CLIENT" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" --insecure-port=0 \
        --cert-dir="$D/certs/apiserver" --token-auth-file="$D/certs/tokens.csv" --authorization-mode=Node,RBAC \
        --service-account-key-file="$D/certs/sa.pub" --service-account-signing-key-file="$D/certs/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local --service-cluster-ip-range=10.0.0.0/24 \
        --endpoint-reconciler-type=none --allow-privileged=true --kubelet-preferred-address-types=InternalIP --profiling=false
    wait_until 120 0.5 "kube-apiserver /readyz" api_ready ||
        { tail -n 20 "$D/logs/kube-apiserver.log" >&2; die "kube-apiserver not ready within 120s (log: $D/logs/kube-apiserver.log)"; }
    start_daemon kube-controller-manager kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig="$KUBECONFIG_PATH" --leader-elect=false --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --port=0 \
        --service-account-private-key-file="$D/certs/sa.key" --root-ca-file="$D/certs/apiserver/apiserver.crt" \
        --use-service-account-credentials=false --cert-dir="$D/certs/kcm"
    start_daemon kube-scheduler kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_PATH" \
        --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
        --leader-elect=false --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --port=0 --cert-dir="$D/certs/sched"
    start_daemon kubelet kubelet "$BIN/kubelet" --kubeconfig="$KUBECONFIG_PATH" --container-runtime=docker \
        --docker-endpoint="unix://$SOCK" --container-runtime-endpoint="unix://$D/dockershim.sock" \
        --image-service-endpoint="unix://$D/dockershim.sock" --pod-infra-container-image=local/pause:1.0 \
        --root-dir="$D/kubelet" --cert-dir="$D/kubelet/pki" --address=127.0.0.1 --port="$KUBELET_PORT" --read-only-port=0 \
        --healthz-bind-address=127.0.0.1 --healthz-port="$KUBELET_HEALTHZ" --hostname-override="$NODE" --node-ip=127.0.0.1 \
        --fail-swap-on=false --cgroup-driver=cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
        --make-iptables-util-chains=false --volume-plugin-dir="$D/volume-plugins" \
        --eviction-hard='memory.available<100Mi,nodefs.available<1%,imagefs.available<1%' \
        --image-gc-high-threshold=99 --image-gc-low-threshold=98 --serialize-image-pulls=false
    wait_until 180 1 "node $NODE Ready" node_ready ||
        { tail -n 20 "$D/logs/kubelet.log" >&2; die "node $NODE not Ready within 180s (log: $D/logs/kubelet.log)"; }
    wait_until 60 1 "the default service account" sa_ready || die "no default service account after 60s"
    smoke || die "the smoke Job did not succeed (logs: $D/logs)"
    log "ok: Kubernetes $K8S_VERSION, node $NODE Ready, smoke Job succeeded"
    emit_json kubeconfig "$KUBECONFIG_PATH" server "https://127.0.0.1:$API_PORT" version "$K8S_VERSION" node "$NODE" \
        docker_host "unix://$SOCK" namespace default images 'json:["local/busybox:1.0", "local/pause:1.0"]' \
        base_image "$BASE_IMAGE" env "json:{\"KUBECONFIG\": \"$KUBECONFIG_PATH\"}"
}

cmd_down() {
    ensure_state_dirs
    local name uid
    for name in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
        stop_recorded "$name" 20 "$name" "$D"
    done
    if [[ -S "$SOCK" ]] && DOCKER_HOST="unix://$SOCK" timeout 20 docker info >/dev/null 2>&1; then
        DOCKER_HOST="unix://$SOCK" docker ps -aq --filter name=k8s_ | xargs -r env DOCKER_HOST="unix://$SOCK" docker rm -f >/dev/null 2>&1 || true
    fi
    stop_private_dockerd "$DOCKER_NAME" "$SOCK" "$D/docker-exec"
    # the kubelet writes pod logs under /var/log/{pods,containers}: remove only our pods' entries
    if [[ -d "$D/kubelet/pods" ]]; then
        for uid in "$D"/kubelet/pods/*; do
            [[ -e "$uid" ]] || continue
            uid="$(basename "$uid")"
            rm -rf /var/log/pods/*_"$uid"
        done
    fi
    find /var/log/containers -xtype l -delete 2>/dev/null || true
    rmdir /var/log/pods /var/log/containers 2>/dev/null || true
    local mnt
    mnt="$(awk -v d="$D/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)"
    if [[ -n "$mnt" ]]; then
        while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done <<<"$mnt"
    fi
}

cmd_status() {
    if [[ ! -f "$KUBECONFIG_PATH" ]]; then
        log "not up (no $KUBECONFIG_PATH)"
        return 1
    fi
    api_ready || { log "kube-apiserver does not answer"; return 1; }
    node_ready || { log "node $NODE is not Ready"; return 1; }
    log "up: https://127.0.0.1:$API_PORT, node $NODE Ready"
}

redirect_stdout_to_stderr
case "${1:-}" in
    build) cmd_build ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 build|up|down|status" ;;
esac
