#!/usr/bin/env bash
# test_cli.sh - the command-line tool as a user meets it: every command, its output, and the
# exit code and one-line "cidstore:" message for each bad input.
# Usage: test_cli.sh PATH/TO/cidstore
set -u
bin=$1
tmp=$(mktemp -d /tmp/cs-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export CIDSTORE_DIR=$tmp/store
pass=0
failed=0

ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }

# expect CODE DESCRIPTION -- COMMAND...: runs it, checks the exit code; for nonzero codes also
# that stderr is one line starting "cidstore:".
expect() {
	local want=$1 what=$2
	shift 3
	"$@" >"$tmp/out" 2>"$tmp/err"
	local got=$?
	if [ "$got" != "$want" ]; then
		bad "$what: exit $got, want $want; stderr: $(cat "$tmp/err")"
		return
	fi
	# `has` answers "absent" by its exit code alone, as test(1) does.
	if [ "$want" != 0 ] && [ "$what" != "has absent" ] &&
		! head -c 9 "$tmp/err" | grep -q '^cidstore:'; then
		bad "$what: stderr does not start with 'cidstore:': $(cat "$tmp/err")"
		return
	fi
	ok
}

# The empty block has a well-known CID.
: >"$tmp/empty"
expect 0 "put empty" -- "$bin" block put "$tmp/empty"
[ "$(cat "$tmp/out")" = bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku ] && ok ||
	bad "empty block CID: $(cat "$tmp/out")"

# Round trip from a file and from stdin; has; get; rm.
head -c 100000 /dev/urandom >"$tmp/a"
expect 0 "put file" -- "$bin" block put "$tmp/a"
cid=$(cat "$tmp/out")
expect 0 "put stdin" -- "$bin" block put - <"$tmp/a"
[ "$(cat "$tmp/out")" = "$cid" ] && ok || bad "stdin put gives another CID"
expect 0 "has present" -- "$bin" has "$cid"
expect 0 "get" -- "$bin" block get "$cid"
cmp -s "$tmp/out" "$tmp/a" && ok || bad "get returned other bytes"
expect 0 "ls" -- "$bin" block ls
grep -qx "$cid" "$tmp/out" && ok || bad "ls does not list $cid"
expect 0 "put blake2b dag-pb" -- "$bin" block put --hash blake2b-256 --codec dag-pb "$tmp/a"
case $(cat "$tmp/out") in bafy*) ok ;; *) bad "dag-pb CID should start bafy: $(cat "$tmp/out")" ;; esac
expect 0 "stat" -- "$bin" stat
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["blocks"]==3, d' \
	"$tmp/out" && ok || bad "stat JSON: $(cat "$tmp/out")"
expect 0 "verify" -- "$bin" verify
expect 0 "rm" -- "$bin" block rm "$cid"
expect 1 "has absent" -- "$bin" has "$cid"
expect 1 "get absent" -- "$bin" block get "$cid"
expect 1 "rm absent" -- "$bin" block rm "$cid"

# Bad input: each a clear message and its exit code.
expect 2 "garbage CID" -- "$bin" has not-a-cid
expect 2 "bad base32" -- "$bin" block get bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk1
expect 2 "missing file" -- "$bin" block put "$tmp/nope"
expect 2 "directory as file" -- "$bin" block put "$tmp"
head -c $((4 * 1024 * 1024 + 1)) /dev/zero >"$tmp/big"
expect 2 "block over the limit" -- "$bin" block put "$tmp/big"
grep -q limit "$tmp/err" && ok || bad "limit message: $(cat "$tmp/err")"
expect 2 "unknown codec" -- "$bin" block put --codec cbor "$tmp/a"
expect 2 "unknown command" -- "$bin" frobnicate
expect 2 "no command" -- "$bin"
CIDSTORE_IO=bogus expect 2 "unknown CIDSTORE_IO" -- "$bin" stat
grep -q bogus "$tmp/err" && ok || bad "CIDSTORE_IO message: $(cat "$tmp/err")"
mkdir -p "$tmp/other" && echo hi >"$tmp/other/x"
expect 5 "not a store" -- "$bin" --dir "$tmp/other" stat

# A second process on the same store: exit 3 naming the holder's pid.
python3 - "$CIDSTORE_DIR" "$tmp/locked" <<'EOF' &
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], "LOCK"), os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
time.sleep(30)
EOF
holder=$!
for _ in $(seq 100); do [ -e "$tmp/locked" ] && break; sleep 0.1; done
expect 3 "locked store" -- "$bin" stat
grep -q "locked by pid" "$tmp/err" && ok || bad "lock message: $(cat "$tmp/err")"
kill $holder 2>/dev/null
wait $holder 2>/dev/null

# --help for every command, and the exit-code table.
for c in "block put" "block get" "block rm" "block ls" has stat verify demo; do
	expect 0 "help $c" -- "$bin" $c --help
	grep -q usage "$tmp/out" && ok || bad "$c --help prints no usage"
done
expect 0 "help" -- "$bin" --help
grep -q "exit codes" "$tmp/out" && ok || bad "--help lacks the exit-code table"

# The main job on a small dataset.
expect 0 "demo" -- "$bin" --dir "$tmp/demo" demo 8
grep -q '"blocks": 24' "$tmp/out" && ok || bad "demo: 32 chunks, a quarter repeats: $(cat "$tmp/out")"

echo "cli: $pass passed, $failed failed"
[ "$failed" = 0 ]
