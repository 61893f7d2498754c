// SPDX-License-Identifier: GPL-2.0-only
//! Unit tests: constants, chunk-size rules, layout arithmetic, header and
//! exception encoding, the header decision, options, status and messages.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::*;
use snap_format::*;

fn bs(origin: u32, cow: u32) -> BlockSizes {
    BlockSizes::new(origin, cow).unwrap()
}

#[test]
fn constants_match_c() {
    assert_eq!(SNAP_MAGIC.to_le_bytes(), *b"SnAp");
    assert_eq!(SNAPSHOT_DISK_VERSION, 1);
    assert_eq!(NUM_SNAPSHOT_HDR_CHUNKS, 1);
    assert_eq!(DM_CHUNK_SIZE_DEFAULT_SECTORS, 32);
    assert_eq!(CHUNK_SIZE_LIMIT_SECTORS, (i32::MAX >> 9) as u32);
    assert_eq!(MAX_CHUNK_SECTORS, 1 << 21);
    assert_eq!(DM_CHUNK_NUMBER_MAX, (1u64 << DM_CHUNK_NUMBER_BITS) - 1);
    assert_eq!(MAX_DEVICE_SECTORS, (i64::MAX as u64) >> 9);
    assert_eq!(INITIAL_NEXT_FREE, NUM_SNAPSHOT_HDR_CHUNKS + 1);
    assert_eq!(
        (
            errno::EIO,
            errno::ENXIO,
            errno::ENOMEM,
            errno::EINVAL,
            errno::ENOSPC
        ),
        (5, 6, 12, 22, 28)
    );
}

#[test]
fn every_power_of_two_chunk_size_is_accepted_with_its_geometry() {
    for shift in 0..=21u32 {
        let sectors = 1u32 << shift;
        let c = ChunkSize::new(sectors, BlockSizes::SECTOR).unwrap();
        assert_eq!(c.sectors(), sectors);
        assert_eq!(c.bytes(), sectors * 512);
        assert_eq!(c.shift(), shift);
        assert_eq!(c.mask(), sectors - 1);
        let l = Layout::new(c);
        let epa = u64::from(l.exceptions_per_area());
        assert_eq!(epa, u64::from(sectors) * 32);
        assert_eq!(l.stride(), epa + 1);
        assert_eq!(l.area_location(0), Some(1));
        assert_eq!(l.area_location(1), Some(2 + epa));
        // The last data chunk of area 0 is followed by area 1's chunk.
        assert!(l.is_data_chunk(1 + epa));
        assert!(l.is_metadata_chunk(2 + epa));
        assert_eq!(l.skip_metadata(2 + epa), Some(3 + epa));
        assert_eq!(l.skip_metadata(1 + epa), Some(1 + epa));
        // old_chunk bound: the chunk after max_old_chunk would end past
        // the largest device.
        let m = l.max_old_chunk();
        assert!((m + 1) * u64::from(sectors) <= MAX_DEVICE_SECTORS);
        assert!((m + 2) * u64::from(sectors) > MAX_DEVICE_SECTORS);
        assert!(m <= DM_CHUNK_NUMBER_MAX);
        // The largest area index of the largest device does not overflow.
        let areas = l.device_areas(MAX_DEVICE_SECTORS);
        assert!(l.area_location(areas).is_some());
        assert!(l
            .usage(
                l.device_chunks(MAX_DEVICE_SECTORS),
                areas,
                MAX_DEVICE_SECTORS
            )
            .is_some());
    }
    assert_eq!(ChunkSize::MIN.sectors(), 1);
    assert_eq!(ChunkSize::MAX.sectors(), MAX_CHUNK_SECTORS);
    assert_eq!(Layout::new(ChunkSize::MIN).exceptions_per_area(), 32);
    assert_eq!(Layout::new(ChunkSize::MAX).exceptions_per_area(), 1 << 26);
}

