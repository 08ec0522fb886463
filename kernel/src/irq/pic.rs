//! The legacy 8259 PICs: remapped away from the exception vectors (so a
//! spurious IRQ 7 cannot masquerade as exception 15) and fully masked.
//! hmmos takes interrupts through the local APIC only.

use x86_64::instructions::port::Port;

pub fn remap_and_mask() {
    let (mut cmd1, mut data1) = (Port::<u8>::new(0x20), Port::<u8>::new(0x21));
    let (mut cmd2, mut data2) = (Port::<u8>::new(0xa0), Port::<u8>::new(0xa1));
    // SAFETY: the standard ICW1-4 initialisation of the two cascaded 8259s
    // at their fixed ports, then OCW1 masking every line.
    unsafe {
        cmd1.write(0x11); // ICW1: init, ICW4 follows
        cmd2.write(0x11);
        data1.write(0x20); // ICW2: vector bases 0x20 / 0x28
        data2.write(0x28);
        data1.write(4); // ICW3: slave on IRQ2
        data2.write(2);
        data1.write(1); // ICW4: 8086 mode
        data2.write(1);
        data1.write(0xff); // mask all
        data2.write(0xff);
    }
}
