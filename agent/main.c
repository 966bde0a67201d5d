/*
 * dbward-agent: steers a host's database connections through itself,
 * records who opened each, and forwards them to the real server.
 *
 *   dbward-agent --config FILE [--check]
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/audit.h"
#include "agent/config.h"
#include "agent/intercept.h"
#include "agent/policy.h"
#include "agent/shipper.h"
#include "agent/sql.h"
#include "agent/sql_cache.h"
#include "agent/worker.h"
#include "common/clock.h"
#include "common/log.h"

#define DBWARD_VERSION "0.1.0"
/* At SIGTERM, how long the shipper may try to empty the spool. */
#define SHIPPER_DRAIN_MS 2000

struct options {
	const char *config_path;
	bool check;
	const char *test_sql;		/* --test-sql: judge this, touch nothing */
	char *test_as;			/* --as key=value,...: who sends it */
};

static void usage(FILE *to)
{
	fprintf(to, "usage: dbward-agent --config FILE [--check]\n"
		    "       dbward-agent --config FILE --test-sql SQL [--as KEY=VALUE,...]\n"
		    "  -c, --config FILE  agent configuration (YAML)\n"
		    "      --check        validate the configuration and exit\n"
		    "      --test-sql SQL what the rules say of SQL (exit 0 allow, 3 deny),\n"
		    "                     with no database and nothing attached\n"
		    "      --as K=V,...   who sends it: comm, exe, user, uid, gid, cgroup,\n"
		    "                     container_id, pod_uid, pod, namespace, db_user,\n"
		    "                     database, application_name, client (an address)\n"
		    "  -V, --version      print the version\n"
		    "  -h, --help         this text\n");
}

static int parse_args(int argc, char **argv, struct options *opt)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "test-sql", required_argument, NULL, 't' },
		{ "as", required_argument, NULL, 'a' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "c:Vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			opt->config_path = optarg;
			break;
		case 'k':
			opt->check = true;
			break;
		case 't':
			opt->test_sql = optarg;
			break;
		case 'a':
			opt->test_as = optarg;
			break;
		case 'V':
			printf("dbward-agent %s\n", DBWARD_VERSION);
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc || !opt->config_path) {
		usage(stderr);
		return -1;
	}
	return 0;
}

static int bad_as(const char *item)
{
	fprintf(stderr, "--as: '%s' is not KEY=VALUE with a known key and value\n", item);
	return -1;
}

/* Reads "comm=psql,uid=1000,..." into @who (pointing into @spec). */
static int subject_parse(char *spec, struct policy_subject *who, struct netaddr *client)
{
	for (char *item = strtok(spec, ","); item; item = strtok(NULL, ",")) {
		char *eq = strchr(item, '='), *end;
		const char **field = NULL;

		if (!eq)
			return bad_as(item);
		*eq++ = '\0';
		if (strcmp(item, "uid") == 0 || strcmp(item, "gid") == 0) {
			unsigned long v = strtoul(eq, &end, 10);

			if (!*eq || *end || v > UINT32_MAX)
				return bad_as(item);
			*(strcmp(item, "uid") == 0 ? &who->uid : &who->gid) = (uint32_t)v;
			who->has_uid = true;
			continue;
		}
		if (strcmp(item, "client") == 0) {
			if (netaddr_parse(eq, client) < 0)
				return bad_as(item);
			who->client = client;
			continue;
		}
		field = policy_subject_field(who, item);
		if (!field)
			return bad_as(item);
		*field = eq;
	}
	return 0;
}

