/*
 * dbward-collector: receives audit batches from agents over mutual TLS,
 * keeps them and the tamper-evident ledger over them, and serves the JSON
 * API and the web page (docs/collector.md).
 *
 *   dbward-collector --config FILE [--check]
 *
 * Exit status: 0 after a clean stop (SIGTERM, SIGINT) or a valid --check;
 * 1 when it cannot start (storage, sockets); 2 on a usage error or a
 * configuration that does not load (the file, certificates, signing key).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "collector/config.h"
#include "collector/http.h"
#include "collector/ingest.h"
#include "collector/store.h"
#include "common/log.h"
#include "common/signing.h"
#include "common/tls.h"

#define DBWARD_VERSION "0.1.0"
#define EXIT_START_FAILED 1
#define EXIT_USAGE 2

struct options {
	const char *config_path;
	bool check;
};

/* Everything a running collector holds; each has one owner: this struct. */
struct collector {
	struct collector_config cfg;
	struct tls_ctx *tls;
	struct signing_key *key;
	struct verify_key *verify_key;	/* the key's public half */
	struct store *store;
	struct ingest *ingest;
	struct http *http;
};

static void usage(FILE *to)
{
	fprintf(to, "usage: dbward-collector --config FILE [--check]\n"
		    "  -c, --config FILE  collector configuration (YAML)\n"
		    "      --check        validate the configuration, certificates and\n"
		    "                     signing key, and exit (0 valid, 2 not)\n"
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
			printf("dbward-collector %s\n", DBWARD_VERSION);
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

/* --- loading: what --check validates ------------------------------------------ */

static int load_tls(struct collector *c, const char *path)
{
	struct tls_server_opts opts = {
		.cert_file = c->cfg.tls_cert,
		.key_file = c->cfg.tls_key,
		.client_ca_file = c->cfg.tls_ca,
	};
	char err[TLS_ERR_LEN];

	if (tls_ctx_new_server(&opts, &c->tls, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: tls: %s\n", path, err);
		return -1;
	}
	return 0;
}

/* --check reads an existing key but creates none: it changes nothing. */
static int load_signing_key(struct collector *c, const char *path, bool check)
{
	const char *file = c->cfg.signing_key;
	char err[SIGNING_ERR_LEN];
	uint8_t pub[SIGNING_PUB_LEN];

	if (check && access(file, F_OK) < 0 && errno == ENOENT) {
		printf("%s: signing_key %s does not exist yet; it will be created at start\n",
		       path, file);
		return 0;
	}
	if (signing_key_load(file, !check, &c->key, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: signing_key: %s\n", path, err);
		return -1;
	}
	signing_public(c->key, pub);
	if (verify_key_from_raw(pub, &c->verify_key) < 0) {
		fprintf(stderr, "%s: signing_key %s: cannot derive its public key\n", path, file);
		return -1;
	}
	return 0;
}

static int load(struct collector *c, const struct options *opt)
{
	char err[COLLECTOR_CONFIG_ERR_LEN];

	if (collector_config_load_file(opt->config_path, &c->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	if (load_tls(c, opt->config_path) < 0)
		return -1;
	return load_signing_key(c, opt->config_path, opt->check);
}

/* --- running ------------------------------------------------------------------ */

static int start(struct collector *c)
{
	char err[STORE_ERR_LEN];
	struct ingest_opts in = {
		.listen = c->cfg.listen, .tls = c->tls, .key = c->key,
		.max_batch_bytes = c->cfg.max_batch_bytes,
		.max_batch_events = c->cfg.max_batch_events,
	};
	struct http_opts web = { .listen = c->cfg.http, .hosts = c->cfg.http_hosts.names,
				 .n_hosts = c->cfg.http_hosts.n };

	if (store_open(c->cfg.storage, &c->store, err, sizeof(err)) < 0) {
		log_error("storage %s: %s", c->cfg.storage, err);
		return -1;
	}
	in.store = c->store;
	web.api = (struct api){ .store = c->store, .key = c->key, .verify_key = c->verify_key };
	if (ingest_start(&in, &c->ingest, err, sizeof(err)) < 0) {
		log_error("ingest: %s", err);
		return -1;
	}
	if (http_start(&web, &c->http, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return -1;
	}
	return 0;
}

/* Printed at any log level: tests and supervisors wait for it. */
static void announce_ready(const struct collector *c)
{
	char ingest[NETADDR_STRLEN], http[NETADDR_STRLEN];

	ingest_address(c->ingest, ingest, sizeof(ingest));
	http_address(c->http, http, sizeof(http));
	fprintf(stderr, "dbward-collector: ready ingest=%s http=%s\n", ingest, http);
	fflush(stderr);
}

/* Signals are taken here, synchronously; every other thread blocks them. */
static void wait_for_stop(const sigset_t *signals)
{
	for (;;) {
		int sig = sigwaitinfo(signals, NULL);

		if (sig == SIGTERM || sig == SIGINT) {
			log_info("%s: stopping", strsignal(sig));
			return;
		}
		if (sig == SIGHUP)
			log_info("SIGHUP: nothing is reloadable; restart the collector to apply "
				 "a new configuration");
	}
}

/* In reverse order of start; every step is NULL-safe. */
static void collector_release(struct collector *c)
{
	http_stop(c->http);		/* no request reads the store after this */
	ingest_stop(c->ingest);		/* nor does any agent connection */
	store_close(c->store);
	verify_key_free(c->verify_key);
	signing_key_free(c->key);
	tls_ctx_free(c->tls);
	collector_config_free(&c->cfg);
}

int main(int argc, char **argv)
{
	struct options opt = { 0 };
	struct collector c;
	sigset_t signals;
	int status = EXIT_START_FAILED;

	log_set_program("dbward-collector");
	memset(&c, 0, sizeof(c));
	if (parse_args(argc, argv, &opt) < 0)
		return EXIT_USAGE;
	if (load(&c, &opt) < 0) {
		collector_release(&c);
		return EXIT_USAGE;
	}
	if (opt.check) {
		printf("%s: configuration is valid\n", opt.config_path);
		collector_release(&c);
		return 0;
	}
	log_set_level(c.cfg.log_level);

	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (start(&c) == 0) {
		announce_ready(&c);
		wait_for_stop(&signals);
		status = 0;
	}
	collector_release(&c);
	if (status == 0)
		log_info("stopped");
	return status;
}
