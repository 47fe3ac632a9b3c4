//! MD5 over sixteen independent messages at once, for verifying every file of
//! every package: the one place perimeter computes a digest itself instead of
//! calling the md-5 crate for the whole message.
//!
//! Why hand-written: MD5 is a chain, each step waiting on the one before, so a
//! single message runs at about 600 MB/s per core whatever the implementation
//! (the md-5 crate and dpkg's own both do). A host's packages are tens of
//! thousands of independent files, though, and a vector register holds eight
//! (AVX2) or sixteen (AVX-512) 32-bit lanes: running sixteen files side by
//! side, one per lane, hashes several times as many bytes per core. No
//! maintained crate offers multi-buffer MD5, so this module does, and keeps
//! itself small: the compression function over lanes, nothing else. Padding,
//! scheduling and reading live in `verify`; the portable backend hands each
//! lane to md-5's own block function, and the tests check every backend this
//! CPU runs against md-5 and the RFC 1321 vectors.
//!
//! Three backends, all sixteen lanes wide so the scheduler does not care
//! which runs: AVX-512 (one ZMM register per state word; `vpternlogd` for the
//! round functions, `vprold` for the rotations), AVX2 (two independent YMM
//! chains of eight lanes, interleaved so one fills the other's latency; the
//! round functions and rotations from plain logic and shifts, so it runs on
//! every x86-64 CPU since 2013) and portable. Message words reach the lanes
//! by loading each lane's block and transposing in registers, not by
//! gathering: gathers are slow on AMD's Zen 4 and on the Intel CPUs whose
//! microcode mitigates Gather Data Sampling, and the transpose costs the same
//! everywhere. [`Backend::detect`] measures the vector backends this CPU runs
//! on a few hundred KiB (well under a millisecond) and picks the fastest, so
//! a CPU that runs AVX-512 at half width (Zen 4 splits each 512-bit operation
//! in two) gets whichever is faster there, not whichever is wider.
//!
//! The `unsafe` here is confined to loading and storing vectors, each after
//! the bounds it relies on were checked, and to calling a vector function
//! only when the CPU reports its features.

use std::time::{Duration, Instant};

use md5::block_api::compress as md5_compress_blocks;

/// Messages hashed side by side.
pub(crate) const LANES: usize = 16;
/// MD5 block size in bytes.
pub(crate) const BLOCK: usize = 64;

/// The four MD5 state words of each lane: `state[word][lane]`.
pub(crate) type LaneState = [[u32; LANES]; 4];

/// MD5's initial state (RFC 1321, 3.3).
pub(crate) const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Which implementation compresses the lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Sixteen lanes in one AVX-512 register per state word.
    Avx512,
    /// Sixteen lanes as two interleaved AVX2 chains of eight.
    Avx2,
    /// One lane after another through md-5's block function.
    Portable,
}

/// How [`Backend::detect`] chose: each candidate's measured speed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calibration {
    pub chosen: Backend,
    /// (backend, bytes hashed per second on one core), fastest first; empty
    /// when only the portable backend runs here.
    pub measured: Vec<(Backend, u64)>,
}

impl Backend {
    /// Every backend, fastest first on the machines measured.
    pub const ALL: [Backend; 3] = [Backend::Avx512, Backend::Avx2, Backend::Portable];

    /// Whether this CPU runs the backend.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            Backend::Avx512 | Backend::Avx2 => false,
            Backend::Portable => true,
        }
    }

    /// The fastest backend this CPU runs, measured: every supported vector
    /// backend hashes the same sixteen 16 KiB messages a few times and the
    /// best time of each decides (the portable one is several times slower
    /// than any vector one wherever both run, so it is only the fallback).
    pub fn detect() -> Calibration {
        let candidates: Vec<Backend> = [Backend::Avx512, Backend::Avx2]
            .into_iter()
            .filter(|backend| backend.is_supported())
            .collect();
        if candidates.len() < 2 {
            return Calibration {
                chosen: candidates.first().copied().unwrap_or(Backend::Portable),
                measured: Vec::new(),
            };
        }
        let mut measured: Vec<(Backend, u64)> = candidates
            .iter()
            .map(|&backend| (backend, measure(backend, CALIBRATION_ROUNDS) as u64))
            .collect();
        measured.sort_by_key(|&(_, speed)| std::cmp::Reverse(speed));
        Calibration {
            chosen: measured
                .first()
                .map_or(Backend::Portable, |(backend, _)| *backend),
            measured,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Avx512 => "avx512x16",
            Backend::Avx2 => "avx2x16",
            Backend::Portable => "portable",
        }
    }

    /// The backend a user names (`avx512`, `avx2`, `portable`, or the names
    /// [`Backend::as_str`] gives).
    pub fn from_name(name: &str) -> Option<Backend> {
        match name {
            "avx512" | "avx512x16" => Some(Backend::Avx512),
            "avx2" | "avx2x16" => Some(Backend::Avx2),
            "portable" => Some(Backend::Portable),
            _ => None,
        }
    }
}

