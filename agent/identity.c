#include "identity.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"

#define CONTAINER_ID_MIN_LEN 12	/* the short ids some layouts use */
#define FILEID_KERNFS 0xfe	/* include/linux/exportfs.h: 8 bytes, the kernfs id */
#define PROC_LINE_MAX 8192	/* a cgroup line is at most PATH_MAX + prefix */
#define PASSWD_BUF_MAX (1u << 20)

/* ---- cgroup path parsing ---------------------------------------------- */

/* One '/'-separated component of a path; never NUL-terminated. */
struct segment {
	const char *s;
	size_t n;
};

static bool segment_is(struct segment seg, const char *word)
{
	size_t n = strlen(word);

	return seg.n == n && memcmp(seg.s, word, n) == 0;
}

static bool segment_starts(struct segment seg, const char *prefix)
{
	size_t n = strlen(prefix);

	return seg.n >= n && memcmp(seg.s, prefix, n) == 0;
}

static bool segment_ends(struct segment seg, const char *suffix)
{
	size_t n = strlen(suffix);

	return seg.n >= n && memcmp(seg.s + seg.n - n, suffix, n) == 0;
}

static bool segment_contains(struct segment seg, const char *word)
{
	return memmem(seg.s, seg.n, word, strlen(word)) != NULL;
}

static bool all_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return true;
}

static bool container_id_ok(const char *s, size_t n)
{
	return n >= CONTAINER_ID_MIN_LEN && n <= IDENTITY_CONTAINER_ID_LEN && all_hex(s, n);
}

/* Copies @n bytes (already checked to fit) in lowercase, NUL-terminated. */
static void copy_lower(char *out, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)s[i]);
	out[n] = '\0';
}

/*
 * A pod UID as a driver writes it: 8-4-4-4-12 hex digits separated by '-'
 * (cgroupfs) or '_' (systemd, where '-' means nesting), the same separator
 * throughout. Written to @out with dashes, lowercase.
 */
static bool pod_uid_take(const char *s, size_t n, char out[IDENTITY_POD_UID_LEN + 1])
{
	static const size_t dash_at[] = { 8, 13, 18, 23 };
	char sep;

	if (n != IDENTITY_POD_UID_LEN)
		return false;
	sep = s[dash_at[0]];
	if (sep != '-' && sep != '_')
		return false;
	for (size_t i = 0, d = 0; i < n; i++) {
		if (d < 4 && i == dash_at[d]) {
			if (s[i] != sep)
				return false;
			d++;
		} else if (!isxdigit((unsigned char)s[i])) {
			return false;
		}
	}
	copy_lower(out, s, n);
	for (size_t d = 0; d < 4; d++)
		out[dash_at[d]] = '-';
	return true;
}

/*
 * "pod<uid>" (cgroupfs: /kubepods/burstable/pod<uid>) or
 * "<...>-pod<uid_with_underscores>.slice" (systemd:
 * kubepods-burstable-pod<uid>.slice, kubelet-kubepods-pod<uid>.slice).
 */
static bool pod_segment(struct segment seg, char out[IDENTITY_POD_UID_LEN + 1])
{
	const size_t uid_len = IDENTITY_POD_UID_LEN;
	const size_t slice_len = strlen(".slice");

	if (seg.n == 3 + uid_len && segment_starts(seg, "pod"))
		return pod_uid_take(seg.s + 3, uid_len, out);
	if (seg.n > 1 + 3 + uid_len + slice_len && segment_ends(seg, ".slice")) {
		const char *uid = seg.s + seg.n - slice_len - uid_len;

		if (memcmp(uid - 4, "-pod", 4) == 0)
			return pod_uid_take(uid, uid_len, out);
	}
	return false;
}

/*
 * Container scopes by name, with or without systemd's ".scope" (CRI-O and
 * podman use the same names under cgroupfs). Longer prefixes first.
 *
 * The conmon scopes (crio-conmon-<id>, libpod-conmon-<id>) hold the
 * runtime's monitor process, which lives next to the container, not in it:
 * a process there gets the pod UID but no container id and no runtime,
 * because it is not the workload and must not be reported as one.
 */
