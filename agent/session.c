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
	free(s->packed);
	s->db_user = s->database = s->application_name = NULL;
	s->packed = NULL;
	s->packed_len = 0;
}

/* protobuf-c reads strings as char *; it never writes through them. */
static char *str(const char *p)
{
	return (char *)(p ? p : "");
}

static char *str_empty_as_unset(const char *p)
{
	return str(p && p[0] ? p : NULL);
}

/* Who opened the connection, as the kernel recorded it and /proc told. */
static void fill_identity(Dbward__V1__Identity *id, const struct identity *w)
{
	id->pid = w->pid;
	id->tid = w->tid;
	id->uid = w->uid;
	id->gid = w->gid;
	id->comm = str(w->comm);	/* NUL-terminated when attributed */
	id->exe = str(w->exe);
	id->user = str(w->user);
	id->cgroup_path = str(w->cgroup_path);
	id->cgroup_id = w->cgroup_id;
	id->container_id = str_empty_as_unset(w->ids.container_id);
	id->pod_uid = str_empty_as_unset(w->ids.pod_uid);
	id->container_runtime = str(w->ids.runtime);
	id->netns_cookie = w->netns_cookie;
}

/* What every event of the connection carries; the strings stay @s's. */
struct session_view {
	Dbward__V1__Session session;
	Dbward__V1__Identity identity;
	char client[NETADDR_STRLEN];
	char server[NETADDR_STRLEN];
};

static void fill_session(struct session_view *v, const struct session *s)
{
	dbward__v1__session__init(&v->session);
	dbward__v1__identity__init(&v->identity);
	v->session.session_id = str(s->id);
	netaddr_format(&s->client, v->client, sizeof(v->client));
	v->session.client = v->client;
	if (s->attributed) {
		fill_identity(&v->identity, &s->who);
		v->session.identity = &v->identity;
		netaddr_format(&s->server, v->server, sizeof(v->server));
		v->session.server = v->server;
	}
	v->session.db_user = str(s->db_user);
	v->session.database = str(s->database);
	v->session.application_name = str(s->application_name);
	v->session.encrypted = s->encrypted;
}

/* The session as serialized Event field 6, packed once. 0 or -ENOMEM. */
static int session_packed(struct session *s)
{
	Dbward__V1__Event head = DBWARD__V1__EVENT__INIT;
	struct session_view v;
	size_t len;

	if (s->packed)
		return 0;
	fill_session(&v, s);
	head.session = &v.session;
	len = dbward__v1__event__get_packed_size(&head);
	if (!(s->packed = malloc(len)))
		return -ENOMEM;
	s->packed_len = dbward__v1__event__pack(&head, s->packed);
	return 0;
}

static struct audit_item *stage(struct audit_batch *b, struct session *s,
				const Dbward__V1__Event *ev)
{
	if (session_packed(s) < 0)
		return NULL;
	return audit_stage(b, s->packed, s->packed_len, ev);
}

struct audit_item *session_stage_open(struct audit_batch *b, struct session *s)
{
	Dbward__V1__Event ev = DBWARD__V1__EVENT__INIT;
	Dbward__V1__ConnectionOpen open = DBWARD__V1__CONNECTION_OPEN__INIT;

	open.cancel_request = s->cancel_request;
	ev.body_case = DBWARD__V1__EVENT__BODY_CONNECTION_OPEN;
	ev.connection_open = &open;
	return stage(b, s, &ev);
}

struct audit_item *session_stage_close(struct audit_batch *b, struct session *s)
{
	Dbward__V1__Event ev = DBWARD__V1__EVENT__INIT;
	Dbward__V1__ConnectionClose close = DBWARD__V1__CONNECTION_CLOSE__INIT;

	close.client_bytes = s->client_bytes;
	close.server_bytes = s->server_bytes;
	close.duration_us = (clock_monotonic_ns() - s->start_ns) / 1000;
	close.error = str(s->error);
	close.cancel_request = s->cancel_request;
	ev.body_case = DBWARD__V1__EVENT__BODY_CONNECTION_CLOSE;
	ev.connection_close = &close;
	return stage(b, s, &ev);
}

/* Longest prefix of @p (at most @max bytes) that does not split a UTF-8
 * sequence. */
static size_t utf8_cut(const char *p, size_t len, size_t max)
{
	size_t n = len;

	if (n <= max)
		return n;
	n = max;
	while (n > 0 && ((unsigned char)p[n] & 0xc0) == 0x80)
		n--;
	return n;
}

/*
 * The statement's own text as a C string. It is a span of a NUL-terminated
 * text: used in place when it ends that text, copied otherwise (into
 * @small, or *@heap which the caller frees). *@cut says whether it had to
 * be shortened (SESSION_SQL_MAX, or no memory for the whole of it).
 */
static char *statement_sql(const struct track_result *r, char *small, size_t small_len,
			   char **heap, protobuf_c_boolean *cut)
{
	size_t n;

	*heap = NULL;
	*cut = false;
	if (!r->sql)
		return str(NULL);
	n = utf8_cut(r->sql, r->sql_len, SESSION_SQL_MAX);
	if (n == r->sql_len && r->sql[n] == '\0')
		return (char *)r->sql;
	if (n >= small_len && !(*heap = malloc(n + 1)))
		n = utf8_cut(r->sql, n, small_len - 1);		/* better cut than lost */
	*cut = n < r->sql_len;
	memcpy(*heap ? *heap : small, r->sql, n);
	(*heap ? *heap : small)[n] = '\0';
	return *heap ? *heap : small;
}

struct audit_item *session_stage_statement(struct audit_batch *b, struct session *s,
					   const struct track_result *r)
{
	const struct sql_statement *st = track_result_statement(r);
	Dbward__V1__Event ev = DBWARD__V1__EVENT__INIT;
	Dbward__V1__Statement body = DBWARD__V1__STATEMENT__INIT;
	struct audit_item *it;
	char small[1024], *heap;

	body.sql = statement_sql(r, small, sizeof(small), &heap, &body.sql_truncated);
	body.fingerprint = str_empty_as_unset(st ? st->fingerprint : NULL);
	body.statement_kind = str(st ? sql_kind_name(st->kind) : NULL);
	if (r->function_call) {
		body.statement_kind = "function_call";
		body.function_oid = r->function_oid;
	}
	if (st) {
		body.tables = st->tables;
		body.n_tables = st->n_tables;
		body.functions = st->functions;
		body.n_functions = st->n_functions;
		body.param_count = st->param_count > 0 ? (uint32_t)st->param_count : 0;
	}
	body.extended = r->extended;
	body.duration_us = r->duration_ns / 1000;
	body.rows = r->rows >= 0 ? r->rows : -1;
	body.client_bytes = r->client_bytes;
	body.server_bytes = r->server_bytes;
	body.sqlstate = str(r->sqlstate);
	body.verdict = str(track_verdict_name(r->verdict));
	body.rule = str(r->rule);
	body.finished = r->finished;
	if (r->text && !r->text->parse.ok)
		body.parse_error = str(r->text->parse.error);
	ev.body_case = DBWARD__V1__EVENT__BODY_STATEMENT;
	ev.statement = &body;
	it = stage(b, s, &ev);
	free(heap);
	return it;
}
