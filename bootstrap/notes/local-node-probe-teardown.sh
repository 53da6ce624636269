#!/usr/bin/env bash
# Stops the probe node and removes every trace it leaves on the host.
D=${D:-/tmp/nodeprobe/node}
export PATH=/tmp/nodeprobe/bin:$PATH
stop() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; for i in $(seq 50); do kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null || break; sleep 0.2; done; rm -f "$1"; }
stop $D/kubelet.pid
# stop+remove all pods while containerd still runs (CNI DEL frees IPs, iptables rules, veths)
[ -S $D/containerd/containerd.sock ] && crictl -c $D/crictl.yaml rmp -fa >/dev/null 2>&1
stop $D/containerd.pid
# leftover shims (only ours: their socket dir is under $D)
for p in $(pgrep -f "containerd-shim-runc-v2 -namespace k8s.io -address $D/containerd/containerd.sock"); do kill $p; done
grep " $D" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/k8s.io; do [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null; done
ip link del probe0 2>/dev/null
for t in filter nat mangle; do for ipt in iptables ip6tables; do
  $ipt -t $t -S 2>/dev/null | grep -E '^-A .*(KUBE-|CNI-)' | sed 's/^-A/-D/' | while read -r r; do eval $ipt -t $t $r; done
  $ipt -t $t -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/{print $2}' | while read -r ch; do $ipt -t $t -F $ch; $ipt -t $t -X $ch; done
done; done
sysctl -qw net.ipv4.ip_forward=0
rm -rf /var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd/fifo /run/containerd/runc
rmdir /run/containerd 2>/dev/null
rm -rf $D
