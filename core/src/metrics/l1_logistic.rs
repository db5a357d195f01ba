//! L1-regularised logistic regression without intercept, solved as liblinear's
//! `L1R_LR` solver (newGLMNET, Yuan, Ho & Lin 2012) solves it inside scikit-learn:
//!
//! ```text
//! min_w  Σ_j |w_j| + Σ_i C_i · log(1 + exp(-y_i wᵀx_i)),   C_i = C · sample_weight_i
//! ```
//!
//! Each Newton step minimises an L1-penalised quadratic model by randomly ordered
//! coordinate descent, then a backtracking line search accepts a fraction of it. The
//! details that decide where the solver stops are kept as liblinear has them: instances
//! with weight ≤ 0 dropped, class −1 listed before class +1, zero feature values skipped,
//! the stopping tolerance scaled by `min(#pos, #neg) / l`, the shrinking thresholds, the
//! inner tolerance that shrinks by 4 after a one-pass inner solve, the coordinate shuffle
//! drawn from a `mt19937` seeded per fit.

use crate::mersenne_twister::Mt19937;

/// Curvature added to every diagonal Hessian entry (liblinear's `nu`).
const HESSIAN_FLOOR: f64 = 1e-12;
/// Armijo constant of the line search.
const SUFFICIENT_DECREASE: f64 = 0.01;
const MAX_LINE_SEARCH_STEPS: usize = 20;
const MAX_COORDINATE_PASSES: usize = 1000;
/// The outer loop also stops once this many Newton steps in a row changed nothing.
const MAX_STEPS_WITHOUT_CHANGE: usize = 10;
/// Coordinate moves below this size are skipped; larger ones are clipped to ±10.
const SMALLEST_MOVE: f64 = 1e-12;
const LARGEST_MOVE: f64 = 10.0;

/// One training instance: its features, its class and its (non-negative) weight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Instance<'a> {
    pub features: &'a [f64],
    pub positive: bool,
    pub weight: f64,
}

/// The problem in liblinear's column layout, for one value of `C`.
pub(crate) struct L1LogisticProblem {
    /// Per feature, `(instance, value)` for its non-zero values, in instance order.
    columns: Vec<Vec<(usize, f64)>>,
    /// +1 / −1 per instance, class −1 first.
    labels: Vec<f64>,
    /// `C · weight` per instance.
    costs: Vec<f64>,
    n_positive: usize,
}

/// What the solver returns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct L1LogisticFit {
    pub weights: Vec<f64>,
    /// Newton steps taken (scikit-learn's `n_iter_`).
    pub newton_steps: usize,
}