static const struct {
	const char *prefix;
	const char *runtime;
	bool monitor;
} scope_names[] = {
	{ "cri-containerd-", "containerd", false },
	{ "crio-conmon-", NULL, true },
	{ "crio-", "crio", false },
	{ "docker-", "docker", false },
	{ "libpod-conmon-", NULL, true },
	{ "libpod-", "podman", false },
};

enum scope_match {
	SCOPE_NONE,
	SCOPE_CONTAINER,
	SCOPE_MONITOR,
};

static enum scope_match scope_segment(struct segment seg, struct cgroup_ids *out)
{
	if (segment_ends(seg, ".scope"))
		seg.n -= strlen(".scope");
	for (size_t i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++) {
		size_t plen = strlen(scope_names[i].prefix);

		if (!segment_starts(seg, scope_names[i].prefix))
			continue;
		if (!container_id_ok(seg.s + plen, seg.n - plen))
			return SCOPE_NONE;
		if (scope_names[i].monitor)
			return SCOPE_MONITOR;
		copy_lower(out->container_id, seg.s + plen, seg.n - plen);
		out->runtime = scope_names[i].runtime;
		return SCOPE_CONTAINER;
	}
	return SCOPE_NONE;
}

static bool user_manager_segment(struct segment seg)
{
	const size_t plen = strlen("user@"), slen = strlen(".service");

	if (seg.n <= plen + slen || !segment_starts(seg, "user@") || !segment_ends(seg, ".service"))
		return false;
	for (size_t i = plen; i < seg.n - slen; i++)
		if (!isdigit((unsigned char)seg.s[i]))
			return false;
	return true;
}

/*
 * Reads the path outside in and stops at the first container: whatever
 * lies below a container's cgroup (".../cri-containerd-<id>.scope/init",
 * a nested runtime, a container's own sub-cgroups) is named by the
 * container itself, so it may neither override the container nor invent a
 * pod. The pod is likewise the outermost one, and only inside a
 * "kubepods" hierarchy. A bare hex segment is a container only right
 * below "docker" (plain docker, cgroupfs) or below a pod (Kubernetes,
 * cgroupfs); its runtime is unknown there (containerd and dockershim both
 * write bare ids), so it stays NULL for pods.
 */
bool cgroup_path_parse(const char *path, struct cgroup_ids *out)
{
	bool in_kubepods = false, prev_pod = false, prev_docker = false;
	const char *p = path;

	memset(out, 0, sizeof(*out));
	if (!path)
		return false;
	while (*p) {
		struct segment seg;
		const char *end = p;
		enum scope_match scope;

		if (*p == '/') {
			p++;
			continue;
		}
		while (*end && *end != '/')
			end++;
		seg = (struct segment){ p, (size_t)(end - p) };
		p = end;

		if (user_manager_segment(seg))
			out->user_delegated = true;
		if (segment_contains(seg, "kubepods"))
			in_kubepods = true;

		scope = scope_segment(seg, out);
		if (scope == SCOPE_CONTAINER || scope == SCOPE_MONITOR)
			break;
		if ((prev_pod || prev_docker) && container_id_ok(seg.s, seg.n)) {
			copy_lower(out->container_id, seg.s, seg.n);
			out->runtime = prev_docker ? "docker" : NULL;
			break;
		}
		prev_docker = segment_is(seg, "docker");
		prev_pod = false;
		if (in_kubepods && !out->pod_uid[0])
			prev_pod = pod_segment(seg, out->pod_uid);
	}
	if (!out->container_id[0] && !out->pod_uid[0]) {
		memset(out, 0, sizeof(*out));
		return false;
	}
	return true;
}

/* ---- bounded line reading ------------------------------------------------ */

/*
 * Reads a file line by line through a fixed buffer. Lines that do not fit
 * are skipped whole, so no caller ever sees a truncated line.
 */
