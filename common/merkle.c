#include "merkle.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* --- hashing ---------------------------------------------------------------- */

/*
 * OpenSSL 3 looks SHA-256 up in its provider tables on every one-shot call
 * (SHA256(), EVP_sha256() in an init): that lookup, its locks and the
 * context allocations cost more than hashing a small event. So: one fetch
 * per process, one reused context per thread (freed when the thread ends).
 *
 * The hash functions cannot report failure (OpenSSL fails here only when out
 * of memory); a wrong hash in a ledger is worse than a crash, so they abort.
 */
static EVP_MD *sha256_md;
static pthread_key_t sha256_ctx_key;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_ctx_free(void *ctx)
{
	EVP_MD_CTX_free(ctx);
}

static void sha256_init(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
	if (!sha256_md || pthread_key_create(&sha256_ctx_key, sha256_ctx_free) != 0)
		abort();
}

/* SHA-256 of @a (@alen bytes) followed by @b (@blen bytes). */
static void sha256_two(const void *a, size_t alen, const void *b, size_t blen, merkle_hash out)
{
	EVP_MD_CTX *ctx;
	unsigned int outlen = 0;

	pthread_once(&sha256_once, sha256_init);
	ctx = pthread_getspecific(sha256_ctx_key);
	if (!ctx) {
		ctx = EVP_MD_CTX_new();
		if (!ctx || pthread_setspecific(sha256_ctx_key, ctx) != 0)
			abort();
	}
	if (EVP_DigestInit_ex2(ctx, sha256_md, NULL) != 1 || EVP_DigestUpdate(ctx, a, alen) != 1 ||
	    (blen && EVP_DigestUpdate(ctx, b, blen) != 1) ||
	    EVP_DigestFinal_ex(ctx, out, &outlen) != 1 || outlen != MERKLE_HASH_LEN)
		abort();
}

void merkle_leaf_hash(const void *data, size_t len, merkle_hash out)
{
	static const uint8_t prefix = 0x00;

	sha256_two(&prefix, 1, data, len, out);
}

void merkle_node_hash(const merkle_hash left, const merkle_hash right, merkle_hash out)
{
	uint8_t buf[1 + 2 * MERKLE_HASH_LEN];

	/* Copied first, so @out may alias either input. */
	buf[0] = 0x01;
	memcpy(buf + 1, left, MERKLE_HASH_LEN);
	memcpy(buf + 1 + MERKLE_HASH_LEN, right, MERKLE_HASH_LEN);
	sha256_two(buf, sizeof(buf), NULL, 0, out);
}

void merkle_empty_root(merkle_hash out)
{
	sha256_two("", 0, NULL, 0, out);
}

void merkle_subtree_fold(merkle_hash *h, size_t n, merkle_hash out)
{
	for (; n > 1; n /= 2)
		for (size_t i = 0; i < n / 2; i++)
			merkle_node_hash(h[2 * i], h[2 * i + 1], h[i]);
	memcpy(out, h[0], MERKLE_HASH_LEN);
}

/* --- tree shape ------------------------------------------------------------- */

/* log2 of the largest power of two strictly below @n (n >= 2). */
static unsigned split_level(uint64_t n)
{
	return 63 - (unsigned)__builtin_clzll(n - 1);
}

/*
 * MTH(D[lo:hi]) for a range RFC 6962 recursion can reach: @lo a multiple of
 * a power of two >= hi - lo. Such a range is the perfect subtrees of its
 * length's set bits, largest first; RFC 6962 hashes them right to left, so
 * walk the bits from the lowest (the rightmost subtree) up. No recursion.
 */
static int range_hash(uint64_t lo, uint64_t hi, merkle_get_fn *get, void *arg, merkle_hash out)
{
	uint64_t len = hi - lo;
	merkle_hash sub;
	bool have = false;
	int rc;

	for (unsigned level = 0; level < 64; level++) {
		uint64_t left_of;

		if (!(len >> level & 1))
			continue;
		left_of = level == 63 ? 0 : len >> (level + 1) << (level + 1);
		rc = get(arg, level, (lo + left_of) >> level, sub);
		if (rc)
			return rc;
		if (have)
			merkle_node_hash(sub, out, out);
		else
			memcpy(out, sub, MERKLE_HASH_LEN);
		have = true;
	}
	return have ? 0 : -EINVAL;
}

/* --- the frontier ------------------------------------------------------------ */

void merkle_frontier_init(struct merkle_frontier *f)
{
	memset(f, 0, sizeof(*f));
}

