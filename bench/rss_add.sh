#!/usr/bin/env bash
# rss_add.sh - the memory bound of a streaming add: the peak RSS of `cidstore add -` of a large
# generated file against that of a 1 MiB add into the same kind of fresh store, so the
# difference is what the add grows beyond the store's fixed buffers (batch buffer, index,
# ring). bench/README.md records the figures; not run by CI (4 GiB of disk and about a
# minute of a shared machine's 2 cores).
#
#   bench/rss_add.sh BUILD_DIR [GIB]     (default 4 GiB; the store goes under $CS_BENCH_DIR or
#                                        /var/tmp and is removed at the end)
#
# The input is deterministic and incompressible: AES-128-CTR of zeros under a fixed key
# (openssl enc), piped straight into the add, so it is never on disk and the add cannot know
# its size. Peak RSS comes from GNU time (/usr/bin/time -v, Debian package `time`).
set -euo pipefail
bin=${1:?usage: rss_add.sh BUILD_DIR [GIB]}/cidstore
gib=${2:-4}
parent=${CS_BENCH_DIR:-/var/tmp}
work=$(mktemp -d "$parent/cs_rss.XXXXXX")
trap 'rm -rf "$work"' EXIT

gen() { # gen BYTES: the deterministic stream
	openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
		-iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null | head -c "$1"
}

measure() { # measure NAME BYTES: prints "peak_kib seconds root"
	local dir=$work/$1 bytes=$2
	gen "$bytes" | /usr/bin/time -v -o "$work/time.$1" \
		"$bin" --dir "$dir" --durability sync add --name "$1" - >"$work/out.$1"
	local kib secs
	kib=$(sed -n 's/^\tMaximum resident set size (kbytes): //p' "$work/time.$1")
	secs=$(sed -n 's/^\tElapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.$1")
	echo "$kib $secs $(cut -f1 "$work/out.$1")"
}

read -r small_kib small_t small_root <<<"$(measure small $((1 << 20)))"
read -r big_kib big_t big_root <<<"$(measure big $((gib << 30)))"
"$bin" --dir "$work/big" stat | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("store after the big add: blocks %d, physical_bytes %d, logical_bytes %d"
      % (d["blocks"], d["physical_bytes"], d["logical_bytes"]))'
echo "1 MiB add:  peak RSS ${small_kib} KiB, ${small_t} wall, root $small_root"
echo "${gib} GiB add: peak RSS ${big_kib} KiB, ${big_t} wall, root $big_root"
echo "growth beyond the store's fixed buffers: $(((big_kib - small_kib) / 1024)) MiB"
