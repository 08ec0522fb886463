//! The swap disk: a virtio-blk device over PCI (modern, `iommu_platform=on`),
//! driven by the `virtio-drivers` crate, its DMA translated by VT-d in a
//! kernel domain of its own ([`hal`]).
//!
//! ```text
//!  init (once, on first use): find 1af4:1042 ─► memory + bus master on
//!    ─► new VT-d domain, device attached (its DMA reaches nothing yet)
//!    ─► control frame (request header + status) mapped for good
//!    ─► virtio-drivers: PciTransport (ACCESS_PLATFORM accepted) ─► VirtIOBlk
//!  read_page / write_page(s)(page index, frame):
//!    pages copied to/from bounce pages (up to IN_FLIGHT at once); headers
//!    and status bytes in the control frame ─► all queued ─► wait for the
//!    used ring (hlt with a short timer, bounded) ─► pop each
//!    ─► VT-d fault records: one from the disk fails the transfer ─► status
//! ```
//!
//! Why a bounce frame rather than mapping each page frame for its transfer:
//! swap-out runs when frames are scarce, and mapping arbitrary frames into
//! the domain needs IOMMU table nodes (frames) and an IOTLB flush per page.
//! The device sees only the disk's own pages (control + IN_FLIGHT bounce
//! pages); the copy costs a 4 KiB memcpy per page.
//!
//! A device whose DMA faults (QEMU then marks it broken) or that does not
//! answer is reset and re-initialised; the operation reports the error.
//!
//! Lock order: [`SwapDisk`]'s mutex, then the DMA domain, then the IOMMU.

mod hal;

use crate::mm::direct;
use crate::mm::frames::{self, FrameFlags};
use alloc::string::String;
use core::fmt;
use core::sync::atomic::Ordering;
use devices::mmio::MmioRegion;
use devices::pci::{Bdf, Ecam};
use hal::{DiskDma, DiskHal, DMA};
use crate::sync::{LockRank, RankedMutex};
use spin::Once;
use virtio_drivers::device::blk::{BlkReq, BlkResp, RespStatus, VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use x86_64::structures::paging::PhysFrame;

/// virtio's PCI vendor id, and the modern block device's id.
pub const VIRTIO_VENDOR: u16 = 0x1af4;
pub const VIRTIO_BLK_MODERN: u16 = 0x1042;
/// The most of a disk used for swap: 1 TiB (the device's capacity is its
/// word, not ours to trust; the swap store's directory is sized by it).
pub const MAX_PAGES: u64 = 1 << 28;
/// Requests in flight at once: each takes three descriptors (header, data,
/// status) of the 16-entry queue (`virtio-drivers` without `alloc` uses
/// no indirect descriptors).
pub const IN_FLIGHT: usize = 5;
/// Sectors per 4 KiB page.
const SECTORS_PER_PAGE: u64 = 4096 / SECTOR_SIZE as u64;
/// One poll: halt until the used ring moves or this much virtual time passed.
const POLL_US: u64 = 200;
/// Polls before a request counts as lost. Under `-icount sleep=off` the
/// virtual clock jumps while the guest halts, so the bound is in polls
/// (each costs real time in QEMU's main loop), not in virtual time.
const MAX_POLLS: u32 = 500_000;
/// VIRTIO_F_ACCESS_PLATFORM: the device's DMA goes through the platform IOMMU.
const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Why a disk operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// No swap disk on this machine (or its bring-up failed).
    NoDisk,
    /// The page index is past the end of the disk.
    OutOfRange(u64),
    /// The request could not be queued.
    Queue,
    /// No completion in time (e.g. the device's DMA faulted in the IOMMU
    /// and QEMU stopped the device): it was reset.
    NoCompletion,
    /// The device completed the request with an error status.
    Status(u8),
    /// The device's DMA faulted in VT-d (QEMU's virtio-blk still completes
    /// such a request with status OK, so the fault record decides).
    DmaFault(devices::vtd::FaultRecord),
    /// IOMMU fault records were lost during the transfer (they overflowed):
    /// it cannot be shown to be clean, so it counts as failed.
    FaultsLost,
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDisk => f.write_str("no swap disk"),
            Self::OutOfRange(p) => write!(f, "page {p} is past the end of the swap disk"),
            Self::Queue => f.write_str("the swap disk's queue refused the request"),
            Self::NoCompletion => f.write_str("the swap disk did not complete the request (device reset)"),
            Self::Status(s) => write!(f, "the swap disk reported error status {s}"),
            Self::DmaFault(r) => write!(f, "the swap disk's DMA faulted: {r}"),
            Self::FaultsLost => f.write_str("IOMMU fault records were lost during a swap disk transfer"),
        }
    }
}

