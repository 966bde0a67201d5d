/*
 * Who opened a connection: the kernel's record (bpf/intercept.h) enriched
 * from /proc, the passwd database and the cgroup path, which names the
 * container and the Kubernetes pod for every common runtime and driver.
 */
#ifndef DBWARD_AGENT_IDENTITY_H
#define DBWARD_AGENT_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDENTITY_CONTAINER_ID_LEN 64	/* hex digits, as runtimes print them */
#define IDENTITY_POD_UID_LEN 36		/* 8-4-4-4-12, with dashes */

/* What a cgroup path says about its container, when anything. */
struct cgroup_ids {
	char container_id[IDENTITY_CONTAINER_ID_LEN + 1];	/* "" when none */
	char pod_uid[IDENTITY_POD_UID_LEN + 1];			/* "" when none */
	const char *runtime;	/* "containerd", "crio", "docker", "podman" or NULL */
	/*
	 * Found below a systemd user manager (user@UID.service): that user
	 * names the cgroups there as they please, so the ids are a claim by
	 * the user, not a fact established by a root-owned runtime.
	 */
	bool user_delegated;
};

/*
 * Parses a cgroup v2 path ("/kubepods.slice/.../cri-containerd-<id>.scope",
 * "/kubepods/burstable/pod<uid>/<id>", "/system.slice/docker-<id>.scope",
 * "/docker/<id>", ...). Pod UIDs come back with dashes whatever the driver
 * wrote. Returns true when a container or a pod was found. The outermost
 * container wins: cgroups below it are named by the container itself and
 * cannot change the answer. Pure: no allocation, reads only up to the NUL.
 */
bool cgroup_path_parse(const char *path, struct cgroup_ids *out);

/*
 * Resolves a cgroup v2 id (what bpf_get_current_cgroup_id() returns, the
 * inode number of the cgroup's directory) to its path ("/a/b", "/" for
 * the root) without any /proc/PID, through a kernfs file handle on the
 * cgroup2 mount. Needs CAP_DAC_READ_SEARCH. Returns 0, -ENAMETOOLONG when
 * @len is too small, -ESTALE when no live cgroup has that id, or another
 * -errno.
 */
int cgroup_path_from_id(uint64_t cgroup_id, char *buf, size_t len);

/*
 * Where cgroup2 is mounted in this mount namespace ("/sys/fs/cgroup", or
 * "/sys/fs/cgroup/unified" on hybrid hosts), from /proc/self/mountinfo,
 * looked up once per process. Returns 0, -ENOENT when cgroup2 is not
 * mounted, -ENAMETOOLONG, or another -errno.
 */
int cgroup2_mount_path(char *buf, size_t len);

struct identity {
	uint32_t pid;		/* process (tgid) */
	uint32_t tid;		/* thread that called connect() */
	uint32_t uid;
	uint32_t gid;
	uint64_t cgroup_id;
	uint64_t netns_cookie;
	uint64_t start_boottime_ns;	/* 0: unknown, /proc is trusted as is */
	char comm[16];
	/* Enriched; each NULL when it could not be learned. Owned. */
	char *user;		/* passwd name of uid */
	char *exe;		/* /proc/PID/exe */
	char *cgroup_path;	/* cgroup v2 path of cgroup_id */
	struct cgroup_ids ids;
};

/*
 * Fills the enriched fields from the kernel ones. @proc_root is "/proc"
 * except in tests. Never fails: what cannot be learned stays NULL.
 * The enriched fields are overwritten, not freed: call it on a struct
 * whose enriched fields are NULL (zeroed, or released).
 * It may block (passwd lookups can go to NSS services): call it off the
 * event loop or cache by uid.
 */
void identity_enrich(struct identity *id, const char *proc_root);
void identity_release(struct identity *id);

#endif
