/*
 * The dbward CLI, without a network: the CA it makes, the query strings it
 * sends, the tables it prints, and its checks of what a collector answers.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "cli/ca.h"
#include "cli/events.h"
#include "cli/http_client.h"
#include "cli/table.h"
#include "cli/verify.h"
#include "common/json.h"
#include "common/merkle.h"
#include "common/receipt.h"
#include "common/signing.h"
#include "dbward/v1/audit.pb-c.h"

/* --- a scratch directory per test ------------------------------------------ */

static char scratch[256];

static void scratch_up(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(scratch, sizeof(scratch), "%s/dbward-cli-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	cr_assert_not_null(mkdtemp(scratch));
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[512];
	struct stat st;

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
			remove_tree(path);
		else
			unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

static void scratch_down(void)
{
	remove_tree(scratch);
}

static const char *in_scratch(const char *name)
{
	static char bufs[4][512];
	static unsigned next;
	char *buf = bufs[next++ % 4];

	snprintf(buf, 512, "%s/%s", scratch, name);
	return buf;
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *cert;

	cr_assert_not_null(f, "cannot open %s", path);
	cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(cert, "%s is no PEM certificate", path);
	return cert;
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "%s missing", path);
	return st.st_mode & 07777;
}

/* --- ca ---------------------------------------------------------------------- */

TestSuite(cli_ca, .init = scratch_up, .fini = scratch_down, .timeout = 30);

static void init_and_issue(const char *name, const struct cli_ca_sans *sans)
{
	char err[CLI_ERR_LEN];

	cr_assert_eq(cli_ca_init(in_scratch("pki"), err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cli_ca_issue(in_scratch("pki"), name, sans, err, sizeof(err)), 0, "%s",
		     err);
}

static int chain_verifies(X509 *ca, X509 *leaf, int purpose)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int ok;

	cr_assert(store && ctx && X509_STORE_add_cert(store, ca));
	cr_assert(X509_STORE_CTX_init(ctx, store, leaf, NULL));
	X509_STORE_CTX_set_purpose(ctx, purpose);
	ok = X509_verify_cert(ctx);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return ok;
}

Test(cli_ca, init_and_issue_make_a_chain_that_verifies_for_server_and_client)
{
	X509 *ca, *leaf;

	init_and_issue("collector", NULL);
	ca = read_cert(in_scratch("pki/ca.crt"));
	leaf = read_cert(in_scratch("pki/collector.crt"));
	cr_assert_eq(chain_verifies(ca, leaf, X509_PURPOSE_SSL_SERVER), 1);
	cr_assert_eq(chain_verifies(ca, leaf, X509_PURPOSE_SSL_CLIENT), 1);
	cr_assert_eq(X509_check_ca(ca), 1, "ca.crt is not a CA");
	cr_assert_eq(X509_check_ca(leaf), 0, "the leaf must not be a CA");
	X509_free(ca);
	X509_free(leaf);
}

Test(cli_ca, leaf_has_its_name_as_cn_and_the_default_and_given_sans)
{
	static const char *const ips[] = { "10.1.2.3", "127.0.0.1" };
	static const char *const dns[] = { "Collector.Example.COM" };
	struct cli_ca_sans sans = { ips, 2, dns, 1 };
	char cn[128];
	X509 *leaf;

	init_and_issue("collector", &sans);
	leaf = read_cert(in_scratch("pki/collector.crt"));
	cr_assert_gt(X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn,
					       sizeof(cn)), 0);
	cr_assert_str_eq(cn, "collector");
	cr_assert_eq(X509_check_ip_asc(leaf, "127.0.0.1", 0), 1);
	cr_assert_eq(X509_check_ip_asc(leaf, "::1", 0), 1);
	cr_assert_eq(X509_check_ip_asc(leaf, "10.1.2.3", 0), 1);
	cr_assert_eq(X509_check_host(leaf, "localhost", 0, 0, NULL), 1);
	cr_assert_eq(X509_check_host(leaf, "collector.example.com", 0, 0, NULL), 1);
	cr_assert_eq(X509_check_ip_asc(leaf, "10.9.9.9", 0), 0);
	{
		GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);

		cr_assert_eq(sk_GENERAL_NAME_num(gens), 5, "127.0.0.1 given again is not repeated");
		GENERAL_NAMES_free(gens);
	}
	X509_free(leaf);
}

