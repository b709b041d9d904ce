/*
 * chunker.c - fixed-size and FastCDC chunk boundaries (see chunker.h for the parameters).
 *
 * Invariants:
 *  1. chunker_next() returns a length in [1, min(n, max)] or 0; a returned cut is the same
 *     whatever sizes the bytes arrived in (the scan resumes where it stopped, with the same
 *     hash state), so streaming and whole-buffer chunking agree.
 *  2. A CDC cut never falls before min bytes unless the input ends there, and always falls by
 *     max bytes.
 *  3. Work is linear: each byte of a chunk is hashed at most once.
 */
#include "chunker.h"

#include "err.h"

/* The Gear table: 256 outputs of splitmix64 (Steele, Lea, Flood 2014) seeded with the state
 * 0x676561722d636463 ("gear-cdc"): state += 0x9e3779b97f4a7c15; z = state;
 * z = (z ^ z >> 30) * 0xbf58476d1ce4e5b9; z = (z ^ z >> 27) * 0x94d049bb133111eb;
 * GEAR[i] = z ^ z >> 31. Generated once and committed; tests/test_unixfs.c re-derives it. */
const uint64_t chunk_gear[256] = {
    UINT64_C(0x6c4e7c4244484f8d), UINT64_C(0x0341edb0872a4fbe), UINT64_C(0xd28df4af60651c2e),
    UINT64_C(0xdd6630b40ebe6d6c), UINT64_C(0x0ed625b3b3755c5c), UINT64_C(0x88cd62dad737b845),
    UINT64_C(0x1f6e666d0c0bd27b), UINT64_C(0xb27f19ab0aac5a40), UINT64_C(0x4b03606198ef930f),
    UINT64_C(0xe994655743e70505), UINT64_C(0x905594882ab7887a), UINT64_C(0x225e54c88490d6f8),
    UINT64_C(0xe6f4adb12ab9d9b6), UINT64_C(0xc3c7894eed662f81), UINT64_C(0x9274b977a81dd353),
    UINT64_C(0xb79a4218f9f210d5), UINT64_C(0x1e8abb248f6c4f7f), UINT64_C(0x69b51a876f03065d),
    UINT64_C(0x60e7f838f6377329), UINT64_C(0xf56420b7b31739d1), UINT64_C(0xa6bed1b59750a046),
    UINT64_C(0xd4a72b1da736512d), UINT64_C(0xa0d257b328b5738a), UINT64_C(0xa4e61edf38281b3e),
    UINT64_C(0xf3cc614d69b4e470), UINT64_C(0x9807a6d3e65e2441), UINT64_C(0xf04f97af7703d54c),
    UINT64_C(0x22c4404a3c8feea5), UINT64_C(0x656d3e717b1eeae3), UINT64_C(0x7d32b8d3f503c7b4),
    UINT64_C(0x01b3922a607110b8), UINT64_C(0xf2de2a7c4fa5f380), UINT64_C(0x0766913421b5929a),
    UINT64_C(0x445f246bee0c8f4a), UINT64_C(0x3286528a6333cdbf), UINT64_C(0x318c18841888a935),
    UINT64_C(0x832fc896552fc45c), UINT64_C(0xb47a4d67bb27f090), UINT64_C(0x18bd6cbe4b6e71d6),
    UINT64_C(0xf38e1c1c8eddff75), UINT64_C(0x07ff0c0923ba4fae), UINT64_C(0xead46f60d965cce4),
    UINT64_C(0xea8166ae06b6e229), UINT64_C(0xd267b9299092443b), UINT64_C(0xbc25f0752a9b024d),
    UINT64_C(0x80764847c2902c21), UINT64_C(0xc57f9403e55fa03d), UINT64_C(0xd9566bdfc25c4e13),
    UINT64_C(0x7999f0090e1cd8b4), UINT64_C(0xa39b01d32cba15a6), UINT64_C(0xc93c434e624609ec),
    UINT64_C(0xd36c124ca5be32ae), UINT64_C(0x2dc064a7a09cd57c), UINT64_C(0xc9ab6e6c04c17168),
    UINT64_C(0x58fee27a2f372e2c), UINT64_C(0xef59a5fad95bc4c1), UINT64_C(0x1e2d4f60fd95fccb),
    UINT64_C(0x536e361d8cf41d3e), UINT64_C(0x7234a6bce071d530), UINT64_C(0x848aec7f252169f7),
    UINT64_C(0x4b0c6a4c88bfa743), UINT64_C(0x6d7326fd015dbd74), UINT64_C(0x63adc288c749bf4e),
    UINT64_C(0x15f1de065f3a46fd), UINT64_C(0x74f764864bb6d30a), UINT64_C(0xb866424849492c2c),
    UINT64_C(0x7143b8245cf49cac), UINT64_C(0xb60af8d119d57fe3), UINT64_C(0x7c7aa767cb62114e),
    UINT64_C(0xef2d3c54809868fe), UINT64_C(0xa9b2941cea9aa062), UINT64_C(0xa408a67b1fc1e3e8),
    UINT64_C(0x137cb8721562d5b3), UINT64_C(0x10f97b6482987619), UINT64_C(0x7ae69c0f3960dd0d),
    UINT64_C(0x44e2f24570c7e5f0), UINT64_C(0xed87625368493f67), UINT64_C(0x1253d6515c99bfeb),
    UINT64_C(0xeebd2783509d0b93), UINT64_C(0x4f7d864eb10771a3), UINT64_C(0x38714f41b6d46fe7),
    UINT64_C(0x57d0a0d9863d9eb4), UINT64_C(0x2c037528e0e63f14), UINT64_C(0xc1e74b21163716e3),
    UINT64_C(0x39d4fcc1520ac1aa), UINT64_C(0x67539b9f9ab63649), UINT64_C(0x87b3a25d15bed5bc),
    UINT64_C(0x784dd3ab34728d1d), UINT64_C(0x081b554bc9d51c40), UINT64_C(0xe3d086552ee64fe0),
    UINT64_C(0xf3a4392b75b7266f), UINT64_C(0x5fa5bd28cc5f09b2), UINT64_C(0x90b37bb2986f5b8f),
    UINT64_C(0x7d21893e4368c2b0), UINT64_C(0x8a9697e381d0f0bb), UINT64_C(0x88f207884381fa44),
    UINT64_C(0xcab184be59f614d4), UINT64_C(0x6fcc76a816977e42), UINT64_C(0x56a9cfd2315373ec),
    UINT64_C(0x226ba763bd9698d5), UINT64_C(0xf270723c759a9945), UINT64_C(0x07669827de8b54fb),
    UINT64_C(0x498692994d8e1c7d), UINT64_C(0xea8ef9ad7af07b5c), UINT64_C(0x2d2c709a3ee6b0b9),
    UINT64_C(0xe79251fcd7f93abc), UINT64_C(0xba68e61bc74c917f), UINT64_C(0x72ec87da3174ac87),
    UINT64_C(0xcc8aaddf3edd2048), UINT64_C(0x980f4724346d0c27), UINT64_C(0x735d003452e8b5d7),
    UINT64_C(0x94ea94ce45d07eb5), UINT64_C(0x6003e903adacad97), UINT64_C(0x6ddbc87053201b02),
    UINT64_C(0x32e8ef0aea4e9d1c), UINT64_C(0x5e303c7b207df581), UINT64_C(0xe86b86c2a181c3ad),
    UINT64_C(0x1498fe979a555e79), UINT64_C(0xb1a91be31c7e3e0a), UINT64_C(0x10d58b568339c944),
    UINT64_C(0x8e96bf4d33792f67), UINT64_C(0x4e8b786de84cd3d7), UINT64_C(0xc68ea2292095e009),
    UINT64_C(0x914a4692a06f0952), UINT64_C(0x2dbc225e42877839), UINT64_C(0x754003378c206220),
    UINT64_C(0x0c612b625b480296), UINT64_C(0x2b47379532982472), UINT64_C(0x53335a927492d6cc),
    UINT64_C(0x7b24d61a358b1f70), UINT64_C(0x44945f6ba173024d), UINT64_C(0xbff9b4940036472d),
    UINT64_C(0x7757d265cad7ca2e), UINT64_C(0xb72457b7cde2023e), UINT64_C(0xc983ec37ed31c8c9),
    UINT64_C(0x884fe0489ece8f5f), UINT64_C(0xb5bf039c36ff0742), UINT64_C(0xfb838654a32ef680),
    UINT64_C(0xf0d182dcf4448d4f), UINT64_C(0x8cb8e291694e66a7), UINT64_C(0xf49a02f75ef2b0df),
    UINT64_C(0x49ee51f6a1bd6b36), UINT64_C(0x7ea3bc300b2159fa), UINT64_C(0x8fb94ff2117b8131),
    UINT64_C(0x5db958df4f526562), UINT64_C(0x39cde7d7a3eb8f9f), UINT64_C(0x742255d75790c27f),
    UINT64_C(0x4f5e8417add6216e), UINT64_C(0x7d68f5e71981472d), UINT64_C(0x2d523e5726740ebb),
    UINT64_C(0x3ee0493a1d50ba04), UINT64_C(0x483a69bccfb4a107), UINT64_C(0x1641a2b110fa91f7),
    UINT64_C(0xd23d9df37c0d4f68), UINT64_C(0xcdbe7fa7c65e80b4), UINT64_C(0x086de44c43f5ef36),
    UINT64_C(0x5c1406bc61d462ae), UINT64_C(0x9eed4b2b3d02a060), UINT64_C(0x216ca4e496d4f4bb),
    UINT64_C(0xfb9d731d6d411742), UINT64_C(0xfe1c2583e3b22c15), UINT64_C(0x94140e67b04eb5a0),
    UINT64_C(0x2586f94b5212384a), UINT64_C(0x72b6b8b99799a586), UINT64_C(0x90b5710a39092734),
    UINT64_C(0x355fe668bfe8f234), UINT64_C(0xbf3b9ad77515552d), UINT64_C(0xcce90074742c7013),
    UINT64_C(0x84e5149c28648ef1), UINT64_C(0xda87a2e4d3a9a615), UINT64_C(0x6fe84446c9190741),
    UINT64_C(0x224e08489f595d13), UINT64_C(0xbab30009f41d42c1), UINT64_C(0x80abe9b1d251ef6c),
    UINT64_C(0x897c5ea8d7d386a3), UINT64_C(0x3faa540897bbcf0e), UINT64_C(0xde9d84e5a41e7b6f),
    UINT64_C(0x9f77798f75bda5f8), UINT64_C(0x186ca68b273d19bd), UINT64_C(0x42be41a4b19780d6),
    UINT64_C(0xfb97f5d9acf32a1e), UINT64_C(0x5e055eda06304d04), UINT64_C(0x7e3bda5c152049bc),
    UINT64_C(0x7e1765f93f626abb), UINT64_C(0x52ad46de1bf61af0), UINT64_C(0x8125edc6eefe6281),
    UINT64_C(0x944968547164b904), UINT64_C(0x0f68cd6cdd144be0), UINT64_C(0x44f2a61a26d9bad2),
    UINT64_C(0x0277a0a414d59b8f), UINT64_C(0x09734871dd633346), UINT64_C(0xbce05c83e844fd82),
    UINT64_C(0x1a7f79cba8e59f6a), UINT64_C(0x69134a345dff7848), UINT64_C(0x91adce50246244f3),
    UINT64_C(0xf73e9fa6417ddca2), UINT64_C(0x2885942bbcb5e848), UINT64_C(0x087e80d00dee0e8e),
    UINT64_C(0xcbd6d8a16d601254), UINT64_C(0x097639c21a927d0f), UINT64_C(0x899ac3d9308c9e7b),
    UINT64_C(0x67d74d86df735f10), UINT64_C(0x27627573c3ebe7af), UINT64_C(0x099a15046a6336ef),
    UINT64_C(0x64d601e79e67a434), UINT64_C(0xf38a72e9d8dd8be8), UINT64_C(0xc97d50674c7bc086),
    UINT64_C(0xd09122d4978a795a), UINT64_C(0x96869844df3afdcd), UINT64_C(0xb4b38b3ed0df3687),
    UINT64_C(0x750f6f85282060c7), UINT64_C(0x40332800ea93f38f), UINT64_C(0xd9241ab581dd7e79),
    UINT64_C(0x5eb90bd799fd366e), UINT64_C(0x68726a6443c8856f), UINT64_C(0x4eccf3dc9823aee9),
    UINT64_C(0x9efc76431e8f941f), UINT64_C(0xed7c804d9af2baaf), UINT64_C(0xafc9c0daa404b57b),
    UINT64_C(0x610664a62ad48d25), UINT64_C(0xa6dec318a3c2aa3a), UINT64_C(0xcb91dbda2ba28a86),
    UINT64_C(0x5a8177f024b3e67d), UINT64_C(0xcdf87f8228e493c3), UINT64_C(0xf9937453cb9234a0),
    UINT64_C(0x4a44ac533c7d0c9f), UINT64_C(0x10561e1ad6106a54), UINT64_C(0xe6e68600af484aff),
    UINT64_C(0x560010cb8691bf7a), UINT64_C(0xdfd207a96c88bd3d), UINT64_C(0x402b17e573b7cc60),
    UINT64_C(0x80c9aa994218fa9c), UINT64_C(0x8a0ea0a3b05a66fb), UINT64_C(0xb136637f799965c7),
    UINT64_C(0xdbe8a4305ffaab58), UINT64_C(0x9e850b641a3c7f97), UINT64_C(0xee0a6f167a882cd9),
    UINT64_C(0xb92d3b23d5289df2), UINT64_C(0xc32c7f328bc4bc5a), UINT64_C(0xa6ffcb68bfa88522),
    UINT64_C(0x050e95864ed44fc5), UINT64_C(0xdf15aef4796a64c1), UINT64_C(0x1c0488a143637247),
    UINT64_C(0x1a782beb704d1cef), UINT64_C(0xe9868261689acdf6), UINT64_C(0x445291e7689c1699),
    UINT64_C(0xd951aee59fa05ea6), UINT64_C(0xeebdde0143b54f2e), UINT64_C(0xd4ca040709f7b105),
    UINT64_C(0x012c4c8e043e192a), UINT64_C(0xc11e55f4c8b6dd53), UINT64_C(0x753136e3d593dbc6),
    UINT64_C(0xa179401d2bc0ac25), UINT64_C(0x891f8a506a9d29d7), UINT64_C(0x75b5d66b0755de52),
    UINT64_C(0xd2148b10b1180718),
};

