#!/usr/bin/env bash
# test_cli.sh - the command-line tool as a user meets it: every command, its output, and the
# exit code and one-line "cidstore:" message for each bad input. Files: add (Kubo's known
# roots, every option, stdin, -r trees), cat (whole and by range), ls, name rm; and each bad
# input of the Files issue (missing, unreadable, a directory without -r, a name with a
# newline, a non-UnixFS node, a missing leaf, blocksizes that disagree) gives its code with
# no name set and nothing on stdout; progress appears on a terminal only. add --pin names and
# pins (from a path or stdin); pins and gc as the Lifecycle issue asks; --quota.
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

# ---- Files: add, cat, ls, name rm ------------------------------------------------------

# Known roots: the empty file and "hello\n" as Kubo's `ipfs add` (--cid-version=1 and plain).
expect 0 "add empty" -- "$bin" add "$tmp/empty"
empty_raw=bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku
[ "$(cat "$tmp/out")" = "$(printf '%s\tempty' $empty_raw)" ] && ok ||
	bad "add empty prints: $(cat "$tmp/out")"
printf 'hello\n' >"$tmp/hello"
expect 0 "add v0" -- "$bin" add --cid-version 0 --name hello0 "$tmp/hello"
[ "$(cut -f1 "$tmp/out")" = QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN ] && ok ||
	bad "add v0 hello: $(cat "$tmp/out")"
# A one-chunk file in the v1 profile is its raw leaf: the CID `block put` prints.
expect 0 "add file" -- "$bin" add -q "$tmp/a"
[ "$(cat "$tmp/out")" = "$("$bin" block put "$tmp/a")" ] && ok || bad "add -q a: $(cat "$tmp/out")"
# A multi-level file through every option, read back whole and by range.
head -c 3000000 /dev/urandom >"$tmp/big"
for opts in "" "--cid-version 0" "--chunker size-1000 --no-raw-leaves" "--chunker cdc-4096" \
	"--hash blake2b-256 --raw-leaves" "--cid-version 0 --raw-leaves --chunker size-65536"; do
	expect 0 "add big $opts" -- "$bin" add $opts --name "big $opts" "$tmp/big"
	cid=$(cut -f1 "$tmp/out")
	[ "$(cut -f2 "$tmp/out")" = "big $opts" ] && ok || bad "add prints the name: $(cat "$tmp/out")"
	expect 0 "cat big $opts" -- "$bin" cat "$cid"
	cmp -s "$tmp/out" "$tmp/big" && ok || bad "cat big $opts returned other bytes"
	expect 0 "cat range $opts" -- "$bin" cat "$cid" --offset 999999 --length 300001
	cmp -s "$tmp/out" <(tail -c +1000000 "$tmp/big" | head -c 300001) && ok ||
		bad "cat --offset --length $opts returned other bytes"
done
expect 0 "cat past the end" -- "$bin" cat "$cid" --offset 3000000
[ ! -s "$tmp/out" ] && ok || bad "cat past the end printed bytes"
expect 2 "cat bad offset" -- "$bin" cat "$cid" --offset -1
# stdin needs a name; it gives the root a file gives.
# Dedup figures: the same bytes under a second name add no block; logical bytes grow by the
# size, physical bytes stay.
stat_of() { "$bin" stat | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["blocks"], d["physical_bytes"], d["logical_bytes"], d["live_bytes"])'; }
read -r b1 p1 l1 v1 <<<"$(stat_of)"
cp "$tmp/big" "$tmp/big-copy"
expect 0 "add a copy" -- "$bin" add --name big-copy "$tmp/big-copy"
read -r b2 p2 l2 v2 <<<"$(stat_of)"
big_size=$(stat -c %s "$tmp/big")
[ "$b2" = "$b1" ] && [ "$p2" = "$p1" ] && [ "$v2" = "$p2" ] &&
	[ "$l2" = "$((l1 + big_size))" ] && ok ||
	bad "stat after a duplicate add: blocks $b1 -> $b2, physical $p1 -> $p2, logical $l1 -> $l2"
