/* RFC 6962 Merkle trees: published vectors, then properties over many sizes. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/merkle.h"

/* --- an in-memory node store, filled by merkle_frontier_append ----------------- */

#define TABLE_LEVELS 8
#define TABLE_WIDTH 128

struct node_table {
	merkle_hash hash[TABLE_LEVELS][TABLE_WIDTH];
	bool have[TABLE_LEVELS][TABLE_WIDTH];
	uint64_t limit;		/* a getter asking past this many leaves is a bug */
};

static struct node_table table;

static int table_put(void *arg, unsigned level, uint64_t index, const merkle_hash hash)
{
	struct node_table *t = arg;

	cr_assert(level < TABLE_LEVELS && index < TABLE_WIDTH, "node (%u,%llu) out of table",
		  level, (unsigned long long)index);
	memcpy(t->hash[level][index], hash, MERKLE_HASH_LEN);
	t->have[level][index] = true;
	return 0;
}

static int table_get(void *arg, unsigned level, uint64_t index, merkle_hash out)
{
	struct node_table *t = arg;

	if (level >= TABLE_LEVELS || index >= TABLE_WIDTH || !t->have[level][index])
		return -ENOENT;
	if (((index + 1) << level) > t->limit)
		return -ERANGE;
	memcpy(out, t->hash[level][index], MERKLE_HASH_LEN);
	return 0;
}

static void test_leaf(uint64_t i, merkle_hash out)
{
	char data[32];
	int n = snprintf(data, sizeof(data), "leaf %llu", (unsigned long long)i);

	merkle_leaf_hash(data, (size_t)n, out);
}

/* A tree of @size test leaves in @f and the table; its roots in @roots[0..size]. */
static void build_tree(struct merkle_frontier *f, uint64_t size, merkle_hash *roots)
{
	memset(&table, 0, sizeof(table));
	merkle_frontier_init(f);
	if (roots)
		merkle_frontier_root(f, roots[0]);
	for (uint64_t i = 0; i < size; i++) {
		merkle_hash leaf;

		test_leaf(i, leaf);
		cr_assert_eq(merkle_frontier_append(f, leaf, table_put, &table), 0);
		if (roots)
			merkle_frontier_root(f, roots[i + 1]);
	}
	table.limit = size;
}

