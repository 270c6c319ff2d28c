//! Where generation records and slot heads live: small cells in chunks
//! shared by every slot of the process.
//!
//! A record is not one allocation of its own: it is cell `k` of each region
//! of a chunk. Region 0 holds the record's header (what a lease reads: the
//! `draining` flag, the value and the generation), region 1 its cold part
//! (the central and remote counters, the free and deferred lists' link, and
//! the straggler tracker), region 2 its body (the generation's lifecycle,
//! drain signal and hold on its slot), region `i + 3` the counters of its
//! stripe `i`. Every region is [`REGION`] bytes long (two pages), and the
//! cells of the stripe regions start [`SKEW`] bytes into theirs (the body
//! region's 32, the cold region's 64), so stripe `i`
//! of any record is at `record + (i + 3) * REGION + SKEW`
//! ([`stripe_offset`]): reached from the
//! record pointer with one add of a constant, as when the stripes followed
//! the header in one allocation, and the record's cells in every region
//! are [`CELL`] bytes (32) instead of a 128-byte stripe each.
//!
//! What this buys is density. The headers of 253 records share 8 KiB, and
//! so do a thread's counters of 253 records, whichever slots those belong
//! to: a registry lookup spread over 10,000 plugins touches a header and a
//! counter in small, dense arrays (counters: 320 KiB per stripe for 10,000
//! plugins, cache-resident) instead of two lines of a 640-byte allocation
//! per plugin. (BENCHMARKS.md, issue 14, item 2: measured in the
//! `registry_floor` benchmark, first as a model.)
//!
//! *False sharing.* A thread writes only its own stripe's cells (the owner
//! of stripe index `i`, or the threads that share it), so two threads never
//! write one counter line in the common case, as before; neighbouring cells
//! of one line belong to other records of the same stripe. Headers are
//! written only by cutovers (`prepare`, the `draining` flag).
//!
//! *4K aliasing.* Regions are whole pages, and a record's stripe cells sit
//! [`SKEW`] (96) bytes further into their region than its header does (its
//! body cell 32, its cold cell 64), so that a record's header, body, cold
//! part and counters never share the low 12 bits of their addresses (a store to one and a load of the other would
//! otherwise be taken for a possible overlap by the CPU's memory
//! disambiguation).
//!
//! *Whole pages.* A region is exactly two pages, filled by its 253 cells and
//! the skew, so a region's cells take exactly the pages they fill and share
//! none with another region: a page is resident only if that region's cells
//! are used. (Until session 29 a region was 256 cells plus the skew, 8,288
//! bytes: every region straddled three pages, and the first and last were
//! shared with its neighbours, so a stripe used alone made three pages
//! resident for two pages of cells. BENCHMARKS.md, issue 14, item 2.)
//!
//! *Heads.* A slot's head (what a lease reads before the record) is a
//! [`CELL`]-byte cell of a second pool, whose chunks are a page of heads and
//! nothing else: a head has no counters, so taking a record's cells for it
//! would leave that record's cell in every other region unused.
//!
//! *Lifetime.* Chunks are never freed: a record's cells go back to the pool
//! when its slot's shared state is dropped (no lease, drain or stray reader
//! can reach it then: each of those keeps the shared state alive), and are
//! reused for the next record of any slot. So the records' memory is
//! type-stable while their slot lives, as the `record` module requires, and
//! the process's record (and head) memory is bounded by the most alive at once.
//! A chunk's regions past the stripes its records use are never written, so
//! the memory they take is address space, not resident pages.
//!
//! *Zeroed stripes.* Outside loom, every free record's stripe cells are
//! zero, which is what a fresh stripe holds: chunks come zeroed from the
//! allocator (fresh pages, which stay unmapped until written), and the
//! records' owner zeroes the stripe cells it wrote before giving a record
//! back. So a new record's stripes are not written when it is filled, and
//! a stripe's page becomes resident only when a thread leases through it
//! (or a cutover freezes it): a plugin leased by 2 threads of a slot with 4
//! stripes keeps 2 of them resident until its first cutover.

use std::{alloc::Layout, cmp::Reverse, collections::BinaryHeap, ptr::NonNull, sync::Mutex};