expect 0 "add stdin" -- "$bin" add --name from-stdin - <"$tmp/big"
[ "$(cut -f1 "$tmp/out")" = "$("$bin" add -q "$tmp/big")" ] && ok || bad "stdin root differs"
expect 2 "add stdin without a name" -- "$bin" add - <"$tmp/big"

# Directories: one line per entry below the root, the root last under its name.
mkdir -p "$tmp/tree/sub/empty" "$tmp/tree/é"
printf 'x' >"$tmp/tree/a"
cp "$tmp/hello" "$tmp/tree/sub/hello"
: >"$tmp/tree/é/ø"
ln -s ../a "$tmp/tree/sub/link"
expect 0 "add -r" -- "$bin" add -r "$tmp/tree"
printf 'tree/a\ntree/sub/empty\ntree/sub/hello\ntree/sub/link\ntree/sub\ntree/é/ø\ntree/é\ntree\n' \
	>"$tmp/want"
cut -f2 "$tmp/out" | cmp -s - "$tmp/want" && ok || bad "add -r lines: $(cat "$tmp/out")"
grep -q "^bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354	tree/sub/empty$" "$tmp/out" &&
	ok || bad "the empty directory's CID: $(cat "$tmp/out")"
dircid=$(tail -n1 "$tmp/out" | cut -f1)
expect 0 "add -r v0" -- "$bin" add -r --cid-version 0 --name tree0 "$tmp/tree/sub/empty"
empty_dir0=QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn
[ "$(cat "$tmp/out")" = "$(printf '%s\ttree0' $empty_dir0)" ] && ok ||
	bad "add -r of an empty directory, v0: $(cat "$tmp/out")"
expect 0 "add -r again, quiet" -- "$bin" add -r -q --name tree2 "$tmp/tree/"
[ "$(cat "$tmp/out")" = "$dircid" ] && ok || bad "add -r -q: $(cat "$tmp/out")"
expect 2 "cat a directory" -- "$bin" cat "$dircid"
grep -q directory "$tmp/err" && ok || bad "cat directory message: $(cat "$tmp/err")"

# ls and name rm.
expect 0 "ls" -- "$bin" ls
grep -qx "$dircid	7	tree" "$tmp/out" && ok || bad "ls lacks the tree: $(cat "$tmp/out")"
grep -qx "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN	6	hello0" "$tmp/out" && ok ||
	bad "ls lacks hello0: $(cat "$tmp/out")"
expect 0 "ls --json" -- "$bin" ls --json
python3 -c '
import json, sys
d = {e["name"]: e for e in json.load(open(sys.argv[1]))}
assert d["tree"]["cid"] == sys.argv[2] and d["tree"]["size"] == 7, d["tree"]
assert d["hello0"]["size"] == 6 and d["hello0"]["time_ns"] > 0, d["hello0"]
assert "big --chunker cdc-4096" in d and "from-stdin" in d
' "$tmp/out" "$dircid" && ok || bad "ls --json: $(cat "$tmp/out")"
expect 0 "name rm" -- "$bin" name rm hello0
expect 1 "name rm absent" -- "$bin" name rm hello0
"$bin" ls | grep -q hello0 && bad "ls still lists a removed name" || ok
"$bin" has QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN && ok || bad "name rm removed blocks"
expect 2 "ls bad option" -- "$bin" ls --yaml

