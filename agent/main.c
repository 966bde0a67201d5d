/*
 * dbward-agent: steers a host's database connections through itself,
 * records who opened each, and forwards them to the real server.
 *
 *   dbward-agent --config FILE [--check]
 */
#include <errno.h>
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
#include "agent/worker.h"
#include "common/clock.h"
#include "common/log.h"

#define DBWARD_VERSION "0.1.0"

struct options {
	const char *config_path;
	bool check;
};

static void usage(FILE *to)
{
	fprintf(to, "usage: dbward-agent --config FILE [--check]\n"
		    "  -c, --config FILE  agent configuration (YAML)\n"
		    "      --check        validate the configuration and exit\n"
		    "  -V, --version      print the version\n"
		    "  -h, --help         this text\n");
}

static int parse_args(int argc, char **argv, struct options *opt)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
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

static unsigned worker_count(const struct agent_config *cfg)
{
	long ncpu;

	if (cfg->workers)
		return cfg->workers;
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
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

/* Signals are taken synchronously here; every other thread blocks them. */
static int serve(struct agent *agent, const sigset_t *signals)
{
	long interval_ms = agent->cfg->heartbeat_timeout_ms / 4;
	struct timespec interval = {
		.tv_sec = interval_ms / 1000,
		.tv_nsec = (interval_ms % 1000) * 1000000L,
	};

	for (;;) {
		int sig = sigtimedwait(signals, NULL, &interval);

		if (sig == SIGTERM || sig == SIGINT) {
			log_info("%s: detaching and stopping", strsignal(sig));
			return 0;
		}
		if (sig == SIGHUP)
			log_warn("SIGHUP: configuration reload is not supported yet; "
				 "restart the agent to apply changes");
		if (workers_alive(agent))
			intercept_heartbeat(agent->intercept);
		else
			log_warn("an event loop is stuck; withholding the heartbeat");
	}
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
	if (opt.check) {
		printf("%s: configuration is valid\n", opt.config_path);
		agent_tls_close(&agent);
		config_free(&cfg);
		return 0;
	}
	log_set_level(cfg.log_level);

	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (cfg.audit_file && (err = audit_open(cfg.audit_file, &agent.audit)) < 0) {
		log_error("audit.file %s: %s", cfg.audit_file, strerror(-err));
		goto out;
	}
	/* Listen first: the programs must never redirect to a closed port. */
	if ((err = start_workers(&agent)) < 0)
		goto out;
	if ((err = intercept_start(&cfg, &agent.intercept)) < 0)
		goto out;
	if ((err = run_workers(&agent)) < 0)
		goto out;
	log_ready(&agent);

	if (serve(&agent, &signals) == 0)
		status = 0;
	intercept_stop(agent.intercept, true);
	agent.intercept = NULL;
out:
	stop_workers(&agent);
	/* After a failed start, pinned links stay: fail-closed must hold. */
	intercept_stop(agent.intercept, false);
	audit_close(agent.audit);
	agent_tls_close(&agent);
	config_free(&cfg);
	return status;
}
