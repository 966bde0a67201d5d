#include "intercept.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>

#include "intercept.skel.h"
#include "agent/sockdiag.h"
#include "common/clock.h"
#include "common/log.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

/* One hook: its program, where it attaches and the name it is pinned as. */
struct hook {
	const char *pin_name;
	enum bpf_attach_type attach_type;
	struct bpf_program *(*program)(struct intercept_bpf *skel);
	bool by_tuple_only;	/* attached only when origins go by 4-tuple */
	struct bpf_link *link;
};

struct intercept {
	struct intercept_bpf *skel;
	int cgroup_fd;
	uint64_t cgroup_id;
	char pin_dir[PATH_MAX];
	/* With listen_pods, origins of connections to the pods address are
	 * also published by 4-tuple (sockops): a pod's socket is out of reach
	 * of the agent's sock_diag. */
	bool by_tuple;
	struct netaddr pods;
	struct hook hooks[5];
};

static struct bpf_program *prog_getpeername4(struct intercept_bpf *s) { return s->progs.dbward_getpeername4; }
static struct bpf_program *prog_getpeername6(struct intercept_bpf *s) { return s->progs.dbward_getpeername6; }
static struct bpf_program *prog_sockops(struct intercept_bpf *s) { return s->progs.dbward_sockops; }
static struct bpf_program *prog_connect6(struct intercept_bpf *s) { return s->progs.dbward_connect6; }
static struct bpf_program *prog_connect4(struct intercept_bpf *s) { return s->progs.dbward_connect4; }

/*
 * Attach order: the hooks that read a connection's record go first and the
 * ones that create it last, so a takeover never redirects a connection
 * that the rest of the new set cannot see.
 */
static const struct hook hook_table[5] = {
	{ "getpeername4", BPF_CGROUP_INET4_GETPEERNAME, prog_getpeername4, false, NULL },
	{ "getpeername6", BPF_CGROUP_INET6_GETPEERNAME, prog_getpeername6, false, NULL },
	{ "sockops", BPF_CGROUP_SOCK_OPS, prog_sockops, true, NULL },
	{ "connect6", BPF_CGROUP_INET6_CONNECT, prog_connect6, false, NULL },
	{ "connect4", BPF_CGROUP_INET4_CONNECT, prog_connect4, false, NULL },
};

/* Without listen_pods the 4-tuple maps are never written: keep them small. */
#define ORIGIN_BY_TUPLE_UNUSED_ENTRIES 64

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[1024];
	size_t n;

	if (level == LIBBPF_DEBUG && log_threshold < LOG_LEVEL_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	if (n > 0 && line[n - 1] == '\n')
		line[n - 1] = '\0';
	/* libbpf's own lines already start with "libbpf: ". */
	if (level == LIBBPF_WARN)
		log_warn("%s", line);
	else
		log_debug("%s", line);
	return 0;
}

static int host_netns_cookie(uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len) < 0)
		err = -errno;
	close(fd);
	return err;
}

static int open_cgroup(const char *path, struct intercept *ic)
{
	struct statfs fs;
	struct stat st;

	ic->cgroup_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ic->cgroup_fd < 0) {
		log_error("intercept.cgroup %s: %s", path, strerror(errno));
		return -errno;
	}
	if (fstatfs(ic->cgroup_fd, &fs) < 0 || fs.f_type != CGROUP2_SUPER_MAGIC) {
		log_error("intercept.cgroup %s is not a cgroup v2 directory", path);
		return -EINVAL;
	}
	if (fstat(ic->cgroup_fd, &st) < 0)
		return -errno;
	ic->cgroup_id = st.st_ino;	/* a cgroup v2 dir's inode is its id */
	return 0;
}

