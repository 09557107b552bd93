// vlguest: a bare-metal arm64 KVM guest that prints the SVE vector lengths it can use.
//
// Booted by QEMU as a raw `-kernel` image (it carries the arm64 Linux Image header, so QEMU
// enters it at EL1 with the MMU off).  Each round it enables SVE for EL1 (CPACR_EL1.ZEN), writes
// ZCR_EL1.LEN = vq-1 for vq 1..16 and reads RDVL: the CPU gives the largest supported VL not
// above the request, so the distinct answers are exactly the guest's VL set.  It prints
//     VLS 128,256,384
// (or "VLS sve-off") on the PL011 UART of QEMU's virt machine, then waits ~125 ms and repeats
// until a byte arrives on the UART, and then powers off with PSCI SYSTEM_OFF through HVC.
// Repeating is what the migration test needs: the set is enumerated again after a restore.

        .arch   armv8.2-a+sve

        .equ    UART, 0x09000000
        .equ    UART_FR, 0x18
        .equ    FR_RXFE, 4              // receive FIFO empty
        .equ    FR_TXFF, 5              // transmit FIFO full
        .equ    PSCI_SYSTEM_OFF, 0x84000008

        .text
        .globl  _start
_start:                                 // arm64 Linux Image header (Documentation/arm64/booting)
        b       main                    // code0
        .long   0                       // code1
        .quad   0x80000                 // text_offset
        .quad   image_end - _start      // image_size
        .quad   0xa                     // flags: little-endian, 4K pages, anywhere in RAM
        .quad   0, 0, 0                 // res2..res4
        .ascii  "ARM\x64"               // magic
        .long   0                       // res5

main:   mov     x27, #UART
        mrs     x1, id_aa64pfr0_el1     // ID_AA64PFR0_EL1.SVE, bits [35:32]
        ubfx    x1, x1, #32, #4
        cbz     x1, nosve
        mrs     x1, cpacr_el1
        orr     x1, x1, #(3 << 16)      // ZEN: no SVE traps at EL1/EL0
        orr     x1, x1, #(3 << 20)      // FPEN: no FP/SIMD traps either
        msr     cpacr_el1, x1
        isb

round:  adr     x0, label
        bl      puts
        mov     x19, #0                 // ZCR_EL1.LEN = vq - 1
        mov     x20, #0                 // the previous VL in bytes
        mov     x22, #0                 // how many VLs were printed
1:      msr     S3_0_C1_C2_0, x19       // ZCR_EL1, by its encoding
        isb
        rdvl    x21, #1                 // the effective VL in bytes
        cmp     x21, x20
        b.eq    2f
        mov     x20, x21
        cbz     x22, 3f
        mov     w0, #','
        bl      putc
3:      lsl     x0, x21, #3             // bytes -> bits
        bl      putdec
        add     x22, x22, #1
2:      add     x19, x19, #1
        cmp     x19, #16
        b.lt    1b
        bl      endline
        b       next

nosve:  adr     x0, label
        bl      puts
        adr     x0, off
        bl      puts
        bl      endline

next:   ldr     w1, [x27, #UART_FR]
        tbz     w1, #FR_RXFE, poweroff  // a byte was received: stop
        mrs     x1, cntfrq_el0          // wait an eighth of a second on the virtual counter
        mrs     x2, cntvct_el0
        add     x2, x2, x1, lsr #3
4:      mrs     x1, cntvct_el0
        cmp     x1, x2
        b.lo    4b
        mrs     x1, id_aa64pfr0_el1
        ubfx    x1, x1, #32, #4
        cbz     x1, nosve
        b       round

poweroff:
        movz    x0, #(PSCI_SYSTEM_OFF & 0xffff)
        movk    x0, #(PSCI_SYSTEM_OFF >> 16), lsl #16
        hvc     #0
        b       .

// putc: w0 -> UART.  Clobbers x1.
putc:   ldr     w1, [x27, #UART_FR]
        tbnz    w1, #FR_TXFF, putc
        strb    w0, [x27]
        ret

// puts: the NUL-terminated string at x0.  Clobbers x0-x2, x28.
puts:   mov     x28, x30
        mov     x2, x0
5:      ldrb    w0, [x2], #1
        cbz     w0, 6f
        bl      putc
        b       5b
6:      ret     x28

endline:
        mov     x28, x30
        mov     w0, #'\n'
        bl      putc
        ret     x28

// putdec: x0 (1..9999) in decimal, no leading zeros.  Clobbers x0-x5, x28.
putdec: mov     x28, x30
        mov     x3, x0
        mov     x4, #1000
        mov     x5, #0                  // a digit was printed
7:      udiv    x0, x3, x4
        msub    x3, x0, x4, x3
        cbnz    x0, 8f
        cbnz    x5, 8f
        cmp     x4, #1
        b.ne    9f
8:      add     w0, w0, #'0'
        bl      putc
        mov     x5, #1
9:      mov     x0, #10
        udiv    x4, x4, x0
        cbnz    x4, 7b
        ret     x28

label:  .asciz  "VLS "
off:    .asciz  "sve-off"
        .balign 8
image_end:
