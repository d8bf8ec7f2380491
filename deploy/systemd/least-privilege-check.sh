#!/bin/bash
# Least-privilege check: which kernel operations of `dyncast router` (and ExaBGP) work as uid nobody with no
# capability, with CAP_NET_ADMIN only, and with CAP_NET_ADMIN + CAP_NET_BIND_SERVICE, inside a throwaway
# network namespace. Run as root from the repository: `bash deploy/systemd/least-privilege-check.sh`.
# Prints a Markdown table (docs/security.md holds the one measured on the development machine).
# Touches nothing outside the namespace it creates and removes.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NS=dcpriv$$
DYN=$ROOT/.venv/bin/dyncast
PY=$ROOT/.venv/bin/python
WORK=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
chmod 755 "$WORK"
cat > "$WORK/rules.nft" <<'NFT'
table inet dcpriv_test {
  chain pre {
    type filter hook prerouting priority mangle; policy accept;
    ct state new ct mark set numgen random mod 100 map { 0-49 : 0x101, 50-99 : 0x102 }
    meta mark set ct mark
  }
}
NFT
cat > "$WORK/srv6.yml" <<'YML'
services:
  - dsid: 2001:db8:d::50
    instances:
      - {binding: "2001:db8:100::14", name: srv6, weight: 1, forwarding: {mode: srv6, remote: "fc00:14::100", device: eth1}}
YML
cp "$ROOT/tests/golden/dataplane/drain_and_thirds.yml" "$WORK/"
chmod 644 "$WORK"/*
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth1 type veth peer name eth2
ip -n "$NS" link set eth1 up; ip -n "$NS" link set eth2 up
ip -n "$NS" addr add 192.0.2.1/24 dev eth1
ip -n "$NS" addr add 198.51.100.1/24 dev eth1
ip -n "$NS" addr add 2001:db8:100::1/64 dev eth1 nodad
ip -n "$NS" addr add 2001:db8:2::1/64 dev eth1 nodad
ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.seg6_enabled=1

as() {  # as MODE CMD...: run inside the namespace as nobody, with no capability or with CAP_NET_ADMIN only
  local mode=$1; shift
  local caps=()
  if [[ $mode == none ]]; then caps=(--inh-caps=-all --bounding-set=-all)
  else caps=(--inh-caps=+$mode --ambient-caps=+$mode --bounding-set=-all,+$mode); fi
  ip netns exec "$NS" setpriv --reuid=nobody --regid=nogroup --clear-groups "${caps[@]}" --no-new-privs -- "$@"
}
check() {  # check NAME CMD...
  local name=$1; shift
  local results=()
  for mode in none net_admin net_admin,+net_bind_service; do
    if out=$(as "$mode" "$@" 2>&1); then results+=("ok"); else results+=("fails: $(echo "$out" | grep -v "^ *$" | tail -1 | cut -c1-80)"); fi
  done
  printf '| %s | %s | %s | %s |\n' "$name" "${results[0]}" "${results[1]}" "${results[2]}"
}
echo "| operation | nobody, no capabilities | nobody, CAP_NET_ADMIN only | nobody, CAP_NET_ADMIN + CAP_NET_BIND_SERVICE |"
echo "|---|---|---|---|"
check "capabilities seen (capsh --print: Current)" sh -c 'capsh --print | grep -q "Current: =$" && exit 1; capsh --print | grep Current'
check "nft -f (table, interval map, numgen, ct mark)" nft -f "$WORK/rules.nft"
check "nft list ruleset" nft list ruleset
check "nft delete table" sh -c "nft delete table inet dcpriv_test 2>/dev/null; nft -f $WORK/rules.nft && nft delete table inet dcpriv_test"
check "ip rule add fwmark lookup" sh -c 'ip rule del fwmark 0x101 lookup 101 2>/dev/null; ip rule add fwmark 0x101 lookup 101'
check "ip route add (table 101)" ip route replace 203.0.113.10/32 via 192.0.2.11 table 101
check "ip -batch (routes)" sh -c 'printf "route replace 203.0.113.11/32 via 192.0.2.12 table 102\n" | ip -batch -'
check "ip link add/del (veth pair)" sh -c 'ip link add dcp-a type veth peer name dcp-b && ip link del dcp-a'
check "ip -6 route encap seg6 (SRv6)" ip -6 route replace 2001:db8:d::50/128 encap seg6 mode encap segs fc00:14::100 dev eth1 table 103
check "sysctl write net.ipv4.conf.all.src_valid_mark" sh -c 'echo 1 > /proc/sys/net/ipv4/conf/all/src_valid_mark'
check "conntrack -L" conntrack -L
check "conntrack -L --mark (what dyncast runs)" conntrack -L -f ipv4 --mark 0x100/0xff00
check "conntrack -D --mark (no entry: exit 1 is fine)" sh -c 'out=$(conntrack -D -f ipv4 --mark 0x101 2>&1); echo "$out"; ! echo "$out" | grep -q "must be root"'
check "dyncast dataplane apply (drain_and_thirds)" "$DYN" dataplane apply "$WORK/drain_and_thirds.yml"
check "dyncast dataplane apply (SRv6 encapsulation)" "$DYN" dataplane apply "$WORK/srv6.yml"
check "dyncast dataplane show" "$DYN" dataplane show
check "dyncast dataplane cleanup" "$DYN" dataplane cleanup
check "bind TCP port 179 (passive BGP)" "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 179))'
check "TCP_MD5SIG on a socket (md5-password)" "$PY" -c '
import socket, struct
s = socket.socket()
addr = (struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + socket.inet_aton("127.0.0.1")).ljust(128, b"\0")
s.setsockopt(socket.IPPROTO_TCP, 14, addr + struct.pack("=BBHi", 0, 0, 6, 0) + b"secret".ljust(80, b"\0"))'
check "ICMP ping socket (probe mode icmp-dgram)" "$PY" -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)'
ip netns exec "$NS" sysctl -qw net.ipv4.ping_group_range="65534 65534"
check "ICMP ping socket, after ping_group_range=\"65534 65534\" (nogroup)" "$PY" -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)'
check "raw ICMP socket (probe mode icmp-raw)" "$PY" -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)'
check "UDP echo probe socket" "$PY" -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 0))'
echo
echo "ping_group_range of a new namespace: 1 0 (nobody may open ping sockets)"
echo "kernel: $(uname -r); $(nft --version); $(conntrack --version 2>&1 | head -1); $(ip -V); setpriv $(setpriv --version | awk '{print $NF}')"