/// The bytes of one record in one region. Under loom the cells hold the
/// model's (larger) atomics.
pub(crate) const CELL: usize = if cfg!(loom) { 256 } else { 32 };

/// How far a record's cells in the regions after the first are from the
/// start of their region, and so (regions being whole pages) from the low
/// 12 bits of its header's address: against 4K aliasing (see the module
/// docs).
pub(crate) const SKEW: usize = 96;

/// Records per chunk: as many as fit a region of two pages with the skew
/// (fewer under loom and Miri, which model every byte of a chunk: the
/// addressing is the same).
const RECORDS: usize = if cfg!(any(loom, miri)) { 8 } else { (2 * 4096 - SKEW) / CELL };

/// The distance between two regions of a chunk: whole pages (two), so that
/// each region's cells take exactly the pages they fill, and no page holds
/// cells of two regions (a page becomes resident only for the region whose
/// cells are used). Under loom and Miri, just what the cells and the skew
/// need.
pub(crate) const REGION: usize = if cfg!(any(loom, miri)) { RECORDS * CELL + SKEW } else { 2 * 4096 };

/// How far a record's cold cell (region 1) is from the start of its
/// region: less than [`SKEW`], so that its header, its cold cell and its
/// stripes all differ in the low 12 bits of their addresses.
const COLD_SKEW: usize = 64;

/// How far a record's body cell (region 2) is from the start of its
/// region: neither 0, [`COLD_SKEW`] nor [`SKEW`], as above.
const BODY_SKEW: usize = 32;

/// The offset of a record's cold cell from its header cell.
pub(crate) const COLD: usize = REGION + COLD_SKEW;

/// The offset of a record's body cell from its header cell.
pub(crate) const BODY: usize = 2 * REGION + BODY_SKEW;

/// The offset of a record's stripe `index` cell from its header cell.
pub(crate) const fn stripe_offset(index: usize) -> usize {
    (index + 3) * REGION + SKEW
}

/// The most stripes a record may have: the regions after the header's, the
/// cold part's and the body's.
pub(crate) const STRIPES: usize = 64;

/// The regions of a chunk: header, cold part, body, stripes.
const REGIONS: usize = 3 + STRIPES;

/// A chunk's layout: page-aligned, so that its regions start where the
/// aliasing argument says.
const CHUNK: Layout = match Layout::from_size_align(REGIONS * REGION, 4096) {
    Ok(layout) => layout,
    Err(_) => panic!("a chunk's layout is valid"),
};

// Every cell is aligned for the atomics it holds, and a record's cells fit
// its regions, skew included.
const _: () = assert!(REGION % 32 == 0 && CELL % 32 == 0 && SKEW % 32 == 0 && COLD_SKEW % 32 == 0);
const _: () = assert!(BODY_SKEW % 32 == 0 && 0 < BODY_SKEW && BODY_SKEW < COLD_SKEW && COLD_SKEW < SKEW);
const _: () = assert!(RECORDS * CELL + SKEW <= REGION);
// Outside loom and Miri, regions are whole pages and the skew keeps the
// cells of other regions off the low 12 bits of their header's address.
const _: () = assert!(cfg!(any(loom, miri)) || (REGION % 4096 == 0 && SKEW % 4096 != 0));

/// A free cell: its address, ordered by address.
#[derive(PartialEq, Eq)]
struct Free(NonNull<u8>);

impl PartialOrd for Free {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Free {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_ptr().addr().cmp(&other.0.as_ptr().addr())
    }
}

/// Free cells of one kind, lowest address first: so cells taken one after
/// another (the slots of a registry built at once, a slot's records) are
/// neighbours, as in a fresh chunk, however the cells came back. (Every
/// chunk is reachable from its cells' pointers, here or in the slots that
/// hold them.)
struct Pool {
    free: BinaryHeap<Reverse<Free>>,
    /// A fresh chunk of this kind.
    chunk: Layout,
    /// The distance between two of a chunk's cells (in its first region,
    /// for records).
    stride: usize,
    /// The cells (records, or heads) a chunk holds.
    cells: usize,
}

// SAFETY: the pointers are addresses of free cells, owned by the pool and
// handed out to one slot at a time.
unsafe impl Send for Pool {}

