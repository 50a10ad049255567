//! The stored vectors of `vectors.f32` (row-major little-endian f32): memory-mapped for searches
//! (the page cache holds them once, however many processes search the same index), or read into
//! huge-page-backed anonymous memory for a build (`read_huge`).

use anyhow::{Context, Result};
use std::path::Path;

/// N x dim f32, read as one `&[f32]` (`as_slice`, or through `Deref`).
pub struct Vectors {
    inner: Inner,
}

enum Inner {
    Mapped(memmap2::Mmap),
    /// Anonymous memory (`read_huge`): a private copy, not the file's pages.
    Anon(memmap2::Mmap),
    Owned(Vec<f32>),
}

impl Vectors {
    /// Map `path`. On a big-endian machine (or a file the OS will not map) the values are read
    /// into memory instead.
    pub fn map(path: &Path) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        if len % 4 != 0 {
            anyhow::bail!(
                "{}: {len} bytes is not a whole number of f32",
                path.display()
            );
        }
        if cfg!(target_endian = "little") && len > 0 {
            // SAFETY: the index folder is written once (atomically) and never modified in place;
            // a file changed underneath a running process is outside what an index supports.
            if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
                if map.as_ptr().align_offset(std::mem::align_of::<f32>()) == 0 {
                    return Ok(Self {
                        inner: Inner::Mapped(map),
                    });
                }
            }
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self::from(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<f32>>(),
        ))
    }

    /// Read `path` into anonymous memory that the kernel may back with 2 MiB pages
    /// (MADV_HUGEPAGE, Linux). A build reads every vector thousands of times in random order;
    /// through 4 KiB page-cache pages most of those reads also miss the TLB (a 4096-d vector
    /// spans 4-5 pages). Resident memory is the same as a map of the file; searches keep
    /// mapping the file (`map`), so that processes share the page cache.
    pub fn read_huge(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len() as usize;
        if cfg!(target_endian = "big") || len == 0 || !len.is_multiple_of(4) {
            return Self::map(path);
        }
        let mut mem = memmap2::MmapMut::map_anon(len)?;
        #[cfg(target_os = "linux")]
        let _ = mem.advise(memmap2::Advice::HugePage); // a hint: 4 KiB pages where refused
        file.read_exact(&mut mem[..])
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Self {
            inner: Inner::Anon(mem.make_read_only()?),
        })
    }

    pub fn as_slice(&self) -> &[f32] {
        match &self.inner {
            Inner::Mapped(map) | Inner::Anon(map) => {
                // SAFETY: checked in `map`: f32-aligned, little-endian host, length a multiple
                // of 4; every bit pattern is a valid f32.
                unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<f32>(), map.len() / 4) }
            }
            Inner::Owned(v) => v,
        }
    }

    /// Whether the values are memory-mapped (rather than a copy in memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.inner, Inner::Mapped(_))
    }
}

impl From<Vec<f32>> for Vectors {
    fn from(v: Vec<f32>) -> Self {
        Self {
            inner: Inner::Owned(v),
        }
    }
}

impl std::ops::Deref for Vectors {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.as_slice()
    }
}