struct line_reader {
	int fd;
	size_t start, end;
	bool eof;
	char buf[PROC_LINE_MAX];
};

/* Returns the next line, NUL-terminated without its '\n', or NULL. */
static char *line_next(struct line_reader *lr)
{
	bool skipping = false;

	for (;;) {
		char *s = lr->buf + lr->start;
		char *nl = memchr(s, '\n', lr->end - lr->start);
		ssize_t r;

		if (nl) {
			lr->start += (size_t)(nl - s) + 1;
			if (skipping) {
				skipping = false;
				continue;
			}
			*nl = '\0';
			return s;
		}
		if (lr->eof) {
			/* A last line without '\n': there is always room for the NUL. */
			if (lr->start == lr->end || skipping)
				return NULL;
			lr->buf[lr->end] = '\0';
			lr->start = lr->end;
			return s;
		}
		if (lr->start > 0) {
			memmove(lr->buf, s, lr->end - lr->start);
			lr->end -= lr->start;
			lr->start = 0;
		}
		if (lr->end == sizeof(lr->buf) - 1) {
			skipping = true;
			lr->end = 0;
		}
		r = read(lr->fd, lr->buf + lr->end, sizeof(lr->buf) - 1 - lr->end);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			/* Nothing half-read is handed out. */
			lr->start = lr->end = 0;
			lr->eof = true;
			return NULL;
		}
		if (r == 0)
			lr->eof = true;
		lr->end += (size_t)r;
	}
}

static int copy_str(char *buf, size_t len, const char *s)
{
	size_t n = strlen(s);

	if (n >= len)
		return -ENAMETOOLONG;
	memcpy(buf, s, n + 1);
	return 0;
}

/* ---- the cgroup2 mount ---------------------------------------------------- */

static struct {
	int err;			/* 0 when found */
	char dir[PATH_MAX];		/* mount point */
	char root[PATH_MAX];		/* cgroup the mount shows at dir, usually "/" */
	int handle_type;		/* of name_to_handle_at on dir, -1 when none */
} cgroup2_mount = { .err = -ENOENT, .handle_type = -1 };

static pthread_once_t cgroup2_mount_once = PTHREAD_ONCE_INIT;

/* mountinfo escapes ' ', '\t', '\n' and '\\' as \ooo; undo it in place. */
static void mountinfo_unescape(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/*
 * One mountinfo line: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE
 * SOURCE SUPEROPTS". Returns true for a cgroup2 mount, with ROOT and
 * MOUNTPOINT unescaped in place.
 */
static bool mountinfo_cgroup2(char *line, char **root, char **dir)
{
	char *fields[5], *save = NULL, *tail = strstr(line, " - ");
	size_t i;

	if (!tail || strncmp(tail + 3, "cgroup2 ", 8) != 0)
		return false;
	*tail = '\0';
	for (i = 0; i < 5; i++) {
		fields[i] = strtok_r(i == 0 ? line : NULL, " ", &save);
		if (!fields[i])
			return false;
	}
	mountinfo_unescape(fields[3]);
	mountinfo_unescape(fields[4]);
	*root = fields[3];
	*dir = fields[4];
	return true;
}

static void cgroup2_mount_find(void)
{
	struct line_reader *lr = malloc(sizeof(*lr));
	union {
		struct file_handle fh;
		char space[sizeof(struct file_handle) + 8];
	} handle;
	char *line;
	int mount_id;

	if (!lr)
		return;
	*lr = (struct line_reader){ .fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC) };
	if (lr->fd < 0) {
		cgroup2_mount.err = -errno;
		free(lr);
		return;
	}
	/* The first cgroup2 mount wins: on a host that is the system's one. */
	while ((line = line_next(lr))) {
		char *root, *dir;

		if (!mountinfo_cgroup2(line, &root, &dir))
			continue;
		if (copy_str(cgroup2_mount.dir, sizeof(cgroup2_mount.dir), dir) == 0 &&
		    copy_str(cgroup2_mount.root, sizeof(cgroup2_mount.root), root) == 0)
			cgroup2_mount.err = 0;
		else
			cgroup2_mount.err = -ENAMETOOLONG;
		break;
	}
	close(lr->fd);
	free(lr);
	if (cgroup2_mount.err)
		return;

	/* Learn the handle kind instead of assuming it: kernels before 5.5
	 * wrote 32-bit ino + generation, which an 8-byte id cannot be. */
	handle.fh.handle_bytes = 8;
	if (name_to_handle_at(AT_FDCWD, cgroup2_mount.dir, &handle.fh, &mount_id, 0) == 0 &&
	    handle.fh.handle_bytes == 8)
		cgroup2_mount.handle_type = handle.fh.handle_type;
	else
		log_debug("identity: no 8-byte file handles on %s: %s", cgroup2_mount.dir,
			  strerror(errno));
}

