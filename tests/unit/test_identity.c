/*
 * Identity enrichment: the cgroup path parser over every runtime and
 * driver layout (and paths built to fool it), enrichment from the real
 * /proc and from fake /proc trees, and id -> path resolution on a real
 * cgroup made for the test.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/identity.h"

#define CID "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899"
#define CID2 "aa11bb22cc33dd44ee55ff6600778899aabbccddeeff00112233445566778899"
#define CID_SHORT "0123456789ab"
#define CID_65 CID "0"
#define CID_11 "0123456789a"
#define POD "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"
#define POD_US "1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901"
#define NO_SUCH_UID 3999999999u

/* ---- cgroup_path_parse: one named test per layout ------------------------ */

static void expect_ids(const char *path, const char *container_id, const char *pod_uid,
		       const char *runtime)
{
	struct cgroup_ids ids;
	bool found;

	memset(&ids, 0x5a, sizeof(ids));	/* the parser must clear stale fields */
	found = cgroup_path_parse(path, &ids);
	cr_expect_eq(found, container_id[0] || pod_uid[0], "found for %s", path);
	cr_expect_str_eq(ids.container_id, container_id, "container id of %s", path);
	cr_expect_str_eq(ids.pod_uid, pod_uid, "pod uid of %s", path);
	if (runtime)
		cr_expect(ids.runtime && strcmp(ids.runtime, runtime) == 0,
			  "runtime of %s: %s, want %s", path, ids.runtime ? ids.runtime : "NULL",
			  runtime);
	else
		cr_expect_null(ids.runtime, "runtime of %s: %s, want NULL", path,
			       ids.runtime ? ids.runtime : "NULL");
}

#define LAYOUT(name, path, container_id, pod_uid, runtime) \
	Test(cgroup_path_parse, name) { expect_ids(path, container_id, pod_uid, runtime); }

/* Kubernetes, systemd driver. */
LAYOUT(systemd_burstable_containerd,
       "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" POD_US
       ".slice/cri-containerd-" CID ".scope", CID, POD, "containerd")
LAYOUT(systemd_besteffort_containerd,
       "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" POD_US
       ".slice/cri-containerd-" CID ".scope", CID, POD, "containerd")
LAYOUT(systemd_guaranteed_containerd,
       "/kubepods.slice/kubepods-pod" POD_US ".slice/cri-containerd-" CID ".scope",
       CID, POD, "containerd")
LAYOUT(systemd_burstable_crio,
       "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" POD_US
       ".slice/crio-" CID ".scope", CID, POD, "crio")
LAYOUT(systemd_guaranteed_docker,
       "/kubepods.slice/kubepods-pod" POD_US ".slice/docker-" CID ".scope", CID, POD, "docker")
LAYOUT(systemd_crio_conmon_gives_pod_but_no_container,
       "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" POD_US
       ".slice/crio-conmon-" CID ".scope", "", POD, NULL)
LAYOUT(systemd_pod_slice_alone_gives_pod,
       "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" POD_US ".slice",
       "", POD, NULL)

/* Kubernetes, cgroupfs driver: bare ids, runtime not named by the path. */
LAYOUT(cgroupfs_burstable, "/kubepods/burstable/pod" POD "/" CID, CID, POD, NULL)
LAYOUT(cgroupfs_guaranteed, "/kubepods/pod" POD "/" CID, CID, POD, NULL)
LAYOUT(cgroupfs_besteffort, "/kubepods/besteffort/pod" POD "/" CID, CID, POD, NULL)
LAYOUT(cgroupfs_crio, "/kubepods/burstable/pod" POD "/crio-" CID, CID, POD, "crio")
LAYOUT(cgroupfs_crio_conmon, "/kubepods/burstable/pod" POD "/crio-conmon-" CID, "", POD, NULL)
LAYOUT(cgroupfs_pod_alone, "/kubepods/burstable/pod" POD, "", POD, NULL)