/* mkdir -p @dir, whose deepest existing ancestor must be on a bpffs. */
static int prepare_pin_dir(const char *dir)
{
	char path[PATH_MAX];
	struct statfs fs;
	size_t len = strlen(dir);

	if (len >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dir, len + 1);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			goto not_bpffs;
		*p = '/';
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		goto not_bpffs;
	if (statfs(path, &fs) < 0 || fs.f_type != BPF_FS_MAGIC)
		goto not_bpffs;
	return 0;

not_bpffs:
	log_error("intercept.pin_dir %s is not on a bpf filesystem "
		  "(mount one: mount -t bpf bpf /sys/fs/bpf)", dir);
	return -ENOTDIR;
}

static void fill_settings(struct intercept_settings *s, const struct agent_config *cfg,
			  uint64_t netns_cookie)
{
	memset(s, 0, sizeof(*s));
	memcpy(s->listen_addr, cfg->listen.ip, 16);
	s->listen_port = htons(cfg->listen.port);
	if (cfg->has_listen6) {
		memcpy(s->listen6_addr, cfg->listen6.ip, 16);
		s->listen6_port = htons(cfg->listen6.port);
		s->has_listen6 = 1;
	}
	if (cfg->has_listen_pods) {
		memcpy(s->pods_addr, cfg->listen_pods.ip, 16);
		s->pods_port = htons(cfg->listen_pods.port);
		s->has_pods = 1;
	}
	s->fail_mode = cfg->fail == CONFIG_FAIL_OPEN ? INTERCEPT_FAIL_OPEN : INTERCEPT_FAIL_CLOSED;
	s->upstream_mark = cfg->upstream_mark;
	s->host_netns_cookie = netns_cookie;
	s->heartbeat_timeout_ns = (uint64_t)cfg->heartbeat_timeout_ms * 1000000ull;
}

static int fill_targets(struct intercept *ic, const struct agent_config *cfg)
{
	for (size_t i = 0; i < cfg->n_targets; i++) {
		const struct config_target *t = &cfg->targets[i];
		struct intercept_target_key key = {
			.prefixlen = INTERCEPT_TARGET_KEY_PREFIX_BITS,
			.port = htons(t->port),
		};
		struct intercept_target_value value = { .target_index = (uint32_t)i };

		if (t->has_cidr) {
			key.prefixlen += t->cidr.prefixlen;
			memcpy(key.addr, t->cidr.ip, 16);
		}
		if (bpf_map__update_elem(ic->skel->maps.targets, &key, sizeof(key),
					 &value, sizeof(value), BPF_ANY) < 0) {
			log_error("intercept: adding target %zu: %s", i, strerror(errno));
			return -errno;
		}
	}
	return 0;
}

/* A pinned link we may take over: a cgroup link of the right kind on our cgroup. */
static bool link_is_ours(struct bpf_link *link, const struct intercept *ic,
			 enum bpf_attach_type type)
{
	struct bpf_link_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &len) < 0)
		return false;
	return info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == ic->cgroup_id &&
	       info.cgroup.attach_type == type;
}

/*
 * Attaches one hook. A link pinned by an earlier agent on the same cgroup
 * is updated in place to the new program (atomic: no moment without a
 * program); one pinned for another cgroup is replaced.
 */
static int attach_hook(struct intercept *ic, struct hook *h)
{
	struct bpf_program *prog = h->program(ic->skel);
	char path[PATH_MAX];
	struct bpf_link *link;
	int err;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", ic->pin_dir, h->pin_name) >= sizeof(path))
		return -ENAMETOOLONG;
	/* Nothing pinned is the normal first start, not worth libbpf's warning. */
	link = access(path, F_OK) == 0 ? bpf_link__open(path) : NULL;
	if (link) {
		if (link_is_ours(link, ic, h->attach_type) &&
		    bpf_link__update_program(link, prog) == 0) {
			log_info("intercept: took over pinned %s", path);
			h->link = link;
			return 0;
		}
		log_warn("intercept: replacing stale pinned link %s", path);
		bpf_link__unpin(link);
		bpf_link__destroy(link);
	}

	link = bpf_program__attach_cgroup(prog, ic->cgroup_fd);
	if (!link) {
		err = -errno;
		log_error("intercept: attaching %s: %s", h->pin_name, strerror(-err));
		return err;
	}
	err = bpf_link__pin(link, path);
	if (err) {
		log_error("intercept: pinning %s: %s", path, strerror(-err));
		bpf_link__destroy(link);
		return err;
	}
	h->link = link;
	return 0;
}

