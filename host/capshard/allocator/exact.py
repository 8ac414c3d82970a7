"""Exact optima for checking the solver: OR-Tools CP-SAT, or plain
enumeration for small problems. Used by the benchmark and the tests, never on
the decision path."""

from itertools import product

from .problem import violation

SCALE = 10000  # CP-SAT wants integer objectives: values to 1e-4


def solve_cpsat(problem, time_limit_s=10.0):
    """Optimal selection (sorted candidate indices) or None if infeasible."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    x = [m.NewBoolVar(f"x{i}") for i in range(len(problem.ids))]
    for pos, (_, required, must_fill, members) in enumerate(problem.slots):
        if must_fill:
            m.Add(sum(x[i] for i in members) == 1)
        else:
            m.Add(sum(x[i] for i in members) <= 1)
    in_slot = {i for _, _, _, members in problem.slots for i in members}
    for i in range(len(x)):
        if i not in in_slot:  # excluded from this decision
            m.Add(x[i] == 0)
    for group in problem.groups:
        on = m.NewBoolVar("")
        for pos in group:
            members = problem.slots[pos][3]
            for i in members:
                m.AddImplication(x[i], on)
            if problem.slots[pos][1]:
                m.Add(sum(x[i] for i in members) == on)
    for i in problem.forced:
        m.Add(x[i] == 1)
    for i, reqs in problem.requires.items():
        for options in reqs:
            m.Add(sum(x[j] for j in options) >= x[i])
    for i, j in problem.conflicts:
        if i < j:
            m.AddBoolOr([x[i].Not(), x[j].Not()])
    for d in range(3):
        m.Add(sum(problem.costs[i][d] * x[i] for i in range(len(x))) <= problem.capacity[d])
    m.Maximize(sum(int(round(problem.values[i] * SCALE)) * x[i] for i in range(len(x))))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 1
    status = solver.Solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return sorted(i for i in range(len(x)) if solver.Value(x[i]))


def solve_enumerate(problem):
    """Try every choice per slot; for small problems only."""
    lists = [list(members) + [None] for _, _, _, members in problem.slots]
    best, best_value = None, -1.0
    for combo in product(*lists):
        selection = [i for i in combo if i is not None]
        value = sum(problem.values[i] for i in selection)
        if value > best_value + 1e-12 and violation(problem, selection) is None:
            best, best_value = sorted(selection), value
    return best