/* Nested (kind) and sub-cgroups below a container. */
LAYOUT(kind_kubelet_slice_besteffort,
       "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
       "kubelet-kubepods-besteffort-pod" POD_US ".slice/cri-containerd-" CID ".scope",
       CID, POD, "containerd")
LAYOUT(kind_cgroupfs, "/kubelet/kubepods/besteffort/pod" POD "/" CID, CID, POD, NULL)
LAYOUT(containerd_scope_with_init_subcgroup,
       "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" POD_US
       ".slice/cri-containerd-" CID ".scope/init", CID, POD, "containerd")
LAYOUT(docker_scope_with_app_subcgroup, "/system.slice/docker-" CID ".scope/app", CID, "",
       "docker")
/* kind seen from the host: the node container is the outermost one. */
LAYOUT(outer_container_wins_over_nested_kind,
       "/system.slice/docker-" CID2 ".scope/kubelet.slice/kubelet-kubepods.slice/"
       "kubelet-kubepods-pod" POD_US ".slice/cri-containerd-" CID ".scope",
       CID2, "", "docker")

/* Plain docker and podman. */
LAYOUT(docker_cgroupfs, "/docker/" CID, CID, "", "docker")
LAYOUT(docker_systemd, "/system.slice/docker-" CID ".scope", CID, "", "docker")
LAYOUT(podman_machine_slice, "/machine.slice/libpod-" CID ".scope", CID, "", "podman")
LAYOUT(podman_container_subcgroup, "/machine.slice/libpod-" CID ".scope/container", CID, "",
       "podman")
LAYOUT(podman_rootless,
       "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" CID ".scope",
       CID, "", "podman")
LAYOUT(podman_cgroupfs, "/libpod_parent/libpod-" CID, CID, "", "podman")
LAYOUT(podman_conmon_is_not_a_container, "/machine.slice/libpod-conmon-" CID ".scope", "", "",
       NULL)
LAYOUT(short_id_in_scope, "/system.slice/docker-" CID_SHORT ".scope", CID_SHORT, "", "docker")
LAYOUT(short_id_bare_docker, "/docker/" CID_SHORT, CID_SHORT, "", "docker")
LAYOUT(uppercase_hex_comes_back_lowercase,
       "/kubepods/pod1B2C3D4E-5F60-7182-93A4-B5C6D7E8F901/3F4E5D6C7B8A99887766554433221100"
       "FFEEDDCCBBAA00112233445566778899", CID, POD, NULL)
LAYOUT(doubled_slashes, "//system.slice//docker-" CID ".scope//", CID, "", "docker")

/* No container there. */
LAYOUT(root_cgroup, "/", "", "", NULL)
LAYOUT(empty_string, "", "", "", NULL)
LAYOUT(user_session, "/user.slice/user-1000.slice/session-3.scope", "", "", NULL)
LAYOUT(system_service, "/system.slice/postgresql.service", "", "", NULL)
LAYOUT(test_cgroup, "/dbward-test-1234", "", "", NULL)
LAYOUT(docker_dir_alone, "/docker", "", "", NULL)
LAYOUT(bare_hex_outside_docker_or_pod, "/process_api/2d8f64512d45fcbca7affd05f72d598f", "", "",
       NULL)
LAYOUT(bare_hex_at_root, "/" CID, "", "", NULL)

/* Built to fool the parser. */
LAYOUT(pod_prefix_with_garbage, "/kubepods/burstable/podnot-a-uid-but-exactly-36-chars-xx/" CID,
       "", "", NULL)
LAYOUT(pod_uid_non_hex, "/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f90g/" CID, "",
       "", NULL)
LAYOUT(pod_uid_too_short, "/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f90/" CID,
       "", "", NULL)
LAYOUT(pod_uid_too_long, "/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f9011/" CID,
       "", "", NULL)
LAYOUT(pod_uid_separators_misplaced,
       "/kubepods/burstable/pod1b2c3d4e5-f60-7182-93a4-b5c6d7e8f901/" CID, "", "", NULL)
