#!/usr/bin/env bash
# Rewrite the README's benchmark tables from the benchmarks' own output.
#
#   scripts/bench-readme.sh            run both benchmarks, rewrite README.md
#   scripts/bench-readme.sh GUEST HOST rewrite from saved outputs of
#                                      `cargo run -- --bench` and `cargo bench -p hmm`
#   scripts/bench-readme.sh --only NAME GUEST
#                                      rewrite one guest table (e.g. throughput)
#                                      from a saved `cargo run -- --bench --smp 4`
#
# The benchmarks print their tables between `<!-- readme-guest:begin/end -->`,
# `<!-- readme-tlb:begin/end -->` (the guest run's shootdown table),
# `<!-- readme-throughput:begin/end -->` (its device-fault throughput at
# 1, 2 and 4 CPUs) and `<!-- readme-host:begin/end -->` markers; the README holds the same
# markers, and everything between them is replaced (plus the machine and
# date line between `readme-machine` markers). Nothing is typed by hand, so
# the tables cannot go stale silently: rerun this after a change.
set -euo pipefail
cd "$(dirname "$0")/.."

only=
if [[ ${1:-} == --only ]]; then
    only=${2:?--only NAME GUEST}
    guest=${3:?--only NAME GUEST}
    host=
else
    guest=${1:-}
    host=${2:-}
fi
if [[ -z $guest ]]; then
    guest=$(mktemp)
    host=$(mktemp)
    cargo run -- --bench --smp 4 >"$guest" 2>&1
    cargo bench -p hmm -- --warm-up-time 1 --measurement-time 3 >"$host" 2>&1
fi

block() { # name file: the lines strictly between the markers
    tr -d '\r' <"$2" | sed -n "/<!-- readme-$1:begin -->/,/<!-- readme-$1:end -->/p" | sed '1d;$d'
}

replace() { # name content-file
    grep -q "<!-- readme-$1:begin -->" README.md || { echo "README.md has no readme-$1 markers" >&2; exit 1; }
    awk -v b="<!-- readme-$1:begin -->" -v e="<!-- readme-$1:end -->" -v f="$2" '
        $0 == b { print; while ((getline l < f) > 0) print l; skip = 1; next }
        $0 == e { skip = 0 }
        !skip { print }' README.md >README.md.new
    mv README.md.new README.md
}

tmp=$(mktemp)
if [[ -n $only ]]; then
    block "$only" "$guest" >"$tmp"
    [[ -s $tmp ]] || { echo "no readme-$only table in $guest" >&2; exit 1; }
    replace "$only" "$tmp"
    rm -f "$tmp"
    echo "README.md readme-$only table rewritten"
    exit 0
fi
for name in guest tlb throughput host; do
    file=$guest
    [[ $name == host ]] && file=$host
    block "$name" "$file" >"$tmp"
    [[ -s $tmp ]] || { echo "no readme-$name table in $file" >&2; exit 1; }
    replace "$name" "$tmp"
done
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)
qemu=$(qemu-system-x86_64 --version | head -1 | sed 's/^QEMU emulator version //')
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores of an $cpu (shared with other builds), QEMU $qemu TCG, Rust $(rustc --version | cut -d' ' -f2); command: \`scripts/bench-readme.sh\`." >"$tmp"
replace machine "$tmp"
rm -f "$tmp"
echo "README.md benchmark tables rewritten"