/// Tries of a transfer whose fault records were lost before it fails.
const LOST_FAULT_ATTEMPTS: u32 = 4;

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
    pub resets: u64,
}

/// PCI configuration space for `virtio-drivers`, over the kernel's ECAM.
struct EcamAccess(&'static Ecam<MmioRegion>);

impl ConfigurationAccess for EcamAccess {
    fn read_word(&self, df: DeviceFunction, off: u8) -> u32 {
        self.0.read32(Bdf::new(df.bus, df.device, df.function), off as usize)
    }
    fn write_word(&mut self, df: DeviceFunction, off: u8, data: u32) {
        self.0.write32(Bdf::new(df.bus, df.device, df.function), off as usize, data)
    }
    unsafe fn unsafe_clone(&self) -> Self {
        EcamAccess(self.0)
    }
}

/// A transport that accepts VIRTIO_F_ACCESS_PLATFORM when the device offers
/// it: this kernel translates the device's DMA with VT-d, which is what the
/// feature means. (`virtio-drivers`' block driver does not list the
/// feature, and QEMU refuses FEATURES_OK from a driver that declines it.)
struct AccessPlatform<T: Transport> {
    inner: T,
    offered: u64,
}

impl<T: Transport> Transport for AccessPlatform<T> {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        self.offered = self.inner.read_device_features();
        self.offered
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.inner.write_driver_features(driver_features | (self.offered & F_ACCESS_PLATFORM))
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        self.inner.notify(queue)
    }
    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }
    fn set_guest_page_size(&mut self, size: u32) {
        self.inner.set_guest_page_size(size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }
    fn queue_set(&mut self, queue: u16, size: u32, descriptors: u64, driver_area: u64, device_area: u64) {
        self.inner.queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }
    fn read_config_space<V: zerocopy::FromBytes + zerocopy::IntoBytes>(&self, offset: usize) -> virtio_drivers::Result<V> {
        self.inner.read_config_space(offset)
    }
    fn write_config_space<V: zerocopy::IntoBytes + zerocopy::Immutable>(&mut self, offset: usize, value: V) -> virtio_drivers::Result<()> {
        self.inner.write_config_space(offset, value)
    }
}

type Blk = VirtIOBlk<DiskHal, AccessPlatform<PciTransport>>;

/// The swap disk.
pub struct SwapDisk {
    bdf: Bdf,
    /// None only while being reset.
    blk: Option<Blk>,
    root: PciRoot<EcamAccess>,
    /// Holds the request header (offset 0) and the status byte (offset 64),
    /// mapped in the disk's domain for good.
    control: PhysFrame,
    /// The pages the device reads and writes, mapped for good.
    bounce: [PhysFrame; IN_FLIGHT],
    iommu: &'static crate::sync::RankedMutex<super::KernelIommu>,
    pages: u64,
    stats: DiskStats,
}

/// A ranked lock, not a plain spin lock: its holder sleeps in the
/// transfer's completion wait, and a contender that spun instead of
/// sleeping would never let it run (a swap-out spinning on a swap-in's
/// disk hung the `smp_stress` kernel on one CPU).
static DISK: Once<Result<RankedMutex<SwapDisk>, String>> = Once::new();

