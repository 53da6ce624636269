#!/usr/bin/env bash
# Probe recipe: containerd 2.4.2 + Debian runc/CNI + stock kubelet 1.37.2 running etcd and
# kube-apiserver as static pods, images built by buildah FROM scratch, imported with ctr. No registry.
set -euo pipefail
D=${D:-/tmp/nodeprobe/node}                 # all node state
BIN=/tmp/nodeprobe/bin                      # containerd, ctr, containerd-shim-runc-v2, crictl, pause, web
KB=$HOME/.cache/ferrite/kubernetes-v1.37.2/bin
ETCD=$HOME/.cache/ferrite/etcd-v3.7.3/bin/etcd
NODE_IP=${NODE_IP:-$(ip -4 route get 1.1.1.1 | awk '{for(i=1;i<NF;i++) if($i=="src") print $(i+1)}')}
NODE=$(hostname)
export PATH=$BIN:$PATH
t0=$(date +%s.%N); el() { printf '[%5.1fs] %s\n' "$(echo "$(date +%s.%N)-$t0" | bc)" "$*"; }
mkdir -p $D/{containerd,cni/net.d,pki,manifests,kubelet,etcd} 

# ---- images (buildah, vfs storage kept under $D) -----------------------------------------------
B="buildah --root $D/buildah/root --runroot $D/buildah/run --storage-driver vfs"
img() { # name:tag src-binary dest-path
  local c; c=$($B from scratch); $B copy $c "$2" "$3" >/dev/null; $B config --entrypoint "[\"$3\"]" $c
  $B commit -q --rm $c "localhost/$1" >/dev/null; $B push -q "localhost/$1" "oci-archive:$D/$(echo $1|tr :/ __).tar:localhost/$1"
}
img pause:probe $BIN/pause /pause
img web:probe $BIN/web /web
img etcd:v3.7.3 $ETCD /usr/local/bin/etcd
img kube-apiserver:v1.37.2 $KB/kube-apiserver /usr/local/bin/kube-apiserver
el "images built"

# ---- PKI (openssl) ------------------------------------------------------------------------------
cd $D/pki
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=probe-ca 2>/dev/null
printf 'subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:%s,IP:127.0.0.1,IP:%s,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n' $NODE $NODE_IP > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
cert() { openssl req -newkey rsa:2048 -nodes -keyout $1.key -out $1.csr -subj "$2" 2>/dev/null
         openssl x509 -req -in $1.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out $1.crt -extfile $3 2>/dev/null; rm $1.csr; }
cert apiserver /CN=kube-apiserver server.ext
cert admin "/O=system:masters/CN=kubernetes-admin" client.ext
cert kubelet "/O=system:nodes/CN=system:node:$NODE" client.ext
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client.ext
openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
for u in admin kubelet; do f=$D/$u.kubeconfig
  $KB/kubectl config --kubeconfig=$f set-cluster probe --server=https://127.0.0.1:6443 --certificate-authority=$D/pki/ca.crt --embed-certs >/dev/null
  $KB/kubectl config --kubeconfig=$f set-credentials $u --client-certificate=$D/pki/$u.crt --client-key=$D/pki/$u.key --embed-certs >/dev/null
  $KB/kubectl config --kubeconfig=$f set-context probe --cluster=probe --user=$u >/dev/null
  $KB/kubectl config --kubeconfig=$f use-context probe >/dev/null; done
cd /tmp
el "pki written"

# ---- containerd -----------------------------------------------------------------------------------
cat > $D/containerd/config.toml <<TOML
version = 3
root = '$D/containerd/root'
state = '$D/containerd/state'
disabled_plugins = ['io.containerd.nri.v1.nri']
[grpc]
  address = '$D/containerd/containerd.sock'
[ttrpc]
  address = '$D/containerd/containerd.sock.ttrpc'
