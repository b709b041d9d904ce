/*
 * err.h - error detail and the two tiers of assertions.
 *
 * cs_fail() records a sentence for cs_errmsg() in thread-local storage and returns the code,
 * so a failing path reads `return cs_fail(CS_ECORRUPT, "segment %u ...", ...);`.
 */
#ifndef CS_ERR_H
#define CS_ERR_H

#include <stdio.h>
#include <stdlib.h>

#include "cidstore.h"

/* Sets the calling thread's error detail and returns code. */
int cs_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears the calling thread's error detail (called on entry to each public function). */
void cs_clear_error(void);

/* The cheap tier: stays on in release builds, since crashing beats writing bad data. */
#define CS_ASSERT(cond)                                                                            \
	do {                                                                                       \
		if (__builtin_expect(!(cond), 0))                                                  \
			cs_assert_fail(#cond, __FILE__, __LINE__);                                 \
	} while (0)

/* The slow tier (whole-structure checks): debug and fuzz builds only. */
#ifdef CS_SLOW_CHECKS
#define CS_DASSERT(cond) CS_ASSERT(cond)
#define CS_SLOW          1
#else
#define CS_DASSERT(cond) ((void)0)
#define CS_SLOW          0
#endif

_Noreturn void cs_assert_fail(const char *what, const char *file, int line);

#endif
