//! Which instruction set the CPU engine's kernels run with, and which precisions it runs fast.

use anyhow::{anyhow, bail, Result};
use std::sync::OnceLock;

/// Environment variable that caps the instruction set the CPU kernels use: `avx512`, `avx2` or
/// `portable`. It never raises what the CPU has. A testing aid: `portable` also lets bf16 and
/// int8 run on the scalar reference kernels (slow; otherwise they are refused without their
/// instructions), so parity tests can compare every kernel on any machine.
pub const ISA_ENV: &str = "EXEMPLAR_CPU_ISA";

/// The instruction set the kernels run with. AVX2 and AVX-512 exist on x86-64 only; every
/// other target runs the portable kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    Avx2,
    Avx512,
}

crate::named_enum!(Isa { Portable => "portable", Avx2 => "avx2", Avx512 => "avx512" });

impl Isa {
    /// The best the CPU offers (AVX-512 F/BW/DQ/VL, else AVX2 + FMA), capped by [`ISA_ENV`].
    pub fn detect() -> Result<Isa> {
        let best = Self::best();
        Ok(Self::cap()?.map_or(best, |c| c.min(best)))
    }

    /// The cap [`ISA_ENV`] sets, if any.
    pub fn cap() -> Result<Option<Isa>> {
        match std::env::var(ISA_ENV) {
            Ok(v) => v.parse().map(Some).map_err(|e| anyhow!("{ISA_ENV}: {e}")),
            Err(_) => Ok(None),
        }
    }

    /// The best instruction set of this CPU, detected once.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                // The f32 kernels and `simd_fn!` enable all four.
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vl")
                {
                    return Isa::Avx512;
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }
}

/// Matmul precision of the CPU engine. Everything else (norms, softmax, attention, pooling)
/// stays f32, and every matmul accumulates in f32 (int8: exact i32 sums, then scaled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// Weights and activations rounded to bf16, products summed in f32 (AVX512_BF16).
    BF16,
    /// Weights int8 per output channel, activations int8 per row, quantised on the fly
    /// (AVX512_VNNI).
    Int8,
}

impl Precision {
    /// k values packed together per column: what one dot-product instruction consumes.
    pub(super) fn k_unit(self) -> usize {
        match self {
            Precision::F32 => 1,
            Precision::BF16 => 2,
            Precision::Int8 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::BF16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// The instructions (as `is_x86_feature_detected!` spells them) this precision's fast
    /// kernels need besides AVX-512F. int8 also runs the MLP's down projection in bf16 (see
    /// [`Precision::for_down_projection`]).
    fn needs(self) -> &'static [&'static str] {
        match self {
            Precision::F32 => &[],
            Precision::BF16 => &["avx512bf16"],
            Precision::Int8 => &["avx512vnni", "avx512bf16"],
        }
    }

    /// The precision of the projection that reads the MLP's activation (BERT's `output.dense`,
    /// Llama's `down_proj`): int8 runs it in bf16, because those inputs are heavy-tailed and
    /// per-row int8 loses them (measured on all-MiniLM-L6-v2, 500 MATH problems: min cosine to
    /// f32 0.9983 all-int8, 0.9989 with this one in bf16; smoothing by LayerNorm ranges gave
    /// nothing).
    pub fn for_down_projection(self) -> Precision {
        match self {
            Precision::Int8 => Precision::BF16,
            p => p,
        }
    }

    /// Low precision is only worth it with its instructions: refuse, naming the missing
    /// instruction, instead of running a slow emulation. The one exception is
    /// [`ISA_ENV`]`=portable`, the testing aid that runs the reference kernels on purpose.
    pub fn check(self, isa: Isa) -> Result<()> {
        if self == Precision::F32 || (isa == Isa::Portable && Isa::cap()? == Some(Isa::Portable)) {
            return Ok(());
        }
        let Some(missing) = self.missing(isa) else {
            return Ok(());
        };
        let why = if cfg!(not(target_arch = "x86_64")) {
            format!(
                "exist on x86-64 only (this is {}; exemplar has no {} kernels for it)",
                std::env::consts::ARCH,
                self.name()
            )
        } else if isa < Isa::best() {
            format!("{ISA_ENV}={isa} rules out")
        } else {
            "this CPU lacks".to_string()
        };
        bail!(
            "--dtype {} on the CPU needs the {missing} instructions (all of: avx512f, {}), which \
             {why}; use --dtype f32",
            self.name(),
            self.needs().join(", ")
        )
    }

    /// The first instruction this precision's fast kernels need that `isa` (on this CPU) does
    /// not give; `None` when the kernels can run.
    fn missing(self, isa: Isa) -> Option<&'static str> {
        let needs = self.needs();
        if isa < Isa::Avx512 {
            return needs.first().copied();
        }
        needs.iter().copied().find(|f| !has_feature(f))
    }

    /// What a [`super::Linear`] needs to run at all (a soundness check, not a policy): `isa`
    /// on this CPU, and for bf16 / int8 either the reference kernels (portable) or the
    /// AVX-512 instructions of the fast ones.
    pub(super) fn check_kernels(self, isa: Isa) -> Result<()> {
        if isa > Isa::best() {
            bail!(
                "{isa} kernels asked for, but this CPU offers {}",
                Isa::best()
            );
        }
        if self == Precision::F32 || isa == Isa::Portable {
            return Ok(());
        }
        match self.missing(isa) {
            None => Ok(()),
            Some(f) => bail!(
                "{} kernels need the {f} instructions, which {isa} does not give",
                self.name()
            ),
        }
    }
}

fn has_feature(name: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match name {
            "avx512bf16" => is_x86_feature_detected!("avx512bf16"),
            "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_names_parse_and_print() {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
        }
        let err = "neon".parse::<Isa>().unwrap_err().to_string();
        assert!(err.contains("portable, avx2, avx512"), "{err}");
    }

    #[test]
    fn low_precision_without_its_instructions_names_them() {
        // AVX2 never has the AVX-512 dot products, whatever the CPU.
        for (p, name) in [
            (Precision::BF16, "avx512bf16"),
            (Precision::Int8, "avx512vnni"),
        ] {
            assert!(Precision::F32.check_kernels(Isa::Portable).is_ok());
            assert!(p.check_kernels(Isa::Portable).is_ok(), "reference kernels");
            if Isa::best() >= Isa::Avx2 {
                let err = p.check(Isa::Avx2).unwrap_err().to_string();
                assert!(err.contains(name), "{err}");
                assert!(p.check_kernels(Isa::Avx2).is_err());
            }
        }
    }
}