impl L1LogisticProblem {
    /// Lays out the instances as liblinear does before solving: weight ≤ 0 (or NaN)
    /// dropped, negatives then positives, each group in the given order.
    pub(crate) fn new<'a>(
        instances: impl IntoIterator<Item = Instance<'a>>,
        n_features: usize,
        c: f64,
    ) -> Self {
        let kept: Vec<Instance<'a>> =
            instances.into_iter().filter(|inst| inst.weight > 0.0).collect();
        let ordered = kept
            .iter()
            .filter(|inst| !inst.positive)
            .chain(kept.iter().filter(|inst| inst.positive));
        let mut columns = vec![Vec::new(); n_features];
        let mut labels = Vec::with_capacity(kept.len());
        let mut costs = Vec::with_capacity(kept.len());
        for (row, inst) in ordered.enumerate() {
            debug_assert_eq!(inst.features.len(), n_features);
            for (column, &value) in columns.iter_mut().zip(inst.features) {
                if value != 0.0 {
                    column.push((row, value));
                }
            }
            labels.push(if inst.positive { 1.0 } else { -1.0 });
            costs.push(inst.weight * c);
        }
        let n_positive = kept.iter().filter(|inst| inst.positive).count();
        Self { columns, labels, costs, n_positive }
    }

    pub(crate) fn n_instances(&self) -> usize {
        self.labels.len()
    }

    /// liblinear's stopping tolerance for a requested `tol`: `tol · max(min(#pos, #neg), 1) / l`.
    fn primal_tolerance(&self, tol: f64) -> f64 {
        let l = self.n_instances();
        let smaller_class = self.n_positive.min(l - self.n_positive).max(1);
        tol * smaller_class as f64 / l as f64
    }

    #[cfg(test)]
    /// The gradient of the smooth part, `Σ_i C_i ∂/∂w log(1 + exp(-y_i wᵀx_i))`, at `w`.
    pub(crate) fn loss_gradient(&self, w: &[f64]) -> Vec<f64> {
        let margins = self.margins(w);
        self.columns
            .iter()
            .map(|column| {
                column
                    .iter()
                    .map(|&(i, v)| {
                        let y = self.labels[i];
                        -self.costs[i] * y * v / (1.0 + (y * margins[i]).exp())
                    })
                    .sum()
            })
            .collect()
    }

    #[cfg(test)]
    /// The objective `Σ|w_j| + Σ C_i log(1 + exp(-y_i wᵀx_i))`.
    pub(crate) fn objective(&self, w: &[f64]) -> f64 {
        let margins = self.margins(w);
        let loss: f64 = (0..self.n_instances())
            .map(|i| {
                let t = -self.labels[i] * margins[i];
                self.costs[i] * if t > 0.0 { t + (-t).exp().ln_1p() } else { t.exp().ln_1p() }
            })
            .sum();
        w.iter().map(|x| x.abs()).sum::<f64>() + loss
    }

    #[cfg(test)]
    fn margins(&self, w: &[f64]) -> Vec<f64> {
        let mut margins = vec![0.0; self.n_instances()];
        for (column, &wj) in self.columns.iter().zip(w) {
            for &(i, v) in column {
                margins[i] += wj * v;
            }
        }
        margins
    }

    /// Solves from w = 0. `tol` is scikit-learn's `tol`, `max_newton_steps` its `max_iter`,
    /// `seed` the seed scikit-learn drew for this fit.
    pub(crate) fn solve(&self, tol: f64, max_newton_steps: usize, seed: u32) -> L1LogisticFit {
        NewtonGlmnet::new(self, seed).run(self.primal_tolerance(tol), max_newton_steps)
    }
}

/// The solver's state: the current point `w`, the trial point `w + d` and the quantities
/// of the loss at `w` that every step reuses.
struct NewtonGlmnet<'p> {
    problem: &'p L1LogisticProblem,
    shuffle: Mt19937,
    w: Vec<f64>,
    /// The trial point `w + d` of the current Newton step.
    trial: Vec<f64>,
    /// `exp(wᵀx_i)` per instance.
    exp_margin: Vec<f64>,
    /// `C_i / (1 + exp(wᵀx_i))`: minus the loss derivative for a positive instance.
    tau: Vec<f64>,
    /// `C_i σ(1 − σ)`: the loss curvature per instance.
    curvature: Vec<f64>,
    /// `Σ_{i: y_i = −1} C_i x_ij`, the constant part of the gradient.
    negative_column_sums: Vec<f64>,
}

/// Outcome of the coordinate-descent solve of one Newton step's quadratic model.
struct QuadraticSolve {
    /// `dᵀx_i` per instance for the direction `d = trial − w`.
    direction_margin: Vec<f64>,
    passes: usize,
    moved: bool,
}

impl<'p> NewtonGlmnet<'p> {
    fn new(problem: &'p L1LogisticProblem, seed: u32) -> Self {
        let n_features = problem.columns.len();
        let negative_column_sums = problem
            .columns
            .iter()
            .map(|column| {
                column
                    .iter()
                    .filter(|&&(i, _)| problem.labels[i] < 0.0)
                    .fold(0.0, |acc, &(i, v)| acc + problem.costs[i] * v)
            })
            .collect();
        let l = problem.n_instances();
        let mut solver = Self {
            problem,
            shuffle: Mt19937::new(seed),
            w: vec![0.0; n_features],
            trial: vec![0.0; n_features],
            exp_margin: vec![1.0; l],
            tau: vec![0.0; l],
            curvature: vec![0.0; l],
            negative_column_sums,
        };
        solver.refresh_loss_terms();
        solver
    }

