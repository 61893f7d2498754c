// SPDX-License-Identifier: GPL-2.0
/*
 * A test-only exception store type that holds a name (module parameter
 * "name", default "P") and refuses every store, so that a guest test can make
 * a registration of dm_snap_persistent fail on that name.
 */
#include <linux/module.h>
#include <linux/device-mapper.h>
#include "dm-exception-store.h"

static char *name = "P";
module_param(name, charp, 0444);
MODULE_PARM_DESC(name, "the exception store type name to hold");

static int holder_ctr(struct dm_exception_store *store, char *options)
{
	return -EINVAL;
}

static void holder_dtr(struct dm_exception_store *store)
{
}

static int holder_read_metadata(struct dm_exception_store *store,
				int (*callback)(void *, chunk_t, chunk_t),
				void *callback_context)
{
	return -EINVAL;
}

static int holder_prepare_exception(struct dm_exception_store *store,
				    struct dm_exception *e)
{
	return -ENOSPC;
}

static void holder_commit_exception(struct dm_exception_store *store,
				    struct dm_exception *e, int valid,
				    void (*callback)(void *, int success),
				    void *callback_context)
{
	callback(callback_context, 0);
}

static unsigned int holder_status(struct dm_exception_store *store,
				  status_type_t status, char *result,
				  unsigned int maxlen)
{
	return 0;
}

static struct dm_exception_store_type holder_type = {
	.module = THIS_MODULE,
	.ctr = holder_ctr,
	.dtr = holder_dtr,
	.read_metadata = holder_read_metadata,
	.prepare_exception = holder_prepare_exception,
	.commit_exception = holder_commit_exception,
	.status = holder_status,
};

static int __init holder_init(void)
{
	holder_type.name = name;
	return dm_exception_store_type_register(&holder_type);
}

static void __exit holder_exit(void)
{
	dm_exception_store_type_unregister(&holder_type);
}

module_init(holder_init);
module_exit(holder_exit);
MODULE_DESCRIPTION("dm-snap-persistent test: holds an exception store type name");
MODULE_LICENSE("GPL");
