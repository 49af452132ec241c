//! Hot loops compiled for AVX2 when the CPU has it (the crate is built for baseline x86-64).

/// `avx2_dispatch!(fn name(args) => portable);` defines `name`, which calls `portable(args)`
/// from a copy compiled with AVX2 enabled when the CPU supports it (mark `portable`
/// `#[inline(always)]` so that its loops are vectorised 8 lanes wide there), else as it is.
/// Multiply and add stay separate either way (no FMA contraction), so the results are the same
/// bits on every x86-64 CPU.
macro_rules! avx2_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $portable:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    $portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}

pub(crate) use avx2_dispatch;