/* A hook this configuration does not use, left pinned by an earlier agent
 * (one with listen_pods): detached once the rest are in place. */
static void detach_unused(struct intercept *ic, const struct hook *h)
{
	char path[PATH_MAX];
	struct bpf_link *link;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", ic->pin_dir, h->pin_name) >= sizeof(path) ||
	    access(path, F_OK) != 0)
		return;
	link = bpf_link__open(path);
	if (!link) {
		log_warn("intercept: cannot open pinned %s to detach it: %s", path, strerror(errno));
		return;
	}
	log_info("intercept: detaching pinned %s: not used without listen_pods", path);
	bpf_link__unpin(link);
	bpf_link__destroy(link);
}

/* Origins of connections from the agent's own namespace are found through
 * sock_diag: make sure this kernel answers before anything is redirected. */
static int check_sockdiag(uint32_t mark)
{
	int fd = sockdiag_open();
	int err = fd < 0 ? fd : sockdiag_selftest(fd, mark);

	if (fd >= 0)
		close(fd);
	if (err)
		log_error("intercept: sock_diag self-test on a loopback connection failed: %s (to "
			  "find connections' origins the kernel needs CONFIG_INET_DIAG and "
			  "CONFIG_INET_TCP_DIAG, or the inet_diag and tcp_diag modules)",
			  strerror(-err));
	return err;
}

int intercept_start(const struct agent_config *cfg, struct intercept **out)
{
	struct intercept *ic = calloc(1, sizeof(*ic));
	uint64_t netns_cookie;
	int err;

	if (!ic)
		return -ENOMEM;
	ic->cgroup_fd = -1;
	memcpy(ic->hooks, hook_table, sizeof(hook_table));
	ic->by_tuple = cfg->has_listen_pods;
	ic->pods = cfg->listen_pods;
	libbpf_set_print(libbpf_log);
	snprintf(ic->pin_dir, sizeof(ic->pin_dir), "%s", cfg->pin_dir);

	err = open_cgroup(cfg->cgroup, ic);
	if (err)
		goto fail;
	err = prepare_pin_dir(cfg->pin_dir);
	if (err)
		goto fail;
	err = host_netns_cookie(&netns_cookie);
	if (err) {
		log_error("intercept: reading the network namespace cookie: %s "
			  "(needs Linux 5.14 or later)", strerror(-err));
		goto fail;
	}
	if ((err = check_sockdiag(cfg->upstream_mark)) < 0)
		goto fail;

	ic->skel = intercept_bpf__open();
	if (!ic->skel) {
		err = -errno;
		log_error("intercept: opening the BPF object: %s", strerror(-err));
		goto fail;
	}
	fill_settings(&ic->skel->bss->settings, cfg, netns_cookie);
	ic->skel->bss->heartbeat_ns = clock_monotonic_ns();
	if (!ic->by_tuple) {
		bpf_map__set_max_entries(ic->skel->maps.origin_by_tuple,
					 ORIGIN_BY_TUPLE_UNUSED_ENTRIES);
		bpf_map__set_max_entries(ic->skel->maps.tuple_collided,
					 ORIGIN_BY_TUPLE_UNUSED_ENTRIES);
	}
	err = intercept_bpf__load(ic->skel);
	if (err) {
		log_error("intercept: loading the BPF programs: %s", strerror(-err));
		goto fail;
	}
	err = fill_targets(ic, cfg);
	if (err)
		goto fail;
	intercept_heartbeat(ic);
	for (size_t i = 0; i < sizeof(ic->hooks) / sizeof(ic->hooks[0]); i++) {
		if (ic->hooks[i].by_tuple_only && !ic->by_tuple)
			continue;
		err = attach_hook(ic, &ic->hooks[i]);
		if (err)
			goto fail;
	}
	for (size_t i = 0; i < sizeof(ic->hooks) / sizeof(ic->hooks[0]); i++)
		if (ic->hooks[i].by_tuple_only && !ic->by_tuple)
			detach_unused(ic, &ic->hooks[i]);
	*out = ic;
	return 0;

fail:
	/* Pinned links stay: a failed (re)start must not lift fail-closed. */
	intercept_stop(ic, false);
	return err;
}