[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'localhost/pause:probe'
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true          # this VM lacks CAP_SYS_RESOURCE: runc cannot set oom_score_adj < 0
    netns_mounts_under_state_dir = true    # pod netns under state dir, not /run/netns
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '/usr/sbin/runc'
          Root = '$D/containerd/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '$D/cni/net.d'
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = '$D/containerd/s'
  [plugins.'io.containerd.internal.v1.opt']
    path = '$D/containerd/opt'
TOML
cat > $D/cni/net.d/10-probe.conflist <<JSON
{ "cniVersion": "1.0.0", "name": "probe", "plugins": [
  { "type": "bridge", "bridge": "probe0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
    "ipam": { "type": "host-local", "dataDir": "$D/cni/ipam",
              "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}] } },
  { "type": "portmap", "capabilities": {"portMappings": true} } ] }
JSON
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 10\n' $D/containerd/containerd.sock $D/containerd/containerd.sock > $D/crictl.yaml
setsid $BIN/containerd -c $D/containerd/config.toml >$D/containerd.log 2>&1 </dev/null & echo $! >$D/containerd.pid
for i in $(seq 100); do [ -S $D/containerd/containerd.sock ] && break; sleep 0.1; done
el "containerd up"
for t in $D/*.tar; do ctr -a $D/containerd/containerd.sock -n k8s.io images import $t >/dev/null 2>&1; done
el "images imported: $(crictl -c $D/crictl.yaml images -q | wc -l)"

# ---- static pods ----------------------------------------------------------------------------------
cat > $D/manifests/etcd.yaml <<YAML
apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system, labels: {component: etcd, tier: control-plane}}
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  containers:
  - name: etcd
    image: localhost/etcd:v3.7.3
    imagePullPolicy: Never
    command: [/usr/local/bin/etcd, --name=$NODE, --data-dir=/var/lib/etcd,
      --listen-client-urls=http://127.0.0.1:2379, --advertise-client-urls=http://127.0.0.1:2379,
      --listen-peer-urls=http://127.0.0.1:2380, --initial-advertise-peer-urls=http://127.0.0.1:2380,
      --initial-cluster=$NODE=http://127.0.0.1:2380, --listen-metrics-urls=http://127.0.0.1:2381]
    volumeMounts: [{name: data, mountPath: /var/lib/etcd}]
    livenessProbe: {httpGet: {host: 127.0.0.1, path: /livez, port: 2381}, initialDelaySeconds: 10}
  volumes: [{name: data, hostPath: {path: $D/etcd, type: DirectoryOrCreate}}]
YAML
cat > $D/manifests/kube-apiserver.yaml <<YAML
apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system, labels: {component: kube-apiserver, tier: control-plane}}
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  containers:
  - name: kube-apiserver
    image: localhost/kube-apiserver:v1.37.2
    imagePullPolicy: Never
    command: [/usr/local/bin/kube-apiserver, --advertise-address=$NODE_IP, --secure-port=6443,
      --etcd-servers=http://127.0.0.1:2379,
      --tls-cert-file=/etc/kubernetes/pki/apiserver.crt, --tls-private-key-file=/etc/kubernetes/pki/apiserver.key,
      --client-ca-file=/etc/kubernetes/pki/ca.crt,
      --kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt,
      --kubelet-client-key=/etc/kubernetes/pki/apiserver-kubelet-client.key,
      "--kubelet-preferred-address-types=InternalIP,Hostname",
      --service-account-issuer=https://kubernetes.default.svc.cluster.local,
      --service-account-key-file=/etc/kubernetes/pki/sa.pub, --service-account-signing-key-file=/etc/kubernetes/pki/sa.key,
      --service-cluster-ip-range=10.96.0.0/12, "--authorization-mode=Node,RBAC",
      --enable-admission-plugins=NodeRestriction, --allow-privileged=true]
    volumeMounts: [{name: pki, mountPath: /etc/kubernetes/pki, readOnly: true}, {name: tmp, mountPath: /tmp}]
    livenessProbe: {httpGet: {host: 127.0.0.1, path: /livez, port: 6443, scheme: HTTPS}, initialDelaySeconds: 15, failureThreshold: 8}
  volumes: [{name: pki, hostPath: {path: $D/pki, type: Directory}}, {name: tmp, emptyDir: {}}]
YAML

# ---- kubelet ----------------------------------------------------------------------------------------
cat > $D/kubelet/config.yaml <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$D/containerd/containerd.sock
staticPodPath: $D/manifests
fileCheckFrequency: 5s
syncFrequency: 10s
failSwapOn: false
resolvConf: /etc/resolv.conf
podLogsDir: $D/kubelet/pod-logs
address: 0.0.0.0
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $D/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [10.96.0.10]
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
YAML
setsid $KB/kubelet --config=$D/kubelet/config.yaml --kubeconfig=$D/kubelet.kubeconfig --root-dir=$D/kubelet/root \
  --cert-dir=$D/kubelet/pki --hostname-override=$NODE --node-ip=$NODE_IP --v=2 >$D/kubelet.log 2>&1 </dev/null &
echo $! >$D/kubelet.pid
K="$KB/kubectl --kubeconfig $D/admin.kubeconfig"
until $K get --raw /readyz >/dev/null 2>&1; do sleep 0.5; done; el "apiserver ready"
until $K get node $NODE 2>/dev/null | grep -q ' Ready'; do sleep 0.5; done; el "node Ready"
until [ "$($K -n kube-system get pods --no-headers 2>/dev/null | grep -c Running)" = 2 ]; do sleep 1; done; el "mirror pods Running"
$K get nodes -o wide; $K get pods -A -o wide