/* --test-sql: the verdict the running agent would give, and why. */
static int test_sql(const struct agent_config *cfg, const char *sql, char *as)
{
	struct policy_subject who = { 0 };
	struct policy_decision d;
	struct netaddr client;
	struct sql_parse parse;
	int status;

	if (as && subject_parse(as, &who, &client) < 0)
		return 2;
	if (sql_parse(sql, strlen(sql), NULL, &parse) < 0) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}
	if (!parse.ok)
		printf("unparsable: %s\n", parse.error ? parse.error : "?");
	if (policy_judges_nothing(cfg->policy)) {
		printf("allow: no rules and default_action allow: nothing is judged\n");
		sql_parse_free(&parse);
		return 0;
	}
	policy_decide(cfg->policy, &who, &parse, &d);
	if (d.action == POLICY_DENY) {
		if (d.rule)
			printf("deny: rule %s (statement %zu)\n", d.rule, d.statement + 1);
		else
			printf("deny: %s\n", d.basis == POLICY_BASIS_UNPARSABLE ? "policy.unparsable"
									: "policy.default_action");
		status = 3;
	} else {
		printf("allow%s%s%s\n", d.rule ? ": rule " : ": no rule matched (policy.default_action)",
		       d.rule ? d.rule : "", d.audit_rule ? ", audited" : "");
		status = 0;
	}
	if (d.audit_rule)
		printf("audit: rule %s\n", d.audit_rule);
	sql_parse_free(&parse);
	return status;
}

static unsigned worker_count(const struct agent_config *cfg)
{
	long ncpu;

	if (cfg->workers)
		return cfg->workers;
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu > 256)
		ncpu = 256;	/* as the workers key allows */
	return ncpu > 0 ? (unsigned)ncpu : 1;
}

/* The heartbeat says "alive" only while every loop is turning. */
static bool workers_alive(const struct agent *agent)
{
	uint64_t now = clock_monotonic_ns();
	uint64_t limit = (uint64_t)agent->cfg->heartbeat_timeout_ms * 1000000ull / 2;

	for (unsigned i = 0; i < agent->n_workers; i++) {
		uint64_t tick = __atomic_load_n(&agent->workers[i].last_tick_ns, __ATOMIC_ACQUIRE);

		if (now - tick > limit)
			return false;
	}
	return true;
}

static void stop_workers(struct agent *agent)
{
	for (unsigned i = 0; i < agent->n_workers; i++)
		worker_stop(&agent->workers[i]);
	for (unsigned i = 0; i < agent->n_workers; i++)
		worker_destroy(&agent->workers[i]);
	free(agent->workers);
	agent->workers = NULL;
	agent->n_workers = 0;
}

static int start_workers(struct agent *agent)
{
	unsigned n = worker_count(agent->cfg);
	int err;

	agent->workers = calloc(n, sizeof(*agent->workers));
	if (!agent->workers)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		agent->n_workers = i + 1;
		err = worker_init(&agent->workers[i], agent, i);
		if (err)
			return err;
	}
	return 0;
}

static int run_workers(struct agent *agent)
{
	for (unsigned i = 0; i < agent->n_workers; i++) {
		int err = worker_start(&agent->workers[i]);

		if (err) {
			log_error("starting worker %u: %s", i, strerror(-err));
			return err;
		}
	}
	return 0;
}

/* Waits until every loop has turned once: none can still see the old rules. */
static void wait_all_turned(struct agent *agent)
{
	uint64_t seen[256];	/* config caps workers at 256 */
	unsigned n = agent->n_workers < 256 ? agent->n_workers : 256;

	for (unsigned i = 0; i < n; i++) {
		seen[i] = __atomic_load_n(&agent->workers[i].turns, __ATOMIC_ACQUIRE);
		worker_wake(&agent->workers[i]);
	}
	for (unsigned i = 0; i < n; i++) {
		struct timespec pause = { .tv_nsec = 1000000 };

		while (__atomic_load_n(&agent->workers[i].turns, __ATOMIC_ACQUIRE) == seen[i])
			nanosleep(&pause, NULL);
	}
}

/*
 * SIGHUP: the rules (rules:, policy:) and log_level change in place, with
 * no connection dropped. A file that does not load is refused with its
 * FILE:LINE and the running rules stay. Other keys apply at restart.
 */
