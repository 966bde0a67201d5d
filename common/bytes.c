#include "common/bytes.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

int bytes_reserve(uint8_t **data, size_t *cap, size_t need, size_t first)
{
	size_t want = *cap ? *cap : first;
	uint8_t *p;

	if (need <= *cap)
		return 0;
	if (!want)
		want = 1;
	while (want < need) {
		if (want > SIZE_MAX / 2)
			return -ENOMEM;
		want *= 2;
	}
	if (!(p = realloc(*data, want)))
		return -ENOMEM;
	*data = p;
	*cap = want;
	return 0;
}