    fn refresh_loss_terms(&mut self) {
        for i in 0..self.problem.n_instances() {
            let c = self.problem.costs[i];
            let inverse = 1.0 / (1.0 + self.exp_margin[i]);
            self.tau[i] = c * inverse;
            self.curvature[i] = c * self.exp_margin[i] * inverse * inverse;
        }
    }

    fn run(mut self, tolerance: f64, max_newton_steps: usize) -> L1LogisticFit {
        let n_features = self.problem.columns.len();
        let l = self.problem.n_instances() as f64;
        let mut order: Vec<usize> = (0..n_features).collect();
        let mut gradient = vec![0.0; n_features];
        let mut hessian_diag = vec![0.0; n_features];
        let mut w_norm = 0.0;
        let mut initial_violation = -1.0;
        let mut previous_max_violation = f64::INFINITY;
        let mut inner_tolerance = 1.0;
        let mut steps_without_change = 0;
        let mut newton_step = 0;

        while newton_step < max_newton_steps {
            // Gradient, diagonal Hessian and optimality violation at w; coordinates
            // sitting at zero well inside the subgradient interval are left out.
            let mut max_violation: f64 = 0.0;
            let mut total_violation = 0.0;
            let mut active = n_features;
            let mut s = 0;
            while s < active {
                let j = order[s];
                let mut h = HESSIAN_FLOOR;
                let mut tau_sum = 0.0;
                for &(i, v) in &self.problem.columns[j] {
                    h += v * v * self.curvature[i];
                    tau_sum += v * self.tau[i];
                }
                hessian_diag[j] = h;
                gradient[j] = -tau_sum + self.negative_column_sums[j];
                let (plus, minus) = (gradient[j] + 1.0, gradient[j] - 1.0);
                let violation = if self.w[j] == 0.0 {
                    if plus < 0.0 {
                        -plus
                    } else if minus > 0.0 {
                        minus
                    } else if plus > previous_max_violation / l
                        && minus < -previous_max_violation / l
                    {
                        active -= 1;
                        order.swap(s, active);
                        continue;
                    } else {
                        0.0
                    }
                } else if self.w[j] > 0.0 {
                    plus.abs()
                } else {
                    minus.abs()
                };
                max_violation = max_violation.max(violation);
                total_violation += violation;
                s += 1;
            }
            if newton_step == 0 {
                initial_violation = total_violation;
            }
            if total_violation <= tolerance * initial_violation
                || steps_without_change >= MAX_STEPS_WITHOUT_CHANGE
            {
                break;
            }
            steps_without_change += 1;

            let solve = self.solve_quadratic_model(
                &mut order,
                active,
                &gradient,
                &hessian_diag,
                inner_tolerance * initial_violation,
            );
            if solve.moved {
                steps_without_change = 0;
            }
            self.line_search(solve.direction_margin, &gradient, &mut w_norm);

            if solve.passes == 1 {
                inner_tolerance *= 0.25;
            }
            newton_step += 1;
            previous_max_violation = max_violation;
        }
        L1LogisticFit { weights: self.w, newton_steps: newton_step }
    }

