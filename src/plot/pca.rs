//! Exact PCA on ndarray.
//!
//! The d x d covariance is formed in f32 with one matrix product (ndarray's sgemm), then its top
//! eigenpairs are found by subspace iteration in f64 (block power iteration with a Rayleigh-Ritz
//! step, the small projected problem solved by cyclic Jacobi), iterated until every wanted
//! eigenpair has a residual ||C v - l v|| below 1e-9 of the largest eigenvalue: the components
//! are exact to f64 round-off, not an approximation.
//!
//! Why not nalgebra's `SymmetricEigen`: a map needs 2 or 3 of the d eigenvectors. A full
//! decomposition costs O(d^3) (seconds at d = 4096, the nemotron embedding size) and would add
//! a second linear-algebra crate to build; the subspace iteration costs a few d x d x 8
//! products and is ~150 lines with no dependency beyond ndarray. Explained variance needs only
//! the trace of C, which is exact without the other eigenvalues.

use anyhow::{bail, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::sample::Rng;

#[derive(Debug, Clone)]
pub struct Pca {
    pub mean: Array1<f32>,
    /// k x d, rows are unit eigenvectors, largest eigenvalue first.
    pub components: Array2<f32>,
    /// Eigenvalues (variances along the components).
    pub variances: Vec<f64>,
    /// Each component's share of the total variance.
    pub explained: Vec<f64>,
    /// Subspace iterations used.
    pub iterations: usize,
}

impl Pca {
    /// Fit `k` components to the rows of `x` (n x d).
    pub fn fit(x: ArrayView2<f32>, k: usize, seed: u64) -> Result<Self> {
        let (n, d) = x.dim();
        if n < 2 {
            bail!("PCA needs at least 2 points, got {n}");
        }
        if k == 0 || k > d {
            bail!("PCA: {k} components of {d}-dimensional vectors");
        }
        let mean = x.mean_axis(Axis(0)).expect("n >= 2");
        let xc = &x - &mean.view().insert_axis(Axis(0));
        let c32 = xc.t().dot(&xc);
        let scale = 1.0 / (n as f64 - 1.0);
        let c: Array2<f64> = c32.mapv(|v| v as f64 * scale);
        let total: f64 = c.diag().sum();
        let (values, vectors, iterations) = top_eigen(&c, k, seed);
        let mut components = Array2::<f32>::zeros((k, d));
        for j in 0..k {
            let mut v = vectors.column(j).to_owned();
            // Sign convention: the largest-magnitude entry is positive (deterministic axes).
            let imax = v
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .map(|(i, _)| i)
                .unwrap_or(0);
            if v[imax] < 0.0 {
                v.mapv_inplace(|a| -a);
            }
            components.row_mut(j).assign(&v.mapv(|a| a as f32));
        }
        let explained = values
            .iter()
            .map(|l| if total > 0.0 { l / total } else { 0.0 })
            .collect();
        Ok(Self {
            mean,
            components,
            variances: values,
            explained,
            iterations,
        })
    }

    /// Project rows of `x` (m x d) onto the components: m x k.
    pub fn transform(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let xc = &x - &self.mean.view().insert_axis(Axis(0));
        xc.dot(&self.components.t())
    }
}

/// Top `k` eigenpairs of the symmetric positive semi-definite `c`, largest first:
/// (eigenvalues, d x k eigenvectors as columns, iterations).
pub fn top_eigen(c: &Array2<f64>, k: usize, seed: u64) -> (Vec<f64>, Array2<f64>, usize) {
    let d = c.nrows();
    // Small matrices: Jacobi on the whole thing.
    if d <= 24 {
        let (vals, vecs) = jacobi_eigen(c);
        return (
            vals[..k].to_vec(),
            vecs.slice(ndarray::s![.., ..k]).to_owned(),
            0,
        );
    }
    // Block size: the wanted k plus oversampling; convergence goes as (l_{b+1} / l_k)^iter.
    let b = (k + 8).min(d);
    let mut rng = Rng::new(seed ^ 0x5ca1ab1e);
    let mut v = Array2::<f64>::from_shape_fn((d, b), |_| rng.normal());
    orthonormalise(&mut v);
    let tol = 1e-9;
    let max_iter = 3000;
    let mut it = 0;
    loop {
        it += 1;
        let w = c.dot(&v);
        let h = v.t().dot(&w);
        let h = (&h + &h.t()) * 0.5;
        let (theta, s) = jacobi_eigen(&h);
        let v_ritz = v.dot(&s);
        let w_ritz = w.dot(&s);
        let top = theta[0].abs().max(f64::MIN_POSITIVE);
        let worst = (0..k)
            .map(|j| {
                let r = &w_ritz.column(j) - &(&v_ritz.column(j) * theta[j]);
                r.dot(&r).sqrt()
            })
            .fold(0.0, f64::max);
        if worst <= tol * top || it >= max_iter {
            return (
                theta[..k].to_vec(),
                v_ritz.slice(ndarray::s![.., ..k]).to_owned(),
                it,
            );
        }
        v = w_ritz;
        orthonormalise(&mut v);
    }
}

/// Modified Gram-Schmidt on the columns, in place (a column that vanishes is replaced by a
/// unit vector orthogonal to the others).
fn orthonormalise(v: &mut Array2<f64>) {
    let (d, b) = v.dim();
    for j in 0..b {
        for _pass in 0..2 {
            for i in 0..j {
                let proj = v.column(i).dot(&v.column(j));
                let ci = v.column(i).to_owned();
                v.column_mut(j).scaled_add(-proj, &ci);
            }
        }
        let norm = v.column(j).dot(&v.column(j)).sqrt();
        if norm > 1e-300 {
            v.column_mut(j).mapv_inplace(|a| a / norm);
        } else {
            let mut e = Array1::<f64>::zeros(d);
            e[j % d] = 1.0;
            v.column_mut(j).assign(&e);
        }
    }
}

/// All eigenpairs of a small symmetric matrix by cyclic Jacobi rotations: eigenvalues sorted
/// descending, eigenvectors as the matching columns.
pub fn jacobi_eigen(a: &Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let n = a.nrows();
    let mut a = a.clone();
    let mut v = Array2::<f64>::eye(n);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|p| ((p + 1)..n).map(move |q| (p, q)))
            .map(|(p, q)| a[[p, q]] * a[[p, q]])
            .sum();
        let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                let apq = a[[p, q]];
                if apq.abs() <= f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- J^T A J on rows/columns p and q.
                for kk in 0..n {
                    let akp = a[[kk, p]];
                    let akq = a[[kk, q]];
                    a[[kk, p]] = c * akp - s * akq;
                    a[[kk, q]] = s * akp + c * akq;
                }
                for kk in 0..n {
                    let apk = a[[p, kk]];
                    let aqk = a[[q, kk]];
                    a[[p, kk]] = c * apk - s * aqk;
                    a[[q, kk]] = s * apk + c * aqk;
                }
                for kk in 0..n {
                    let vkp = v[[kk, p]];
                    let vkq = v[[kk, q]];
                    v[[kk, p]] = c * vkp - s * vkq;
                    v[[kk, q]] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[[j, j]].total_cmp(&a[[i, i]]));
    let vals = order.iter().map(|&i| a[[i, i]]).collect();
    let mut vecs = Array2::<f64>::zeros((n, n));
    for (new, &old) in order.iter().enumerate() {
        vecs.column_mut(new).assign(&v.column(old));
    }
    (vals, vecs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalises() {
        let a = ndarray::array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 1.0]];
        let (vals, vecs) = jacobi_eigen(&a);
        for (j, &val) in vals.iter().enumerate().take(3) {
            let r = a.dot(&vecs.column(j)) - &vecs.column(j) * val;
            assert!(r.dot(&r).sqrt() < 1e-12);
        }
        assert!(vals[0] >= vals[1] && vals[1] >= vals[2]);
    }

    #[test]
    fn subspace_iteration_matches_jacobi() {
        let mut rng = Rng::new(3);
        let d = 60;
        let x =
            Array2::<f64>::from_shape_fn((200, d), |(_, j)| rng.normal() * (1.0 + j as f64 * 0.05));
        let c = x.t().dot(&x) / 199.0;
        let (vals, vecs, _) = top_eigen(&c, 3, 1);
        let (all, allv) = jacobi_eigen(&c);
        for j in 0..3 {
            assert!(
                (vals[j] - all[j]).abs() < 1e-8 * all[0],
                "{} vs {}",
                vals[j],
                all[j]
            );
            let cos = vecs.column(j).dot(&allv.column(j)).abs();
            assert!(cos > 1.0 - 1e-8);
        }
    }
}
