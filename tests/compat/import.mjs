// import.mjs - the reference side of tests/test_unixfs.c's compatibility test.
//
// Imports each FILE with npm's ipfs-unixfs-importer configured as Kubo's `ipfs add` and prints
// one root CID per line, in argument order. The C test writes the files, runs this script and
// compares its own roots with these, byte for byte (as CID text).
//
// Usage: node import.mjs --profile v1|v0 [--raw-leaves|--no-raw-leaves]
//                        [--hash sha2-256|blake2b-256] [--chunker size-N] [--dir] PATH...
//
// With --dir each PATH is a directory, imported as `ipfs add -r --hidden PATH` does: the
// importer gets one entry per file ({path: 'base/rel/name', content}), per symlink ({path,
// link: target}) and per empty directory ({path}), every path under the directory's base
// name, with wrapWithDirectory: false, and the last entry it yields is that directory's root.
// Its default sharding settings (shardSplitThresholdBytes 262144, 'links-bytes') are Kubo's.
//
// Profiles (Kubo 0.x defaults):
//   v1: `ipfs add --cid-version=1`: CIDv1, raw leaves, sha2-256, 262144-byte chunks.
//   v0: plain `ipfs add`: CIDv0, dag-pb (UnixFS File) leaves, sha2-256, 262144-byte chunks.
// Both use the balanced layout with at most 174 links per node, and a file of one chunk is
// that chunk's leaf itself.
//
// --hash blake2b-256: the importer hashes every block with sha2-256 in utils/persist.js and
// takes no hasher option, so for this flag we replace the digest function of that sha2-256
// hasher object (the one module instance both the importer and this script load) with
// blake2b-256. Kubo then writes CIDv1 for every block, which the v1 profile already does; v0
// with a non-sha2 hash is refused, as Kubo refuses `--cid-version=0 --hash=blake2b-256`.
import { createReadStream, lstatSync, readdirSync, readlinkSync } from 'node:fs'
import { basename, join } from 'node:path'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { sha256 } from 'multiformats/hashes/sha2'
import { blake2b256 } from '@multiformats/blake2/blake2b'

function usage (msg) {
  process.stderr.write(`import.mjs: ${msg}\n`)
  process.exit(2)
}

const files = []
let profile = null
let rawLeaves = null
let hash = 'sha2-256'
let chunkSize = 262144
let dirs = false
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  if (a === '--profile') profile = argv[++i]
  else if (a === '--raw-leaves') rawLeaves = true
  else if (a === '--no-raw-leaves') rawLeaves = false
  else if (a === '--dir') dirs = true
  else if (a === '--hash') hash = argv[++i]
  else if (a === '--chunker') {
    const m = /^size-([0-9]+)$/.exec(argv[++i] ?? '')
    if (m == null) usage('--chunker takes size-N')
    chunkSize = Number(m[1])
  } else if (a.startsWith('--')) usage(`unknown option ${a}`)
  else files.push(a)
}
if (profile !== 'v1' && profile !== 'v0') usage('--profile v1|v0 is required')
const cidVersion = profile === 'v1' ? 1 : 0
if (rawLeaves == null) rawLeaves = cidVersion === 1
if (hash === 'blake2b-256') {
  if (cidVersion === 0) usage('CIDv0 only supports sha2-256')
  sha256.digest = (input) => blake2b256.digest(input)
} else if (hash !== 'sha2-256') usage(`unsupported hash ${hash}`)

// An importer only puts blocks; the test compares roots, so the blocks are dropped.
const blockstore = { put: async (cid) => cid }

const stream = (path) => createReadStream(path, { highWaterMark: 1 << 20 })

// The import candidates of the tree at root, walked with an explicit stack.
function * treeEntries (root) {
  const stack = [[root, basename(root)]]
  while (stack.length > 0) {
    const [disk, rel] = stack.pop()
    const names = readdirSync(disk)
    if (names.length === 0) yield { path: rel }
    for (const name of names) {
      const d = join(disk, name)
      const r = `${rel}/${name}`
      const st = lstatSync(d)
      if (st.isDirectory()) stack.push([d, r])
      else if (st.isSymbolicLink()) yield { path: r, link: readlinkSync(d) }
      else if (st.isFile()) yield { path: r, content: stream(d) }
      else usage(`${d} is neither a file, a directory nor a symlink`)
    }
  }
}

for (const path of files) {
  let root = null
  const source = dirs ? treeEntries(path.replace(/\/+$/, '')) : [{ content: stream(path) }]
  for await (const entry of importer(source, blockstore, {
      cidVersion,
      rawLeaves,
      leafType: 'file',
      reduceSingleLeafToSelf: true,
      chunker: fixedSize({ chunkSize }),
      layout: balanced({ maxChildrenPerNode: 174 }),
      wrapWithDirectory: false
    })) {
    root = entry.cid
  }
  if (root == null) usage(`nothing imported for ${path}`)
  process.stdout.write(`${root.toString()}\n`)
}