# Bad input: a clear message, its exit code, no name set and nothing printed on stdout.
"$bin" ls >"$tmp/names-before"
expect 2 "add missing file" -- "$bin" add "$tmp/nope"
grep -q "No such file" "$tmp/err" && ok || bad "missing file message: $(cat "$tmp/err")"
expect 2 "add a directory without -r" -- "$bin" add "$tmp/tree"
grep -q -- "-r" "$tmp/err" && ok || bad "directory message: $(cat "$tmp/err")"
expect 2 "add a name with a newline" -- "$bin" add --name "$(printf 'two\nlines')" "$tmp/a"
grep -q newline "$tmp/err" && ok || bad "newline message: $(cat "$tmp/err")"
cp "$tmp/a" "$tmp/$(printf 'new\nline')"
expect 2 "add a file whose name has a newline" -- "$bin" add "$tmp/$(printf 'new\nline')"
mkdir -p "$tmp/badtree" && cp "$tmp/a" "$tmp/badtree/$(printf 'new\nline')"
expect 2 "add -r a tree with a newline in a name" -- "$bin" add -r "$tmp/badtree"
expect 2 "add bad chunker" -- "$bin" add --chunker rabin "$tmp/a"
expect 2 "add chunk over the limit" -- "$bin" add --chunker size-1048577 "$tmp/a"
expect 2 "add bad cid version" -- "$bin" add --cid-version 2 "$tmp/a"
expect 2 "add v0 with blake2b" -- "$bin" add --cid-version 0 --hash blake2b-256 "$tmp/a"
mkfifo "$tmp/fifo"
expect 2 "add a FIFO" -- "$bin" add "$tmp/fifo"
mkdir -p "$tmp/fifotree" && mkfifo "$tmp/fifotree/f"
expect 2 "add -r a tree with a FIFO" -- "$bin" add -r "$tmp/fifotree"
# A directory Kubo shards: 1200 names of 220 bytes pass 262144 bytes with their CIDs. Its root
# is a HAMT shard node (UnixFS Type 5, hashType 0x22, fanout 256); test_unixfs compares such
# roots with the importer's.
mkdir -p "$tmp/huge"
for i in $(seq 1200); do printf -v f '%04d%0216d' "$i" 0; : >"$tmp/huge/$f"; done
expect 0 "add -r a directory over the sharding threshold" -- "$bin" add -r "$tmp/huge"
huge=$(tail -n 1 "$tmp/out" | cut -f1)
"$bin" block get "$huge" | od -An -tx1 -v | tr -d ' \n' | grep -Eq '0805(12[0-9a-f]+)?2822308002$' &&
	ok || bad "the root of a sharded directory is not a HAMT shard node"
"$bin" name rm huge # the refusals below must leave the names as they were before them
# Unreadable files: as a user who cannot read them (root reads everything, so the test runs
# the tool as nobody when it is root).
printf 'secret' >"$tmp/secret"
mkdir -p "$tmp/unreadable" && printf 'secret' >"$tmp/unreadable/s"
chmod 600 "$tmp/secret" "$tmp/unreadable/s"
if [ "$(id -u)" = 0 ]; then
	chmod 711 "$tmp"
	mkdir -p "$tmp/nobody" && chown nobody "$tmp/nobody"
	as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	chown root "$tmp/secret" "$tmp/unreadable/s"
else
	as=()
	chmod 000 "$tmp/secret" "$tmp/unreadable/s"
	mkdir -p "$tmp/nobody"
fi
expect 6 "add an unreadable file" -- "${as[@]}" "$bin" --dir "$tmp/nobody/store" add "$tmp/secret"
grep -q "Permission denied" "$tmp/err" && ok || bad "unreadable message: $(cat "$tmp/err")"
expect 6 "add -r a tree with an unreadable file" -- \
	"${as[@]}" "$bin" --dir "$tmp/nobody/store" add -r "$tmp/unreadable"
grep -q "unreadable/s" "$tmp/err" && ok || bad "unreadable entry message: $(cat "$tmp/err")"
"$bin" ls | cmp -s - "$tmp/names-before" && ok || bad "a failed add set a name"

