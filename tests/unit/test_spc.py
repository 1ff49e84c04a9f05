"""Control limits and capability against published results, and ``edge-gateway spc``."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.processors.spc import analyze

# Montgomery, Introduction to Statistical Quality Control, Table 6.3 / R package qcc,
# data set ``pistonrings``: inside diameter (mm) of piston rings, the 25 trial subgroups of 5.
PISTON_RINGS = [
    74.030, 74.002, 74.019, 73.992, 74.008,
    73.995, 73.992, 74.001, 74.011, 74.004,
    73.988, 74.024, 74.021, 74.005, 74.002,
    74.002, 73.996, 73.993, 74.015, 74.009,
    73.992, 74.007, 74.015, 73.989, 74.014,
    74.009, 73.994, 73.997, 73.985, 73.993,
    73.995, 74.006, 73.994, 74.000, 74.005,
    73.985, 74.003, 73.993, 74.015, 73.988,
    74.008, 73.995, 74.009, 74.005, 74.004,
    73.998, 74.000, 73.990, 74.007, 73.995,
    73.994, 73.998, 73.994, 73.995, 73.990,
    74.004, 74.000, 74.007, 74.000, 73.996,
    73.983, 74.002, 73.998, 73.997, 74.012,
    74.006, 73.967, 73.994, 74.000, 73.984,
    74.012, 74.014, 73.998, 73.999, 74.007,
    74.000, 73.984, 74.005, 73.998, 73.996,
    73.994, 74.012, 73.986, 74.005, 74.007,
    74.006, 74.010, 74.018, 74.003, 74.000,
    73.984, 74.002, 74.003, 74.005, 73.997,
    74.000, 74.010, 74.013, 74.020, 74.003,
    73.988, 74.001, 74.009, 74.005, 73.996,
    74.004, 73.999, 73.990, 74.006, 74.009,
    74.010, 73.989, 73.990, 74.009, 74.014,
    74.015, 74.008, 73.993, 74.000, 74.010,
    73.982, 73.984, 73.995, 74.017, 74.013,
]  # fmt: skip
# R package qcc, data set ``viscosity`` (after Montgomery): the 20 trial batches.
VISCOSITY = [
    34.05, 34.40, 33.59, 35.96, 34.70, 33.51, 33.79, 34.04, 34.52, 33.75,
    33.27, 33.71, 34.03, 34.58, 34.02, 33.97, 34.05, 34.04, 33.73, 34.05,
]  # fmt: skip


def write_csv(folder: Path, name: str, values: list[float]) -> Path:
    path = folder / f"{name}.csv"
    path.write_text("row," + name + "\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    return path


def test_piston_rings_xbar_r_chart_and_capability() -> None:
    """Piston-ring inside diameters, 25 subgroups of 5 (Montgomery, *Introduction to Statistical
    Quality Control*, Example 6.1 and Table 6.3; the ``pistonrings`` data set of the R package
    qcc, rows with ``trial == TRUE``).

    Published: Montgomery x̿ = 74.001, R̄ = 0.023, X̄ chart UCL 74.014, LCL 73.988. qcc
    ``qcc(diameter[1:25,], type="xbar")``: centre 74.00118, standard deviation 0.009785039,
    limits 73.98805 / 74.0143; ``process.capability(q, spec.limits=c(73.95, 74.05))``: Cp 1.703,
    Cpk 1.663 (as reproduced against R in the test suite of the ``mistat`` package). The
    process is in control: no Nelson rule fires on the 25 subgroup means.
    """
    result = analyze(PISTON_RINGS, lsl=73.95, usl=74.05, subgroup=5)
    assert result.n == 125 and len(result.points) == 25
    assert result.cl == pytest.approx(74.00118, abs=5e-6)
    assert float(result.ranges.mean()) == pytest.approx(0.023, abs=5e-4)
    assert result.sigma_within == pytest.approx(0.009785039, rel=1e-6)
    assert result.ucl == pytest.approx(74.0143, abs=5e-5)
    assert result.lcl == pytest.approx(73.98805, abs=5e-6)
    assert (round(result.ucl, 3), round(result.lcl, 3)) == (74.014, 73.988)
    assert round(result.cp, 3) == 1.703
    assert round(result.cpk, 3) == 1.663
    assert result.pp == pytest.approx(0.1 / (6 * result.sigma_overall))
    assert all(found == [] for found in result.violations.values())


def test_viscosity_individuals_chart_flags_batch_4() -> None:
    """Aircraft primer paint viscosity, 20 trial batches as individual values (the
    ``viscosity`` data set of the R package qcc, after Montgomery). Published: the
    ``xbar.one`` chart of the trial batches has exactly one point beyond the limits, batch 4,
    "out-of-control because of a process temperature controller failure" (qcc's documentation
    and its test ``expect_equal(sum(!is.na(chart$violations)), 1)``).
    """
    values = VISCOSITY
    result = analyze(values, lsl=33.0, usl=35.0, subgroup=1)
    moving = [abs(b - a) for a, b in itertools.pairwise(values)]
    assert result.sigma_within == pytest.approx(sum(moving) / len(moving) / 1.128)
    assert result.cl == pytest.approx(sum(values) / len(values))
    assert result.violations["1"] == [3]  # batch 4, 0-based


def test_trailing_incomplete_subgroup_is_ignored_for_the_chart_only() -> None:
    values = [10.0, 10.2, 9.8, 10.1, 10.3, 9.9, 50.0]  # the 7th value is a lone subgroup
    result = analyze(values, lsl=9.0, usl=11.0, subgroup=3)
    assert list(result.points) == pytest.approx([10.0, 10.1])
    assert result.cl == pytest.approx(10.05)
    assert result.mean == pytest.approx(sum(values) / 7)  # mean of all values
    assert result.sigma_within == pytest.approx(((0.4 + 0.4) / 2) / 1.693)
    assert result.ucl == pytest.approx(10.05 + 3 * result.sigma_within / 3**0.5)


def test_too_few_values_or_reversed_limits_are_errors() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        analyze([1.0], lsl=0, usl=2)
    with pytest.raises(ValueError, match="at least 5"):
        analyze([1.0, 2.0, 3.0], lsl=0, usl=5, subgroup=5)
    with pytest.raises(ValueError, match="below"):
        analyze([1.0, 2.0], lsl=3, usl=2)


# --- the command ----------------------------------------------------------------------------


def run_spc(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["spc", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_spc_json_matches_the_published_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_spc(
        str(write_csv(tmp_path, "diameter", PISTON_RINGS)),
        "--column",
        "diameter",
        "--usl",
        "74.05",
        "--lsl",
        "73.95",
        "--subgroup",
        "5",
        "--json",
        capsys=capsys,
    )
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert list(result) == [
        "n",
        "subgroup",
        "mean",
        "sigma_within",
        "sigma_overall",
        "cp",
        "cpk",
        "pp",
        "ppk",
        "cl",
        "ucl",
        "lcl",
        "violations",
    ]
    assert (result["n"], result["subgroup"]) == (125, 5)
    assert round(result["cp"], 3) == 1.703 and round(result["cpk"], 3) == 1.663
    assert result["violations"] == {str(r): [] for r in range(1, 9)}


def test_spc_readable_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_spc(
        str(write_csv(tmp_path, "viscosity", VISCOSITY)),
        "--column",
        "viscosity",
        "--usl",
        "35",
        "--lsl",
        "33",
        capsys=capsys,
    )
    assert code == 0
    assert "individuals" in out and "Cpk" in out
    assert "1  one point more than 3 sigma" in out and " 1  3" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("x\n1\n2\n\n3\nabc\n", "line 6: 'abc' in column 'x' is not a number"),
        ("x,y\n1,2\n,3\n", "line 3: empty cell in column 'x'"),
        ("y,x\n2,1\n3\n", "line 3: the row has no 'x' cell"),
        ("x\n1\nnan\n", "line 3: 'nan' in column 'x' is not a finite number"),
        ("y\n1\n", "has no column 'x'; columns: 'y'"),
        ("", "is empty"),
        ("x\n1\n", "at least 2 values"),
    ],
)
def test_spc_bad_input_names_the_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content)
    code, out, err = run_spc(
        str(path), "--column", "x", "--usl", "5", "--lsl", "0", "--json", capsys=capsys
    )
    assert code == 2
    assert message in err
    assert out == "" and "Traceback" not in err


def test_spc_command_line_process_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("x\n1.5\n2.5\nseven\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli.main",
            "spc",
            str(path),
            "--column",
            "x",
            "--usl",
            "9",
            "--lsl",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "line 4" in done.stderr and "Traceback" not in done.stderr
