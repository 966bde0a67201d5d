/*
 * dbward: the command line for security staff. Reads the collector's
 * audit trail, checks its ledger and receipts, and runs a small CA.
 * Exit codes: 0 ok, 1 verification failed or invalid, 2 usage or
 * connection error (see docs/collector.md, "CLI").
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/ca.h"
#include "cli/events.h"
#include "cli/http_client.h"
#include "cli/verify.h"

#define DBWARD_VERSION "0.1.0"
#define MAX_POSITIONAL 4

enum verb_bit {
	V_EVENTS = 1u << 0,
	V_SESSIONS = 1u << 1,
	V_VERIFY = 1u << 2,
	V_RECEIPT = 1u << 3,
	V_TREE_HEAD = 1u << 4,
	V_VERIFY_RECEIPT = 1u << 5,
	V_CA_INIT = 1u << 6,
	V_CA_ISSUE = 1u << 7,
	V_CHECK_RECEIPT = 1u << 8,
	V_ALL = 0x1ffu,
};

/* The options that are not filters; filters come from cli_filters[]. */
enum opt_id {
	OPT_COLLECTOR = CLI_FILTER_COUNT,
	OPT_LIMIT,
	OPT_JSON,
	OPT_KEY,
	OPT_OUTPUT,
	OPT_IP,
	OPT_DNS,
	OPT_HELP,
	OPT_VERSION,
	OPT_COUNT,
};

struct opt_def {
	const char *name;
	int has_arg;
	unsigned verbs;			/* where it applies */
};

static const struct opt_def other_opts[OPT_COUNT - CLI_FILTER_COUNT] = {
	[OPT_COLLECTOR - CLI_FILTER_COUNT] = { "collector", required_argument, V_ALL },
	[OPT_LIMIT - CLI_FILTER_COUNT] = { "limit", required_argument, V_EVENTS | V_SESSIONS },
	[OPT_JSON - CLI_FILTER_COUNT] = { "json", no_argument,
					  V_EVENTS | V_SESSIONS | V_TREE_HEAD },
	[OPT_KEY - CLI_FILTER_COUNT] = { "key", required_argument,
					 V_VERIFY | V_RECEIPT | V_TREE_HEAD | V_VERIFY_RECEIPT |
					 V_CHECK_RECEIPT },
	[OPT_OUTPUT - CLI_FILTER_COUNT] = { "output", required_argument, V_RECEIPT },
	[OPT_IP - CLI_FILTER_COUNT] = { "ip", required_argument, V_CA_ISSUE },
	[OPT_DNS - CLI_FILTER_COUNT] = { "dns", required_argument, V_CA_ISSUE },
	[OPT_HELP - CLI_FILTER_COUNT] = { "help", no_argument, V_ALL },
	[OPT_VERSION - CLI_FILTER_COUNT] = { "version", no_argument, V_ALL },
};

struct cli_args {
	const char *url;
	struct cli_query query;
	const char *key_path;
	const char *out_path;
	const char **ips;
	size_t n_ips;
	const char **dns;
	size_t n_dns;
	const char *pos[MAX_POSITIONAL];
	size_t n_pos;
	bool given[OPT_COUNT];
};

struct verb {
	const char *name;
	const char *sub;		/* "ca init": name "ca", sub "init" */
	unsigned bit;
	size_t nargs;			/* positional arguments after the verb's words */
	int (*run)(const struct cli_args *a, const char *const *args);
};

static void usage(FILE *to)
{
	fprintf(to,
		"usage: dbward [--collector URL] events [--since T] [--until T] [--agent A]\n"
		"              [--pid N] [--comm C] [--user U] [--pod P] [--db-user U]\n"
		"              [--database D] [--verdict allow|deny] [--kind K] [--session S]\n"
		"              [--search TEXT] [--limit N] [--json]\n"
		"       dbward [--collector URL] sessions [filters as for events] [--limit N] [--json]\n"
		"       dbward [--collector URL] verify [--key ledger.pub]\n"
		"       dbward [--collector URL] receipt EVENT_ID [-o FILE] [--key ledger.pub]\n"
		"       dbward [--collector URL] tree-head [--key ledger.pub] [--json]\n"
		"       dbward verify-receipt FILE [--key ledger.pub]\n"
		"       dbward [--collector URL] check-receipt FILE [--key ledger.pub]\n"
		"       dbward ca init DIR\n"
		"       dbward ca issue DIR NAME [--ip ADDR]... [--dns NAME]...\n"
		"\n"
		"  events          audit events, oldest first, as a table or JSON lines\n"
		"  sessions        one line per client connection\n"
		"  verify          the collector checks its ledger and every agent's chain;\n"
		"                  with --key, the tree head's signature is checked too\n"
		"  receipt         fetch an event's receipt, check it, write it (stdout or -o)\n"
		"  tree-head       the ledger's current signed tree head\n"
		"  verify-receipt  check a receipt offline; no collector needed\n"
		"  check-receipt   check a receipt, then that the collector's ledger still\n"
		"                  holds its tree unchanged (a consistency proof)\n"
		"  ca init         a CA in DIR: ca.crt, ca.key (EC P-256, 10 years)\n"
		"  ca issue        DIR/NAME.crt and NAME.key from that CA, for client and\n"
		"                  server use (SAN 127.0.0.1, ::1, localhost and --ip/--dns)\n"
		"\n"
		"  --collector URL   default $DBWARD_COLLECTOR, then " CLI_DEFAULT_COLLECTOR "\n"
		"  --since/--until T RFC 3339 or unix seconds\n"
		"  --search TEXT     a substring of the SQL text\n"
		"  --limit N         rows wanted (default %d)\n"
		"  --json            compact JSON, one object a line\n"
		"  --key FILE        the collector's ledger public key (PEM) to pin\n"
		"  -o, --output FILE where the receipt goes\n"
		"  -V, --version     print the version\n"
		"  -h, --help        this text\n"
		"\n"
		"exit: 0 ok, 1 verification failed or invalid, 2 usage or connection error\n",
		CLI_DEFAULT_LIMIT);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("dbward: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'dbward --help'.\n", stderr);
	return CLI_EXIT_FAIL;
}

