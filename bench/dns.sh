#!/usr/bin/env bash
# DNS element figures (issue 10), measured in one run on this machine:
#   queries per second with dnsperf on loopback, circuit's DNS element and NSD
#   side by side, serving the same records (UDP, then TCP);
#   the circuit server's RSS: idle, with an empty DNS element, with 10,000
#   records in one element.
# NSD runs by hand from a config of its own in a temp dir, on a loopback port,
# in the foreground (-d), with no chroot, no privilege drop, no remote control,
# one server process (server-count: 1) and no response rate limiting.
# Only 127.0.0.1 is used. At exit the trap kills what the run started, by pid,
# and removes the temp dir.
#
# Usage: bench/dns.sh   (from anywhere; about 2 minutes)
# Env: SECONDS_EACH (dnsperf run length, default 10), ROUNDS (default 2),
#      CLIENTS (dnsperf -c, default 4), OUTSTANDING (dnsperf -q, default 100).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${SECONDS_EACH:-10}
rounds=${ROUNDS:-2}
clients=${CLIENTS:-4}
outstanding=${OUTSTANDING:-100}

for tool in dnsperf nsd python3; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install dnsperf nsd)" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/dnsbench.XXXXXX) || exit 1
pids=()
cleanup() {
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! (cd "$root" && timeout 1800 cargo build --release -p circuit >&2); then
    echo "cargo build --release -p circuit failed" >&2
    exit 1
fi
circuit="$root/target/release/circuit"

free_port() {
    python3 -c 'import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
t = socket.socket(); t.bind(("127.0.0.1", p)); print(p)'
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
anon_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status"; }
# RSS once the server has given back what a burst freed: one request, then
# 2 s (it trims its heap 500 ms after the last request ends).
settled() {
    "$circuit" ls -d "$url" / > /dev/null
    sleep 2
    echo "$(rss_kib "$1") $(anon_kib "$1")"
}

# Starts a circuit server (extra args: "$@"); sets $url and $srv_pid.
start_circuit() {
    "$circuit" start -a 127.0.0.1:0 "$@" > "$tmp/url" 2>> "$tmp/circuit.log" &
    srv_pid=$!
    pids+=("$srv_pid")
    for _ in $(seq 100); do [[ -s $tmp/url ]] && break; sleep 0.05; done
    url=$(head -1 "$tmp/url")
    [[ $url == circuit://* ]] || { echo "circuit did not start: $(tail -3 "$tmp/circuit.log")" >&2; exit 1; }
    : > "$tmp/url"
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null
}

# The records: one zone, 200 names with A, AAAA, MX and TXT records.
zone=bench.test
{
    echo "$zone. 3600 IN SOA ns.$zone. hostmaster.$zone. 1 7200 3600 1209600 300"
    echo "$zone. 3600 IN NS ns.$zone."
    echo "ns.$zone. 3600 IN A 127.0.0.1"
    for i in $(seq 0 199); do
        echo "h$i.$zone. 3600 IN A 192.0.2.$((i % 250 + 1))"
        echo "h$i.$zone. 3600 IN AAAA 2001:db8::$((i + 1))"
        echo "h$i.$zone. 3600 IN MX 10 mx$((i % 5)).$zone."
        echo "h$i.$zone. 3600 IN TXT \"record number $i\""
    done
} > "$tmp/records"
# The queries: every type of every name, and names that do not exist.
{
    for i in $(seq 0 199); do
        printf 'h%d.%s A\nh%d.%s AAAA\nh%d.%s MX\nh%d.%s TXT\nnx%d.%s A\n' \
            "$i" "$zone" "$i" "$zone" "$i" "$zone" "$i" "$zone" "$i" "$zone"
    done
} > "$tmp/queries"
nrec=$(wc -l < "$tmp/records")

# circuit: one server, one DNS element holding the records.
start_circuit
circuit_srv=$srv_pid
x=${url##*/}
cport=$(free_port)
"$circuit" mkdns -d "$url" "/$x/bench" "127.0.0.1:$cport" || exit 1
while IFS= read -r rr; do
    "$circuit" set -d "$url" "/$x/bench" "$rr" || exit 1
done < "$tmp/records"

# NSD with the same records.
nport=$(free_port)
mkdir -p "$tmp/nsd"
cp "$tmp/records" "$tmp/nsd/$zone.zone"
cat > "$tmp/nsd/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$nport
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$tmp/nsd"
    database: ""
    zonelistfile: "$tmp/nsd/zone.list"
    xfrdfile: "$tmp/nsd/xfrd.state"
    xfrdir: "$tmp/nsd"
    pidfile: "$tmp/nsd/nsd.pid"
    logfile: "$tmp/nsd/nsd.log"
    verbosity: 0
    # Response rate limiting would drop most of a benchmark's answers.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "$zone"
    zonefile: "$zone.zone"
EOF
nsd -d -c "$tmp/nsd/nsd.conf" 2>> "$tmp/nsd/stderr" &
nsd_pid=$!
pids+=("$nsd_pid")
for _ in $(seq 100); do
    dig_ok=$(dnsperf -s 127.0.0.1 -p "$nport" -d <(echo "h1.$zone A") -n 1 -t 1 2>/dev/null | awk '/Queries completed/ {print $3}')
    [[ $dig_ok == 1 ]] && break
    sleep 0.1
done
[[ ${dig_ok:-0} == 1 ]] || { echo "NSD did not answer: $(cat "$tmp/nsd/stderr" "$tmp/nsd/nsd.log" 2>/dev/null | tail -3)" >&2; exit 1; }

# qps MODE PORT: one dnsperf run; prints "qps lost".
qps() {
    dnsperf -m "$1" -s 127.0.0.1 -p "$2" -d "$tmp/queries" -l "$secs" -c "$clients" -q "$outstanding" 2>&1 |
        awk '/Queries per second/ {q=$4} /Queries lost/ {l=$3} END {printf "%.0f %s\n", q, l}'
}

echo "== DNS queries per second (dnsperf -l $secs -c $clients -q $outstanding, $nrec records, loopback, $(nproc) cores)"
printf '%-6s %-5s %12s %12s\n' round mode circuit nsd
for mode in udp tcp; do
    for r in $(seq "$rounds"); do
        read -r c cl < <(qps "$mode" "$cport")
        read -r n nl < <(qps "$mode" "$nport")
        printf '%-6s %-5s %12s %12s   (lost: %s / %s)\n' "$r" "$mode" "$c" "$n" "$cl" "$nl"
    done
done
echo "circuit server CPU threads: $(ls /proc/$circuit_srv/task | wc -l) threads; RSS after the runs: $(rss_kib "$circuit_srv") KiB"
stop_pid "$nsd_pid"
stop_pid "$circuit_srv"

# Memory: idle server, an empty element, 10,000 records in one element
# (made at boot from a config file; the file's records are kept too, to
# compare at the next reload).
echo "== circuit server memory (KiB: VmRSS, RssAnon; after a request and 2 s)"
start_circuit
idle_pid=$srv_pid
read -r idle idle_anon < <(settled "$idle_pid")
"$circuit" mkdns -d "$url" "/${url##*/}/empty" 127.0.0.1 || exit 1
read -r empty empty_anon < <(settled "$idle_pid")
stop_pid "$idle_pid"
python3 - "$tmp/big.toml" <<'EOF'
import sys
recs = [f'"n{i}.big.test. 3600 IN A 10.{i // 65536}.{i // 256 % 256}.{i % 256}"' for i in range(10000)]
open(sys.argv[1], "w").write("[dns.big]\nAddress = \"127.0.0.1\"\nRecords = [\n" + ",\n".join(recs) + "\n]\n")
EOF
start_circuit --config "$tmp/big.toml"
big_pid=$srv_pid
read -r big big_anon < <(settled "$big_pid")
printf '%-40s %8s %8s\n' "idle server" "$idle" "$idle_anon" "server + empty DNS element" "$empty" "$empty_anon" \
    "server + DNS element, 10,000 records" "$big" "$big_anon"
printf '%-40s %8s %8s\n' "cost of 10,000 records" "$((big - empty))" "$((big_anon - empty_anon))"