    /// Coordinate descent on `Gᵀd + ½ dᵀHd + ‖w + d‖₁` over the active coordinates,
    /// in a freshly shuffled order every pass, until the summed violation of the moved
    /// coordinates falls below `stop_at` with every active coordinate back in play.
    fn solve_quadratic_model(
        &mut self,
        order: &mut [usize],
        active: usize,
        gradient: &[f64],
        hessian_diag: &[f64],
        stop_at: f64,
    ) -> QuadraticSolve {
        let l = self.problem.n_instances() as f64;
        let mut direction_margin = vec![0.0; self.problem.n_instances()];
        let mut moved = false;
        let mut previous_max_violation = f64::INFINITY;
        let mut qp_active = active;
        let mut passes = 0;
        // The trial point starts where the last line search left it: at w after an
        // accepted step, halfway points after a failed one (as in liblinear).

        while passes < MAX_COORDINATE_PASSES {
            let mut max_violation: f64 = 0.0;
            let mut total_violation = 0.0;
            for k in 0..qp_active {
                let pick = k + self.shuffle.below((qp_active - k) as u32) as usize;
                order.swap(pick, k);
            }
            let mut s = 0;
            while s < qp_active {
                let j = order[s];
                let h = hessian_diag[j];
                let mut g = gradient[j] + (self.trial[j] - self.w[j]) * HESSIAN_FLOOR;
                for &(i, v) in &self.problem.columns[j] {
                    g += v * self.curvature[i] * direction_margin[i];
                }
                let (plus, minus) = (g + 1.0, g - 1.0);
                let current = self.trial[j];
                let violation = if current == 0.0 {
                    if plus < 0.0 {
                        -plus
                    } else if minus > 0.0 {
                        minus
                    } else if plus > previous_max_violation / l
                        && minus < -previous_max_violation / l
                    {
                        qp_active -= 1;
                        order.swap(s, qp_active);
                        continue;
                    } else {
                        0.0
                    }
                } else if current > 0.0 {
                    plus.abs()
                } else {
                    minus.abs()
                };
                s += 1;

                // Exact minimiser of the one-variable model with the |·| term.
                let step = if plus < h * current {
                    -plus / h
                } else if minus > h * current {
                    -minus / h
                } else {
                    -current
                };
                if step.abs() < SMALLEST_MOVE {
                    continue;
                }
                let step = step.clamp(-LARGEST_MOVE, LARGEST_MOVE);
                moved = true;
                max_violation = max_violation.max(violation);
                total_violation += violation;
                self.trial[j] += step;
                for &(i, v) in &self.problem.columns[j] {
                    direction_margin[i] += v * step;
                }
            }
            passes += 1;

            if total_violation <= stop_at {
                if qp_active == active {
                    break;
                }
                qp_active = active;
                previous_max_violation = f64::INFINITY;
                continue;
            }
            previous_max_violation = max_violation;
        }
        QuadraticSolve { direction_margin, passes, moved }
    }

