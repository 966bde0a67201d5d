#include "clock.h"

#include <stdio.h>
#include <time.h>

uint64_t clock_monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t clock_realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void clock_rfc3339_now(char buf[CLOCK_RFC3339_LEN], int frac_digits)
{
	clock_rfc3339(clock_realtime_ns(), buf, frac_digits);
}

void clock_rfc3339(uint64_t unix_ns, char buf[CLOCK_RFC3339_LEN], int frac_digits)
{
	struct timespec now = { .tv_sec = (time_t)(unix_ns / 1000000000ull),
				.tv_nsec = (long)(unix_ns % 1000000000ull) };
	unsigned frac;
	struct tm tm;
	int n;

	gmtime_r(&now.tv_sec, &tm);
	n = snprintf(buf, CLOCK_RFC3339_LEN, "%04d-%02d-%02dT%02d:%02d:%02d",
		     (tm.tm_year + 1900) % 10000, (tm.tm_mon + 1) % 100, tm.tm_mday % 100,
		     tm.tm_hour % 100, tm.tm_min % 100, tm.tm_sec % 100);
	if (frac_digits > 0 && frac_digits <= 9) {
		frac = (unsigned)now.tv_nsec;
		for (int i = frac_digits; i < 9; i++)
			frac /= 10;
		n += snprintf(buf + n, (size_t)(CLOCK_RFC3339_LEN - n), ".%0*u", frac_digits, frac);
	}
	snprintf(buf + n, (size_t)(CLOCK_RFC3339_LEN - n), "Z");
}
