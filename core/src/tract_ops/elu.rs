//! ELU as one in-place op (see the module above for why).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp;
use tract_onnx::tract_hir::internal::{InferenceOp, expand};
use tract_onnx::tract_hir::ops::element_wise::ElementWiseOp;

use tract_linalg::routines::Func;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Debug, Clone, PartialEq)]
pub struct FusedElu {
    pub alpha: f32,
}

// alpha comes from the graph and is never NaN; tract's op equality needs Eq.
impl Eq for FusedElu {}

impl ElementWiseMiniOp for FusedElu {
    fn name(&self) -> String {
        "FusedElu".into()
    }

    fn eval_in_place(&self, t: &mut Tensor, out_dt: Option<DatumType>) -> TractResult<()> {
        super::require_dt("FusedElu", t, out_dt, f32::datum_type())?;
        let mut plain = t.try_as_plain_ram_mut()?;
        let xs = plain.as_slice_mut::<f32>()?;
        #[cfg(target_arch = "x86_64")]
        if fused::available() {
            // SAFETY: the CPU has AVX2 and FMA (checked by `available`).
            unsafe { fused::elu(xs, self.alpha) };
            return Ok(());
        }
        let exp = Func::Exp.ew_f32()?;
        // One kernel call over a copy (the kernel's per-call cost is high for small pieces); the
        // scratch is per thread and only grows, so the steady state does not allocate.
        SCRATCH.with(|scratch| -> TractResult<()> {
            let mut e = scratch.borrow_mut();
            e.clear();
            e.extend_from_slice(xs);
            exp.run(&mut e)?;
            // A select, not a branch: the sign of speech activations is unpredictable.
            for (x, &ex) in xs.iter_mut().zip(e.iter()) {
                let neg = self.alpha * (ex - 1.0);
                *x = if 0.0 < *x { *x } else { neg };
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// ELU in one AVX2 pass with tract's AVX2 exp kernel inlined: the same operations in the same
/// order (tract's exp for AVX2 and FMA, and its AVX-512 twin), so the same bits as the kernel call
/// below, without the copy into scratch, the kernel's per-call padding and a select compiled for
/// SSE: 35-37 µs per default-model step graph instead of 44-48 (`funcodec bench --profile`).
#[cfg(target_arch = "x86_64")]
mod fused {
    use std::arch::x86_64::*;
    use tract_linalg::generic::exp::{HIGH, LN2_HI, LN2_LO, LOG2E, LOW, POLY, SCALE_BIAS};

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// tract's `exp8` (tract-linalg `x86_64/exp.rs`), operation for operation. Inlined into
    /// [`elu`], whose target features it then has (a call would pass registers through memory).
    #[inline(always)]
    unsafe fn exp8(x: __m256) -> __m256 {
        // SAFETY: only inlined into `elu`, which runs with AVX2 and FMA.
        unsafe {
            let high = _mm256_set1_ps(HIGH);
            let low = _mm256_set1_ps(LOW);
            let x = _mm256_blendv_ps(x, high, _mm256_cmp_ps::<_CMP_GT_OQ>(x, high));
            let x = _mm256_blendv_ps(x, low, _mm256_cmp_ps::<_CMP_LT_OQ>(x, low));
            let k = _mm256_cvtps_epi32(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)));
            let kf = _mm256_cvtepi32_ps(k);
            let mut r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(LN2_HI), x);
            r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(LN2_LO), r);
            let mut q = _mm256_set1_ps(POLY[0]);
            for c in &POLY[1..] {
                q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(*c));
            }
            let bias = _mm256_set1_epi32(SCALE_BIAS);
            let half = _mm256_srai_epi32::<1>(k);
            let rest = _mm256_sub_epi32(k, half);
            let scale = |k| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(k, bias)));
            _mm256_mul_ps(_mm256_mul_ps(q, scale(half)), scale(rest))
        }
    }

    /// ELU of eight values.
    #[inline(always)]
    unsafe fn eight(x: __m256, alpha: __m256) -> __m256 {
        // SAFETY: only inlined into `elu`, which runs with AVX2 and FMA.
        unsafe {
            let neg = _mm256_mul_ps(alpha, _mm256_sub_ps(exp8(x), _mm256_set1_ps(1.0)));
            _mm256_blendv_ps(neg, x, _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_setzero_ps(), x))
        }
    }

    /// `x = 0 < x ? x : alpha * (exp(x) - 1)`, eight values at a time (a last partial group
    /// through a padded copy).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn elu(xs: &mut [f32], alpha: f32) {
        let a = _mm256_set1_ps(alpha);
        let in_place = |p: *mut f32| {
            // SAFETY: `p` points at eight floats; this closure runs inside `elu` only.
            unsafe {
                let mut y = eight(_mm256_loadu_ps(p), a);
                // Opaque to the optimiser, which would otherwise store only the negative lanes
                // with a masked store, microcoded on AMD's cores: 2.3 ns per value in a timing
                // loop, against 0.8 for tract's kernel on a copy; 51-59 µs per step graph.
                std::arch::asm!("/* {0} */", inout(ymm_reg) y, options(pure, nomem, nostack));
                _mm256_storeu_ps(p, y);
            }
        };
        let mut groups = xs.chunks_exact_mut(8);
        for g in &mut groups {
            in_place(g.as_mut_ptr());
        }
        let tail = groups.into_remainder();
        if !tail.is_empty() {
            let mut pad = [0.0f32; 8];
            pad[..tail.len()].copy_from_slice(tail);
            in_place(pad.as_mut_ptr());
            tail.copy_from_slice(&pad[..tail.len()]);
        }
    }
}