#[test]
fn chunk_size_rules_in_c_order() {
    let s = BlockSizes::SECTOR;
    assert_eq!(ChunkSize::new(0, s), Err(ChunkSizeError::NotPowerOf2));
    assert_eq!(ChunkSize::new(3, s), Err(ChunkSizeError::NotPowerOf2));
    assert_eq!(
        ChunkSize::new(u32::MAX, s),
        Err(ChunkSizeError::NotPowerOf2)
    );
    assert_eq!(ChunkSize::new(1 << 22, s), Err(ChunkSizeError::TooHigh));
    assert_eq!(ChunkSize::new(1 << 31, s), Err(ChunkSizeError::TooHigh));
    // Block sizes of either device, in bytes.
    assert_eq!(
        ChunkSize::new(4, bs(4096, 512)),
        Err(ChunkSizeError::NotMultipleOfBlockSize)
    );
    assert_eq!(
        ChunkSize::new(4, bs(512, 4096)),
        Err(ChunkSizeError::NotMultipleOfBlockSize)
    );
    assert!(ChunkSize::new(8, bs(4096, 4096)).is_ok());
    // Power-of-two test comes before the block-size test.
    assert_eq!(
        ChunkSize::new(12, bs(4096, 4096)),
        Err(ChunkSizeError::NotPowerOf2)
    );
    assert_eq!(
        ChunkSizeError::NotPowerOf2.to_string(),
        "Chunk size is not a power of 2"
    );
    assert_eq!(
        ChunkSizeError::NotMultipleOfBlockSize.to_string(),
        "Chunk size is not a multiple of device blocksize"
    );
    assert_eq!(
        ChunkSizeError::TooHigh.to_string(),
        "Chunk size is too high"
    );
    assert_eq!(ChunkSizeError::TooHigh.errno(), errno::EINVAL);
}

#[test]
fn logical_block_sizes_must_be_powers_of_two_from_512() {
    for ok in [512u32, 1024, 4096, 65536, 1 << 30] {
        assert_eq!(LogicalBlockSize::new(ok).unwrap().bytes(), ok);
    }
    for bad in [0u32, 1, 256, 511, 513, 3000, 1 << 31] {
        let e = LogicalBlockSize::new(bad).unwrap_err();
        assert_eq!(
            e,
            Error::InvalidBlockSize {
                bytes: bad,
                max: MAX_CHUNK_BYTES
            }
        );
        assert_eq!(e.errno(), errno::EINVAL);
    }
    assert_eq!(LogicalBlockSize::new(4096).unwrap().sectors(), 8);
    assert!(BlockSizes::new(512, 100).is_err());
    assert!(BlockSizes::new(100, 512).is_err());
}

#[test]
fn default_chunk_size_is_32_or_the_cow_block_size() {
    let lbs = |b| LogicalBlockSize::new(b).unwrap();
    assert_eq!(ChunkSize::default_for(lbs(512)).sectors(), 32);
    assert_eq!(ChunkSize::default_for(lbs(4096)).sectors(), 32);
    assert_eq!(ChunkSize::default_for(lbs(16384)).sectors(), 32);
    assert_eq!(ChunkSize::default_for(lbs(65536)).sectors(), 128);
    assert_eq!(ChunkSize::default_for(lbs(1 << 30)).sectors(), 1 << 21);

    let t = TableChunkSize::new(0, bs(65536, 512)).unwrap();
    // Like C: the origin's block size is not consulted for the default.
    assert_eq!(t.chunk_size.sectors(), 32);
    assert!(!t.supplied);
    let t = TableChunkSize::new(16, BlockSizes::SECTOR).unwrap();
    assert_eq!((t.chunk_size.sectors(), t.supplied), (16, true));
    let e = TableChunkSize::new(24, BlockSizes::SECTOR).unwrap_err();
    assert_eq!(e.to_string(), "Chunk size is not a power of 2");
    assert_eq!(e.errno(), errno::EINVAL);
}

