//! The emulated machine, defined once.
//!
//! ```text
//!  q35 chipset ── intel-iommu (VT-d, 48-bit address width, 4-level tables)
//!      ├── 00:01.0 edu (DMA mask: all 64 bits, so user addresses pass unclamped)
//!      ├── 00:02.0 edu
//!      ├── 00:03.0 virtio-blk (modern, `iommu_platform=on`: its DMA goes through VT-d),
//!      │           the swap disk: a sparse file `target/disks/swap-<N>M.img`
//!      │           opened with `snapshot=on` (writes go to a temporary overlay QEMU
//!      │           deletes at exit, so runs in parallel never share swap contents)
//!      ├── isa-debug-exit at port 0xf4 (the kernel's exit code)
//!      └── COM1 on stdio; no display; qboot firmware (fast; leaves BARs to us)
//! ```
//!
//! Accelerator: TCG with `-icount shift=auto,sleep=off` by default. With
//! icount the virtual clock skips ahead while the guest is halted, so an
//! `edu` DMA (100 ms of virtual time) costs well under a millisecond of wall
//! time. KVM is used on request, or by `auto` when the host CPU has VT-x or
//! AMD-V; a paravirtual `/dev/kvm` without them is ~2000x slower than TCG.

use std::path::Path;
use std::process::Command;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// The one-line install hint printed when QEMU is missing.
pub const QEMU_INSTALL_HINT: &str = "qemu-system-x86_64 not found: install it with `apt-get install qemu-system-x86`";
/// The port `--gdb` uses when none is given.
pub const DEFAULT_GDB_PORT: u16 = 1234;
/// qboot, the fast firmware (Debian package qemu-system-data).
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// TCG; `icount_shift` None = `shift=auto`, Some(n) = a fixed shift
    /// (the guest TSC then counts instructions, repeatable run to run).
    Tcg { icount_shift: Option<u8> },
    /// Multi-threaded TCG without icount (`-accel tcg,thread=multi`): one
    /// host thread per vCPU, so CPUs really run at the same time; but the
    /// virtual clock is the host's, so every `edu` DMA costs 100 ms of wall
    /// time (QEMU refuses MTTCG together with icount).
    Mttcg,
    Kvm,
}

impl Accel {
    /// What `auto` picks on this host.
    pub fn auto() -> Accel {
        if host_has_hw_virt() && Path::new("/dev/kvm").exists() {
            Accel::Kvm
        } else {
            Accel::Tcg { icount_shift: None }
        }
    }

    /// Parse `tcg`, `kvm` or `auto`.
    pub fn parse(s: &str) -> Option<Accel> {
        match s {
            "tcg" => Some(Accel::Tcg { icount_shift: None }),
            "mttcg" => Some(Accel::Mttcg),
            "kvm" => Some(Accel::Kvm),
            "auto" => Some(Accel::auto()),
            _ => None,
        }
    }

    /// The short name passed to the kernel (`accel=` on its command line).
    pub fn name(&self) -> &'static str {
        match self {
            Accel::Tcg { .. } | Accel::Mttcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }

    /// A one-line description for the user.
    pub fn describe(&self) -> String {
        match self {
            Accel::Tcg { icount_shift: None } => "TCG with -icount shift=auto,sleep=off".into(),
            Accel::Tcg { icount_shift: Some(n) } => format!("TCG with -icount shift={n},sleep=off (guest TSC counts instructions)"),
            Accel::Mttcg => "multi-threaded TCG without icount (edu DMAs take 100 ms of wall time)".into(),
            Accel::Kvm => "KVM".into(),
        }
    }
}

/// Whether the host CPU advertises VT-x (`vmx`) or AMD-V (`svm`).
pub fn host_has_hw_virt() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm")))
        .unwrap_or(false)
}

/// The swap disk's default size: 4 GiB (sparse: it costs nothing until written).
pub const DEFAULT_DISK_MIB: u64 = 4096;

