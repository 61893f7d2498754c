// SPDX-License-Identifier: GPL-2.0

//! KUnit tests of the device-mapper abstractions in `rust/`.
//!
//! Built as a module of its own, `dm_snap_kunit`, so that the store module
//! carries no tests. KUnit runs the suite when the module is loaded; the
//! results appear in the kernel log in KTAP form. The block I/O tests use
//! `/dev/ram0` (load `brd` first; its contents are overwritten), and
//! `dm-snapshot` must be loaded for the registration tests.

use kernel::prelude::*;

#[path = "block_device.rs"]
pub mod block_device;
#[path = "device_mapper/mod.rs"]
pub mod device_mapper;
#[path = "owned_workqueue.rs"]
pub mod owned_workqueue;

module! {
    type: DmSnapKunit,
    name: "dm_snap_kunit",
    authors: ["dm-snap-persistent-rs developers"],
    description: "KUnit tests of the device-mapper Rust abstractions",
    license: "GPL",
}

struct DmSnapKunit;

impl kernel::Module for DmSnapKunit {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}

#[kunit_tests(dm_snap_abstractions)]
mod tests {
    use crate::{
        block_device::{
            BlockDeviceFile,
            SECTOR_SIZE, //
        },
        device_mapper::{
            bufio,
            exception_store::{
                self,
                Chunk,
                CommitCompletion,
                Exception,
                ExceptionSink,
                ExceptionStore,
                Metadata,
                Registration,
                StatusType,
                StatusWriter,
                Store,
                StoreSetup,
                TypeStorage, //
            },
            io::{
                self,
                OpFlags,
                Region, //
            }, //
        },
        owned_workqueue::{
            Flags,
            OwnedQueue,
            Placement, //
        }, //
    };
    use core::{
        fmt::Write,
        sync::atomic::{
            AtomicI32,
            AtomicU32,
            Ordering, //
        }, //
    };
    use kernel::{
        alloc::{
            KVec,
            VVec, //
        },
        error::code::{
            EBUSY,
            EINVAL,
            ENOSPC, //
        },
        prelude::*, //
    };

    /// `/dev/ram0` (brd's major is 1), without a path lookup: KUnit's
    /// kernel thread does not see the guest's `/dev`.
    const DEVICE: (u32, u32) = (1, 0);