/*
 * Appending leaf number @size merges it with one frontier entry per trailing
 * one bit of @size, each merge completing the next perfect subtree. The
 * frontier is written only after every callback has agreed.
 */
int merkle_frontier_append(struct merkle_frontier *f, const merkle_hash leaf,
			   merkle_node_fn *on_node, void *arg)
{
	uint64_t index = f->size;
	unsigned n = f->n;
	unsigned level = 0;
	merkle_hash carry;
	int rc;

	if (index == UINT64_MAX)
		return -EOVERFLOW;
	if (n != (unsigned)__builtin_popcountll(index))
		return -EINVAL;
	memcpy(carry, leaf, MERKLE_HASH_LEN);
	if (on_node && (rc = on_node(arg, 0, index, carry)))
		return rc;
	while (index >> level & 1) {
		merkle_node_hash(f->hashes[--n], carry, carry);
		level++;
		if (on_node && (rc = on_node(arg, level, index >> level, carry)))
			return rc;
	}
	memcpy(f->hashes[n], carry, MERKLE_HASH_LEN);
	f->n = n + 1;
	f->size = index + 1;
	return 0;
}

void merkle_frontier_root(const struct merkle_frontier *f, merkle_hash out)
{
	if (f->n == 0) {
		merkle_empty_root(out);
		return;
	}
	memcpy(out, f->hashes[f->n - 1], MERKLE_HASH_LEN);
	for (unsigned i = f->n - 1; i-- > 0;)
		merkle_node_hash(f->hashes[i], out, out);
}

int merkle_root_at(uint64_t size, merkle_get_fn *get, void *arg, merkle_hash out)
{
	if (size == 0) {
		merkle_empty_root(out);
		return 0;
	}
	return range_hash(0, size, get, arg, out);
}

/* --- proofs ------------------------------------------------------------------ */

static void reverse_hashes(merkle_hash *h, size_t n)
{
	merkle_hash tmp;

	for (size_t i = 0; i < n / 2; i++) {
		memcpy(tmp, h[i], MERKLE_HASH_LEN);
		memcpy(h[i], h[n - 1 - i], MERKLE_HASH_LEN);
		memcpy(h[n - 1 - i], tmp, MERKLE_HASH_LEN);
	}
}

/*
 * One step down RFC 6962's recursion over D[*lo:*hi]: towards the left
 * half when @go_left, else the right. The half left behind is the sibling:
 * the right half may be any range, the left one is always perfect.
 */
static int descend(uint64_t *lo, uint64_t *hi, bool go_left, merkle_get_fn *get, void *arg,
		   merkle_hash sibling)
{
	unsigned level = split_level(*hi - *lo);
	uint64_t k = UINT64_C(1) << level;
	int rc;

	if (go_left) {
		rc = range_hash(*lo + k, *hi, get, arg, sibling);
		*hi = *lo + k;
	} else {
		rc = get(arg, level, *lo >> level, sibling);
		*lo += k;
	}
	return rc;
}

/*
 * PATH(m, D[0:n]) walked from the root down: each step puts the sibling it
 * leaves behind on the list, so the list comes out root side first and is
 * reversed at the end.
 */
int merkle_inclusion_proof(uint64_t index, uint64_t size, merkle_get_fn *get, void *arg,
			   merkle_hash proof[MERKLE_MAX_PROOF], size_t *n)
{
	uint64_t lo = 0, hi = size;
	size_t count = 0;
	int rc;

	*n = 0;
	if (index >= size)
		return -EINVAL;
	while (hi - lo > 1) {
		bool go_left = index - lo < (UINT64_C(1) << split_level(hi - lo));

		if (count == MERKLE_MAX_PROOF)
			return -EOVERFLOW;
		rc = descend(&lo, &hi, go_left, get, arg, proof[count]);
		if (rc)
			return rc;
		count++;
	}
	reverse_hashes(proof, count);
	*n = count;
	return 0;
}

/*
 * SUBPROOF(m, D[0:n], true) walked from the root down. The descent ends at
 * the subtree whose right edge is m; that subtree's own hash leads the proof
 * unless it is a left edge subtree (the verifier knows it: it is the old
 * root). The siblings follow, leaf side first.
 */
