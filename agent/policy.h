/*
 * The policy engine: rules from the agent's config (the `rules:` list and
 * the `policy:` section), compiled once into an immutable rule set, and a
 * decision function that judges one classified text (agent/sql.h) sent by
 * one subject. docs/policy.md is the reference for operators: rule forms,
 * evaluation order, defaults and what the parser cannot see.
 *
 * policy_decide is pure and cheap: no I/O, no allocation, no locks. A
 * compiled policy is never changed once handed out, so any number of event
 * loops may read it at once; a reload builds a new one and swaps it.
 */
#ifndef DBWARD_AGENT_POLICY_H
#define DBWARD_AGENT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "agent/sql.h"
#include "common/netaddr.h"

/*
 * What a rule does when it matches, and what a decision says. The set is
 * open: approve and mask come later, so switch with a default case.
 */
enum policy_action {
	POLICY_ALLOW,
	POLICY_DENY,
	POLICY_AUDIT,		/* a rule action only: record, and go on evaluating */
};

/* "allow", "deny", "audit"; "?" out of range. */
const char *policy_action_name(enum policy_action action);

/* What happens to text the classifier could not read (sql_parse.ok false). */
enum policy_unparsable {
	POLICY_UNPARSABLE_DENY,
	/*
	 * Forward a syntax error (SQL_FAIL_SYNTAX) to the server, which then
	 * answers with its own error. Every other failure is denied anyway.
	 */
	POLICY_UNPARSABLE_FORWARD,
};

/* Why a decision came out as it did. */
enum policy_basis {
	POLICY_BASIS_RULE,	/* decision.rule decided */
	POLICY_BASIS_DEFAULT,	/* no rule decided: policy.default_action */
	POLICY_BASIS_UNPARSABLE,	/* sql->ok false: policy.unparsable */
	POLICY_BASIS_EMPTY,	/* no statement at all: allowed */
};

struct policy;

/* Who is asking. Every field may be unknown (NULL, has_uid false); a rule
 * selector on an unknown field does not hold. */
struct policy_subject {
	uint32_t uid, gid;
	bool has_uid;		/* uid and gid are known (both come from the kernel) */
	const char *comm;
	const char *exe;
	const char *user;	/* passwd name of uid */
	const char *cgroup_path;
	const char *container_id;
	const char *pod_uid;
	const char *pod_name;
	const char *pod_namespace;
	const char *db_user;	/* from the startup packet */
	const char *database;
	const char *application_name;
	const struct netaddr *client;	/* the client's address as the agent saw it */
};

struct policy_decision {
	/* POLICY_ALLOW or POLICY_DENY for the whole text (never POLICY_AUDIT). */
	enum policy_action action;
	enum policy_basis basis;
	/* The deciding rule's name, owned by the policy; NULL unless basis is
	 * POLICY_BASIS_RULE. For a deny, the rule that denied the first denied
	 * statement; for an allow, the first allow rule that decided a
	 * statement (NULL when all fell to the default). */
	const char *rule;
	size_t statement;	/* index of the statement @rule decided (0 otherwise) */
	/* The first audit rule that matched (statements in order), or NULL:
	 * the text is to be recorded as audited whatever the verdict. */
	const char *audit_rule;
	size_t audit_statement;
};

/* The `policy:` section. Zero-initialized it is the default. */
struct policy_settings {
	enum policy_action default_action;	/* POLICY_ALLOW or POLICY_DENY */
	enum policy_unparsable unparsable;
};

/*
 * Compiles the `rules:` list at @rules of @doc (NULL, a null scalar or an
 * empty list: no rules) into *@out, with default settings. On error returns
 * -1 and writes "FILE:LINE: reason" to @err (@file names the document);
 * *@out is then NULL. Every word is checked here, so a policy that loads
 * never meets an unknown one.
 */
int policy_parse(yaml_document_t *doc, const yaml_node_t *rules, const char *file,
		 struct policy **out, char *err, size_t errlen);

/* Sets the `policy:` section. Only while the policy is still private to
 * whoever parsed it: a policy in use is immutable. */
void policy_set_settings(struct policy *p, const struct policy_settings *settings);
const struct policy_settings *policy_settings(const struct policy *p);

size_t policy_rule_count(const struct policy *p);
/*
 * No rules and `default_action: allow` (or no policy at all): the agent
 * judges nothing, not even text the classifier cannot read, and only
 * records (the client then gets the server's own errors).
 */
bool policy_judges_nothing(const struct policy *p);
void policy_free(struct policy *p);

/*
 * Judges @sql sent by @who (NULL: nothing known) under @p (NULL: no rules
 * and default settings) into @out. See docs/policy.md for the order.
 * A @sql of NULL counts as unparsable.
 */
/*
 * The string field of @who a `who` selector word names ("comm", "cgroup",
 * "pod", ...), or NULL for another word (uid, gid, client are not strings).
 */
const char **policy_subject_field(struct policy_subject *who, const char *selector);

void policy_decide(const struct policy *p, const struct policy_subject *who,
		   const struct sql_parse *sql, struct policy_decision *out);

#endif
