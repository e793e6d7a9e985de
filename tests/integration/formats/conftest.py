"""Print how many generated values of each class each format refused or read back."""


def pytest_terminal_summary(terminalreporter):
    from tests.integration.formats.test_oracles import COUNTS

    if not COUNTS:
        return
    tr = terminalreporter
    tr.section("formats: generated values per target and class (refused / read back identically)")
    targets = sorted({t for t, _, _ in COUNTS})
    classes = sorted({c for _, c, _ in COUNTS})
    for t in targets:
        cells = [f"{c} {COUNTS[(t, c, 'refused')]}/{COUNTS[(t, c, 'read back')]}" for c in classes]
        tr.write_line(f"{t}: " + ", ".join(cells))
    total_r = sum(n for (_, _, o), n in COUNTS.items() if o == "refused")
    total_a = sum(n for (_, _, o), n in COUNTS.items() if o == "read back")
    tr.write_line(f"total: {total_r} refused, {total_a} read back identically")