/// Timed passes over the calibration messages per backend; the best counts.
const CALIBRATION_ROUNDS: usize = 5;
/// Bytes per lane in a calibration pass: enough blocks that loop overhead
/// does not count, few enough that all of it stays in the L2 cache.
const CALIBRATION_LANE_BYTES: usize = 16 * 1024;

/// Bytes per second `backend` hashes on this core (sixteen lanes of
/// [`CALIBRATION_LANE_BYTES`]), the best of `rounds` passes. The first pass
/// also warms the caches and the vector unit.
pub(crate) fn measure(backend: Backend, rounds: usize) -> f64 {
    let arena: Vec<u8> = (0..LANES * CALIBRATION_LANE_BYTES + BLOCK)
        .map(|i| (i as u8).wrapping_mul(151))
        .collect();
    // Cache-line aligned lanes, as `verify` lays them out.
    let start = arena.as_ptr().align_offset(BLOCK).min(BLOCK);
    let offsets: [usize; LANES] = std::array::from_fn(|lane| start + lane * CALIBRATION_LANE_BYTES);
    let n_blocks = CALIBRATION_LANE_BYTES / BLOCK;
    let mut best = Duration::MAX;
    let mut state: LaneState = [[0; LANES]; 4];
    for lane in 0..LANES {
        reset_lane(&mut state, lane);
    }
    for _ in 0..rounds.max(1) + 1 {
        let start = Instant::now();
        compress_lanes(backend, &mut state, &arena, &offsets, u16::MAX, n_blocks);
        best = best.min(start.elapsed());
    }
    std::hint::black_box(&state);
    arena.len() as f64 / best.as_secs_f64().max(1e-9)
}

/// Puts lane `lane` back to MD5's initial state, for a new message.
pub(crate) fn reset_lane(state: &mut LaneState, lane: usize) {
    for (word, init) in state.iter_mut().zip(INIT) {
        if let Some(slot) = word.get_mut(lane) {
            *slot = init;
        }
    }
}

/// The digest lane `lane` holds, once its padded message is through.
pub(crate) fn lane_digest(state: &LaneState, lane: usize) -> [u8; 16] {
    let mut digest = [0u8; 16];
    for (chunk, word) in digest.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.get(lane).copied().unwrap_or(0).to_le_bytes());
    }
    digest
}