# cat of damaged or foreign DAGs: an error before any byte is written.
printf '\x0a\x05hello' >"$tmp/plain.pb"
plain=$("$bin" block put --codec dag-pb "$tmp/plain.pb")
expect 2 "cat a non-UnixFS dag-pb node" -- "$bin" cat "$plain"
grep -q "not a UnixFS" "$tmp/err" && ok || bad "non-UnixFS message: $(cat "$tmp/err")"
head -c 3000 /dev/urandom >"$tmp/three"
expect 0 "add three chunks" -- "$bin" add -q --chunker size-1000 "$tmp/three"
three=$(cat "$tmp/out")
dd if="$tmp/three" of="$tmp/chunk2" bs=1000 skip=2 count=1 2>/dev/null
leaf=$("$bin" block put "$tmp/chunk2")
expect 0 "remove a leaf" -- "$bin" block rm "$leaf"
expect 1 "cat a DAG with a missing leaf" -- "$bin" cat "$three"
grep -q "$leaf" "$tmp/err" && ok || bad "missing leaf message: $(cat "$tmp/err")"
[ ! -s "$tmp/out" ] && ok || bad "cat of a DAG with a missing leaf wrote $(wc -c <"$tmp/out") bytes"
expect 0 "cat the part before the missing leaf" -- "$bin" cat "$three" --length 2000
cmp -s "$tmp/out" <(head -c 2000 "$tmp/three") && ok || bad "cat before the hole"
# A UnixFS file node over leaves of 10 and 20 bytes whose blocksizes say 15 and 15.
head -c 10 /dev/urandom >"$tmp/l1" && head -c 20 /dev/urandom >"$tmp/l2"
l1=$("$bin" block put "$tmp/l1") && l2=$("$bin" block put "$tmp/l2")
python3 - "$l1" "$l2" "$tmp/badsizes.pb" <<'EOF'
import base64, sys
def cid(text):  # base32 "b..." CIDv1 to bytes
    s = text[1:].upper()
    return base64.b32decode(s + "=" * (-len(s) % 8))
def fld(key, body): return bytes([key, len(body)]) + body
links = b"".join(fld(0x12, fld(0x0a, cid(c)) + b"\x12\x00" + bytes([0x18, n]))
                 for c, n in ((sys.argv[1], 10), (sys.argv[2], 20)))
unixfs = bytes([0x08, 0x02, 0x18, 30, 0x20, 15, 0x20, 15])
open(sys.argv[3], "wb").write(links + fld(0x0a, unixfs))
EOF
badsizes=$("$bin" block put --codec dag-pb "$tmp/badsizes.pb")
expect 4 "cat a node whose blocksizes disagree with its children" -- "$bin" cat "$badsizes"
grep -q "blocksize" "$tmp/err" && ok || bad "blocksizes message: $(cat "$tmp/err")"
[ ! -s "$tmp/out" ] && ok || bad "cat of bad blocksizes wrote $(wc -c <"$tmp/out") bytes"
expect 2 "cat bad CID" -- "$bin" cat not-a-cid
expect 1 "cat absent root" -- "$bin" cat bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyka

# Progress: on stderr, only on a terminal, once an add has run for more than a second.
mkfifo "$tmp/slow"
slow_writer() { (head -c 2000000 /dev/zero; sleep 1.5; head -c 2000000 /dev/zero) >"$tmp/slow"; }
slow_writer &
expect 0 "slow add, no terminal" -- "$bin" add --name slow - <"$tmp/slow"
wait
[ ! -s "$tmp/err" ] && ok || bad "progress without a terminal: $(cat "$tmp/err")"
slow_writer &
script -qec "'$bin' add --name slow-tty - <'$tmp/slow' >/dev/null" /dev/null >"$tmp/tty" 2>&1
wait
grep -q "MB/s" "$tmp/tty" && ok || bad "no progress on a terminal: $(cat -v "$tmp/tty")"