    /// Backtracking from the full step: halve `d` until the objective decreases by at
    /// least `σ` times the model's predicted decrease; then move `w` there.
    fn line_search(&mut self, mut direction_margin: Vec<f64>, gradient: &[f64], w_norm: &mut f64) {
        let problem = self.problem;
        let l = problem.n_instances();
        let mut predicted = 0.0;
        let mut trial_norm = 0.0;
        for ((&g, &trial), &w) in gradient.iter().zip(&self.trial).zip(&self.w) {
            predicted += g * (trial - w);
            if trial != 0.0 {
                trial_norm += trial.abs();
            }
        }
        predicted += trial_norm - *w_norm;
        let mut negative_shift = 0.0;
        for ((&label, &cost), &d) in
            problem.labels.iter().zip(&problem.costs).zip(&direction_margin)
        {
            if label < 0.0 {
                negative_shift += cost * d;
            }
        }

        let mut new_exp_margin = vec![0.0; l];
        let mut accepted = false;
        for _ in 0..MAX_LINE_SEARCH_STEPS {
            let mut decrease =
                trial_norm - *w_norm + negative_shift - SUFFICIENT_DECREASE * predicted;
            for i in 0..l {
                let exp_step = direction_margin[i].exp();
                new_exp_margin[i] = self.exp_margin[i] * exp_step;
                decrease += problem.costs[i]
                    * ((1.0 + new_exp_margin[i]) / (exp_step + new_exp_margin[i])).ln();
            }
            if decrease <= 0.0 {
                *w_norm = trial_norm;
                self.w.copy_from_slice(&self.trial);
                self.exp_margin = new_exp_margin;
                self.refresh_loss_terms();
                accepted = true;
                break;
            }
            trial_norm = 0.0;
            for j in 0..self.w.len() {
                self.trial[j] = (self.w[j] + self.trial[j]) * 0.5;
                if self.trial[j] != 0.0 {
                    trial_norm += self.trial[j].abs();
                }
            }
            predicted *= 0.5;
            negative_shift *= 0.5;
            for d in direction_margin.iter_mut() {
                *d *= 0.5;
            }
        }
        if !accepted {
            // Too many halvings: recompute exp(wᵀx) at w to shed rounding (liblinear
            // keeps tau and the curvature from before, and so does this).
            let mut margins = vec![0.0; l];
            for (column, &wj) in problem.columns.iter().zip(&self.w) {
                if wj == 0.0 {
                    continue;
                }
                for &(i, v) in column {
                    margins[i] += wj * v;
                }
            }
            for (e, m) in self.exp_margin.iter_mut().zip(margins) {
                *e = m.exp();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic problem: three features, soft labels turned into weighted
    /// duplicate instances the way the LC GLM does it.
    fn soft_label_problem(c: f64) -> L1LogisticProblem {
        let mut state = 11u64;
        let mut uniform = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let rows: Vec<[f64; 3]> =
            (0..300).map(|_| [uniform() * 2.0 - 1.0, uniform() * 3.0 - 1.5, 1.0]).collect();
        let probs: Vec<f64> = rows
            .iter()
            .map(|x| {
                let truth = 1.0 / (1.0 + (-(1.5 * x[0] - 0.8 * x[1] + 0.3)).exp());
                (truth + 0.3 * (uniform() - 0.5)).clamp(0.0, 1.0)
            })
            .collect();
        let instances = rows
            .iter()
            .zip(&probs)
            .map(|(x, &p)| Instance { features: x, positive: true, weight: p })
            .chain(rows.iter().zip(&probs).map(|(x, &p)| Instance {
                features: x,
                positive: false,
                weight: 1.0 - p,
            }));
        L1LogisticProblem::new(instances, 3, c)
    }

    /// KKT conditions of the L1 problem: ∇loss_j = −sign(w_j) where w_j ≠ 0 and
    /// |∇loss_j| ≤ 1 where w_j = 0, within the solver's relative tolerance.
    fn assert_kkt(problem: &L1LogisticProblem, w: &[f64], slack: f64) {
        let gradient = problem.loss_gradient(w);
        for (j, (&g, &wj)) in gradient.iter().zip(w).enumerate() {
            if wj > 0.0 {
                assert!((g + 1.0).abs() <= slack, "feature {j}: w = {wj}, gradient {g}");
            } else if wj < 0.0 {
                assert!((g - 1.0).abs() <= slack, "feature {j}: w = {wj}, gradient {g}");
            } else {
                assert!(g.abs() <= 1.0 + slack, "feature {j}: zero weight with gradient {g}");
            }
        }
    }

    #[test]
    fn solution_satisfies_the_l1_optimality_conditions_for_every_c() {
        for c in [1e-3, 0.05, 0.36, 2.8, 21.5, 1e4] {
            let problem = soft_label_problem(c);
            let fit = problem.solve(1e-8, 500, 843_828_734);
            // Slack relative to the scale of the loss gradient (C · Σ|x|).
            assert_kkt(&problem, &fit.weights, 1e-4 * (1.0 + c * 300.0));
        }
    }

    #[test]
    fn strong_regularisation_zeroes_every_weight() {
        let problem = soft_label_problem(1e-4);
        let fit = problem.solve(1e-4, 100, 1);
        assert_eq!(fit.weights, vec![0.0; 3]);
    }

    #[test]
    fn solution_beats_nearby_points_on_the_objective() {
        let problem = soft_label_problem(2.8);
        let fit = problem.solve(1e-8, 500, 7);
        let best = problem.objective(&fit.weights);
        for j in 0..3 {
            for delta in [-1e-3, 1e-3] {
                let mut w = fit.weights.clone();
                w[j] += delta;
                assert!(
                    problem.objective(&w) >= best - 1e-9,
                    "moving w[{j}] by {delta} improved the objective"
                );
            }
        }
    }

    #[test]
    fn zero_weight_instances_are_dropped_and_negatives_come_first() {
        let x = [1.0, 0.0];
        let instances = [
            Instance { features: &x, positive: true, weight: 0.5 },
            Instance { features: &x, positive: false, weight: 0.0 },
            Instance { features: &x, positive: false, weight: 0.25 },
        ];
        let problem = L1LogisticProblem::new(instances, 2, 2.0);
        assert_eq!(problem.labels, vec![-1.0, 1.0]);
        assert_eq!(problem.costs, vec![0.5, 1.0]);
        assert_eq!(problem.columns[0], vec![(0, 1.0), (1, 1.0)]);
        assert!(problem.columns[1].is_empty(), "zero values are not stored");
    }
}
