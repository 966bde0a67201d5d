/*
 * The ledger verbs: `verify` (the collector's own check, and with a pinned
 * key the signature of its tree head), `receipt` (fetch, check locally,
 * only then write), `tree-head`, `verify-receipt`, which needs no
 * collector at all, and `check-receipt`, which asks the collector to prove
 * the receipt's tree is still the start of its ledger.
 */
#ifndef DBWARD_CLI_VERIFY_H
#define DBWARD_CLI_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/receipt.h"
#include "common/signing.h"

/* A public key from a PEM file. 0 or -1 with @err. */
int cli_key_load(const char *path, struct verify_key **out, char *err, size_t errlen);

/* The API's tree head object ({"size", "root", "ts", "key_id",
 * "signature", "public_key"}). @pub may be NULL; otherwise public_key is
 * required too. 0 or -1 with @err naming the field. */
int cli_tree_head_parse(const json_t *obj, struct signed_tree_head *h,
			uint8_t pub[SIGNING_PUB_LEN], char *err, size_t errlen);

/* One problem of /api/v1/verify as "event ID (agent A, epoch E, seq S): WHAT". */
void cli_problem_line(const json_t *problem, char *out, size_t len);

/* Parses and checks a receipt's text against @pinned (NULL: its own key).
 * 0; -1 with @err when invalid. @r is filled either way (release it). */
int cli_receipt_check(const char *text, size_t len, const struct verify_key *pinned,
		      struct receipt *r, char *err, size_t errlen);

/* "receipt valid: event ID is leaf L of a tree of size N signed at TIME by key KEYID" */
void cli_receipt_summary(const struct receipt *r, char *out, size_t len);

/* The verbs: a cli_exit code, errors on stderr. */
int cli_verify_run(const char *url, const char *key_path);
int cli_receipt_run(const char *url, const char *event_id, const char *out_path,
		    const char *key_path);
int cli_tree_head_run(const char *url, const char *key_path, bool json);
int cli_verify_receipt_run(const char *path, const char *key_path);
/* The receipt checked offline, then against the collector's current tree:
 * a consistency proof from the receipt's tree size (RFC 6962), so a ledger
 * whose history was rewritten or cut short since the receipt fails. */
int cli_check_receipt_run(const char *url, const char *path, const char *key_path);

#endif