# Pins and gc: a pinned file survives gc and refuses block rm (exit 7); an unpinned,
# unnamed one goes; every bad pin input has its code.
export CIDSTORE_DIR=$tmp/lifecycle
head -c 700000 /dev/urandom >"$tmp/keep"
head -c 700000 /dev/urandom >"$tmp/drop"
expect 0 "add --pin" -- "$bin" add --pin --quiet --name keep "$tmp/keep"
keep=$(cat "$tmp/out")
expect 0 "add drop" -- "$bin" add --quiet --name drop "$tmp/drop"
drop=$(cat "$tmp/out")
expect 0 "pin ls" -- "$bin" pin ls
[ "$(cat "$tmp/out")" = "$keep	recursive" ] && ok || bad "pin ls: $(cat "$tmp/out")"
leaf=$("$bin" block ls | while read -r c; do
	[ "$c" != "$keep" ] && [ "$c" != "$drop" ] && "$bin" cat "$keep" >/dev/null &&
		"$bin" block get "$c" | cmp -s - <(head -c 262144 "$tmp/keep") && echo "$c" && break
done)
[ -n "$leaf" ] && ok || bad "no first leaf of keep found"
expect 7 "rm pinned leaf" -- "$bin" block rm "$leaf"
grep -q "held by the recursive pin on $keep" "$tmp/err" && ok || bad "rm pinned: $(cat "$tmp/err")"
expect 0 "name rm drop" -- "$bin" name rm drop
expect 0 "name rm keep" -- "$bin" name rm keep
expect 0 "gc" -- "$bin" gc
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["freed_blocks"]==4 and "segments_compacted" in d and "bytes_copied" in d and "bytes_reclaimed" in d and d["index_bytes"]>0 and "repack_seconds" in d, d' \
	"$tmp/out" && ok || bad "gc should free drop's 3 leaves and root: $(cat "$tmp/out")"
expect 1 "dropped root gone" -- "$bin" cat "$drop"
expect 0 "pinned file intact" -- "$bin" cat "$keep"
cmp -s "$tmp/out" "$tmp/keep" && ok || bad "pinned file changed after gc"
expect 0 "stat after gc" -- "$bin" stat
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["pins"]==1 and d["pins_recursive"]==1, d' \
	"$tmp/out" && ok || bad "stat lifecycle fields: $(cat "$tmp/out")"
# The last gc and the last checkpoint survive the process: the close of each command
# wrote a checkpoint, and the next open read it.
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["last_gc"]["freed_blocks"]==4 and d["last_gc"]["time_ns"]>0 and d["last_checkpoint"]["seq"]==d["next_seq"] and d["last_open"]["replayed_records"]==0, d' \
	"$tmp/out" && ok || bad "stat last_gc, last_checkpoint: $(cat "$tmp/out")"
expect 0 "checkpoint" -- "$bin" checkpoint
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["seq"]>1 and d["time_ns"]>0, d' \
	"$tmp/out" && ok || bad "checkpoint output: $(cat "$tmp/out")"
printf 'garbage' >"$CIDSTORE_DIR/checkpoint"
expect 0 "stat with a damaged checkpoint" -- "$bin" stat
grep -q "replaying the whole log" "$tmp/err" && ok ||
	bad "a damaged checkpoint should be warned about: $(cat "$tmp/err")"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["last_open"]["replayed_records"]>0 and d["last_checkpoint"]["seq"]==0, d' \
	"$tmp/out" && ok || bad "stat after a damaged checkpoint: $(cat "$tmp/out")"
expect 1 "pin absent" -- "$bin" pin add "$drop"
expect 1 "unpin unpinned" -- "$bin" pin rm "$drop"
expect 2 "pin bad CID" -- "$bin" pin add not-a-cid
expect 2 "pin no CID" -- "$bin" pin add
expect 2 "pin recursive to direct" -- "$bin" pin add --direct "$keep"
expect 0 "pin rm" -- "$bin" pin rm "$keep"
expect 0 "block rm unpinned" -- "$bin" block rm "$leaf"
# compact: a JSON report; the store reads the same after it.
expect 0 "compact" -- "$bin" compact
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["segments_compacted"]>=0 and "bytes_copied" in d and "bytes_reclaimed" in d, d' \
	"$tmp/out" && ok || bad "compact report: $(cat "$tmp/out")"
