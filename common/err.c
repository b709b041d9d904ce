/*
 * err.c - names for error codes and the per-thread error detail behind cs_errmsg().
 */
#include "err.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local char errmsg[512];

/* Formats into a buffer of its own first: an argument may be cs_errmsg() itself, a message
 * that adds context to the one before ("leaf 7: ..."). */
int cs_fail(int code, const char *fmt, ...)
{
	char msg[sizeof(errmsg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	memcpy(errmsg, msg, strlen(msg) + 1);
	return code;
}

void cs_clear_error(void)
{
	errmsg[0] = '\0';
}

CS_API const char *cs_errmsg(void)
{
	return errmsg;
}

CS_API const char *cs_strerror(int code)
{
	switch (code) {
	case 0:
		return "success";
	case CS_ENOTFOUND:
		return "not found";
	case CS_ECORRUPT:
		return "store data is corrupt";
	case CS_EINVAL:
		return "invalid argument";
	case CS_ELIMIT:
		return "limit exceeded";
	case CS_EBUSY:
		return "store is locked by another opener";
	case CS_EPOISONED:
		return "store is poisoned by an earlier I/O failure; reopen it";
	case CS_EPINNED:
		return "block is pinned";
	case CS_EFULL:
		return "store or disk is full";
	case CS_EVERSION:
		return "store format is newer than this library";
	case CS_EUNSUPPORTED:
		return "unsupported";
	case CS_EBUFSIZE:
		return "buffer too small";
	case CS_ENOTSTORE:
		return "directory is not a cidstore";
	case CS_ECLOSED:
		return "store is closing";
	}
	if (code < 0 && code > -4096)
		return strerror(-code);
	return "unknown error";
}

_Noreturn void cs_assert_fail(const char *what, const char *file, int line)
{
	fprintf(stderr, "cidstore: assertion failed: %s (%s:%d)\n", what, file, line);
	abort();
}
