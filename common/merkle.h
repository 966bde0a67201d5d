/*
 * RFC 6962 Merkle trees (Certificate Transparency hashing), as the ledger
 * uses them. Leaf hash SHA-256(0x00 || data); interior node
 * SHA-256(0x01 || left || right); the empty tree's root SHA-256("").
 *
 * Node addresses: (level, index) is the root of the perfect subtree over
 * leaves [index << level, (index + 1) << level). Level 0 are leaf hashes.
 * A store keeps perfect subtrees' hashes as they complete (the collector:
 * those of 16 leaves and more, plus every leaf hash); from those, any root
 * and any inclusion or consistency proof of any tree size up to the
 * current one is O(log n) lookups.
 */
#ifndef DBWARD_COMMON_MERKLE_H
#define DBWARD_COMMON_MERKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MERKLE_HASH_LEN 32
#define MERKLE_MAX_PROOF 64	/* hashes in any proof of a 2^64-leaf tree */

typedef uint8_t merkle_hash[MERKLE_HASH_LEN];

void merkle_leaf_hash(const void *data, size_t len, merkle_hash out);
void merkle_node_hash(const merkle_hash left, const merkle_hash right, merkle_hash out);
void merkle_empty_root(merkle_hash out);
/* The root of the perfect subtree over @n (a power of two) hashes of one
 * level, left to right; @h is overwritten. */
void merkle_subtree_fold(merkle_hash *h, size_t n, merkle_hash out);

/*
 * The right edge of a growing tree: the roots of its perfect subtrees,
 * largest first (one per set bit of size). Enough to append and to give
 * the root; persisted by the ledger so appends never read old nodes.
 */
struct merkle_frontier {
	uint64_t size;
	unsigned n;			/* popcount(size) */
	merkle_hash hashes[64];		/* hashes[0]: the largest subtree */
};

void merkle_frontier_init(struct merkle_frontier *f);

/* Told about each perfect subtree an append completes, leaf included. */
typedef int merkle_node_fn(void *arg, unsigned level, uint64_t index, const merkle_hash hash);

/* Appends a leaf hash. @on_node (may be NULL) is called for (0, size) and
 * for every subtree it completes, lowest first; its error stops the append
 * (the frontier is then unchanged) and is returned. */
int merkle_frontier_append(struct merkle_frontier *f, const merkle_hash leaf,
			   merkle_node_fn *on_node, void *arg);
void merkle_frontier_root(const struct merkle_frontier *f, merkle_hash out);

/* Reads a stored perfect-subtree hash: 0, or a negative errno. */
typedef int merkle_get_fn(void *arg, unsigned level, uint64_t index, merkle_hash out);

/* Root of the first @size leaves: 0 or the getter's error. */
int merkle_root_at(uint64_t size, merkle_get_fn *get, void *arg, merkle_hash out);

/* RFC 6962 2.1.1 PATH(index, D[0:size]): *n hashes, leaf side first.
 * 0, -EINVAL (index >= size) or the getter's error. */
int merkle_inclusion_proof(uint64_t index, uint64_t size, merkle_get_fn *get, void *arg,
			   merkle_hash proof[MERKLE_MAX_PROOF], size_t *n);
bool merkle_verify_inclusion(const merkle_hash leaf, uint64_t index, uint64_t size,
			     const merkle_hash *proof, size_t n, const merkle_hash root);

/* RFC 6962 2.1.2 PROOF(old_size, D[0:new_size]), and its check. */
int merkle_consistency_proof(uint64_t old_size, uint64_t new_size, merkle_get_fn *get,
			     void *arg, merkle_hash proof[MERKLE_MAX_PROOF], size_t *n);
bool merkle_verify_consistency(uint64_t old_size, uint64_t new_size, const merkle_hash old_root,
			       const merkle_hash new_root, const merkle_hash *proof, size_t n);

#endif