pub(super) fn elu(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let alpha = node.get_attr_opt("alpha")?.unwrap_or(1.0);
    Ok((expand(ElementWiseOp(Box::new(FusedElu { alpha }))), vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_hir::ops::activations::Elu;

    fn run_op(op: Box<dyn InferenceOp>, xs: &[f32]) -> Vec<f32> {
        let mut model = InferenceModel::default();
        let x = model.add_source("x", f32::fact([xs.len()]).into()).unwrap();
        let y = model.wire_node("elu", op, &[x]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let out = plan
            .run(tvec!(Tensor::from_shape(&[xs.len()], xs).unwrap().into()))
            .unwrap();
        super::super::values(&out[0])
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    }

    /// The fused op against tract's own five-node expansion, bit for bit, across chunk borders
    /// and for lengths that do not fill whole groups of eight.
    #[test]
    fn matches_tracts_expansion_exactly() {
        let xs: Vec<f32> = (0..1000)
            .map(|i| (i as f32 - 500.0) * 0.037)
            .chain([
                0.0,
                -0.0,
                1e-30,
                -1e-30,
                -100.0,
                88.0,
                f32::NAN,
                f32::NEG_INFINITY,
            ])
            .collect();
        for alpha in [1.0, 0.7] {
            for xs in [&xs[..], &xs[3..], &xs[995..]] {
                let fused = run_op(expand(ElementWiseOp(Box::new(FusedElu { alpha }))), xs);
                let expanded = run_op(expand(Elu(alpha)), xs);
                assert!(
                    same_bits(&fused, &expanded),
                    "alpha {alpha}, {} values",
                    xs.len()
                );
            }
        }
    }

    /// A whole step graph (16 ELUs) read through both front ends gives the same bits.
    #[test]
    fn step_graph_unchanged() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/tiny_causal_ds640/model_steps/decoder_step.onnx"
        );
        let outputs = |onnx: tract_onnx::Onnx| -> Vec<Vec<f32>> {
            let model = onnx.model_for_path(path).unwrap();
            let plan = model.into_optimized().unwrap().into_runnable().unwrap();
            let inputs: TVec<TValue> = (0..plan.input_count())
                .map(|i| {
                    let fact = plan.model().input_fact(i).unwrap();
                    let shape: Vec<usize> = fact.shape.as_concrete().unwrap().to_vec();
                    let n: usize = shape.iter().product();
                    let data: Vec<f32> = (0..n)
                        .map(|k| ((k * 7919 + i) % 997) as f32 / 300.0 - 1.6)
                        .collect();
                    Tensor::from_shape(&shape, &data).unwrap().into()
                })
                .collect();
            plan.run(inputs)
                .unwrap()
                .iter()
                .map(|t| super::super::values(t))
                .collect()
        };
        let fused = outputs(super::super::onnx_for_cpu());
        let expanded = outputs(tract_onnx::onnx());
        assert_eq!(fused.len(), expanded.len());
        for (a, b) in fused.iter().zip(&expanded) {
            assert!(same_bits(a, b));
        }
    }
}