/// Compresses `n_blocks` blocks into every lane in `active` (a bit per lane):
/// lane `l` reads `arena[offsets[l]..offsets[l] + 64 * n_blocks]`. Lanes not
/// in `active` keep whatever state they had only for the portable backend;
/// the vector ones compute all sixteen, so the caller resets a lane before
/// giving it a new message (idle lanes still need readable offsets).
///
/// Panics if an offset range is outside the arena, or if `backend` does not
/// run on this CPU: offsets come from the scheduler in `verify` and the
/// backend from [`Backend::is_supported`], never from outside the process,
/// so either is a bug.
pub(crate) fn compress_lanes(
    backend: Backend,
    state: &mut LaneState,
    arena: &[u8],
    offsets: &[usize; LANES],
    active: u16,
    n_blocks: usize,
) {
    let span = n_blocks.saturating_mul(BLOCK);
    assert!(
        offsets.iter().all(|&offset| offset
            .checked_add(span)
            .is_some_and(|end| end <= arena.len())),
        "md5 lane offsets outside the arena"
    );
    assert!(
        backend.is_supported(),
        "{backend:?} does not run on this CPU"
    );
    match backend {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU reports AVX-512F (asserted above), and every lane's
        // `n_blocks` blocks were checked to lie inside `arena`.
        Backend::Avx512 => unsafe { avx512::compress(state, arena, offsets, n_blocks) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU reports AVX2 (asserted above), and every lane's
        // `n_blocks` blocks were checked to lie inside `arena`.
        Backend::Avx2 => unsafe { avx2::compress(state, arena, offsets, n_blocks) },
        _ => compress_portable(state, arena, offsets, active, n_blocks),
    }
}

fn compress_portable(
    state: &mut LaneState,
    arena: &[u8],
    offsets: &[usize; LANES],
    active: u16,
    n_blocks: usize,
) {
    for (lane, &offset) in offsets.iter().enumerate() {
        if active & (1 << lane) == 0 {
            continue;
        }
        let Some(bytes) = arena.get(offset..offset + n_blocks * BLOCK) else {
            continue;
        };
        let mut words = [
            state[0][lane],
            state[1][lane],
            state[2][lane],
            state[3][lane],
        ];
        for block in bytes.chunks_exact(BLOCK) {
            if let Ok(block) = <&[u8; BLOCK]>::try_from(block) {
                md5_compress_blocks(&mut words, std::slice::from_ref(block));
            }
        }
        for (word, value) in state.iter_mut().zip(words) {
            word[lane] = value;
        }
    }
}

/// The sine-derived constants of RFC 1321, one per step.
#[cfg(target_arch = "x86_64")]
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// The 64 steps of one block (RFC 1321, 3.4), as `$step!(round function, a,
/// b, c, d, message word, step, rotation)`; each backend brings its `$step`.
#[cfg(target_arch = "x86_64")]
macro_rules! md5_steps {
    ($step:ident, $a:ident, $b:ident, $c:ident, $d:ident) => {
        $step!(F, $a, $b, $c, $d, 0, 0, 7);
        $step!(F, $d, $a, $b, $c, 1, 1, 12);
        $step!(F, $c, $d, $a, $b, 2, 2, 17);
        $step!(F, $b, $c, $d, $a, 3, 3, 22);
        $step!(F, $a, $b, $c, $d, 4, 4, 7);
        $step!(F, $d, $a, $b, $c, 5, 5, 12);
        $step!(F, $c, $d, $a, $b, 6, 6, 17);
        $step!(F, $b, $c, $d, $a, 7, 7, 22);
        $step!(F, $a, $b, $c, $d, 8, 8, 7);
        $step!(F, $d, $a, $b, $c, 9, 9, 12);
        $step!(F, $c, $d, $a, $b, 10, 10, 17);
        $step!(F, $b, $c, $d, $a, 11, 11, 22);
        $step!(F, $a, $b, $c, $d, 12, 12, 7);
        $step!(F, $d, $a, $b, $c, 13, 13, 12);
        $step!(F, $c, $d, $a, $b, 14, 14, 17);
        $step!(F, $b, $c, $d, $a, 15, 15, 22);

        $step!(G, $a, $b, $c, $d, 1, 16, 5);
        $step!(G, $d, $a, $b, $c, 6, 17, 9);
        $step!(G, $c, $d, $a, $b, 11, 18, 14);
        $step!(G, $b, $c, $d, $a, 0, 19, 20);
        $step!(G, $a, $b, $c, $d, 5, 20, 5);
        $step!(G, $d, $a, $b, $c, 10, 21, 9);
        $step!(G, $c, $d, $a, $b, 15, 22, 14);
        $step!(G, $b, $c, $d, $a, 4, 23, 20);
        $step!(G, $a, $b, $c, $d, 9, 24, 5);
        $step!(G, $d, $a, $b, $c, 14, 25, 9);
        $step!(G, $c, $d, $a, $b, 3, 26, 14);
        $step!(G, $b, $c, $d, $a, 8, 27, 20);
        $step!(G, $a, $b, $c, $d, 13, 28, 5);
        $step!(G, $d, $a, $b, $c, 2, 29, 9);
        $step!(G, $c, $d, $a, $b, 7, 30, 14);
        $step!(G, $b, $c, $d, $a, 12, 31, 20);

        $step!(H, $a, $b, $c, $d, 5, 32, 4);
        $step!(H, $d, $a, $b, $c, 8, 33, 11);
        $step!(H, $c, $d, $a, $b, 11, 34, 16);
        $step!(H, $b, $c, $d, $a, 14, 35, 23);
        $step!(H, $a, $b, $c, $d, 1, 36, 4);
        $step!(H, $d, $a, $b, $c, 4, 37, 11);
        $step!(H, $c, $d, $a, $b, 7, 38, 16);
        $step!(H, $b, $c, $d, $a, 10, 39, 23);
        $step!(H, $a, $b, $c, $d, 13, 40, 4);
        $step!(H, $d, $a, $b, $c, 0, 41, 11);
        $step!(H, $c, $d, $a, $b, 3, 42, 16);
        $step!(H, $b, $c, $d, $a, 6, 43, 23);
        $step!(H, $a, $b, $c, $d, 9, 44, 4);
        $step!(H, $d, $a, $b, $c, 12, 45, 11);
        $step!(H, $c, $d, $a, $b, 15, 46, 16);
        $step!(H, $b, $c, $d, $a, 2, 47, 23);

        $step!(I, $a, $b, $c, $d, 0, 48, 6);
        $step!(I, $d, $a, $b, $c, 7, 49, 10);
        $step!(I, $c, $d, $a, $b, 14, 50, 15);
        $step!(I, $b, $c, $d, $a, 5, 51, 21);
        $step!(I, $a, $b, $c, $d, 12, 52, 6);
        $step!(I, $d, $a, $b, $c, 3, 53, 10);
        $step!(I, $c, $d, $a, $b, 10, 54, 15);
        $step!(I, $b, $c, $d, $a, 1, 55, 21);
        $step!(I, $a, $b, $c, $d, 8, 56, 6);
        $step!(I, $d, $a, $b, $c, 15, 57, 10);
        $step!(I, $c, $d, $a, $b, 6, 58, 15);
        $step!(I, $b, $c, $d, $a, 13, 59, 21);
        $step!(I, $a, $b, $c, $d, 4, 60, 6);
        $step!(I, $d, $a, $b, $c, 11, 61, 10);
        $step!(I, $c, $d, $a, $b, 2, 62, 15);
        $step!(I, $b, $c, $d, $a, 9, 63, 21);
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512i, _mm512_add_epi32, _mm512_loadu_si512, _mm512_rol_epi32, _mm512_set1_epi32,
        _mm512_shuffle_i32x4, _mm512_storeu_si512, _mm512_ternarylogic_epi32,
        _mm512_unpackhi_epi32, _mm512_unpackhi_epi64, _mm512_unpacklo_epi32, _mm512_unpacklo_epi64,
    };

    use super::{BLOCK, K, LANES, LaneState};

    // The four round functions as `vpternlogd` truth tables over (b, c, d),
    // computed from the operand masks 0xF0, 0xCC, 0xAA:
    // F = (b & c) | (!b & d) = 0xCA, G = (b & d) | (c & !d) = 0xE4,
    // H = b ^ c ^ d = 0x96, I = c ^ (b | !d) = 0x39.
    const F: i32 = 0xCA;
    const G: i32 = 0xE4;
    const H: i32 = 0x96;
    const I: i32 = 0x39;

    /// `n_blocks` MD5 blocks into each of sixteen lanes.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, and for every lane `l`,
    /// `offsets[l] .. offsets[l] + 64 * n_blocks` must lie inside `arena`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn compress(
        state: &mut LaneState,
        arena: &[u8],
        offsets: &[usize; LANES],
        n_blocks: usize,
    ) {
        // SAFETY: each state row is 16 u32, exactly one unaligned 512-bit load.
        let (mut a, mut b, mut c, mut d) = unsafe {
            (
                _mm512_loadu_si512(state[0].as_ptr().cast()),
                _mm512_loadu_si512(state[1].as_ptr().cast()),
                _mm512_loadu_si512(state[2].as_ptr().cast()),
                _mm512_loadu_si512(state[3].as_ptr().cast()),
            )
        };
        let base = arena.as_ptr();
        for block_idx in 0..n_blocks {
            let mut rows = [_mm512_set1_epi32(0); LANES];
            for (row, &offset) in rows.iter_mut().zip(offsets) {
                // SAFETY: block `block_idx` of the lane, 64 bytes from
                // offset + 64 * block_idx, lies inside `arena` by the
                // caller's contract (block_idx < n_blocks).
                *row = unsafe { _mm512_loadu_si512(base.add(offset + block_idx * BLOCK).cast()) };
            }
            let m = transpose(&rows);

            let (a0, b0, c0, d0) = (a, b, c, d);
            // One MD5 step: a = b + rotl(a + f(b, c, d) + K[i] + M[g], s).
            macro_rules! step {
                ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $g:literal, $i:literal, $s:literal) => {
                    let f = _mm512_ternarylogic_epi32::<{ $f }>($b, $c, $d);
                    let t = _mm512_add_epi32(
                        _mm512_add_epi32($a, f),
                        _mm512_add_epi32(_mm512_set1_epi32(K[$i] as i32), m[$g]),
                    );
                    $a = _mm512_add_epi32($b, _mm512_rol_epi32::<$s>(t));
                };
            }
            md5_steps!(step, a, b, c, d);

            a = _mm512_add_epi32(a, a0);
            b = _mm512_add_epi32(b, b0);
            c = _mm512_add_epi32(c, c0);
            d = _mm512_add_epi32(d, d0);
        }
        // SAFETY: each state row is 16 u32, exactly one unaligned 512-bit store.
        unsafe {
            _mm512_storeu_si512(state[0].as_mut_ptr().cast(), a);
            _mm512_storeu_si512(state[1].as_mut_ptr().cast(), b);
            _mm512_storeu_si512(state[2].as_mut_ptr().cast(), c);
            _mm512_storeu_si512(state[3].as_mut_ptr().cast(), d);
        }
    }

    /// Rows of sixteen words (row `l`: lane `l`'s block) into columns (word
    /// `j` of every lane), in four rounds of in-register shuffles: 32-bit
    /// and 64-bit interleaves, then two exchanges of 128-bit quarters.
    #[target_feature(enable = "avx512f")]
    fn transpose(rows: &[__m512i; 16]) -> [__m512i; 16] {
        let mut pairs = *rows;
        for k in 0..8 {
            pairs[2 * k] = _mm512_unpacklo_epi32(rows[2 * k], rows[2 * k + 1]);
            pairs[2 * k + 1] = _mm512_unpackhi_epi32(rows[2 * k], rows[2 * k + 1]);
        }
        // quads[4q + j], quarter k: word 4k + j of rows 4q .. 4q + 3.
        let mut quads = pairs;
        for q in (0..16).step_by(4) {
            quads[q] = _mm512_unpacklo_epi64(pairs[q], pairs[q + 2]);
            quads[q + 1] = _mm512_unpackhi_epi64(pairs[q], pairs[q + 2]);
            quads[q + 2] = _mm512_unpacklo_epi64(pairs[q + 1], pairs[q + 3]);
            quads[q + 3] = _mm512_unpackhi_epi64(pairs[q + 1], pairs[q + 3]);
        }
        let mut halves = quads;
        for h in [0, 8] {
            for j in 0..4 {
                halves[h + j] = _mm512_shuffle_i32x4::<0x88>(quads[h + j], quads[h + 4 + j]);
                halves[h + 4 + j] = _mm512_shuffle_i32x4::<0xdd>(quads[h + j], quads[h + 4 + j]);
            }
        }
        let mut columns = halves;
        for j in 0..8 {
            columns[j] = _mm512_shuffle_i32x4::<0x88>(halves[j], halves[8 + j]);
            columns[8 + j] = _mm512_shuffle_i32x4::<0xdd>(halves[j], halves[8 + j]);
        }
        columns
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_loadu_si256, _mm256_or_si256,
        _mm256_permute2x128_si256, _mm256_set1_epi32, _mm256_slli_epi32, _mm256_srli_epi32,
        _mm256_storeu_si256, _mm256_unpackhi_epi32, _mm256_unpackhi_epi64, _mm256_unpacklo_epi32,
        _mm256_unpacklo_epi64, _mm256_xor_si256,
    };

    use super::{BLOCK, K, LANES, LaneState};

    /// Lanes per YMM register; two registers make the sixteen lanes.
    const HALF: usize = LANES / 2;

    /// `n_blocks` MD5 blocks into each of sixteen lanes, as two chains of
    /// eight (lanes 0-7 and 8-15) whose steps interleave, so each chain's
    /// wait on its previous step is filled by the other's work.
    ///
    /// # Safety
    /// The CPU must support AVX2, and for every lane `l`,
    /// `offsets[l] .. offsets[l] + 64 * n_blocks` must lie inside `arena`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn compress(
        state: &mut LaneState,
        arena: &[u8],
        offsets: &[usize; LANES],
        n_blocks: usize,
    ) {
        let zero = _mm256_set1_epi32(0);
        let mut words = [[zero; 2]; 4];
        for (word, row) in words.iter_mut().zip(state.iter()) {
            for (half, chain) in word.iter_mut().enumerate() {
                // SAFETY: a state row is 16 u32; lanes 8 * half .. 8 * half + 8
                // are exactly one unaligned 256-bit load inside it.
                *chain = unsafe { _mm256_loadu_si256(row.as_ptr().add(half * HALF).cast()) };
            }
        }
        let [mut a, mut b, mut c, mut d] = words;
        let ones = _mm256_set1_epi32(-1);
        let base = arena.as_ptr();
        for block_idx in 0..n_blocks {
            // m[half][j]: word j of the block of each of the half's lanes.
            let mut m = [[zero; 16]; 2];
            for (half, columns) in m.iter_mut().enumerate() {
                let mut low = [zero; HALF];
                let mut high = [zero; HALF];
                for lane in 0..HALF {
                    let at = offsets[half * HALF + lane] + block_idx * BLOCK;
                    // SAFETY: the lane's block, 64 bytes from `at`, lies inside
                    // `arena` by the caller's contract (block_idx < n_blocks);
                    // these are its two 32-byte halves.
                    unsafe {
                        low[lane] = _mm256_loadu_si256(base.add(at).cast());
                        high[lane] = _mm256_loadu_si256(base.add(at + 32).cast());
                    }
                }
                let low = transpose(&low);
                let high = transpose(&high);
                columns[..HALF].copy_from_slice(&low);
                columns[HALF..].copy_from_slice(&high);
            }

            let (a0, b0, c0, d0) = (a, b, c, d);
            macro_rules! round_fn {
                (F, $b:expr, $c:expr, $d:expr) => {
                    _mm256_xor_si256(_mm256_and_si256(_mm256_xor_si256($c, $d), $b), $d)
                };
                (G, $b:expr, $c:expr, $d:expr) => {
                    _mm256_xor_si256(_mm256_and_si256(_mm256_xor_si256($b, $c), $d), $c)
                };
                (H, $b:expr, $c:expr, $d:expr) => {
                    _mm256_xor_si256(_mm256_xor_si256($b, $c), $d)
                };
                (I, $b:expr, $c:expr, $d:expr) => {
                    _mm256_xor_si256($c, _mm256_or_si256($b, _mm256_xor_si256($d, ones)))
                };
            }
            // One MD5 step in both chains: a = b + rotl(a + f(b, c, d) + K[i]
            // + M[g], s), the rotation as two shifts and an or.
            macro_rules! step {
                ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $g:literal, $i:literal, $s:literal) => {
                    let k = _mm256_set1_epi32(K[$i] as i32);
                    let t0 = _mm256_add_epi32(
                        _mm256_add_epi32($a[0], round_fn!($f, $b[0], $c[0], $d[0])),
                        _mm256_add_epi32(k, m[0][$g]),
                    );
                    let t1 = _mm256_add_epi32(
                        _mm256_add_epi32($a[1], round_fn!($f, $b[1], $c[1], $d[1])),
                        _mm256_add_epi32(k, m[1][$g]),
                    );
                    let r0 = _mm256_or_si256(
                        _mm256_slli_epi32::<$s>(t0),
                        _mm256_srli_epi32::<{ 32 - $s }>(t0),
                    );
                    let r1 = _mm256_or_si256(
                        _mm256_slli_epi32::<$s>(t1),
                        _mm256_srli_epi32::<{ 32 - $s }>(t1),
                    );
                    $a = [_mm256_add_epi32($b[0], r0), _mm256_add_epi32($b[1], r1)];
                };
            }
            md5_steps!(step, a, b, c, d);

            for (word, start) in [&mut a, &mut b, &mut c, &mut d]
                .into_iter()
                .zip([a0, b0, c0, d0])
            {
                word[0] = _mm256_add_epi32(word[0], start[0]);
                word[1] = _mm256_add_epi32(word[1], start[1]);
            }
        }
        for (row, word) in state.iter_mut().zip([a, b, c, d]) {
            for (half, chain) in word.into_iter().enumerate() {
                // SAFETY: a state row is 16 u32; lanes 8 * half .. 8 * half + 8
                // are exactly one unaligned 256-bit store inside it.
                unsafe { _mm256_storeu_si256(row.as_mut_ptr().add(half * HALF).cast(), chain) };
            }
        }
    }

    /// Rows of eight words into columns (an 8x8 transpose): 32-bit and
    /// 64-bit interleaves, then an exchange of 128-bit halves.
    #[target_feature(enable = "avx2")]
    fn transpose(rows: &[__m256i; HALF]) -> [__m256i; HALF] {
        let mut pairs = *rows;
        for k in 0..4 {
            pairs[2 * k] = _mm256_unpacklo_epi32(rows[2 * k], rows[2 * k + 1]);
            pairs[2 * k + 1] = _mm256_unpackhi_epi32(rows[2 * k], rows[2 * k + 1]);
        }
        // quads[4q + j], half k: word 4k + j of rows 4q .. 4q + 3.
        let mut quads = pairs;
        for q in [0, 4] {
            quads[q] = _mm256_unpacklo_epi64(pairs[q], pairs[q + 2]);
            quads[q + 1] = _mm256_unpackhi_epi64(pairs[q], pairs[q + 2]);
            quads[q + 2] = _mm256_unpacklo_epi64(pairs[q + 1], pairs[q + 3]);
            quads[q + 3] = _mm256_unpackhi_epi64(pairs[q + 1], pairs[q + 3]);
        }
        let mut columns = quads;
        for j in 0..4 {
            columns[j] = _mm256_permute2x128_si256::<0x20>(quads[j], quads[4 + j]);
            columns[4 + j] = _mm256_permute2x128_si256::<0x31>(quads[j], quads[4 + j]);
        }
        columns
    }
}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};

    use super::*;

    /// Pads `message` the MD5 way into whole blocks.
    fn padded(message: &[u8]) -> Vec<u8> {
        let mut bytes = message.to_vec();
        bytes.push(0x80);
        while bytes.len() % BLOCK != BLOCK - 8 {
            bytes.push(0);
        }
        bytes.extend_from_slice(&((message.len() as u64) * 8).to_le_bytes());
        bytes
    }

    /// The backends this CPU runs (the portable one always).
    fn supported() -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|backend| backend.is_supported())
            .collect()
    }

    /// Hashes sixteen messages of one length through `backend`, all lanes
    /// active, and compares each lane with md-5's digest of its message.
    fn check_backend(backend: Backend, len: usize, seed: u8) {
        let messages: Vec<Vec<u8>> = (0..LANES)
            .map(|lane| {
                (0..len)
                    .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed ^ lane as u8))
                    .collect()
            })
            .collect();
        let padded: Vec<Vec<u8>> = messages.iter().map(|m| padded(m)).collect();
        let stride = padded[0].len();
        let arena: Vec<u8> = padded.concat();
        let offsets: [usize; LANES] = std::array::from_fn(|lane| lane * stride);
        let mut state = [[0u32; LANES]; 4];
        for lane in 0..LANES {
            reset_lane(&mut state, lane);
        }
        compress_lanes(
            backend,
            &mut state,
            &arena,
            &offsets,
            u16::MAX,
            stride / BLOCK,
        );
        for (lane, message) in messages.iter().enumerate() {
            let expected: [u8; 16] = Md5::digest(message).into();
            assert_eq!(
                lane_digest(&state, lane),
                expected,
                "{backend:?}, length {len}, lane {lane}"
            );
        }
    }

    #[test]
    fn every_supported_backend_is_md5() {
        // On this project's machines that is AVX-512, AVX2 and portable;
        // elsewhere whatever the CPU runs.
        for backend in supported() {
            for (len, seed) in [
                (0, 1),
                (1, 2),
                (55, 3),
                (56, 4),
                (63, 5),
                (64, 6),
                (65, 7),
                (119, 8),
                (120, 9),
                (200, 10),
                (1000, 11),
                (4099, 12),
            ] {
                check_backend(backend, len, seed);
            }
        }
    }

    /// Lanes at scattered offsets, each a different message: a lane's words
    /// must come from its own block, never a neighbour's.
    #[test]
    fn lanes_read_their_own_offsets() {
        for backend in supported() {
            let messages: Vec<Vec<u8>> = (0..LANES)
                .map(|lane| {
                    (0..(lane * 37 + 3))
                        .map(|i| (i * 13 + lane) as u8)
                        .collect()
                })
                .collect();
            let blocks: Vec<Vec<u8>> = messages.iter().map(|m| padded(m)).collect();
            let n_blocks = blocks.iter().map(|b| b.len() / BLOCK).max().unwrap_or(1);
            // Lanes in reverse order in the arena, with gaps between them.
            let stride = (n_blocks + 1) * BLOCK + 24;
            let mut arena = vec![0xA5u8; LANES * stride];
            let offsets: [usize; LANES] =
                std::array::from_fn(|lane| (LANES - 1 - lane) * stride + 8);
            for (lane, block) in blocks.iter().enumerate() {
                arena[offsets[lane]..offsets[lane] + block.len()].copy_from_slice(block);
            }
            // Every lane runs its own number of blocks, as in `verify`: one
            // pass per length, resetting nothing, lanes that are done idle.
            let mut state = [[0u32; LANES]; 4];
            for lane in 0..LANES {
                reset_lane(&mut state, lane);
            }
            let mut digests = vec![None; LANES];
            let mut done_blocks = 0;
            while digests.iter().any(Option::is_none) {
                let active: u16 = (0..LANES)
                    .filter(|&lane| digests[lane].is_none())
                    .fold(0, |mask, lane| mask | 1 << lane);
                let here: [usize; LANES] =
                    std::array::from_fn(|lane| offsets[lane] + done_blocks * BLOCK);
                let here = here.map(|offset| offset.min(arena.len() - BLOCK));
                compress_lanes(backend, &mut state, &arena, &here, active, 1);
                done_blocks += 1;
                for lane in 0..LANES {
                    if digests[lane].is_none() && blocks[lane].len() / BLOCK == done_blocks {
                        digests[lane] = Some(lane_digest(&state, lane));
                    }
                }
            }
            for (lane, message) in messages.iter().enumerate() {
                let expected: [u8; 16] = Md5::digest(message).into();
                assert_eq!(digests[lane], Some(expected), "{backend:?}, lane {lane}");
            }
        }
    }

    #[test]
    fn rfc1321_test_suite() {
        // RFC 1321, appendix A.5, through every backend this CPU runs, one
        // string in every lane; every lane is compared.
        let suite: [(&[u8], &str); 7] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for backend in supported() {
            for (text, hex) in suite {
                let blocks = padded(text);
                let stride = blocks.len();
                let arena = blocks.repeat(LANES);
                let offsets: [usize; LANES] = std::array::from_fn(|lane| lane * stride);
                let mut state = [[0u32; LANES]; 4];
                for lane in 0..LANES {
                    reset_lane(&mut state, lane);
                }
                compress_lanes(
                    backend,
                    &mut state,
                    &arena,
                    &offsets,
                    u16::MAX,
                    stride / BLOCK,
                );
                for lane in 0..LANES {
                    let digest: String = lane_digest(&state, lane)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    assert_eq!(
                        digest,
                        hex,
                        "{backend:?}, lane {lane}, {}",
                        String::from_utf8_lossy(text)
                    );
                }
            }
        }
    }

    #[test]
    fn detect_picks_a_supported_backend() {
        let calibration = Backend::detect();
        assert!(calibration.chosen.is_supported());
        assert!(
            calibration
                .measured
                .iter()
                .all(|(backend, speed)| backend.is_supported() && *speed > 0)
        );
    }

    #[test]
    fn backend_names_round_trip() {
        for backend in Backend::ALL {
            assert_eq!(Backend::from_name(backend.as_str()), Some(backend));
        }
        assert_eq!(Backend::from_name("avx512"), Some(Backend::Avx512));
        assert_eq!(Backend::from_name("avx2"), Some(Backend::Avx2));
        assert_eq!(Backend::from_name("sse"), None);
    }

    #[test]
    #[should_panic(expected = "outside the arena")]
    fn offsets_outside_the_arena_are_refused() {
        let arena = vec![0u8; LANES * BLOCK];
        let mut offsets: [usize; LANES] = std::array::from_fn(|lane| lane * BLOCK);
        offsets[15] = LANES * BLOCK - 32;
        let mut state = [[0u32; LANES]; 4];
        compress_lanes(Backend::Portable, &mut state, &arena, &offsets, u16::MAX, 1);
    }
}
