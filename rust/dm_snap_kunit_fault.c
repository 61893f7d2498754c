// SPDX-License-Identifier: GPL-2.0
/*
 * The KUnit tests of the device-mapper Rust abstractions fail allocations one
 * at a time through the running task's fail_nth, as a write to
 * /proc/thread-self/fail-nth does. The field is read and written here, in C,
 * so that the tests do not depend on how bindgen lays out struct task_struct.
 */
#include <linux/module.h>
#include <linux/sched.h>

void dm_snap_kunit_set_fail_nth(unsigned int n);
unsigned int dm_snap_kunit_fail_nth(void);

/* Arms the n-th next fault-injection check of the running task (0: none). */
void dm_snap_kunit_set_fail_nth(unsigned int n)
{
	WRITE_ONCE(current->fail_nth, n);
}
EXPORT_SYMBOL_GPL(dm_snap_kunit_set_fail_nth);

/* The running task's fail_nth: 0 once the armed check has failed. */
unsigned int dm_snap_kunit_fail_nth(void)
{
	return READ_ONCE(current->fail_nth);
}
EXPORT_SYMBOL_GPL(dm_snap_kunit_fail_nth);

MODULE_DESCRIPTION("fail-nth access for the dm-snap-persistent KUnit tests");
MODULE_LICENSE("GPL");