int cgroup2_mount_path(char *buf, size_t len)
{
	pthread_once(&cgroup2_mount_once, cgroup2_mount_find);
	if (cgroup2_mount.err)
		return cgroup2_mount.err;
	return copy_str(buf, len, cgroup2_mount.dir);
}

/*
 * Joins the mount's root and a path below the mount point into a cgroup
 * path: "/sys/fs/cgroup/unified/a/b" -> "/a/b", the mount point -> "/".
 */
static int cgroup_path_from_mount_path(const char *full, char *buf, size_t len)
{
	const char *dir = cgroup2_mount.dir, *root = cgroup2_mount.root;
	size_t dlen = strcmp(dir, "/") == 0 ? 0 : strlen(dir);
	const char *rest = full + dlen;
	int n;

	if (strncmp(full, dir, dlen) != 0 || (*rest != '\0' && *rest != '/'))
		return -EXDEV;	/* not below the mount point: not visible to us */
	if (strcmp(root, "/") == 0)
		root = "";
	n = snprintf(buf, len, "%s%s", root, *rest || *root ? rest : "/");
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* The reverse: where a cgroup path lives below the mount point. */
static int cgroup_dir_of(const char *cgroup_path, char *buf, size_t len)
{
	const char *root = cgroup2_mount.root;
	size_t rlen = strcmp(root, "/") == 0 ? 0 : strlen(root);
	const char *rest = cgroup_path + rlen;
	int n;

	if (cgroup2_mount.err)
		return cgroup2_mount.err;
	if (strncmp(cgroup_path, root, rlen) != 0 || (*rest != '\0' && *rest != '/'))
		return -EXDEV;
	n = snprintf(buf, len, "%s%s", cgroup2_mount.dir, rest);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

int cgroup_path_from_id(uint64_t cgroup_id, char *buf, size_t len)
{
	union {
		struct file_handle fh;
		char space[sizeof(struct file_handle) + sizeof(uint64_t)];
	} handle;
	char link[64], target[PATH_MAX + 1];
	int mount_fd, fd, err;
	ssize_t n;

	pthread_once(&cgroup2_mount_once, cgroup2_mount_find);
	if (cgroup2_mount.err)
		return cgroup2_mount.err;
	if (cgroup2_mount.handle_type != FILEID_KERNFS)
		return -EOPNOTSUPP;

	mount_fd = open(cgroup2_mount.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mount_fd < 0)
		return -errno;
	handle.fh.handle_bytes = sizeof(uint64_t);
	handle.fh.handle_type = FILEID_KERNFS;
	memcpy(handle.fh.f_handle, &cgroup_id, sizeof(cgroup_id));
	fd = open_by_handle_at(mount_fd, &handle.fh, O_PATH | O_CLOEXEC);
	err = fd < 0 ? -errno : 0;
	close(mount_fd);
	if (err)
		return err;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target));
	err = n < 0 ? -errno : 0;
	close(fd);
	if (err)
		return err;
	if ((size_t)n >= sizeof(target))
		return -ENAMETOOLONG;
	target[n] = '\0';
	return cgroup_path_from_mount_path(target, buf, len);
}