expect 0 "verify after compact" -- "$bin" verify
# add --pin from stdin names and pins in one go; a bad name with --pin writes nothing.
expect 0 "add --pin stdin" -- "$bin" add --pin --quiet --name piped - <"$tmp/drop"
piped=$(cat "$tmp/out")
expect 0 "pin ls after stdin" -- "$bin" pin ls
[ "$(cat "$tmp/out")" = "$piped	recursive" ] && ok || bad "stdin --pin: $(cat "$tmp/out")"
"$bin" stat >"$tmp/before"
expect 2 "add --pin bad name" -- "$bin" add --pin --name "$(printf 'a\tb')" "$tmp/keep"
"$bin" stat >"$tmp/after"
python3 -c 'import json,sys; a,b=(json.load(open(f)) for f in sys.argv[1:]); assert a["next_seq"]==b["next_seq"] and a["names"]==b["names"], (a,b)' \
	"$tmp/before" "$tmp/after" && ok || bad "add --pin with a bad name wrote something"
# Quota: a put past --quota exits 6 naming the limit and writes nothing; stat shows the
# quota; with --quota-gc the garbage goes first and the put succeeds.
export CIDSTORE_DIR=$tmp/quota
head -c 3000 /dev/urandom >"$tmp/q1"
head -c 3000 /dev/urandom >"$tmp/q2"
expect 0 "put under quota" -- "$bin" --quota 4000 block put "$tmp/q1"
expect 6 "put over quota" -- "$bin" --quota 4000 block put "$tmp/q2"
grep -q "quota of 4000 bytes reached" "$tmp/err" && ok || bad "quota message: $(cat "$tmp/err")"
expect 0 "stat with quota" -- "$bin" --quota 4000 stat
python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["quota"]; assert d["bytes"]==4000 and d["used"]==3000, d' \
	"$tmp/out" && ok || bad "stat quota: $(cat "$tmp/out")"
expect 0 "put over quota with gc" -- "$bin" --quota 4000 --quota-gc block put "$tmp/q2"
expect 2 "quota not a number" -- "$bin" --quota 4k stat
expect 2 "quota-gc without quota" -- "$bin" --quota-gc stat
export CIDSTORE_DIR=$tmp/store

# --help for every command, and the exit-code table.
for c in "block put" "block get" "block rm" "block ls" has stat verify demo add cat ls \
	"name rm" pin gc compact checkpoint; do
	expect 0 "help $c" -- "$bin" $c --help
	grep -q usage "$tmp/out" && ok || bad "$c --help prints no usage"
done
expect 0 "help" -- "$bin" --help
grep -q "exit codes" "$tmp/out" && ok || bad "--help lacks the exit-code table"

# D4 of engine/dir.c: creating a store syncs the directory that holds it (else a power cut
# could take the new store directory, and every write acknowledged in it, away).
mkdir -p "$tmp/fresh"
strace -f -e trace=openat,fsync -o "$tmp/strace" "$bin" --dir "$tmp/fresh/store/" stat >/dev/null 2>&1
python3 - "$tmp/strace" "$tmp/fresh" <<'PY' && ok || bad "store creation does not sync the parent directory"
import re, sys
fds, synced = set(), False
for line in open(sys.argv[1]):
    m = re.search(r'openat\(AT_FDCWD, "%s/?", [^)]*O_DIRECTORY[^)]*\) = (\d+)' % re.escape(sys.argv[2]), line)
    if m:
        fds.add(m.group(1))
    m = re.search(r'fsync\((\d+)\)\s+= 0', line)
    if m and m.group(1) in fds:
        synced = True
sys.exit(0 if synced else 1)
PY

# The main job on a small dataset.
expect 0 "demo" -- "$bin" --dir "$tmp/demo" demo 8
grep -q '"blocks": 24' "$tmp/out" && ok || bad "demo: 32 chunks, a quarter repeats: $(cat "$tmp/out")"

echo "cli: $pass passed, $failed failed"
[ "$failed" = 0 ]
