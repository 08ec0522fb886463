//! The swap disk: a virtio-blk device over PCI (modern, `iommu_platform=on`),
//! driven by the `virtio-drivers` crate, its DMA translated by VT-d in a
//! kernel domain of its own ([`hal`]).
//!
//! ```text
//!  init (once, on first use): find 1af4:1042 ─► memory + bus master on
//!    ─► new VT-d domain, device attached (its DMA reaches nothing yet)
//!    ─► control frame (request header + status) mapped for good
//!    ─► virtio-drivers: PciTransport (ACCESS_PLATFORM accepted) ─► VirtIOBlk
//!  read_page / write_page(page index, frame):
//!    page copied to/from the bounce frame; header in the control frame
//!    ─► queue ─► wait for the used ring (hlt with a short timer, bounded)
//!    ─► pop ─► VT-d fault records: one from the disk fails the transfer
//!    ─► status
//! ```
//!
//! Why a bounce frame rather than mapping each page frame for its transfer:
//! swap-out runs when frames are scarce, and mapping arbitrary frames into
//! the domain needs IOMMU table nodes (frames) and an IOTLB flush per page.
//! The device sees exactly two pages of RAM, both the disk's own; the copy
//! costs a 4 KiB memcpy per page.
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
use spin::{Mutex, Once};
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
        }
    }
}

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
    /// The page the device reads and writes, mapped for good.
    bounce: PhysFrame,
    iommu: &'static crate::sync::RankedMutex<super::KernelIommu>,
    pages: u64,
    stats: DiskStats,
}

static DISK: Once<Result<Mutex<SwapDisk>, String>> = Once::new();

/// The swap disk, brought up on first use; `Err` says why there is none.
pub fn disk() -> Result<&'static Mutex<SwapDisk>, &'static str> {
    DISK.call_once(|| bring_up().map(Mutex::new)).as_ref().map_err(|e| e.as_str())
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
        *DMA.lock() = Some(DiskDma { domain, iommu: &p.iommu, permanent: [None; 6] });
    }
    let control = frames::alloc_zeroed().map_err(|e| alloc::format!("{e}"))?;
    control.set_flags(FrameFlags::PAGE_TABLE);
    let control = control.into_raw(); // owned by the disk for good
    let bounce = frames::alloc_zeroed().map_err(|e| alloc::format!("{e}"))?;
    bounce.set_flags(FrameFlags::PAGE_TABLE);
    let bounce = bounce.into_raw(); // owned by the disk for good
    if !hal::map_permanent(control) || !hal::map_permanent(bounce) {
        return Err("no IOMMU table memory for the disk's control and bounce frames".into());
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
        self.transfer(Dir::Read, page)?;
        // SAFETY: the caller owns `frame` for this call; the bounce frame is ours.
        unsafe { direct::copy_frame(frame, self.bounce) };
        Ok(())
    }

    /// Write `frame` to disk page `page`.
    pub fn write_page(&mut self, page: u64, frame: PhysFrame) -> Result<(), DiskError> {
        if page >= self.pages {
            return Err(DiskError::OutOfRange(page));
        }
        // SAFETY: the bounce frame is the disk's; `frame` is live (the caller holds a reference).
        unsafe { direct::copy_frame(self.bounce, frame) };
        self.transfer(Dir::Write, page)
    }

    /// The physical page the device transfers through (for tests).
    pub fn bounce_frame(&self) -> PhysFrame {
        self.bounce
    }

    /// Test hook: the next transfer runs with the bounce page removed from
    /// the disk's domain, so the device's DMA to it faults in VT-d.
    pub fn omit_next_buffer_mapping(&mut self) {
        hal::SKIP_NEXT_SHARE.store(true, Ordering::SeqCst);
    }

    fn transfer(&mut self, dir: Dir, page: u64) -> Result<(), DiskError> {
        if page >= self.pages {
            return Err(DiskError::OutOfRange(page));
        }
        let sector = (page * SECTORS_PER_PAGE) as usize;
        let ctl = direct::phys_to_virt(self.control.start_address());
        // SAFETY: the control frame is the disk's own, mapped for the device
        // for good; only this (locked) driver touches it, one request at a
        // time. BlkReq and BlkResp are plain data (any bytes are valid once
        // the defaults are written).
        let (req, resp) = unsafe {
            let req = &mut *ctl.as_mut_ptr::<BlkReq>();
            let resp = &mut *(ctl + 64u64).as_mut_ptr::<BlkResp>();
            *req = BlkReq::default();
            *resp = BlkResp::default();
            (req, resp)
        };
        let frame = self.bounce;
        // SAFETY: the bounce frame is the disk's own, used by one request at
        // a time under the disk's lock; the direct map covers it.
        let buf = unsafe { core::slice::from_raw_parts_mut(direct::phys_to_virt(frame.start_address()).as_mut_ptr::<u8>(), 4096) };
        let omitted = hal::SKIP_NEXT_SHARE.swap(false, Ordering::SeqCst);
        if omitted {
            hal::unmap_permanent(frame);
        }
        // SAFETY: `req`, `buf` and `resp` stay untouched until the request
        // completes (or the device is reset below).
        // Faults left from earlier work would be misattributed: clear them.
        for stale in self.iommu.lock().take_faults().records {
            log::warn!("unclaimed IOMMU fault before a disk transfer: {stale}");
        }
        let Some(blk) = self.blk.as_mut() else { return Err(DiskError::NoDisk) };
        let token = unsafe {
            match dir {
                Dir::Read => blk.read_blocks_nb(sector, req, buf, resp),
                Dir::Write => blk.write_blocks_nb(sector, req, buf, resp),
            }
        };
        let token = token.map_err(|_| {
            self.stats.errors += 1;
            DiskError::Queue
        })?;
        let mut polls = 0;
        while blk.peek_used() != Some(token) {
            polls += 1;
            if polls > MAX_POLLS {
                self.stats.errors += 1;
                self.reset();
                if omitted {
                    hal::remap_permanent(frame);
                }
                return Err(DiskError::NoCompletion);
            }
            let _ = crate::irq::wait_until(POLL_US, || blk.peek_used() == Some(token));
        }
        // SAFETY: the same buffers as queued above.
        let done = unsafe {
            match dir {
                Dir::Read => blk.complete_read_blocks(token, req, buf, resp),
                Dir::Write => blk.complete_write_blocks(token, req, buf, resp),
            }
        };
        if omitted {
            hal::remap_permanent(frame);
        }
        let mut fault = None;
        for rec in self.iommu.lock().take_faults().records {
            if rec.source == self.bdf && fault.is_none() {
                fault = Some(rec);
            } else {
                log::warn!("IOMMU fault from another source during a disk transfer: {rec}");
            }
        }
        if let Some(rec) = fault {
            self.stats.errors += 1;
            return Err(DiskError::DmaFault(rec));
        }
        match done {
            Ok(()) => {
                match dir {
                    Dir::Read => self.stats.reads += 1,
                    Dir::Write => self.stats.writes += 1,
                }
                Ok(())
            }
            Err(_) => {
                self.stats.errors += 1;
                let s = resp.status();
                Err(DiskError::Status(if s == RespStatus::OK { 0xff } else { status_byte(s) }))
            }
        }
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