LAYOUT(pod_uid_separators_mixed, "/kubepods/burstable/pod1b2c3d4e-5f60_7182-93a4-b5c6d7e8f901",
       "", "", NULL)
LAYOUT(systemd_pod_garbage, "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podXYZ"
       ".slice/cri-containerd-" CID ".scope", CID, "", "containerd")
LAYOUT(systemd_pod_without_dash, "/kubepods.slice/kubepodspod" POD_US ".slice", "", "", NULL)
LAYOUT(pod_outside_kubepods, "/pod" POD "/" CID, "", "", NULL)
LAYOUT(hex_id_65_bare, "/docker/" CID_65, "", "", NULL)
LAYOUT(hex_id_65_in_scope, "/system.slice/docker-" CID_65 ".scope", "", "", NULL)
LAYOUT(hex_id_11_too_short, "/docker/" CID_11, "", "", NULL)
LAYOUT(scope_id_not_hex, "/system.slice/docker-zz4e5d6c7b8a99887766554433221100ffeeddcc.scope",
       "", "", NULL)
LAYOUT(scope_id_empty, "/system.slice/docker-.scope", "", "", NULL)
LAYOUT(scope_prefix_only, "/system.slice/cri-containerd-", "", "", NULL)
/* A container (or a user) naming sub-cgroups to pass as another pod. */
LAYOUT(container_cannot_claim_pod_below_it,
       "/system.slice/docker-" CID ".scope/kubepods/pod" POD "/" CID2, CID, "", "docker")
LAYOUT(conmon_scope_cannot_claim_container_below_it,
       "/kubepods/burstable/pod" POD "/crio-conmon-" CID "/crio-" CID2, "", POD, NULL)
LAYOUT(container_cannot_override_its_id,
       "/kubepods/pod" POD "/" CID "/docker/" CID2, CID, POD, NULL)

Test(cgroup_path_parse, null_path_is_nothing)
{
	struct cgroup_ids ids;

	cr_assert_not(cgroup_path_parse(NULL, &ids));
	cr_assert_str_empty(ids.container_id);
	cr_assert_str_empty(ids.pod_uid);
	cr_assert_null(ids.runtime);
}

Test(cgroup_path_parse, user_manager_marks_ids_as_delegated)
{
	struct cgroup_ids ids;

	cr_assert(cgroup_path_parse("/user.slice/user-1000.slice/user@1000.service/user.slice/"
				    "libpod-" CID ".scope", &ids));
	cr_assert(ids.user_delegated);

	cr_assert(cgroup_path_parse("/user.slice/user-1000.slice/user@1000.service/kubepods/pod"
				    POD "/" CID, &ids));
	cr_assert_str_eq(ids.pod_uid, POD);
	cr_assert(ids.user_delegated, "a user-made kubepods tree is a claim");

	cr_assert(cgroup_path_parse("/machine.slice/libpod-" CID ".scope", &ids));
	cr_assert_not(ids.user_delegated);

	cr_assert_not(cgroup_path_parse("/user.slice/user-1000.slice/user@1000.service/app.slice",
					&ids));
	cr_assert_not(ids.user_delegated, "nothing found, nothing flagged");
}

static char *repeat(const char *unit, size_t times, const char *tail)
{
	size_t ulen = strlen(unit), tlen = strlen(tail);
	char *s = malloc(ulen * times + tlen + 1);

	cr_assert_not_null(s);
	for (size_t i = 0; i < times; i++)
		memcpy(s + i * ulen, unit, ulen);
	memcpy(s + ulen * times, tail, tlen + 1);
	return s;
}

Test(cgroup_path_parse, very_long_path_with_container_at_the_end)
{
	char *path = repeat("/a.slice", 100000, "/docker-" CID ".scope");

	expect_ids(path, CID, "", "docker");
	free(path);
}

