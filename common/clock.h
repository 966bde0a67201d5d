/* Clocks and timestamps used across dbward. */
#ifndef DBWARD_COMMON_CLOCK_H
#define DBWARD_COMMON_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#define CLOCK_RFC3339_LEN 40

/* CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns() reads too. */
uint64_t clock_monotonic_ns(void);

/* Now, UTC, as "2026-11-23T21:40:00.123456Z" with @frac_digits 0..9. */
void clock_rfc3339_now(char buf[CLOCK_RFC3339_LEN], int frac_digits);
/* The same for a given unix time in ns. */
void clock_rfc3339(uint64_t unix_ns, char buf[CLOCK_RFC3339_LEN], int frac_digits);
/* CLOCK_REALTIME in ns since the epoch. */
uint64_t clock_realtime_ns(void);

#endif