#[test]
fn layout_predicates_and_conversions() {
    let l = layout(1); // epa 32, stride 33
    assert_eq!(l.chunk_bytes(), 512);
    assert_eq!(l.exceptions_per_area(), 32);
    assert!(l.is_header_chunk(0));
    assert!(!l.is_header_chunk(1));
    assert!(!l.is_data_chunk(0));
    for m in [1u64, 34, 67, 100] {
        assert!(l.is_metadata_chunk(m));
        assert!(!l.is_data_chunk(m));
    }
    assert_eq!(l.metadata_area_of(67), Some(2));
    assert_eq!(l.metadata_area_of(66), None);
    assert_eq!(l.metadata_area_of(0), None);
    for d in [2u64, 33, 35, 66] {
        assert!(l.is_data_chunk(d));
    }
    assert_eq!(l.area_of_chunk(0), None);
    assert_eq!(l.area_of_chunk(1), Some(0));
    assert_eq!(l.area_of_chunk(33), Some(0));
    assert_eq!(l.area_of_chunk(34), Some(1));
    // skip_metadata is C's remainder test, including next_free == 1.
    assert_eq!(l.skip_metadata(0), Some(0));
    assert_eq!(l.skip_metadata(1), Some(2));
    assert_eq!(l.skip_metadata(33), Some(33));
    assert_eq!(l.skip_metadata(34), Some(35));
    assert_eq!(l.skip_metadata(u64::MAX), Some(u64::MAX)); // MAX % 33 == 0
    assert_eq!(l.area_location(u64::MAX), None);

    let l = layout(8);
    assert_eq!(l.chunk_to_sector(3), Some(24));
    assert_eq!(l.chunk_to_sector(u64::MAX), None);
    assert_eq!(l.sector_to_chunk(23), 2);
    assert_eq!(l.sector_to_chunk(24), 3);
    assert_eq!(l.device_chunks(8 * 10 + 7), 10);
    assert_eq!(
        l.area_io(1),
        Some(AreaIo {
            area: 1,
            chunk: 258,
            sector: 258 * 8,
            sectors: 8
        })
    );
}

#[test]
fn device_areas_counts_metadata_chunks_on_the_device() {
    let l = layout(1); // stride 33
    assert_eq!(l.device_areas(0), 0);
    assert_eq!(l.device_areas(1), 0); // header only
    assert_eq!(l.device_areas(2), 1); // header + area 0
    assert_eq!(l.device_areas(34), 1); // area 0 and its 32 data chunks
    assert_eq!(l.device_areas(35), 2); // area 1's chunk is the 35th
    assert_eq!(l.device_areas(67), 2);
    assert_eq!(l.device_areas(68), 3);
}

#[test]
fn next_free_after_scan_follows_c() {
    let l = layout(1);
    assert_eq!(l.next_free_after_scan(None), Some(2));
    assert_eq!(l.next_free_after_scan(Some(2)), Some(3));
    // Largest new_chunk is the last data chunk before area 1 (chunk 34).
    assert_eq!(l.next_free_after_scan(Some(33)), Some(35));
    assert_eq!(l.next_free_after_scan(Some(32)), Some(33));
    assert_eq!(l.next_free_after_scan(Some(u64::MAX)), None);
}

#[test]
fn usage_matches_persistent_usage() {
    let l = layout(32);
    let u = l.usage(2, 0, 1 << 20).unwrap();
    assert_eq!(
        u,
        Usage {
            total_sectors: 1 << 20,
            sectors_allocated: 64,
            metadata_sectors: 64
        }
    );
    let u = l.usage(1030, 1, 1 << 20).unwrap();
    assert_eq!(u.sectors_allocated, 1030 * 32);
    assert_eq!(u.metadata_sectors, 3 * 32);
    assert_eq!(l.usage(u64::MAX, 0, 0), None);
    assert_eq!(l.usage(0, u64::MAX - 1, 0), None);
}