Test(cgroup_path_parse, very_long_hex_segment_is_no_id)
{
	char *path = repeat("0123456789abcdef", 10000, "");
	char *scoped = repeat("f", 100000, ".scope");
	char *docker_path = malloc(strlen(path) + sizeof("/docker/"));
	char *scope_path = malloc(strlen(scoped) + sizeof("/system.slice/docker-"));

	cr_assert(docker_path && scope_path);
	sprintf(docker_path, "/docker/%s", path);
	sprintf(scope_path, "/system.slice/docker-%s", scoped);
	expect_ids(docker_path, "", "", NULL);
	expect_ids(scope_path, "", "", NULL);
	free(path);
	free(scoped);
	free(docker_path);
	free(scope_path);
}

Test(cgroup_path_parse, reads_nothing_past_the_terminator)
{
	/* The path ends right at the end of an exactly-sized heap block, so
	 * ASan catches any read past the NUL. */
	static const char text[] = "/kubepods/pod" POD "/" CID;
	char *path = malloc(sizeof(text));

	cr_assert_not_null(path);
	memcpy(path, text, sizeof(text));
	expect_ids(path, CID, POD, NULL);
	path[sizeof(text) - 5] = '\0';	/* cut the id short: 60 hex still fit */
	expect_ids(path, "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa0011223344556677", POD, NULL);
	free(path);
}

/* ---- helpers: files, the cgroup2 mount, a fake /proc ---------------------- */

/* snprintf that fails the test instead of truncating. */
__attribute__((format(printf, 3, 4)))
static void fmt_path(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	cr_assert(n >= 0 && (size_t)n < len, "path too long for the test's buffer");
}

static void write_file(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, text, len), (ssize_t)len, "write %s", path);
	close(fd);
}

/* The path of our own cgroup v2, as the test reads it (independently). */
static void own_cgroup_path(char *buf, size_t len)
{
	FILE *f = fopen("/proc/self/cgroup", "r");
	char line[PATH_MAX + 16];
	bool found = false;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3) == 0) {
			line[strcspn(line, "\n")] = '\0';
			cr_assert_lt(strlen(line + 3), len);
			strcpy(buf, line + 3);
			found = true;
		}
	}
	fclose(f);
	cr_assert(found, "no 0:: line in /proc/self/cgroup");
}

static uint64_t dir_inode(const char *dir)
{
	struct stat st;

	cr_assert_eq(stat(dir, &st), 0, "stat %s: %s", dir, strerror(errno));
	return (uint64_t)st.st_ino;
}

static char fake_proc[PATH_MAX];

