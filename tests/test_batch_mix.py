"""benchmarks/mini/batch_mix.py: each kind's share of a step's edits with and without twins."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "mini" / "batch_mix.py"


def shares(output: str) -> dict[str, list[float]]:
    """{kind: [share in each column, %]} from the script's table."""
    rows = re.findall(r"^\| (\w+) \| (.+) \|$", output, re.M)
    return {kind: [float(v.strip().rstrip("%")) for v in cells.split("|")]
            for kind, cells in rows if kind != "kind"}


def test_colour_twins_add_recolours_and_contrast_alone_matches_the_two_columns():
    command = [sys.executable, str(SCRIPT), "--steps", "20", "--contrast", "1"]
    two = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    three = subprocess.run([*command, "--colour-contrast", "1"], capture_output=True, text=True,
                           timeout=120, check=True)
    assert "twins are" in two.stdout and "--colour-contrast 1.0" in three.stdout
    before, after = shares(two.stdout), shares(three.stdout)
    assert all(len(v) == 2 for v in before.values()) and all(len(v) == 3 for v in after.values())
    assert {k: v[:2] for k, v in after.items()} == before  # the first two columns are the same
    for table, columns in ((before, 2), (after, 3)):  # each column's shares add up to 100%
        assert all(abs(sum(v[i] for v in table.values()) - 100) < 0.6 for i in range(columns))
    # a colour twin is a recolour: recolours gain share
    assert after["recolor"][2] > after["recolor"][1] + 3
    # the two kinds of twin are counted apart: a colour twin is not taken for another object's
    other, colour = map(float, re.search(
        r"other-object twins ([\d.]+)%, colour twins ([\d.]+)%", three.stdout).groups())
    alone = float(re.search(r"twins are ([\d.]+)%", two.stdout).group(1))
    assert 3 < colour < after["recolor"][2] and abs(other - alone) < 8
    # twins named from alike shapes where the picture has them: more of them are
    anyhow, alike = map(int, re.search(
        r"alike the named one's: (\d+)%, (\d+)% with --alike-twins", two.stdout).groups())
    assert 10 < anyhow < alike < 100
    bad = subprocess.run([*command, "--colour-contrast", "2"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "must be a fraction in [0, 1]" in bad.stderr