    /// Logs which step failed, so a failing case says more than "false".
    fn step<T>(what: &str, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            pr_err!("dm_snap_abstractions: {} failed: {:?}\n", what, e);
        }
        r
    }

    fn pattern(len: usize, seed: u8) -> Result<VVec<u8>> {
        let mut v = VVec::with_capacity(len, GFP_KERNEL)?;
        for i in 0..len {
            v.push((i as u8).wrapping_mul(31).wrapping_add(seed), GFP_KERNEL)?;
        }
        Ok(v)
    }

    #[test]
    fn dm_io_write_with_fua_then_read_returns_the_data() -> Result {
        let dev = step("open", BlockDeviceFile::open(DEVICE.0, DEVICE.1, true))?;
        let client = step("client", io::Client::new())?;
        let data = pattern(8 * SECTOR_SIZE, 7)?;
        let region = step("region", Region::new(&dev, 16, 8))?;
        step(
            "write",
            client.write(
                &region,
                &data,
                0,
                OpFlags::PREFLUSH | OpFlags::FUA | OpFlags::SYNC,
            ),
        )?;

        let mut back = VVec::from_elem(0u8, 8 * SECTOR_SIZE, GFP_KERNEL)?;
        step("read", client.read(&region, &mut back, 0))?;
        assert!(back[..] == data[..]);

        // The same through kmalloc memory, at an offset into the buffer.
        let mut kback = KVec::from_elem(0u8, 9 * SECTOR_SIZE, GFP_KERNEL)?;
        step(
            "read to kmalloc memory",
            client.read(&region, &mut kback, SECTOR_SIZE),
        )?;
        assert!(kback[SECTOR_SIZE..] == data[..]);
        Ok(())
    }

    #[test]
    fn dm_io_refuses_regions_past_the_device_or_the_buffer() -> Result {
        let dev = step("open", BlockDeviceFile::open(DEVICE.0, DEVICE.1, true))?;
        let client = step("client", io::Client::new())?;
        let end = dev.nr_sectors();
        assert_eq!(Region::new(&dev, end - 1, 2).err(), Some(EINVAL));
        assert_eq!(Region::new(&dev, 0, 0).err(), Some(EINVAL));
        assert_eq!(Region::new(&dev, u64::MAX, 2).err(), Some(EINVAL));

        let region = Region::new(&dev, 0, 8)?;
        let mut small = VVec::from_elem(0u8, 4 * SECTOR_SIZE, GFP_KERNEL)?;
        assert_eq!(client.read(&region, &mut small, 0).err(), Some(EINVAL));
        let big = VVec::from_elem(0u8, 8 * SECTOR_SIZE, GFP_KERNEL)?;
        assert_eq!(
            client.write(&region, &big, 1, OpFlags::NONE).err(),
            Some(EINVAL)
        );
        Ok(())
    }

    #[test]
    fn bufio_reads_prefetched_and_forgotten_blocks() -> Result {
        const BLOCK: usize = 4096;
        let dev = step("open", BlockDeviceFile::open(DEVICE.0, DEVICE.1, true))?;
        let io = step("client", io::Client::new())?;
        let data = pattern(BLOCK, 3)?;
        let sectors = (BLOCK / SECTOR_SIZE) as u64;
        let region = step("region", Region::new(&dev, 3 * sectors, sectors))?;
        step("write", io.write(&region, &data, 0, OpFlags::FUA))?;

        let mut client = step("bufio client", bufio::Client::new(&dev, BLOCK))?;
        assert_eq!(client.device_size(), dev.nr_sectors() / sectors);
        client.set_minimum_buffers(1 + 4);
        client.prefetch(0, 4);
        {
            let block = client.read(3)?;
            assert_eq!(block.len(), BLOCK);
            assert!(block[..] == data[..]);
        }
        client.forget(3);
        let block = client.read(3)?;
        assert!(block[..] == data[..]);
        drop(block);
        let past_end = client.device_size();
        assert_eq!(client.read(past_end).err(), Some(EINVAL));
        assert_eq!(bufio::Client::new(&dev, 1000).err(), Some(EINVAL));
        // Blocks dm-bufio would __vmalloc with flags vmalloc warns about.
        let too_large = bufio::MAX_BLOCK_SIZE.saturating_mul(2);
        assert_eq!(bufio::Client::new(&dev, too_large).err(), Some(EINVAL));
        Ok(())
    }

    #[test]
    fn workqueue_run_sync_runs_on_the_queue_and_returns_the_result() -> Result {
        let queue = OwnedQueue::new(c"dm_snap_kunit", Placement::Unbound, Flags::MEM_RECLAIM, 1)?;
        let caller = kernel::task::Task::current_raw() as usize;
        let (worker, answer) =
            queue.run_sync(|| (kernel::task::Task::current_raw() as usize, 42))?;
        assert!(worker != caller);
        assert_eq!(answer, 42);
        // Many in a row on the same queue.
        let mut sum = 0;
        for i in 0..100 {
            sum += queue.run_sync(move || i)?;
        }
        assert_eq!(sum, 4950);
        Ok(())
    }

    /// A store type that does nothing, to test registration.
    struct Dummy;

    #[vtable]
    impl ExceptionStore for Dummy {
        type Data = KBox<()>;

        fn new(_store: &mut StoreSetup<'_>, _options: Option<&CStr>) -> Result<KBox<()>> {
            Ok(KBox::new((), GFP_KERNEL)?)
        }

        fn read_metadata(
            _data: &(),
            _store: &mut StoreSetup<'_>,
            _sink: &mut ExceptionSink<'_>,
        ) -> Result<Metadata> {
            Ok(Metadata::Valid)
        }

        fn prepare_exception(_data: &(), _store: &Store, _old_chunk: Chunk) -> Result<Chunk> {
            Err(ENOSPC)
        }

        fn commit_exception(
            _data: &(),
            _store: &Store,
            _e: Exception,
            _valid: bool,
            done: CommitCompletion,
        ) {
            done.complete(false);
        }

        fn status(_data: &(), _store: &Store, _kind: StatusType, _out: &mut StatusWriter<'_>) {}
    }

    static TYPE_A: TypeStorage = TypeStorage::new();
    static TYPE_B: TypeStorage = TypeStorage::new();
    static TYPE_C: TypeStorage = TypeStorage::new();

    #[test]
    fn registration_refuses_a_taken_name_and_a_used_storage() -> Result {
        let module = kernel::module::this_module::<crate::LocalModule>();
        let a = Registration::<Dummy>::new(&TYPE_A, c"kunit-a", module)?;
        // The name is taken: EBUSY, and the storage, which dm-snapshot never
        // saw, can be registered under another name.
        let clash = Registration::<Dummy>::new(&TYPE_B, c"kunit-a", module);
        assert_eq!(clash.err(), Some(EBUSY));
        let b = Registration::<Dummy>::new(&TYPE_B, c"kunit-b", module)?;
        // A storage in use cannot be registered twice.
        let twice = Registration::<Dummy>::new(&TYPE_A, c"kunit-c", module);
        assert_eq!(twice.err(), Some(EBUSY));
        drop(a);
        drop(b);
        // Unregistered on drop: the names are free again, for other
        // storages; the old ones stay claimed, since a store made before
        // may still read their tables.
        let c = Registration::<Dummy>::new(&TYPE_C, c"kunit-a", module)?;
        let again = Registration::<Dummy>::new(&TYPE_A, c"kunit-a2", module);
        assert_eq!(again.err(), Some(EBUSY));
        drop(c);
        Ok(())
    }

    static CALLS: AtomicU32 = AtomicU32::new(0);
    static LAST_SUCCESS: AtomicI32 = AtomicI32::new(-1);

    extern "C" fn record(_context: *mut kernel::ffi::c_void, success: kernel::ffi::c_int) {
        CALLS.fetch_add(1, Ordering::SeqCst);
        LAST_SUCCESS.store(success, Ordering::SeqCst);
    }

    #[test]
    fn commit_completion_completes_once_and_fails_when_dropped() {
        CALLS.store(0, Ordering::SeqCst);
        // SAFETY: `record` may be called any number of times with any context.
        let done = unsafe { CommitCompletion::from_raw(record, core::ptr::null_mut()) };
        done.complete(true);
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert_eq!(LAST_SUCCESS.load(Ordering::SeqCst), 1);

        // SAFETY: As above.
        let dropped = unsafe { CommitCompletion::from_raw(record, core::ptr::null_mut()) };
        drop(dropped);
        assert_eq!(CALLS.load(Ordering::SeqCst), 2);
        assert_eq!(LAST_SUCCESS.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn status_writer_truncates_and_terminates_like_dmemit() {
        let mut buf = [0xffu8; 8];
        let mut out = StatusWriter::new(&mut buf);
        let _ = write!(out, " P {}", 16);
        assert_eq!(out.len(), 5);
        let _ = write!(out, "hello");
        assert_eq!(out.len(), 7);
        assert!(&buf == b" P 16he\0");
    }

    #[test]
    fn max_chunk_sectors_matches_the_c_limit() {
        assert_eq!(exception_store::MAX_CHUNK_SECTORS, 4_194_303);
    }
}