Test(cli_ca, keys_are_0600_and_certificates_0644)
{
	mode_t old = umask(077);

	init_and_issue("agent-1", NULL);
	umask(old);
	cr_assert_eq(mode_of(in_scratch("pki")), 0700);
	cr_assert_eq(mode_of(in_scratch("pki/ca.key")), 0600);
	cr_assert_eq(mode_of(in_scratch("pki/agent-1.key")), 0600);
	cr_assert_eq(mode_of(in_scratch("pki/ca.crt")), 0644);
	cr_assert_eq(mode_of(in_scratch("pki/agent-1.crt")), 0644);
}

Test(cli_ca, a_second_init_into_the_same_dir_is_refused_and_changes_nothing)
{
	char err[CLI_ERR_LEN];
	X509 *before, *after;

	init_and_issue("agent-1", NULL);
	before = read_cert(in_scratch("pki/ca.crt"));
	cr_assert_eq(cli_ca_init(in_scratch("pki"), err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "already exists"), "%s", err);
	after = read_cert(in_scratch("pki/ca.crt"));
	cr_assert_eq(X509_cmp(before, after), 0);
	X509_free(before);
	X509_free(after);
}

Test(cli_ca, issuing_a_name_twice_is_refused)
{
	char err[CLI_ERR_LEN];

	init_and_issue("agent-1", NULL);
	cr_assert_eq(cli_ca_issue(in_scratch("pki"), "agent-1", NULL, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "agent-1.key already exists"), "%s", err);
}

Test(cli_ca, names_that_are_not_plain_file_stems_are_refused)
{
	static const char *const bad[] = { "", "a/b", "..", ".hidden", "-x", "ca", "a b",
					   "x\n" };
	char err[CLI_ERR_LEN];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(cli_ca_check_name(bad[i], err, sizeof(err)), -1, "'%s'", bad[i]);
	cr_assert_eq(cli_ca_check_name("agent-7.prod_eu", err, sizeof(err)), 0);
}

