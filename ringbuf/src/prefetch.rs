//! Write prefetch: the producer asks for ownership of slot lines a little ahead of writing them.
//!
//! A slot line the producer is about to write was last read by the consumer, on another CPU, so
//! the producer's store needs the line back in the exclusive state first (a read-for-ownership).
//! Without a hint the store waits for that in the store buffer, and every later store waits
//! behind it. `PREFETCHW` (x86) and `PRFM PSTL1KEEP` (ARMv8) start the transfer early. They are
//! hints: they never fault, write nothing and change no value any thread sees, so a prefetch of
//! a slot the consumer is still reading costs that consumer a cache miss and nothing else. The
//! producer still only prefetches slots it will own (below `tail + capacity`).
//!
//! x86 CPUs advertise `PREFETCHW` with CPUID leaf 0x8000_0001, ECX bit 8; without it the
//! producer does not prefetch. Every ARMv8 CPU accepts `PRFM` (it may ignore it).

/// Whether this CPU has a write prefetch the producer may issue.
pub(crate) fn available() -> bool {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        // CPUID 0x8000_0000 gives the highest extended leaf; 0x8000_0001 exists on every
        // x86_64 CPU, but ask rather than assume.
        let max_extended = std::arch::x86_64::__cpuid(0x8000_0000).eax;
        max_extended >= 0x8000_0001 && std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0
    }
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    {
        true
    }
    #[cfg(any(miri, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    {
        false
    }
}

/// Asks for the cache line holding `p` in the exclusive state, ready to be written. Call only
/// where [`available`] said so.
#[inline(always)]
pub(crate) fn line_for_write<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: PREFETCHW is a hint: it reads and writes no memory visible to the program, does not
    // fault on any address, and leaves the flags and the stack alone (the options say so). The
    // caller checked CPUID (`available`), so the CPU decodes it.
    unsafe {
        std::arch::asm!("prefetchw [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    // SAFETY: PRFM is a hint in every ARMv8 CPU: no fault, no memory or register effect beyond
    // the cache, flags and stack untouched.
    unsafe {
        std::arch::asm!("prfm pstl1keep, [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(any(miri, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    let _ = p;
}
