// SPDX-License-Identifier: GPL-2.0

//! Device-mapper snapshot persistent exception store.
//!
//! A Rust implementation of the exception store types "persistent" and "P"
//! used by dm-snapshot (`dmsetup create ... snapshot <origin> <cow> P <chunk>`),
//! on-disk compatible with `drivers/md/dm-snap-persistent.c`.
//!
//! dm-snapshot asks for a missing store type by loading the module
//! `dm-exstore-<type>`; the aliases below make that find this module when
//! dm-snapshot is built or loaded without its C persistent store.
//!
//! The store (`store/`) is safe Rust. It stands on the device-mapper
//! abstractions in `rust/`, where all the module's code that the compiler
//! cannot check lives, and on the format core in `format/`, shared with the
//! userspace tools.

use kernel::prelude::*;

#[path = "rust/block_device.rs"]
pub mod block_device;
#[path = "rust/dedicated_workqueue.rs"]
pub mod dedicated_workqueue;
#[path = "rust/device_mapper/mod.rs"]
pub mod device_mapper;
#[path = "format/src/snap_format/mod.rs"]
pub mod snap_format;
mod store;

use device_mapper::exception_store::{
    Registration,
    TypeStorage, //
};
use snap_format::messages;
use store::{
    PersistentStore,
    PREFIX, //
};

module! {
    type: DmSnapPersistent,
    name: "dm_snap_persistent",
    authors: ["dm-snap-persistent-rs developers"],
    description: "device-mapper snapshot persistent exception store",
    license: "GPL",
    alias: ["dm-exstore-persistent", "dm-exstore-P"],
}

/// The type tables of the two names (C: `_persistent_type` and
/// `_persistent_compat_type`), in the module's memory: stores of the type
/// read them for as long as they hold the module.
static PERSISTENT_TYPE: TypeStorage = TypeStorage::new();
static COMPAT_TYPE: TypeStorage = TypeStorage::new();

/// The module: the store type, registered as "persistent" and as "P".
/// The fields drop in order: "persistent" is unregistered first, as C does.
///
/// dm-snapshot looks store types up by "P" and "N" only, so "P" is
/// registered last, as the last step of init that can fail: an init that
/// fails leaves no type that a table can reach. (Registered first, "P"
/// could be taken by a table load, with a reference to this module, which
/// the kernel frees once init fails whatever references it holds.)
struct DmSnapPersistent {
    _persistent: Registration<PersistentStore>,
    _compat: Registration<PersistentStore>,
}

impl kernel::Module for DmSnapPersistent {
    /// C: `dm_persistent_snapshot_init()`.
    fn init(module: &'static ThisModule) -> Result<Self> {
        let persistent = Registration::new(&PERSISTENT_TYPE, messages::TYPE_NAME, module)
            .inspect_err(|_| {
                dm_err!(PREFIX, "{}", messages::REGISTER_FAILED);
            })?;
        // Last: see `DmSnapPersistent`.
        let compat = Registration::new(&COMPAT_TYPE, messages::COMPAT_TYPE_NAME, module)
            .inspect_err(|_| {
                dm_err!(PREFIX, "{}", messages::REGISTER_COMPAT_FAILED);
            })?;
        Ok(Self {
            _persistent: persistent,
            _compat: compat,
        })
    }
}