static void hex_to(const char *hex, uint8_t *out, size_t len)
{
	cr_assert_eq(strlen(hex), 2 * len, "bad vector %s", hex);
	for (size_t i = 0; i < len; i++) {
		unsigned v;

		cr_assert_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
}

static void assert_hash(const merkle_hash got, const char *want_hex, const char *what)
{
	merkle_hash want;

	hex_to(want_hex, want, MERKLE_HASH_LEN);
	cr_assert(memcmp(got, want, MERKLE_HASH_LEN) == 0, "%s differs from %s", what, want_hex);
}

/* --- published vectors ------------------------------------------------------------------ */

/*
 * The standard RFC 6962 test tree, from Google's reference implementation
 * (github.com/transparency-dev/merkle: testonly/constants.go for the leaves,
 * node hashes and roots; proof/verify_test.go for the proofs, whose leaf
 * numbers there are 1-based). The same data is in certificate-transparency's
 * merkle_tree_test.cc.
 */
static const char *const vector_leaves[] = {
	"", "00", "10", "2021", "3031", "40414243", "5051525354555657",
	"606162636465666768696a6b6c6d6e6f",
};

static const char *const vector_roots[] = {
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
	"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
	"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
	"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
	"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
	"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
	"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
	"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
};

/* NodeHashes(): [level][index] of every perfect subtree of the 8-leaf tree. */
static const char *const vector_nodes[4][8] = {
	{
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
		"0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
		"07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
		"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
		"4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
		"b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
		"46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
	},
	{
		"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
		"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
		"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
	},
	{
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
	},
	{
		"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
	},
};

struct proof_vector {
	uint64_t a, b;		/* inclusion: leaf index, size; consistency: old, new */
	size_t n;
	const char *proof[3];
};

static const struct proof_vector vector_inclusion[] = {
	{0, 8, 3, {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
		   "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		   "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
	{5, 8, 3, {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
		   "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
		   "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
	{2, 3, 1, {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"}},
	{1, 5, 3, {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		   "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		   "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
	{0, 1, 0, {NULL}},
};

static const struct proof_vector vector_consistency[] = {
	{1, 1, 0, {NULL}},
	{1, 8, 3, {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
		   "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		   "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
	{6, 8, 3, {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
		   "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
		   "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
	{2, 5, 2, {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
		   "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
	{6, 7, 3, {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
		   "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
		   "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
};

static void build_vector_tree(struct merkle_frontier *f, merkle_hash roots[9])
{
	memset(&table, 0, sizeof(table));
	merkle_frontier_init(f);
	merkle_frontier_root(f, roots[0]);
	for (size_t i = 0; i < 8; i++) {
		uint8_t data[16];
		size_t len = strlen(vector_leaves[i]) / 2;
		merkle_hash leaf;

		hex_to(vector_leaves[i], data, len);
		merkle_leaf_hash(data, len, leaf);
		cr_assert_eq(merkle_frontier_append(f, leaf, table_put, &table), 0);
		merkle_frontier_root(f, roots[i + 1]);
	}
	table.limit = 8;
}

static void load_vector_root(uint64_t size, merkle_hash out)
{
	hex_to(vector_roots[size], out, MERKLE_HASH_LEN);
}

Test(merkle_vectors, empty_tree_root_is_sha256_of_nothing)
{
	merkle_hash root;
	struct merkle_frontier f;

	merkle_empty_root(root);
	assert_hash(root, vector_roots[0], "empty root");
	merkle_frontier_init(&f);
	merkle_frontier_root(&f, root);
	assert_hash(root, vector_roots[0], "empty frontier root");
	cr_assert_eq(merkle_root_at(0, table_get, &table, root), 0);
	assert_hash(root, vector_roots[0], "root_at(0)");
}

Test(merkle_vectors, roots_of_sizes_0_to_8_match)
{
	struct merkle_frontier f;
	merkle_hash roots[9], at;
	char what[32];

	build_vector_tree(&f, roots);
	for (uint64_t size = 0; size <= 8; size++) {
		snprintf(what, sizeof(what), "frontier root %llu", (unsigned long long)size);
		assert_hash(roots[size], vector_roots[size], what);
		table.limit = size;
		cr_assert_eq(merkle_root_at(size, table_get, &table, at), 0);
		snprintf(what, sizeof(what), "root_at %llu", (unsigned long long)size);
		assert_hash(at, vector_roots[size], what);
	}
}

Test(merkle_vectors, every_perfect_subtree_is_reported_with_its_hash)
{
	struct merkle_frontier f;
	merkle_hash roots[9];
	char what[32];

	build_vector_tree(&f, roots);
	for (unsigned level = 0; level < 4; level++) {
		for (uint64_t i = 0; i < (8u >> level); i++) {
			snprintf(what, sizeof(what), "node (%u,%llu)", level, (unsigned long long)i);
			cr_assert(table.have[level][i], "%s never reported", what);
			assert_hash(table.hash[level][i], vector_nodes[level][i], what);
		}
	}
	cr_assert_not(table.have[4][0]);
}

static void assert_proof(const merkle_hash *got, size_t n, const struct proof_vector *v)
{
	cr_assert_eq(n, v->n, "(%llu,%llu): %zu hashes, want %zu", (unsigned long long)v->a,
		     (unsigned long long)v->b, n, v->n);
	for (size_t i = 0; i < n; i++)
		assert_hash(got[i], v->proof[i], "proof hash");
}

Test(merkle_vectors, inclusion_proofs_match_and_verify)
{
	struct merkle_frontier f;
	merkle_hash roots[9], proof[MERKLE_MAX_PROOF];
	size_t n;

	build_vector_tree(&f, roots);
	for (size_t i = 0; i < sizeof(vector_inclusion) / sizeof(vector_inclusion[0]); i++) {
		const struct proof_vector *v = &vector_inclusion[i];

		table.limit = v->b;
		cr_assert_eq(merkle_inclusion_proof(v->a, v->b, table_get, &table, proof, &n), 0);
		assert_proof((const merkle_hash *)proof, n, v);
		cr_assert(merkle_verify_inclusion(table.hash[0][v->a], v->a, v->b,
						  (const merkle_hash *)proof, n, roots[v->b]));
	}
}

Test(merkle_vectors, consistency_proofs_match_and_verify)
{
	struct merkle_frontier f;
	merkle_hash roots[9], proof[MERKLE_MAX_PROOF], want_old, want_new;
	size_t n;

	build_vector_tree(&f, roots);
	for (size_t i = 0; i < sizeof(vector_consistency) / sizeof(vector_consistency[0]); i++) {
		const struct proof_vector *v = &vector_consistency[i];

		table.limit = v->b;
		cr_assert_eq(merkle_consistency_proof(v->a, v->b, table_get, &table, proof, &n), 0);
		assert_proof((const merkle_hash *)proof, n, v);
		load_vector_root(v->a, want_old);
		load_vector_root(v->b, want_new);
		cr_assert(merkle_verify_consistency(v->a, v->b, want_old, want_new,
						    (const merkle_hash *)proof, n));
	}
}

/* A proof for a smaller tree, with that tree's root, must not pass for a bigger one. */
Test(merkle_vectors, a_smaller_trees_proof_and_root_do_not_pass_for_size_8)
{
	struct merkle_frontier f;
	merkle_hash roots[9], proof[MERKLE_MAX_PROOF];
	size_t n;

	build_vector_tree(&f, roots);
	cr_assert_eq(merkle_inclusion_proof(0, 4, table_get, &table, proof, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert(merkle_verify_inclusion(table.hash[0][0], 0, 4, (const merkle_hash *)proof, n,
					  roots[4]));
	cr_assert_not(merkle_verify_inclusion(table.hash[0][0], 0, 8, (const merkle_hash *)proof,
					      n, roots[4]));
	cr_assert_eq(merkle_consistency_proof(1, 4, table_get, &table, proof, &n), 0);
	cr_assert(merkle_verify_consistency(1, 4, roots[1], roots[4], (const merkle_hash *)proof,
					    n));
	cr_assert_not(merkle_verify_consistency(1, 8, roots[1], roots[4],
						(const merkle_hash *)proof, n));
	cr_assert_eq(merkle_consistency_proof(3, 4, table_get, &table, proof, &n), 0);
	cr_assert_not(merkle_verify_consistency(3, 8, roots[3], roots[4],
						(const merkle_hash *)proof, n));
}

/* --- the frontier ------------------------------------------------------------------------- */

struct call_log {
	unsigned n;
	unsigned level[8];
	uint64_t index[8];
	int fail_at;		/* the call number that fails, or -1 */
};

static int log_node(void *arg, unsigned level, uint64_t index, const merkle_hash hash)
{
	struct call_log *log = arg;

	(void)hash;
	if ((int)log->n == log->fail_at)
		return -EIO;
	cr_assert_lt(log->n, 8);
	log->level[log->n] = level;
	log->index[log->n] = index;
	log->n++;
	return 0;
}

Test(merkle_frontier, reports_the_leaf_then_completed_subtrees_lowest_first)
{
	struct merkle_frontier f;
	struct call_log log = {.fail_at = -1};
	merkle_hash leaf;

	build_tree(&f, 7, NULL);
	test_leaf(7, leaf);
	cr_assert_eq(merkle_frontier_append(&f, leaf, log_node, &log), 0);
	cr_assert_eq(log.n, 4);
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(log.level[i], i);
		cr_assert_eq(log.index[i], 7u >> i);
	}
	cr_assert_eq(f.size, 8);
	cr_assert_eq(f.n, 1);
}

Test(merkle_frontier, callback_error_stops_the_append_and_changes_nothing)
{
	struct merkle_frontier f, before;
	merkle_hash leaf;

	build_tree(&f, 7, NULL);
	test_leaf(7, leaf);
	for (int fail_at = 0; fail_at < 4; fail_at++) {
		struct call_log log = {.fail_at = fail_at};

		before = f;
		cr_assert_eq(merkle_frontier_append(&f, leaf, log_node, &log), -EIO);
		cr_assert(memcmp(&before, &f, sizeof(f)) == 0, "frontier changed (fail_at %d)",
			  fail_at);
	}
	cr_assert_eq(merkle_frontier_append(&f, leaf, NULL, NULL), 0);
	cr_assert_eq(f.size, 8);
}

Test(merkle_frontier, refuses_a_corrupt_or_full_frontier)
{
	struct merkle_frontier f;
	merkle_hash leaf;

	test_leaf(0, leaf);
	merkle_frontier_init(&f);
	f.size = 3;
	f.n = 1;
	cr_assert_eq(merkle_frontier_append(&f, leaf, NULL, NULL), -EINVAL);
	f.size = UINT64_MAX;
	f.n = 64;
	cr_assert_eq(merkle_frontier_append(&f, leaf, NULL, NULL), -EOVERFLOW);
}

/* --- proof generation edge cases ---------------------------------------------------------- */

static int failing_get(void *arg, unsigned level, uint64_t index, merkle_hash out)
{
	(void)arg;
	(void)level;
	(void)index;
	(void)out;
	return -EIO;
}

Test(merkle_proofs, refuse_bad_sizes_and_pass_getter_errors_on)
{
	merkle_hash proof[MERKLE_MAX_PROOF], root;
	size_t n = 99;

	cr_assert_eq(merkle_inclusion_proof(5, 5, failing_get, NULL, proof, &n), -EINVAL);
	cr_assert_eq(n, 0);
	cr_assert_eq(merkle_inclusion_proof(0, 0, failing_get, NULL, proof, &n), -EINVAL);
	cr_assert_eq(merkle_inclusion_proof(1, 5, failing_get, NULL, proof, &n), -EIO);
	cr_assert_eq(merkle_consistency_proof(6, 5, failing_get, NULL, proof, &n), -EINVAL);
	cr_assert_eq(merkle_consistency_proof(2, 5, failing_get, NULL, proof, &n), -EIO);
	cr_assert_eq(merkle_root_at(3, failing_get, NULL, root), -EIO);
	/* One leaf, or no step at all, needs no node. */
	cr_assert_eq(merkle_inclusion_proof(0, 1, failing_get, NULL, proof, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_eq(merkle_consistency_proof(0, 5, failing_get, NULL, proof, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_eq(merkle_consistency_proof(5, 5, failing_get, NULL, proof, &n), 0);
	cr_assert_eq(n, 0);
}

Test(merkle_proofs, trivial_consistency_needs_matching_roots_and_no_hashes)
{
	merkle_hash empty, a, b;

	merkle_empty_root(empty);
	test_leaf(1, a);
	test_leaf(2, b);
	cr_assert(merkle_verify_consistency(0, 0, empty, empty, NULL, 0));
	cr_assert(merkle_verify_consistency(0, 9, empty, b, NULL, 0));
	cr_assert_not(merkle_verify_consistency(0, 9, a, b, NULL, 0));
	cr_assert(merkle_verify_consistency(4, 4, a, a, NULL, 0));
	cr_assert_not(merkle_verify_consistency(4, 4, a, b, NULL, 0));
	cr_assert_not(merkle_verify_consistency(4, 4, a, a, (const merkle_hash *)&a, 1));
	cr_assert_not(merkle_verify_consistency(0, 4, empty, a, (const merkle_hash *)&a, 1));
	cr_assert_not(merkle_verify_consistency(5, 4, a, b, (const merkle_hash *)&a, 1));
	cr_assert_not(merkle_verify_consistency(1, 2, a, b, NULL, 0));
}

Test(merkle_proofs, verification_refuses_oversized_proofs)
{
	static merkle_hash big[MERKLE_MAX_PROOF + 1];
	merkle_hash leaf;

	test_leaf(0, leaf);
	cr_assert_not(merkle_verify_inclusion(leaf, 0, 2, (const merkle_hash *)big,
					      MERKLE_MAX_PROOF + 1, leaf));
	cr_assert_not(merkle_verify_inclusion(leaf, 0, 1, NULL, 0, big[0]));
	cr_assert(merkle_verify_inclusion(leaf, 0, 1, NULL, 0, leaf));
	cr_assert_not(merkle_verify_inclusion(leaf, 1, 1, NULL, 0, leaf));
	cr_assert_not(merkle_verify_consistency(3, 5, leaf, leaf, (const merkle_hash *)big,
						MERKLE_MAX_PROOF + 1));
}

/* --- properties ----------------------------------------------------------------------------- */

static void flip(uint8_t *buf, unsigned bit)
{
	buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
}

/* Every single-bit change to the proof, the leaf, the index or the root fails. */
static void assert_inclusion_tamper_fails(const merkle_hash leaf, uint64_t index, uint64_t size,
					  merkle_hash *proof, size_t n, const merkle_hash root)
{
	merkle_hash bad;

	for (size_t i = 0; i < n; i++) {
		for (unsigned bit = (unsigned)(index + i) % 8; bit < 256; bit += 8) {
			flip(proof[i], bit);
			cr_assert_not(merkle_verify_inclusion(leaf, index, size,
							      (const merkle_hash *)proof, n, root),
				      "size %llu index %llu: proof[%zu] bit %u",
				      (unsigned long long)size, (unsigned long long)index, i, bit);
			flip(proof[i], bit);
		}
	}
	for (unsigned bit = 0; bit < 256; bit += 7) {
		memcpy(bad, leaf, MERKLE_HASH_LEN);
		flip(bad, bit);
		cr_assert_not(merkle_verify_inclusion(bad, index, size, (const merkle_hash *)proof,
						      n, root));
		memcpy(bad, root, MERKLE_HASH_LEN);
		flip(bad, bit);
		cr_assert_not(merkle_verify_inclusion(leaf, index, size, (const merkle_hash *)proof,
						      n, bad));
	}
	for (unsigned bit = 0; bit < 64; bit++)
		cr_assert_not(merkle_verify_inclusion(leaf, index ^ (UINT64_C(1) << bit), size,
						      (const merkle_hash *)proof, n, root),
			      "size %llu index %llu: index bit %u", (unsigned long long)size,
			      (unsigned long long)index, bit);
	if (n > 0)
		cr_assert_not(merkle_verify_inclusion(leaf, index, size, (const merkle_hash *)proof,
						      n - 1, root));
	memcpy(proof[n], root, MERKLE_HASH_LEN);
	cr_assert_not(merkle_verify_inclusion(leaf, index, size, (const merkle_hash *)proof,
					      n + 1, root));
}

Test(merkle_properties, every_leaf_of_sizes_1_to_70_proves_and_tampering_fails)
{
	struct merkle_frontier f;
	merkle_hash root, at, proof[MERKLE_MAX_PROOF + 1];
	size_t n;

	memset(&table, 0, sizeof(table));
	merkle_frontier_init(&f);
	for (uint64_t size = 1; size <= 70; size++) {
		test_leaf(size - 1, root);
		cr_assert_eq(merkle_frontier_append(&f, root, table_put, &table), 0);
		table.limit = size;
		merkle_frontier_root(&f, root);
		cr_assert_eq(merkle_root_at(size, table_get, &table, at), 0);
		cr_assert(memcmp(root, at, MERKLE_HASH_LEN) == 0, "root_at(%llu)",
			  (unsigned long long)size);
		for (uint64_t index = 0; index < size; index++) {
			cr_assert_eq(merkle_inclusion_proof(index, size, table_get, &table, proof,
							    &n), 0);
			cr_assert(merkle_verify_inclusion(table.hash[0][index], index, size,
							  (const merkle_hash *)proof, n, root),
				  "size %llu index %llu", (unsigned long long)size,
				  (unsigned long long)index);
			assert_inclusion_tamper_fails(table.hash[0][index], index, size, proof, n,
						      root);
		}
	}
}

static bool consistent(uint64_t old_size, uint64_t new_size, const merkle_hash old_root,
		       const merkle_hash new_root, const merkle_hash *proof, size_t n)
{
	return merkle_verify_consistency(old_size, new_size, old_root, new_root, proof, n);
}

static void assert_consistency_tamper_fails(uint64_t o, uint64_t s, merkle_hash *roots,
					    merkle_hash *proof, size_t n)
{
	merkle_hash bad;

	for (size_t i = 0; i < n; i++) {
		for (unsigned j = 0; j < 8; j++) {
			unsigned bit = (unsigned)(j * 32 + (o * 7 + s + i) % 32);

			flip(proof[i], bit);
			cr_assert_not(consistent(o, s, roots[o], roots[s], (const merkle_hash *)proof,
						 n), "%llu->%llu: proof[%zu] bit %u",
				      (unsigned long long)o, (unsigned long long)s, i, bit);
			flip(proof[i], bit);
		}
	}
	for (unsigned bit = 0; bit < 256; bit += 11) {
		memcpy(bad, roots[o], MERKLE_HASH_LEN);
		flip(bad, bit);
		cr_assert_not(consistent(o, s, bad, roots[s], (const merkle_hash *)proof, n));
		memcpy(bad, roots[s], MERKLE_HASH_LEN);
		flip(bad, bit);
		cr_assert_not(consistent(o, s, roots[o], bad, (const merkle_hash *)proof, n));
	}
	cr_assert_not(consistent(o, s, roots[s], roots[o], (const merkle_hash *)proof, n));
	cr_assert_not(consistent(o - 1, s, roots[o - 1], roots[s], (const merkle_hash *)proof, n));
	cr_assert_not(consistent(o + 1, s, roots[o + 1], roots[s], (const merkle_hash *)proof, n));
	cr_assert_not(consistent(o, s - 1, roots[o], roots[s - 1], (const merkle_hash *)proof, n),
		      "%llu->%llu: new - 1", (unsigned long long)o, (unsigned long long)s);
	cr_assert_not(consistent(o, s + 1, roots[o], roots[s + 1], (const merkle_hash *)proof, n),
		      "%llu->%llu: new + 1", (unsigned long long)o, (unsigned long long)s);
	cr_assert_not(consistent(o, s, roots[o], roots[s], (const merkle_hash *)proof, n - 1));
	cr_assert_not(consistent(o, s, roots[o], roots[s], (const merkle_hash *)proof + 1, n - 1));
	memcpy(proof[n], roots[s], MERKLE_HASH_LEN);
	cr_assert_not(consistent(o, s, roots[o], roots[s], (const merkle_hash *)proof, n + 1));
}

Test(merkle_properties, every_pair_up_to_40_is_consistent_and_tampering_fails)
{
	struct merkle_frontier f;
	merkle_hash roots[42], proof[MERKLE_MAX_PROOF + 1];
	size_t n;

	build_tree(&f, 41, roots);
	for (uint64_t s = 2; s <= 40; s++) {
		table.limit = s;
		for (uint64_t o = 1; o < s; o++) {
			cr_assert_eq(merkle_consistency_proof(o, s, table_get, &table, proof, &n), 0);
			cr_assert_gt(n, 0);
			cr_assert(consistent(o, s, roots[o], roots[s], (const merkle_hash *)proof, n),
				  "%llu->%llu", (unsigned long long)o, (unsigned long long)s);
			assert_consistency_tamper_fails(o, s, roots, proof, n);
		}
	}
}

/* --- trees too big to build: every leaf the same but one ---------------------------------- */

/*
 * A consistent store of up to 2^64 - 1 leaves: all equal to one hash except
 * leaf @special, so any node is uniform[level] or, over @special, computed
 * along its path in O(level).
 */
struct sparse_tree {
	uint64_t special;
	merkle_hash special_leaf;
	merkle_hash uniform[64];
};

static void sparse_init(struct sparse_tree *t, uint64_t special)
{
	t->special = special;
	merkle_leaf_hash("special", 7, t->special_leaf);
	merkle_leaf_hash("same", 4, t->uniform[0]);
	for (unsigned l = 1; l < 64; l++)
		merkle_node_hash(t->uniform[l - 1], t->uniform[l - 1], t->uniform[l]);
}

static int sparse_get(void *arg, unsigned level, uint64_t index, merkle_hash out)
{
	const struct sparse_tree *t = arg;

	cr_assert_lt(level, 64);
	if (t->special >> level != index) {
		memcpy(out, t->uniform[level], MERKLE_HASH_LEN);
		return 0;
	}
	memcpy(out, t->special_leaf, MERKLE_HASH_LEN);
	for (unsigned l = 0; l < level; l++) {
		if (t->special >> l & 1)
			merkle_node_hash(t->uniform[l], out, out);
		else
			merkle_node_hash(out, t->uniform[l], out);
	}
	return 0;
}

Test(merkle_properties, proofs_in_trees_near_2_pow_64_stay_in_bounds)
{
	static const uint64_t sizes[] = {UINT64_MAX, UINT64_C(1) << 63, (UINT64_C(1) << 63) - 1,
					 (UINT64_C(1) << 40) + 12345};
	merkle_hash proof[MERKLE_MAX_PROOF], root, old_root;
	struct sparse_tree t;
	size_t n;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t s = sizes[i];
		uint64_t picks[] = {0, 1, s / 3, s / 2, s - 2, s - 1};

		for (size_t j = 0; j < sizeof(picks) / sizeof(picks[0]); j++) {
			uint64_t index = picks[j];

			sparse_init(&t, index);
			cr_assert_eq(merkle_root_at(s, sparse_get, &t, root), 0);
			cr_assert_eq(merkle_inclusion_proof(index, s, sparse_get, &t, proof, &n), 0);
			cr_assert_leq(n, MERKLE_MAX_PROOF);
			cr_assert(merkle_verify_inclusion(t.special_leaf, index, s,
							  (const merkle_hash *)proof, n, root),
				  "size %llu index %llu", (unsigned long long)s,
				  (unsigned long long)index);
			cr_assert_not(merkle_verify_inclusion(t.uniform[0], index, s,
							      (const merkle_hash *)proof, n, root));
			if (s == UINT64_MAX || index == 0)
				continue;
			/* Past 2^63 leaves a consistency proof can need 65 hashes. */
			cr_assert_eq(merkle_consistency_proof(index, s, sparse_get, &t, proof, &n), 0);
			cr_assert_eq(merkle_root_at(index, sparse_get, &t, old_root), 0);
			cr_assert(merkle_verify_consistency(index, s, old_root, root,
							    (const merkle_hash *)proof, n),
				  "%llu->%llu", (unsigned long long)index, (unsigned long long)s);
		}
	}
}

Test(merkle_properties, consistency_proof_that_needs_65_hashes_is_refused)
{
	merkle_hash proof[MERKLE_MAX_PROOF];
	struct sparse_tree t;
	size_t n = 7;

	sparse_init(&t, 0);
	cr_assert_eq(merkle_consistency_proof((UINT64_C(1) << 63) + 1, UINT64_MAX, sparse_get, &t,
					      proof, &n), -EOVERFLOW);
	cr_assert_eq(n, 0);
}