void intercept_heartbeat(struct intercept *ic)
{
	__atomic_store_n(&ic->skel->bss->heartbeat_ns, clock_monotonic_ns(), __ATOMIC_RELEASE);
}

/* Whether a collision found tuple_collided full in the last
 * INTERCEPT_COLLIDED_NS: then no key can be trusted (intercept.h). */
static bool unnoted_lately(struct intercept *ic)
{
	uint64_t when = __atomic_load_n(&ic->skel->bss->unnoted_ns, __ATOMIC_ACQUIRE);

	return when && clock_monotonic_ns() - when < INTERCEPT_COLLIDED_NS;
}

/* A key whose entry was lost (taken, and not put back): noted, or if the
 * notes are full, no key is trusted for a while. */
static void note_lost_key(struct intercept *ic, const struct intercept_tuple *key)
{
	uint64_t now = clock_monotonic_ns();

	if (bpf_map_update_elem(bpf_map__fd(ic->skel->maps.tuple_collided), key, &now, BPF_ANY) < 0)
		__atomic_store_n(&ic->skel->bss->unnoted_ns, now, __ATOMIC_RELEASE);
}

/* Whether another socket reached the agent under @key (intercept.h); the
 * note is dropped: the live connection under that key is handled now. */
static bool take_collision_note(struct intercept *ic, const struct intercept_tuple *key)
{
	int notes = bpf_map__fd(ic->skel->maps.tuple_collided);
	uint64_t when;

	if (bpf_map_lookup_elem(notes, key, &when) < 0)
		return false;
	bpf_map_delete_elem(notes, key);
	return true;
}

/*
 * With listen_pods, a connection to the pods address: the entry sockops
 * published under the 4-tuple. It is taken only once @fd proved alive (a
 * dead connection in the accept queue must not take the entry of the new
 * socket that reused its port), and only if the entry taken is the one
 * looked at (map slots are reused without a grace period; one that was
 * replaced in between goes back) and no other socket reached the agent
 * under the same key.
 */
static int take_by_tuple(struct intercept *ic, int fd, const struct netaddr *peer,
			 const struct netaddr *local, struct intercept_origin *out)
{
	int map = bpf_map__fd(ic->skel->maps.origin_by_tuple);
	struct intercept_origin seen;
	struct intercept_tuple key;
	char text[NETADDR_STRLEN];

	memset(&key, 0, sizeof(key));
	memcpy(key.peer_addr, peer->ip, 16);
	memcpy(key.local_addr, local->ip, 16);
	key.peer_port = htons(peer->port);
	key.local_port = htons(local->port);
	if (bpf_map_lookup_elem(map, &key, &seen) < 0) {
		if (sockdiag_still_connected(fd))
			take_collision_note(ic, &key);
		return -ENOENT;
	}
	if (!sockdiag_still_connected(fd))
		return -ENOENT;
	if (bpf_map_lookup_and_delete_elem(map, &key, out) < 0)
		return -ENOENT;
	if (memcmp(&seen, out, sizeof(seen))) {
		if (bpf_map_update_elem(map, &key, out, BPF_NOEXIST) < 0)
			note_lost_key(ic, &key);
		return -ENOENT;
	}
	if (take_collision_note(ic, &key)) {
		netaddr_format(peer, text, sizeof(text));
		log_warn("intercept: connection from %s refused: another socket reached the agent "
			 "from the same address and port (the record found is pid %u's, network "
			 "namespace %" PRIu64 ")", text, out->who.tgid,
			 (uint64_t)out->who.netns_cookie);
		return -EADDRINUSE;
	}
	if (unnoted_lately(ic)) {
		netaddr_format(peer, text, sizeof(text));
		log_warn("intercept: connection from %s refused: a collision found the notes of "
			 "forged addresses full less than %llu s ago, so no address is trusted",
			 text, (unsigned long long)(INTERCEPT_COLLIDED_NS / 1000000000ull));
		return -EADDRINUSE;
	}
	return 0;
}