static const char *opt_name(int id)
{
	return id < CLI_FILTER_COUNT ? cli_filters[id].flag : other_opts[id - CLI_FILTER_COUNT].name;
}

static unsigned opt_verbs(int id)
{
	return id < CLI_FILTER_COUNT ? (V_EVENTS | V_SESSIONS)
				     : other_opts[id - CLI_FILTER_COUNT].verbs;
}

static void build_longopts(struct option *lo)
{
	for (int id = 0; id < OPT_COUNT; id++) {
		lo[id] = (struct option){
			.name = opt_name(id),
			.has_arg = id < CLI_FILTER_COUNT ? required_argument
							 : other_opts[id - CLI_FILTER_COUNT].has_arg,
			.val = id,
		};
	}
	lo[OPT_COUNT] = (struct option){ 0 };
}

/* One option's value into @a. 0, or a cli_exit code to stop with. */
static int take_option(struct cli_args *a, int id, const char *value)
{
	char err[CLI_ERR_LEN];

	if (a->given[id] && id != OPT_IP && id != OPT_DNS)
		return usage_error("--%s given twice", opt_name(id));
	a->given[id] = true;
	if (id < CLI_FILTER_COUNT) {
		if (cli_filter_check((enum cli_filter)id, value, err, sizeof(err)) < 0)
			return usage_error("%s", err);
		a->query.values[id] = value;
		return 0;
	}
	switch (id) {
	case OPT_COLLECTOR: a->url = value; break;
	case OPT_LIMIT:
		if (cli_limit_parse(value, &a->query.limit, err, sizeof(err)) < 0)
			return usage_error("%s", err);
		break;
	case OPT_JSON: a->query.json = true; break;
	case OPT_KEY: a->key_path = value; break;
	case OPT_OUTPUT: a->out_path = value; break;
	case OPT_IP: a->ips[a->n_ips++] = value; break;
	case OPT_DNS: a->dns[a->n_dns++] = value; break;
	case OPT_HELP: usage(stdout); exit(CLI_EXIT_OK);
	case OPT_VERSION: printf("dbward %s\n", DBWARD_VERSION); exit(CLI_EXIT_OK);
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct cli_args *a)
{
	struct option longopts[OPT_COUNT + 1];
	int ch, rc;

	build_longopts(longopts);
	while ((ch = getopt_long(argc, argv, "ho:V", longopts, NULL)) != -1) {
		if (ch == 'h')
			ch = OPT_HELP;
		else if (ch == 'o')
			ch = OPT_OUTPUT;
		else if (ch == 'V')
			ch = OPT_VERSION;
		else if (ch < 0 || ch >= OPT_COUNT) {
			fputs("Try 'dbward --help'.\n", stderr);	/* getopt said what */
			return CLI_EXIT_FAIL;
		}
		if ((rc = take_option(a, ch, optarg)) != 0)
			return rc;
	}
	for (; optind < argc; optind++) {
		if (a->n_pos == MAX_POSITIONAL)
			return usage_error("too many arguments, from '%s'", argv[optind]);
		a->pos[a->n_pos++] = argv[optind];
	}
	return 0;
}

/* --- the verbs ------------------------------------------------------------- */

static int run_events(const struct cli_args *a, const char *const *args)
{
	(void)args;
	return cli_events_run(a->url, &a->query);
}

static int run_sessions(const struct cli_args *a, const char *const *args)
{
	(void)args;
	return cli_sessions_run(a->url, &a->query);
}

static int run_verify(const struct cli_args *a, const char *const *args)
{
	(void)args;
	return cli_verify_run(a->url, a->key_path);
}

static int run_receipt(const struct cli_args *a, const char *const *args)
{
	return cli_receipt_run(a->url, args[0], a->out_path, a->key_path);
}

static int run_tree_head(const struct cli_args *a, const char *const *args)
{
	(void)args;
	return cli_tree_head_run(a->url, a->key_path, a->query.json);
}

static int run_verify_receipt(const struct cli_args *a, const char *const *args)
{
	return cli_verify_receipt_run(args[0], a->key_path);
}

static int run_check_receipt(const struct cli_args *a, const char *const *args)
{
	return cli_check_receipt_run(a->url, args[0], a->key_path);
}

static int run_ca_init(const struct cli_args *a, const char *const *args)
{
	char err[CLI_ERR_LEN];

	(void)a;
	if (cli_ca_init(args[0], err, sizeof(err)) < 0) {
		fprintf(stderr, "dbward ca init: %s\n", err);
		return CLI_EXIT_FAIL;
	}
	printf("wrote %s/ca.crt and %s/ca.key\n", args[0], args[0]);
	return CLI_EXIT_OK;
}

static int run_ca_issue(const struct cli_args *a, const char *const *args)
{
	struct cli_ca_sans sans = { a->ips, a->n_ips, a->dns, a->n_dns };
	char err[CLI_ERR_LEN];

	if (cli_ca_issue(args[0], args[1], &sans, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbward ca issue: %s\n", err);
		return CLI_EXIT_FAIL;
	}
	printf("wrote %s/%s.crt and %s/%s.key\n", args[0], args[1], args[0], args[1]);
	return CLI_EXIT_OK;
}

static const struct verb verbs[] = {
	{ "events", NULL, V_EVENTS, 0, run_events },
	{ "sessions", NULL, V_SESSIONS, 0, run_sessions },
	{ "verify", NULL, V_VERIFY, 0, run_verify },
	{ "receipt", NULL, V_RECEIPT, 1, run_receipt },
	{ "tree-head", NULL, V_TREE_HEAD, 0, run_tree_head },
	{ "verify-receipt", NULL, V_VERIFY_RECEIPT, 1, run_verify_receipt },
	{ "check-receipt", NULL, V_CHECK_RECEIPT, 1, run_check_receipt },
	{ "ca", "init", V_CA_INIT, 1, run_ca_init },
	{ "ca", "issue", V_CA_ISSUE, 2, run_ca_issue },
};

static const struct verb *find_verb(const struct cli_args *a)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		const struct verb *v = &verbs[i];

		if (strcmp(a->pos[0], v->name) == 0 &&
		    (!v->sub || (a->n_pos > 1 && strcmp(a->pos[1], v->sub) == 0)))
			return v;
	}
	return NULL;
}