static void reload(struct agent *agent, const char *path)
{
	struct agent_config next;
	char err[CONFIG_ERR_LEN];
	struct policy *old;

	memset(&next, 0, sizeof(next));
	if (config_load_file(path, &next, err, sizeof(err)) < 0) {
		log_error("reload refused, the running configuration stays: %s", err);
		return;
	}
	old = __atomic_exchange_n(&agent->policy, next.policy, __ATOMIC_ACQ_REL);
	next.policy = NULL;
	log_set_level(next.log_level);
	agent->cfg->log_level = next.log_level;
	wait_all_turned(agent);
	policy_free(old);
	log_info("reloaded %s: %zu rule(s) in force; keys other than rules, policy and "
		 "log_level apply at restart", path, policy_rule_count(agent->policy));
	config_free(&next);
}

/* How often the counters are logged (info). */
#define STATS_INTERVAL_NS (600 * (uint64_t)1000000000)

/* What the interception programs have done since they were loaded
 * (docs/operations.md says what each counts). */
static void log_intercept_stats(struct intercept *ic)
{
#define N(which) (unsigned long long)intercept_counter(ic, INTERCEPT_CNT_##which)
	log_info("interception: %llu connects redirected, %llu of the agent's own skipped, %llu "
		 "with no room for their origin; not redirected: %llu refused, %llu let "
		 "through; pods: %llu published by address, %llu collisions (%llu not noted: "
		 "their key's entry dropped)",
		 N(REDIRECTED), N(SKIPPED_MARK), N(NO_STORAGE), N(REFUSED_NO_AGENT),
		 N(BYPASSED_NO_AGENT), N(TUPLE_SAVED), N(TUPLE_COLLIDED), N(TUPLE_UNNOTED));
#undef N
}

/* What the classification caches of every worker have done so far. */
static void log_cache_stats(void)
{
	struct sql_cache_stats st;
	uint64_t looked_up;

	sql_cache_totals(&st);
	looked_up = st.hits + st.shape_hits + st.misses + st.bypasses;
	log_info("classification cache: %llu lookups, %llu by text, %llu by shape, %llu parsed, "
		 "%llu too long, %llu evicted; %llu entries, %llu KiB now",
		 (unsigned long long)looked_up, (unsigned long long)st.hits,
		 (unsigned long long)st.shape_hits, (unsigned long long)st.misses,
		 (unsigned long long)st.bypasses, (unsigned long long)st.evictions,
		 (unsigned long long)st.entries, (unsigned long long)(st.bytes / 1024));
}

/* Signals are taken synchronously here; every other thread blocks them. */
static int serve(struct agent *agent, const sigset_t *signals, const char *config_path)
{
	long interval_ms = agent->cfg->heartbeat_timeout_ms / 4;
	struct timespec interval = {
		.tv_sec = interval_ms / 1000,
		.tv_nsec = (interval_ms % 1000) * 1000000L,
	};
	uint64_t stats_due = clock_monotonic_ns() + STATS_INTERVAL_NS;

	for (;;) {
		int sig = sigtimedwait(signals, NULL, &interval);

		if (sig == SIGTERM || sig == SIGINT) {
			log_info("%s: detaching and stopping", strsignal(sig));
			log_cache_stats();
			log_intercept_stats(agent->intercept);
			return 0;
		}
		if (sig == SIGUSR1 || clock_monotonic_ns() >= stats_due) {
			log_cache_stats();
			log_intercept_stats(agent->intercept);
			stats_due = clock_monotonic_ns() + STATS_INTERVAL_NS;
		}
		if (sig == SIGHUP)
			reload(agent, config_path);
		/* A spool full because of the filesystem may have room again
		 * without any ack (no collector, or one that is caught up). */
		audit_retry(agent->audit);
		if (workers_alive(agent))
			intercept_heartbeat(agent->intercept);
		else
			log_warn("an event loop is stuck; withholding the heartbeat");
		intercept_sweep(agent->intercept);
	}
}