impl Pool {
    const fn new(chunk: Layout, stride: usize, cells: usize) -> Self {
        Self { free: BinaryHeap::new(), chunk, stride, cells }
    }

    fn take(pool: &Mutex<Self>) -> NonNull<u8> {
        let mut pool = pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(Reverse(Free(cell))) = pool.free.pop() {
            return cell;
        }
        let chunk = alloc_zeroed(pool.chunk);
        // Handed out from the chunk's start, so that cells taken in turn
        // share lines. Each pointer is derived from the chunk's, so its
        // provenance covers the whole chunk (every region of a record).
        let stride = pool.stride;
        // SAFETY: `k * stride` is inside the chunk (its first region, for
        // records).
        let rest = (1..pool.cells).map(|k| Reverse(Free(unsafe { chunk.add(k * stride) })));
        pool.free.extend(rest);
        chunk
    }

    fn give(pool: &Mutex<Self>, cell: NonNull<u8>) {
        pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner).free.push(Reverse(Free(cell)));
    }
}

/// A zeroed block of `layout`, never freed. Asked of the allocator with
/// the smallest alignment and aligned here, because a zeroed allocation
/// with a large alignment is a plain one followed by a `memset` (`std`'s
/// `System`), which would make every page resident; with a small one it is
/// `calloc`, whose large blocks are fresh, untouched pages.
fn alloc_zeroed(layout: Layout) -> NonNull<u8> {
    let padded = Layout::from_size_align(layout.size() + layout.align(), 16)
        .unwrap_or_else(|_| std::alloc::handle_alloc_error(layout));
    // SAFETY: the layout has a non-zero size.
    let raw = unsafe { std::alloc::alloc_zeroed(padded) };
    let Some(raw) = NonNull::new(raw) else { std::alloc::handle_alloc_error(padded) };
    let align = layout.align();
    let offset = (align - raw.as_ptr().addr() % align) % align;
    // SAFETY: `offset < align`, and the block has `align` bytes of padding
    // before `layout.size()`: the result and `layout.size()` bytes after it
    // are inside the block, and keep its provenance.
    unsafe { raw.add(offset) }
}

/// The records' pool: chunks of [`RECORDS`] records, [`REGIONS`] regions.
static RECORD_POOL: Mutex<Pool> = Mutex::new(Pool::new(CHUNK, CELL, RECORDS));

/// Slot heads per head chunk (a page of 32-byte cells).
const HEADS: usize = if cfg!(any(loom, miri)) { 8 } else { 4096 / CELL };

/// The heads' pool: dense arrays of [`CELL`]-byte cells, nothing else.
static HEAD_POOL: Mutex<Pool> = Mutex::new(Pool::new(HEAD_CHUNK, CELL, HEADS));

/// A head chunk's layout.
const HEAD_CHUNK: Layout = match Layout::from_size_align(HEADS * CELL, CELL) {
    Ok(layout) => layout,
    Err(_) => panic!("a head chunk's layout is valid"),
};

/// A free record: the address of its header cell, from which its cell in
/// every region is reached by adding a multiple of [`REGION`]. Its header,
/// cold and body cells are uninitialized; outside loom its stripe cells
/// (regions 3 and on) are zero (see *Zeroed stripes* above). The caller owns them
/// until it gives them back.
pub(crate) fn take() -> NonNull<u8> {
    Pool::take(&RECORD_POOL)
}

/// Give back a record [`take`] returned, once nothing can reach it.
///
/// # Safety
/// `record` came from [`take`], has not been given back since, every value
/// written into its cells was dropped (or needs no drop), and (outside
/// loom) its stripe cells are zero again.
pub(crate) unsafe fn give(record: NonNull<u8>) {
    Pool::give(&RECORD_POOL, record);
}

/// A free slot head: one [`CELL`]-byte cell, uninitialized, in a dense
/// array of heads (no other regions: a head has no counters).
pub(crate) fn take_head() -> NonNull<u8> {
    Pool::take(&HEAD_POOL)
}

/// Give back a head [`take_head`] returned, once nothing can reach it.
///
/// # Safety
/// `head` came from [`take_head`], has not been given back since, and the
/// value written into it was dropped.
pub(crate) unsafe fn give_head(head: NonNull<u8>) {
    Pool::give(&HEAD_POOL, head);
}
