/*
 * A growing byte buffer's one way to grow: doubling, so appends cost
 * amortised O(1), from a first size that suits the caller.
 */
#ifndef DBWARD_COMMON_BYTES_H
#define DBWARD_COMMON_BYTES_H

#include <stddef.h>
#include <stdint.h>

/*
 * Makes *@cap at least @need: realloc()s *@data to @first, or *@cap, doubled
 * until it is. 0, or -ENOMEM (out of memory, or @need past what doubling
 * can reach), *@data and *@cap unchanged.
 */
int bytes_reserve(uint8_t **data, size_t *cap, size_t need, size_t first);

#endif