#[test]
fn header_encodes_to_exact_bytes_and_zeroes_the_chunk() {
    let mut buf = vec![0xAAu8; 512];
    let h = DiskHeader::new(true, ChunkSize::new(16, BlockSizes::SECTOR).unwrap());
    h.encode(&mut buf).unwrap();
    assert_eq!(
        &buf[..16],
        &[b'S', b'n', b'A', b'p', 1, 0, 0, 0, 1, 0, 0, 0, 16, 0, 0, 0]
    );
    assert!(buf[16..].iter().all(|b| *b == 0));
    assert_eq!(DiskHeader::decode(&buf).unwrap(), h);
    assert_eq!(DiskHeader::new(false, ChunkSize::DEFAULT).valid, 0);

    let mut short = [0xAAu8; 15];
    assert_eq!(
        h.encode(&mut short),
        Err(Error::BufferSize {
            expected: 16,
            actual: 15
        })
    );
    assert_eq!(short, [0xAA; 15]);
    assert!(DiskHeader::decode(&short).is_err());
    let mut exact = [0u8; 16];
    h.encode(&mut exact).unwrap();
    assert_eq!(DiskHeader::decode(&exact).unwrap(), h);
    let h2 = DiskHeader {
        version: u32::MAX,
        ..h
    };
    assert_eq!(h2.version_as_int(), -1);
}

#[test]
fn exceptions_encode_little_endian_and_stay_in_bounds() {
    let e = Exception {
        old_chunk: 0x0102_0304_0506_0708,
        new_chunk: 0x1112_1314_1516_1718,
    };
    let r = e.encode();
    assert_eq!(r[0], 0x08);
    assert_eq!(r[7], 0x01);
    assert_eq!(r[8], 0x18);
    assert_eq!(r[15], 0x11);
    assert_eq!(Exception::decode(&r), e);
    assert!(!e.is_end_marker());
    assert!(Exception::default().is_end_marker());

    let mut area = vec![0u8; 512];
    write_exception(&mut area, 31, e).unwrap();
    assert_eq!(read_exception(&area, 31), Some(e));
    assert_eq!(&area[496..], &r);
    assert_eq!(write_exception(&mut area, 32, e), None);
    assert_eq!(read_exception(&area, 32), None);
    assert_eq!(read_exception(&area, u32::MAX), None);
    assert_eq!(clear_exception(&mut area, 32), None);
    clear_exception(&mut area, 31).unwrap();
    assert!(area.iter().all(|b| *b == 0));
}

fn header_bytes(magic: u32, valid: u32, version: u32, chunk: u32) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    DiskHeader {
        magic,
        valid,
        version,
        chunk_size: chunk,
    }
    .encode(&mut b)
    .unwrap();
    b
}

fn decide(
    bytes: &[u8],
    table: u32,
    blocks: BlockSizes,
) -> (Result<HeaderDecision, Error>, Vec<String>) {
    let t = TableChunkSize::new(table, blocks).unwrap();
    let mut warnings = vec![];
    let r = read_header(bytes, t, blocks, |w| warnings.push(w.to_string()));
    (r, warnings)
}

#[test]
fn header_with_zero_magic_is_a_new_store_with_the_table_chunk_size() {
    let b = header_bytes(0, 7, 99, 12345);
    let (r, w) = decide(&b, 16, BlockSizes::SECTOR);
    assert_eq!(r, Ok(HeaderDecision::New(layout(16))));
    assert!(w.is_empty());
    let (r, _) = decide(&b, 0, bs(512, 65536));
    assert_eq!(r.unwrap().layout().chunk_sectors(), 128);
}

#[test]
fn header_with_wrong_magic_is_enxio() {
    let (r, _) = decide(&header_bytes(0x1234, 1, 1, 16), 16, BlockSizes::SECTOR);
    let e = r.unwrap_err();
    assert_eq!(e, Error::InvalidOrCorrupt { magic: 0x1234 });
    assert_eq!(e.to_string(), "Invalid or corrupt snapshot");
    assert_eq!(e.errno(), errno::ENXIO);
    assert_eq!(e.c_log_level(), Some(LogLevel::Warn));
}