/// The swap disk's backing file for `mib` MiB: created sparse (all zeros)
/// if missing. QEMU opens it with `snapshot=on`, so it is never written and
/// concurrent runs share it safely.
pub fn disk_image(mib: u64) -> std::io::Result<std::path::PathBuf> {
    let dir = crate::workspace_root().join("target/disks");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("swap-{mib}M.img"));
    let len = mib.checked_mul(1 << 20).ok_or_else(|| std::io::Error::other("disk size overflows"))?;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
    if f.metadata()?.len() != len {
        f.set_len(len)?;
    }
    Ok(path)
}

/// Processors `cargo run` boots with.
pub const DEFAULT_CPUS: u8 = 2;
/// The most the kernel supports (its `cpus::MAX_CPUS`).
pub const MAX_CPUS: u8 = 8;

/// Everything that varies between boots.
#[derive(Clone, Debug)]
pub struct Machine {
    pub accel: Accel,
    /// Processors (`-smp N`), 1..=[`MAX_CPUS`].
    pub cpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// The swap disk's size in MiB (the guest's swap capacity).
    pub disk_mib: u64,
    /// Wait for gdb on this TCP port of 127.0.0.1 before running
    /// (`-gdb tcp:127.0.0.1:PORT -S`; only this host can attach).
    pub gdb: Option<u16>,
    /// The kernel command line (`-append`); `accel=` is added to it.
    pub cmdline: String,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<String>,
}

impl Default for Machine {
    fn default() -> Self {
        Machine { accel: Accel::auto(), cpus: DEFAULT_CPUS, memory_mib: 512, disk_mib: DEFAULT_DISK_MIB, gdb: None, cmdline: String::new(), extra_args: Vec::new() }
    }
}

impl Machine {
    /// The QEMU command that boots `kernel` on this machine.
    pub fn command(&self, kernel: &Path) -> Command {
        let mut c = Command::new(QEMU);
        if Path::new(QBOOT).exists() {
            c.args(["-bios", QBOOT]);
        }
        c.args(["-nodefaults", "-machine", "q35", "-m"]).arg(format!("{}M", self.memory_mib));
        match self.accel {
            Accel::Tcg { icount_shift } => {
                let shift = icount_shift.map_or("auto".to_string(), |n| n.to_string());
                c.args(["-accel", "tcg", "-icount"]).arg(format!("shift={shift},sleep=off"));
            }
            Accel::Mttcg => {
                c.args(["-accel", "tcg,thread=multi"]);
            }
            // The default CPU model: `-cpu host` makes QEMU 7.2 abort on
            // hosts whose KVM rejects MSR 0x10a (seen with a paravirtual KVM).
            Accel::Kvm => {
                c.args(["-accel", "kvm"]);
            }
        }
        c.arg("-smp").arg(self.cpus.to_string());
        c.arg("-kernel").arg(kernel);
        let mut cmdline = format!("accel={}", self.accel.name());
        if let Accel::Tcg { icount_shift: Some(n) } = self.accel {
            cmdline.push_str(&format!(" icount={n}"));
        }
        if !self.cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&self.cmdline);
        }
        c.args(["-append", &cmdline]);
        c.args(["-serial", "stdio", "-display", "none", "-no-reboot"]);
        c.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        c.args(["-device", "intel-iommu,aw-bits=48"]);
        c.args(["-device", "edu,addr=01.0,dma_mask=0xffffffffffffffff"]);
        c.args(["-device", "edu,addr=02.0,dma_mask=0xffffffffffffffff"]);
        match disk_image(self.disk_mib) {
            Ok(path) => {
                c.arg("-drive").arg(format!("file={},format=raw,if=none,id=swap,snapshot=on,cache=unsafe", path.display()));
                c.args(["-device", "virtio-blk-pci,drive=swap,addr=03.0,iommu_platform=on,disable-legacy=on"]);
            }
            Err(e) => eprintln!("hmmos: no swap disk: cannot create its image: {e}"),
        }
        if let Some(port) = self.gdb {
            c.arg("-gdb").arg(format!("tcp:127.0.0.1:{port}")).arg("-S");
        }
        c.args(&self.extra_args);
        c
    }
}
