#include "session.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "agent/audit.h"
#include "agent/track.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"

static uint64_t id_prefix;
static uint64_t id_counter;
static pthread_once_t id_once = PTHREAD_ONCE_INIT;

static void id_prefix_init(void)
{
	if (getrandom(&id_prefix, sizeof(id_prefix), 0) != sizeof(id_prefix)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		id_prefix = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	}
}

void session_new_id(char out[SESSION_ID_LEN + 1])
{
	uint64_t n;

	pthread_once(&id_once, id_prefix_init);
	n = __atomic_add_fetch(&id_counter, 1, __ATOMIC_RELAXED);
	snprintf(out, SESSION_ID_LEN + 1, "%016" PRIx64 "%016" PRIx64, id_prefix, n);
}

void session_release(struct session *s)
{
	identity_release(&s->who);
	free(s->db_user);
	free(s->database);
	free(s->application_name);
	s->db_user = s->database = s->application_name = NULL;
}

static void put_timestamp(struct jsonbuf *jb)
{
	char ts[CLOCK_RFC3339_LEN];

	clock_rfc3339_now(ts, 6);
	jsonbuf_str(jb, "ts", ts);
}

static void put_addr(struct jsonbuf *jb, const char *key, const struct netaddr *a)
{
	char text[NETADDR_STRLEN];

	netaddr_format(a, text, sizeof(text));
	jsonbuf_str(jb, key, text);
}

static void put_empty_as_null(struct jsonbuf *jb, const char *key, const char *value)
{
	jsonbuf_str(jb, key, value && value[0] ? value : NULL);
}

/* The fields both kinds carry: the session and who opened it. */
/* Every event starts alike: what, when, which session. */
static void put_header(struct jsonbuf *jb, const char *kind, const struct session *s)
{
	jsonbuf_begin(jb);
	jsonbuf_str(jb, "kind", kind);
	put_timestamp(jb);
	jsonbuf_str(jb, "session_id", s->id);
}

/* What the startup packet asked for. */
static void put_startup(struct jsonbuf *jb, const struct session *s)
{
	jsonbuf_str(jb, "db_user", s->db_user);
	jsonbuf_str(jb, "database", s->database);
	jsonbuf_str(jb, "application_name", s->application_name);
}

static void put_common(struct jsonbuf *jb, const char *kind, const struct session *s)
{
	const struct identity *w = &s->who;

	put_header(jb, kind, s);
	if (s->attributed) {
		jsonbuf_u64(jb, "pid", w->pid);
		jsonbuf_u64(jb, "tid", w->tid);
		jsonbuf_u64(jb, "uid", w->uid);
		jsonbuf_u64(jb, "gid", w->gid);
		jsonbuf_strn(jb, "comm", w->comm, strnlen(w->comm, sizeof(w->comm)));
		jsonbuf_str(jb, "exe", w->exe);
		jsonbuf_str(jb, "user", w->user);
		jsonbuf_str(jb, "cgroup_path", w->cgroup_path);
		jsonbuf_u64(jb, "cgroup_id", w->cgroup_id);
		put_empty_as_null(jb, "container_id", w->ids.container_id);
		put_empty_as_null(jb, "pod_uid", w->ids.pod_uid);
		jsonbuf_str(jb, "container_runtime", w->ids.runtime);
		jsonbuf_u64(jb, "netns_cookie", w->netns_cookie);
		put_addr(jb, "server", &s->server);
	} else {
		jsonbuf_null(jb, "pid");
		jsonbuf_null(jb, "server");
	}
	put_addr(jb, "client", &s->client);
	put_startup(jb, s);
	jsonbuf_bool(jb, "encrypted", s->encrypted);
	if (s->cancel_request)
		jsonbuf_bool(jb, "cancel_request", true);
}

static int submit(struct audit *audit, struct jsonbuf *jb)
{
	int err = jsonbuf_finish(jb);

	if (!err)
		err = audit_submit(audit, jb->data, jb->len);
	if (err)
		log_error("audit: cannot record an event: %s", strerror(-err));
	jsonbuf_release(jb);
	return err;
}

int session_emit_open(struct audit *audit, const struct session *s)
{
	struct jsonbuf jb;

	if (!audit)
		return 0;
	jsonbuf_init(&jb);
	put_common(&jb, "connection_open", s);
	return submit(audit, &jb);
}

int session_emit_close(struct audit *audit, const struct session *s)
{
	struct jsonbuf jb;

	if (!audit)
		return 0;
	jsonbuf_init(&jb);
	put_common(&jb, "connection_close", s);
	jsonbuf_u64(&jb, "client_bytes", s->client_bytes);
	jsonbuf_u64(&jb, "server_bytes", s->server_bytes);
	jsonbuf_u64(&jb, "duration_us", (clock_monotonic_ns() - s->start_ns) / 1000);
	jsonbuf_str(&jb, "error", s->error);
	return submit(audit, &jb);
}

/* Who and where, compactly: enough to filter statements without a join. */
static void put_statement_identity(struct jsonbuf *jb, const struct session *s)
{
	const struct identity *w = &s->who;

	put_header(jb, "statement", s);
	if (s->attributed) {
		jsonbuf_u64(jb, "pid", w->pid);
		jsonbuf_strn(jb, "comm", w->comm, strnlen(w->comm, sizeof(w->comm)));
		jsonbuf_u64(jb, "uid", w->uid);
		jsonbuf_str(jb, "user", w->user);
		put_empty_as_null(jb, "container_id", w->ids.container_id);
		put_empty_as_null(jb, "pod_uid", w->ids.pod_uid);
	}
	put_startup(jb, s);
}

int session_emit_statement(struct audit *audit, const struct session *s,
			   const struct track_result *r)
{
	const struct sql_statement *st = track_result_statement(r);
	struct jsonbuf jb;

	if (!audit)
		return 0;
	jsonbuf_init(&jb);
	put_statement_identity(&jb, s);
	jsonbuf_strn(&jb, "sql", r->sql, r->sql_len);
	jsonbuf_str(&jb, "fingerprint", st && st->fingerprint[0] ? st->fingerprint : NULL);
	jsonbuf_str(&jb, "statement_kind", st ? sql_kind_name(st->kind) : NULL);
	jsonbuf_str_array(&jb, "tables", st ? st->tables : NULL, st ? st->n_tables : 0);
	jsonbuf_str_array(&jb, "functions", st ? st->functions : NULL, st ? st->n_functions : 0);
	jsonbuf_u64(&jb, "param_count", st && st->param_count > 0 ? (uint64_t)st->param_count : 0);
	jsonbuf_bool(&jb, "extended", r->extended);
	jsonbuf_u64(&jb, "duration_us", r->duration_ns / 1000);
	if (r->rows >= 0)
		jsonbuf_i64(&jb, "rows", r->rows);
	else
		jsonbuf_null(&jb, "rows");
	jsonbuf_u64(&jb, "client_bytes", r->client_bytes);
	jsonbuf_u64(&jb, "server_bytes", r->server_bytes);
	jsonbuf_str(&jb, "sqlstate", r->sqlstate[0] ? r->sqlstate : NULL);
	jsonbuf_str(&jb, "verdict", track_verdict_name(r->verdict));
	jsonbuf_str(&jb, "rule", r->rule);
	if (!r->finished)
		jsonbuf_bool(&jb, "finished", false);
	if (r->text && !r->text->parse.ok)
		jsonbuf_str(&jb, "parse_error", r->text->parse.error);
	return submit(audit, &jb);
}