#[test]
fn header_version_other_than_1_is_einval() {
    let (r, _) = decide(&header_bytes(SNAP_MAGIC, 1, 2, 16), 16, BlockSizes::SECTOR);
    let e = r.unwrap_err();
    assert_eq!(e.to_string(), "unable to handle snapshot disk version 2");
    assert_eq!(e.errno(), errno::EINVAL);
    let (r, _) = decide(
        &header_bytes(SNAP_MAGIC, 1, u32::MAX, 16),
        16,
        BlockSizes::SECTOR,
    );
    assert_eq!(
        r.unwrap_err().to_string(),
        "unable to handle snapshot disk version -1"
    );
    // Version 0 is refused too, even on an invalid snapshot.
    let (r, _) = decide(&header_bytes(SNAP_MAGIC, 0, 0, 16), 16, BlockSizes::SECTOR);
    assert_eq!(r, Err(Error::UnsupportedVersion { version: 0 }));
}

#[test]
fn header_marked_invalid_loads_as_invalid() {
    let (r, _) = decide(&header_bytes(SNAP_MAGIC, 0, 1, 16), 16, BlockSizes::SECTOR);
    assert_eq!(r, Ok(HeaderDecision::Invalid(layout(16))));
    // Any nonzero value is valid, as in C.
    let (r, _) = decide(&header_bytes(SNAP_MAGIC, 42, 1, 16), 16, BlockSizes::SECTOR);
    assert_eq!(r, Ok(HeaderDecision::Valid(layout(16))));
}

#[test]
fn store_whose_chunk_leaves_no_room_for_area_0_is_refused_before_any_allocation() {
    // 2^20-sector chunks named by a 16-byte header on a 1 MiB device: valid
    // or not, the device cannot hold the header chunk and area 0.
    for valid in [0, 1] {
        let (r, _) = decide(
            &header_bytes(SNAP_MAGIC, valid, 1, 1 << 20),
            16,
            BlockSizes::SECTOR,
        );
        let e = r.unwrap().check_device(2048).unwrap_err();
        assert_eq!(
            e,
            Error::OnDiskChunkBeyondDevice {
                chunk_size: 1 << 20,
                cow_sectors: 2048
            }
        );
        // C's read of area 0 past the device fails: the same errno.
        assert_eq!(e.errno(), errno::EIO);
        assert_eq!(e.c_log_level(), Some(LogLevel::Err));
    }
    // Exactly the header chunk and area 0 fit.
    let d = decide(&header_bytes(SNAP_MAGIC, 1, 1, 16), 16, BlockSizes::SECTOR).0;
    assert_eq!(
        d.unwrap().check_device(32),
        Ok(HeaderDecision::Valid(layout(16)))
    );
    assert!(d.unwrap().check_device(31).is_err());
    // A new store is checked where area 0 is written, not here.
    let d = decide(&header_bytes(0, 0, 0, 0), 16, BlockSizes::SECTOR).0;
    assert_eq!(
        d.unwrap().check_device(8),
        Ok(HeaderDecision::New(layout(16)))
    );
}

#[test]
fn cow_device_smaller_than_the_table_chunk_is_refused_before_the_header_read() {
    let t = TableChunkSize::new(32, BlockSizes::SECTOR).unwrap();
    assert_eq!(t.check_device(32), Ok(t));
    let e = t.check_device(31).unwrap_err();
    assert_eq!(
        e,
        Error::CowSmallerThanChunk {
            chunk_size: 32,
            cow_sectors: 31
        }
    );
    assert_eq!(e.errno(), errno::EINVAL);
    assert_eq!(e.c_log_level(), Some(LogLevel::Err));
    assert_eq!(
        e.to_string(),
        "COW device of 31 sectors is smaller than one chunk (32 sectors)"
    );
    // The default chunk size (table 0) is checked the same way.
    let d = TableChunkSize::new(0, BlockSizes::SECTOR).unwrap();
    assert!(d
        .check_device(u64::from(d.chunk_size.sectors()) - 1)
        .is_err());
}

