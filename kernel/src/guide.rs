//! # A reading path through hmmos
//!
//! This module has no code. It is the guided tour: why HMM exists, what the
//! words mean, and three walks through the source — one device fault, one
//! `fork`, one `munmap` — naming each function in the order it runs, with
//! the file it lives in and the lines you see on the console while it
//! happens. Open it with
//!
//! ```text
//! cargo docs --open        # every crate, private modules included (an alias in .cargo/config.toml)
//! ```
//!
//! and keep a console open beside it:
//!
//! ```text
//! cargo run -- --console
//! hmm> trace events        # one stamped line per HMM event from now on
//! ```
//!
//! ## Why HMM
//!
//! A GPU or accelerator that works on a program's data used to need its own
//! copy: the program allocated device memory, copied in, ran, copied out.
//! HMM (heterogeneous memory management) lets the device use the program's
//! *own* virtual addresses instead. The device gets a page table that
//! *mirrors* the process's: the same virtual address leads to the same
//! physical page, with permissions never above the CPU's. Two rules make it
//! safe:
//!
//! 1. **Invalidate before change.** Whenever the kernel is about to change
//!    a translation — `munmap`, `mprotect`, `fork`'s copy-on-write, swap-out,
//!    page migration — it tells HMM first, and HMM strips the device's entry
//!    (and flushes the device's TLB) before the old page can be reused.
//! 2. **Fault, then replay.** When the device touches an address its mirror
//!    does not have, the access faults; the kernel resolves it exactly as a
//!    CPU fault (demand-zero, swap-in, COW break), fills the mirror entry,
//!    and the device retries.
//!
//! In Linux this is `Documentation/mm/hmm.rst`
//! (<https://www.kernel.org/doc/html/latest/mm/hmm.html>), built on
//! `mmu_interval_notifier` and `hmm_range_fault()`. It began as Jérôme
//! Glisse's HMM patchset on linux-mm (v2, 2014:
//! <http://mail.spinics.net/lists/linux-mm/msg74532.html>), merged in Linux
//! 4.14 (2017) and later reworked into today's API. hmmos follows the
//! early patchset's shape, which the code calls **"the seed patchset"**:
//! per-event update callbacks (`FORK`, `ISDIRTY`, `WRITE_PROTECT`,
//! `MIGRATE`, `MUNMAP`, `RELEASE`, `DEVICE_RFAULT`/`DEVICE_WFAULT`) and a
//! fault entry point, `hmm_mirror_fault`, which is [`hmm::Mirror::fault`] here.
//!
//! What is special here: the device's mirror is not a driver-private
//! structure but **the very page table the IOMMU walks** (VT-d second-level
//! format, [`devices::vtd::VtdLayout`]), so "the device's view" is a
//! hardware fact you can print (`walk2`), and a device fault is a real
//! IOMMU fault record.
//!
//! ## Words
//!
//! | word | meaning | where |
//! |------|---------|-------|
//! | mirror | one device's page table of one process (IOVA = process virtual address) | [`hmm::Mirror`], [`hmm::pt`] |
//! | device fault | the IOMMU refused a DMA; its fault record names address and access | [`crate::platform::accel`], `devices/src/vtd/fault.rs` |
//! | replay | running the refused transfer again once the mirror has the page | [`crate::hmmdev::jobs`] |
//! | event, mask | why entries change, and what survives (`new = old & mask`: keep, read-only, invalid) | [`hmm::Event`], [`hmm::PteMask`] |
//! | invalidation | the notifier bracket `invalidate_start … invalidate_end` around every translation change | [`crate::aspace::notify`] |
//! | IOTLB command | telling VT-d to forget cached translations: page-selective (2^am pages) or domain-wide | `devices/src/vtd/flush.rs` |
//! | prefault | a device fault also mirrors the neighbours the CPU already has, in an aligned window of [`hmm::DEFAULT_PREFAULT_PAGES`] pages (never allocating, COW-breaking or dirtying them) | [`hmm::Mirror::fault`] |
//! | exclusive | a device holds pages for atomics; the CPU loses access first, and its next access of any kind revokes it | [`hmm::Mirror::take_exclusive`], `world/dev.rs` |
//! | context | one process bound to one accelerator: its own mirror and VT-d domain, read-only or read-write | [`crate::hmmdev::Context`] |
//! | bounce page | kernel memory the device reaches above the user half, for moving bytes in and out | [`crate::hmmdev::jobs`] |
//!
//! ## Follow one device fault
//!
//! ```text
//! hmm> spawn
//! hmm> mmap 1 64K rw at=0x20000000
//! hmm> bind 0 1
//! hmm> trace events
//! hmm> dread 0 0x20000000 16
//! ```
//!
//! 1. `dread` is [`crate::world::dev::dread`] (`kernel/src/world/dev.rs`): it
//!    locks accelerator 0 and calls [`crate::hmmdev::HmmAccel::read`]
//!    (`kernel/src/hmmdev/jobs.rs`), which cuts the job into page-bounded
//!    pieces and calls `HmmAccel::transfer` for each.
//! 2. `transfer` checks the mirror entry (a dropped-write workaround, see
//!    the module docs), then [`crate::platform::accel::Accelerator::dma`]
//!    (`kernel/src/platform/accel.rs`) starts the edu DMA
//!    ([`devices::edu::Edu::start_dma`]) at the *process* address and
//!    halts until the completion interrupt.
//! 3. QEMU's VT-d walks the mirror table, finds nothing, and records a
//!    fault. On stderr QEMU says
//!    `vtd_iova_to_slpte: detected slpte permission error (iova=0x20000000, ...)`.
//!    `Accel::dma` reads the record with
//!    [`devices::vtd::Iommu::claim_fault`] and returns `DmaError::Fault`.
//! 4. Back in `transfer`: **`fault.begin accel=0 va=0x20000000 access=read`**.
//!    It calls [`hmm::Mirror::fault_with`] (`hmm/src/fault.rs`), with the
//!    rest of the job's pages as `also`: the round registers one interval,
//!    then (**`fault.round`**) asks the CPU side for the whole round through
//!    the trait [`hmm::MirroredSpace::fault_round`], implemented by
//!    [`crate::hmmdev::space::KernelSpace`] (`kernel/src/hmmdev/space.rs`),
//!    which calls [`crate::aspace::AddressSpace::fault_round`]
//!    (`kernel/src/aspace/fault.rs`): one lock, one VMA lookup; the page
//!    the device touched is taken as it is if present with the access, else
//!    `Inner::resolve` runs — demand-zero, swap-in (**`swap.in`**) or COW
//!    break (**`cow.break`**), CPU rules; the neighbours in the prefault
//!    window and the job's other resident pages are only read, by
//!    `hmm::pt`'s walker over the CPU tables (`aspace/layout.rs`).
//! 5. The pages come back to HMM in batches (a stack buffer): for each, under
//!    the mirror's table lock, the interval's count is checked — if an
//!    invalidation ran meanwhile, the round is thrown away and retried
//!    (Linux's `mmu_interval_read_retry`) — then the leaves are written
//!    into the mirror table through one [`hmm::pt::Cursor`]
//!    (`hmm/src/pt/cursor.rs`; **`mirror.set`** at trace level).
//! 6. The driver hears about it: [`hmm::DeviceDriver::update`] is
//!    [`crate::hmmdev::EduMirrorDriver`]'s (`kernel/src/hmmdev/driver.rs`):
//!    **`mirror.update event=DEVICE_RFAULT ... flush=false`** — entries only
//!    added, nothing cached to forget. (A write fault that upgrades a
//!    read-only entry flushes: **`iotlb did=1 scope=page addr=... am=4`**.)
//! 7. **`fault.end ... result=resolved pages=16`**, then **`replay`**: the
//!    loop in `transfer` runs the same DMA again; it succeeds, and
//!    `dread` prints the bytes and
//!    `(3 transfers, 1 device faults resolved and replayed, 16 pages populated)`.
//!
//! `hmm> walk2 0 0x20000000` now shows the CPU's walk and the IOMMU's walk
//! ending at the same frame (the CPU `P W U`, the device `R`).
//!
//! The same chain can be stopped in gdb (`cargo run -- --console --gdb`,
//! then `gdb target/kernel/x86_64-unknown-none/debug/hmmos-kernel -ex
//! 'target remote :1234' -ex 'break kernel::aspace::AddressSpace::fault_round'
//! -ex continue`, and the `dread` above on the console); `bt` walks back
//! through these functions (names only; inlining may merge some):
//!
//! ```text
//! kernel::aspace::AddressSpace::fault_round          kernel/src/aspace/fault.rs
//! <KernelSpace as hmm::MirroredSpace>::fault_round   kernel/src/hmmdev/space.rs
//! hmm::Mm::round                                     hmm/src/fault.rs
//! hmm::Mm::fault_mirror                              hmm/src/fault.rs
//! hmm::Mirror::fault_with                            hmm/src/mirror.rs
//! kernel::hmmdev::HmmAccel::transfer                 kernel/src/hmmdev/jobs.rs
//! kernel::hmmdev::HmmAccel::read                     kernel/src/hmmdev/jobs.rs
//! kernel::world::dev::dread                          kernel/src/world/dev.rs
//! ```
//!
//! (gdb's `kill` then ends the session; the launcher says so and exits
//! with status 8.)
//!
//! ## Follow one fork
//!
//! ```text
//! hmm> fill 1 0x20000000 4K 0x41
//! hmm> fork 1
//! ```
//!
//! 1. [`crate::world::mem::fork`] → [`crate::aspace::AddressSpace::fork`]
//!    (`kernel/src/aspace/fork.rs`): the child gets the parent's areas; for
//!    each writable area the parent's entries become read-only and shared.
//! 2. That change is wrapped in `Inner::change` (`kernel/src/aspace/mod.rs`),
//!    the one notification bracket:
//!    `Listeners::start` (`kernel/src/aspace/notify.rs`) →
//!    `HmmListener::invalidate_start` (`kernel/src/hmmdev/space.rs`;
//!    **`inval kind=CowWriteProtect event=FORK ... mask=read-only`**) →
//!    [`hmm::Mm::invalidate_start`] → `Mirror::invalidate`
//!    (`hmm/src/mirror.rs`) downgrades the device's entries with the FORK
//!    mask and calls the driver's `update`, which flushes the IOTLB
//!    ([`devices::vtd::Iommu::invalidate_ranges`], **`iotlb ...`**).
//! 3. Only then are the CPU entries changed, the CPU TLB flushed
//!    ([`crate::mm::tlb::TlbFlush`]), and `Listeners::end` →
//!    [`hmm::Mm::invalidate_end`] closes the bracket.
//! 4. The child is a new process with its own HMM state
//!    ([`crate::hmmdev::ProcessHmm::attach`]): the console prints
//!    `process 2 is a copy-on-write child of 1`.
//! 5. A later device *write* to the parent faults (the entry is read-only),
//!    and `Inner::resolve` breaks the COW (**`cow.break`**) inside another
//!    bracket (`kind=CowBreak event=MIGRATE`), so the device never keeps
//!    the shared frame. The demo's step 3 checks exactly that.
//!
//! ## Follow one munmap
//!
//! ```text
//! hmm> munmap 1 0x20000000 16K
//! ```
//!
//! 1. [`crate::world::mem::munmap`] → [`crate::aspace::AddressSpace::munmap`]
//!    (`kernel/src/aspace/mod.rs`) → `Inner::change` with
//!    `ChangeKind::Unmap`.
//! 2. **`inval kind=Unmap event=MUNMAP range=0x20000000..0x20004000 mask=invalid`**:
//!    the mirror entries are cleared, the driver flushes —
//!    **`iotlb did=1 scope=page addr=0x20000000 am=2 pages=4`**, one
//!    page-selective command with an address mask for an aligned 2^k range
//!    (`plan` in `devices/src/vtd/flush.rs`).
//! 3. `Inner::kill_entries` exchanges each present CPU entry for a dying
//!    one (the frame reference stays in the table); the TLB of every CPU
//!    that has the space loaded is flushed — one shootdown round
//!    (`kernel/src/mm/shootdown.rs`) — giving a `Flushed` proof;
//!    `invalidate_end`.
//! 4. Only then are the frames freed (`DeferredFrees::free`, which takes
//!    the proof; `kernel/src/aspace/deferred.rs`): no CPU TLB and no
//!    device can reach them any more. `walk2 0 0x20000000` now ends at
//!    `(not present: a device access faults)` on the device side.
//!
//! ## Watching
//!
//! * Log levels (`cargo run -- --cmdline log=debug`, or `trace on|events|off`
//!   on the console): info = one line per scenario step; debug = one line
//!   per HMM event; trace = per entry (mirror entries, CPU PTEs, DMA
//!   transfers). See [`crate::console`].
//! * `cargo run -- --console --trace fault.json < script.txt` writes a
//!   timeline of device faults for <https://ui.perfetto.dev>.
//! * gdb: `cargo run -- --console --gdb` (or `--gdb=PORT`; it listens on
//!   127.0.0.1 only), then break on a non-generic function such as
//!   `kernel::aspace::AddressSpace::handle_fault` (generic ones like
//!   `hmm::mm::Mm::fault` are easier to reach through `bt`).
//! * A panic or CPU exception prints a frame-pointer backtrace
//!   ([`crate::arch::backtrace`]) that the launcher symbolizes.
//!
//! ## Exercises
//!
//! Each says where to look and which test tells you it works.
//!
//! 1. **Turn prefault off and count faults.** `prefault 1 1` on the console,
//!    then `dread 0 0x20000000 4096` on 16 fresh pages: how many
//!    `fault.begin` lines? *Hint:* `Mm::window` in `hmm/src/mm.rs`;
//!    `cargo run -- --bench` prints both rows.
//! 2. **Break the invalidation rule on purpose.** In `Inner::change`
//!    (`kernel/src/aspace/mod.rs`), drop the `listeners.start` call and run
//!    `cargo test -- hmm_munmap`. What does the device read after munmap?
//!    *Hint:* `tests/hmm_munmap.rs`; put it back.
//! 3. **A new event.** Add a `ChangeKind` for a page-cache write-back that
//!    keeps device entries read-only; map it in
//!    `hmmdev::space::event_of` and give it a demo step. *Hint:*
//!    `kernel/src/aspace/notify.rs`, `kernel/src/hmmdev/space.rs`,
//!    `tests/aspace_events.rs`.
//! 4. **Read the IOTLB plan.** Why does `munmap` of 0x20001000..0x20005000
//!    take more than one page-selective command? Predict the commands, then
//!    check with `trace events`. *Hint:* `plan` in
//!    `devices/src/vtd/flush.rs` and its host tests (`cargo test -p devices`).
//! 5. **Swap and the device.** `swapout 1 0x20000000 8K`, then `dread`: find
//!    `swap.in` in the output and the `Pte::Swapped` arm of `Inner::resolve`.
//!    *Hint:* `kernel/src/aspace/swap.rs`, `tests/hmm_swap.rs`.
//! 6. **Make a crash report.** Add `panic!()` inside
//!    [`crate::world::view::walk2`] and run `walk2`: the backtrace names it
//!    with file and line. *Hint:* `kernel/src/arch/backtrace.rs`,
//!    `boot/launcher/src/symbolize.rs`, the `harness_panic` test kernel.