/* ---- enrichment ----------------------------------------------------------- */

static char *user_name_lookup(uint32_t uid)
{
	long hint = sysconf(_SC_GETPW_R_SIZE_MAX);
	size_t size = hint > 0 ? (size_t)hint : 1024;
	char *name = NULL;

	for (; size <= PASSWD_BUF_MAX; size *= 2) {
		struct passwd pw, *found = NULL;
		char *buf = malloc(size);
		int err;

		if (!buf)
			return NULL;
		err = getpwuid_r((uid_t)uid, &pw, buf, size, &found);
		if (err == 0 && found)
			name = strdup(found->pw_name);
		free(buf);
		if (err != ERANGE)
			break;
	}
	return name;
}

/*
 * uid → name, remembered for a while: the passwd lookup may go to LDAP or
 * sssd and block the event loop, and a host has few distinct uids. A
 * miss looks up outside the lock; a name that did not resolve is
 * remembered too (as NULL), so an unknown uid costs one lookup per TTL.
 */
#define USER_CACHE_SLOTS 64
#define USER_CACHE_TTL_NS (60ull * 1000000000ull)

struct user_cache_slot {
	uint32_t uid;
	bool used;
	uint64_t stamp_ns;
	char *name;
};

static struct user_cache_slot user_cache[USER_CACHE_SLOTS];
static pthread_mutex_t user_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static char *user_name(uint32_t uid)
{
	struct user_cache_slot *slot = &user_cache[uid % USER_CACHE_SLOTS];
	uint64_t now = clock_monotonic_ns();
	char *name = NULL;
	bool hit;

	pthread_mutex_lock(&user_cache_lock);
	hit = slot->used && slot->uid == uid && now - slot->stamp_ns < USER_CACHE_TTL_NS;
	if (hit && slot->name)
		name = strdup(slot->name);
	pthread_mutex_unlock(&user_cache_lock);
	if (hit)
		return name;

	name = user_name_lookup(uid);
	pthread_mutex_lock(&user_cache_lock);
	free(slot->name);
	slot->name = name ? strdup(name) : NULL;
	slot->uid = uid;
	slot->used = true;
	slot->stamp_ns = now;
	pthread_mutex_unlock(&user_cache_lock);
	return name;
}

static char *exe_path(int pid_dir)
{
	char target[PATH_MAX + 32];	/* room for the kernel's " (deleted)" */
	ssize_t n = readlinkat(pid_dir, "exe", target, sizeof(target));

	if (n < 0 || (size_t)n >= sizeof(target))
		return NULL;
	target[n] = '\0';
	return strdup(target);
}

/*
 * The "0::PATH" line of /proc/PID/cgroup. The kernel appends " (deleted)"
 * when that cgroup has been removed; the suffix is dropped here, and the
 * caller checks the path against the id anyway.
 */
static char *proc_cgroup_path(int pid_dir)
{
	struct line_reader *lr = malloc(sizeof(*lr));
	char *line, *path = NULL;

	if (!lr)
		return NULL;
	*lr = (struct line_reader){ .fd = openat(pid_dir, "cgroup", O_RDONLY | O_CLOEXEC) };
	if (lr->fd < 0) {
		free(lr);
		return NULL;
	}
	while ((line = line_next(lr))) {
		size_t n;

		if (strncmp(line, "0::", 3) != 0 || line[3] != '/')
			continue;
		line += 3;
		n = strlen(line);
		if (n > strlen(" (deleted)") && segment_ends((struct segment){ line, n }, " (deleted)"))
			line[n - strlen(" (deleted)")] = '\0';
		path = strdup(line);
		break;
	}
	close(lr->fd);
	free(lr);
	return path;
}

