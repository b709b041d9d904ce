/*
 * assist.h - a thread that lends a second core to one caller at a time.
 *
 * A reader of a long run of records copies each one out of the page cache and then checks
 * its checksum, one after the other on one core. assist_run() lets another core take a share
 * of such work: the caller and the helper both run the same function on the same argument,
 * which hands out the work between them (an atomic cursor, say), and the call returns once
 * both are done. When the helper is busy with another caller, could not be started, or has
 * not woken by the time the caller ran out of work, the caller simply does it all: help is
 * never waited for, only a share that the helper already began.
 */
#ifndef CS_ASSIST_H
#define CS_ASSIST_H

#include <pthread.h>

struct assist_job;

struct assist {
	pthread_mutex_t mu;
	pthread_cond_t work_cv;     /* the helper waits for a job or stop */
	pthread_cond_t done_cv;     /* callers wait for the helper's share to end */
	pthread_t thread;
	int state;                  /* ASSIST_* of assist.c, under mu */
	struct assist_job *posted;  /* offered, not yet taken; under mu */
	struct assist_job *running; /* taken by the helper; under mu */
};

/* Sets up a (the thread is started on first use, so a store that never reads a long run
 * never has it). Cannot fail. */
void assist_init(struct assist *a);

/* Stops and joins the helper if it was started. No assist_run() may be in progress. */
void assist_destroy(struct assist *a);

/* Runs fn(arg) on the calling thread and, when the helper is free, on the helper at the same
 * time; returns once the caller's run and any run the helper began have returned. fn must be
 * safe to run on two threads at once and must find the work left to do through arg. Returns
 * 1 when the helper ran fn too, 0 when the caller ran it alone. */
int assist_run(struct assist *a, void (*fn)(void *), void *arg);

#endif