#[test]
fn on_disk_chunk_size_overrides_table_and_warns_only_if_supplied() {
    let b = header_bytes(SNAP_MAGIC, 1, 1, 64);
    let (r, w) = decide(&b, 16, BlockSizes::SECTOR);
    assert_eq!(r, Ok(HeaderDecision::Valid(layout(64))));
    assert_eq!(
        w,
        vec!["chunk size 64 in device metadata overrides table chunk size of 16.".to_string()]
    );
    let (r, w) = decide(&b, 0, BlockSizes::SECTOR);
    assert_eq!(r, Ok(HeaderDecision::Valid(layout(64))));
    assert!(w.is_empty());
    // Same chunk size: no warning.
    let (_, w) = decide(&b, 64, BlockSizes::SECTOR);
    assert!(w.is_empty());
}

#[test]
fn invalid_on_disk_chunk_size_is_einval_with_the_reason() {
    let cases = [
        (
            0u32,
            BlockSizes::SECTOR,
            "invalid on-disk chunk size 0: Chunk size is not a power of 2.",
        ),
        (
            48,
            BlockSizes::SECTOR,
            "invalid on-disk chunk size 48: Chunk size is not a power of 2.",
        ),
        (
            4,
            bs(4096, 512),
            "invalid on-disk chunk size 4: Chunk size is not a multiple of device blocksize.",
        ),
        (
            1 << 22,
            BlockSizes::SECTOR,
            "invalid on-disk chunk size 4194304: Chunk size is too high.",
        ),
    ];
    for (chunk, blocks, text) in cases {
        let (r, w) = decide(&header_bytes(SNAP_MAGIC, 1, 2, chunk), 8, blocks);
        let e = r.unwrap_err();
        assert_eq!(e.to_string(), text);
        assert_eq!(e.errno(), errno::EINVAL);
        assert_eq!(e.c_log_level(), Some(LogLevel::Err));
        // The override warning is printed first, as in C.
        assert_eq!(w.len(), 1);
    }
}

#[test]
fn header_shorter_than_16_bytes_is_refused() {
    let (r, _) = decide(&[0u8; 8], 16, BlockSizes::SECTOR);
    assert!(matches!(r, Err(Error::BufferSize { .. })));
}

#[test]
fn options_parse_like_persistent_ctr() {
    assert_eq!(parse_options(None), Ok(false));
    assert_eq!(parse_options(Some(b"O")), Ok(true));
    assert_eq!(parse_options(Some(b"o")), Ok(true));
    assert_eq!(parse_options(Some(b"Ox")), Ok(true));
    let e = parse_options(Some(b"X")).unwrap_err();
    assert_eq!(e.to_string(), "Unsupported persistent store option: X");
    assert_eq!(e.errno(), errno::EINVAL);
    assert!(parse_options(Some(b"")).is_err());
}

#[test]
fn table_status_matches_persistent_status() {
    let c = 16;
    let s = TableStatus {
        userspace_supports_overflow: false,
        chunk_size: c,
    };
    assert_eq!(s.to_string(), " P 16");
    let s = TableStatus {
        userspace_supports_overflow: true,
        chunk_size: c,
    };
    assert_eq!(s.to_string(), " PO 16");
}