Test(cli_ca, a_bad_ip_or_dns_name_is_refused_and_writes_nothing)
{
	static const char *const ip[] = { "300.1.1.1" };
	static const char *const dns[] = { "a,DNS:evil.com" };
	struct cli_ca_sans bad_ip = { ip, 1, NULL, 0 }, bad_dns = { NULL, 0, dns, 1 };
	char err[CLI_ERR_LEN];

	cr_assert_eq(cli_ca_init(in_scratch("pki"), err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(cli_ca_issue(in_scratch("pki"), "x", &bad_ip, err, sizeof(err)), -1);
	cr_assert_eq(cli_ca_issue(in_scratch("pki"), "x", &bad_dns, err, sizeof(err)), -1);
	cr_assert_neq(access(in_scratch("pki/x.key"), F_OK), 0);
	cr_assert_neq(access(in_scratch("pki/x.crt"), F_OK), 0);
}

Test(cli_ca, issuing_without_a_ca_says_to_run_init)
{
	char err[CLI_ERR_LEN];

	cr_assert_eq(cli_ca_issue(in_scratch("none"), "x", NULL, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "dbward ca init"), "%s", err);
}

/* --- query strings ----------------------------------------------------------- */

Test(cli_query, values_are_url_escaped_and_flags_map_to_api_names)
{
	struct cli_query q = { 0 };
	char *s;

	q.values[CLI_FILTER_AGENT] = "a b&c=d/é+";
	q.values[CLI_FILTER_DB_USER] = "app";
	q.values[CLI_FILTER_SEARCH] = "id = 1; --";
	q.values[CLI_FILTER_SINCE] = "2026-01-01T00:00:00+01:00";
	s = cli_query_string(&q, 0, 100);
	cr_assert_not_null(s);
	cr_assert_str_eq(s, "since=2026-01-01T00%3A00%3A00%2B01%3A00&agent=a%20b%26c%3Dd%2F%C3%A9%2B"
			    "&db_user=app&q=id%20%3D%201%3B%20--&limit=100");
	free(s);
}

Test(cli_query, after_is_sent_only_when_paging)
{
	struct cli_query q = { 0 };
	char *first = cli_query_string(&q, 0, 5), *next = cli_query_string(&q, 42, 10000);

	cr_assert_str_eq(first, "limit=5");
	cr_assert_str_eq(next, "after=42&limit=10000");
	free(first);
	free(next);
}

Test(cli_query, verdict_pid_and_limit_are_checked)
{
	char err[CLI_ERR_LEN];
	uint64_t limit;

	cr_assert_eq(cli_filter_check(CLI_FILTER_VERDICT, "deny", err, sizeof(err)), 0);
	cr_assert_eq(cli_filter_check(CLI_FILTER_VERDICT, "maybe", err, sizeof(err)), -1);
	cr_assert_eq(cli_filter_check(CLI_FILTER_PID, "4242", err, sizeof(err)), 0);
	cr_assert_eq(cli_filter_check(CLI_FILTER_PID, "-1", err, sizeof(err)), -1);
	cr_assert_eq(cli_filter_check(CLI_FILTER_PID, "12x", err, sizeof(err)), -1);
	cr_assert_eq(cli_filter_check(CLI_FILTER_PID, "99999999999", err, sizeof(err)), -1);
	cr_assert_eq(cli_filter_check(CLI_FILTER_COMM, "anything at all", err, sizeof(err)), 0);
	cr_assert_eq(cli_limit_parse("250", &limit, err, sizeof(err)), 0);
	cr_assert_eq(limit, 250);
	cr_assert_eq(cli_limit_parse("0", &limit, err, sizeof(err)), -1);
	cr_assert_eq(cli_limit_parse("-3", &limit, err, sizeof(err)), -1);
	cr_assert_eq(cli_limit_parse("", &limit, err, sizeof(err)), -1);
}

/* --- text and tables ----------------------------------------------------------- */

Test(cli_table, newlines_and_blank_runs_become_one_space)
{
	char out[128];

	cr_assert_eq(cli_text_fit("  SELECT *\n\t FROM t\r\n", 80, out, sizeof(out)), 15);
	cr_assert_str_eq(out, "SELECT * FROM t");
}

Test(cli_table, terminal_escapes_and_bidi_overrides_are_blanked)
{
	char out[128];

	cli_text_fit("a\x1b[2Jb\xc2\x9b" "c\xe2\x80\xae" "d\x7f" "e", 80, out, sizeof(out));
	cr_assert_str_eq(out, "a [2Jb c d e");
}

Test(cli_table, long_text_is_cut_with_an_ellipsis_at_the_width)
{
	char out[128];

	cr_assert_eq(cli_text_fit("abcdefghijklmnop", 10, out, sizeof(out)), 10);
	cr_assert_str_eq(out, "abcdefg...");
	cr_assert_eq(cli_text_fit("abcdefghij", 10, out, sizeof(out)), 10);
	cr_assert_str_eq(out, "abcdefghij");
}

Test(cli_table, a_cut_never_splits_a_utf8_character)
{
	char out[128];

	/* Eight two-byte characters, cut to six columns: three of them and "...". */
	cr_assert_eq(cli_text_fit("éééééééé", 6, out, sizeof(out)), 6);
	cr_assert_str_eq(out, "ééé...");
	cli_text_fit("ab\xff\xfe" "cd", 80, out, sizeof(out));
	cr_assert_str_eq(out, "ab??cd");
}

static char *print_table(const struct cli_table *t, size_t width)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	cr_assert_not_null(f);
	cr_assert_eq(cli_table_print(t, f, width), 0);
	fclose(f);
	return buf;
}

static size_t line_count(const char *text, size_t max_width)
{
	size_t n = 0;

	for (const char *line = text; *line; n++) {
		const char *nl = strchr(line, '\n');

		cr_assert_not_null(nl);
		cr_assert_leq((size_t)(nl - line), max_width, "line %zu is %zu wide", n,
			      (size_t)(nl - line));
		line = nl + 1;
	}
	return n;
}

static json_t *sample_event(void)
{
	return json_pack("{s:i, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:i, s:s}",
			 "id", 17, "ts", "2026-11-23T21:40:00.123456Z", "agent_id", "agent-1",
			 "kind", "statement", "pid", 4242, "comm", "psql", "user", "alice",
			 "db_user", "app", "database", "shop", "verdict", "deny", "rows", 3, "sql",
			 "SELECT *\n  FROM orders\n WHERE note = 'a very long literal that will "
			 "not fit in the terminal at all, not even close'");
}

Test(cli_table, on_a_terminal_every_event_line_fits_its_width)
{
	struct cli_table *t = cli_events_table_new();
	json_t *ev = sample_event();
	char *text;

	cr_assert_eq(cli_events_table_add(t, ev), 0);
	text = print_table(t, 120);
	cr_assert_eq(line_count(text, 120), 2);
	cr_assert_not_null(strstr(text, "2026-11-23T21:40:00Z"), "%s", text);
	cr_assert_not_null(strstr(text, "app@shop"));
	cr_assert_not_null(strstr(text, "SELECT * FROM order"), "%s", text);
	cr_assert_not_null(strstr(text, "...\n"));
	free(text);
	json_decref(ev);
	cli_table_free(t);
}

Test(cli_table, off_a_terminal_the_sql_is_cut_at_80)
{
	struct cli_table *t = cli_events_table_new();
	json_t *ev = sample_event();
	char *text, *sql;

	cr_assert_eq(cli_events_table_add(t, ev), 0);
	text = print_table(t, 0);
	sql = strstr(text, "SELECT");
	cr_assert_not_null(sql);
	cr_assert_eq(strcspn(sql, "\n"), CLI_TABLE_LAST_PLAIN);
	free(text);
	json_decref(ev);
	cli_table_free(t);
}

Test(cli_table, columns_line_up_and_missing_fields_show_a_dash)
{
	static const struct cli_column cols[] = { { "id", 20, true }, { "name", 8, false },
						  { "note", 0, false } };
	const char *r1[] = { "7", "alice", "hi" }, *r2[] = { "1234", NULL, "x" };
	struct cli_table *t = cli_table_new(cols, 3);
	char *text;

	cr_assert_eq(cli_table_add(t, r1), 0);
	cr_assert_eq(cli_table_add(t, r2), 0);
	text = print_table(t, 80);
	cr_assert_str_eq(text, "  id  name   note\n"
			       "   7  alice  hi\n"
			       "1234  -      x\n");
	free(text);
	cli_table_free(t);
}

Test(cli_table, times_lose_their_fraction)
{
	char out[64];

	cli_time_short("2026-11-23T21:40:00.123456Z", out, sizeof(out));
	cr_assert_str_eq(out, "2026-11-23T21:40:00Z");
	cli_time_short("2026-11-23T21:40:00Z", out, sizeof(out));
	cr_assert_str_eq(out, "2026-11-23T21:40:00Z");
}

/* --- answers of the collector -------------------------------------------------- */

Test(cli_verify, a_problem_says_where)
{
	json_t *p = json_pack("{s:i, s:s, s:i, s:i, s:s}", "event_id", 12, "agent_id", "agent-1",
			      "epoch", 3, "seq", 9, "what", "hash does not match");
	json_t *q = json_pack("{s:n, s:s, s:s}", "event_id", "agent_id", "a", "what", "gap");
	char line[256];

	cli_problem_line(p, line, sizeof(line));
	cr_assert_str_eq(line, "event 12 (agent agent-1, epoch 3, seq 9): hash does not match");
	cli_problem_line(q, line, sizeof(line));
	cr_assert_str_eq(line, "event ? (agent a, epoch ?, seq ?): gap");
	json_decref(p);
	json_decref(q);
}

Test(cli_verify, an_http_error_shows_the_api_error_text)
{
	char body[] = "{\"error\": \"no event 99\"}", html[] = "<html>\n<b>bad</b>";
	struct cli_http_response r = { .status = 404, .body = body, .len = sizeof(body) - 1 };
	char err[CLI_ERR_LEN];

	cli_http_status_error(&r, err, sizeof(err));
	cr_assert_str_eq(err, "collector answered HTTP 404: no event 99");
	r = (struct cli_http_response){ .status = 502, .body = html, .len = sizeof(html) - 1 };
	cli_http_status_error(&r, err, sizeof(err));
	cr_assert_str_eq(err, "collector answered HTTP 502: <html>");
}

Test(cli_verify, an_unreachable_collector_is_named)
{
	struct cli_http_response r;
	char err[CLI_ERR_LEN];

	cr_assert_eq(cli_http_init(), 0);
	cr_assert_eq(cli_http_get("http://127.0.0.1:1/", "/api/v1/verify", &r, err, sizeof(err)),
		     -1);
	cr_assert_not_null(strstr(err, "cannot reach the collector at http://127.0.0.1:1/: "),
			   "%s", err);
	cr_assert_eq(cli_http_get("ftp://x", "/api/v1/verify", &r, err, sizeof(err)), -1);
	cli_http_cleanup();
}

/* A one-event ledger: its receipt (no proof: the leaf is the root). */
struct ledger {
	struct signing_key *key;
	struct receipt receipt;
	uint8_t event[256];
};

static void ledger_make(struct ledger *l)
{
	Dbward__V1__Event ev = DBWARD__V1__EVENT__INIT;
	char err[SIGNING_ERR_LEN];

	ev.agent_id = "agent-1";
	ev.epoch = 1;
	ev.seq = 1;
	ev.ts = 1795000000000000000ULL;
	memset(&l->receipt, 0, sizeof(l->receipt));
	cr_assert_eq(signing_key_load(in_scratch("ledger.key"), true, &l->key, err, sizeof(err)),
		     0, "%s", err);
	l->receipt.event = l->event;
	l->receipt.event_len = dbward__v1__event__pack(&ev, l->event);
	l->receipt.event_id = 1;		/* ids are leaf_index + 1 */
	l->receipt.head.size = 1;
	l->receipt.head.ts = 1795000000123456789ULL;
	merkle_leaf_hash(l->event, l->receipt.event_len, l->receipt.head.root);
	cr_assert_eq(tree_head_sign(l->key, &l->receipt.head), 0);
	signing_public(l->key, l->receipt.public_key);
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

TestSuite(cli_receipt, .init = scratch_up, .fini = scratch_down, .timeout = 30);

Test(cli_receipt, a_valid_receipt_checks_and_says_what_it_proves)
{
	struct ledger l;
	struct receipt r;
	char *text, err[CLI_ERR_LEN], line[CLI_ERR_LEN];

	ledger_make(&l);
	text = receipt_text(&l.receipt);
	cr_assert_eq(cli_receipt_check(text, strlen(text), NULL, &r, err, sizeof(err)), 0, "%s",
		     err);
	cli_receipt_summary(&r, line, sizeof(line));
	cr_assert(strncmp(line, "receipt valid: event 1 is leaf 0 of a tree of size 1 signed at "
				"2026-", 66) == 0, "%s", line);
	receipt_release(&r);
	free(text);
	signing_key_free(l.key);
}

Test(cli_receipt, a_receipt_whose_event_was_changed_is_invalid)
{
	struct ledger l;
	struct receipt r;
	char *text, err[CLI_ERR_LEN];

	ledger_make(&l);
	l.event[l.receipt.event_len - 1] ^= 1;
	text = receipt_text(&l.receipt);
	cr_assert_eq(cli_receipt_check(text, strlen(text), NULL, &r, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "inclusion proof"), "%s", err);
	receipt_release(&r);
	free(text);
	signing_key_free(l.key);
}

Test(cli_receipt, the_tree_head_parses_and_a_bad_field_is_named)
{
	json_t *obj = json_pack("{s:i, s:s, s:I, s:s, s:s}", "size", 40, "root",
				"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
				"ts", (json_int_t)1795000000123456789LL, "key_id", "0102030405060708",
				"signature",
				"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==");
	struct signed_tree_head h;
	char err[CLI_ERR_LEN];

	cr_assert_eq(cli_tree_head_parse(obj, &h, NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(h.size, 40);
	cr_assert_eq(h.ts, 1795000000123456789ULL);
	cr_assert_eq(h.key_id[7], 8);
	json_object_set_new(obj, "root", json_string("xyz"));
	cr_assert_eq(cli_tree_head_parse(obj, &h, NULL, err, sizeof(err)), -1);
	cr_assert_not_null(strstr(err, "\"root\""), "%s", err);
	json_decref(obj);
}
