"""Search: Optuna study over plans, constraints from the budget, Pareto front, resume."""