/// The swap disk, brought up on first use; `Err` says why there is none.
pub fn disk() -> Result<&'static RankedMutex<SwapDisk>, &'static str> {
    DISK.call_once(|| bring_up().map(|d| RankedMutex::new(LockRank::Device, d))).as_ref().map_err(|e| e.as_str())
}

fn new_blk(root: &mut PciRoot<EcamAccess>, bdf: Bdf) -> Result<Blk, String> {
    let df = DeviceFunction { bus: bdf.bus, device: bdf.dev, function: bdf.func };
    let transport = PciTransport::new::<DiskHal, _>(root, df).map_err(|e| alloc::format!("virtio transport: {e}"))?;
    let blk = VirtIOBlk::new(AccessPlatform { inner: transport, offered: 0 }).map_err(|e| alloc::format!("virtio-blk: {e}"))?;
    Ok(blk)
}

fn bring_up() -> Result<SwapDisk, String> {
    let p = super::init().map_err(String::from)?;
    let d = p.pci.iter().find(|d| d.vendor == VIRTIO_VENDOR && d.device == VIRTIO_BLK_MODERN).ok_or_else(|| String::from("no virtio-blk (modern) device"))?;
    let bdf = d.bdf;
    p.ecam.enable(bdf);
    {
        let mut iommu = p.iommu.lock();
        let domain = iommu.new_domain(super::KernelTableMemory).map_err(|e| alloc::format!("{e}"))?;
        iommu.attach(bdf, domain.id(), domain.root()).map_err(|e| alloc::format!("{e}"))?;
        *DMA.lock() = Some(DiskDma { domain, iommu: &p.iommu, permanent: [None; 10] });
    }
    let control = frames::alloc_zeroed().map_err(|e| alloc::format!("{e}"))?;
    control.set_flags(FrameFlags::PAGE_TABLE);
    let control = control.into_raw(); // owned by the disk for good
    if !hal::map_permanent(control) {
        return Err("no IOMMU table memory for the disk's control frame".into());
    }
    let mut bounce = [control; IN_FLIGHT];
    for b in bounce.iter_mut() {
        let f = frames::alloc_zeroed().map_err(|e| alloc::format!("{e}"))?;
        f.set_flags(FrameFlags::PAGE_TABLE);
        *b = f.into_raw(); // owned by the disk for good
        if !hal::map_permanent(*b) {
            return Err("no IOMMU table memory for the disk's bounce pages".into());
        }
    }
    let mut root = PciRoot::new(EcamAccess(&p.ecam));
    let blk = new_blk(&mut root, bdf)?;
    let reported = blk.capacity() / SECTORS_PER_PAGE;
    let pages = reported.min(MAX_PAGES);
    if pages < reported {
        log::warn!("swap disk: using {pages} of its {reported} pages");
    }
    let domain = DMA.lock().as_ref().map(|d| d.domain.id());
    log::info!("swap disk: virtio-blk at {bdf}, {} MiB ({pages} pages), DMA through VT-d {}", pages / 256, domain.map_or(0, |d| d.0));
    Ok(SwapDisk { bdf, blk: Some(blk), root, control, bounce, iommu: &p.iommu, pages, stats: DiskStats::default() })
}

#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