/* The spool, the file sink and the shipper, before any connection. */
static int start_audit(struct agent *agent)
{
	const struct agent_config *cfg = agent->cfg;
	struct audit_opts opts = {
		.agent_id = cfg->agent_id, .file = cfg->audit_file, .spool_dir = cfg->spool,
		.spool_max_bytes = cfg->spool_max_bytes,
	};
	struct shipper_opts ship = {
		.address = cfg->collector_address, .tls = agent->collector_tls,
		.mark = cfg->upstream_mark, .batch_max_events = cfg->collector_batch_max_events,
		.batch_ms = cfg->collector_batch_ms, .fsync_ms = cfg->spool_fsync_ms,
	};
	char err[AUDIT_ERR_LEN];
	int res;

	if (!cfg->audit_file && !cfg->spool)
		return 0;
	if ((res = audit_open(&opts, &agent->audit, err, sizeof(err))) < 0) {
		log_error("%s", err);
		return res;
	}
	if (!cfg->spool)
		log_info("audit: no spool configured: events go to %s only and are not durable",
			 cfg->audit_file);
	if (!cfg->collector_address)
		return 0;
	if ((res = shipper_start(&ship, agent->audit, &agent->shipper)) < 0)
		log_error("audit: starting the shipper: %s", strerror(-res));
	return res;
}

static void log_ready(const struct agent *agent)
{
	const struct agent_config *cfg = agent->cfg;
	char listen[NETADDR_STRLEN];

	netaddr_format(&cfg->listen, listen, sizeof(listen));
	/* Printed at any log level: scripts and supervisors wait for it. */
	log_write(LOG_LEVEL_INFO, "ready: listening on %s, %zu target(s), cgroup %s, fail %s, %u worker(s)",
		 listen, cfg->n_targets, cfg->cgroup,
		 cfg->fail == CONFIG_FAIL_OPEN ? "open" : "closed", agent->n_workers);
}

int main(int argc, char **argv)
{
	struct options opt = { 0 };
	struct agent_config cfg;
	struct agent agent = { .cfg = &cfg };
	char err_text[CONFIG_ERR_LEN];
	sigset_t signals;
	int err, status = 1;

	log_set_program("dbward-agent");
	memset(&cfg, 0, sizeof(cfg));
	if (parse_args(argc, argv, &opt) < 0)
		return 2;
	if (config_load_file(opt.config_path, &cfg, err_text, sizeof(err_text)) < 0) {
		fprintf(stderr, "%s\n", err_text);
		return 1;
	}
	/* Certificates are part of the configuration: --check reads them too. */
	if (agent_tls_open(&agent, err_text, sizeof(err_text)) < 0) {
		fprintf(stderr, "%s: %s\n", opt.config_path, err_text);
		agent_tls_close(&agent);
		config_free(&cfg);
		return 1;
	}
	if (opt.test_sql) {
		status = test_sql(&cfg, opt.test_sql, opt.test_as);
		agent_tls_close(&agent);
		config_free(&cfg);
		return status;
	}
	if (opt.check) {
		printf("%s: configuration is valid\n", opt.config_path);
		agent_tls_close(&agent);
		config_free(&cfg);
		return 0;
	}
	log_set_level(cfg.log_level);
	agent.policy = cfg.policy;	/* the agent owns the rules in force from here */
	cfg.policy = NULL;

	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	sigaddset(&signals, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((err = start_audit(&agent)) < 0)
		goto out;
	/* Listen first: the programs must never redirect to a closed port. */
	if ((err = start_workers(&agent)) < 0)
		goto out;
	if ((err = intercept_start(&cfg, &agent.intercept)) < 0)
		goto out;
	if ((err = run_workers(&agent)) < 0)
		goto out;
	log_ready(&agent);

	if (serve(&agent, &signals, opt.config_path) == 0)
		status = 0;
	/* New connects go direct while the loops close what is open; the
	 * maps stay until the loops are gone, they read them to the end. */
	intercept_detach(agent.intercept);
out:
	stop_workers(&agent);
	/* After a failed start, pinned links stay: fail-closed must hold. */
	intercept_stop(agent.intercept, false);
	/* The loops are gone, their close events recorded: ship, then close. */
	shipper_stop(agent.shipper, SHIPPER_DRAIN_MS);
	audit_close(agent.audit);
	policy_free(agent.policy);
	agent_tls_close(&agent);
	config_free(&cfg);
	return status;
}