static unsigned log2u(uint32_t v)
{
	unsigned n = 0;

	while (v > 1) {
		v >>= 1;
		n++;
	}
	return n;
}

/* The top `bits` bits of a 64-bit word. */
static uint64_t top_mask(unsigned bits)
{
	return bits == 0 ? 0 : ~UINT64_C(0) << (64 - bits);
}

int chunker_init(struct chunker *c, int kind, uint32_t size)
{
	if (size == 0)
		size = CHUNK_SIZE_DEFAULT;
	*c = (struct chunker){.kind = kind, .size = size};
	switch (kind) {
	case CS_CHUNK_FIXED:
		if (size > CHUNK_SIZE_MAX)
			return cs_fail(CS_ELIMIT, "chunk size %u exceeds the limit of %u bytes",
			               size, CHUNK_SIZE_MAX);
		c->max = size;
		return 0;
	case CS_CHUNK_CDC:
		if (size > CDC_AVG_MAX)
			return cs_fail(CS_ELIMIT,
			               "content-defined average %u exceeds %u (its maximum chunk, "
			               "4 x average, would pass %u bytes)",
			               size, CDC_AVG_MAX, CHUNK_SIZE_MAX);
		if (size < CDC_AVG_MIN || (size & (size - 1)) != 0)
			return cs_fail(
			    CS_EINVAL,
			    "content-defined average %u must be a power of two of at least %u",
			    size, CDC_AVG_MIN);
		c->min = size / 4;
		c->max = size * 4;
		c->mask_s = top_mask(log2u(size) + CDC_NC_LEVEL);
		c->mask_l = top_mask(log2u(size) - CDC_NC_LEVEL);
		return 0;
	}
	return cs_fail(CS_EINVAL, "unknown chunker %d", kind);
}

size_t chunker_next(struct chunker *c, const uint8_t *p, size_t n, bool final)
{
	if (c->kind == CS_CHUNK_FIXED) {
		if (n >= c->max)
			return c->max;
		return final ? n : 0;
	}

	/* FastCDC: skip to min, hash with the harder mask up to the normal point, then the
	 * easier one, and cut at max at the latest (invariant 2). */
	size_t end = n < c->max ? n : c->max;
	size_t i = c->scanned > c->min ? c->scanned : c->min;
	uint64_t h = c->hash;
	size_t cut = 0;

	for (; i < end; i++) {
		h = (h << 1) + chunk_gear[p[i]];
		uint64_t mask = i < c->size ? c->mask_s : c->mask_l;
		if ((h & mask) == 0) {
			cut = i + 1;
			break;
		}
	}
	if (cut == 0 && end == c->max)
		cut = c->max;
	if (cut == 0 && final)
		cut = n;
	if (cut == 0) {
		c->hash = h;
		c->scanned = i;
		return 0;
	}
	c->hash = 0;
	c->scanned = 0;
	return cut;
}