#[test]
fn messages_and_errnos_of_every_condition() {
    let cases: Vec<(Error, i32, &str)> = vec![
        (
            Error::NoSpace {
                chunk: 9,
                cow_sectors: 80,
            },
            errno::ENOSPC,
            "COW device full: chunk 9 does not fit in 80 sectors",
        ),
        (
            Error::NewChunkBeyondDevice {
                area: 3,
                index: 5,
                new_chunk: 12345,
                cow_chunks: 1000,
            },
            errno::EINVAL,
            "exception 5 of area 3: new_chunk 12345 is beyond the end of the COW device (1000 chunks)",
        ),
        (
            Error::NewChunkIsMetadata {
                area: 0,
                index: 1,
                new_chunk: 34,
                metadata_area: 1,
            },
            errno::EINVAL,
            "exception 1 of area 0: new_chunk 34 is the chunk of metadata area 1",
        ),
        (
            Error::NewChunkIsHeader { area: 2, index: 7 },
            errno::EINVAL,
            "exception 7 of area 2: new_chunk 0 is the header chunk",
        ),
        (
            Error::OldChunkTooLarge {
                area: 0,
                index: 0,
                old_chunk: u64::MAX,
                max: 7,
            },
            errno::EINVAL,
            "exception 0 of area 0: old_chunk 18446744073709551615 is beyond the largest chunk number 7",
        ),
        (
            Error::AreaBeyondDevice {
                area: 1,
                chunk: 34,
                cow_chunks: 34,
            },
            errno::EIO,
            "metadata area 1 at chunk 34 is beyond the end of the COW device (34 chunks)",
        ),
        (
            Error::UnexpectedEndMarker { area: 1, index: 4 },
            errno::EINVAL,
            "exception 4 of area 1: end marker inside an area that must be full",
        ),
        (
            Error::Callback { errno: 12 },
            12,
            "exception callback failed with error 12",
        ),
        (Error::Callback { errno: -3 }, errno::EIO, "exception callback failed with error -3"),
        (
            Error::ReadFailed { chunk: 2, errno: 5 },
            5,
            "reading chunk 2 failed with error 5",
        ),
        (
            Error::MergeCountInvalid {
                nr_merged: 4,
                prepared: 3,
            },
            errno::EINVAL,
            "cannot merge 4 exceptions: 3 were prepared",
        ),
        (
            Error::WriteFailed { chunk: 3, errno: 28 },
            28,
            "writing chunk 3 failed with error 28",
        ),
        (
            Error::CleanupFailed { area: 2, errno: 5 },
            5,
            "clearing the records after the end marker of area 2 failed with error 5",
        ),
        (Error::MergeCommitFailed, errno::EIO, "an earlier merge commit failed to write; reload the snapshot before merging"),
        (Error::TooManyPending, errno::ENOSPC, "too many prepared exceptions pending"),
    ];
    for (e, n, text) in cases {
        assert_eq!(e.errno(), n, "{e:?}");
        assert_eq!(e.to_string(), text);
    }
    for e in [
        Error::CommitWithoutPrepare,
        Error::CallbackQueueFull,
        Error::Overflow,
        Error::IndexOutOfArea {
            index: 1,
            exceptions_per_area: 1,
        },
    ] {
        assert_eq!(e.errno(), errno::EINVAL);
        assert!(!e.to_string().is_empty());
        assert_eq!(e.c_log_level(), Some(LogLevel::Err));
    }
    assert_eq!(
        Error::NoSpace {
            chunk: 0,
            cow_sectors: 0
        }
        .c_log_level(),
        None
    );
    // C says nothing of a failed area write (dm-snapshot does), but this
    // store logs the failed write of the cleared records.
    assert_eq!(
        Error::WriteFailed { chunk: 1, errno: 5 }.c_log_level(),
        None
    );
    assert_eq!(
        Error::CleanupFailed { area: 1, errno: 5 }.c_log_level(),
        Some(LogLevel::Err)
    );
    let w = Warning::GarbageAfterEndMarker {
        area: 4,
        end: 2,
        first: 3,
        records: 5,
    };
    assert_eq!(
        w.to_string(),
        "area 4: 5 nonzero exception records after the end marker at index 2 (first at 3) ignored and cleared"
    );
    assert_eq!(w.c_log_level(), LogLevel::Warn);
    assert_eq!(messages::WRITE_HEADER_FAILED, "write_header failed");
    assert_eq!(DM_MSG_PREFIX, "persistent snapshot");
}