static void fake_proc_setup(void)
{
	strcpy(fake_proc, "/tmp/dbward-identity-XXXXXX");
	cr_assert_not_null(mkdtemp(fake_proc), "mkdtemp: %s", strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void fake_proc_teardown(void)
{
	if (fake_proc[0])
		nftw(fake_proc, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A /proc/PID in the fake root with a cgroup file and, when given, an exe link. */
static void fake_pid(uint32_t pid, const char *cgroup, size_t cgroup_len, const char *exe)
{
	char path[PATH_MAX];

	fmt_path(path, sizeof(path), "%s/%u", fake_proc, pid);
	cr_assert_eq(mkdir(path, 0755), 0, "mkdir %s: %s", path, strerror(errno));
	fmt_path(path, sizeof(path), "%s/%u/cgroup", fake_proc, pid);
	write_file(path, cgroup, cgroup_len);
	if (exe) {
		fmt_path(path, sizeof(path), "%s/%u/exe", fake_proc, pid);
		cr_assert_eq(symlink(exe, path), 0, "symlink %s: %s", path, strerror(errno));
	}
}

static void expect_nothing_enriched(const struct identity *id)
{
	cr_expect_null(id->user);
	cr_expect_null(id->exe);
	cr_expect_null(id->cgroup_path);
	cr_expect_str_empty(id->ids.container_id);
	cr_expect_str_empty(id->ids.pod_uid);
	cr_expect_null(id->ids.runtime);
}

/* A real cgroup v2 made for one test, removed whatever the test did. */
static char cg_mount[PATH_MAX], cg_dir[PATH_MAX], cg_name[64];
static char cg_child[PATH_MAX], cg_grandchild[PATH_MAX];	/* "" when none */
static pid_t cg_member = -1;

static void cgroup_setup(void)
{
	int err = cgroup2_mount_path(cg_mount, sizeof(cg_mount));

	if (err == -ENOENT)
		cr_skip_test("cgroup2 is not mounted");
	cr_assert_eq(err, 0, "cgroup2_mount_path: %s", strerror(-err));
	fmt_path(cg_name, sizeof(cg_name), "/dbward-unit-%d", (int)getpid());
	fmt_path(cg_dir, sizeof(cg_dir), "%s%s", cg_mount, cg_name);
	if (mkdir(cg_dir, 0755) != 0) {
		int e = errno;

		cg_dir[0] = '\0';
		if (e == EACCES || e == EPERM || e == EROFS)
			cr_skip_test("cannot make a cgroup (%s): needs root", strerror(e));
		cr_assert_fail("mkdir cgroup: %s", strerror(e));
	}
	fake_proc_setup();
}

static void cgroup_teardown(void)
{
	if (cg_member > 0) {
		kill(cg_member, SIGKILL);
		waitpid(cg_member, NULL, 0);
		cg_member = -1;
	}
	if (cg_grandchild[0])
		rmdir(cg_grandchild);
	if (cg_child[0])
		rmdir(cg_child);
	if (cg_dir[0])
		rmdir(cg_dir);
	fake_proc_teardown();
}

/* ---- identity_enrich ------------------------------------------------------ */

Test(identity_enrich, real_self)
{
	struct identity id = { .pid = (uint32_t)getpid(), .uid = (uint32_t)getuid() };
	char exe[PATH_MAX + 1], own[PATH_MAX], mount[PATH_MAX], dir[2 * PATH_MAX];
	struct passwd *pw = getpwuid(getuid());
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	cr_assert_gt(n, 0);
	exe[n] = '\0';
	own_cgroup_path(own, sizeof(own));
	if (cgroup2_mount_path(mount, sizeof(mount)) == 0) {
		fmt_path(dir, sizeof(dir), "%s%s", mount, own);
		id.cgroup_id = dir_inode(dir);
	}

	identity_enrich(&id, "/proc");
	cr_assert_str_eq(id.exe, exe);
	if (pw)
		cr_assert_str_eq(id.user, pw->pw_name);
	if (getuid() == 0)
		cr_assert_str_eq(id.user, "root");
	cr_assert_not_null(id.cgroup_path);
	cr_assert_eq(id.cgroup_path[0], '/');
	cr_assert_str_eq(id.cgroup_path, own);
	identity_release(&id);
}

Test(identity_enrich, fake_proc_kubernetes_pod, .init = fake_proc_setup,
     .fini = fake_proc_teardown)
{
	static const char cgroup[] =
		"12:pids:/kubepods.slice/kubepods-burstable.slice\n"
		"4:memory:/kubepods.slice\n"
		"1:name=systemd:/kubepods.slice\n"
		"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" POD_US
		".slice/cri-containerd-" CID ".scope\n";
	struct identity id = { .pid = 4242, .uid = NO_SUCH_UID };

	fake_pid(4242, cgroup, sizeof(cgroup) - 1, "/opt/app/bin/server (deleted)");
	identity_enrich(&id, fake_proc);
	cr_assert_null(id.user, "uid %u has no passwd entry", NO_SUCH_UID);
	cr_assert_str_eq(id.exe, "/opt/app/bin/server (deleted)");
	cr_assert_str_eq(id.cgroup_path, "/kubepods.slice/kubepods-burstable.slice/"
		"kubepods-burstable-pod" POD_US ".slice/cri-containerd-" CID ".scope");
	cr_assert_str_eq(id.ids.container_id, CID);
	cr_assert_str_eq(id.ids.pod_uid, POD);
	cr_assert_str_eq(id.ids.runtime, "containerd");
	identity_release(&id);
}

/* A stat line whose comm holds ") (" and whose starttime (field 22) is @ticks. */
static void fake_stat(uint32_t pid, unsigned long long ticks)
{
	char path[PATH_MAX], line[512];
	int n = snprintf(line, sizeof(line),
			 "%u (a) (b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 %llu 19 20\n",
			 pid, ticks);

	fmt_path(path, sizeof(path), "%s/%u/stat", fake_proc, pid);
	write_file(path, line, (size_t)n);
}

Test(identity_enrich, process_with_the_recorded_start_time_is_trusted,
     .init = fake_proc_setup, .fini = fake_proc_teardown)
{
	static const char cgroup[] = "0::/docker/" CID "\n";
	unsigned long long hz = (unsigned long long)sysconf(_SC_CLK_TCK);
	struct identity id = { .pid = 4343, .start_boottime_ns = 123456ull * (1000000000ull / hz) + 7 };

	fake_pid(4343, cgroup, sizeof(cgroup) - 1, "/usr/bin/psql");
	fake_stat(4343, 123456);
	identity_enrich(&id, fake_proc);
	cr_assert_str_eq(id.exe, "/usr/bin/psql");
	identity_release(&id);
}

Test(identity_enrich, reused_pid_is_not_blamed, .init = fake_proc_setup,
     .fini = fake_proc_teardown)
{
	static const char cgroup[] = "0::/docker/" CID "\n";
	unsigned long long hz = (unsigned long long)sysconf(_SC_CLK_TCK);
	struct identity id = { .pid = 4344, .start_boottime_ns = 5000ull * (1000000000ull / hz) };

	fake_pid(4344, cgroup, sizeof(cgroup) - 1, "/usr/bin/innocent");
	fake_stat(4344, 5001);	/* a later process got the pid */
	identity_enrich(&id, fake_proc);
	cr_assert_null(id.exe, "exe of the process that reused the pid: %s", id.exe);
	identity_release(&id);
}

Test(identity_enrich, fake_proc_overlong_line_skipped_and_last_line_unterminated,
     .init = fake_proc_setup, .fini = fake_proc_teardown)
{
	size_t filler = 20000;
	char *cgroup = malloc(filler + 256);
	struct identity id = { .pid = 7 };
	int n;

	cr_assert_not_null(cgroup);
	memcpy(cgroup, "1:name=x:/", 10);
	memset(cgroup + 10, 'a', filler);
	/* A "0::" inside the overlong line, where the reader's later fills
	 * start (it reads 8191 bytes at a time), must not be taken for the
	 * v2 line. */
	memcpy(cgroup + 8191, "0::/evil", 8);
	memcpy(cgroup + 2 * 8191, "0::/evil", 8);
	n = snprintf(cgroup + 10 + filler, 256, "0::/evil\n0::/docker/%s", CID);
	fake_pid(7, cgroup, 10 + filler + (size_t)n, NULL);
	free(cgroup);

	identity_enrich(&id, fake_proc);
	cr_assert_null(id.exe);
	cr_assert_str_eq(id.cgroup_path, "/docker/" CID);
	cr_assert_str_eq(id.ids.container_id, CID);
	identity_release(&id);
}

Test(identity_enrich, fake_proc_deleted_cgroup_suffix_dropped, .init = fake_proc_setup,
     .fini = fake_proc_teardown)
{
	static const char cgroup[] = "0::/kubepods/pod" POD "/" CID " (deleted)\n";
	struct identity id = { .pid = 8 };

	fake_pid(8, cgroup, sizeof(cgroup) - 1, NULL);
	identity_enrich(&id, fake_proc);
	cr_assert_str_eq(id.cgroup_path, "/kubepods/pod" POD "/" CID);
	cr_assert_str_eq(id.ids.pod_uid, POD);
	identity_release(&id);
}

Test(identity_enrich, fake_proc_without_v2_line, .init = fake_proc_setup,
     .fini = fake_proc_teardown)
{
	static const char cgroup[] = "1:name=systemd:/docker/" CID "\n00::/not-v2\n0:/nope\n";
	struct identity id = { .pid = 9, .uid = NO_SUCH_UID };

	fake_pid(9, cgroup, sizeof(cgroup) - 1, NULL);
	identity_enrich(&id, fake_proc);
	expect_nothing_enriched(&id);
	identity_release(&id);
}

Test(identity_enrich, missing_pid_leaves_everything_null, .init = fake_proc_setup,
     .fini = fake_proc_teardown)
{
	struct identity id = { .pid = 123456, .uid = NO_SUCH_UID };

	identity_enrich(&id, fake_proc);
	expect_nothing_enriched(&id);
	identity_release(&id);

	/* And in the real /proc: a pid above pid_max never exists. */
	id.pid = 4194305;
	identity_enrich(&id, "/proc");
	expect_nothing_enriched(&id);
	identity_release(&id);
}

Test(identity_enrich, exited_process_gets_cgroup_path_from_id, .init = cgroup_setup,
     .fini = cgroup_teardown)
{
	struct identity id = { .pid = 123456, .uid = NO_SUCH_UID, .cgroup_id = dir_inode(cg_dir) };

	identity_enrich(&id, fake_proc);
	cr_assert_null(id.exe);
	cr_assert_str_eq(id.cgroup_path, cg_name);
	cr_assert_str_empty(id.ids.container_id);
	identity_release(&id);
}

Test(identity_enrich, proc_path_of_another_cgroup_yields_to_id, .init = cgroup_setup,
     .fini = cgroup_teardown)
{
	static const char cgroup[] = "0::/system.slice/docker-" CID ".scope\n";
	struct identity id = { .pid = 10, .cgroup_id = dir_inode(cg_dir) };

	fake_pid(10, cgroup, sizeof(cgroup) - 1, NULL);
	identity_enrich(&id, fake_proc);
	cr_assert_str_eq(id.cgroup_path, cg_name);
	cr_assert_str_empty(id.ids.container_id, "the docker path is where it is now, not then");
	identity_release(&id);
}

Test(identity_enrich, proc_path_contradicted_and_id_gone_is_null, .init = cgroup_setup,
     .fini = cgroup_teardown)
{
	/* /proc names a live cgroup (ours) that is not the connect-time one,
	 * and the connect-time one no longer exists. */
	char cgroup[PATH_MAX + 8];
	uint64_t gone;
	struct identity id = { .pid = 11 };

	fmt_path(cgroup, sizeof(cgroup), "0::%s\n", cg_name);
	fake_pid(11, cgroup, strlen(cgroup), NULL);
	fmt_path(cg_child, sizeof(cg_child), "%s/gone", cg_dir);
	cr_assert_eq(mkdir(cg_child, 0755), 0);
	gone = dir_inode(cg_child);
	cr_assert_eq(rmdir(cg_child), 0);
	cg_child[0] = '\0';

	id.cgroup_id = gone;
	identity_enrich(&id, fake_proc);
	cr_assert_null(id.cgroup_path);
	identity_release(&id);
}

Test(identity_enrich, real_process_moved_after_connect, .init = cgroup_setup,
     .fini = cgroup_teardown)
{
	char own[PATH_MAX], procs[2 * PATH_MAX], pid_text[32];
	struct identity id = { 0 };
	int len;

	own_cgroup_path(own, sizeof(own));
	cg_member = fork();
	cr_assert_geq(cg_member, 0);
	if (cg_member == 0) {
		pause();
		_exit(0);
	}
	len = snprintf(pid_text, sizeof(pid_text), "%d\n", (int)cg_member);

	/* "connect()" inside the test cgroup, then move back out. */
	fmt_path(procs, sizeof(procs), "%s/cgroup.procs", cg_dir);
	write_file(procs, pid_text, (size_t)len);
	id.pid = (uint32_t)cg_member;
	id.cgroup_id = dir_inode(cg_dir);
	fmt_path(procs, sizeof(procs), "%s%s/cgroup.procs", cg_mount, strcmp(own, "/") ? own : "");
	write_file(procs, pid_text, (size_t)len);

	identity_enrich(&id, "/proc");
	cr_assert_str_eq(id.cgroup_path, cg_name, "where it connected from, not where it is");
	cr_assert_not_null(id.exe);
	identity_release(&id);
}

Test(identity_release, twice_and_on_zeroed)
{
	struct identity id = { 0 };

	identity_release(&id);
	identity_release(&id);
	id.user = strdup("someone");
	id.exe = strdup("/bin/true");
	id.cgroup_path = strdup("/docker/" CID);
	cr_assert(cgroup_path_parse(id.cgroup_path, &id.ids));
	identity_release(&id);
	expect_nothing_enriched(&id);
	identity_release(&id);
}

/* ---- cgroup_path_from_id ---------------------------------------------------- */

Test(cgroup_path_from_id, resolves_test_cgroup, .init = cgroup_setup, .fini = cgroup_teardown)
{
	char path[PATH_MAX];

	cr_assert_eq(cgroup_path_from_id(dir_inode(cg_dir), path, sizeof(path)), 0);
	cr_assert_str_eq(path, cg_name);
}

Test(cgroup_path_from_id, resolves_nested_cgroup, .init = cgroup_setup, .fini = cgroup_teardown)
{
	char path[PATH_MAX], want[PATH_MAX];

	fmt_path(cg_child, sizeof(cg_child), "%s/kubepods", cg_dir);
	cr_assert_eq(mkdir(cg_child, 0755), 0, "mkdir %s: %s", cg_child, strerror(errno));
	fmt_path(cg_grandchild, sizeof(cg_grandchild), "%s/pod%s", cg_child, POD);
	cr_assert_eq(mkdir(cg_grandchild, 0755), 0, "mkdir %s: %s", cg_grandchild,
		     strerror(errno));

	cr_assert_eq(cgroup_path_from_id(dir_inode(cg_grandchild), path, sizeof(path)), 0);
	fmt_path(want, sizeof(want), "%s/kubepods/pod%s", cg_name, POD);
	cr_assert_str_eq(path, want);
	cr_assert(cgroup_path_parse(path, &(struct cgroup_ids){ 0 }), "a pod, by its path");
}

Test(cgroup_path_from_id, root_is_slash, .init = cgroup_setup, .fini = cgroup_teardown)
{
	char path[PATH_MAX];

	cr_assert_eq(cgroup_path_from_id(dir_inode(cg_mount), path, sizeof(path)), 0);
	cr_assert_str_eq(path, "/");
}

Test(cgroup_path_from_id, removed_cgroup_is_an_error, .init = cgroup_setup,
     .fini = cgroup_teardown)
{
	char path[PATH_MAX];
	uint64_t id;

	fmt_path(cg_child, sizeof(cg_child), "%s/removed", cg_dir);
	cr_assert_eq(mkdir(cg_child, 0755), 0);
	id = dir_inode(cg_child);
	cr_assert_eq(rmdir(cg_child), 0);
	cg_child[0] = '\0';

	cr_assert_eq(cgroup_path_from_id(id, path, sizeof(path)), -ESTALE);
	cr_assert_lt(cgroup_path_from_id(UINT64_MAX, path, sizeof(path)), 0);
	cr_assert_lt(cgroup_path_from_id(0, path, sizeof(path)), 0);
}

Test(cgroup_path_from_id, small_buffer_is_enametoolong, .init = cgroup_setup,
     .fini = cgroup_teardown)
{
	char path[8];

	cr_assert_eq(cgroup_path_from_id(dir_inode(cg_dir), path, sizeof(path)), -ENAMETOOLONG);
	cr_assert_eq(cgroup2_mount_path(path, 4), -ENAMETOOLONG);
}