/* 1: @path is the cgroup @cgroup_id, 0: it is another one, -errno: cannot tell. */
static int cgroup_path_is_id(const char *path, uint64_t cgroup_id)
{
	char dir[PATH_MAX];
	struct stat st;
	int err;

	pthread_once(&cgroup2_mount_once, cgroup2_mount_find);
	err = cgroup_dir_of(path, dir, sizeof(dir));
	if (err)
		return err;
	if (stat(dir, &st) != 0)
		return -errno;
	return (uint64_t)st.st_ino == cgroup_id;
}

/*
 * The cgroup at connect() time is @cgroup_id; /proc/PID/cgroup says where
 * the process is now, which differs once it moved, and is gone once it
 * exited. The id is the truth; the /proc path is used when it is that id,
 * or when nothing can tell (no id, no cgroup2 mount visible).
 */
static char *cgroup_path_of(const struct identity *id, int pid_dir)
{
	char *proc_path = pid_dir >= 0 ? proc_cgroup_path(pid_dir) : NULL;
	char by_id[PATH_MAX];
	int same = -ENOENT;

	if (id->cgroup_id == 0)
		return proc_path;
	if (proc_path) {
		same = cgroup_path_is_id(proc_path, id->cgroup_id);
		if (same == 1)
			return proc_path;
	}
	if (cgroup_path_from_id(id->cgroup_id, by_id, sizeof(by_id)) == 0) {
		free(proc_path);
		return strdup(by_id);
	}
	if (same == 0) {
		/* /proc names another cgroup, and the connect-time one is gone. */
		free(proc_path);
		return NULL;
	}
	return proc_path;
}

/*
 * Whether /proc/PID (open as @pid_dir) is the process that connected: its
 * starttime (field 22 of stat, clock ticks since boot) matches the start
 * time the kernel recorded at connect. Unknown start times match.
 */
static bool same_process(int pid_dir, uint64_t start_boottime_ns)
{
	char stat[1024];
	unsigned long long ticks;
	long hz = sysconf(_SC_CLK_TCK);
	const char *p;
	ssize_t n;
	int fd;

	if (!start_boottime_ns || hz <= 0)
		return true;
	fd = openat(pid_dir, "stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, stat, sizeof(stat) - 1);
	close(fd);
	if (n <= 0)
		return false;
	stat[n] = '\0';
	/* comm may hold spaces and parentheses: fields restart after the last ')'. */
	p = strrchr(stat, ')');
	if (!p)
		return false;
	for (int field = 3; field <= 22; field++) {	/* to the space before field 22 */
		p = strchr(p + 1, ' ');
		if (!p)
			return false;
	}
	if (sscanf(p + 1, "%llu", &ticks) != 1)
		return false;
	return ticks == start_boottime_ns / (1000000000ull / (unsigned long long)hz);
}

void identity_enrich(struct identity *id, const char *proc_root)
{
	char dir[PATH_MAX];
	int pid_dir = -1, n;

	id->user = user_name(id->uid);

	/* One directory fd for all reads: it stays bound to this process, so
	 * a reused pid cannot mix two processes' answers. */
	n = snprintf(dir, sizeof(dir), "%s/%" PRIu32, proc_root ? proc_root : "/proc", id->pid);
	if (n > 0 && (size_t)n < sizeof(dir))
		pid_dir = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pid_dir >= 0 && !same_process(pid_dir, id->start_boottime_ns)) {
		close(pid_dir);		/* the pid now names another process */
		pid_dir = -1;
	}

	id->exe = pid_dir >= 0 ? exe_path(pid_dir) : NULL;
	id->cgroup_path = cgroup_path_of(id, pid_dir);
	if (pid_dir >= 0)
		close(pid_dir);

	if (id->cgroup_path)
		cgroup_path_parse(id->cgroup_path, &id->ids);
	else
		memset(&id->ids, 0, sizeof(id->ids));
}

void identity_release(struct identity *id)
{
	free(id->user);
	free(id->exe);
	free(id->cgroup_path);
	id->user = NULL;
	id->exe = NULL;
	id->cgroup_path = NULL;
	memset(&id->ids, 0, sizeof(id->ids));
}
