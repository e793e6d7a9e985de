"""Print how many generated values of each class each format refused or read back."""
import sys


def pytest_terminal_summary(terminalreporter):
    # the test module's name depends on pytest's import mode: find it by its table
    counts = next((m.COUNTS for name, m in list(sys.modules.items())
                   if name.endswith("test_oracles") and hasattr(m, "COUNTS")), None)
    if not counts:
        return
    tr = terminalreporter
    tr.section("formats: generated values per target and class (refused / read back identically)")
    targets = sorted({t for t, _, _ in counts})
    classes = sorted({c for _, c, _ in counts})
    for t in targets:
        cells = [f"{c} {counts[(t, c, 'refused')]}/{counts[(t, c, 'read back')]}" for c in classes]
        tr.write_line(f"{t}: " + ", ".join(cells))
    for c in classes:
        r = sum(counts[(t, c, "refused")] for t in targets)
        a = sum(counts[(t, c, "read back")] for t in targets)
        tr.write_line(f"class {c}: {r} refused, {a} read back identically")
    total_r = sum(n for (_, _, o), n in counts.items() if o == "refused")
    total_a = sum(n for (_, _, o), n in counts.items() if o == "read back")
    tr.write_line(f"total: {total_r} refused, {total_a} read back identically")