impl SwapDisk {
    /// Capacity in 4 KiB pages.
    pub fn pages(&self) -> u64 {
        self.pages
    }
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }
    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    /// Fill `frame` from disk page `page`.
    pub fn read_page(&mut self, page: u64, frame: PhysFrame) -> Result<(), DiskError> {
        self.transfer_retrying(Dir::Read, &[page])?;
        // SAFETY: the caller owns `frame` for this call; the bounce page is ours.
        unsafe { direct::copy_frame(frame, self.bounce[0]) };
        Ok(())
    }

    /// Write `frame` to disk page `page`.
    pub fn write_page(&mut self, page: u64, frame: PhysFrame) -> Result<(), DiskError> {
        self.write_pages(&[(page, frame)])
    }

    /// Write each `(page, frame)`, up to [`IN_FLIGHT`] requests in flight
    /// at a time. On an error, pages of the failing group may or may not
    /// have been written; every earlier group was.
    pub fn write_pages(&mut self, items: &[(u64, PhysFrame)]) -> Result<(), DiskError> {
        for group in items.chunks(IN_FLIGHT) {
            let mut pages = [0u64; IN_FLIGHT];
            for (i, &(page, frame)) in group.iter().enumerate() {
                if page >= self.pages {
                    return Err(DiskError::OutOfRange(page));
                }
                pages[i] = page;
                // SAFETY: the bounce page is the disk's; `frame` is live (the caller holds a reference).
                unsafe { direct::copy_frame(self.bounce[i], frame) };
            }
            self.transfer_retrying(Dir::Write, &pages[..group.len()])?;
        }
        Ok(())
    }

    /// The physical page the device transfers a single page through (for tests).
    pub fn bounce_frame(&self) -> PhysFrame {
        self.bounce[0]
    }

    /// Test hook: the next transfer runs with the bounce page removed from
    /// the disk's domain, so the device's DMA to it faults in VT-d.
    pub fn omit_next_buffer_mapping(&mut self) {
        hal::SKIP_NEXT_SHARE.store(true, Ordering::SeqCst);
    }

    /// Request `i`'s header, status and data buffer (control frame slot
    /// `i`, bounce page `i`).
    ///
    /// # Safety
    /// One user at a time (the disk's lock), and not while the device may
    /// use slot `i` except to pass the same buffers back to the driver.
    unsafe fn slot<'a>(&self, i: usize) -> (&'a mut BlkReq, &'a mut BlkResp, &'a mut [u8]) {
        let ctl = direct::phys_to_virt(self.control.start_address());
        // SAFETY: per the contract; the control frame holds IN_FLIGHT
        // headers at 32-byte strides and IN_FLIGHT status bytes from 256;
        // BlkReq and BlkResp are plain data; the bounce page is the disk's.
        unsafe {
            let req = &mut *(ctl + (i * 32) as u64).as_mut_ptr::<BlkReq>();
            let resp = &mut *(ctl + (256 + i * 32) as u64).as_mut_ptr::<BlkResp>();
            let buf = core::slice::from_raw_parts_mut(direct::phys_to_virt(self.bounce[i].start_address()).as_mut_ptr::<u8>(), 4096);
            (req, resp, buf)
        }
    }

    /// Move `pages` (at most [`IN_FLIGHT`]) between the disk and bounce
    /// pages `0..pages.len()`, all requests in flight together.
    /// [`SwapDisk::transfer`], again when the IOMMU lost fault records
    /// meanwhile (two devices faulting at once overflow this VT-d's single
    /// record): the transfer is idempotent, and a swap-in must not fail
    /// for another device's fault.
    fn transfer_retrying(&mut self, dir: Dir, pages: &[u64]) -> Result<(), DiskError> {
        let mut attempt = 1;
        loop {
            match self.transfer(dir, pages) {
                Err(DiskError::FaultsLost) if attempt < LOST_FAULT_ATTEMPTS => attempt += 1,
                r => return r,
            }
        }
    }

    fn transfer(&mut self, dir: Dir, pages: &[u64]) -> Result<(), DiskError> {
        let n = pages.len();
        assert!((1..=IN_FLIGHT).contains(&n), "1..={IN_FLIGHT} pages per transfer");
        if let Some(&p) = pages.iter().find(|&&p| p >= self.pages) {
            return Err(DiskError::OutOfRange(p));
        }
        // This disk's records left from an earlier (reset) transfer would be
        // misattributed: drop them. Other devices' stay parked for them.
        let stale = self.iommu.lock().discard_faults(self.bdf);
        if stale > 0 {
            log::warn!("{stale} IOMMU fault record(s) of an earlier disk transfer dropped");
        }
        let omitted = hal::SKIP_NEXT_SHARE.swap(false, Ordering::SeqCst);
        if omitted {
            hal::unmap_permanent(self.bounce[0]);
        }
        let mut tokens = [None::<u16>; IN_FLIGHT];
        let mut failure = None;
        for (i, &page) in pages.iter().enumerate() {
            let sector = (page * SECTORS_PER_PAGE) as usize;
            // SAFETY: slot `i` is free (every earlier transfer was drained).
            let (req, resp, buf) = unsafe { self.slot(i) };
            *req = BlkReq::default();
            *resp = BlkResp::default();
            let Some(blk) = self.blk.as_mut() else { return Err(DiskError::NoDisk) };
            // SAFETY: the slot's buffers stay untouched until the request
            // completes (or the device is reset below).
            let token = unsafe {
                match dir {
                    Dir::Read => blk.read_blocks_nb(sector, req, buf, resp),
                    Dir::Write => blk.write_blocks_nb(sector, req, buf, resp),
                }
            };
            match token {
                Ok(t) => tokens[i] = Some(t),
                Err(_) => {
                    failure = Some(DiskError::Queue);
                    break;
                }
            }
        }
        let mut polls = 0;
        let mut status = None;
        while tokens.iter().any(Option::is_some) {
            let Some(blk) = self.blk.as_mut() else { return Err(DiskError::NoDisk) };
            let Some(t) = blk.peek_used() else {
                polls += 1;
                if polls > MAX_POLLS || failure.is_some() {
                    // Lost requests (or a queue in an unknown state): the
                    // reset drops the queue; the device forgets them.
                    self.stats.errors += 1;
                    self.reset();
                    if omitted {
                        hal::remap_permanent(self.bounce[0]);
                    }
                    return Err(failure.unwrap_or(DiskError::NoCompletion));
                }
                let _ = crate::irq::wait_until(POLL_US, || blk.peek_used().is_some());
                continue;
            };
            let Some(i) = tokens.iter().position(|x| *x == Some(t)) else {
                log::error!("swap disk: completion for a request it does not know ({t})");
                failure = Some(DiskError::Queue);
                continue;
            };
            tokens[i] = None;
            // SAFETY: the same buffers as queued for this token.
            let (req, resp, buf) = unsafe { self.slot(i) };
            let Some(blk) = self.blk.as_mut() else { return Err(DiskError::NoDisk) };
            // SAFETY: as above.
            let done = unsafe {
                match dir {
                    Dir::Read => blk.complete_read_blocks(t, req, buf, resp),
                    Dir::Write => blk.complete_write_blocks(t, req, buf, resp),
                }
            };
            if done.is_err() && status.is_none() {
                let s = resp.status();
                status = Some(DiskError::Status(if s == RespStatus::OK { 0xff } else { status_byte(s) }));
            }
        }
        if omitted {
            hal::remap_permanent(self.bounce[0]);
        }
        let fault = match self.iommu.lock().claim_fault(self.bdf) {
            devices::vtd::FaultClaim::Fault(rec) => Some(DiskError::DmaFault(rec)),
            devices::vtd::FaultClaim::Lost => Some(DiskError::FaultsLost),
            devices::vtd::FaultClaim::Clean => None,
        };
        if let Some(e) = fault.or(status).or(failure) {
            self.stats.errors += 1;
            return Err(e);
        }
        match dir {
            Dir::Read => self.stats.reads += n as u64,
            Dir::Write => self.stats.writes += n as u64,
        }
        Ok(())
    }

    /// Re-initialise a device that stopped answering: a fresh transport
    /// resets it (the old queue is dropped first), and every mapping it
    /// might still use is removed.
    fn reset(&mut self) {
        self.stats.resets += 1;
        log::warn!("swap disk at {}: no completion; resetting the device", self.bdf);
        // The old driver goes first: its drop unsets the queue and frees its rings.
        self.blk = None;
        match new_blk(&mut self.root, self.bdf) {
            Ok(blk) => self.blk = Some(blk),
            Err(e) => log::error!("swap disk at {}: reset failed: {e}", self.bdf),
        }
    }
}

fn status_byte(s: RespStatus) -> u8 {
    zerocopy::IntoBytes::as_bytes(&s)[0]
}