int intercept_find_origin(struct intercept *ic, int diag_fd, int fd, const struct netaddr *peer,
			  const struct netaddr *local, struct intercept_origin *out)
{
	uint64_t cookie;
	int err;

	if (ic->by_tuple && local->port == ic->pods.port && !memcmp(local->ip, ic->pods.ip, 16))
		return take_by_tuple(ic, fd, peer, local, out);
	err = sockdiag_peer_cookie(diag_fd, fd, peer, local, &cookie);
	if (err)
		return err;
	if (bpf_map_lookup_elem(bpf_map__fd(ic->skel->maps.origin_by_cookie), &cookie, out) < 0)
		return -errno;
	/* An LRU slot can be reused while it is copied: the key must match. */
	if (out->socket_cookie != cookie)
		return -ENOENT;
	/*
	 * Last: our end still holds the tuple, so the socket found under it
	 * is our own peer. A workload end that died in the accept queue, or
	 * reconnected, while a new connection took its tuple, is caught.
	 */
	return sockdiag_still_connected(fd) ? 0 : -ENOENT;
}

void intercept_sweep(struct intercept *ic)
{
	int notes = bpf_map__fd(ic->skel->maps.tuple_collided);
	struct intercept_tuple key, next;
	uint64_t now = clock_monotonic_ns(), when;
	bool more;

	if (!ic->by_tuple || bpf_map_get_next_key(notes, NULL, &key) != 0)
		return;
	do {	/* the next key first: a deleted one would restart the walk */
		more = bpf_map_get_next_key(notes, &key, &next) == 0;
		if (bpf_map_lookup_elem(notes, &key, &when) == 0 && now - when > INTERCEPT_COLLIDED_NS)
			bpf_map_delete_elem(notes, &key);
		key = next;
	} while (more);
}

void intercept_forget_origin(struct intercept *ic, uint64_t socket_cookie)
{
	bpf_map_delete_elem(bpf_map__fd(ic->skel->maps.origin_by_cookie), &socket_cookie);
}

uint64_t intercept_counter(struct intercept *ic, enum intercept_counter which)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t total = 0;
	uint32_t key = which;
	uint64_t *values;

	if (ncpu <= 0)
		return 0;
	values = calloc((size_t)ncpu, sizeof(*values));
	if (!values)
		return 0;
	if (bpf_map_lookup_elem(bpf_map__fd(ic->skel->maps.counters), &key, values) == 0)
		for (int i = 0; i < ncpu; i++)
			total += values[i];
	free(values);
	return total;
}

static void release_links(struct intercept *ic, bool detach)
{
	/* Reverse order: stop creating records before stopping to read them. */
	for (size_t i = sizeof(ic->hooks) / sizeof(ic->hooks[0]); i-- > 0;) {
		struct hook *h = &ic->hooks[i];

		if (!h->link)
			continue;
		if (detach)
			bpf_link__unpin(h->link);
		bpf_link__destroy(h->link);
		h->link = NULL;
	}
	if (detach && ic->pin_dir[0])
		rmdir(ic->pin_dir);
}

void intercept_detach(struct intercept *ic)
{
	if (ic)
		release_links(ic, true);
}

void intercept_stop(struct intercept *ic, bool detach)
{
	if (!ic)
		return;
	release_links(ic, detach);
	intercept_bpf__destroy(ic->skel);
	if (ic->cgroup_fd >= 0)
		close(ic->cgroup_fd);
	free(ic);
}
