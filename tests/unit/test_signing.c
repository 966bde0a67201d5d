/* Ed25519 ledger keys, signed tree heads and receipts. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "common/json.h"
#include "common/merkle.h"
#include "common/receipt.h"
#include "common/signing.h"
#include "dbward/v1/audit.pb-c.h"

/* --- files --------------------------------------------------------------------- */

static char tmpdir[64];

static void make_tmpdir(void)
{
	strcpy(tmpdir, "/tmp/dbward-signing-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void remove_tmpdir(void)
{
	if (tmpdir[0])
		nftw(tmpdir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void tmp_path(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", tmpdir, name);
}

static char *read_text(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *text = NULL;
	size_t len = 0;

	cr_assert_not_null(fp, "%s: %s", path, strerror(errno));
	cr_assert_eq(getdelim(&text, &len, '\0', fp) > 0, true);
	fclose(fp);
	return text;
}

static void write_private_pem(const char *path, EVP_PKEY *pkey, const char *passphrase)
{
	FILE *fp = fopen(path, "w");

	cr_assert_not_null(fp);
	if (passphrase)
		cr_assert_eq(PEM_write_PKCS8PrivateKey(fp, pkey, EVP_aes_256_cbc(), NULL, 0, NULL,
						       (void *)passphrase), 1);
	else
		cr_assert_eq(PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL, NULL), 1);
	fclose(fp);
}

static void write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	cr_assert_not_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void hex_to(const char *hex, uint8_t *out, size_t len)
{
	cr_assert_eq(strlen(hex), 2 * len);
	for (size_t i = 0; i < len; i++) {
		unsigned v;

		cr_assert_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
}

/* --- RFC 8032 section 7.1, TEST 1 -------------------------------------------------- */

static const char rfc8032_seed[] =
	"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
static const char rfc8032_pub[] =
	"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
static const char rfc8032_sig_empty[] =
	"e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065"
	"224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

/* The RFC 8032 key as a PKCS#8 PEM file in @path. */
static void write_rfc8032_key(const char *path)
{
	uint8_t seed[32];
	EVP_PKEY *pkey;

	hex_to(rfc8032_seed, seed, sizeof(seed));
	pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof(seed));
	cr_assert_not_null(pkey);
	write_private_pem(path, pkey, NULL);
	EVP_PKEY_free(pkey);
}

static struct signing_key *load_rfc8032_key(void)
{
	struct signing_key *k;
	char path[128], err[SIGNING_ERR_LEN];

	tmp_path(path, sizeof(path), "rfc8032.pem");
	write_rfc8032_key(path);
	cr_assert_eq(signing_key_load(path, false, &k, err, sizeof(err)), 0, "%s", err);
	return k;
}

/* --- keys -------------------------------------------------------------------------------- */

TestSuite(signing_key, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(verify_key, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(receipt, .init = make_tmpdir, .fini = remove_tmpdir);
TestSuite(receipt_json, .init = make_tmpdir, .fini = remove_tmpdir);

Test(signing_key, creates_a_0600_key_and_a_0644_public_pem_then_loads_the_same_key)
{
	struct signing_key *k1, *k2;
	struct verify_key *vk;
	char path[128], pub_path[140], err[SIGNING_ERR_LEN];
	uint8_t pub1[SIGNING_PUB_LEN], pub2[SIGNING_PUB_LEN], raw[SIGNING_PUB_LEN];
	struct stat st;
	char *pem, *pub_file, *priv_file;

	tmp_path(path, sizeof(path), "ledger.key");
	snprintf(pub_path, sizeof(pub_path), "%s.pub", path);
	umask(022);
	cr_assert_eq(signing_key_load(path, true, &k1, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600, "key mode %o", st.st_mode & 0777);
	cr_assert_eq(stat(pub_path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0644, "pub mode %o", st.st_mode & 0777);

	cr_assert_eq(signing_key_load(path, false, &k2, err, sizeof(err)), 0, "%s", err);
	signing_public(k1, pub1);
	signing_public(k2, pub2);
	cr_assert(memcmp(pub1, pub2, SIGNING_PUB_LEN) == 0);

	pem = signing_public_pem(k1);
	pub_file = read_text(pub_path);
	cr_assert_str_eq(pem, pub_file);
	cr_assert_not_null(strstr(pem, "-----BEGIN PUBLIC KEY-----"));
	priv_file = read_text(path);
	cr_assert_not_null(strstr(priv_file, "-----BEGIN PRIVATE KEY-----"));
	cr_assert_eq(verify_key_from_pem(pub_file, strlen(pub_file), &vk, err, sizeof(err)), 0);
	verify_key_raw(vk, raw);
	cr_assert(memcmp(raw, pub1, SIGNING_PUB_LEN) == 0);

	verify_key_free(vk);
	free(pem);
	free(pub_file);
	free(priv_file);
	signing_key_free(k1);
	signing_key_free(k2);
}

Test(signing_key, missing_file_without_create_names_the_path)
{
	struct signing_key *k = (struct signing_key *)1;
	char path[128], err[SIGNING_ERR_LEN];

	tmp_path(path, sizeof(path), "absent.key");
	cr_assert_eq(signing_key_load(path, false, &k, err, sizeof(err)), -1);
	cr_assert_null(k);
	cr_assert_not_null(strstr(err, path), "%s", err);
	cr_assert_eq(access(path, F_OK), -1);
}

Test(signing_key, refuses_a_key_that_is_not_ed25519)
{
	struct signing_key *k;
	char path[128], err[SIGNING_ERR_LEN];
	EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	cr_assert_not_null(ec);
	tmp_path(path, sizeof(path), "ec.key");
	write_private_pem(path, ec, NULL);
	EVP_PKEY_free(ec);
	cr_assert_eq(signing_key_load(path, true, &k, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "Ed25519"), "%s", err);
	cr_assert_not_null(strstr(err, "EC"), "%s", err);
}

Test(signing_key, refuses_garbage_and_encrypted_keys_without_prompting)
{
	struct signing_key *k;
	char path[128], err[SIGNING_ERR_LEN];
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

	tmp_path(path, sizeof(path), "garbage.key");
	write_text(path, "not a key\n");
	cr_assert_eq(signing_key_load(path, true, &k, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "not a PEM private key"), "%s", err);

	tmp_path(path, sizeof(path), "encrypted.key");
	write_private_pem(path, ed, "secret");
	EVP_PKEY_free(ed);
	cr_assert_eq(signing_key_load(path, false, &k, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "not a PEM private key"), "%s", err);
}

Test(signing_key, signs_the_rfc8032_test_1_vector)
{
	struct signing_key *k = load_rfc8032_key();
	uint8_t pub[SIGNING_PUB_LEN], want_pub[SIGNING_PUB_LEN];
	uint8_t sig[SIGNING_SIG_LEN], want_sig[SIGNING_SIG_LEN];

	hex_to(rfc8032_pub, want_pub, sizeof(want_pub));
	hex_to(rfc8032_sig_empty, want_sig, sizeof(want_sig));
	signing_public(k, pub);
	cr_assert(memcmp(pub, want_pub, SIGNING_PUB_LEN) == 0);
	cr_assert_eq(signing_sign(k, "", 0, sig), 0);
	cr_assert(memcmp(sig, want_sig, SIGNING_SIG_LEN) == 0);
	signing_key_free(k);
}

Test(signing_key, key_id_is_the_first_8_bytes_of_sha256_of_the_raw_key)
{
	uint8_t pub[SIGNING_PUB_LEN], id[SIGNING_KEY_ID_LEN], want[SIGNING_KEY_ID_LEN];

	hex_to(rfc8032_pub, pub, sizeof(pub));
	signing_key_id(pub, id);
	/* sha256sum of the raw RFC 8032 test 1 public key, first 8 bytes */
	hex_to("21fe31dfa154a261", want, sizeof(want));
	cr_assert(memcmp(id, want, SIGNING_KEY_ID_LEN) == 0);
}

Test(verify_key, pem_and_raw_give_the_same_key_and_check_signatures)
{
	struct signing_key *k = load_rfc8032_key();
	struct verify_key *from_pem, *from_raw;
	uint8_t pub[SIGNING_PUB_LEN], raw[SIGNING_PUB_LEN], sig[SIGNING_SIG_LEN];
	char err[SIGNING_ERR_LEN];
	char *pem = signing_public_pem(k);
	static const char msg[] = "dbward.ledger/v1\n";

	signing_public(k, pub);
	cr_assert_eq(verify_key_from_pem(pem, strlen(pem), &from_pem, err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(verify_key_from_raw(pub, &from_raw), 0);
	verify_key_raw(from_pem, raw);
	cr_assert(memcmp(raw, pub, SIGNING_PUB_LEN) == 0);
	cr_assert_eq(signing_sign(k, msg, sizeof(msg) - 1, sig), 0);
	cr_assert(verify_signature(from_pem, msg, sizeof(msg) - 1, sig));
	cr_assert(verify_signature(from_raw, msg, sizeof(msg) - 1, sig));
	cr_assert_not(verify_signature(from_raw, msg, sizeof(msg) - 2, sig));
	for (unsigned bit = 0; bit < 8 * SIGNING_SIG_LEN; bit++) {
		sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		cr_assert_not(verify_signature(from_raw, msg, sizeof(msg) - 1, sig), "bit %u", bit);
		sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	free(pem);
	verify_key_free(from_pem);
	verify_key_free(from_raw);
	signing_key_free(k);
}

Test(verify_key, refuses_other_key_types_and_garbage)
{
	struct verify_key *vk = (struct verify_key *)1;
	char err[SIGNING_ERR_LEN];
	EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long len;

	cr_assert_eq(PEM_write_bio_PUBKEY(bio, ec), 1);
	len = BIO_get_mem_data(bio, &data);
	cr_assert_eq(verify_key_from_pem(data, (size_t)len, &vk, err, sizeof(err)), -1);
	cr_assert_null(vk);
	cr_assert_not_null(strstr(err, "Ed25519"), "%s", err);
	cr_assert_eq(verify_key_from_pem("junk", 4, &vk, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "not a PEM public key"), "%s", err);
	BIO_free(bio);
	EVP_PKEY_free(ec);
}

Test(tree_head, text_is_the_documented_checkpoint)
{
	merkle_hash root;
	char text[TREE_HEAD_TEXT_MAX];
	size_t len;

	for (unsigned i = 0; i < MERKLE_HASH_LEN; i++)
		root[i] = (uint8_t)i;
	len = tree_head_text(40, root, UINT64_C(1700000000123456789), text);
	cr_assert_str_eq(text, "dbward.ledger/v1\n40\n"
			       "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
			       "1700000000123456789\n");
	cr_assert_eq(len, strlen(text));
	len = tree_head_text(UINT64_MAX, root, UINT64_MAX, text);
	cr_assert_eq(len, strlen(text));
	cr_assert_lt(len, TREE_HEAD_TEXT_MAX);
}

/* --- a real ledger: 40 serialized events, a signed head, a receipt for leaf 16 ------------ */

#define TREE_SIZE 40
#define LEAF 16
#define HEAD_TS UINT64_C(1700000000123456789)

struct ledger {
	merkle_hash nodes[7][TREE_SIZE];
	struct merkle_frontier frontier;
	uint8_t *events[TREE_SIZE];
	size_t event_len[TREE_SIZE];
};

static int ledger_put(void *arg, unsigned level, uint64_t index, const merkle_hash hash)
{
	struct ledger *l = arg;

	memcpy(l->nodes[level][index], hash, MERKLE_HASH_LEN);
	return 0;
}

static int ledger_get(void *arg, unsigned level, uint64_t index, merkle_hash out)
{
	struct ledger *l = arg;

	memcpy(out, l->nodes[level][index], MERKLE_HASH_LEN);
	return 0;
}

static void serialize_event(uint64_t seq, uint8_t **out, size_t *len)
{
	Dbward__V1__Event ev = DBWARD__V1__EVENT__INIT;
	Dbward__V1__Statement st = DBWARD__V1__STATEMENT__INIT;
	char sql[64];

	snprintf(sql, sizeof(sql), "SELECT * FROM orders WHERE id = %llu",
		 (unsigned long long)seq);
	st.sql = sql;
	st.verdict = "allow";
	ev.agent_id = "agent-1";
	ev.epoch = 1;
	ev.seq = seq;
	ev.ts = HEAD_TS - 1000000 * (TREE_SIZE - seq);
	ev.body_case = DBWARD__V1__EVENT__BODY_STATEMENT;
	ev.statement = &st;
	*len = dbward__v1__event__get_packed_size(&ev);
	*out = malloc(*len);
	cr_assert_not_null(*out);
	cr_assert_eq(dbward__v1__event__pack(&ev, *out), *len);
}

static void ledger_build(struct ledger *l)
{
	memset(l, 0, sizeof(*l));
	merkle_frontier_init(&l->frontier);
	for (uint64_t i = 0; i < TREE_SIZE; i++) {
		merkle_hash leaf;

		serialize_event(i + 1, &l->events[i], &l->event_len[i]);
		merkle_leaf_hash(l->events[i], l->event_len[i], leaf);
		cr_assert_eq(merkle_frontier_append(&l->frontier, leaf, ledger_put, l), 0);
	}
}

static void ledger_free(struct ledger *l)
{
	for (size_t i = 0; i < TREE_SIZE; i++)
		free(l->events[i]);
}

/* A valid receipt for @index; @r->event is malloc'd. */
static void make_receipt(struct ledger *l, const struct signing_key *k, uint64_t index,
			 struct receipt *r)
{
	memset(r, 0, sizeof(*r));
	r->event_id = index + 1;
	r->leaf_index = index;
	r->event_len = l->event_len[index];
	r->event = malloc(r->event_len);
	memcpy(r->event, l->events[index], r->event_len);
	r->head.size = TREE_SIZE;
	r->head.ts = HEAD_TS;
	merkle_frontier_root(&l->frontier, r->head.root);
	cr_assert_eq(tree_head_sign(k, &r->head), 0);
	cr_assert_eq(merkle_inclusion_proof(index, TREE_SIZE, ledger_get, l, r->proof,
					    &r->n_proof), 0);
	signing_public(k, r->public_key);
}

static char *receipt_text(const struct receipt *r)
{
	struct jsonbuf jb;
	char *text;

	jsonbuf_init(&jb);
	cr_assert_eq(receipt_to_json(r, &jb), 0);
	text = strndup(jb.data, jb.len);
	jsonbuf_release(&jb);
	return text;
}

static bool verifies(const struct receipt *r, const struct verify_key *trusted)
{
	char err[SIGNING_ERR_LEN];

	return receipt_verify(r, trusted, err, sizeof(err)) == 0;
}

static void flip(uint8_t *buf, unsigned bit)
{
	buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
}

struct fixture {
	struct ledger ledger;
	struct signing_key *key;
	struct verify_key *trusted;
	struct receipt r;
	char *json;
};

static struct fixture *fixture_new(void)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	uint8_t pub[SIGNING_PUB_LEN];

	cr_assert_not_null(fx);
	ledger_build(&fx->ledger);
	fx->key = load_rfc8032_key();
	signing_public(fx->key, pub);
	cr_assert_eq(verify_key_from_raw(pub, &fx->trusted), 0);
	make_receipt(&fx->ledger, fx->key, LEAF, &fx->r);
	fx->json = receipt_text(&fx->r);
	return fx;
}

static void fixture_free(struct fixture *fx)
{
	free(fx->json);
	receipt_release(&fx->r);
	verify_key_free(fx->trusted);
	signing_key_free(fx->key);
	ledger_free(&fx->ledger);
	free(fx);
}

static void parse_ok(const char *json, struct receipt *r)
{
	char err[SIGNING_ERR_LEN];

	cr_assert_eq(receipt_from_json(json, strlen(json), r, err, sizeof(err)), 0, "%s", err);
}

/* --- receipts --------------------------------------------------------------------------- */

Test(receipt, every_receipt_of_a_real_tree_round_trips_and_verifies)
{
	struct fixture *fx = fixture_new();
	char err[SIGNING_ERR_LEN];

	for (uint64_t i = 0; i < TREE_SIZE; i++) {
		struct receipt r, back;
		char *json, *again;

		make_receipt(&fx->ledger, fx->key, i, &r);
		json = receipt_text(&r);
		parse_ok(json, &back);
		cr_assert_eq(receipt_verify(&back, NULL, err, sizeof(err)), 0, "leaf %llu: %s",
			     (unsigned long long)i, err);
		cr_assert_eq(receipt_verify(&back, fx->trusted, err, sizeof(err)), 0, "%s", err);
		cr_assert_eq(back.event_id, i + 1);
		cr_assert_eq(back.event_len, r.event_len);
		cr_assert(memcmp(back.event, r.event, r.event_len) == 0);
		cr_assert(memcmp(&back.head, &r.head, sizeof(r.head)) == 0);
		cr_assert_eq(back.n_proof, r.n_proof);
		again = receipt_text(&back);
		cr_assert_str_eq(again, json);
		free(again);
		free(json);
		receipt_release(&back);
		receipt_release(&r);
	}
	fixture_free(fx);
}

Test(receipt, json_has_the_documented_shape)
{
	struct fixture *fx = fixture_new();
	json_error_t jerr;
	json_t *root = json_loads(fx->json, 0, &jerr), *head;
	const char *root_hex;

	cr_assert_not_null(root, "%s", jerr.text);
	cr_assert_eq(fx->json[strlen(fx->json) - 1], '\n');
	cr_assert_eq(strchr(fx->json, '\n'), fx->json + strlen(fx->json) - 1, "one line");
	cr_assert_eq(json_integer_value(json_object_get(root, "version")), 1);
	cr_assert_eq(json_integer_value(json_object_get(root, "event_id")), LEAF + 1);
	cr_assert_eq(json_integer_value(json_object_get(root, "leaf_index")), LEAF);
	cr_assert(json_is_string(json_object_get(root, "event")));
	cr_assert(json_is_array(json_object_get(root, "proof")));
	cr_assert_eq(json_array_size(json_object_get(root, "proof")), fx->r.n_proof);
	cr_assert_eq(json_string_length(json_object_get(root, "public_key")), 44);
	head = json_object_get(root, "tree_head");
	cr_assert(json_is_object(head));
	cr_assert_eq(json_object_size(head), 5);
	cr_assert_eq(json_integer_value(json_object_get(head, "size")), TREE_SIZE);
	cr_assert_eq((uint64_t)json_integer_value(json_object_get(head, "ts")), HEAD_TS);
	root_hex = json_string_value(json_object_get(head, "root"));
	cr_assert_eq(strlen(root_hex), 64);
	cr_assert_str_eq(json_string_value(json_object_get(head, "key_id")), "21fe31dfa154a261");
	cr_assert_eq(json_string_length(json_object_get(head, "signature")), 88);
	json_decref(root);
	fixture_free(fx);
}

Test(receipt, tree_head_json_writes_fields_at_this_level_without_a_key)
{
	struct fixture *fx = fixture_new();
	struct jsonbuf jb;
	json_t *root;

	jsonbuf_init(&jb);
	jsonbuf_begin(&jb);
	jsonbuf_str(&jb, "kind", "tree_head");
	tree_head_json(&jb, NULL, &fx->r.head);
	tree_head_json(&jb, "again", &fx->r.head);
	jsonbuf_bool(&jb, "last", true);
	cr_assert_eq(jsonbuf_finish(&jb), 0);
	root = json_loadb(jb.data, jb.len, 0, NULL);
	cr_assert_not_null(root, "%.*s", (int)jb.len, jb.data);
	cr_assert_eq(json_object_size(root), 8);
	cr_assert_eq(json_integer_value(json_object_get(root, "size")), TREE_SIZE);
	cr_assert(json_equal(json_object_get(json_object_get(root, "again"), "root"),
			     json_object_get(root, "root")));
	json_decref(root);
	jsonbuf_release(&jb);
	fixture_free(fx);
}

Test(receipt, any_flipped_bit_of_event_proof_root_or_signature_fails)
{
	struct fixture *fx = fixture_new();
	struct receipt r;

	parse_ok(fx->json, &r);
	cr_assert(verifies(&r, NULL));
	for (unsigned bit = 0; bit < 8 * r.event_len; bit++) {
		flip(r.event, bit);
		cr_assert_not(verifies(&r, NULL), "event bit %u", bit);
		flip(r.event, bit);
	}
	for (size_t i = 0; i < r.n_proof; i++) {
		for (unsigned bit = 0; bit < 8 * MERKLE_HASH_LEN; bit++) {
			flip(r.proof[i], bit);
			cr_assert_not(verifies(&r, fx->trusted), "proof[%zu] bit %u", i, bit);
			flip(r.proof[i], bit);
		}
	}
	for (unsigned bit = 0; bit < 8 * MERKLE_HASH_LEN; bit++) {
		flip(r.head.root, bit);
		cr_assert_not(verifies(&r, fx->trusted), "root bit %u", bit);
		flip(r.head.root, bit);
	}
	for (unsigned bit = 0; bit < 8 * SIGNING_SIG_LEN; bit++) {
		flip(r.head.signature, bit);
		cr_assert_not(verifies(&r, NULL), "signature bit %u", bit);
		flip(r.head.signature, bit);
	}
	for (unsigned bit = 0; bit < 64; bit++) {
		r.head.ts ^= UINT64_C(1) << bit;
		cr_assert_not(verifies(&r, NULL), "ts bit %u", bit);
		r.head.ts ^= UINT64_C(1) << bit;
	}
	cr_assert(verifies(&r, fx->trusted));
	receipt_release(&r);
	fixture_free(fx);
}

Test(receipt, another_leaf_index_or_tree_size_fails)
{
	struct fixture *fx = fixture_new();
	struct receipt r;
	char err[SIGNING_ERR_LEN];

	parse_ok(fx->json, &r);
	for (uint64_t i = 0; i <= TREE_SIZE + 1; i++) {
		if (i == LEAF)
			continue;
		r.leaf_index = i;
		cr_assert_not(verifies(&r, NULL), "leaf_index %llu", (unsigned long long)i);
	}
	r.leaf_index = UINT64_MAX;
	cr_assert_not(verifies(&r, NULL));
	r.leaf_index = LEAF;
	for (uint64_t size = 0; size <= 2 * TREE_SIZE; size++) {
		if (size == TREE_SIZE)
			continue;
		r.head.size = size;
		cr_assert_not(verifies(&r, NULL), "size %llu", (unsigned long long)size);
	}
	r.head.size = TREE_SIZE;
	cr_assert_eq(receipt_verify(&r, NULL, err, sizeof(err)), 0, "%s", err);
	r.head.size = TREE_SIZE + 1;
	cr_assert_eq(receipt_verify(&r, NULL, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "signature"), "%s", err);
	receipt_release(&r);
	fixture_free(fx);
}

Test(receipt, a_key_other_than_the_trusted_one_is_refused)
{
	struct fixture *fx = fixture_new();
	struct signing_key *other;
	struct verify_key *other_vk;
	struct receipt r;
	uint8_t pub[SIGNING_PUB_LEN];
	char path[128], err[SIGNING_ERR_LEN];

	tmp_path(path, sizeof(path), "other.key");
	cr_assert_eq(signing_key_load(path, true, &other, err, sizeof(err)), 0, "%s", err);
	signing_public(other, pub);
	cr_assert_eq(verify_key_from_raw(pub, &other_vk), 0);
	parse_ok(fx->json, &r);

	cr_assert_eq(receipt_verify(&r, other_vk, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "signed by a different key"), "%s", err);
	cr_assert_not(tree_head_verify(other_vk, &r.head));
	cr_assert(tree_head_verify(fx->trusted, &r.head));

	/* Re-signed by the other key, it is self-consistent but not trusted. */
	cr_assert_eq(tree_head_sign(other, &r.head), 0);
	memcpy(r.public_key, pub, SIGNING_PUB_LEN);
	cr_assert_eq(receipt_verify(&r, NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(receipt_verify(&r, fx->trusted, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "signed by a different key"), "%s", err);

	/* A key id that does not name the key fails, even with a good signature. */
	receipt_release(&r);
	parse_ok(fx->json, &r);
	r.head.key_id[0] ^= 1;
	cr_assert_eq(receipt_verify(&r, NULL, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "key_id"), "%s", err);
	cr_assert_not(tree_head_verify(fx->trusted, &r.head));

	receipt_release(&r);
	verify_key_free(other_vk);
	signing_key_free(other);
	fixture_free(fx);
}

static bool edit_fails(const char *text, size_t len)
{
	struct receipt r;
	char err[SIGNING_ERR_LEN];
	bool failed;

	if (receipt_from_json(text, len, &r, err, sizeof(err)))
		return true;
	failed = receipt_verify(&r, NULL, err, sizeof(err)) != 0;
	receipt_release(&r);
	return failed;
}

Test(receipt, every_one_character_edit_of_the_json_fails)
{
	struct fixture *fx = fixture_new();
	size_t len = strlen(fx->json);
	char *edit = malloc(len + 1);
	unsigned tried = 0;

	cr_assert(!edit_fails(fx->json, len));
	for (size_t pos = 0; pos + 1 < len; pos++) {	/* the final '\n' is not content */
		char orig = fx->json[pos];
		const char subs[] = {(char)(orig ^ 1), (char)(orig ^ 0x20), '0', 'A', ' '};

		for (size_t s = 0; s < sizeof(subs); s++) {
			if (subs[s] == orig)
				continue;
			memcpy(edit, fx->json, len + 1);
			edit[pos] = subs[s];
			cr_assert(edit_fails(edit, len), "replacing '%c' at %zu by '%c' passed: %s",
				  orig, pos, subs[s], edit);
			tried++;
		}
		/* deleting it */
		memcpy(edit, fx->json, pos);
		memcpy(edit + pos, fx->json + pos + 1, len - pos);
		cr_assert(edit_fails(edit, len - 1), "deleting '%c' at %zu passed", orig, pos);
		tried++;
	}
	cr_assert_gt(tried, 3000);
	free(edit);
	fixture_free(fx);
}

/* --- strict parsing --------------------------------------------------------------------------- */

/* The fixture's receipt as a jansson object, for a test to break. */
static json_t *good_object(const struct fixture *fx)
{
	json_t *root = json_loads(fx->json, 0, NULL);

	cr_assert_not_null(root);
	return root;
}

static void assert_refused(json_t *root, const char *field)
{
	char *text = json_dumps(root, JSON_COMPACT);
	struct receipt r;
	char err[SIGNING_ERR_LEN] = "";

	cr_assert_not_null(text);
	cr_assert_eq(receipt_from_json(text, strlen(text), &r, err, sizeof(err)), -1,
		     "accepted (want an error on %s): %s", field, text);
	cr_assert_eq(strncmp(err, field, strlen(field)), 0, "error '%s' does not name '%s'", err,
		     field);
	cr_assert_null(r.event);
	free(text);
	json_decref(root);
}

static void with_field(const struct fixture *fx, const char *path, json_t *value,
		       const char *field)
{
	json_t *root = good_object(fx);
	json_t *obj = root;
	const char *dot = strchr(path, '.');

	if (dot) {
		char parent[32];

		snprintf(parent, sizeof(parent), "%.*s", (int)(dot - path), path);
		obj = json_object_get(root, parent);
		path = dot + 1;
	}
	if (value)
		json_object_set_new(obj, path, value);
	else
		json_object_del(obj, path);
	assert_refused(root, field);
}

static json_t *hex_string(size_t bytes, char digit)
{
	char buf[256];

	memset(buf, digit, 2 * bytes);
	buf[2 * bytes] = '\0';
	return json_string(buf);
}

static json_t *b64_string(size_t bytes)
{
	uint8_t raw[128] = {0};
	char buf[256];

	EVP_EncodeBlock((unsigned char *)buf, raw, (int)bytes);
	return json_string(buf);
}

Test(receipt_json, wrong_types_and_values_are_refused_naming_the_field)
{
	struct fixture *fx = fixture_new();

	with_field(fx, "version", json_string("1"), "version");
	with_field(fx, "version", json_integer(2), "version");
	with_field(fx, "version", NULL, "version");
	with_field(fx, "event_id", json_integer(-1), "event_id");
	with_field(fx, "event_id", json_string("17"), "event_id");
	with_field(fx, "leaf_index", json_real(16.0), "leaf_index");
	with_field(fx, "leaf_index", json_null(), "leaf_index");
	with_field(fx, "event", json_integer(5), "event");
	with_field(fx, "event", json_string("abc"), "event");
	with_field(fx, "event", json_string("QQ"), "event");
	with_field(fx, "event", json_string("QR=="), "event");	/* non-canonical bits */
	with_field(fx, "event", json_string("QQ==\n"), "event");
	with_field(fx, "event", json_string("Q*=="), "event");
	with_field(fx, "event", NULL, "event");
	with_field(fx, "tree_head", json_array(), "tree_head");
	with_field(fx, "tree_head", NULL, "tree_head");
	with_field(fx, "tree_head.size", json_string("40"), "tree_head.size");
	with_field(fx, "tree_head.size", NULL, "tree_head.size");
	with_field(fx, "tree_head.root", hex_string(31, 'a'), "tree_head.root");
	with_field(fx, "tree_head.root", hex_string(32, 'A'), "tree_head.root");
	with_field(fx, "tree_head.root", hex_string(32, 'g'), "tree_head.root");
	with_field(fx, "tree_head.ts", json_null(), "tree_head.ts");
	with_field(fx, "tree_head.key_id", hex_string(7, '0'), "tree_head.key_id");
	with_field(fx, "tree_head.key_id", json_true(), "tree_head.key_id");
	with_field(fx, "tree_head.signature", b64_string(63), "tree_head.signature");
	with_field(fx, "tree_head.signature", b64_string(66), "tree_head.signature");
	with_field(fx, "tree_head.signature", hex_string(64, '0'), "tree_head.signature");
	with_field(fx, "tree_head.extra", json_integer(1), "tree_head.extra");
	with_field(fx, "proof", json_object(), "proof");
	with_field(fx, "proof", NULL, "proof");
	with_field(fx, "public_key", b64_string(31), "public_key");
	with_field(fx, "public_key", b64_string(33), "public_key");
	with_field(fx, "public_key", NULL, "public_key");
	with_field(fx, "comment", json_string("hi"), "comment");
	fixture_free(fx);
}

Test(receipt_json, bad_proof_entries_and_long_proofs_are_refused)
{
	struct fixture *fx = fixture_new();
	json_t *root, *proof;

	root = good_object(fx);
	json_array_set_new(json_object_get(root, "proof"), 2, hex_string(31, 'b'));
	assert_refused(root, "proof[2]");
	root = good_object(fx);
	json_array_set_new(json_object_get(root, "proof"), 0, json_integer(5));
	assert_refused(root, "proof[0]");

	root = good_object(fx);
	proof = json_array();
	for (int i = 0; i < MERKLE_MAX_PROOF + 1; i++)
		json_array_append_new(proof, hex_string(32, 'c'));
	json_object_set_new(root, "proof", proof);
	assert_refused(root, "proof");
	fixture_free(fx);
}

Test(receipt_json, text_that_is_not_one_receipt_object_is_refused)
{
	struct fixture *fx = fixture_new();
	static const char *const bad[] = {
		"", "[]", "null", "not json", "{\"version\":1,\"version\":1}",
	};
	struct receipt r;
	char err[SIGNING_ERR_LEN];
	size_t len = strlen(fx->json);
	char *twice = malloc(2 * len + 1);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(receipt_from_json(bad[i], strlen(bad[i]), &r, err, sizeof(err)), -1,
			     "accepted %s", bad[i]);
		cr_assert_eq(strncmp(err, "receipt", 7), 0, "%s", err);
	}
	memcpy(twice, fx->json, len);
	memcpy(twice + len, fx->json, len + 1);
	cr_assert_eq(receipt_from_json(twice, 2 * len, &r, err, sizeof(err)), -1);
	/* A NUL inside the text is not the end of it. */
	cr_assert_eq(receipt_from_json(fx->json, len + 1, &r, err, sizeof(err)), -1);
	free(twice);
	fixture_free(fx);
}