/* Every option given must apply to @v. */
static int check_options(const struct cli_args *a, const struct verb *v)
{
	char what[64];

	for (int id = 0; id < OPT_COUNT; id++) {
		if (a->given[id] && !(opt_verbs(id) & v->bit)) {
			snprintf(what, sizeof(what), "%s%s%s", v->name, v->sub ? " " : "",
				 v->sub ? v->sub : "");
			return usage_error("--%s does not apply to '%s'", opt_name(id), what);
		}
	}
	return 0;
}

static int dispatch(struct cli_args *a)
{
	const struct verb *v;
	size_t words;

	if (a->n_pos == 0) {
		usage(stderr);
		return CLI_EXIT_FAIL;
	}
	if (!(v = find_verb(a)) && strcmp(a->pos[0], "ca") == 0)
		return usage_error("'ca init DIR' or 'ca issue DIR NAME'");
	if (!v)
		return usage_error("unknown verb '%s'", a->pos[0]);
	words = v->sub ? 2 : 1;
	if (a->n_pos != words + v->nargs)
		return usage_error("wrong number of arguments for '%s%s%s'", v->name,
				   v->sub ? " " : "", v->sub ? v->sub : "");
	if (check_options(a, v))
		return CLI_EXIT_FAIL;
	if (!a->url) {
		const char *env = getenv("DBWARD_COLLECTOR");

		a->url = env && *env ? env : CLI_DEFAULT_COLLECTOR;
	}
	return v->run(a, &a->pos[words]);
}

int main(int argc, char **argv)
{
	struct cli_args a = { .query.limit = CLI_DEFAULT_LIMIT };
	int rc;

	a.ips = calloc((size_t)argc, sizeof(*a.ips));
	a.dns = calloc((size_t)argc, sizeof(*a.dns));
	if (!a.ips || !a.dns || cli_http_init() < 0) {
		fprintf(stderr, "dbward: out of memory\n");
		return CLI_EXIT_FAIL;
	}
	if ((rc = parse_args(argc, argv, &a)) == 0)
		rc = dispatch(&a);
	cli_http_cleanup();
	free(a.ips);
	free(a.dns);
	return rc;
}