int merkle_consistency_proof(uint64_t old_size, uint64_t new_size, merkle_get_fn *get,
			     void *arg, merkle_hash proof[MERKLE_MAX_PROOF], size_t *n)
{
	merkle_hash siblings[MERKLE_MAX_PROOF];
	uint64_t lo = 0, hi = new_size;
	size_t count = 0, out = 0;
	bool left_edge = true;
	int rc;

	*n = 0;
	if (old_size > new_size)
		return -EINVAL;
	if (old_size == 0 || old_size == new_size)
		return 0;
	while (old_size != hi) {
		bool go_left = old_size - lo <= (UINT64_C(1) << split_level(hi - lo));

		if (count == MERKLE_MAX_PROOF)
			return -EOVERFLOW;
		rc = descend(&lo, &hi, go_left, get, arg, siblings[count++]);
		if (rc)
			return rc;
		left_edge = left_edge && go_left;
	}
	if (!left_edge) {
		if (count == MERKLE_MAX_PROOF)
			return -EOVERFLOW;
		rc = range_hash(lo, hi, get, arg, proof[out++]);
		if (rc)
			return rc;
	}
	while (count > 0)
		memcpy(proof[out++], siblings[--count], MERKLE_HASH_LEN);
	*n = out;
	return 0;
}

/* --- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ---------------------------- */

static bool hash_eq(const merkle_hash a, const merkle_hash b)
{
	return memcmp(a, b, MERKLE_HASH_LEN) == 0;
}

/* Right-shifts fn and sn together until LSB(fn) is set or fn is 0. */
static void shift_to_right_child(uint64_t *fn, uint64_t *sn)
{
	while (*fn != 0 && !(*fn & 1)) {
		*fn >>= 1;
		*sn >>= 1;
	}
}

bool merkle_verify_inclusion(const merkle_hash leaf, uint64_t index, uint64_t size,
			     const merkle_hash *proof, size_t n, const merkle_hash root)
{
	uint64_t fn = index, sn;
	merkle_hash r;

	if (index >= size || n > MERKLE_MAX_PROOF)
		return false;
	sn = size - 1;
	memcpy(r, leaf, MERKLE_HASH_LEN);
	for (size_t i = 0; i < n; i++) {
		if (sn == 0)
			return false;
		if ((fn & 1) || fn == sn) {
			merkle_node_hash(proof[i], r, r);
			shift_to_right_child(&fn, &sn);
		} else {
			merkle_node_hash(r, proof[i], r);
		}
		fn >>= 1;
		sn >>= 1;
	}
	return sn == 0 && hash_eq(r, root);
}

/*
 * With 0 < old < new. The path is @proof, preceded by @old_root when old is
 * a power of two (RFC 9162 step 2), read in place rather than copied.
 */
static bool verify_consistency_path(uint64_t old_size, uint64_t new_size,
				    const merkle_hash old_root, const merkle_hash new_root,
				    const merkle_hash *proof, size_t n)
{
	bool prepend = (old_size & (old_size - 1)) == 0;
	size_t len = n + prepend;
	uint64_t fn = old_size - 1, sn = new_size - 1;
	merkle_hash fr, sr;

	if (n == 0 || n > MERKLE_MAX_PROOF)
		return false;
	while (fn & 1) {
		fn >>= 1;
		sn >>= 1;
	}
	memcpy(fr, prepend ? old_root : proof[0], MERKLE_HASH_LEN);
	memcpy(sr, fr, MERKLE_HASH_LEN);
	for (size_t i = 1; i < len; i++) {
		const uint8_t *c = proof[i - prepend];

		if (sn == 0)
			return false;
		if ((fn & 1) || fn == sn) {
			merkle_node_hash(c, fr, fr);
			merkle_node_hash(c, sr, sr);
			shift_to_right_child(&fn, &sn);
		} else {
			merkle_node_hash(sr, c, sr);
		}
		fn >>= 1;
		sn >>= 1;
	}
	return sn == 0 && hash_eq(fr, old_root) && hash_eq(sr, new_root);
}

/*
 * The trivial cases carry no proof: the empty tree (whose root is
 * SHA-256("")) is a prefix of every tree, and a tree of itself.
 */
bool merkle_verify_consistency(uint64_t old_size, uint64_t new_size, const merkle_hash old_root,
			       const merkle_hash new_root, const merkle_hash *proof, size_t n)
{
	merkle_hash empty;

	if (old_size > new_size)
		return false;
	if (old_size == 0) {
		merkle_empty_root(empty);
		return n == 0 && hash_eq(old_root, empty);
	}
	if (old_size == new_size)
		return n == 0 && hash_eq(old_root, new_root);
	return verify_consistency_path(old_size, new_size, old_root, new_root, proof, n);
}
