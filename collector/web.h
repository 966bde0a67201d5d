/* The collector's web page: one self-contained HTML document served at "/". */
#ifndef DBWARD_COLLECTOR_WEB_H
#define DBWARD_COLLECTOR_WEB_H

#include <stddef.h>

/* The page (static; never freed) and its length in bytes. */
const char *web_page(size_t *len);

#endif
