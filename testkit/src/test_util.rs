// SPDX-License-Identifier: GPL-2.0-only

//! What the unit tests of [`crate::replay`] and [`crate::subset`] share.

use crate::replay::Geometry;
use crate::tag::Kind;
use crate::tag::Tag;

/// Two slices of four 4 KiB blocks: the origin, then the COW device.
pub const GEO: Geometry = Geometry {
    origin_start: 0,
    origin_len: 4 * 4096,
    cow_start: 4 * 4096,
    cow_len: 4 * 4096,
};

/// The block an origin write `id` at byte `at` carries.
pub fn otag(id: u64, at: u64) -> Vec<u8> {
    Tag {
        kind: Kind::Origin,
        id,
        offset: at,
    }
    .block()
}
