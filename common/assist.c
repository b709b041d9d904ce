/*
 * assist.c - the helper thread behind assist_run().
 *
 * Invariants (all under mu):
 *   A1. At most one job is offered (posted) or being run by the helper (running), never both
 *       and never two: a caller offers its job only when both are empty, so one caller at a
 *       time is helped and the others run alone.
 *   A2. A job lives on its caller's stack: the caller returns only once its job is neither
 *       posted (it withdraws an offer the helper has not taken) nor running (it waits for
 *       done), so the helper never touches a job whose caller has gone.
 *
 * The helper's states:
 *
 *            first assist_run()          assist_destroy()
 *     IDLE ----------------------> UP ------------------> STOPPING (the helper joined)
 *       |  pthread_create failed
 *       v
 *     FAILED  (every later call runs alone)
 */
#include "assist.h"

#include <stddef.h>

enum { ASSIST_IDLE, ASSIST_UP, ASSIST_FAILED, ASSIST_STOPPING };

struct assist_job {
	void (*fn)(void *);
	void *arg;
	int done; /* the helper's run returned (A2) */
};

static void *helper_main(void *p)
{
	struct assist *a = p;

	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (a->posted == NULL && a->state != ASSIST_STOPPING)
			pthread_cond_wait(&a->work_cv, &a->mu);
		if (a->state == ASSIST_STOPPING)
			break;
		struct assist_job *j = a->posted;
		a->posted = NULL;
		a->running = j;
		pthread_mutex_unlock(&a->mu);
		j->fn(j->arg);
		pthread_mutex_lock(&a->mu);
		j->done = 1;
		a->running = NULL;
		pthread_cond_broadcast(&a->done_cv);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

void assist_init(struct assist *a)
{
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->work_cv, NULL);
	pthread_cond_init(&a->done_cv, NULL);
	a->state = ASSIST_IDLE;
	a->posted = NULL;
	a->running = NULL;
}

void assist_destroy(struct assist *a)
{
	pthread_mutex_lock(&a->mu);
	int up = a->state == ASSIST_UP;
	if (up) {
		a->state = ASSIST_STOPPING;
		pthread_cond_signal(&a->work_cv);
	}
	pthread_mutex_unlock(&a->mu);
	if (up)
		pthread_join(a->thread, NULL);
	pthread_cond_destroy(&a->done_cv);
	pthread_cond_destroy(&a->work_cv);
	pthread_mutex_destroy(&a->mu);
}

int assist_run(struct assist *a, void (*fn)(void *), void *arg)
{
	struct assist_job job = {fn, arg, 0};
	int offered = 0;

	pthread_mutex_lock(&a->mu);
	if (a->state == ASSIST_IDLE)
		a->state = pthread_create(&a->thread, NULL, helper_main, a) == 0 ? ASSIST_UP
		                                                                 : ASSIST_FAILED;
	if (a->state == ASSIST_UP && a->posted == NULL && a->running == NULL) { /* A1 */
		a->posted = &job;
		offered = 1;
		pthread_cond_signal(&a->work_cv);
	}
	pthread_mutex_unlock(&a->mu);

	fn(arg);
	if (!offered)
		return 0;

	pthread_mutex_lock(&a->mu);
	int helped = a->posted != &job;
	if (!helped)
		a->posted = NULL; /* not taken yet: withdrawn (A2) */
	while (helped && !job.done)
		pthread_cond_wait(&a->done_cv, &a->mu);
	pthread_mutex_unlock(&a->mu);
	return helped;
}
